// blockwise.cu: the 8-bit blockwise state kernel (blockwise_kernels.cuh) for each dtype pair,
// behind the plain launch function of blockwise_launch.h.
#include "adamcore/combos.h"
#include "blockwise_kernels.cuh"
#include "blockwise_launch.h"

namespace adamcore::cuda::detail {

namespace {
template <class P, class G>
cudaError_t launch_typed(void* param, const void* grad, int8_t* mc, uint8_t* vc, float* ma,
                         float* va, int64_t n, bool l2, const Coeffs<float>& c,
                         cudaStream_t stream) {
    const BlockwiseArgs<P, G> args{static_cast<P*>(param), static_cast<const G*>(grad), mc, vc,
                                   ma, va, n, 0};
    return launch_blockwise(args, l2, c, stream);
}
}  // namespace

cudaError_t launch_blockwise_step(int combo, void* param, const void* grad, int8_t* m_codes,
                                  uint8_t* v_codes, float* m_absmax, float* v_absmax, int64_t n,
                                  bool l2, const Coeffs<float>& c, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    switch (combo) {
        case f32:
            return launch_typed<float, float>(param, grad, m_codes, v_codes, m_absmax, v_absmax, n, l2, c, stream);
        case f16_f16:
            return launch_typed<float16, float16>(param, grad, m_codes, v_codes, m_absmax, v_absmax, n, l2, c, stream);
        case f16_f32:
            return launch_typed<float16, float>(param, grad, m_codes, v_codes, m_absmax, v_absmax, n, l2, c, stream);
        case bf16_bf16:
            return launch_typed<bfloat16, bfloat16>(param, grad, m_codes, v_codes, m_absmax, v_absmax, n, l2, c, stream);
        case bf16_f32:
            return launch_typed<bfloat16, float>(param, grad, m_codes, v_codes, m_absmax, v_absmax, n, l2, c, stream);
    }
    return cudaErrorInvalidValue;
}

}  // namespace adamcore::cuda::detail
