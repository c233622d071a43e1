// cpu_kernels.cpp: the vectorized CPU kernels of one SIMD level.
//
// CMake compiles this file once per level (baseline, avx2, avx512) with that level's -m flags and
// -DADAMCORE_LEVEL=<level>. The loops are plain loops over adam_update() from update.h; the
// compiler vectorizes them for the level's vector width. Nothing here may be shared across levels
// (that is why everything sits in a per-level namespace and update.h's helpers are static).
#include <cstring>
#include <type_traits>

#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/update.h"
#include "cpu_kernels.h"

#if defined(__F16C__)
#include <immintrin.h>
#endif

#ifndef ADAMCORE_LEVEL
#error "compile with -DADAMCORE_LEVEL=<name of the SIMD level>"
#endif

#define ADAMCORE_JOIN2(a, b) a##b
#define ADAMCORE_JOIN(a, b) ADAMCORE_JOIN2(a, b)
#define ADAMCORE_STR2(a) #a
#define ADAMCORE_STR(a) ADAMCORE_STR2(a)

namespace adamcore::cpu {
namespace ADAMCORE_JOIN(level_, ADAMCORE_LEVEL) {

// p, m, v (and vmax) updated in place over n consecutive elements of one arithmetic type.
template <bool L2, bool AMSGRAD, class T>
void update_run(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                T* __restrict vmax, int64_t n, const Coeffs<T>& coeffs) {
    const Coeffs<T> c = coeffs;  // a local copy: the compiler knows no store can change it
    for (int64_t i = 0; i < n; ++i) {
        T pi = p[i], mi = m[i], vi = v[i];
        T vmaxi = AMSGRAD ? vmax[i] : T(0);
        adam_update<L2, AMSGRAD>(pi, g[i], mi, vi, vmaxi, c);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (AMSGRAD) vmax[i] = vmaxi;
    }
}

// ---- 16-bit parameters in registers (AVX2, AVX-512) ---------------------------------------------
// A 16-bit step is memory-bound only if its conversions cost next to nothing: each vector of
// params (and 16-bit grads) is widened in registers with one or two instructions, updated by the
// same adam_update() as every other path (on a small vector type whose operators are the IEEE
// lane-wise operations, so the results are bit-identical), and narrowed back.
#if defined(__AVX2__) && defined(__F16C__)
#define ADAMCORE_VECTOR_16BIT 1
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

template <bool L2, class P, class G>
void update_run_vector(P* p, const G* g, float* m, float* v, int64_t n, const Coeffs<float>& c) {
    const Coeffs<Vec> cv = broadcast(c);
    int64_t i = 0;
    for (; i + lanes <= n; i += lanes) {
        Vec pi = load(p + i), mi = load(m + i), vi = load(v + i), unused{};
        adam_update<L2, false>(pi, load(g + i), mi, vi, unused, cv);
        store(p + i, pi);
        store(m + i, mi);
        store(v + i, vi);
    }
    for (; i < n; ++i) {  // the tail, one element at a time through the same update
        float pi = widen(p[i]), mi = m[i], vi = v[i], unused = 0.0f;
        adam_update<L2, false>(pi, widen(g[i]), mi, vi, unused, c);
        p[i] = narrow(pi, P{});
        m[i] = mi;
        v[i] = vi;
    }
}
#endif

template <class H>
void widen_run(const H* __restrict src, float* __restrict dst, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    if constexpr (std::is_same_v<H, float16>) {
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
        }
    }
#endif
    for (; i < n; ++i) dst[i] = widen(src[i]);
}

template <class H>
void narrow_run(const float* __restrict src, H* __restrict dst, int64_t n) {
    int64_t i = 0;
#if defined(__F16C__)
    if constexpr (std::is_same_v<H, float16>) {
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
            _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), h);
        }
    }
#endif
    for (; i < n; ++i) dst[i] = narrow(src[i], H{});
}

