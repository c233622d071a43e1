// c_api_common.h: what the parts of the C ABI share (c_api.cpp for the CPU, c_api_cuda.cpp for
// CUDA): errors as return codes with this thread's message, and the checks that turn the caller's
// pointers into TensorRefs before a backend's step runs.
#pragma once

#include <exception>
#include <new>
#include <string>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "cpu_blockwise.h"

namespace adamcore::capi {

inline thread_local std::string last_error;

// adamcore_tensor descriptors as TensorRefs, NULL required arrays refused (c_api.cpp); lengths
// holds each n (the shapes point there).
std::vector<TensorRef> c_tensor_refs(const adamcore_tensor* tensors, size_t count,
                                     std::vector<int64_t>& lengths);

// adamcore_blockwise_tensor descriptors as BlockwiseTensorRefs (c_api_blockwise.cpp), checked by
// the step's own validation; lengths as above.
std::vector<BlockwiseTensorRef> c_blockwise_refs(const adamcore_blockwise_tensor* tensors,
                                                 size_t count, std::vector<int64_t>& lengths);

// An ADAMCORE_FLOAT* code of tensors[i].field as a DType.
inline DType c_dtype(int32_t code, size_t i, const char* field) {
    switch (code) {
        case ADAMCORE_FLOAT16: return DType::float16;
        case ADAMCORE_BFLOAT16: return DType::bfloat16;
        case ADAMCORE_FLOAT32: return DType::float32;
        case ADAMCORE_FLOAT64: return DType::float64;
    }
    throw Error(ErrorKind::invalid_dtype, "tensors[" + std::to_string(i) + "]." + field + " is " +
                                              std::to_string(code) +
                                              ", not an ADAMCORE_FLOAT16/BFLOAT16/FLOAT32/FLOAT64");
}

inline int error_code(ErrorKind kind) {
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

[[noreturn]] inline void invalid(const std::string& message) {
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

// Calls visit(array, name) for each array of a tensor that a step uses, named as the C ABI
// names them (max_exp_avg_sq only with amsgrad).
template <class Visit>
void for_each_array(const TensorRef& t, bool amsgrad, const Visit& visit) {
    const struct {
        const ArrayRef* array;
        const char* name;
    } arrays[] = {{&t.param, "param"}, {&t.grad, "grad"}, {&t.exp_avg, "exp_avg"},
                  {&t.exp_avg_sq, "exp_avg_sq"}, {&t.max_exp_avg_sq, "max_exp_avg_sq"}};
    for (const auto& a : arrays)
        if (a.array != &t.max_exp_avg_sq || amsgrad) visit(*a.array, a.name);
}

// Rejects a NULL array of a non-empty tensor, named as the caller wrote it: "param" for a single
// tensor, "params[3]" for entry 3 of a multi-tensor call (the core would say "param 3").
// Messages are built only on failure: this runs for every tensor of every step.
inline void require_arrays(const TensorRef& t, bool amsgrad, const size_t* index) {
    const int64_t n = t.param.shape[0];
    if (n == 0) return;
    for_each_array(t, amsgrad, [&](const ArrayRef& array, const char* name) {
        if (array.data) return;
        const bool is_max = &array == &t.max_exp_avg_sq;
        const std::string where = index ? "[" + std::to_string(*index) + "]" : "";
        invalid(name + std::string(index ? "s" : "") + where + " is NULL (" +
                (index ? "lengths" + where : std::string("n")) + " is " + std::to_string(n) + ")" +
                (is_max ? " but ADAMCORE_AMSGRAD is set" : ""));
    });
}

// The checks of a single-tensor entry point, then run(tensors, count, hp) (the backend's step).
template <class T, class Run>
int single_step(T* param, const T* grad, T* exp_avg, T* exp_avg_sq, T* max_exp_avg_sq, int64_t n,
                const adamcore_hparams* hp, const Run& run) {
    return guarded([&] {
        if (!hp) invalid("hp is NULL");
        if (n < 0) invalid("n must be >= 0, got " + std::to_string(n));
        const TensorRef t = tensor_ref(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, &n);
        require_arrays(t, hp->flags & ADAMCORE_AMSGRAD, nullptr);
        run(&t, size_t{1}, hp);
    });
}

// The checks of a multi-tensor entry point, then run(tensors, count, hp).
template <class T, class Run>
int multi_step(T* const* params, const T* const* grads, T* const* exp_avgs,
               T* const* exp_avg_sqs, T* const* max_exp_avg_sqs, const int64_t* lengths,
               size_t count, const adamcore_hparams* hp, const Run& run) {
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
        run(tensors.data(), count, hp);
    });
}

}  // namespace adamcore::capi
