// adam_cuda.cu: the CUDA backend. One multi-tensor kernel per (param, grad) dtype pair, driven by
// a device-resident table of tensors, so one launch steps any number of tensors.
//
// The table: one DeviceTensor per non-empty tensor (sorted by dtype pair), the index of each
// tensor's first tile, and the grad pointers (a separate array: they change between steps while
// everything else stays). A tile is kThreads * kUnroll 16-byte vectors of state; block b handles
// tiles b, b + gridDim.x, ... and finds its tensor by binary search over the tile starts. The
// per-step scalars of each hyperparameter set (param group) travel by value in the kernel's
// arguments; a tensor names its set.
//
// Three element paths, chosen per tensor (uniform within a block):
//   vector  all arrays dense in one layout and every pointer 16-byte aligned (8 for 16-bit
//           params): each thread loads kUnroll packs of every array before it computes;
//   scalar  dense but not aligned: one element per thread and iteration, still coalesced;
//   strided any other layout: each element's offsets from its logical index and the strides.
// Indices are 64-bit throughout. Nothing here synchronizes the device: tables are allocated,
// copied and freed in stream order (cudaMallocFromPoolAsync/cudaFreeAsync) on the caller's stream.
#if defined(ADAMCORE_CUDA_EMULATION)
#include "host_emulation.h"  // the kernels run on the host, for tests without a GPU
#else
#include <cuda_runtime.h>
// kernel<<<grid, block, 0, stream>>>, spelled so that host emulation can run it too
#define ADAMCORE_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "adam_cuda.cuh"
#include "adam_cuda.hpp"

namespace adamcore::cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// Errors and devices

[[noreturn]] void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

[[noreturn]] void fail_cuda(cudaError_t err, const char* what) {
    fail(ErrorKind::cuda, std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err) +
                              " (" + cudaGetErrorName(err) + ")");
}

#define ADAMCORE_CUDA_CHECK(expr)                                      \
    do {                                                               \
        const cudaError_t adamcore_err_ = (expr);                      \
        if (adamcore_err_ != cudaSuccess) fail_cuda(adamcore_err_, #expr); \
    } while (0)

struct Probe {
    int count = 0;
    std::string reason;
};

std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

const Probe& probe() {
    static const Probe result = [] {
        Probe p;
        int n = 0;
        const cudaError_t err = cudaGetDeviceCount(&n);
        if (err != cudaSuccess) {
            cudaGetLastError();  // not sticky, but leave no error behind for the caller
            const std::string text = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
            if (err == cudaErrorNoDevice)
                p.reason = "no CUDA device found (" + text + ")";
            else if (err == cudaErrorInsufficientDriver)
                p.reason = "no CUDA driver, or one older than this build's CUDA runtime " +
                           version_text(CUDART_VERSION) + " (" + text + ")";
            else
                p.reason = "CUDA cannot start (" + text + ")";
            return p;
        }
        if (n == 0) p.reason = "no CUDA device found";
        p.count = n;
        return p;
    }();
    return result;
}

void require_device(int device) {
    const Probe& p = probe();
    if (p.count == 0) fail(ErrorKind::unavailable, "the CUDA backend cannot run: " + p.reason);
    if (device < 0 || device >= p.count)
        fail(ErrorKind::invalid_value, "CUDA device " + std::to_string(device) + " does not exist (" +
                                           std::to_string(p.count) + " seen)");
}

// Makes device current for this thread for the guard's lifetime (the caller's choice is restored).
class DeviceGuard {
public:
    explicit DeviceGuard(int device) {
        ADAMCORE_CUDA_CHECK(cudaGetDevice(&previous_));
        if (previous_ == device) {
            previous_ = -1;
        } else {
            ADAMCORE_CUDA_CHECK(cudaSetDevice(device));
        }
    }
    ~DeviceGuard() {
        if (previous_ >= 0) cudaSetDevice(previous_);
    }
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = -1;
};

// Per device: whether it has stream-ordered allocation, and a private stream for deferred frees.
struct DeviceState {
    bool pools = false;
    cudaMemPool_t pool = nullptr;    // our own: tables are small and short-lived, and a pool
                                     // that keeps its memory (the default one returns it at every
                                     // synchronization) makes their allocation cheap
    cudaStream_t cleanup = nullptr;  // kept for the process
};

// Made once per device, with that device current (every caller holds a DeviceGuard), and never
// destroyed: a plan may be freed during interpreter shutdown, after static destructors ran.
const DeviceState& device_state(int device) {
    static std::mutex mutex;
    static auto* states = new std::vector<std::unique_ptr<DeviceState>>(static_cast<size_t>(probe().count));
    std::lock_guard<std::mutex> lock(mutex);
    auto& s = states->at(static_cast<size_t>(device));
    if (!s) {
        auto state = std::make_unique<DeviceState>();
        int pools = 0;
        ADAMCORE_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device));
        state->pools = pools != 0;
        if (state->pools) {
            ADAMCORE_CUDA_CHECK(cudaStreamCreateWithFlags(&state->cleanup, cudaStreamNonBlocking));
            cudaMemPoolProps props{};
            props.allocType = cudaMemAllocationTypePinned;
            props.location.type = cudaMemLocationTypeDevice;
            props.location.id = device;
            ADAMCORE_CUDA_CHECK(cudaMemPoolCreate(&state->pool, &props));
            uint64_t keep = UINT64_MAX;
            ADAMCORE_CUDA_CHECK(cudaMemPoolSetAttribute(state->pool, cudaMemPoolAttrReleaseThreshold, &keep));
        }
        s = std::move(state);
    }
    return *s;
}

