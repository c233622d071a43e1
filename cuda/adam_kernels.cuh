// adam_kernels.cuh: the CUDA backend's hot path. The multi-tensor Adam update kernel over a
// device table (kernel_args.h), the finite check, and their launchers, which take the caller's
// stream. One element goes through the CPU's own update_element() (adamcore/lowp.h over
// adamcore/update.h): storage widened to the arithmetic type, adam_update, narrowed back and the
// param stored in the step's rounding mode, so every backend gives the same bits. Compiled by
// kernels.cu alone.
#pragma once

#include <algorithm>

#include "adamcore/combos.h"
#include "adamcore/core.hpp"
#include "adamcore/finite.h"
#include "adamcore/half.h"
#include "adamcore/lowp.h"
#include "adamcore/strided.h"
#include "adamcore/update.h"
#include "kernel_args.h"
#include "runtime.h"

namespace adamcore::cuda {

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
    T x[V];
};

// One tensor's element paths for combo C (combos.h: param P, grad G, state storage M,
// arithmetic S) and rounding Mode (lowp.h). Every element goes through update_element()
// (lowp.h), the CPU's own: storage widened to S, adam_update (update.h), narrowed back, the
// param stored by rounding to nearest, Kahan-compensated (comp, the param's dtype) or rounded
// stochastically with random_bits(key, index), index the element's C-order index (dense tensors
// in stochastic rounding are C-ordered: table.cpp sends the others down the strided path).
template <int C, int Mode, bool L2, bool AMSGRAD>
struct Tile {
    using P = typename ComboTypes<C>::P;
    using G = typename ComboTypes<C>::G;
    using M = typename ComboTypes<C>::M;
    using S = typename ComboTypes<C>::S;
    static constexpr bool kahan = Mode == round_kahan;
    static constexpr bool stochastic = Mode == round_stochastic;

    // Element at offsets off (p, g, m, v, vmax, comp) whose C-order index is index.
    static __device__ __forceinline__ void at(const DeviceTensor& d, const G* g, const int64_t* off,
                                              int64_t index, const Coeffs<S>& c) {
        P* p = static_cast<P*>(d.p);
        M* m = static_cast<M*>(d.m);
        M* v = static_cast<M*>(d.v);
        P pi = p[off[0]], ci{};
        M mi = m[off[2]], vi = v[off[3]], xi{};
        if (AMSGRAD) xi = static_cast<M*>(d.vmax)[off[4]];
        if (kahan) ci = static_cast<P*>(d.comp)[off[5]];
        const uint32_t random = stochastic ? random_bits(d.key, static_cast<uint64_t>(index)) : 0u;
        update_element<Mode, L2, AMSGRAD>(pi, g[off[1]], mi, vi, xi, ci, random, c);
        p[off[0]] = pi;
        m[off[2]] = mi;
        v[off[3]] = vi;
        if (AMSGRAD) static_cast<M*>(d.vmax)[off[4]] = xi;
        if (kahan) static_cast<P*>(d.comp)[off[5]] = ci;
    }

