// cpu_norm.h: the reduction and scaling behind adamcore.clip_grad_norm, for CPU arrays of any
// float dtype and any strides.
#pragma once

#include <cstddef>

#include "adamcore/core.hpp"

namespace adamcore {

// The ord-norm of all arrays together, as if concatenated: (sum |x|^ord)^(1/ord), or max |x| for
// ord = inf. Accumulated in float64 in a fixed order (the result does not depend on the thread
// count). NaN anywhere gives NaN. ord must be > 0 (Error otherwise).
double cpu_total_norm(const ArrayRef* arrays, size_t count, double ord);

// x = x * factor in place for every array (16-bit and float32 arrays computed in float32).
void cpu_scale(const ArrayRef* arrays, size_t count, double factor);

}  // namespace adamcore
