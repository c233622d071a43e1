// cpu_step.cpp: one Adam step over many CPU tensors, in one parallel region (cpu_parallel.h).
//
// Tensors whose arrays share one dense layout go to the active SIMD level's kernels; any other
// layout (strided views, a grad laid out unlike its parameter) goes to the strided loop
// (cpu_strided.h), with the same update and results.
#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "adamcore/combos.h"
#include "adamcore/core.hpp"
#include "adamcore/lowp.h"
#include "adamcore/strided.h"
#include "adamcore/update.h"
#include "cpu_kernels.h"
#include "cpu_parallel.h"
#include "cpu_strided.h"

namespace adamcore {
namespace {

using cpu::for_pieces;
using cpu::parallel_ranges;

char* lowest(const ArrayRef& a, int64_t low) {
    return static_cast<char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
}

// One tensor's part of the step: a dense run or a strided walk over its own index range.
struct Planned {
    int64_t offset;  // start in the global index space
    int64_t count;
    int combo;
    bool l2, amsgrad;
    int rounding;  // lowp.h's Rounding
    size_t coeffs;  // index into the per-hparams coefficients
    bool dense;
    cpu::DenseTensor dense_ptrs;  // when dense: pointers to the lowest element
    cpu::StridedTensor strided;   // when not
};

Planned plan_tensor(const TensorRef& t, const adamcore_hparams& hp, int64_t offset) {
    Planned plan{};
    plan.offset = offset;
    plan.count = numel(t.param);
    plan.combo = combo_of(t.param.dtype, t.grad.dtype, t.exp_avg.dtype);
    plan.l2 = uses_l2(hp);
    plan.amsgrad = hp.flags & ADAMCORE_AMSGRAD;
    plan.rounding = rounding_of(hp.flags);
    plan.coeffs = t.hparams_index;
    const bool kahan = plan.rounding == round_kahan;
    const uint32_t key = plan.rounding == round_stochastic ? rounding_key(t.seed, hp.step) : 0u;
    // param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, compensation
    const ArrayRef* arrays[6] = {&t.param, &t.grad, &t.exp_avg, &t.exp_avg_sq, &t.param, &t.param};
    size_t used = 4;
    if (plan.amsgrad) arrays[used++] = &t.max_exp_avg_sq;
    if (kahan) arrays[used++] = &t.compensation;
    int64_t low = 0;
    plan.dense = dense_layout(arrays, used, &low);
    // stochastic rounding counts elements in C order: other dense layouts walk strided
    if (plan.dense && plan.rounding == round_stochastic && !c_order(t.param)) plan.dense = false;
    if (plan.dense) {
        plan.dense_ptrs = {lowest(t.param, low), lowest(t.grad, low), lowest(t.exp_avg, low),
                           lowest(t.exp_avg_sq, low),
                           plan.amsgrad ? lowest(t.max_exp_avg_sq, low) : nullptr,
                           kahan ? lowest(t.compensation, low) : nullptr, key};
    } else {
        plan.strided.ref = &t;
        plan.strided.key = key;
        const ArrayRef* rows[6] = {&t.param, &t.grad, &t.exp_avg, &t.exp_avg_sq,
                                   plan.amsgrad ? &t.max_exp_avg_sq : &t.param,
                                   kahan ? &t.compensation : &t.param};
        for (const ArrayRef* a : rows) append_strides(*a, plan.strided.strides);
    }
    return plan;
}

// One array of the finite check: a dense run, or a strided walk.
struct PlannedArray {
    const ArrayRef* ref;
    size_t index;  // position in the caller's list
    int64_t offset;
    int64_t count;
    const char* dense;             // the lowest element when dense, else nullptr
    std::vector<int64_t> strides;  // when strided
};

bool range_finite(const PlannedArray& plan, int64_t begin, int64_t end,
                  const cpu::KernelTable& kernels) {
    const DType dtype = plan.ref->dtype;
    if (plan.dense)
        return kernels.all_finite[static_cast<int>(dtype)](
            plan.dense + begin * static_cast<int64_t>(dtype_size(dtype)), end - begin);
    return cpu::strided_all_finite(*plan.ref, plan.strides.data(), begin, end);
}

}  // namespace

void cpu_adam_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
                   size_t hparams_count, bool check_finite) {
    validate_step(tensors, count, hparams, hparams_count);

    std::vector<cpu::StepCoeffs> coeffs(hparams_count);
    for (size_t h = 0; h < hparams_count; ++h) {
        const Coeffs<double> c = make_coeffs(hparams[h]);
        coeffs[h] = {round_coeffs<float>(c), c, uses_l2(hparams[h])};
    }

    std::vector<Planned> plans;
    plans.reserve(count);
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) {
        if (numel(tensors[i].param) == 0) continue;
        plans.push_back(plan_tensor(tensors[i], hparams[tensors[i].hparams_index], total));
        total += plans.back().count;
    }
    if (total == 0) return;
    if (check_finite) require_finite_grads(tensors, count);

    const cpu::KernelTable& kernels = cpu::active_kernels();
    const auto& strided = cpu::strided_kernels();
    parallel_ranges(total, [&](int64_t begin, int64_t end) {
        for_pieces(plans, begin, end, [&](const Planned& plan, int64_t lo, int64_t hi) {
            const cpu::StepCoeffs& c = coeffs[plan.coeffs];
            if (plan.dense)
                kernels.dense[plan.combo][plan.l2][plan.amsgrad][plan.rounding](plan.dense_ptrs, lo,
                                                                                hi, c);
            else
                strided[plan.combo][plan.l2][plan.amsgrad][plan.rounding](plan.strided, lo, hi, c);
        });
    });
}

int64_t cpu_first_nonfinite(const ArrayRef* arrays, size_t count) {
    std::vector<PlannedArray> plans;
    int64_t total = 0;
    for (size_t i = 0; i < count; ++i) {
        const ArrayRef& a = arrays[i];
        const int64_t n = numel(a);
        if (n == 0) continue;
        PlannedArray plan{&a, i, total, n, nullptr, {}};
        const ArrayRef* one[1] = {&a};
        int64_t low = 0;
        if (dense_layout(one, 1, &low))
            plan.dense = lowest(a, low);
        else
            append_strides(a, plan.strides);
        plans.push_back(std::move(plan));
        total += n;
    }
    const cpu::KernelTable& kernels = cpu::active_kernels();
    std::atomic<size_t> first_bad{count};
    parallel_ranges(total, [&](int64_t begin, int64_t end) {
        for_pieces(plans, begin, end, [&](const PlannedArray& plan, int64_t lo, int64_t hi) {
            if (plan.index < first_bad.load() && !range_finite(plan, lo, hi, kernels)) {
                size_t seen = first_bad.load();
                while (plan.index < seen && !first_bad.compare_exchange_weak(seen, plan.index)) {
                }
            }
        });
    });
    const size_t bad = first_bad.load();
    return bad < count ? static_cast<int64_t>(bad) : -1;
}

void cpu_stream_probe(float* p, const float* g, float* m, float* v, int64_t n) {
    const cpu::KernelTable& kernels = cpu::active_kernels();
    parallel_ranges(n, [&](int64_t begin, int64_t end) { kernels.stream_probe(p, g, m, v, begin, end); });
}

void cpu_copy(float* dst, const float* src, int64_t n) {
    parallel_ranges(n, [&](int64_t begin, int64_t end) {
        std::copy(src + begin, src + end, dst + begin);
    });
}

}  // namespace adamcore
