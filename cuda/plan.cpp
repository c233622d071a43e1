// plan.cpp: cuda::Plan (adam_cuda.hpp), the table uploaded once; each step checks the grads,
// uploads their pointers only when they moved, and launches one kernel per dtype pair.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "adam_cuda.hpp"
#include "adamcore/combos.h"
#include "device.h"
#include "finite_check.h"
#include "memory.h"
#include "table.h"

namespace adamcore::cuda {

using namespace detail;

struct Plan::Impl {
    int device;
    std::vector<TensorRef> refs;  // params and state, grads filled in per step
    HostTable table;              // by param dtype (build_table without hparams); grads unset
    Blob blob;                    // tensors | tile_begin, uploaded at the first step
    void* table_dev = nullptr;
    void* grads_dev = nullptr;
    std::vector<const void*> grads_uploaded;
    cudaEvent_t last_use = nullptr;  // recorded after every step's launches

    ~Impl() {
        try {
            DeviceGuard guard(device);
            free_after(table_dev, last_use, device);
            free_after(grads_dev, last_use, device);
            if (last_use) cudaEventDestroy(last_use);
        } catch (...) {
        }
    }

    // The grads' pointers (lowest elements) and each range's dtype pair, or false when some
    // grad is laid out unlike its param, misaligned for the vector path, or a range's grads
    // differ in dtype: then the step goes the one-shot way.
    bool fit_grads(std::vector<const void*>& ptrs, std::vector<int>& combos) const {
        ptrs.resize(table.tensors.size());
        combos.resize(table.ranges.size());
        for (size_t r = 0; r < table.ranges.size(); ++r) {
            const Range& range = table.ranges[r];
            const DType grad_dtype = refs[table.source[range.first]].grad.dtype;
            for (int32_t e = range.first; e < range.first + range.count; ++e) {
                const TensorRef& t = refs[table.source[e]];
                if (t.grad.dtype != grad_dtype) return false;
                for (int32_t d = 0; d < t.param.ndim; ++d)
                    if (t.param.shape[d] > 1 && stride_of(t.grad, d) != stride_of(t.param, d)) return false;
                ptrs[e] = lowest(t.grad, table.low[e]);
                if (table.tensors[e].kind == kVector && !vector_aligned(t.param.dtype, grad_dtype, ptrs[e]))
                    return false;
            }
            combos[r] = combo_of(range.param, grad_dtype);
        }
        return true;
    }
};

Plan::Plan(const TensorRef* tensors, size_t count, int device) : impl_(std::make_unique<Impl>()) {
    require_device(device);
    check_index_range(count);
    Impl& im = *impl_;
    im.device = device;
    im.refs.assign(tensors, tensors + count);
    for (size_t i = 0; i < count; ++i) {
        TensorRef& t = im.refs[i];
        t.grad = t.param;  // stands in for the grad until a step brings one
        // each step validates everything; the table needs the shapes to agree already
        const ArrayRef* state[3] = {&t.exp_avg, &t.exp_avg_sq, &t.max_exp_avg_sq};
        for (size_t k = 0; k < (t.has_max_exp_avg_sq ? 3u : 2u); ++k)
            if (numel(t.param) != 0 && (state[k]->ndim != t.param.ndim ||
                                        !std::equal(t.param.shape, t.param.shape + t.param.ndim, state[k]->shape)))
                fail(ErrorKind::invalid_value, "the state of param " + std::to_string(i) +
                                                   " does not have the param's shape");
    }
    im.table = build_table(im.refs.data(), count, nullptr);
    im.blob = serialize(im.table, {});
    DeviceGuard guard(device);
    ADAMCORE_CUDA_CHECK(cudaEventCreateWithFlags(&im.last_use, cudaEventDisableTiming));
}

Plan::~Plan() = default;

size_t Plan::size() const { return impl_->refs.size(); }

void Plan::step(const ArrayRef* grads, size_t count, const adamcore_hparams* hparams,
                size_t hparams_count, bool check_finite, void* stream) {
    Impl& im = *impl_;
    if (count != im.refs.size())
        fail(ErrorKind::invalid_value, "got " + std::to_string(count) + " grads for " +
                                           std::to_string(im.refs.size()) + " params");
    for (size_t i = 0; i < count; ++i) im.refs[i].grad = grads[i];
    validate_step(im.refs.data(), count, hparams, hparams_count);
    detail::require_default_precision(im.refs.data(), count, hparams);
    const auto s = static_cast<cudaStream_t>(stream);
    DeviceGuard guard(im.device);
    if (check_finite) check_finite_grads(im.refs.data(), count, im.device, s);

    std::vector<const void*> grad_ptrs;
    std::vector<int> combos;
    const StepSets sets(hparams, hparams_count);
    if (!im.fit_grads(grad_ptrs, combos)) {
        run_one_shot(build_table(im.refs.data(), count, hparams), sets, s, im.device);
        return;
    }
    if (im.table.tensors.empty()) return;
    const DeviceState& st = device_state(im.device);
    if (!im.table_dev) {
        im.table_dev = alloc_on(im.blob.bytes.size(), s, st);
        upload(im.table_dev, im.blob.bytes.data(), im.blob.bytes.size(), s);
    }
    if (grad_ptrs != im.grads_uploaded) {
        // a new array: the previous one may still be read by the last step's kernels
        void* fresh = alloc_on(grad_ptrs.size() * sizeof(void*), s, st);
        const cudaError_t err = cudaMemcpyAsync(fresh, grad_ptrs.data(), grad_ptrs.size() * sizeof(void*),
                                                cudaMemcpyHostToDevice, s);
        if (err != cudaSuccess) {
            free_on(fresh, s, st);
            fail_cuda(err, "cudaMemcpyAsync(grad pointers)");
        }
        free_after(im.grads_dev, im.last_use, im.device);
        im.grads_dev = fresh;
        im.grads_uploaded = grad_ptrs;
    }
    // more hyperparameter sets than the arguments hold: uploaded for this step only
    std::unique_ptr<StreamBuffer> sets_buffer;
    const char* sets_dev = nullptr;
    if (!sets.inline_sets) {
        sets_buffer = std::make_unique<StreamBuffer>(sets.bytes.size(), s, st);
        upload(sets_buffer->ptr, sets.bytes.data(), sets.bytes.size(), s);
        sets_dev = static_cast<const char*>(sets_buffer->ptr);
    }
    const char* base = static_cast<const char*>(im.table_dev);
    const DeviceTable t{reinterpret_cast<const DeviceTensor*>(base),
                        reinterpret_cast<const int64_t*>(base + im.blob.tile_begin),
                        static_cast<const void* const*>(im.grads_dev), nullptr, sets_dev};
    for (size_t r = 0; r < im.table.ranges.size(); ++r) {
        Range range = im.table.ranges[r];
        range.combo = combos[r];
        launch(range, t, sets, s);
    }
    ADAMCORE_CUDA_CHECK(cudaEventRecord(im.last_use, s));
}

}  // namespace adamcore::cuda