// Device memory in stream order where the device allows it (else plain cudaMalloc, which may
// synchronize; devices without memory pools are rare).
void* alloc_on(size_t bytes, cudaStream_t stream, const DeviceState& st) {
    void* p = nullptr;
    if (st.pools)
        ADAMCORE_CUDA_CHECK(cudaMallocFromPoolAsync(&p, bytes, st.pool, stream));
    else
        ADAMCORE_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
}

void free_on(void* p, cudaStream_t stream, const DeviceState& st) noexcept {
    if (!p) return;
    if (st.pools)
        cudaFreeAsync(p, stream);
    else
        cudaFree(p);
}

// Frees p once the work recorded by event has run, without waiting on the host: on a private
// stream, since the stream of that work may be gone by now.
void free_after(void* p, cudaEvent_t event, int device) noexcept {
    if (!p) return;
    try {
        const DeviceState& st = device_state(device);
        if (st.pools) {
            ADAMCORE_CUDA_CHECK(cudaStreamWaitEvent(st.cleanup, event, 0));
            ADAMCORE_CUDA_CHECK(cudaFreeAsync(p, st.cleanup));
        } else {
            cudaEventSynchronize(event);
            cudaFree(p);
        }
    } catch (...) {
        // teardown (e.g. the CUDA context is already gone at exit): the memory goes with it
    }
}

// A device allocation freed in stream order when the scope ends, also on error.
struct StreamBuffer {
    void* ptr = nullptr;
    cudaStream_t stream;
    const DeviceState& st;
    StreamBuffer(size_t bytes, cudaStream_t s, const DeviceState& state) : stream(s), st(state) {
        ptr = alloc_on(bytes, s, state);
    }
    ~StreamBuffer() { free_on(ptr, stream, st); }
    StreamBuffer(const StreamBuffer&) = delete;
    StreamBuffer& operator=(const StreamBuffer&) = delete;
};

// ---------------------------------------------------------------------------------------------
// The table

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int kInlineSets = 16;              // hyperparameter sets passed by value
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // blocks; more tiles are grid-strided

enum Kind : int32_t { kVector = 0, kScalar = 1, kStrided = 2 };
enum Combo : int { f32, f64, f16_f16, f16_f32, bf16_bf16, bf16_f32, combo_count };

struct DeviceTensor {
    void* p;  // dense: the lowest element of each array; strided: the array's data pointer
    void* m;
    void* v;
    void* vmax;     // nullptr without amsgrad
    int64_t n;      // elements
    int64_t dims;   // strided: where its shape and strides start in the dims array
    int32_t set;    // hyperparameter set
    int32_t kind;
    int32_t ndim;
    int32_t pad;
};

// Elements per tile: kUnroll 16-byte packs of state per thread.
template <class S>
__host__ __device__ constexpr int64_t tile_elements() {
    return int64_t{kThreads} * kUnroll * (16 / static_cast<int64_t>(sizeof(S)));
}
int64_t tile_elements_for(DType param) {
    return param == DType::float64 ? tile_elements<double>() : tile_elements<float>();
}

template <class S>
struct CoeffSet {
    Coeffs<S> c;
    int32_t l2;
    int32_t amsgrad;
};

template <class S>
struct LaunchArgs {
    const DeviceTensor* tensors;  // this launch's tensors
    const int64_t* tile_begin;    // first tile of each
    const void* const* grads;     // grad pointer of each (the lowest element when dense)
    const int64_t* dims;          // shapes and strides of strided tensors
    int64_t tiles;
    int32_t count;
    int32_t sets_inline;          // sets[] holds the hyperparameters, else sets_global
    const CoeffSet<S>* sets_global;
    CoeffSet<S> sets[kInlineSets];
};

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
    T x[V];
};

// ---------------------------------------------------------------------------------------------
// Kernels

template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void dense_element(P* p, const G* g, S* m, S* v, S* vmax, int64_t i,
                                              const Coeffs<S>& c) {
    P pi = p[i];
    S mi = m[i], vi = v[i];
    S xi = AMSGRAD ? vmax[i] : S(0);
    update_element<L2, AMSGRAD>(pi, g[i], mi, vi, xi, c);
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
    if (AMSGRAD) vmax[i] = xi;
}

