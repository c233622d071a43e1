// memory.cpp: the per-device pools and stream-ordered buffers of the CUDA backend (memory.h).
#include "memory.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "device.h"

namespace adamcore::cuda::detail {

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

void upload(void* device_dst, const void* host_src, size_t bytes, cudaStream_t stream) {
    ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, stream));
}

}  // namespace adamcore::cuda::detail
