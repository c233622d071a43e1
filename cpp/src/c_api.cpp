// c_api.cpp: the C ABI of adamcore.h (the CPU part), a thin layer over the C++ core.
//
// Each entry point describes the caller's buffers as TensorRefs and hands them to the same
// cpu_adam_step the Python module calls, which validates every argument before it writes.
#include <exception>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "c_api_common.h"

namespace adamcore {
namespace {

using namespace capi;

// The CPU backend's step for the shared entry-point checks.
void cpu_run(const TensorRef* tensors, size_t count, const adamcore_hparams* hp) {
    cpu_adam_step(tensors, count, hp, 1, false);
}

// The names of the compiled SIMD levels, kept for the whole process so that
// adamcore_simd_level() can hand out a static string.
const char* static_level_name(const std::string& name) {
    static const std::vector<std::string> names = compiled_simd_levels();
    for (const std::string& n : names)
        if (n == name) return n.c_str();
    return "unknown";
}

// adamcore_tensor descriptors as TensorRefs (lengths holds each n: the shapes point there).
std::vector<TensorRef> tensor_refs(const adamcore_tensor* tensors, size_t count,
                                   std::vector<int64_t>& lengths) {
    if (count > 0 && !tensors) invalid("tensors is NULL (count is " + std::to_string(count) + ")");
    lengths.resize(count);
    std::vector<TensorRef> refs(count);
    for (size_t i = 0; i < count; ++i) {
        const adamcore_tensor& c = tensors[i];
        const std::string where = "tensors[" + std::to_string(i) + "]";
        if (c.n < 0) invalid(where + ".n must be >= 0, got " + std::to_string(c.n));
        if (c.reserved != 0) invalid(where + ".reserved must be 0");
        lengths[i] = c.n;
        const DType param = c_dtype(c.param_dtype, i, "param_dtype");
        const DType grad = c_dtype(c.grad_dtype, i, "grad_dtype");
        const DType state = c_dtype(c.state_dtype, i, "state_dtype");
        auto ref = [&](const void* data, DType dtype) {
            ArrayRef a;
            a.data = const_cast<void*>(data);
            a.dtype = dtype;
            a.ndim = 1;
            a.shape = &lengths[i];
            return a;
        };
        TensorRef& t = refs[i];
        t.param = ref(c.param, param);
        t.grad = ref(c.grad, grad);
        t.exp_avg = ref(c.exp_avg, state);
        t.exp_avg_sq = ref(c.exp_avg_sq, state);
        t.max_exp_avg_sq = ref(c.max_exp_avg_sq, state);
        t.has_max_exp_avg_sq = c.max_exp_avg_sq != nullptr || c.n == 0;
        t.compensation = ref(c.compensation, param);
        t.has_compensation = c.compensation != nullptr || c.n == 0;
        t.seed = c.seed;
        if (c.n > 0) {
            const std::pair<const void*, const char*> required[] = {
                {c.param, "param"}, {c.grad, "grad"}, {c.exp_avg, "exp_avg"},
                {c.exp_avg_sq, "exp_avg_sq"}};
            for (const auto& [data, name] : required)
                if (!data) invalid(where + "." + name + " is NULL (n is " + std::to_string(c.n) + ")");
        }
    }
    return refs;
}

}  // namespace

std::vector<TensorRef> capi::c_tensor_refs(const adamcore_tensor* tensors, size_t count,
                                           std::vector<int64_t>& lengths) {
    return tensor_refs(tensors, count, lengths);
}

}  // namespace adamcore

extern "C" {

int adamcore_adam_step_tensors(const adamcore_tensor* tensors, size_t count,
                               const adamcore_hparams* hp) {
    return adamcore::capi::guarded([&] {
        if (!hp) adamcore::capi::invalid("hp is NULL");
        std::vector<int64_t> lengths;
        const std::vector<adamcore::TensorRef> refs = adamcore::tensor_refs(tensors, count, lengths);
        adamcore::cpu_adam_step(refs.data(), refs.size(), hp, 1, false);
    });
}

int adamcore_version(void) { return ADAMCORE_VERSION; }

const char* adamcore_version_string(void) { return ADAMCORE_VERSION_STRING; }

adamcore_hparams adamcore_hparams_default(void) {
    adamcore_hparams hp;
    hp.lr = 1e-3;
    hp.beta1 = 0.9;
    hp.beta2 = 0.999;
    hp.eps = 1e-8;
    hp.weight_decay = 0.0;
    hp.max_lr = 1e-3;
    hp.step = 1;
    hp.flags = 0;
    return hp;
}

const char* adamcore_last_error(void) { return adamcore::capi::last_error.c_str(); }

int adamcore_adam_step_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                           float* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp) {
    return adamcore::capi::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                       adamcore::cpu_run);
}

int adamcore_adam_step_f64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq,
                           double* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp) {
    return adamcore::capi::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                       adamcore::cpu_run);
}

int adamcore_adam_step_multi_f32(float* const* params, const float* const* grads,
                                 float* const* exp_avgs, float* const* exp_avg_sqs,
                                 float* const* max_exp_avg_sqs, const int64_t* lengths,
                                 size_t count, const adamcore_hparams* hp) {
    return adamcore::capi::multi_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                      lengths, count, hp, adamcore::cpu_run);
}

int adamcore_adam_step_multi_f64(double* const* params, const double* const* grads,
                                 double* const* exp_avgs, double* const* exp_avg_sqs,
                                 double* const* max_exp_avg_sqs, const int64_t* lengths,
                                 size_t count, const adamcore_hparams* hp) {
    return adamcore::capi::multi_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                                      lengths, count, hp, adamcore::cpu_run);
}

int adamcore_get_num_threads(void) { return adamcore::get_num_threads(); }

int adamcore_set_num_threads(int n) {
    return adamcore::capi::guarded([&] { adamcore::set_num_threads(n); });
}

const char* adamcore_simd_level(void) {
    return adamcore::static_level_name(adamcore::simd_level());
}

int adamcore_set_simd_level(const char* name) {
    return adamcore::capi::guarded([&] { adamcore::set_simd_level(name ? name : ""); });
}

}  // extern "C"
