// finite_check.h: the CUDA finite check of a step's grads (the check itself: adam_kernels.cuh).
#pragma once

#include <cstddef>
#include <cstdint>

#include "adamcore/core.hpp"
#include "runtime.h"

namespace adamcore::cuda::detail {

// Index of the first array holding inf or NaN, or -1; waits for the answer on stream only.
int64_t first_nonfinite_on(const ArrayRef* arrays, size_t count, int device, cudaStream_t stream);

// Throws nonfinite_grad_error (core.hpp) for the first grad holding inf or NaN.
void check_finite_grads(const TensorRef* tensors, size_t count, int device, cudaStream_t stream);

}  // namespace adamcore::cuda::detail
