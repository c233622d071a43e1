// host_emulation.h: just enough of CUDA to compile the backend (cuda/*.cu, *.cpp) as plain C++ and run its kernels
// on the host, for tests on machines without a GPU (tests/test_cuda_emulated.py).
//
// A launch runs every block, and every thread of a block, one after the other. That is exact
// for these kernels: their threads share no memory and never synchronize, so any order of
// threads gives the same result. Device memory is host memory; streams and events are no-ops
// (everything completes at once). What this cannot check: real concurrency, the hardware's
// arithmetic (the GPU tests do), and anything about speed.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __grid_constant__
#define __launch_bounds__(n)
#define CUDART_VERSION 13000

struct Dim3 {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim3 threadIdx, blockIdx, blockDim, gridDim;

template <class T>
inline T min(T a, T b) {
    return b < a ? b : a;
}

struct alignas(16) float4 {
    float x, y, z, w;
};

inline unsigned __float_as_uint(float x) {
    unsigned u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline long long __double_as_longlong(double x) {
    long long u;
    std::memcpy(&u, &x, sizeof u);
    return u;
}
inline int atomicMin(int* address, int value) {
    const int old = *address;
    if (value < old) *address = value;
    return old;
}

namespace adamcore_emulation {
// Runs kernel(args...) as grid blocks of block threads.
template <class Kernel>
struct Launcher {
    unsigned grid, block;
    Kernel kernel;
    template <class... Args>
    void operator()(Args&&... args) const {
        gridDim = {grid, 1, 1};
        blockDim = {block, 1, 1};
        for (unsigned b = 0; b < grid; ++b) {
            blockIdx = {b, 0, 0};
            for (unsigned t = 0; t < block; ++t) {
                threadIdx = {t, 0, 0};
                kernel(args...);
            }
        }
    }
};
template <class Kernel>
Launcher<Kernel> launcher(unsigned grid, unsigned block, Kernel kernel) {
    return {grid, block, kernel};
}
}  // namespace adamcore_emulation

#define ADAMCORE_LAUNCH(grid, block, stream, ...) \
    ::adamcore_emulation::launcher((grid), (block), [](const auto&... a) { __VA_ARGS__(a...); })

// ---- the runtime API the backend uses -------------------------------------------------------------

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorNoDevice = 100,
                   cudaErrorInsufficientDriver = 35 };
using cudaStream_t = struct CUstream_st*;
using cudaEvent_t = struct CUevent_st*;
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2 };
enum cudaDeviceAttr { cudaDevAttrMemoryPoolsSupported = 115 };
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost = 1,
                      cudaMemoryTypeDevice = 2, cudaMemoryTypeManaged = 3 };
constexpr unsigned cudaStreamNonBlocking = 1, cudaEventDisableTiming = 2;

struct cudaPointerAttributes {
    cudaMemoryType type;
    int device;
};
struct cudaDeviceProp {
    char name[256];
    int major, minor;
    size_t totalGlobalMem;
    int multiProcessorCount;
};

namespace adamcore_emulation {
// Test hooks: how many devices to pretend, and whether they have memory pools.
inline int device_count = 1;
inline int memory_pools = 1;
inline int current_device = 0;
inline long live_allocations = 0;
}  // namespace adamcore_emulation

inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmulated"; }
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) {
    *n = adamcore_emulation::device_count;
    return *n ? cudaSuccess : cudaErrorNoDevice;
}
inline cudaError_t cudaGetDevice(int* d) {
    *d = adamcore_emulation::current_device;
    return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int d) {
    adamcore_emulation::current_device = d;
    return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
    *value = adamcore_emulation::memory_pools;
    return cudaSuccess;
}
inline cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
    std::memset(p, 0, sizeof *p);
    std::strcpy(p->name, "host emulation");
    p->major = 9;
    p->totalGlobalMem = size_t{1} << 30;
    p->multiProcessorCount = 1 + d;
    return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
inline cudaError_t cudaDriverGetVersion(int* v) {
    *v = CUDART_VERSION;
    return cudaSuccess;
}
inline cudaError_t cudaPointerGetAttributes(cudaPointerAttributes* a, const void*) {
    a->type = cudaMemoryTypeDevice;
    a->device = 0;
    return cudaSuccess;
}
inline cudaError_t cudaMalloc(void** p, size_t bytes) {
    *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    ++adamcore_emulation::live_allocations;
    return *p ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaFree(void* p) {
    if (p) --adamcore_emulation::live_allocations;
    std::free(p);
    return cudaSuccess;
}
using cudaMemPool_t = struct CUmemPool_st*;
enum cudaMemAllocationType { cudaMemAllocationTypePinned = 1 };
enum cudaMemLocationType { cudaMemLocationTypeDevice = 1 };
enum cudaMemPoolAttr { cudaMemPoolAttrReleaseThreshold = 4 };
struct cudaMemLocation {
    cudaMemLocationType type;
    int id;
};
struct cudaMemPoolProps {
    cudaMemAllocationType allocType;
    int handleTypes;
    cudaMemLocation location;
};
inline cudaError_t cudaMemPoolCreate(cudaMemPool_t* pool, const cudaMemPoolProps* props) {
    static int token;
    *pool = reinterpret_cast<cudaMemPool_t>(&token);
    return props->location.type == cudaMemLocationTypeDevice ? cudaSuccess : cudaErrorInvalidValue;
}
inline cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr, void*) { return cudaSuccess; }
inline cudaError_t cudaMallocFromPoolAsync(void** p, size_t bytes, cudaMemPool_t, cudaStream_t) {
    return cudaMalloc(p, bytes);
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind,
                                   cudaStream_t) {
    std::memcpy(dst, src, bytes);
    return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
    static int token;
    *s = reinterpret_cast<cudaStream_t>(&token);
    return cudaSuccess;
}
inline cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
inline cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) {
    static int token;
    *e = reinterpret_cast<cudaEvent_t>(&token);
    return cudaSuccess;
}
inline cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
inline cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
inline cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