template <bool L2, bool AMSGRAD, class P, class G, class S>
__device__ __forceinline__ void run_tile(const DeviceTensor& d, const G* g, int64_t begin,
                                         int64_t end, const Coeffs<S>& c, const int64_t* dims) {
    P* p = static_cast<P*>(d.p);
    S* m = static_cast<S*>(d.m);
    S* v = static_cast<S*>(d.v);
    S* vmax = static_cast<S*>(d.vmax);
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
        // the tensor's last few elements (fewer than V), in its last tile
        for (int64_t i = begin + packs * V + threadIdx.x; i < end; i += kThreads)
            dense_element<L2, AMSGRAD>(p, g, m, v, vmax, i, c);
    } else if (d.kind == kScalar) {
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads)
            dense_element<L2, AMSGRAD>(p, g, m, v, vmax, i, c);
    } else {
        // shape, then the strides (in elements) of p, g, m, v, vmax
        const int32_t nd = d.ndim;
        const int64_t* shape = dims + d.dims;
        const int64_t* strides = shape + nd;
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            int64_t rest = i, op = 0, og = 0, om = 0, ov = 0, ox = 0;
            for (int32_t k = nd - 1; k >= 0; --k) {
                const int64_t extent = shape[k];
                const int64_t idx = rest % extent;
                rest /= extent;
                op += idx * strides[k];
                og += idx * strides[nd + k];
                om += idx * strides[2 * nd + k];
                ov += idx * strides[3 * nd + k];
                ox += idx * strides[4 * nd + k];
            }
            P pi = p[op];
            S mi = m[om], vi = v[ov];
            S xi = AMSGRAD ? vmax[ox] : S(0);
            update_element<L2, AMSGRAD>(pi, g[og], mi, vi, xi, c);
            p[op] = pi;
            m[om] = mi;
            v[ov] = vi;
            if (AMSGRAD) vmax[ox] = xi;
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

struct CheckArray {
    const void* data;  // dense: the lowest element; strided: the data pointer
    int64_t n;
    int64_t dims;      // strided: shape then strides in the dims array
    int32_t dtype;     // DType
    int32_t ndim;
    int32_t index;     // position in the caller's list
    int32_t strided;
};

constexpr int64_t kCheckTile = int64_t{kThreads} * 16;

template <class T>
__device__ __forceinline__ bool range_finite(const CheckArray& a, int64_t begin, int64_t end,
                                             const int64_t* dims) {
    const T* x = static_cast<const T*>(a.data);
    bool finite = true;
    if (!a.strided) {
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) finite &= is_finite_bits(x[i]);
    } else {
        const int64_t* shape = dims + a.dims;
        const int64_t* strides = shape + a.ndim;
        for (int64_t i = begin + threadIdx.x; i < end; i += kThreads) {
            int64_t rest = i, off = 0;
            for (int32_t k = a.ndim - 1; k >= 0; --k) {
                off += rest % shape[k] * strides[k];
                rest /= shape[k];
            }
            finite &= is_finite_bits(x[off]);
        }
    }
    return finite;
}

__global__ void __launch_bounds__(kThreads)
first_nonfinite_kernel(const CheckArray* arrays, const int64_t* tile_begin, int32_t count,
                       const int64_t* dims, int64_t tiles, int* result) {
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
        const int32_t k = find_tensor(tile_begin, count, t);
        const CheckArray a = arrays[k];
        if (*static_cast<volatile int*>(result) <= a.index) continue;  // an earlier one is bad
        const int64_t begin = (t - tile_begin[k]) * kCheckTile;
        const int64_t end = min(begin + kCheckTile, a.n);
        bool finite = true;
        switch (a.dtype) {
            case static_cast<int32_t>(DType::float16): finite = range_finite<float16>(a, begin, end, dims); break;
            case static_cast<int32_t>(DType::bfloat16): finite = range_finite<bfloat16>(a, begin, end, dims); break;
            case static_cast<int32_t>(DType::float32): finite = range_finite<float>(a, begin, end, dims); break;
            default: finite = range_finite<double>(a, begin, end, dims); break;
        }
        if (!finite) atomicMin(result, a.index);
    }
}

// ---- roofline probes --------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Host side: planning

int combo_of(DType param, DType grad) {
    switch (param) {
        case DType::float32: return f32;
        case DType::float64: return f64;
        case DType::float16: return grad == DType::float16 ? f16_f16 : f16_f32;
        case DType::bfloat16: return grad == DType::bfloat16 ? bf16_bf16 : bf16_f32;
    }
    return -1;
}

