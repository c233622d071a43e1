// finite.h: the bit patterns of the four float dtypes, for finite checks (CPU and CUDA) and the
// CPU max-norm. A float is inf or NaN when all of its exponent bits are set; testing that on the
// integer bits is exact for every dtype (float64 included, which a conversion to float would not
// be) and keeps a CPU loop a plain, vectorizable integer reduction.
#pragma once

#include <cstdint>
#include <cstring>

#include "adamcore/half.h"  // float16, bfloat16, ADAMCORE_HD

namespace adamcore {

// U: the unsigned integer of the dtype's width; exponent: its exponent bits; magnitude: every bit
// but the sign (with it cleared, the integers order as the magnitudes, every NaN above inf).
template <class T>
struct FloatBits;
template <>
struct FloatBits<float16> {
    using U = uint16_t;
    static constexpr U exponent = 0x7c00u, magnitude = 0x7fffu;
};
template <>
struct FloatBits<bfloat16> {
    using U = uint16_t;
    static constexpr U exponent = 0x7f80u, magnitude = 0x7fffu;
};
template <>
struct FloatBits<float> {
    using U = uint32_t;
    static constexpr U exponent = 0x7f800000u, magnitude = 0x7fffffffu;
};
template <>
struct FloatBits<double> {
    using U = uint64_t;
    static constexpr U exponent = 0x7ff0000000000000ull, magnitude = 0x7fffffffffffffffull;
};

template <class T>
ADAMCORE_HD typename FloatBits<T>::U bits_of(T x) {
    typename FloatBits<T>::U u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}

// True when the bits u of a T are inf or NaN.
template <class T>
ADAMCORE_HD bool nonfinite_bits(typename FloatBits<T>::U u) {
    return (u & FloatBits<T>::exponent) == FloatBits<T>::exponent;
}

template <class T>
ADAMCORE_HD bool is_finite_bits(T x) {
    return !nonfinite_bits<T>(bits_of(x));
}

}  // namespace adamcore
