// c_api.cpp: the C ABI of adamcore.h (the CPU part), a thin layer over the C++ core.
//
// Each entry point describes the caller's buffers as TensorRefs and hands them to the same
// cpu_adam_step the Python module calls, which validates every argument before it writes.
#include <exception>
#include <new>
#include <string>
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

}  // namespace
}  // namespace adamcore

extern "C" {

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
