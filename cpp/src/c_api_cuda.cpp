// c_api_cuda.cpp: the CUDA entry points of adamcore.h, in every build of libadamcore.
//
// With the CUDA backend (ADAMCORE_WITH_CUDA) they check the caller's pointers as the CPU entry
// points do, find the device holding them and enqueue the step on the caller's stream. Without
// it, or with no usable GPU, each returns ADAMCORE_ERROR_UNAVAILABLE saying why, so the ABI (and
// the list of exported symbols) is the same in every build.
#include <string>
#include <utility>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "c_api_common.h"

#if defined(ADAMCORE_WITH_CUDA)
#include "adam_cuda.hpp"
#endif

namespace adamcore {
namespace {

using namespace capi;

// Throws Error(unavailable) unless the CUDA backend is built and sees a GPU.
void require_cuda() {
#if defined(ADAMCORE_WITH_CUDA)
    const std::string reason = cuda::unavailable_reason();
    if (!reason.empty())
        throw Error(ErrorKind::unavailable, "the CUDA backend cannot run: " + reason);
#else
    throw Error(ErrorKind::unavailable,
                "this libadamcore was built without the CUDA backend (no CUDA compiler was found, "
                "or ADAMCORE_CUDA=OFF)");
#endif
}

#if defined(ADAMCORE_WITH_CUDA)
// The one CUDA device holding a call's arrays, each named as its entry point names it.
class OneDevice {
public:
    void add(const void* data, const std::string& name) {
        const int d = cuda::device_of_pointer(data);
        if (d < 0) invalid(name + " is not CUDA device memory");
        if (device_ < 0) {
            device_ = d;
            first_ = name;
        } else if (d != device_) {
            invalid(name + " is on CUDA device " + std::to_string(d) + " but " + first_ +
                    " is on device " + std::to_string(device_));
        }
    }
    bool any() const { return device_ >= 0; }
    int device() const { return device_ < 0 ? 0 : device_; }

private:
    int device_ = -1;
    std::string first_;
};
#endif

// How a CUDA entry point names its arrays in errors.
enum class Naming { single, multi, tensors };

// The CUDA backend's step: every non-empty array must be device memory of one device.
struct CudaRun {
    void* stream;
    Naming naming;  // "grad", "grads[3]" (multi-tensor) or "tensors[3].grad" (adamcore_tensor)
    void operator()(const TensorRef* tensors, size_t count, const adamcore_hparams* hp) const {
#if defined(ADAMCORE_WITH_CUDA)
        OneDevice device;
        const bool amsgrad = hp->flags & ADAMCORE_AMSGRAD;
        const bool kahan = hp->flags & ADAMCORE_KAHAN_SUMMATION;
        for (size_t i = 0; i < count; ++i) {
            const TensorRef& t = tensors[i];
            if (t.param.shape[0] == 0) continue;
            auto visit = [&](const ArrayRef& array, const char* array_name) {
                // a missing max_exp_avg_sq or compensation of a tensor struct: validation says so
                if (naming == Naming::tensors && !array.data) return;
                const std::string index = std::to_string(i);
                const std::string name =
                    naming == Naming::multi     ? std::string(array_name) + "s[" + index + "]"
                    : naming == Naming::tensors ? "tensors[" + index + "]." + array_name
                                                : std::string(array_name);
                device.add(array.data, name);
            };
            for_each_array(t, amsgrad, visit);
            if (kahan && t.has_compensation) visit(t.compensation, "compensation");
        }
        if (!device.any()) return;  // nothing to do
        cuda::adam_step(tensors, count, hp, 1, false, device.device(), stream);
#else
        (void)tensors;
        (void)count;
        (void)hp;
        require_cuda();
#endif
    }
};

}  // namespace
}  // namespace adamcore

