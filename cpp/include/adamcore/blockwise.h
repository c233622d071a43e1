// blockwise.h: 8-bit block-quantized Adam state (docs/int8-state.md), host and device.
//
// m and v of a tensor are cut into blocks of kQuantBlock consecutive elements of the flattened
// param; each block keeps one float32 absmax per state and one 8-bit code per element:
//
//   m = absmax_m * sign(c) * (|c| / 127)^2      c: int8 in [-127, 127]
//   v = absmax_v * (c / 255)^4                  c: uint8 in [0, 255]
//
// Codes are found by rounding in the root domain (sqrt of |m| / absmax_m, fourth root of
// v / absmax_v, each as the exact float32 operations below) to the nearest integer, ties to even.
// Every operation is a single IEEE float32 operation (division, sqrt, product, the rounding add
// of round_code) or an exact integer one, so the CPU levels,
// CUDA and the NumPy reference (python/adamcore/_blockwise.py) give the same codes bit for bit.
#pragma once

#include <cstdint>

#include "adamcore/half.h"
#include "adamcore/update.h"

namespace adamcore {

constexpr int64_t kQuantBlock = 256;

// Number of blocks (and absmax entries) of a tensor of n elements.
ADAMCORE_HD int64_t quant_blocks(int64_t n) { return (n + kQuantBlock - 1) / kQuantBlock; }

// The largest code magnitudes, and the constants dequantization divides absmax by (127^2 and
// 255^4 as float32: 255^4 is not representable, its float32 rounding is what both sides use).
constexpr float kMCodeMax = 127.0f;
constexpr float kVCodeMax = 255.0f;
constexpr float kMDivisor = 16129.0f;
constexpr float kVDivisor = 4228250625.0f;
// Adding and subtracting 1.5 * 2^23 rounds a float in [0, 2^22) to an integer, to nearest with
// ties to even (the default rounding mode), with no conversion instruction that a SIMD level
// might lack.
constexpr float kRoundMagic = 12582912.0f;

// The per-block factor dequantization multiplies by.
ADAMCORE_HD float m_scale(float absmax) { return absmax / kMDivisor; }
ADAMCORE_HD float v_scale(float absmax) { return absmax / kVDivisor; }

ADAMCORE_HD float dequantize_m(int8_t code, float scale) {
    const float q = static_cast<float>(code);
    const float magnitude = q < 0.0f ? -q : q;
    return (q * magnitude) * scale;  // q*|q| is an exact integer
}

ADAMCORE_HD float dequantize_v(uint8_t code, float scale) {
    const float q = static_cast<float>(code);
    const float q2 = q * q;  // exact
    return (q2 * q2) * scale;
}

// The factor quantization multiplies by, 1 / absmax (one division per block, not per element),
// or 1 when absmax is not positive: an all-zero block gives codes 0 instead of 0/0, and a NaN
// absmax dequantizes every code to NaN anyway.
ADAMCORE_HD float quant_factor(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 1.0f; }

// Nearest integer of r >= 0, r < 2^22, ties to even; a NaN r becomes limit first. r + 1.5 * 2^23
// rounds r to an integer in the sum's low mantissa bits, so the integer is the difference of the
// two floats' bits: an integer subtract, where a float subtract and a conversion would cost two
// vector operations more per element.
ADAMCORE_HD uint32_t round_code(float r, float limit) {
    // r may pass limit by an ulp (x * (1 / absmax) can round above 1); a NaN r becomes limit
    const float clamped = r < limit ? r : limit;
    return float_bits(clamped + kRoundMagic) - float_bits(kRoundMagic);
}

ADAMCORE_HD int8_t quantize_m(float m, float factor) {
    // |m| by clearing the sign bit, which vectorizes as one AND; where it differs from a select
    // (-0 and NaN) the code is the same: 0 and limit
    const float magnitude = bits_float(float_bits(m) & 0x7fffffffu);
    const float r = sqrt_rn(magnitude * factor) * kMCodeMax;
    const int code = static_cast<int>(round_code(r, kMCodeMax));
    return static_cast<int8_t>(m < 0.0f ? -code : code);
}

// v is quantized from its square root, which the update has just computed for its denominator
// (the compiler shares the one sqrt), against 1 / sqrt(absmax): one sqrt per element, not two.
ADAMCORE_HD float quant_root_factor(float absmax) {
    return absmax > 0.0f ? 1.0f / sqrt_rn(absmax) : 1.0f;
}

ADAMCORE_HD uint8_t quantize_v(float sqrt_v, float root_factor) {
    const float r = sqrt_rn(sqrt_v * root_factor) * kVCodeMax;
    return static_cast<uint8_t>(round_code(r, kVCodeMax));
}

// |x| as ordered bits: for non-negative floats (NaN included, above inf) the integer order of
// the bits is the float order, so a block's absmax is an integer max, which is associative and
// vectorizes, and every backend finds the same one whatever its reduction order.
ADAMCORE_HD uint32_t magnitude_bits(float x) { return float_bits(x) & 0x7fffffffu; }

}  // namespace adamcore
