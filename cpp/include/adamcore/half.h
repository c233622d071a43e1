// half.h: float16 and bfloat16 storage types and their exact conversions to and from float.
//
// 16-bit parameters are stored as these and computed in float32. The conversions are plain
// integer arithmetic, so compilers vectorize loops over them and they run unchanged on any
// CPU or GPU; rounding to 16 bits is to nearest, ties to even (what F16C, CUDA and NumPy do).
#pragma once

#include <cstdint>
#include <cstring>

#include "adamcore/update.h"  // ADAMCORE_HD

namespace adamcore {

struct float16 {
    uint16_t bits;
};
struct bfloat16 {
    uint16_t bits;
};

ADAMCORE_HD uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
ADAMCORE_HD float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

ADAMCORE_HD float widen(float16 h) {
    const uint32_t sign = static_cast<uint32_t>(h.bits & 0x8000u) << 16;
    const uint32_t rest = static_cast<uint32_t>(h.bits & 0x7fffu) << 13;  // exponent and mantissa
    const uint32_t exponent = rest & 0x0f800000u;
    uint32_t out = rest + ((127u - 15u) << 23);                            // rebias
    if (exponent == 0x0f800000u) {
        out += (128u - 16u) << 23;                                          // inf and NaN
    } else if (exponent == 0) {
        // zero or subnormal: renormalize through one exact float subtraction
        out = float_bits(bits_float(out + (1u << 23)) - bits_float(113u << 23));
    }
    return bits_float(out | sign);
}

ADAMCORE_HD float16 narrow(float f, float16) {
    uint32_t u = float_bits(f);
    const uint32_t sign = u & 0x80000000u;
    u ^= sign;
    uint32_t out;
    if (u >= 0x47800000u) {                  // overflow, inf or NaN
        out = u > 0x7f800000u ? 0x7e00u | ((u >> 13) & 0x3ffu) : 0x7c00u;
    } else if (u < 0x38800000u) {            // result is subnormal or zero
        // adding 0.5 lets the FPU round the shifted-out bits to nearest even
        out = float_bits(bits_float(u) + 0.5f) - 0x3f000000u;
    } else {
        const uint32_t mantissa_odd = (u >> 13) & 1u;
        u += ((15u - 127u) << 23) + 0xfffu + mantissa_odd;
        out = u >> 13;
    }
    return float16{static_cast<uint16_t>(out | (sign >> 16))};
}

ADAMCORE_HD float widen(bfloat16 h) { return bits_float(static_cast<uint32_t>(h.bits) << 16); }

ADAMCORE_HD bfloat16 narrow(float f, bfloat16) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep it quiet, never round it to inf
        return bfloat16{static_cast<uint16_t>((u >> 16) | 0x40u)};
    const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
    return bfloat16{static_cast<uint16_t>(rounded >> 16)};
}

// Identity overloads, so generic code can load and store any parameter type.
ADAMCORE_HD float widen(float x) { return x; }
ADAMCORE_HD double widen(double x) { return x; }
ADAMCORE_HD float narrow(float f, float) { return f; }
ADAMCORE_HD double narrow(double f, double) { return f; }

}  // namespace adamcore
