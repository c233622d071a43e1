// cpu_step.cpp: one Adam step over many CPU tensors, in one parallel region.
//
// The tensors' elements form one index space, handed to the threads in chunks, so a chunk may
// cover the end of one tensor and the start of the next. Tensors whose arrays share one dense
// layout go to the active SIMD level's kernels; any other layout (strided views, a grad laid out
// unlike its parameter) goes through the strided loop below, with the same update and results.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "adamcore/core.hpp"
#include "adamcore/half.h"
#include "adamcore/update.h"
#include "cpu_kernels.h"
#include "cpu_step_testing.h"

namespace adamcore {
namespace {

// ---------------------------------------------------------------------------------------------
// Threads

int default_threads() {
#if defined(_OPENMP)
    return std::max(1, omp_get_max_threads());  // honours OMP_NUM_THREADS and the affinity mask
#else
    return 1;
#endif
}

std::atomic<int>& thread_setting() {
    static std::atomic<int> threads{default_threads()};
    return threads;
}

// Below this many elements per thread, starting threads costs more than it saves.
constexpr int64_t min_elements_per_thread = 1 << 15;
// Chunk boundaries fall on multiples of this (a cache line of float16), so threads never share
// a cache line within a tensor.
constexpr int64_t split_granule = 64;
// Work is handed out in chunks of at least this many elements (64 KiB of each float32 array):
// small enough that a thread the OS has descheduled (these machines are shared) holds up at most
// one chunk, large enough that taking a chunk (one atomic add, one search for its tensors) is
// noise next to the chunk's memory traffic.
constexpr int64_t min_chunk = 1 << 14;
constexpr int64_t chunks_per_thread = 8;

// The chunk size the threads take from the shared counter: a multiple of split_granule, at least
// min_chunk, about chunks_per_thread chunks per thread.
int64_t chunk_size(int64_t total, int64_t threads) {
    const int64_t chunk = std::max(min_chunk, total / (threads * chunks_per_thread));
    return (chunk + split_granule - 1) / split_granule * split_granule;
}

// Runs body(begin, end) over [0, total), split among the threads in chunks taken dynamically
// from one counter; the pieces cover [0, total) exactly once, whatever the timing.
template <class Body>
void parallel_ranges(int64_t total, const Body& body) {
    const int64_t wanted = std::max<int64_t>(1, total / min_elements_per_thread);
    const int threads = static_cast<int>(std::min<int64_t>(thread_setting().load(), wanted));
    if (threads <= 1) {
        body(int64_t{0}, total);
        return;
    }
#if defined(_OPENMP)
    const int64_t chunk = chunk_size(total, threads);
    std::atomic<int64_t> next{0};
#pragma omp parallel num_threads(threads)
    {
        for (;;) {
            const int64_t begin = next.fetch_add(chunk, std::memory_order_relaxed);
            if (begin >= total) break;
            body(begin, std::min(total, begin + chunk));
        }
    }
#else
    body(int64_t{0}, total);
#endif
}

// ---------------------------------------------------------------------------------------------
// Planning: each tensor becomes a dense run or a strided walk over its own index range.

int combo_of(DType param, DType grad) {
    using namespace cpu;
    switch (param) {
        case DType::float32: return f32;
        case DType::float64: return f64;
        case DType::float16: return grad == DType::float16 ? f16_f16 : f16_f32;
        case DType::bfloat16: return grad == DType::bfloat16 ? bf16_bf16 : bf16_f32;
    }
    return -1;
}

struct Planned {
    const TensorRef* ref;
    int64_t offset;  // start in the global index space
    int64_t count;
    int combo;
    bool l2, amsgrad;
    size_t coeffs;  // index into the per-hparams coefficients
    bool dense;
    cpu::DenseTensor dense_ptrs;   // when dense: pointers to the lowest element
    std::vector<int64_t> strides;  // when strided: ndim strides each of p, g, m, v, vmax

