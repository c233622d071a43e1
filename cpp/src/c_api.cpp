// c_api.cpp: the C ABI of adamcore.h, a thin layer over the C++ core.
#include <exception>
#include <new>
#include <string>

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

// Runs body; turns any exception into a return code and this thread's last error.
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

template <class T>
int contiguous_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq,
                    int64_t n, const adamcore_hparams* hp, DType dtype) {
    return guarded([&] {
        if (!hp) throw Error(ErrorKind::invalid_value, "hp is NULL");
        if (n < 0) throw Error(ErrorKind::invalid_value, "n must be >= 0");
        const int64_t shape[1] = {n};
        auto array = [&](const T* data) {
            ArrayRef a;
            a.data = const_cast<T*>(data);
            a.dtype = dtype;
            a.ndim = 1;
            a.shape = shape;
            return a;
        };
        TensorRef t;
        t.param = array(param);
        t.grad = array(grad);
        t.exp_avg = array(exp_avg);
        t.exp_avg_sq = array(exp_avg_sq);
        t.has_max_exp_avg_sq = max_exp_avg_sq != nullptr;
        if (t.has_max_exp_avg_sq) t.max_exp_avg_sq = array(max_exp_avg_sq);
        cpu_adam_step(&t, 1, hp, 1, false);
    });
}

}  // namespace
}  // namespace adamcore

extern "C" {

int adamcore_version(void) { return ADAMCORE_VERSION; }

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
    return adamcore::contiguous_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                     adamcore::DType::float32);
}

int adamcore_adam_step_f64(double* param, const double* grad, double* exp_avg, double* exp_avg_sq,
                           double* max_exp_avg_sq, int64_t n, const adamcore_hparams* hp) {
    return adamcore::contiguous_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp,
                                     adamcore::DType::float64);
}

}  // extern "C"