void* lowest(const ArrayRef& a, int64_t low) {
    return static_cast<char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// 16-byte state packs: V elements per pack, V * sizeof(param) bytes of param, etc.
bool vector_aligned(const TensorRef& t, const void* const ptrs[5], bool amsgrad) {
    const size_t v = t.param.dtype == DType::float64 ? 2 : 4;
    return aligned(ptrs[0], v * dtype_size(t.param.dtype)) &&
           aligned(ptrs[1], v * dtype_size(t.grad.dtype)) && aligned(ptrs[2], 16) &&
           aligned(ptrs[3], 16) && (!amsgrad || aligned(ptrs[4], 16));
}

struct Range {
    int combo;
    int32_t first, count;
    int64_t tiles;
};

// The table of one launch group, on the host, ready to upload.
struct HostTable {
    std::vector<DeviceTensor> tensors;
    std::vector<int64_t> tile_begin;
    std::vector<const void*> grads;
    std::vector<int64_t> dims;
    std::vector<Range> ranges;
};

// Everything in one allocation: tensors | tile_begin | grads | dims | extra (8-byte aligned).
struct Blob {
    std::vector<char> bytes;
    size_t tile_begin, grads, dims, extra;
};

template <class T>
void append(std::vector<char>& out, const T* data, size_t count) {
    const char* bytes = reinterpret_cast<const char*>(data);
    if (count) out.insert(out.end(), bytes, bytes + count * sizeof(T));
    out.resize((out.size() + 7) / 8 * 8);  // the next part starts 8-byte aligned
}

Blob serialize(const HostTable& t, const std::vector<char>& extra) {
    Blob b;
    append(b.bytes, t.tensors.data(), t.tensors.size());
    b.tile_begin = b.bytes.size();
    append(b.bytes, t.tile_begin.data(), t.tile_begin.size());
    b.grads = b.bytes.size();
    append(b.bytes, t.grads.data(), t.grads.size());
    b.dims = b.bytes.size();
    append(b.bytes, t.dims.data(), t.dims.size());
    b.extra = b.bytes.size();
    append(b.bytes, extra.data(), extra.size());
    return b;
}

// Sorts the entries by dtype pair and numbers each pair's tiles from 0.
void finish_ranges(HostTable& t, const std::vector<int>& combos, const std::vector<DType>& param_dtypes) {
    std::vector<size_t> order(t.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return combos[a] < combos[b]; });
    HostTable sorted;
    sorted.dims = std::move(t.dims);
    for (size_t i : order) {
        const int combo = combos[i];
        if (sorted.ranges.empty() || sorted.ranges.back().combo != combo)
            sorted.ranges.push_back({combo, static_cast<int32_t>(sorted.tensors.size()), 0, 0});
        Range& r = sorted.ranges.back();
        const DeviceTensor& d = t.tensors[i];
        sorted.tensors.push_back(d);
        sorted.grads.push_back(t.grads[i]);
        sorted.tile_begin.push_back(r.tiles);
        const int64_t tile = tile_elements_for(param_dtypes[i]);
        r.tiles += (d.n + tile - 1) / tile;
        ++r.count;
    }
    t = std::move(sorted);
}

HostTable build_table(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams) {
    HostTable table;
    std::vector<int> combos;
    std::vector<DType> param_dtypes;
    for (size_t i = 0; i < count; ++i) {
        const TensorRef& t = tensors[i];
        const int64_t n = numel(t.param);
        if (n == 0) continue;
        const bool amsgrad = hparams[t.hparams_index].flags & ADAMCORE_AMSGRAD;
        const ArrayRef* arrays[5] = {&t.param, &t.grad, &t.exp_avg, &t.exp_avg_sq, &t.max_exp_avg_sq};
        const size_t used = amsgrad ? 5 : 4;
        DeviceTensor d{};
        d.n = n;
        d.set = static_cast<int32_t>(t.hparams_index);
        d.ndim = t.param.ndim;
        int64_t low = 0;
        const void* grad;
        if (dense_layout(arrays, used, &low)) {
            const void* ptrs[5] = {lowest(t.param, low), lowest(t.grad, low), lowest(t.exp_avg, low),
                                   lowest(t.exp_avg_sq, low),
                                   amsgrad ? lowest(t.max_exp_avg_sq, low) : nullptr};
            d.p = const_cast<void*>(ptrs[0]);
            grad = ptrs[1];
            d.m = const_cast<void*>(ptrs[2]);
            d.v = const_cast<void*>(ptrs[3]);
            d.vmax = const_cast<void*>(ptrs[4]);
            d.kind = vector_aligned(t, ptrs, amsgrad) ? kVector : kScalar;
        } else {
            d.kind = kStrided;
            d.p = t.param.data;
            grad = t.grad.data;
            d.m = t.exp_avg.data;
            d.v = t.exp_avg_sq.data;
            d.vmax = amsgrad ? t.max_exp_avg_sq.data : nullptr;
            d.dims = static_cast<int64_t>(table.dims.size());
            for (int32_t k = 0; k < t.param.ndim; ++k) table.dims.push_back(t.param.shape[k]);
            for (size_t a = 0; a < 5; ++a)
                for (int32_t k = 0; k < t.param.ndim; ++k)
                    table.dims.push_back(a < used ? stride_of(*arrays[a], k) : 0);
        }
        table.tensors.push_back(d);
        table.grads.push_back(grad);
        combos.push_back(combo_of(t.param.dtype, t.grad.dtype));
        param_dtypes.push_back(t.param.dtype);
    }
    finish_ranges(table, combos, param_dtypes);
    return table;
}