    const int64_t* strides_of(int k) const { return strides.data() + k * ref->param.ndim; }
};

template <class T>
T* at(void* data, int64_t offset) {
    return static_cast<T*>(data) + offset;
}

Planned plan_tensor(const TensorRef& t, const adamcore_hparams& hp, int64_t offset) {
    Planned plan{};
    plan.ref = &t;
    plan.offset = offset;
    plan.count = numel(t.param);
    plan.combo = combo_of(t.param.dtype, t.grad.dtype);
    plan.l2 = uses_l2(hp);
    plan.amsgrad = hp.flags & ADAMCORE_AMSGRAD;
    plan.coeffs = t.hparams_index;
    const ArrayRef* arrays[5] = {&t.param, &t.grad, &t.exp_avg, &t.exp_avg_sq, &t.max_exp_avg_sq};
    const size_t used = plan.amsgrad ? 5 : 4;
    int64_t low = 0;
    plan.dense = dense_layout(arrays, used, &low);
    if (plan.dense) {
        auto lowest = [&](const ArrayRef& a) {
            return static_cast<char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
        };
        plan.dense_ptrs = {lowest(t.param), lowest(t.grad), lowest(t.exp_avg),
                           lowest(t.exp_avg_sq), plan.amsgrad ? lowest(t.max_exp_avg_sq) : nullptr};
    } else {
        plan.strides.resize(5 * static_cast<size_t>(t.param.ndim));
        for (size_t k = 0; k < used; ++k)
            for (int32_t d = 0; d < t.param.ndim; ++d)
                plan.strides[k * t.param.ndim + d] = stride_of(*arrays[k], d);
    }
    return plan;
}

// ---------------------------------------------------------------------------------------------
// The strided walk: elements [begin, end) in C order of the logical index, K arrays at once.

template <int K, class Visit>
void walk_strided(int32_t ndim, const int64_t* shape, const int64_t* const* strides, int64_t begin,
                  int64_t end, const Visit& visit) {
    int64_t index[64];
    int64_t rest = begin;
    for (int32_t d = ndim - 1; d >= 0; --d) {
        index[d] = rest % shape[d];
        rest /= shape[d];
    }
    int64_t offsets[K];
    while (begin < end) {
        for (int k = 0; k < K; ++k) {
            offsets[k] = 0;
            for (int32_t d = 0; d < ndim; ++d) offsets[k] += index[d] * strides[k][d];
        }
        if (ndim == 0) {
            visit(offsets);
            return;
        }
        const int32_t last = ndim - 1;
        const int64_t run = std::min(shape[last] - index[last], end - begin);
        for (int64_t i = 0; i < run; ++i) {
            visit(offsets);
            for (int k = 0; k < K; ++k) offsets[k] += strides[k][last];
        }
        begin += run;
        index[last] += run;
        for (int32_t d = last; d > 0 && index[d] == shape[d]; --d) {
            index[d] = 0;
            ++index[d - 1];
        }
    }
}

template <int C, bool L2, bool AMSGRAD>
void strided_update(const Planned& plan, int64_t begin, int64_t end, const cpu::StepCoeffs& c) {
    using P = typename cpu::ComboTypes<C>::P;
    using G = typename cpu::ComboTypes<C>::G;
    using S = std::conditional_t<std::is_same_v<P, double>, double, float>;
    const Coeffs<S>& coeffs = [&]() -> const Coeffs<S>& {
        if constexpr (std::is_same_v<S, double>) return c.f64; else return c.f32;
    }();
    const TensorRef& t = *plan.ref;
    const int64_t* strides[5] = {plan.strides_of(0), plan.strides_of(1), plan.strides_of(2),
                                 plan.strides_of(3), plan.strides_of(4)};
    walk_strided<5>(t.param.ndim, t.param.shape, strides, begin, end, [&](const int64_t* off) {
        P& p = *at<P>(t.param.data, off[0]);
        S pi = widen(p);
        S mi = *at<S>(t.exp_avg.data, off[2]);
        S vi = *at<S>(t.exp_avg_sq.data, off[3]);
        S vmaxi = AMSGRAD ? *at<S>(t.max_exp_avg_sq.data, off[4]) : S(0);
        adam_update<L2, AMSGRAD>(pi, static_cast<S>(widen(*at<G>(t.grad.data, off[1]))), mi, vi,
                                 vmaxi, coeffs);
        p = narrow(pi, P{});
        *at<S>(t.exp_avg.data, off[2]) = mi;
        *at<S>(t.exp_avg_sq.data, off[3]) = vi;
        if (AMSGRAD) *at<S>(t.max_exp_avg_sq.data, off[4]) = vmaxi;
    });
}

using StridedFn = void (*)(const Planned&, int64_t, int64_t, const cpu::StepCoeffs&);

template <int C>
void fill_strided(StridedFn (&table)[cpu::combo_count][2][2]) {
    table[C][0][0] = &strided_update<C, false, false>;
    table[C][0][1] = &strided_update<C, false, true>;
    table[C][1][0] = &strided_update<C, true, false>;
    table[C][1][1] = &strided_update<C, true, true>;
}

const auto& strided_kernels() {
    static const auto table = [] {
        struct Table {
            StridedFn fn[cpu::combo_count][2][2];
        } t{};
        fill_strided<cpu::f32>(t.fn);
        fill_strided<cpu::f64>(t.fn);
        fill_strided<cpu::f16_f16>(t.fn);
        fill_strided<cpu::f16_f32>(t.fn);
        fill_strided<cpu::bf16_bf16>(t.fn);
        fill_strided<cpu::bf16_f32>(t.fn);
        return t;
    }();
    return table.fn;
}

// One gradient for the finite check: a dense run, or a strided walk.
struct PlannedArray {
    const ArrayRef* ref;
    size_t index;  // position in the caller's list
    int64_t offset;
    int64_t count;
    bool dense;
    const char* lowest;         // when dense
    std::vector<int64_t> strides;  // when strided
};

template <class T>
bool finite_strided(const PlannedArray& plan, int64_t begin, int64_t end) {
    const int64_t* strides[1] = {plan.strides.data()};
    bool finite = true;
    walk_strided<1>(plan.ref->ndim, plan.ref->shape, strides, begin, end, [&](const int64_t* off) {
        // widen() keeps float64 as float64: narrowing it would call 1e300 infinite
        const auto x = widen(*at<T>(plan.ref->data, off[0]));
        finite &= (x - x) == 0;
    });
    return finite;
}

bool range_finite(const PlannedArray& plan, int64_t begin, int64_t end,
                  const cpu::KernelTable& kernels) {
    const DType dtype = plan.ref->dtype;
    if (plan.dense)
        return kernels.all_finite[static_cast<int>(dtype)](
            plan.lowest + begin * static_cast<int64_t>(dtype_size(dtype)), end - begin);
    switch (dtype) {
        case DType::float16: return finite_strided<float16>(plan, begin, end);
        case DType::bfloat16: return finite_strided<bfloat16>(plan, begin, end);
        case DType::float32: return finite_strided<float>(plan, begin, end);
        case DType::float64: return finite_strided<double>(plan, begin, end);
    }
    return false;
}

// Calls visit(plan, begin, end) for every tensor piece inside the global range [begin, end).
template <class Plan, class Visit>
void for_pieces(const std::vector<Plan>& plans, int64_t begin, int64_t end, const Visit& visit) {
    auto it = std::upper_bound(plans.begin(), plans.end(), begin,
                               [](int64_t x, const Plan& p) { return x < p.offset + p.count; });
    for (; it != plans.end() && it->offset < end; ++it) {
        const int64_t lo = std::max(begin, it->offset) - it->offset;
        const int64_t hi = std::min(end, it->offset + it->count) - it->offset;
        if (lo < hi) visit(*it, lo, hi);
    }
}

}  // namespace

int get_num_threads() { return thread_setting().load(); }

void set_num_threads(int n) {
    if (n < 1) throw Error(ErrorKind::invalid_value, "the number of threads must be >= 1");
    thread_setting().store(n);
}

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
    if (check_finite) {
        std::vector<ArrayRef> grads(count);
        for (size_t i = 0; i < count; ++i) grads[i] = tensors[i].grad;
        const int64_t bad = cpu_first_nonfinite(grads.data(), count);
        if (bad >= 0)
            throw Error(ErrorKind::not_finite, "grad " + std::to_string(bad) +
                                                   " holds inf or NaN (check_finite is on); "
                                                   "nothing was updated");
    }

