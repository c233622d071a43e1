// cpu_vec16.h: a float32 vector of one SIMD level's width (Vec, VU), its loads and stores from
// float32, float16 and bfloat16 memory, and lowp.h's rounding helpers lane-wise, for the
// 16-bit kernels of cpu_kernels.cpp. Included by that file only, inside its per-level namespace
// with AVX2 and F16C enabled (immintrin.h and the adamcore headers already included), so that
// every level gets its own copy of these static functions.
#pragma once

#if defined(__AVX512F__) && defined(__AVX512BW__)
constexpr int64_t lanes = 16;
using VF = float __attribute__((vector_size(64)));
#else
constexpr int64_t lanes = 8;
using VF = float __attribute__((vector_size(32)));
#endif

struct Vec {
    VF x;
};
static inline Vec operator+(Vec a, Vec b) { return {a.x + b.x}; }
static inline Vec operator-(Vec a, Vec b) { return {a.x - b.x}; }
static inline Vec operator*(Vec a, Vec b) { return {a.x * b.x}; }
static inline Vec operator/(Vec a, Vec b) { return {a.x / b.x}; }
static inline Vec sqrt_rn(Vec a) {  // found by argument-dependent lookup from adam_update()
#if defined(__AVX512F__) && defined(__AVX512BW__)
    return {(VF)_mm512_sqrt_ps((__m512)a.x)};
#else
    return {(VF)_mm256_sqrt_ps((__m256)a.x)};
#endif
}

static inline Vec load(const float* p) {
    Vec v;
    std::memcpy(&v.x, p, sizeof v.x);
    return v;
}
static inline void store(float* p, Vec v) { std::memcpy(p, &v.x, sizeof v.x); }

static inline Vec load(const float16* p) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    return {(VF)_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)))};
#else
    return {(VF)_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))};
#endif
}
static inline void store(float16* p, Vec v) {
    // F16C rounds to nearest even and quiets NaNs like narrow() does
#if defined(__AVX512F__) && defined(__AVX512BW__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph((__m512)v.x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#else
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph((__m256)v.x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
}

static inline Vec load(const bfloat16* p) {  // a bfloat16 is the top half of a float
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return {(VF)_mm512_castsi512_ps(_mm512_slli_epi32(w, 16))};
#else
    const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return {(VF)_mm256_castsi256_ps(_mm256_slli_epi32(w, 16))};
#endif
}
static inline void store(bfloat16* p, Vec v) {
    // narrow(float, bfloat16) lane-wise: round to nearest even; a NaN stays a quiet NaN
    using VU = uint32_t __attribute__((vector_size(sizeof(VF))));
    const VU u = (VU)v.x;
    const VU rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const VU quiet = (u >> 16) | 0x40u;
    const VU out = ((u & 0x7fffffffu) > 0x7f800000u) ? quiet : rounded;
#if defined(__AVX512F__) && defined(__AVX512BW__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16((__m512i)out));
#else
    const __m256i packed = _mm256_packus_epi32((__m256i)out, (__m256i)out);  // values fit 16 bits
    const __m256i ordered = _mm256_permute4x64_epi64(packed, 0x08);          // lanes 0 and 2
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(ordered));
#endif
}

static inline Coeffs<Vec> broadcast(const Coeffs<float>& c) {
    auto b = [](float x) {
        Vec r;
        for (int64_t k = 0; k < lanes; ++k) r.x[k] = x;
        return r;
    };
    return {b(c.beta1), b(c.one_minus_beta1), b(c.beta2), b(c.one_minus_beta2), b(c.grad_sign),
            b(c.weight_decay), b(c.decay), b(c.step_size), b(c.inv_bias_correction2_sqrt),
            b(c.eps)};
}

// Lane-wise versions of lowp.h's rounding helpers (the same integer operations, so the same
// bits; tests compare every level with the scalar path). round_to is found by kahan_store().
using VU = uint32_t __attribute__((vector_size(sizeof(VF))));
static inline Vec round_to(Vec x, bfloat16) {
    const VU u = (VU)x.x;
    const VU rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    const VU quiet = (u & 0xffff0000u) | 0x400000u;
    return {(VF)(((u & 0x7fffffffu) > 0x7f800000u) ? quiet : rounded)};
}
static inline Vec round_to(Vec x, float16) {
#if defined(__AVX512F__) && defined(__AVX512BW__)
    const __m256i h = _mm512_cvtps_ph((__m512)x.x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return {(VF)_mm512_cvtph_ps(h)};
#else
    const __m128i h = _mm256_cvtps_ph((__m256)x.x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    return {(VF)_mm256_cvtph_ps(h)};
#endif
}
static inline Vec stochastic_round_bf16(Vec x, VU random) {
    const VU u = (VU)x.x;
    const VU quiet = (u & 0xffff0000u) | 0x400000u;
    const VU rounded = (u + (random >> 16)) & 0xffff0000u;
    return {(VF)(((u & 0x7fffffffu) > 0x7f800000u) ? quiet : rounded)};
}
// random_bits() of the lanes' elements first, first + 1, ...: key holds block_key() of their
// 2^32-element block (which the caller's range does not leave) in every lane, iota 0, 1, ...
static inline VU lane_bits(VU key, VU iota, uint64_t first) {
    return mix32(key ^ (iota + static_cast<uint32_t>(first)));
}
static inline VU splat(uint32_t x) {
    VU r;
    for (int64_t k = 0; k < lanes; ++k) r[k] = x;
    return r;
}
static inline VU iota_lanes() {
    VU r;
    for (int64_t k = 0; k < lanes; ++k) r[k] = static_cast<uint32_t>(k);
    return r;
}

// Stores of values already representable in the storage type (the rounding modes' results):
// no second rounding, only the conversion.
static inline void store_exact(float* p, Vec v) { store(p, v); }
static inline void store_exact(float16* p, Vec v) { store(p, v); }  // one instruction, exact
static inline void store_exact(bfloat16* p, Vec v) {
    const VU out = (VU)v.x >> 16;  // the low halves are zero
#if defined(__AVX512F__) && defined(__AVX512BW__)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16((__m512i)out));
#else
    const __m256i packed = _mm256_packus_epi32((__m256i)out, (__m256i)out);
    const __m256i ordered = _mm256_permute4x64_epi64(packed, 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(ordered));
#endif
}
