// binding_common.hpp: what both nanobind modules (adamcore._core and adamcore._cuda) need to
// turn Python arguments into the core's types: array aliases, the hyperparameter tuple, dtypes,
// arrays and tensors, argument counts, with the error messages the Python API promises.
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"

namespace adamcore::binding {

namespace nb = nanobind;

// Untyped: nanobind never converts them (so never updates a copy), and any device gets through
// to the checks, which name what is wrong better than nanobind's own would.
using Array = nb::ndarray<>;
using ReadOnlyArray = nb::ndarray<nb::ro>;
// adamcore_hparams as Python passes it: (lr, beta1, beta2, eps, weight_decay, max_lr, step, flags)
using HParamsTuple = std::tuple<double, double, double, double, double, double, int64_t, uint32_t>;

inline std::vector<adamcore_hparams> to_hparams(const std::vector<HParamsTuple>& tuples) {
    std::vector<adamcore_hparams> out(tuples.size());
    for (size_t i = 0; i < tuples.size(); ++i) {
        const auto& [lr, beta1, beta2, eps, weight_decay, max_lr, step, flags] = tuples[i];
        out[i] = {lr, beta1, beta2, eps, weight_decay, max_lr, step, flags};
    }
    return out;
}

inline std::string dlpack_dtype_name(nb::dlpack::dtype dt) {
    static const char* codes[] = {"int", "uint", "float", "opaque", "bfloat", "complex", "bool"};
    const std::string code = dt.code < 7 ? codes[dt.code] : "code" + std::to_string(dt.code);
    return code + std::to_string(dt.bits);
}

inline DType dtype_of(nb::dlpack::dtype dt, const char* role, size_t index) {
    if (dt.lanes == 1) {
        if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Float)) {
            if (dt.bits == 16) return DType::float16;
            if (dt.bits == 32) return DType::float32;
            if (dt.bits == 64) return DType::float64;
        }
        if (dt.code == static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat) && dt.bits == 16)
            return DType::bfloat16;
    }
    throw Error(ErrorKind::invalid_dtype, std::string(role) + " " + std::to_string(index) +
                                              " has dtype " + dlpack_dtype_name(dt) +
                                              "; adamcore takes float16, bfloat16, float32 or "
                                              "float64");
}

// An ArrayRef over a DLPack array's memory (each module checks the device first).
template <class A>
ArrayRef array_ref_of(const A& a, const char* role, size_t index) {
    ArrayRef ref;
    ref.data = const_cast<void*>(static_cast<const void*>(a.data()));
    ref.dtype = dtype_of(a.dtype(), role, index);
    ref.ndim = static_cast<int32_t>(a.ndim());
    ref.shape = a.shape_ptr();
    ref.strides = a.stride_ptr();
    return ref;
}

// NumPy cannot export ml_dtypes' bfloat16 through DLPack (its dtype is not a DLPack one), so
// the front end hands over the same memory as uint16 and gets back a DLPack capsule that says
// bfloat16: same data, shape and strides, the source kept alive. A capsule carries no read-only
// flag, so the caller checks that a param is writeable first (the front ends do).
inline nb::object bfloat16_view(nb::handle uint16_array) {
    using Source = nb::ndarray<const uint16_t, nb::device::cpu>;
    Source a;
    if (!nb::try_cast<Source>(uint16_array, a, /*convert=*/false))
        throw nb::type_error("bfloat16_view takes a uint16 array in CPU memory");
    std::vector<size_t> shape(a.ndim());
    for (size_t d = 0; d < a.ndim(); ++d) shape[d] = a.shape(d);
    const nb::dlpack::dtype bf16{static_cast<uint8_t>(nb::dlpack::dtype_code::Bfloat), 16, 1};
    return Array(const_cast<uint16_t*>(a.data()), a.ndim(), shape.data(), uint16_array,
                 a.stride_ptr(), bf16, nb::device::cpu::value)
        .cast();
}

// The CPU core's refusal of an array in another device's memory (GPU arrays go to _cuda).
template <class A>
void require_cpu(const A& a, const char* role, size_t index) {
    if (a.device_type() != nb::device::cpu::value)
        throw Error(ErrorKind::invalid_value, std::string(role) + " " + std::to_string(index) +
                                                  " is not in CPU memory; the CPU core takes "
                                                  "host arrays only");
}

inline void check_count(size_t n, size_t expected, const char* what) {
    if (n != expected)
        throw Error(ErrorKind::invalid_value, "got " + std::to_string(n) + " " + what + " for " +
                                                  std::to_string(expected) + " params");
}

