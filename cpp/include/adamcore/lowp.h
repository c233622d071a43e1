// lowp.h: the low-precision modes of a step, for every backend (CPU kernels, strided loop, CUDA).
//
// The update itself stays adam_update() (update.h), in float32 for 16/32-bit params. What this
// header adds is how its results are stored:
//   - state in 16 bits (float16 or bfloat16): m, v (and vmax) widened before the update and
//     rounded back to nearest, ties to even (narrow() in half.h);
//   - Kahan summation (16-bit params): a compensation buffer c in the param's dtype holds the part
//     of past updates that rounding the param dropped, and is added to the next update;
//   - stochastic rounding (bfloat16 params): the float32 result is rounded up or down at random,
//     with probability proportional to its distance from each neighbour, so the rounding is
//     unbiased. The random bits come from a counter-based hash of (seed, step, element index), so
//     every backend and SIMD level draws the same bits for the same element. docs/update.md.
// Everything here is integer or IEEE float arithmetic with contraction off, so it is exact and
// identical on every backend (python/adamcore/_reference.py mirrors it in NumPy).
#pragma once

#include <cstdint>

#include "adamcore/half.h"
#include "adamcore/update.h"

namespace adamcore {

// How a step stores the new parameter.
enum Rounding : int { round_nearest = 0, round_kahan = 1, round_stochastic = 2, rounding_count = 3 };

// The Rounding a step's flags ask for (validation refuses both at once).
static inline int rounding_of(uint32_t flags) {
    if (flags & ADAMCORE_KAHAN_SUMMATION) return round_kahan;
    if (flags & ADAMCORE_STOCHASTIC_ROUNDING) return round_stochastic;
    return round_nearest;
}

// ---- the random bits -----------------------------------------------------------------------
// "lowbias32" (a 32-bit integer hash with low bias, by C. Wellons): a bijection of uint32 whose
// output bits each depend on every input bit. U is uint32_t, or a vector of uint32 lanes.
template <class U>
ADAMCORE_HD U mix32(U x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

// splitmix64's finalizer, for the per-step key (computed once per tensor and step).
ADAMCORE_HD uint64_t mix64(uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// The key of one tensor at one step: its seed and the step mixed into 32 bits.
ADAMCORE_HD uint32_t rounding_key(uint64_t seed, int64_t step) {
    return static_cast<uint32_t>(mix64(seed + mix64(static_cast<uint64_t>(step))) >> 32);
}

// The key of the 2^32 elements [hi * 2^32, (hi + 1) * 2^32) of a tensor (hi = index >> 32).
ADAMCORE_HD uint32_t block_key(uint32_t key, uint64_t hi) {
    return mix32(static_cast<uint32_t>(key + static_cast<uint32_t>(hi) * 0x9e3779b9u));
}

// The 32 random bits of element `index` of a tensor whose step key is `key`.
ADAMCORE_HD uint32_t random_bits(uint32_t key, uint64_t index) {
    return mix32(block_key(key, index >> 32) ^ static_cast<uint32_t>(index));
}

// ---- rounding --------------------------------------------------------------------------------
// x rounded to bfloat16 stochastically, widened back: the top 16 bits of random are added to the
// 16 bits bfloat16 drops, and those are cut. A value between bfloat16 neighbours a < x < b goes
// to b with probability (x - a) / (b - a). NaN stays a quiet NaN (as narrow() keeps it); inf
// stays inf; a value just below the largest bfloat16 may round up to inf, as it must.
// (Selects, not branches, so that a loop over them vectorizes.)
ADAMCORE_HD float stochastic_round_bf16(float x, uint32_t random) {
    const uint32_t u = float_bits(x);
    const uint32_t quiet = (u & 0xffff0000u) | 0x400000u;
    const uint32_t rounded = (u + (random >> 16)) & 0xffff0000u;
    return bits_float((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// x rounded to nearest (even) in the dtype of P, widened back: widen(narrow(x, P{})).
ADAMCORE_HD float round_to(float x, float16) { return widen(narrow(x, float16{})); }
ADAMCORE_HD float round_to(float x, bfloat16) {
    const uint32_t u = float_bits(x);
    const uint32_t quiet = (u & 0xffff0000u) | 0x400000u;
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    return bits_float((u & 0x7fffffffu) > 0x7f800000u ? quiet : rounded);
}

// Kahan-compensated store of one update: p_old is the stored param, p_new the updated value in
// float32, comp the compensation (widened). The update plus the compensation is added to p_old
// and rounded to P; what that rounding dropped becomes the new compensation (itself rounded to
// P). T is float or a vector of floats; round_to(T, P) is found by argument-dependent lookup.
template <class T, class P>
ADAMCORE_HD void kahan_store(T p_old, T p_new, T& p_out, T& comp, P) {
    const T delta = (p_new - p_old) + comp;
    p_out = round_to(p_old + delta, P{});
    comp = round_to(delta - (p_out - p_old), P{});
}

// ---- one element of any storage --------------------------------------------------------------
// P param, G grad, M state storage, S arithmetic (float, or double for double params). comp is
// read and written only with Kahan summation, vmax only with AMSGRAD, random only with
// stochastic rounding. The strided CPU loop, the kernels' tails and the CUDA kernels use it.
template <int Mode, bool L2, bool AMSGRAD, class P, class G, class M, class S>
ADAMCORE_HD void update_element(P& p, G g, M& m, M& v, M& vmax, P& comp, uint32_t random,
                                const Coeffs<S>& c) {
    const S p_old = static_cast<S>(widen(p));
    S p_new = p_old;
    S mi = static_cast<S>(widen(m)), vi = static_cast<S>(widen(v));
    S xi = AMSGRAD ? static_cast<S>(widen(vmax)) : S(0);
    adam_update<L2, AMSGRAD>(p_new, static_cast<S>(widen(g)), mi, vi, xi, c);
    m = narrow(mi, M{});
    v = narrow(vi, M{});
    if (AMSGRAD) vmax = narrow(xi, M{});
    if constexpr (Mode == round_kahan) {
        S out, cw = static_cast<S>(widen(comp));
        kahan_store(p_old, p_new, out, cw, P{});
        p = narrow(out, P{});  // exact: out is a P already
        comp = narrow(cw, P{});
    } else if constexpr (Mode == round_stochastic) {
        p = narrow(stochastic_round_bf16(p_new, random), P{});  // exact
    } else {
        (void)comp;
        (void)random;
        p = narrow(p_new, P{});
    }
}

}  // namespace adamcore
