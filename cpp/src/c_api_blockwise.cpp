// c_api_blockwise.cpp: the C ABI's steps over 8-bit blockwise state (adamcore.h), a thin layer
// over cpu_adam_step_blockwise, which validates every argument before it writes. The CUDA entry
// point (c_api_cuda.cpp) takes the same descriptors.
#include <string>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/blockwise.h"
#include "adamcore/core.hpp"
#include "c_api_common.h"
#include "cpu_blockwise.h"

namespace adamcore {

std::vector<BlockwiseTensorRef> capi::c_blockwise_refs(const adamcore_blockwise_tensor* tensors,
                                                       size_t count,
                                                       std::vector<int64_t>& lengths) {
    if (count > 0 && !tensors) invalid("tensors is NULL (count is " + std::to_string(count) + ")");
    lengths.resize(count);
    std::vector<BlockwiseTensorRef> refs(count);
    for (size_t i = 0; i < count; ++i) {
        const adamcore_blockwise_tensor& c = tensors[i];
        if (c.n < 0)
            invalid("tensors[" + std::to_string(i) + "].n must be >= 0, got " + std::to_string(c.n));
        lengths[i] = c.n;
        const int64_t blocks = quant_blocks(c.n);
        BlockwiseTensorRef& t = refs[i];
        t.param = {c.param, c_dtype(c.param_dtype, i, "param_dtype"), 1, &lengths[i], nullptr};
        t.grad = {const_cast<void*>(c.grad), c_dtype(c.grad_dtype, i, "grad_dtype"), 1,
                  &lengths[i], nullptr};
        t.exp_avg = {c.exp_avg, StateType::int8, c.n, true, "int8"};
        t.exp_avg_sq = {c.exp_avg_sq, StateType::uint8, c.n, true, "uint8"};
        t.exp_avg_absmax = {c.exp_avg_absmax, StateType::float32, blocks, true, "float32"};
        t.exp_avg_sq_absmax = {c.exp_avg_sq_absmax, StateType::float32, blocks, true, "float32"};
    }
    return refs;
}

}  // namespace adamcore

extern "C" {

int adamcore_adam_step_blockwise_tensors(const adamcore_blockwise_tensor* tensors, size_t count,
                                         const adamcore_hparams* hp) {
    using namespace adamcore;
    return capi::guarded([&] {
        if (!hp) capi::invalid("hp is NULL");
        std::vector<int64_t> lengths;
        const std::vector<BlockwiseTensorRef> refs = capi::c_blockwise_refs(tensors, count, lengths);
        cpu_adam_step_blockwise(refs.data(), refs.size(), hp, 1, false);
    });
}

int adamcore_adam_step_blockwise_f32(float* param, const float* grad, int8_t* exp_avg,
                                     uint8_t* exp_avg_sq, float* exp_avg_absmax,
                                     float* exp_avg_sq_absmax, int64_t n,
                                     const adamcore_hparams* hp) {
    if (hp && n < 0) {  // (a NULL hp is named first, by the step below)
        adamcore::capi::last_error = "n must be >= 0, got " + std::to_string(n);
        return ADAMCORE_ERROR_INVALID_VALUE;
    }
    const adamcore_blockwise_tensor t = {param, grad, exp_avg, exp_avg_sq, exp_avg_absmax,
                                         exp_avg_sq_absmax, n, ADAMCORE_FLOAT32, ADAMCORE_FLOAT32};
    return adamcore_adam_step_blockwise_tensors(&t, 1, hp);
}

}  // extern "C"