    const cpu::KernelTable& kernels = cpu::active_kernels();
    const auto& strided = strided_kernels();
    parallel_ranges(total, [&](int64_t begin, int64_t end) {
        for_pieces(plans, begin, end, [&](const Planned& plan, int64_t lo, int64_t hi) {
            const cpu::StepCoeffs& c = coeffs[plan.coeffs];
            if (plan.dense)
                kernels.dense[plan.combo][plan.l2][plan.amsgrad](plan.dense_ptrs, lo, hi, c);
            else
                strided[plan.combo][plan.l2][plan.amsgrad](plan, lo, hi, c);
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
        PlannedArray plan{&a, i, total, n, false, nullptr, {}};
        const ArrayRef* one[1] = {&a};
        int64_t low = 0;
        plan.dense = dense_layout(one, 1, &low);
        if (plan.dense) {
            plan.lowest = static_cast<const char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
        } else {
            for (int32_t d = 0; d < a.ndim; ++d) plan.strides.push_back(stride_of(a, d));
        }
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

// ---------------------------------------------------------------------------------------------
// The index arithmetic above, callable from tests (adamcore._core._testing) with any 64-bit sizes.

namespace testing {

std::vector<std::pair<int64_t, int64_t>> chunks(int64_t total, int64_t threads) {
    // the ranges parallel_ranges hands out, in the order the counter gives them
    std::vector<std::pair<int64_t, int64_t>> out;
    const int64_t chunk = chunk_size(total, threads);
    for (int64_t begin = 0; begin < total; begin += chunk) {
        out.emplace_back(begin, std::min(total, begin + chunk));
    }
    return out;
}

std::vector<std::tuple<int64_t, int64_t, int64_t>> pieces(const std::vector<int64_t>& counts,
                                                          int64_t begin, int64_t end) {
    struct Plan {
        int64_t index, offset, count;
    };
    std::vector<Plan> plans;
    int64_t total = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
        if (counts[i] == 0) continue;  // as cpu_adam_step skips empty tensors
        plans.push_back({static_cast<int64_t>(i), total, counts[i]});
        total += counts[i];
    }
    std::vector<std::tuple<int64_t, int64_t, int64_t>> out;
    for_pieces(plans, begin, end,
               [&](const Plan& p, int64_t lo, int64_t hi) { out.emplace_back(p.index, lo, hi); });
    return out;
}

std::vector<int64_t> strided_offsets(const std::vector<int64_t>& shape,
                                     const std::vector<int64_t>& strides, int64_t begin,
                                     int64_t end) {
    if (shape.size() != strides.size() || shape.size() > 64)
        throw Error(ErrorKind::invalid_value, "shape and strides must have one length <= 64");
    const int64_t* stride_rows[1] = {strides.data()};
    std::vector<int64_t> out;
    walk_strided<1>(static_cast<int32_t>(shape.size()), shape.data(), stride_rows, begin, end,
                    [&](const int64_t* off) { out.push_back(off[0]); });
    return out;
}

}  // namespace testing

}  // namespace adamcore
