// blockwise_step.cpp: the CUDA backend's step over 8-bit block-quantized state (adam_cuda.hpp):
// the same validation as the CPU step (validate_blockwise.cpp), then one launch of the
// blockwise kernel (blockwise.cu) per tensor, enqueued on the caller's stream.
#include <vector>

#include "adam_cuda.hpp"
#include "adamcore/combos.h"
#include "adamcore/update.h"
#include "blockwise_launch.h"
#include "cpu_blockwise.h"
#include "device.h"

namespace adamcore::cuda {

using namespace detail;

void adam_step_blockwise(const BlockwiseTensorRef* tensors, size_t count,
                         const adamcore_hparams* hparams, size_t hparams_count, int device,
                         void* stream) {
    require_device(device);
    validate_blockwise_step(tensors, count, hparams, hparams_count);
    std::vector<Coeffs<float>> coeffs(hparams_count);
    for (size_t h = 0; h < hparams_count; ++h)
        coeffs[h] = round_coeffs<float>(make_coeffs(hparams[h]));
    const auto s = static_cast<cudaStream_t>(stream);
    DeviceGuard guard(device);
    for (size_t i = 0; i < count; ++i) {
        const BlockwiseTensorRef& t = tensors[i];
        const adamcore_hparams& hp = hparams[t.hparams_index];
        const cudaError_t err = launch_blockwise_step(
            combo_of(t.param.dtype, t.grad.dtype), t.param.data, t.grad.data,
            static_cast<int8_t*>(t.exp_avg.data), static_cast<uint8_t*>(t.exp_avg_sq.data),
            static_cast<float*>(t.exp_avg_absmax.data), static_cast<float*>(t.exp_avg_sq_absmax.data),
            numel(t.param), uses_l2(hp), coeffs[t.hparams_index], s);
        if (err != cudaSuccess) fail_cuda(err, "the 8-bit state kernel's launch");
    }
}

}  // namespace adamcore::cuda
