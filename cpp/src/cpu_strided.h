// cpu_strided.h: the CPU step and finite check for any layout the dense kernels do not take
// (strided views, a grad laid out unlike its param): element by element through strided.h,
// with the same update as the dense kernels and the same results.
#pragma once

#include <cstdint>
#include <vector>

#include "adamcore/core.hpp"
#include "cpu_kernels.h"

namespace adamcore::cpu {

// A tensor and the strides of its six arrays (param, grad, exp_avg, exp_avg_sq,
// max_exp_avg_sq, compensation), ndim each; the last two rows are unused without amsgrad and
// Kahan summation. key: stochastic rounding's rounding_key (lowp.h), for elements in C order.
struct StridedTensor {
    const TensorRef* ref;
    std::vector<int64_t> strides;
    uint32_t key = 0;
};

// Updates logical elements [begin, end) of a strided tensor.
using StridedFn = void (*)(const StridedTensor&, int64_t begin, int64_t end, const StepCoeffs&);

// By [combo][l2][amsgrad][rounding], as KernelTable::dense.
using StridedTable = StridedFn[combo_count][2][2][rounding_count];
const StridedTable& strided_kernels();

// True when logical elements [begin, end) of an array (any layout) are all finite.
bool strided_all_finite(const ArrayRef& a, const int64_t* strides, int64_t begin, int64_t end);

}  // namespace adamcore::cpu
