// adam_kernels.cuh: the CUDA backend's hot path. The multi-tensor Adam update kernel over a
// device table (kernel_args.h), the finite check, and their launchers, which take the caller's
// stream. One element goes through the formula shared with the CPU (adamcore/update.h): storage
// types are widened to the arithmetic type S, updated by adam_update and narrowed back, exactly
// as the CPU kernels do, so both give the same bits. Compiled by kernels.cu alone.
#pragma once

#include <algorithm>

#include "adamcore/core.hpp"
#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/strided.h"
#include "adamcore/update.h"
#include "kernel_args.h"
#include "runtime.h"

namespace adamcore::cuda {

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
    T x[V];
};

// P: parameter storage (float, double, float16, bfloat16); G: gradient storage; S: state and
// arithmetic type (float, or double for double parameters).
template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void update_element(P& p, G g, S& m, S& v, S& vmax, const Coeffs<S>& c) {
    S param = static_cast<S>(widen(p));
    adam_update<L2, AMSGRAD>(param, static_cast<S>(widen(g)), m, v, vmax, c);
    p = narrow(param, P{});
}

// Element offset i of p, g, m, v and vmax (in elements; the same for all when dense).
template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void update_at(P* p, const G* g, S* m, S* v, S* vmax, const int64_t* off,
                                          const Coeffs<S>& c) {
    P pi = p[off[0]];
    S mi = m[off[2]], vi = v[off[3]];
    S xi = AMSGRAD ? vmax[off[4]] : S(0);
    update_element<L2, AMSGRAD>(pi, g[off[1]], mi, vi, xi, c);
    p[off[0]] = pi;
    m[off[2]] = mi;
    v[off[3]] = vi;
    if (AMSGRAD) vmax[off[4]] = xi;
}

template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void run_tile(const DeviceTensor& d, const G* g, int64_t begin,
                                         int64_t end, const Coeffs<S>& c, const int64_t* dims) {
    P* p = static_cast<P*>(d.p);
    S* m = static_cast<S*>(d.m);
    S* v = static_cast<S*>(d.v);
    S* vmax = static_cast<S*>(d.vmax);
    int64_t tail = begin;  // where the element-wise loop of a dense tensor starts
    if (d.kind == kVector) {
        constexpr int V = 16 / sizeof(S);
        using PV = Pack<P, V>;
        using GV = Pack<G, V>;
        using SV = Pack<S, V>;
        const int64_t base = begin / V;  // begin is a multiple of the tile, hence of V
        const int64_t packs = (end - begin) / V;
        PV pv[kUnroll];
        GV gv[kUnroll];
        SV mv[kUnroll], vv[kUnroll], xv[kUnroll];
        // all loads first, so each thread has kUnroll * 4 (or 5) requests in flight
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int64_t j = threadIdx.x + int64_t{u} * kThreads;
            if (j < packs) {
                pv[u] = reinterpret_cast<const PV*>(p)[base + j];
                gv[u] = reinterpret_cast<const GV*>(g)[base + j];
                mv[u] = reinterpret_cast<const SV*>(m)[base + j];
                vv[u] = reinterpret_cast<const SV*>(v)[base + j];
                if (AMSGRAD) xv[u] = reinterpret_cast<const SV*>(vmax)[base + j];
            }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
            const int64_t j = threadIdx.x + int64_t{u} * kThreads;
            if (j < packs) {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    S x = AMSGRAD ? xv[u].x[e] : S(0);
                    update_element<L2, AMSGRAD>(pv[u].x[e], gv[u].x[e], mv[u].x[e], vv[u].x[e], x, c);
                    if (AMSGRAD) xv[u].x[e] = x;
                }
                reinterpret_cast<PV*>(p)[base + j] = pv[u];
                reinterpret_cast<SV*>(m)[base + j] = mv[u];
                reinterpret_cast<SV*>(v)[base + j] = vv[u];
                if (AMSGRAD) reinterpret_cast<SV*>(vmax)[base + j] = xv[u];
            }
        }
        tail = begin + packs * V;  // the tensor's last few elements (fewer than V), in its last tile
    }
    if (d.kind != kStrided) {
        for (int64_t i = tail + threadIdx.x; i < end; i += kThreads) {
            const int64_t off[5] = {i, i, i, i, i};
            update_at<L2, AMSGRAD>(p, g, m, v, vmax, off, c);
        }
    } else {
        const int64_t* shape = dims + d.dims;
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            int64_t off[5];
            element_offsets<5>(i, d.ndim, shape, shape + d.ndim, off);
            update_at<L2, AMSGRAD>(p, g, m, v, vmax, off, c);
        }
    }
}