// The per-step scalars of every hyperparameter set, in arithmetic type S.
template <class S>
std::vector<CoeffSet<S>> coeff_sets(const adamcore_hparams* hparams, size_t count) {
    std::vector<CoeffSet<S>> sets(count);
    for (size_t h = 0; h < count; ++h) {
        sets[h].c = round_coeffs<S>(make_coeffs(hparams[h]));
        sets[h].l2 = uses_l2(hparams[h]);
        sets[h].amsgrad = (hparams[h].flags & ADAMCORE_AMSGRAD) != 0;
    }
    return sets;
}

// Both coefficient types of a step: by value when few, else also as bytes to upload.
struct StepSets {
    std::vector<CoeffSet<float>> f32;
    std::vector<CoeffSet<double>> f64;
    bool inline_sets;
    std::vector<char> bytes;  // f32 then f64 (8-byte aligned), uploaded when !inline_sets
    size_t f64_at = 0;

    StepSets(const adamcore_hparams* hparams, size_t count)
        : f32(coeff_sets<float>(hparams, count)),
          f64(coeff_sets<double>(hparams, count)),
          inline_sets(count <= kInlineSets) {
        if (!inline_sets) {
            append(bytes, f32.data(), f32.size());
            f64_at = bytes.size();
            append(bytes, f64.data(), f64.size());
        }
    }
};

// Device addresses of a table's parts; sets_dev is the uploaded StepSets bytes (or nullptr).
struct DeviceTable {
    const DeviceTensor* tensors;
    const int64_t* tile_begin;
    const void* const* grads;
    const int64_t* dims;
    const char* sets_dev;
};

template <class P, class G, class S>
void launch_range(const Range& r, const DeviceTable& t, const std::vector<CoeffSet<S>>& sets,
                  size_t sets_offset, cudaStream_t stream) {
    LaunchArgs<S> a{};
    a.tensors = t.tensors + r.first;
    a.tile_begin = t.tile_begin + r.first;
    a.grads = t.grads + r.first;
    a.dims = t.dims;
    a.tiles = r.tiles;
    a.count = r.count;
    if (sets.size() <= kInlineSets) {
        a.sets_inline = 1;
        std::copy(sets.begin(), sets.end(), a.sets);
    } else {
        a.sets_inline = 0;
        a.sets_global = reinterpret_cast<const CoeffSet<S>*>(t.sets_dev + sets_offset);
    }
    const auto grid = static_cast<unsigned>(std::min(r.tiles, kMaxGrid));
    ADAMCORE_LAUNCH(grid, kThreads, stream, adam_kernel<P, G, S>)(a);
    ADAMCORE_CUDA_CHECK(cudaGetLastError());
}

void launch(const Range& r, const DeviceTable& t, const StepSets& sets, cudaStream_t stream) {
    switch (r.combo) {
        case f32: return launch_range<float, float, float>(r, t, sets.f32, 0, stream);
        case f64: return launch_range<double, double, double>(r, t, sets.f64, sets.f64_at, stream);
        case f16_f16: return launch_range<float16, float16, float>(r, t, sets.f32, 0, stream);
        case f16_f32: return launch_range<float16, float, float>(r, t, sets.f32, 0, stream);
        case bf16_bf16: return launch_range<bfloat16, bfloat16, float>(r, t, sets.f32, 0, stream);
        case bf16_f32: return launch_range<bfloat16, float, float>(r, t, sets.f32, 0, stream);
    }
    fail(ErrorKind::internal, "unknown dtype pair");
}

// Uploads a one-shot table (and the sets when they do not fit the arguments), launches every
// range and frees the upload, all in stream order.
void run_one_shot(const HostTable& table, const StepSets& sets, cudaStream_t stream, int device) {
    if (table.tensors.empty()) return;
    const Blob blob = serialize(table, sets.bytes);
    const DeviceState& st = device_state(device);
    StreamBuffer buffer(blob.bytes.size(), stream, st);
    ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(buffer.ptr, blob.bytes.data(), blob.bytes.size(),
                                        cudaMemcpyHostToDevice, stream));
    const char* base = static_cast<const char*>(buffer.ptr);
    const DeviceTable t{reinterpret_cast<const DeviceTensor*>(base),
                        reinterpret_cast<const int64_t*>(base + blob.tile_begin),
                        reinterpret_cast<const void* const*>(base + blob.grads),
                        reinterpret_cast<const int64_t*>(base + blob.dims),
                        sets.inline_sets ? nullptr : base + blob.extra};
    for (const Range& r : table.ranges) launch(r, t, sets, stream);
}

