// validate_blockwise.cpp: the checks of a step over 8-bit block-quantized state
// (cpu_blockwise.h), shared by the CPU step and the CUDA backend: every argument is checked
// before anything is written.
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "adamcore/blockwise.h"
#include "adamcore/core.hpp"
#include "cpu_blockwise.h"

namespace adamcore {
namespace {

[[noreturn]] void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

std::string nth(const char* name, size_t i) { return std::string(name) + " " + std::to_string(i); }

const char* state_type_name(StateType t) {
    switch (t) {
        case StateType::int8: return "int8";
        case StateType::uint8: return "uint8";
        case StateType::float32: return "float32";
        default: return "another dtype";
    }
}

int64_t checked_numel(const ArrayRef& a, const char* name, size_t i) {
    if (a.ndim < 0 || a.ndim > 64)
        fail(ErrorKind::invalid_value, nth(name, i) + " has " + std::to_string(a.ndim) +
                                           " dimensions; adamcore takes 0 to 64");
    int64_t n = 1;
    for (int32_t d = 0; d < a.ndim; ++d) {
        if (a.shape[d] < 0) fail(ErrorKind::invalid_value, nth(name, i) + " has a negative extent");
        if (a.shape[d] != 0 && n > std::numeric_limits<int64_t>::max() / a.shape[d])
            fail(ErrorKind::invalid_value, nth(name, i) + " has more elements than int64 can count");
        n *= a.shape[d];
    }
    return n;
}

void check_state(const StateArray& s, StateType want, int64_t numel, const char* name, size_t i,
                 const char* what) {
    if (s.type != want)
        fail(ErrorKind::invalid_dtype,
             nth(name, i) + " has dtype " + (s.type_name && *s.type_name ? s.type_name : state_type_name(s.type)) +
                 "; int8_blockwise state keeps " + what + " as " + state_type_name(want));
    if (s.numel != numel)
        fail(ErrorKind::invalid_value, nth(name, i) + " has " + std::to_string(s.numel) +
                                           " elements but needs " + std::to_string(numel) + " (" +
                                           what + ")");
    if (!s.contiguous)
        fail(ErrorKind::invalid_value, nth(name, i) + " is not C-contiguous; int8_blockwise "
                                                      "state must be");
    if (numel > 0 && !s.data) fail(ErrorKind::invalid_value, nth(name, i) + " is NULL");
}

bool half_dtype(DType d) { return d == DType::float16 || d == DType::bfloat16; }

void validate_tensor(const BlockwiseTensorRef& t, size_t i, const adamcore_hparams* hparams,
                     size_t hparams_count) {
    check_hparams_index(t.hparams_index, hparams_count, i);
    if (hparams[t.hparams_index].flags & ADAMCORE_AMSGRAD)
        fail(ErrorKind::invalid_value,
             nth("tensor", i) + " has amsgrad on; int8_blockwise state does not support amsgrad "
                                "(use state_dtype float32 for it)");
    const int64_t n = checked_numel(t.param, "param", i);
    const int64_t ng = checked_numel(t.grad, "grad", i);
    if (t.param.dtype == DType::float64)
        fail(ErrorKind::invalid_dtype, nth("param", i) + " has dtype float64; int8_blockwise "
                                                         "state takes float32, float16 or bfloat16 params");
    const bool grad_ok = t.grad.dtype == t.param.dtype ||
                         (t.grad.dtype == DType::float32 && half_dtype(t.param.dtype));
    if (!grad_ok)
        fail(ErrorKind::invalid_dtype, nth("grad", i) + " has dtype " + dtype_name(t.grad.dtype) +
                                           " but " + nth("param", i) + " has dtype " +
                                           dtype_name(t.param.dtype) + "; its grad must be " +
                                           dtype_name(t.param.dtype) +
                                           (half_dtype(t.param.dtype) ? " or float32" : ""));
    if (ng != n || t.grad.ndim != t.param.ndim ||
        !std::equal(t.param.shape, t.param.shape + t.param.ndim, t.grad.shape))
        fail(ErrorKind::invalid_value, nth("grad", i) + " has another shape than " + nth("param", i));
    if (!c_contiguous(t.param.ndim, t.param.shape, t.param.strides))
        fail(ErrorKind::invalid_value, nth("param", i) + " is not C-contiguous; int8_blockwise "
                                                         "state takes contiguous params");
    if (!c_contiguous(t.grad.ndim, t.grad.shape, t.grad.strides))
        fail(ErrorKind::invalid_value, nth("grad", i) + " is not C-contiguous; int8_blockwise "
                                                        "state takes contiguous grads");
    if (n > 0 && (!t.param.data || !t.grad.data))
        fail(ErrorKind::invalid_value, nth(t.param.data ? "grad" : "param", i) + " is NULL");
    const int64_t blocks = quant_blocks(n);
    check_state(t.exp_avg, StateType::int8, n, "exp_avg", i, "the codes of m");
    check_state(t.exp_avg_sq, StateType::uint8, n, "exp_avg_sq", i, "the codes of v");
    check_state(t.exp_avg_absmax, StateType::float32, blocks, "exp_avg_absmax", i,
                "one absmax per block of 256");
    check_state(t.exp_avg_sq_absmax, StateType::float32, blocks, "exp_avg_sq_absmax", i,
                "one absmax per block of 256");
}

// The arrays the step writes must not share memory, within a tensor or across tensors.
void check_disjoint(const BlockwiseTensorRef* tensors, size_t count) {
    std::vector<WrittenSpan> spans;
    spans.reserve(count * 5);
    for (size_t i = 0; i < count; ++i) {
        const BlockwiseTensorRef& t = tensors[i];
        const int64_t n = numel(t.param);
        if (n == 0) continue;
        const auto add = [&](const void* data, int64_t bytes, const char* name) {
            const char* base = static_cast<const char*>(data);
            spans.push_back({base, base + bytes, i, name});
        };
        add(t.param.data, n * static_cast<int64_t>(dtype_size(t.param.dtype)), "param");
        add(t.exp_avg.data, n, "exp_avg");
        add(t.exp_avg_sq.data, n, "exp_avg_sq");
        add(t.exp_avg_absmax.data, quant_blocks(n) * 4, "exp_avg_absmax");
        add(t.exp_avg_sq_absmax.data, quant_blocks(n) * 4, "exp_avg_sq_absmax");
    }
    require_disjoint(spans, /*across_tensors_only=*/false);
}

}  // namespace

bool c_contiguous(int32_t ndim, const int64_t* shape, const int64_t* strides) {
    if (!strides) return true;
    int64_t expected = 1;
    for (int32_t d = ndim - 1; d >= 0; --d) {
        if (shape[d] == 0) return true;  // an empty array is contiguous in any layout
        if (shape[d] != 1 && strides[d] != expected) return false;
        expected *= shape[d];
    }
    return true;
}

void validate_blockwise_step(const BlockwiseTensorRef* tensors, size_t count,
                             const adamcore_hparams* hparams, size_t hparams_count) {
    if (count > 0 && !tensors) fail(ErrorKind::invalid_value, "tensors is NULL");
    if (hparams_count > 0 && !hparams) fail(ErrorKind::invalid_value, "hparams is NULL");
    for (size_t h = 0; h < hparams_count; ++h) validate_hparams(hparams[h]);
    for (size_t i = 0; i < count; ++i) validate_tensor(tensors[i], i, hparams, hparams_count);
    check_disjoint(tensors, count);
}

}  // namespace adamcore