    static __device__ __forceinline__ void run(const DeviceTensor& d, const G* g, int64_t begin,
                                               int64_t end, const Coeffs<S>& c, const int64_t* dims) {
        P* p = static_cast<P*>(d.p);
        M* m = static_cast<M*>(d.m);
        M* v = static_cast<M*>(d.v);
        M* vmax = static_cast<M*>(d.vmax);
        P* comp = static_cast<P*>(d.comp);
        int64_t tail = begin;  // where the element-wise loop of a dense tensor starts
        if (d.kind == kVector) {
            constexpr int V = 16 / sizeof(S);
            using PV = Pack<P, V>;
            using GV = Pack<G, V>;
            using MV = Pack<M, V>;
            const int64_t base = begin / V;  // begin is a multiple of the tile, hence of V
            const int64_t packs = (end - begin) / V;
            PV pv[kUnroll], cv[kUnroll];
            GV gv[kUnroll];
            MV mv[kUnroll], vv[kUnroll], xv[kUnroll];
            // all loads first, so each thread has kUnroll * 4 (to 6) requests in flight
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t j = threadIdx.x + int64_t{u} * kThreads;
                if (j < packs) {
                    pv[u] = reinterpret_cast<const PV*>(p)[base + j];
                    gv[u] = reinterpret_cast<const GV*>(g)[base + j];
                    mv[u] = reinterpret_cast<const MV*>(m)[base + j];
                    vv[u] = reinterpret_cast<const MV*>(v)[base + j];
                    if (AMSGRAD) xv[u] = reinterpret_cast<const MV*>(vmax)[base + j];
                    if (kahan) cv[u] = reinterpret_cast<const PV*>(comp)[base + j];
                }
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int64_t j = threadIdx.x + int64_t{u} * kThreads;
                if (j < packs) {
#pragma unroll
                    for (int e = 0; e < V; ++e) {
                        M x = AMSGRAD ? xv[u].x[e] : M{};
                        P ce = kahan ? cv[u].x[e] : P{};
                        const uint32_t random =
                            stochastic ? random_bits(d.key, static_cast<uint64_t>((base + j) * V + e)) : 0u;
                        update_element<Mode, L2, AMSGRAD>(pv[u].x[e], gv[u].x[e], mv[u].x[e],
                                                          vv[u].x[e], x, ce, random, c);
                        if (AMSGRAD) xv[u].x[e] = x;
                        if (kahan) cv[u].x[e] = ce;
                    }
                    reinterpret_cast<PV*>(p)[base + j] = pv[u];
                    reinterpret_cast<MV*>(m)[base + j] = mv[u];
                    reinterpret_cast<MV*>(v)[base + j] = vv[u];
                    if (AMSGRAD) reinterpret_cast<MV*>(vmax)[base + j] = xv[u];
                    if (kahan) reinterpret_cast<PV*>(comp)[base + j] = cv[u];
                }
            }
            tail = begin + packs * V;  // the tensor's last few elements (fewer than V), in its last tile
        }
        if (d.kind != kStrided) {
            for (int64_t i = tail + threadIdx.x; i < end; i += kThreads) {
                const int64_t off[6] = {i, i, i, i, i, i};
                at(d, g, off, i, c);
            }
        } else {
            const int64_t* shape = dims + d.dims;
            for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
                int64_t off[6];
                element_offsets<6>(i, d.ndim, shape, shape + d.ndim, off);
                at(d, g, off, i, c);
            }
        }
    }
};

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

// The update over one range of the table: one combo and one rounding mode, both compile-time,
// so the default modes compile to the same loads and arithmetic as before the low-precision
// modes existed; L2 and amsgrad per tensor (uniform within a block).
template <int C, int Mode>
__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ LaunchArgs<typename ComboTypes<C>::S> a) {
    using S = typename ComboTypes<C>::S;
    using G = typename ComboTypes<C>::G;
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
                Tile<C, Mode, true, true>::run(d, g, begin, end, c, a.dims);
            else
                Tile<C, Mode, true, false>::run(d, g, begin, end, c, a.dims);
        } else {
            if (set.amsgrad)
                Tile<C, Mode, false, true>::run(d, g, begin, end, c, a.dims);
            else
                Tile<C, Mode, false, false>::run(d, g, begin, end, c, a.dims);
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

template <int C, int Mode>
cudaError_t launch_adam(const LaunchArgs<typename ComboTypes<C>::S>& a, cudaStream_t stream) {
    ADAMCORE_LAUNCH(grid_for(a.tiles), kThreads, stream, adam_kernel<C, Mode>)(a);
    return cudaGetLastError();
}

inline cudaError_t launch_first_nonfinite(const CheckArgs& a, cudaStream_t stream) {
    ADAMCORE_LAUNCH(grid_for(a.tiles), kThreads, stream, first_nonfinite_kernel)(a);
    return cudaGetLastError();
}

}  // namespace adamcore::cuda