int64_t first_nonfinite_impl(const ArrayRef* arrays, size_t count, int device, cudaStream_t stream) {
    std::vector<CheckArray> checks;
    std::vector<int64_t> tile_begin, dims;
    int64_t tiles = 0;
    for (size_t i = 0; i < count; ++i) {
        const ArrayRef& a = arrays[i];
        const int64_t n = numel(a);
        if (n == 0) continue;
        CheckArray c{};
        c.n = n;
        c.dtype = static_cast<int32_t>(a.dtype);
        c.ndim = a.ndim;
        c.index = static_cast<int32_t>(i);
        const ArrayRef* one[1] = {&a};
        int64_t low = 0;
        if (dense_layout(one, 1, &low)) {
            c.data = lowest(a, low);
        } else {
            c.strided = 1;
            c.data = a.data;
            c.dims = static_cast<int64_t>(dims.size());
            for (int32_t k = 0; k < a.ndim; ++k) dims.push_back(a.shape[k]);
            for (int32_t k = 0; k < a.ndim; ++k) dims.push_back(stride_of(a, k));
        }
        checks.push_back(c);
        tile_begin.push_back(tiles);
        tiles += (n + kCheckTile - 1) / kCheckTile;
    }
    if (checks.empty()) return -1;
    if (count > static_cast<size_t>(INT_MAX)) fail(ErrorKind::invalid_value, "too many arrays");
    std::vector<char> bytes;
    append(bytes, checks.data(), checks.size());
    const size_t at_tiles = bytes.size();
    append(bytes, tile_begin.data(), tile_begin.size());
    const size_t at_dims = bytes.size();
    append(bytes, dims.data(), dims.size());
    const size_t at_result = bytes.size();
    const int none = INT_MAX;
    append(bytes, &none, 1);

    DeviceGuard guard(device);
    StreamBuffer buffer(bytes.size(), stream, device_state(device));
    char* base = static_cast<char*>(buffer.ptr);
    ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(base, bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream));
    const auto grid = static_cast<unsigned>(std::min(tiles, kMaxGrid));
    ADAMCORE_LAUNCH(grid, kThreads, stream, first_nonfinite_kernel)(
        reinterpret_cast<const CheckArray*>(base), reinterpret_cast<const int64_t*>(base + at_tiles),
        static_cast<int32_t>(checks.size()), reinterpret_cast<const int64_t*>(base + at_dims), tiles,
        reinterpret_cast<int*>(base + at_result));
    ADAMCORE_CUDA_CHECK(cudaGetLastError());
    int result = INT_MAX;
    ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(&result, base + at_result, sizeof result,
                                        cudaMemcpyDeviceToHost, stream));
    ADAMCORE_CUDA_CHECK(cudaStreamSynchronize(stream));  // the answer is needed now: this stream only
    return result == INT_MAX ? -1 : result;
}

void check_finite_grads(const TensorRef* tensors, size_t count, int device, cudaStream_t stream) {
    std::vector<ArrayRef> grads(count);
    for (size_t i = 0; i < count; ++i) grads[i] = tensors[i].grad;
    const int64_t bad = first_nonfinite_impl(grads.data(), count, device, stream);
    if (bad >= 0)
        fail(ErrorKind::not_finite, "grad " + std::to_string(bad) +
                                        " holds inf or NaN (check_finite is on); nothing was updated");
}

void check_index_range(size_t count) {
    if (count > static_cast<size_t>(INT32_MAX)) fail(ErrorKind::invalid_value, "too many tensors for one step");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public interface

std::string unavailable_reason() { return probe().reason; }

int device_count() { return probe().count; }

std::vector<DeviceInfo> devices() {
    std::vector<DeviceInfo> out;
    for (int i = 0; i < probe().count; ++i) {
        cudaDeviceProp prop;
        ADAMCORE_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
        out.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem, prop.multiProcessorCount});
    }
    return out;
}

int runtime_version() {
    int v = 0;
    if (cudaRuntimeGetVersion(&v) != cudaSuccess) v = CUDART_VERSION;
    return v;
}

int driver_version() {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) {
        cudaGetLastError();
        v = 0;
    }
    return v;
}

int device_of_pointer(const void* ptr) {
    if (probe().count == 0) return -1;
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

void adam_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
               size_t hparams_count, bool check_finite, int device, void* stream) {
    require_device(device);
    validate_step(tensors, count, hparams, hparams_count);
    check_index_range(count);
    const auto s = static_cast<cudaStream_t>(stream);
    DeviceGuard guard(device);
    if (check_finite) check_finite_grads(tensors, count, device, s);
    const HostTable table = build_table(tensors, count, hparams);
    run_one_shot(table, StepSets(hparams, hparams_count), s, device);
}

int64_t first_nonfinite(const ArrayRef* arrays, size_t count, int device, void* stream) {
    require_device(device);
    for (size_t i = 0; i < count; ++i)
        if (numel(arrays[i]) > 0 && !arrays[i].data)
            fail(ErrorKind::invalid_value, "array " + std::to_string(i) + " is NULL");
    return first_nonfinite_impl(arrays, count, device, static_cast<cudaStream_t>(stream));
}

namespace {
unsigned probe_grid(int64_t n) {
    const int64_t blocks = (n / 4 + kThreads - 1) / kThreads;
    return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, kMaxGrid)));
}
}  // namespace

void stream_probe(float* p, const float* g, float* m, float* v, int64_t n, int device, void* stream) {
    require_device(device);
    if (n <= 0) return;
    DeviceGuard guard(device);
    const bool vector = aligned(p, 16) && aligned(g, 16) && aligned(m, 16) && aligned(v, 16);
    ADAMCORE_LAUNCH(probe_grid(n), kThreads, static_cast<cudaStream_t>(stream), probe_kernel)(
        p, g, m, v, n, vector);
    ADAMCORE_CUDA_CHECK(cudaGetLastError());
}

