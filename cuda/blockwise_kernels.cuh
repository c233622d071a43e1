// blockwise_kernels.cuh: the Adam step over 8-bit block-quantized state (adamcore/blockwise.h,
// docs/int8-state.md) on the GPU. One CUDA block steps one quantization block of 256 elements in
// one pass: each thread dequantizes, updates (the same adam_update() as every backend) and
// writes its param element, keeping the new m and v in shared memory; the block's new absmax is
// an integer max over the bits (order-free, so the same as the CPU's); then each thread writes its
// codes. Compiled by blockwise.cu alone.
#pragma once

#include <cstdint>

#include "adamcore/blockwise.h"
#include "adamcore/half.h"
#include "adamcore/update.h"
#include "runtime.h"

#if defined(ADAMCORE_CUDA_EMULATION)
// The host emulation runs a block's threads one after the other, so a kernel that synchronizes
// is launched there with one thread per block, which then walks all 256 elements; shared memory
// is a static array and the barrier is a no-op.
#define __shared__ static
inline void __syncthreads() {}
inline unsigned atomicMax(unsigned* address, unsigned value) {
    const unsigned old = *address;
    if (value > old) *address = value;
    return old;
}
#endif

namespace adamcore::cuda {

#if defined(ADAMCORE_CUDA_EMULATION)
constexpr unsigned kBlockwiseThreads = 1;
#else
constexpr unsigned kBlockwiseThreads = static_cast<unsigned>(kQuantBlock);
#endif

// The arrays of one tensor's step (device pointers).
template <class P, class G>
struct BlockwiseArgs {
    P* param;
    const G* grad;
    int8_t* m_codes;
    uint8_t* v_codes;
    float* m_absmax;
    float* v_absmax;
    int64_t n;
    int64_t first_block;  // this launch covers blocks [first_block, first_block + gridDim.x)
};

template <bool L2, class P, class G>
__global__ void __launch_bounds__(kBlockwiseThreads)
    blockwise_kernel(const BlockwiseArgs<P, G> a, const Coeffs<float> c) {
    __shared__ float m_new[kQuantBlock];
    __shared__ float v_root[kQuantBlock];
    __shared__ unsigned m_max, v_max;
    const int64_t block = a.first_block + blockIdx.x;
    const int64_t start = block * kQuantBlock;
    const int len = static_cast<int>(a.n - start < kQuantBlock ? a.n - start : kQuantBlock);
    if (threadIdx.x == 0) m_max = v_max = 0u;
    __syncthreads();
    const float ms = m_scale(a.m_absmax[block]), vs = v_scale(a.v_absmax[block]);
    unsigned my_m = 0u, my_v = 0u;
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        const int64_t k = start + i;
        float p = widen(a.param[k]);
        float m = dequantize_m(a.m_codes[k], ms);
        float v = dequantize_v(a.v_codes[k], vs);
        float unused = 0.0f;
        adam_update<L2, false>(p, widen(a.grad[k]), m, v, unused, c);
        a.param[k] = narrow(p, P{});
        m_new[i] = m;
        v_root[i] = sqrt_rn(v);
        const unsigned bm = magnitude_bits(m), bv = magnitude_bits(v);
        my_m = bm > my_m ? bm : my_m;
        my_v = bv > my_v ? bv : my_v;
    }
    atomicMax(&m_max, my_m);
    atomicMax(&v_max, my_v);
    __syncthreads();  // every thread has read the old absmax and added its maxima
    const float new_m = bits_float(m_max), new_v = bits_float(v_max);
    const float fm = quant_factor(new_m), fv = quant_root_factor(new_v);
    for (int i = threadIdx.x; i < len; i += blockDim.x) {
        a.m_codes[start + i] = quantize_m(m_new[i], fm);
        a.v_codes[start + i] = quantize_v(v_root[i], fv);
    }
    if (threadIdx.x == 0) {
        a.m_absmax[block] = new_m;
        a.v_absmax[block] = new_v;
    }
}

// Enqueues the step of one tensor on stream, in launches of at most 2^31 - 1 blocks.
template <class P, class G>
cudaError_t launch_blockwise(const BlockwiseArgs<P, G>& args, bool l2, const Coeffs<float>& c,
                             cudaStream_t stream) {
    const int64_t blocks = quant_blocks(args.n);
    constexpr int64_t max_grid = 0x7fffffff;
    for (int64_t first = 0; first < blocks; first += max_grid) {
        BlockwiseArgs<P, G> part = args;
        part.first_block = first;
        const auto grid = static_cast<unsigned>(blocks - first < max_grid ? blocks - first : max_grid);
        if (l2)
            ADAMCORE_LAUNCH(grid, kBlockwiseThreads, stream, blockwise_kernel<true, P, G>)(part, c);
        else
            ADAMCORE_LAUNCH(grid, kBlockwiseThreads, stream, blockwise_kernel<false, P, G>)(part, c);
        const cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

}  // namespace adamcore::cuda