// The per-tensor lists of a plan (or a one-shot step) match the params in length; the
// max_exp_avg_sqs and hparams indices may also be empty (no amsgrad; every tensor in set 0).
inline void check_plan_counts(size_t params, size_t exp_avgs, size_t exp_avg_sqs,
                              size_t max_exp_avg_sqs, size_t hparams_index) {
    check_count(exp_avgs, params, "exp_avgs");
    check_count(exp_avg_sqs, params, "exp_avg_sqs");
    if (max_exp_avg_sqs != 0) check_count(max_exp_avg_sqs, params, "max_exp_avg_sqs");
    if (hparams_index != 0) check_count(hparams_index, params, "hparams indices");
}

// The tensors of a step or a plan, every array through import(array, role, index), which
// checks its device and returns array_ref_of. grads (nullptr for a plan, whose grads come with
// each step) are imported right after their param. The counts must have been checked.
template <class Import>
std::vector<TensorRef> import_tensors(const std::vector<Array>& params,
                                      const std::vector<ReadOnlyArray>* grads,
                                      const std::vector<Array>& exp_avgs,
                                      const std::vector<Array>& exp_avg_sqs,
                                      const std::vector<std::optional<Array>>& max_exp_avg_sqs,
                                      const std::vector<size_t>& hparams_index, Import&& import,
                                      const std::vector<std::optional<Array>>* compensations = nullptr,
                                      const std::vector<uint64_t>* seeds = nullptr) {
    std::vector<TensorRef> tensors(params.size());
    for (size_t i = 0; i < params.size(); ++i) {
        TensorRef& t = tensors[i];
        t.param = import(params[i], "param", i);
        if (grads) t.grad = import((*grads)[i], "grad", i);
        t.exp_avg = import(exp_avgs[i], "exp_avg", i);
        t.exp_avg_sq = import(exp_avg_sqs[i], "exp_avg_sq", i);
        if (!max_exp_avg_sqs.empty() && max_exp_avg_sqs[i]) {
            t.max_exp_avg_sq = import(*max_exp_avg_sqs[i], "max_exp_avg_sq", i);
            t.has_max_exp_avg_sq = true;
        }
        t.hparams_index = hparams_index.empty() ? 0 : hparams_index[i];
        if (compensations && !compensations->empty() && (*compensations)[i]) {
            t.compensation = import(*(*compensations)[i], "compensation", i);
            t.has_compensation = true;
        }
        if (seeds && !seeds->empty()) t.seed = (*seeds)[i];
    }
    return tensors;
}

// The arrays a plan writes (params and state), held by the plan so that they outlive the
// pointers it keeps, with their counts checked.
// The low-precision lists may be empty (no Kahan summation, no stochastic rounding);
// compensations may hold None for tensors without Kahan summation.
struct HeldArrays {
    std::vector<Array> params, exp_avgs, exp_avg_sqs;
    std::vector<std::optional<Array>> max_exp_avg_sqs;
    std::vector<size_t> hparams_index;
    std::vector<std::optional<Array>> compensations;
    std::vector<uint64_t> seeds;

    HeldArrays(std::vector<Array> p, std::vector<Array> m, std::vector<Array> v,
               std::vector<std::optional<Array>> vmax, std::vector<size_t> index,
               std::vector<std::optional<Array>> comp = {}, std::vector<uint64_t> seed = {})
        : params(std::move(p)), exp_avgs(std::move(m)), exp_avg_sqs(std::move(v)),
          max_exp_avg_sqs(std::move(vmax)), hparams_index(std::move(index)),
          compensations(std::move(comp)), seeds(std::move(seed)) {
        check_plan_counts(params.size(), exp_avgs.size(), exp_avg_sqs.size(),
                          max_exp_avg_sqs.size(), hparams_index.size());
        if (!compensations.empty()) check_count(compensations.size(), params.size(), "compensations");
        if (!seeds.empty()) check_count(seeds.size(), params.size(), "seeds");
    }

    // Their TensorRefs (grads unset), each array through import (see import_tensors).
    template <class Import>
    std::vector<TensorRef> tensors(Import&& import) const {
        return import_tensors(params, nullptr, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,
                              hparams_index, import, &compensations, &seeds);
    }
};

// The core's errors as the Python exceptions docs/errors.md names: ValueError for a bad value,
// TypeError for a dtype, FloatingPointError for a non-finite grad; RuntimeError for the rest
// (CUDA errors, an unavailable backend, internal errors), with the core's message.
inline void register_error_translator() {
    nb::register_exception_translator([](const std::exception_ptr& p, void*) {
        try {
            std::rethrow_exception(p);
        } catch (const Error& e) {
            PyObject* type = PyExc_RuntimeError;
            switch (e.kind()) {
                case ErrorKind::invalid_value: type = PyExc_ValueError; break;
                case ErrorKind::invalid_dtype: type = PyExc_TypeError; break;
                case ErrorKind::not_finite: type = PyExc_FloatingPointError; break;
                default: break;
            }
            PyErr_SetString(type, e.what());
        }
    });
}

}  // namespace adamcore::binding