extern "C" {

int adamcore_cuda_available(void) {
#if defined(ADAMCORE_WITH_CUDA)
    return adamcore::cuda::device_count() > 0 ? 1 : 0;
#else
    return 0;
#endif
}

int adamcore_cuda_adam_step_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                                float* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp,
                                void* stream) {
    const int rc = adamcore::capi::guarded(adamcore::require_cuda);
    if (rc != ADAMCORE_OK) return rc;
    return adamcore::capi::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                       adamcore::CudaRun{stream, adamcore::Naming::single});
}

int adamcore_cuda_adam_step_f64(double* param, const double* grad, double* exp_avg,
                                double* exp_avg_sq, double* max_exp_avg_sq, int64_t n,
                                const adamcore_hparams* hp, void* stream) {
    const int rc = adamcore::capi::guarded(adamcore::require_cuda);
    if (rc != ADAMCORE_OK) return rc;
    return adamcore::capi::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                       adamcore::CudaRun{stream, adamcore::Naming::single});
}

int adamcore_cuda_adam_step_multi_f32(float* const* params, const float* const* grads,
                                      float* const* exp_avgs, float* const* exp_avg_sqs,
                                      float* const* max_exp_avg_sqs, const int64_t* lengths,
                                      size_t count, const adamcore_hparams* hp, void* stream) {
    const int rc = adamcore::capi::guarded(adamcore::require_cuda);
    if (rc != ADAMCORE_OK) return rc;
    return adamcore::capi::multi_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                      lengths, count, hp,
                                      adamcore::CudaRun{stream, adamcore::Naming::multi});
}

int adamcore_cuda_adam_step_tensors(const adamcore_tensor* tensors, size_t count,
                                    const adamcore_hparams* hp, void* stream) {
    const int rc = adamcore::capi::guarded(adamcore::require_cuda);
    if (rc != ADAMCORE_OK) return rc;
#if defined(ADAMCORE_WITH_CUDA)  // (c_tensor_refs lives in c_api.cpp, linked with the backend)
    return adamcore::capi::guarded([&] {
        if (!hp) adamcore::capi::invalid("hp is NULL");
        std::vector<int64_t> lengths;
        const std::vector<adamcore::TensorRef> refs =
            adamcore::capi::c_tensor_refs(tensors, count, lengths);
        adamcore::CudaRun{stream, adamcore::Naming::tensors}(refs.data(), refs.size(), hp);
    });
#else
    (void)tensors;
    (void)count;
    (void)hp;
    (void)stream;
    return rc;
#endif
}

int adamcore_cuda_adam_step_blockwise_tensors(const adamcore_blockwise_tensor* tensors,
                                              size_t count, const adamcore_hparams* hp,
                                              void* stream) {
    const int rc = adamcore::capi::guarded(adamcore::require_cuda);
    if (rc != ADAMCORE_OK) return rc;
#if defined(ADAMCORE_WITH_CUDA)
    return adamcore::capi::guarded([&] {
        using namespace adamcore;
        if (!hp) capi::invalid("hp is NULL");
        std::vector<int64_t> lengths;
        const std::vector<BlockwiseTensorRef> refs = capi::c_blockwise_refs(tensors, count, lengths);
        OneDevice device;
        for (size_t i = 0; i < refs.size(); ++i) {
            if (lengths[i] == 0) continue;
            const BlockwiseTensorRef& t = refs[i];
            const std::pair<const void*, const char*> arrays[] = {
                {t.param.data, "param"}, {t.grad.data, "grad"}, {t.exp_avg.data, "exp_avg"},
                {t.exp_avg_sq.data, "exp_avg_sq"}, {t.exp_avg_absmax.data, "exp_avg_absmax"},
                {t.exp_avg_sq_absmax.data, "exp_avg_sq_absmax"}};
            for (const auto& [data, field] : arrays) {
                if (data)  // (the validation names a NULL array)
                    device.add(data, "tensors[" + std::to_string(i) + "]." + field);
            }
        }
        cuda::adam_step_blockwise(refs.data(), refs.size(), hp, 1, device.device(), stream);
    });
#else
    (void)tensors;
    (void)count;
    (void)hp;
    (void)stream;
    return rc;
#endif
}

}  // extern "C"