void copy(float* dst, const float* src, int64_t n, int device, void* stream) {
    require_device(device);
    if (n <= 0) return;
    DeviceGuard guard(device);
    const bool vector = aligned(dst, 16) && aligned(src, 16);
    ADAMCORE_LAUNCH(probe_grid(n), kThreads, static_cast<cudaStream_t>(stream), copy_kernel)(
        dst, src, n, vector);
    ADAMCORE_CUDA_CHECK(cudaGetLastError());
}

// ---------------------------------------------------------------------------------------------
// Plan: the table uploaded once; each step checks the grads, uploads their pointers only when
// they moved, and launches.

struct Plan::Impl {
    int device;
    std::vector<TensorRef> refs;     // params and state, grads filled in per step
    HostTable table;                 // entries sorted by param dtype; grads unset
    std::vector<size_t> source;      // table entry -> index in refs
    std::vector<int64_t> low;        // table entry -> offset of its lowest element
    std::vector<DType> group_dtype;  // per range: the param dtype
    void* table_dev = nullptr;       // tensors | tile_begin (uploaded at the first step)
    Blob blob;
    void* grads_dev = nullptr;
    std::vector<const void*> grads_uploaded;
    cudaEvent_t last_use = nullptr;  // recorded after every step's launches

    ~Impl() {
        try {
            DeviceGuard guard(device);
            free_after(table_dev, last_use, device);
            free_after(grads_dev, last_use, device);
            if (last_use) cudaEventDestroy(last_use);
        } catch (...) {
        }
    }
};

Plan::Plan(const TensorRef* tensors, size_t count, int device) : impl_(std::make_unique<Impl>()) {
    require_device(device);
    check_index_range(count);
    Impl& im = *impl_;
    im.device = device;
    im.refs.assign(tensors, tensors + count);
    std::vector<int> groups;
    std::vector<DType> param_dtypes;
    for (size_t i = 0; i < count; ++i) {
        TensorRef& t = im.refs[i];
        t.grad = t.param;  // stands in for the grad until a step brings one
        const int64_t n = numel(t.param);
        if (n == 0) continue;
        const bool amsgrad = t.has_max_exp_avg_sq;
        const ArrayRef* arrays[4] = {&t.param, &t.exp_avg, &t.exp_avg_sq, &t.max_exp_avg_sq};
        const size_t used = amsgrad ? 4 : 3;
        // each step validates everything; the layout below needs the shapes to agree already
        for (size_t k = 1; k < used; ++k)
            if (arrays[k]->ndim != t.param.ndim ||
                !std::equal(t.param.shape, t.param.shape + t.param.ndim, arrays[k]->shape))
                fail(ErrorKind::invalid_value, "the state of param " + std::to_string(i) +
                                                   " does not have the param's shape");
        int64_t low = 0;
        if (!dense_layout(arrays, used, &low))
            fail(ErrorKind::invalid_value, "param " + std::to_string(i) +
                                               " and its state are not dense in one layout; "
                                               "step it without a plan");
        DeviceTensor d{};
        d.n = n;
        d.set = static_cast<int32_t>(t.hparams_index);
        d.ndim = t.param.ndim;
        d.p = lowest(t.param, low);
        d.m = lowest(t.exp_avg, low);
        d.v = lowest(t.exp_avg_sq, low);
        d.vmax = amsgrad ? lowest(t.max_exp_avg_sq, low) : nullptr;
        const size_t vbytes = (t.param.dtype == DType::float64 ? 2 : 4) * dtype_size(t.param.dtype);
        const bool vec = aligned(d.p, vbytes) && aligned(d.m, 16) && aligned(d.v, 16) &&
                         (!amsgrad || aligned(d.vmax, 16));
        d.kind = vec ? kVector : kScalar;
        im.table.tensors.push_back(d);
        im.table.grads.push_back(nullptr);
        im.source.push_back(i);
        im.low.push_back(low);
        groups.push_back(static_cast<int>(t.param.dtype));
        param_dtypes.push_back(t.param.dtype);
    }
    // sort by param dtype; the grads' dtype picks each range's kernel at step time
    std::vector<size_t> order(im.source.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return groups[a] < groups[b]; });
    std::vector<size_t> source;
    std::vector<int64_t> lows;
    std::vector<int> sorted_groups;
    std::vector<DType> sorted_dtypes;
    std::vector<DeviceTensor> sorted_tensors;
    for (size_t i : order) {
        sorted_tensors.push_back(im.table.tensors[i]);
        source.push_back(im.source[i]);
        lows.push_back(im.low[i]);
        sorted_groups.push_back(groups[i]);
        sorted_dtypes.push_back(param_dtypes[i]);
    }
    im.table.tensors = std::move(sorted_tensors);
    im.source = std::move(source);
    im.low = std::move(lows);
    finish_ranges(im.table, sorted_groups, sorted_dtypes);  // ranges by param dtype (stable: no reorder)
    for (const Range& r : im.table.ranges) im.group_dtype.push_back(static_cast<DType>(r.combo));
    im.blob = serialize(im.table, {});
    DeviceGuard guard(device);
    ADAMCORE_CUDA_CHECK(cudaEventCreateWithFlags(&im.last_use, cudaEventDisableTiming));
}

