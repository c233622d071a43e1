// c_api_blockwise.cpp: the C ABI's step over 8-bit blockwise state (adamcore.h), a thin layer
// over cpu_adam_step_blockwise, which validates every argument before it writes.
#include <string>

#include "adamcore/adamcore.h"
#include "adamcore/blockwise.h"
#include "adamcore/core.hpp"
#include "c_api_common.h"
#include "cpu_blockwise.h"

extern "C" int adamcore_adam_step_blockwise_f32(float* param, const float* grad, int8_t* exp_avg,
                                                uint8_t* exp_avg_sq, float* exp_avg_absmax,
                                                float* exp_avg_sq_absmax, int64_t n,
                                                const adamcore_hparams* hp) {
    using namespace adamcore;
    return capi::guarded([&] {
        if (!hp) throw Error(ErrorKind::invalid_value, "hp is NULL");
        if (n < 0) throw Error(ErrorKind::invalid_value, "n must be >= 0, got " + std::to_string(n));
        const int64_t shape[1] = {n};
        BlockwiseTensorRef t;
        t.param = {param, DType::float32, 1, shape, nullptr};
        t.grad = {const_cast<float*>(grad), DType::float32, 1, shape, nullptr};
        const int64_t blocks = quant_blocks(n);
        t.exp_avg = {exp_avg, StateType::int8, n, true, "int8"};
        t.exp_avg_sq = {exp_avg_sq, StateType::uint8, n, true, "uint8"};
        t.exp_avg_absmax = {exp_avg_absmax, StateType::float32, blocks, true, "float32"};
        t.exp_avg_sq_absmax = {exp_avg_sq_absmax, StateType::float32, blocks, true, "float32"};
        cpu_adam_step_blockwise(&t, 1, hp, 1, false);
    });
}
