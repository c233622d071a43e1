// probe_kernels.cuh: the bench's roofline probes on the GPU (contiguous float32): the step's
// memory traffic with trivial arithmetic (p += g, m += g, v += g: 4 streams read, 3 written), and
// a copy. Compiled by kernels.cu.
#pragma once

#include <algorithm>
#include <cstdint>

#include "kernel_args.h"
#include "runtime.h"

namespace adamcore::cuda {

__global__ void __launch_bounds__(kThreads)
probe_kernel(float* p, const float* g, float* m, float* v, int64_t n, bool vector) {
    const int64_t stride = int64_t{gridDim.x} * kThreads;
    const int64_t first = int64_t{blockIdx.x} * kThreads + threadIdx.x;
    int64_t done = 0;
    if (vector) {
        const int64_t packs = n / 4;
        for (int64_t i = first; i < packs; i += stride) {
            const float4 gi = reinterpret_cast<const float4*>(g)[i];
            float4 pi = reinterpret_cast<float4*>(p)[i];
            float4 mi = reinterpret_cast<float4*>(m)[i];
            float4 vi = reinterpret_cast<float4*>(v)[i];
            pi.x += gi.x; pi.y += gi.y; pi.z += gi.z; pi.w += gi.w;
            mi.x += gi.x; mi.y += gi.y; mi.z += gi.z; mi.w += gi.w;
            vi.x += gi.x; vi.y += gi.y; vi.z += gi.z; vi.w += gi.w;
            reinterpret_cast<float4*>(p)[i] = pi;
            reinterpret_cast<float4*>(m)[i] = mi;
            reinterpret_cast<float4*>(v)[i] = vi;
        }
        done = packs * 4;
    }
    for (int64_t i = done + first; i < n; i += stride) {
        const float gi = g[i];
        p[i] += gi;
        m[i] += gi;
        v[i] += gi;
    }
}

__global__ void __launch_bounds__(kThreads)
copy_kernel(float* dst, const float* src, int64_t n, bool vector) {
    const int64_t stride = int64_t{gridDim.x} * kThreads;
    const int64_t first = int64_t{blockIdx.x} * kThreads + threadIdx.x;
    int64_t done = 0;
    if (vector) {
        const int64_t packs = n / 4;
        for (int64_t i = first; i < packs; i += stride)
            reinterpret_cast<float4*>(dst)[i] = reinterpret_cast<const float4*>(src)[i];
        done = packs * 4;
    }
    for (int64_t i = done + first; i < n; i += stride) dst[i] = src[i];
}

// One thread per 16-byte pack, grid-strided past kMaxGrid blocks.
inline unsigned probe_grid(int64_t n) {
    const int64_t blocks = (n / 4 + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid)));
}

}  // namespace adamcore::cuda