Plan::~Plan() = default;

size_t Plan::size() const { return impl_->refs.size(); }

void Plan::step(const ArrayRef* grads, size_t count, const adamcore_hparams* hparams,
                size_t hparams_count, bool check_finite, void* stream) {
    Impl& im = *impl_;
    if (count != im.refs.size())
        fail(ErrorKind::invalid_value, "got " + std::to_string(count) + " grads for " +
                                           std::to_string(im.refs.size()) + " params");
    for (size_t i = 0; i < count; ++i) im.refs[i].grad = grads[i];
    validate_step(im.refs.data(), count, hparams, hparams_count);
    const auto s = static_cast<cudaStream_t>(stream);
    DeviceGuard guard(im.device);
    if (check_finite) check_finite_grads(im.refs.data(), count, im.device, s);

    // The grads: each must be laid out like its param (and aligned for the vector path), and
    // each range's grads of one dtype; otherwise this step goes the one-shot way.
    std::vector<const void*> grad_ptrs(im.table.tensors.size());
    std::vector<int> combos(im.table.ranges.size());
    bool fits = true;
    for (size_t r = 0; r < im.table.ranges.size() && fits; ++r) {
        const Range& range = im.table.ranges[r];
        DType grad_dtype = im.refs[im.source[range.first]].grad.dtype;
        for (int32_t e = range.first; e < range.first + range.count && fits; ++e) {
            const TensorRef& t = im.refs[im.source[e]];
            if (t.grad.dtype != grad_dtype) fits = false;
            for (int32_t d = 0; d < t.param.ndim && fits; ++d)
                if (t.param.shape[d] > 1 && stride_of(t.grad, d) != stride_of(t.param, d)) fits = false;
            if (!fits) break;
            grad_ptrs[e] = lowest(t.grad, im.low[e]);
            const size_t vbytes = (t.param.dtype == DType::float64 ? 2 : 4) * dtype_size(t.grad.dtype);
            if (im.table.tensors[e].kind == kVector && !aligned(grad_ptrs[e], vbytes)) fits = false;
        }
        combos[r] = combo_of(im.group_dtype[r], grad_dtype);
    }
    const StepSets sets(hparams, hparams_count);
    if (!fits) {
        run_one_shot(build_table(im.refs.data(), count, hparams), sets, s, im.device);
        return;
    }
    if (im.table.tensors.empty()) return;
    const DeviceState& st = device_state(im.device);
    if (!im.table_dev) {
        im.table_dev = alloc_on(im.blob.bytes.size(), s, st);
        ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(im.table_dev, im.blob.bytes.data(), im.blob.bytes.size(),
                                            cudaMemcpyHostToDevice, s));
    }
    if (grad_ptrs != im.grads_uploaded) {
        // a new array: the previous one may still be read by the last step's kernels
        void* fresh = alloc_on(grad_ptrs.size() * sizeof(void*), s, st);
        const cudaError_t err = cudaMemcpyAsync(fresh, grad_ptrs.data(), grad_ptrs.size() * sizeof(void*),
                                                cudaMemcpyHostToDevice, s);
        if (err != cudaSuccess) {
            free_on(fresh, s, st);
            fail_cuda(err, "cudaMemcpyAsync(grad pointers)");
        }
        free_after(im.grads_dev, im.last_use, im.device);
        im.grads_dev = fresh;
        im.grads_uploaded = grad_ptrs;
    }
    // more hyperparameter sets than the arguments hold: uploaded for this step only
    std::unique_ptr<StreamBuffer> sets_buffer;
    const char* sets_dev = nullptr;
    if (!sets.inline_sets) {
        sets_buffer = std::make_unique<StreamBuffer>(sets.bytes.size(), s, st);
        ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(sets_buffer->ptr, sets.bytes.data(), sets.bytes.size(),
                                            cudaMemcpyHostToDevice, s));
        sets_dev = static_cast<const char*>(sets_buffer->ptr);
    }
    const char* base = static_cast<const char*>(im.table_dev);
    const DeviceTable t{reinterpret_cast<const DeviceTensor*>(base),
                        reinterpret_cast<const int64_t*>(base + im.blob.tile_begin),
                        static_cast<const void* const*>(im.grads_dev), nullptr, sets_dev};
    for (size_t r = 0; r < im.table.ranges.size(); ++r) {
        Range range = im.table.ranges[r];
        range.combo = combos[r];
        launch(range, t, sets, s);
    }
    ADAMCORE_CUDA_CHECK(cudaEventRecord(im.last_use, s));
}

}  // namespace adamcore::cuda
