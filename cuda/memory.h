// memory.h: device memory of the CUDA backend. Tables are small and short-lived: they are
// allocated, copied and freed in stream order (cudaMallocFromPoolAsync/cudaFreeAsync) on the
// caller's stream, from a pool of our own per device that keeps its memory (the default pool
// returns it at every synchronization), so nothing here synchronizes the device.
#pragma once

#include <cstddef>

#include "runtime.h"

namespace adamcore::cuda::detail {

// Per device: whether it has stream-ordered allocation, and a private stream for deferred frees.
struct DeviceState {
    bool pools = false;
    cudaMemPool_t pool = nullptr;
    cudaStream_t cleanup = nullptr;  // kept for the process
};

// Made once per device, with that device current (callers hold a DeviceGuard), and never
// destroyed: a plan may be freed during interpreter shutdown, after static destructors ran.
const DeviceState& device_state(int device);

// Device memory in stream order where the device allows it (else plain cudaMalloc, which may
// synchronize; devices without memory pools are rare).
void* alloc_on(size_t bytes, cudaStream_t stream, const DeviceState& st);
void free_on(void* p, cudaStream_t stream, const DeviceState& st) noexcept;

// Frees p once the work recorded by event has run, without waiting on the host: on a private
// stream, since the stream of that work may be gone by now.
void free_after(void* p, cudaEvent_t event, int device) noexcept;

// Copies host bytes to the device in stream order.
void upload(void* device_dst, const void* host_src, size_t bytes, cudaStream_t stream);

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

}  // namespace adamcore::cuda::detail
