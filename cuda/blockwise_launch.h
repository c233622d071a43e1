// blockwise_launch.h: the launch of the 8-bit blockwise state step (blockwise.cu) as a plain
// function, so host code (and the host emulation) can call it without nvcc.
#pragma once

#include <cstdint>

#include "adamcore/update.h"
#include "runtime.h"

namespace adamcore::cuda::detail {

// One tensor of n elements: param/grad of the dtype pair combo (combos.h; not f64), codes and
// absmax as in blockwise.h. Enqueued on stream; returns the launch's error without waiting.
cudaError_t launch_blockwise_step(int combo, void* param, const void* grad, int8_t* m_codes,
                                  uint8_t* v_codes, float* m_absmax, float* v_absmax, int64_t n,
                                  bool l2, const Coeffs<float>& coeffs, cudaStream_t stream);

}  // namespace adamcore::cuda::detail
