// cpu_blockwise.cpp: the 8-bit block-quantized state kernels of one SIMD level.
//
// Compiled once per level, like cpu_kernels.cpp (CMake's adamcore_add_level). One block of 256
// elements is one unit of work, done in one pass over memory: its codes are dequantized and the
// same adam_update() as every other path runs over the block in float32 into two small buffers
// that stay in L1, then the new absmax is an integer max over the bits and the codes are written
// back. Plain loops: the compiler vectorizes each for the level's width.
#include <type_traits>

#include "adamcore/blockwise.h"
#include "adamcore/combos.h"
#include "adamcore/half.h"
#include "adamcore/update.h"
#include "cpu_blockwise.h"

#ifndef ADAMCORE_LEVEL
#error "compile with -DADAMCORE_LEVEL=<name of the SIMD level>"
#endif

#define ADAMCORE_BW_JOIN2(a, b) a##b
#define ADAMCORE_BW_JOIN(a, b) ADAMCORE_BW_JOIN2(a, b)
#define ADAMCORE_BW_STR2(a) #a
#define ADAMCORE_BW_STR(a) ADAMCORE_BW_STR2(a)

namespace adamcore::cpu {
namespace ADAMCORE_BW_JOIN(blockwise_level_, ADAMCORE_LEVEL) {

#if defined(_MSC_VER)
#define ADAMCORE_BW_INLINE __forceinline
#else
#define ADAMCORE_BW_INLINE __attribute__((always_inline)) inline
#endif

// Inlined into both calls below, so full blocks compile with a constant trip count of 256.
template <bool L2, class P, class G>
ADAMCORE_BW_INLINE void step_block(P* __restrict p, const G* __restrict g, int8_t* __restrict mc,
                                   uint8_t* __restrict vc, float* m_absmax, float* v_absmax,
                                   int64_t len, const Coeffs<float>& c) {
    alignas(64) float m_new[kQuantBlock];
    alignas(64) float v_new[kQuantBlock];
    alignas(64) float v_root[kQuantBlock];
    const float ms = m_scale(*m_absmax), vs = v_scale(*v_absmax);
    for (int64_t i = 0; i < len; ++i) {
        float pi = widen(p[i]);
        float mi = dequantize_m(mc[i], ms);
        float vi = dequantize_v(vc[i], vs);
        float unused = 0.0f;
        adam_update<L2, false>(pi, widen(g[i]), mi, vi, unused, c);
        p[i] = narrow(pi, P{});
        m_new[i] = mi;
        v_new[i] = vi;
        v_root[i] = sqrt_rn(vi);  // the same sqrt as the update's denominator: computed once
    }
    uint32_t m_max = 0, v_max = 0;
    for (int64_t i = 0; i < len; ++i) {
        const uint32_t a = magnitude_bits(m_new[i]), b = magnitude_bits(v_new[i]);
        m_max = a > m_max ? a : m_max;
        v_max = b > v_max ? b : v_max;
    }
    const float new_m_absmax = bits_float(m_max), new_v_absmax = bits_float(v_max);
    *m_absmax = new_m_absmax;
    *v_absmax = new_v_absmax;
    const float fm = quant_factor(new_m_absmax), fv = quant_root_factor(new_v_absmax);
    for (int64_t i = 0; i < len; ++i) {
        mc[i] = quantize_m(m_new[i], fm);
        vc[i] = quantize_v(v_root[i], fv);
    }
}

template <int C, bool L2>
void step_blocks(const BlockwiseTensor& t, int64_t block_begin, int64_t block_end,
                 const Coeffs<float>& coeffs) {
    using P = typename ComboTypes<C>::P;
    using G = typename ComboTypes<C>::G;
    const Coeffs<float> c = coeffs;  // a local copy: no store can change it
    P* p = static_cast<P*>(t.param);
    const G* g = static_cast<const G*>(t.grad);
    for (int64_t b = block_begin; b < block_end; ++b) {
        const int64_t start = b * kQuantBlock;
        const int64_t len = t.n - start < kQuantBlock ? t.n - start : kQuantBlock;
        if (len == kQuantBlock)  // full blocks with a constant trip count: no masks, no tails
            step_block<L2>(p + start, g + start, t.m_codes + start, t.v_codes + start,
                           t.m_absmax + b, t.v_absmax + b, kQuantBlock, c);
        else
            step_block<L2>(p + start, g + start, t.m_codes + start, t.v_codes + start,
                           t.m_absmax + b, t.v_absmax + b, len, c);
    }
}

constexpr BlockwiseTable make_table() {
    BlockwiseTable table{};
    table.name = ADAMCORE_BW_STR(ADAMCORE_LEVEL);
    for_each_combo([&](auto combo) {
        constexpr int C = decltype(combo)::value;
        // the 8-bit codes replace the float state: only the default-state combos apply
        if constexpr (C != f64 && C < default_state_combos) {
            table.step[C][0] = &step_blocks<C, false>;
            table.step[C][1] = &step_blocks<C, true>;
        }
    });
    return table;
}

}  // namespace blockwise_level_<ADAMCORE_LEVEL>

const BlockwiseTable ADAMCORE_BW_JOIN(ADAMCORE_LEVEL, _blockwise) =
    ADAMCORE_BW_JOIN(blockwise_level_, ADAMCORE_LEVEL)::make_table();

}  // namespace adamcore::cpu