// 16-bit parameters: widen a block to float32 in L1, run the float32 loop, narrow it back.
template <bool L2, bool AMSGRAD, class P, class G>
void update_run_16bit(P* p, const G* g, float* m, float* v, float* vmax, int64_t n,
                      const Coeffs<float>& c) {
    constexpr int64_t block = 512;
    alignas(64) float p_block[block];
    alignas(64) float g_block[block];
    for (int64_t start = 0; start < n; start += block) {
        const int64_t len = n - start < block ? n - start : block;
        widen_run(p + start, p_block, len);
        const float* g_float;
        if constexpr (std::is_same_v<G, float>) {
            g_float = g + start;
        } else {
            widen_run(g + start, g_block, len);
            g_float = g_block;
        }
        update_run<L2, AMSGRAD>(p_block, g_float, m + start, v + start,
                                AMSGRAD ? vmax + start : nullptr, len, c);
        narrow_run(p_block, p + start, len);
    }
}

template <int C, bool L2, bool AMSGRAD>
void dense(const DenseTensor& t, int64_t begin, int64_t end, const StepCoeffs& c) {
    using P = typename ComboTypes<C>::P;
    using G = typename ComboTypes<C>::G;
    using S = typename ComboTypes<C>::S;
    P* p = static_cast<P*>(t.param) + begin;
    const G* g = static_cast<const G*>(t.grad) + begin;
    S* m = static_cast<S*>(t.exp_avg) + begin;
    S* v = static_cast<S*>(t.exp_avg_sq) + begin;
    S* vmax = AMSGRAD ? static_cast<S*>(t.max_exp_avg_sq) + begin : nullptr;
    const int64_t n = end - begin;
    if constexpr (std::is_same_v<P, double>) {
        update_run<L2, AMSGRAD>(p, g, m, v, vmax, n, c.f64);
    } else if constexpr (std::is_same_v<P, float>) {
        update_run<L2, AMSGRAD>(p, g, m, v, vmax, n, c.f32);
    } else {
#if defined(ADAMCORE_VECTOR_16BIT)
        if constexpr (!AMSGRAD) {  // amsgrad's NaN-propagating max stays on the block path
            update_run_vector<L2>(p, g, m, v, n, c.f32);
            return;
        }
#endif
        update_run_16bit<L2, AMSGRAD>(p, g, m, v, vmax, n, c.f32);
    }
}

// An OR-reduction over the bits (finite.h): a NaN-aware float compare would stay scalar.
template <class T>
bool all_finite(const void* data, int64_t n) {
    using U = typename FloatBits<T>::U;
    const unsigned char* bytes = static_cast<const unsigned char*>(data);
    U infinite = 0;
    for (int64_t i = 0; i < n; ++i) {
        U x;
        std::memcpy(&x, bytes + i * sizeof(U), sizeof(U));
        infinite |= static_cast<U>(nonfinite_bits<T>(x));
    }
    return infinite == 0;
}

void stream_probe(float* __restrict p, const float* __restrict g, float* __restrict m,
                  float* __restrict v, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
        const float gi = g[i];
        p[i] = p[i] + gi;
        m[i] = m[i] + gi;
        v[i] = v[i] + gi;
    }
}

constexpr KernelTable make_table() {
    KernelTable table{};
    table.name = ADAMCORE_STR(ADAMCORE_LEVEL);
    for_each_combo([&](auto combo) {
        constexpr int C = decltype(combo)::value;
        table.dense[C][0][0] = &dense<C, false, false>;
        table.dense[C][0][1] = &dense<C, false, true>;
        table.dense[C][1][0] = &dense<C, true, false>;
        table.dense[C][1][1] = &dense<C, true, true>;
    });
    table.all_finite[static_cast<int>(DType::float16)] = &all_finite<float16>;
    table.all_finite[static_cast<int>(DType::bfloat16)] = &all_finite<bfloat16>;
    table.all_finite[static_cast<int>(DType::float32)] = &all_finite<float>;
    table.all_finite[static_cast<int>(DType::float64)] = &all_finite<double>;
    table.stream_probe = &stream_probe;
    return table;
}

}  // namespace level_<ADAMCORE_LEVEL>

const KernelTable ADAMCORE_JOIN(ADAMCORE_LEVEL, _kernels) =
    ADAMCORE_JOIN(level_, ADAMCORE_LEVEL)::make_table();

}  // namespace adamcore::cpu