// The tensor holding tile t: the last one whose first tile is <= t (uniform across the block,
// so every thread reads the same addresses).
__device__ __forceinline__ int32_t find_tensor(const int64_t* tile_begin, int32_t count, int64_t t) {
    int32_t lo = 0, hi = count - 1;
    while (lo < hi) {
        const int32_t mid = (lo + hi + 1) >> 1;
        if (tile_begin[mid] <= t)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

template <class P, class G, class S>
__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ LaunchArgs<S> a) {
    constexpr int64_t tile = tile_elements<S>();
    for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
        const int32_t k = find_tensor(a.tile_begin, a.count, t);
        const DeviceTensor d = a.tensors[k];
        const G* g = static_cast<const G*>(a.grads[k]);
        const CoeffSet<S>& set = a.sets_inline ? a.sets[d.set] : a.sets_global[d.set];
        const Coeffs<S> c = set.c;
        const int64_t begin = (t - a.tile_begin[k]) * tile;
        const int64_t end = min(begin + tile, d.n);
        if (set.l2) {
            if (set.amsgrad)
                run_tile<true, true, P, G, S>(d, g, begin, end, c, a.dims);
            else
                run_tile<true, false, P, G, S>(d, g, begin, end, c, a.dims);
        } else {
            if (set.amsgrad)
                run_tile<false, true, P, G, S>(d, g, begin, end, c, a.dims);
            else
                run_tile<false, false, P, G, S>(d, g, begin, end, c, a.dims);
        }
    }
}

// ---- the finite check -------------------------------------------------------------------------

template <class T>
__device__ __forceinline__ bool range_finite(const CheckArray& a, int64_t begin, int64_t end,
                                             const int64_t* dims) {
    const T* x = static_cast<const T*>(a.data);
    bool finite = true;
    if (!a.strided) {
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) finite &= is_finite_bits(x[i]);
    } else {
        const int64_t* shape = dims + a.dims;
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            int64_t off;
            element_offsets<1>(i, a.ndim, shape, shape + a.ndim, &off);
            finite &= is_finite_bits(x[off]);
        }
    }
    return finite;
}

__global__ void __launch_bounds__(kThreads) first_nonfinite_kernel(const __grid_constant__ CheckArgs a) {
    for (int64_t t = blockIdx.x; t < a.tiles; t += gridDim.x) {
        const int32_t k = find_tensor(a.tile_begin, a.count, t);
        const CheckArray x = a.arrays[k];
        if (*static_cast<volatile int*>(a.result) <= x.index) continue;  // an earlier one is bad
        const int64_t begin = (t - a.tile_begin[k]) * kCheckTile;
        const int64_t end = min(begin + kCheckTile, x.n);
        bool finite = true;
        switch (x.dtype) {
            case static_cast<int32_t>(DType::float16): finite = range_finite<float16>(x, begin, end, a.dims); break;
            case static_cast<int32_t>(DType::bfloat16): finite = range_finite<bfloat16>(x, begin, end, a.dims); break;
            case static_cast<int32_t>(DType::float32): finite = range_finite<float>(x, begin, end, a.dims); break;
            default: finite = range_finite<double>(x, begin, end, a.dims); break;
        }
        if (!finite) atomicMin(a.result, x.index);
    }
}

// ---- launchers: enqueue on stream, return the launch's error ----------------------------------

inline unsigned grid_for(int64_t tiles) { return static_cast<unsigned>(std::min(tiles, kMaxGrid)); }

template <class P, class G, class S>
cudaError_t launch_adam(const LaunchArgs<S>& a, cudaStream_t stream) {
    ADAMCORE_LAUNCH(grid_for(a.tiles), kThreads, stream, adam_kernel<P, G, S>)(a);
    return cudaGetLastError();
}

inline cudaError_t launch_first_nonfinite(const CheckArgs& a, cudaStream_t stream) {
    ADAMCORE_LAUNCH(grid_for(a.tiles), kThreads, stream, first_nonfinite_kernel)(a);
    return cudaGetLastError();
}

}  // namespace adamcore::cuda
