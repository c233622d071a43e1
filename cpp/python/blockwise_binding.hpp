// blockwise_binding.hpp: adamcore._core.adam_step_blockwise, the binding of the CPU step over
// 8-bit block-quantized state (cpp/src/cpu_blockwise.h). Every array it writes is .noconvert().
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

template <class A>
void require_cpu(const A& a, const char* role, size_t index) {
    if (a.device_type() != nb::device::cpu::value)
        throw Error(ErrorKind::invalid_value, std::string(role) + " " + std::to_string(index) +
                                                  " is not in CPU memory; the CPU core takes "
                                                  "host arrays only");
}

// A state array (codes or absmax) as the core sees it; its dtype is checked by the core.
inline StateArray state_array_of(const Array& a, const char* role, size_t index,
                                 std::vector<std::string>& names) {
    require_cpu(a, role, index);
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

inline void adam_step_blockwise(const std::vector<Array>& params,
                                const std::vector<ReadOnlyArray>& grads,
                                const std::vector<Array>& exp_avgs,
                                const std::vector<Array>& exp_avg_sqs,
                                const std::vector<Array>& exp_avg_absmaxes,
                                const std::vector<Array>& exp_avg_sq_absmaxes,
                                const std::vector<size_t>& hparams_index,
                                const std::vector<HParamsTuple>& hparams_in, bool check_finite) {
    const size_t count = params.size();
    check_count(grads.size(), count, "grads");
    check_count(exp_avgs.size(), count, "exp_avgs");
    check_count(exp_avg_sqs.size(), count, "exp_avg_sqs");
    check_count(exp_avg_absmaxes.size(), count, "exp_avg_absmaxes");
    check_count(exp_avg_sq_absmaxes.size(), count, "exp_avg_sq_absmaxes");
    if (!hparams_index.empty()) check_count(hparams_index.size(), count, "hparams indices");
    std::vector<std::string> names;  // dtype names for messages; reserved so c_str()s stay put
    names.reserve(4 * count);
    std::vector<BlockwiseTensorRef> tensors(count);
    for (size_t i = 0; i < count; ++i) {
        BlockwiseTensorRef& t = tensors[i];
        require_cpu(params[i], "param", i);
        require_cpu(grads[i], "grad", i);
        t.param = array_ref_of(params[i], "param", i);
        t.grad = array_ref_of(grads[i], "grad", i);
        t.exp_avg = state_array_of(exp_avgs[i], "exp_avg", i, names);
        t.exp_avg.type_name = names.back().c_str();
        t.exp_avg_sq = state_array_of(exp_avg_sqs[i], "exp_avg_sq", i, names);
        t.exp_avg_sq.type_name = names.back().c_str();
        t.exp_avg_absmax = state_array_of(exp_avg_absmaxes[i], "exp_avg_absmax", i, names);
        t.exp_avg_absmax.type_name = names.back().c_str();
        t.exp_avg_sq_absmax = state_array_of(exp_avg_sq_absmaxes[i], "exp_avg_sq_absmax", i, names);
        t.exp_avg_sq_absmax.type_name = names.back().c_str();
        t.hparams_index = hparams_index.empty() ? 0 : hparams_index[i];
    }
    const std::vector<adamcore_hparams> hparams = to_hparams(hparams_in);
    nb::gil_scoped_release release;
    cpu_adam_step_blockwise(tensors.data(), tensors.size(), hparams.data(), hparams.size(),
                            check_finite);
}

inline void register_blockwise(nb::module_& m) {
    using namespace nb::literals;
    m.attr("QUANT_BLOCK") = kQuantBlock;
    m.def("adam_step_blockwise", &adam_step_blockwise, "params"_a.noconvert(),
          "grads"_a.noconvert(), "exp_avgs"_a.noconvert(), "exp_avg_sqs"_a.noconvert(),
          "exp_avg_absmaxes"_a.noconvert(), "exp_avg_sq_absmaxes"_a.noconvert(),
          "hparams_index"_a, "hparams"_a, "check_finite"_a = false,
          "One step over 8-bit block-quantized state (docs/int8-state.md): params and grads "
          "C-contiguous float32/float16/bfloat16; exp_avgs int8 and exp_avg_sqs uint8 codes of "
          "numel(param) elements; the absmaxes float32, one per block of 256. Validates "
          "everything, then updates params, codes and absmaxes in place.");
}

}  // namespace adamcore::binding
