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

namespace adamcore {
namespace {

thread_local std::string last_error;

int error_code(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::invalid_value: return ADAMCORE_ERROR_INVALID_VALUE;
        case ErrorKind::invalid_dtype: return ADAMCORE_ERROR_INVALID_DTYPE;
        case ErrorKind::not_finite: return ADAMCORE_ERROR_NOT_FINITE;
        case ErrorKind::cuda: return ADAMCORE_ERROR_CUDA;
        case ErrorKind::unavailable: return ADAMCORE_ERROR_UNAVAILABLE;
        case ErrorKind::internal: return ADAMCORE_ERROR_INTERNAL;
    }
    return ADAMCORE_ERROR_INTERNAL;
}

// Runs body; turns any exception into a return code and this thread's last error. Nothing may
// unwind through the C ABI.
template <class Body>
int guarded(const Body& body) noexcept {
    try {
        body();
        last_error.clear();
        return ADAMCORE_OK;
    } catch (const Error& e) {
        last_error = e.what();
        return error_code(e.kind());
    } catch (const std::bad_alloc&) {
        last_error = "out of memory";
    } catch (const std::exception& e) {
        last_error = e.what();
    } catch (...) {
        last_error = "unknown error";
    }
    return ADAMCORE_ERROR_INTERNAL;
}

[[noreturn]] void invalid(const std::string& message) {
    throw Error(ErrorKind::invalid_value, message);
}

template <class T>
constexpr DType dtype_of() {
    return sizeof(T) == 8 ? DType::float64 : DType::float32;
}

// A contiguous 1-d array of *length elements (the shape points at the caller's length).
template <class T>
ArrayRef vector_ref(const T* data, const int64_t* length) {
    ArrayRef a;
    a.data = const_cast<T*>(data);  // the core writes only param and state, never grad
    a.dtype = dtype_of<T>();
    a.ndim = 1;
    a.shape = length;
    return a;
}

template <class T>
TensorRef tensor_ref(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq,
                     const int64_t* length) {
    TensorRef t;
    t.param = vector_ref(param, length);
    t.grad = vector_ref(grad, length);
    t.exp_avg = vector_ref(exp_avg, length);
    t.exp_avg_sq = vector_ref(exp_avg_sq, length);
    // An empty tensor needs no arrays at all, max_exp_avg_sq included.
    t.has_max_exp_avg_sq = max_exp_avg_sq != nullptr || *length == 0;
    t.max_exp_avg_sq = vector_ref(max_exp_avg_sq, length);
    return t;
}

// Rejects a NULL array of a non-empty tensor, named as the caller wrote it: "param" for a single
// tensor, "params[3]" for entry 3 of a multi-tensor call (the core would say "param 3").
// Messages are built only on failure: this runs for every tensor of every step.
void require_arrays(const TensorRef& t, bool amsgrad, const size_t* index) {
    const int64_t n = t.param.shape[0];
    if (n == 0) return;
    const struct {
        const ArrayRef* array;
        const char* name;
    } arrays[] = {{&t.param, "param"}, {&t.grad, "grad"}, {&t.exp_avg, "exp_avg"},
                  {&t.exp_avg_sq, "exp_avg_sq"}, {&t.max_exp_avg_sq, "max_exp_avg_sq"}};
    for (const auto& a : arrays) {
        const bool is_max = a.array == &t.max_exp_avg_sq;
        if (a.array->data || (is_max && !amsgrad)) continue;
        const std::string where = index ? "[" + std::to_string(*index) + "]" : "";
        invalid(a.name + std::string(index ? "s" : "") + where + " is NULL (" +
                (index ? "lengths" + where : std::string("n")) + " is " + std::to_string(n) + ")" +
                (is_max ? " but ADAMCORE_AMSGRAD is set" : ""));
    }
}

template <class T>
int single_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
                const adamcore_hparams* hp) {
    return guarded([&] {
        if (!hp) invalid("hp is NULL");
        if (n < 0) invalid("n must be >= 0, got " + std::to_string(n));
        const TensorRef t = tensor_ref(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, &n);
        require_arrays(t, hp->flags & ADAMCORE_AMSGRAD, nullptr);
        cpu_adam_step(&t, 1, hp, 1, false);
    });
}

template <class T>
int multi_step(T* const* params, const T* const* grads, T* const* exp_avgs,
               T* const* exp_avg_sqs, T* const* max_exp_avg_sqs, const int64_t* lengths,
               size_t count, const adamcore_hparams* hp) {
    return guarded([&] {
        if (!hp) invalid("hp is NULL");
        const bool amsgrad = hp->flags & ADAMCORE_AMSGRAD;
        const char* const amsgrad_note = " but ADAMCORE_AMSGRAD is set";
        const struct {
            const void* array;
            const char* name;
            bool required;
            const char* note;
        } tables[] = {{params, "params", true, ""},
                      {grads, "grads", true, ""},
                      {exp_avgs, "exp_avgs", true, ""},
                      {exp_avg_sqs, "exp_avg_sqs", true, ""},
                      {lengths, "lengths", true, ""},
                      {max_exp_avg_sqs, "max_exp_avg_sqs", amsgrad, amsgrad_note}};
        for (const auto& table : tables)
            if (count > 0 && table.required && !table.array)
                invalid(std::string(table.name) + " is NULL (count is " + std::to_string(count) +
                        ")" + table.note);
        std::vector<TensorRef> tensors(count);
        for (size_t i = 0; i < count; ++i) {
            if (lengths[i] < 0)
                invalid("lengths[" + std::to_string(i) + "] must be >= 0, got " +
                        std::to_string(lengths[i]));
            tensors[i] = tensor_ref(params[i], grads[i], exp_avgs[i], exp_avg_sqs[i],
                                    max_exp_avg_sqs ? max_exp_avg_sqs[i] : nullptr, &lengths[i]);
            require_arrays(tensors[i], amsgrad, &i);
        }
        cpu_adam_step(tensors.data(), count, hp, 1, false);
    });
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

const char* adamcore_last_error(void) { return adamcore::last_error.c_str(); }

int adamcore_adam_step_f32(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                           float* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp) {
    return adamcore::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp);
}

int adamcore_adam_step_f64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq,
                           double* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp) {
    return adamcore::single_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp);
}

int adamcore_adam_step_multi_f32(float* const* params, const float* const* grads,
                                 float* const* exp_avgs, float* const* exp_avg_sqs,
                                 float* const* max_exp_avg_sqs, const int64_t* lengths,
                                 size_t count, const adamcore_hparams* hp) {
    return adamcore::multi_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lengths,
                                count, hp);
}

int adamcore_adam_step_multi_f64(double* const* params, const double* const* grads,
                                 double* const* exp_avgs, double* const* exp_avg_sqs,
                                 double* const* max_exp_avg_sqs, const int64_t* lengths,
                                 size_t count, const adamcore_hparams* hp) {
    return adamcore::multi_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, lengths,
                                count, hp);
}

int adamcore_get_num_threads(void) { return adamcore::get_num_threads(); }

int adamcore_set_num_threads(int n) {
    return adamcore::guarded([&] { adamcore::set_num_threads(n); });
}

const char* adamcore_simd_level(void) {
    return adamcore::static_level_name(adamcore::simd_level());
}

int adamcore_set_simd_level(const char* name) {
    return adamcore::guarded([&] { adamcore::set_simd_level(name ? name : ""); });
}

}  // extern "C"
