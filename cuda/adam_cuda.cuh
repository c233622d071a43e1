// adam_cuda.cuh: one element of the update on the GPU, through the formula shared with the CPU
// (cpp/include/adamcore/update.h): storage types are widened to the arithmetic type S, updated by
// adam_update and narrowed back, exactly as the CPU kernels do, so both give the same bits.
#pragma once

#include "adamcore/half.h"
#include "adamcore/update.h"

namespace adamcore::cuda {

// P: parameter storage (float, double, float16, bfloat16); G: gradient storage; S: state and
// arithmetic type (float, or double for double parameters).
template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void update_element(P& p, G g, S& m, S& v, S& vmax,
                                               const Coeffs<S>& c) {
    S param = static_cast<S>(widen(p));
    adam_update<L2, AMSGRAD>(param, static_cast<S>(widen(g)), m, v, vmax, c);
    p = narrow(param, P{});
}

// True unless x is inf or NaN: the exponent bits, tested as integers (exact for every dtype,
// float64 included, which a conversion to float would not be).
__device__ __forceinline__ bool is_finite_bits(float16 x) { return (x.bits & 0x7c00u) != 0x7c00u; }
__device__ __forceinline__ bool is_finite_bits(bfloat16 x) { return (x.bits & 0x7f80u) != 0x7f80u; }
__device__ __forceinline__ bool is_finite_bits(float x) {
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}
__device__ __forceinline__ bool is_finite_bits(double x) {
    const unsigned long long e = 0x7ff0000000000000ull;
    return (static_cast<unsigned long long>(__double_as_longlong(x)) & e) != e;
}

}  // namespace adamcore::cuda
