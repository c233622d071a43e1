// cpu_kernels.h: the table of vectorized CPU kernels that each SIMD level provides.
//
// cpu_kernels.cpp is compiled once per level with that level's flags (CMake), each copy in its
// own namespace, and fills one KernelTable. simd_dispatch.cpp picks the table at run time.
#pragma once

#include <cstdint>

#include "adamcore/combos.h"
#include "adamcore/core.hpp"
#include "adamcore/half.h"
#include "adamcore/lowp.h"
#include "adamcore/update.h"

namespace adamcore::cpu {

// The scalars of one step in both arithmetic types; a kernel reads the one it computes in.
struct StepCoeffs {
    Coeffs<float> f32;
    Coeffs<double> f64;
    bool l2;
};

// A tensor whose arrays all share one dense layout: elements [0, n) are consecutive in memory.
struct DenseTensor {
    void* param;
    const void* grad;
    void* exp_avg;
    void* exp_avg_sq;
    void* max_exp_avg_sq;  // nullptr without amsgrad
    void* compensation;    // Kahan summation's buffer (the param's dtype), else nullptr
    uint32_t key;          // stochastic rounding: rounding_key(seed, step); element i's bits are
                           // random_bits(key, i), i counted from the first element (C order)
};

// Updates elements [begin, end) of a dense tensor.
using DenseFn = void (*)(const DenseTensor&, int64_t begin, int64_t end, const StepCoeffs&);
// True when all of x[0, n) are finite.
using FiniteFn = bool (*)(const void* x, int64_t n);

struct KernelTable {
    const char* name;
    DenseFn dense[combo_count][2][2][rounding_count];  // [combo][l2][amsgrad][rounding]; nullptr
                                                      // where the rounding does not apply
    FiniteFn all_finite[4];            // by DType
    void (*stream_probe)(float* p, const float* g, float* m, float* v, int64_t begin, int64_t end);
};

// Defined by each compiled level (ADAMCORE_HAVE_<LEVEL> says which were built).
extern const KernelTable baseline_kernels;
extern const KernelTable avx2_kernels;
extern const KernelTable avx512_kernels;

// The table of the level in use.
const KernelTable& active_kernels();

}  // namespace adamcore::cpu
