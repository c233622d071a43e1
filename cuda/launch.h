// launch.h: the kernel launches (kernels.cu, the backend's only CUDA translation unit) as plain
// functions, so the rest of the backend is host C++ that any C++ compiler builds. Each enqueues
// on stream and returns the launch's error without waiting.
#pragma once

#include <cstdint>

#include "kernel_args.h"
#include "runtime.h"

namespace adamcore::cuda::detail {

// The update over one range of the table, for its (param, grad, state) combo (Combo, combos.h)
// and rounding mode (Rounding, lowp.h): float32 arithmetic for every combo but float64's, which
// takes the double overload. cudaErrorInvalidValue for a combo and mode without a kernel.
cudaError_t launch_update(int combo, int rounding, const LaunchArgs<float>& args, cudaStream_t stream);
cudaError_t launch_update(int combo, int rounding, const LaunchArgs<double>& args, cudaStream_t stream);

cudaError_t launch_first_nonfinite(const CheckArgs& args, cudaStream_t stream);

// vector: every pointer 16-byte aligned.
cudaError_t launch_stream_probe(float* p, const float* g, float* m, float* v, int64_t n,
                                bool vector, cudaStream_t stream);
cudaError_t launch_copy(float* dst, const float* src, int64_t n, bool vector, cudaStream_t stream);

}  // namespace adamcore::cuda::detail
