// cpu_blockwise_step.cpp: the threaded CPU step over 8-bit block-quantized state
// (cpu_blockwise.h), validated by validate_blockwise.cpp. Level-independent: the kernels come
// from the active level's table.
#include <algorithm>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "adamcore/blockwise.h"
#include "adamcore/combos.h"
#include "adamcore/core.hpp"
#include "adamcore/update.h"
#include "cpu_blockwise.h"
#include "cpu_kernels.h"
#include "cpu_parallel.h"

namespace adamcore {
namespace {

// One tensor's part of the step, in the global block index space.
struct Planned {
    int64_t offset;  // first global block
    int64_t count;   // blocks
    int combo;
    bool l2;
    size_t coeffs;
    cpu::BlockwiseTensor ptrs;
};

}  // namespace

void cpu_adam_step_blockwise(const BlockwiseTensorRef* tensors, size_t count,
                             const adamcore_hparams* hparams, size_t hparams_count,
                             bool check_finite) {
    validate_blockwise_step(tensors, count, hparams, hparams_count);
    std::vector<Coeffs<float>> coeffs(hparams_count);
    for (size_t h = 0; h < hparams_count; ++h) coeffs[h] = round_coeffs<float>(make_coeffs(hparams[h]));

    std::vector<Planned> plans;
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) {
        const BlockwiseTensorRef& t = tensors[i];
        const int64_t n = numel(t.param);
        if (n == 0) continue;
        Planned plan{};
        plan.offset = total;
        plan.count = quant_blocks(n);
        plan.combo = combo_of(t.param.dtype, t.grad.dtype);
        plan.l2 = uses_l2(hparams[t.hparams_index]);
        plan.coeffs = t.hparams_index;
        plan.ptrs = {t.param.data,
                     t.grad.data,
                     static_cast<int8_t*>(t.exp_avg.data),
                     static_cast<uint8_t*>(t.exp_avg_sq.data),
                     static_cast<float*>(t.exp_avg_absmax.data),
                     static_cast<float*>(t.exp_avg_sq_absmax.data),
                     n};
        plans.push_back(plan);
        total += plan.count;
    }
    if (total == 0) return;
    if (check_finite) require_finite_grads(tensors, count);

    // The threads share elements (block b is elements [256 b, 256 b + 256) of the global space);
    // a block belongs to the piece holding its first element, so each is stepped exactly once.
    const cpu::BlockwiseTable& table = cpu::active_blockwise();
    cpu::parallel_ranges(total * kQuantBlock, [&](int64_t begin, int64_t end) {
        const int64_t first = (begin + kQuantBlock - 1) / kQuantBlock;
        const int64_t last = (end + kQuantBlock - 1) / kQuantBlock;
        if (first >= last) return;
        cpu::for_pieces(plans, first, last, [&](const Planned& plan, int64_t lo, int64_t hi) {
            table.step[plan.combo][plan.l2](plan.ptrs, lo, hi, coeffs[plan.coeffs]);
        });
    });
}

namespace cpu {

const BlockwiseTable& active_blockwise() {
    const char* name = active_kernels().name;
#if defined(ADAMCORE_HAVE_AVX512)
    if (std::strcmp(name, avx512_blockwise.name) == 0) return avx512_blockwise;
#endif
#if defined(ADAMCORE_HAVE_AVX2)
    if (std::strcmp(name, avx2_blockwise.name) == 0) return avx2_blockwise;
#endif
    (void)name;
    return baseline_blockwise;
}

}  // namespace cpu
}  // namespace adamcore
