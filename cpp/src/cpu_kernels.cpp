// cpu_kernels.cpp: the vectorized CPU kernels of one SIMD level.
//
// CMake compiles this file once per level (baseline, avx2, avx512) with that level's -m flags and
// -DADAMCORE_LEVEL=<level>. The loops are plain loops over adam_update() from update.h; the
// compiler vectorizes them for the level's vector width. Nothing here may be shared across levels
// (that is why everything sits in a per-level namespace and update.h's helpers are static).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/lowp.h"
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
void update_loop(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
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

// Elements before p + k sits on a cache-line boundary (at most n; 0 where it never can).
template <class T>
int64_t until_cache_line(const T* p, int64_t n) {
    const auto offset = reinterpret_cast<uintptr_t>(p) % 64;
    if (offset % sizeof(T) != 0) return 0;
    const auto k = static_cast<int64_t>((64 - offset) % 64 / sizeof(T));
    return k < n ? k : n;
}

// update_loop with its vectors on whole cache lines of p: a vector load or store that straddles
// two lines costs two, and allocators usually give arrays the same 16-byte offset from a line,
// so aligning p's accesses aligns all of them (bench/NOTES.md: 4-38 % on cache-resident steps).
// Each element goes through the same update either way: the split changes no bit.
template <bool L2, bool AMSGRAD, class T>
void update_run(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const Coeffs<T>& c) {
    const int64_t head = until_cache_line(p, n);
    update_loop<L2, AMSGRAD>(p, g, m, v, vmax, head, c);
    update_loop<L2, AMSGRAD>(p + head, g + head, m + head, v + head,
                             AMSGRAD ? vmax + head : nullptr, n - head, c);
}

// ---- 16-bit parameters in registers (AVX2, AVX-512) ---------------------------------------------
// A 16-bit step is memory-bound only if its conversions cost next to nothing: each vector of
// params (and 16-bit grads) is widened in registers with one or two instructions, updated by the
// same adam_update() as every other path (on a small vector type whose operators are the IEEE
// lane-wise operations, so the results are bit-identical), and narrowed back.
#if defined(__AVX2__) && defined(__F16C__)
#define ADAMCORE_VECTOR_16BIT 1
#include "cpu_vec16.h"  // Vec, load/store of 16-bit types, lane-wise rounding

// n elements of any 16-bit combo without amsgrad (and float32 params with 16-bit state): each
// array converted in registers, the update, then the rounding mode's store. first is the
// index of p[0] in its tensor (stochastic rounding's counter).
template <int Mode, bool L2, class P, class G, class M>
void update_run_vector(P* p, const G* g, M* m, M* v, P* comp, int64_t n, const Coeffs<float>& c,
                       uint32_t key, uint64_t first) {
    const Coeffs<Vec> cv = broadcast(c);
    const VU bkey = splat(block_key(key, first >> 32));
    const VU iota = iota_lanes();
    int64_t i = 0;
    for (; i + lanes <= n; i += lanes) {
        const Vec p_old = load(p + i);
        Vec p_new = p_old, mi = load(m + i), vi = load(v + i), unused{};
        adam_update<L2, false>(p_new, load(g + i), mi, vi, unused, cv);
        store(m + i, mi);
        store(v + i, vi);
        if constexpr (Mode == round_kahan) {
            Vec out, cw = load(comp + i);
            kahan_store(p_old, p_new, out, cw, P{});
            store_exact(p + i, out);
            store_exact(comp + i, cw);
        } else if constexpr (Mode == round_stochastic) {
            store_exact(p + i, stochastic_round_bf16(p_new, lane_bits(bkey, iota, first + i)));
        } else {
            store(p + i, p_new);
        }
    }
    for (; i < n; ++i) {  // the tail, one element at a time through the same update
        M unused{};
        P no_comp{};
        const uint32_t random = Mode == round_stochastic ? random_bits(key, first + i) : 0u;
        update_element<Mode, L2, false>(p[i], g[i], m[i], v[i], unused,
                                        Mode == round_kahan ? comp[i] : no_comp, random, c);
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

// The float32 loop of the block path with a rounding mode: p holds the params widened, and gets
// the new ones, already rounded to P (exactly representable, so narrowing them is exact);
// comp (Kahan) likewise. bkey: block_key() of the elements first, first + 1, ...
template <int Mode, bool L2, bool AMSGRAD, class P>
void update_run_rounded(float* __restrict p, const float* __restrict g, float* __restrict m,
                        float* __restrict v, float* __restrict vmax, float* __restrict comp,
                        int64_t n, const Coeffs<float>& coeffs, uint32_t bkey, uint64_t first) {
    const Coeffs<float> c = coeffs;
    for (int64_t i = 0; i < n; ++i) {
        const float p_old = p[i];
        float p_new = p_old, mi = m[i], vi = v[i];
        float vmaxi = AMSGRAD ? vmax[i] : 0.0f;
        adam_update<L2, AMSGRAD>(p_new, g[i], mi, vi, vmaxi, c);
        m[i] = mi;
        v[i] = vi;
        if (AMSGRAD) vmax[i] = vmaxi;
        if constexpr (Mode == round_kahan) {
            float out, cw = comp[i];
            kahan_store(p_old, p_new, out, cw, P{});
            p[i] = out;
            comp[i] = cw;
        } else if constexpr (Mode == round_stochastic) {
            const uint32_t random = mix32(bkey ^ static_cast<uint32_t>(first + i));
            p[i] = adamcore::stochastic_round_bf16(p_new, random);
        } else {
            p[i] = p_new;
        }
    }
}

// Block path: every 16-bit array of a block widened to float32 in L1, the float32 loop, and
// narrowed back (amsgrad's NaN-propagating max, and levels without F16C). Arrays already in
// float32 are used in place.
template <int Mode, bool L2, bool AMSGRAD, class P, class G, class M>
void update_run_blocks(P* p, const G* g, M* m, M* v, M* vmax, P* comp, int64_t n,
                       const Coeffs<float>& c, uint32_t key, uint64_t first) {
    constexpr int64_t block = 512;
    alignas(64) float p_block[block], g_block[block], m_block[block], v_block[block];
    alignas(64) float vmax_block[AMSGRAD ? block : 1], comp_block[Mode == round_kahan ? block : 1];
    const uint32_t bkey = block_key(key, first >> 32);
    // a float view of array x over [start, start + len): x itself when float, else a block
    auto as_float = [](auto* x, float* buffer, int64_t len) -> float* {
        using X = std::remove_const_t<std::remove_pointer_t<decltype(x)>>;
        if constexpr (std::is_same_v<X, float>) {
            return const_cast<float*>(x);
        } else {
            widen_run(x, buffer, len);
            return buffer;
        }
    };
    auto write_back = [](const float* src, auto* x, int64_t len) {
        using X = std::remove_pointer_t<decltype(x)>;
        if constexpr (!std::is_same_v<X, float>) narrow_run(src, x, len);
    };
    for (int64_t start = 0; start < n; start += block) {
        const int64_t len = n - start < block ? n - start : block;
        float* pf = as_float(p + start, p_block, len);
        const float* gf = as_float(g + start, g_block, len);
        float* mf = as_float(m + start, m_block, len);
        float* vf = as_float(v + start, v_block, len);
        float* xf = AMSGRAD ? as_float(vmax + start, vmax_block, len) : nullptr;
        float* cf = Mode == round_kahan ? as_float(comp + start, comp_block, len) : nullptr;
        update_run_rounded<Mode, L2, AMSGRAD, P>(pf, gf, mf, vf, xf, cf, len, c, bkey,
                                                 first + static_cast<uint64_t>(start));
        write_back(pf, p + start, len);
        write_back(mf, m + start, len);
        write_back(vf, v + start, len);
        if (AMSGRAD) write_back(xf, vmax + start, len);
        if (Mode == round_kahan) write_back(cf, comp + start, len);
    }
}

template <int C, bool L2, bool AMSGRAD, int Mode>
void dense(const DenseTensor& t, int64_t begin, int64_t end, const StepCoeffs& c) {
    using P = typename ComboTypes<C>::P;
    using G = typename ComboTypes<C>::G;
    using S = typename ComboTypes<C>::S;
    using M = typename ComboTypes<C>::M;
    P* p = static_cast<P*>(t.param);
    const G* g = static_cast<const G*>(t.grad);
    M* m = static_cast<M*>(t.exp_avg);
    M* v = static_cast<M*>(t.exp_avg_sq);
    M* vmax = static_cast<M*>(t.max_exp_avg_sq);
    P* comp = static_cast<P*>(t.compensation);
    if constexpr (std::is_same_v<P, double>) {
        update_run<L2, AMSGRAD>(p + begin, g + begin, m + begin, v + begin,
                                AMSGRAD ? vmax + begin : nullptr, end - begin, c.f64);
    } else if constexpr (std::is_same_v<P, float> && std::is_same_v<M, float>) {
        update_run<L2, AMSGRAD>(p + begin, g + begin, m + begin, v + begin,
                                AMSGRAD ? vmax + begin : nullptr, end - begin, c.f32);
    } else {
        // stochastic rounding counts elements in 32 bits per block of 2^32 (lowp.h): split there
        for (int64_t lo = begin; lo < end;) {
            const int64_t block_end =
                Mode == round_stochastic ? ((lo >> 32) + 1) << 32 : end;
            const int64_t hi = block_end < end ? block_end : end;
            const auto first = static_cast<uint64_t>(lo);
            P* comp_lo = Mode == round_kahan ? comp + lo : nullptr;
#if defined(ADAMCORE_VECTOR_16BIT)
            if constexpr (!AMSGRAD) {  // amsgrad's NaN-propagating max stays on the block path
                update_run_vector<Mode, L2>(p + lo, g + lo, m + lo, v + lo, comp_lo, hi - lo,
                                            c.f32, t.key, first);
                lo = hi;
                continue;
            }
#endif
            update_run_blocks<Mode, L2, AMSGRAD>(p + lo, g + lo, m + lo, v + lo,
                                                 AMSGRAD ? vmax + lo : nullptr, comp_lo, hi - lo,
                                                 c.f32, t.key, first);
            lo = hi;
        }
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

template <int C, int Mode>
constexpr void fill_dense(KernelTable& table) {
    if constexpr (rounding_applies<C>(Mode)) {
        table.dense[C][0][0][Mode] = &dense<C, false, false, Mode>;
        table.dense[C][0][1][Mode] = &dense<C, false, true, Mode>;
        table.dense[C][1][0][Mode] = &dense<C, true, false, Mode>;
        table.dense[C][1][1][Mode] = &dense<C, true, true, Mode>;
    }
}

constexpr KernelTable make_table() {
    KernelTable table{};
    table.name = ADAMCORE_STR(ADAMCORE_LEVEL);
    for_each_combo([&](auto combo) {
        constexpr int C = decltype(combo)::value;
        fill_dense<C, round_nearest>(table);
        fill_dense<C, round_kahan>(table);
        fill_dense<C, round_stochastic>(table);
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
