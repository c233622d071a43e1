// blockwise_binding.hpp: the import of a step over 8-bit block-quantized state
// (cpp/src/cpu_blockwise.h) from DLPack arrays, shared by adamcore._core and adamcore._cuda,
// and adamcore._core.adam_step_blockwise, the CPU step's binding. Every array it writes is
// .noconvert().
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <string>
#include <vector>

#include "../src/cpu_blockwise.h"
#include "adamcore/core.hpp"
#include "binding_common.hpp"

namespace adamcore::binding {

// A state array (codes or absmax) as the core sees it; its dtype is checked by the validation.
inline StateArray state_array_of(const Array& a, std::vector<std::string>& names) {
    StateArray s;
    s.data = a.data();
    const nb::dlpack::dtype dt = a.dtype();
    using code = nb::dlpack::dtype_code;
    if (dt.lanes == 1 && dt.bits == 8 && dt.code == static_cast<uint8_t>(code::Int))
        s.type = StateType::int8;
    else if (dt.lanes == 1 && dt.bits == 8 && dt.code == static_cast<uint8_t>(code::UInt))
        s.type = StateType::uint8;
    else if (dt.lanes == 1 && dt.bits == 32 && dt.code == static_cast<uint8_t>(code::Float))
        s.type = StateType::float32;
    names.push_back(dlpack_dtype_name(dt));
    s.numel = 1;
    for (size_t d = 0; d < a.ndim(); ++d) s.numel *= a.shape(d);
    s.contiguous = c_contiguous(static_cast<int32_t>(a.ndim()), a.shape_ptr(), a.stride_ptr());
    return s;
}

// The arrays of one blockwise step as the validation and the kernels take them. import(a, role,
// i) checks an array's device (each module its own) and returns array_ref_of for params and
// grads; check(a, role, i) checks a state array's device. names keeps the dtype names the
// messages point to (reserved, so their c_str()s stay put).
template <class Import, class Check>
std::vector<BlockwiseTensorRef> import_blockwise(
    const std::vector<Array>& params, const std::vector<ReadOnlyArray>& grads,
    const std::vector<Array>& exp_avgs, const std::vector<Array>& exp_avg_sqs,
    const std::vector<Array>& exp_avg_absmaxes, const std::vector<Array>& exp_avg_sq_absmaxes,
    const std::vector<size_t>& hparams_index, Import&& import, Check&& check,
    std::vector<std::string>& names) {
    const size_t count = params.size();
    check_count(grads.size(), count, "grads");
    check_count(exp_avgs.size(), count, "exp_avgs");
    check_count(exp_avg_sqs.size(), count, "exp_avg_sqs");
    check_count(exp_avg_absmaxes.size(), count, "exp_avg_absmaxes");
    check_count(exp_avg_sq_absmaxes.size(), count, "exp_avg_sq_absmaxes");
    if (!hparams_index.empty()) check_count(hparams_index.size(), count, "hparams indices");
    names.reserve(4 * count);
    std::vector<BlockwiseTensorRef> tensors(count);
    const auto state = [&](const Array& a, const char* role, size_t i) {
        check(a, role, i);
        StateArray s = state_array_of(a, names);
        s.type_name = names.back().c_str();
        return s;
    };
    for (size_t i = 0; i < count; ++i) {
        BlockwiseTensorRef& t = tensors[i];
        t.param = import(params[i], "param", i);
        t.grad = import(grads[i], "grad", i);
        t.exp_avg = state(exp_avgs[i], "exp_avg", i);
        t.exp_avg_sq = state(exp_avg_sqs[i], "exp_avg_sq", i);
        t.exp_avg_absmax = state(exp_avg_absmaxes[i], "exp_avg_absmax", i);
        t.exp_avg_sq_absmax = state(exp_avg_sq_absmaxes[i], "exp_avg_sq_absmax", i);
        t.hparams_index = hparams_index.empty() ? 0 : hparams_index[i];
    }
    return tensors;
}

inline void adam_step_blockwise(const std::vector<Array>& params,
                                const std::vector<ReadOnlyArray>& grads,
                                const std::vector<Array>& exp_avgs,
                                const std::vector<Array>& exp_avg_sqs,
                                const std::vector<Array>& exp_avg_absmaxes,
                                const std::vector<Array>& exp_avg_sq_absmaxes,
                                const std::vector<size_t>& hparams_index,
                                const std::vector<HParamsTuple>& hparams_in, bool check_finite,
                                bool validate_only) {
    std::vector<std::string> names;
    const auto import = [](const auto& a, const char* role, size_t i) {
        require_cpu(a, role, i);
        return array_ref_of(a, role, i);
    };
    const auto check = [](const auto& a, const char* role, size_t i) { require_cpu(a, role, i); };
    const std::vector<BlockwiseTensorRef> tensors =
        import_blockwise(params, grads, exp_avgs, exp_avg_sqs, exp_avg_absmaxes,
                         exp_avg_sq_absmaxes, hparams_index, import, check, names);
    const std::vector<adamcore_hparams> hparams = to_hparams(hparams_in);
    nb::gil_scoped_release release;
    if (validate_only)
        validate_blockwise_step(tensors.data(), tensors.size(), hparams.data(), hparams.size());
    else
        cpu_adam_step_blockwise(tensors.data(), tensors.size(), hparams.data(), hparams.size(),
                                check_finite);
}

inline void register_blockwise(nb::module_& m) {
    using namespace nb::literals;
    m.attr("QUANT_BLOCK") = kQuantBlock;
    m.def("adam_step_blockwise", &adam_step_blockwise, "params"_a.noconvert(),
          "grads"_a.noconvert(), "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
          "exp_avg_absmaxes"_a.noconvert(), "exp_avg_sq_absmaxes"_a.noconvert(),
          "hparams_index"_a, "hparams"_a, "check_finite"_a = false, "validate_only"_a = false,
          "One step over 8-bit block-quantized state (docs/int8-state.md): params and grads "
          "C-contiguous float32/float16/bfloat16; exp_avgs int8 and exp_avg_sqs uint8 codes of "
          "numel(param) elements; the absmaxes float32, one per block of 256. Validates "
          "everything, then updates params, codes and absmaxes in place (validate_only: "
          "validates and writes nothing).");
}

}  // namespace adamcore::binding
