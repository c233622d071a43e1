// device.cpp: errors, the device probe, the device guard (device.h) and the backend's device
// information (adam_cuda.hpp).
#include "device.h"

#include <climits>

#include "adam_cuda.hpp"

namespace adamcore::cuda {
namespace detail {

void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

void fail_cuda(cudaError_t err, const char* what) {
    fail(ErrorKind::cuda, std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err) +
                              " (" + cudaGetErrorName(err) + ")");
}

namespace {
std::string version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }
}  // namespace

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

void check_index_range(size_t count) {
    if (count > static_cast<size_t>(INT32_MAX)) fail(ErrorKind::invalid_value, "too many tensors for one step");
}

DeviceGuard::DeviceGuard(int device) {
    ADAMCORE_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ == device) {
        previous_ = -1;
    } else {
        ADAMCORE_CUDA_CHECK(cudaSetDevice(device));
    }
}

DeviceGuard::~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
}

}  // namespace detail

std::string unavailable_reason() { return detail::probe().reason; }

int device_count() { return detail::probe().count; }

std::vector<DeviceInfo> devices() {
    std::vector<DeviceInfo> out;
    for (int i = 0; i < detail::probe().count; ++i) {
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
    if (detail::probe().count == 0) return -1;
    cudaPointerAttributes attr;
    if (cudaPointerGetAttributes(&attr, ptr) != cudaSuccess) {
        cudaGetLastError();
        return -1;
    }
    return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

}  // namespace adamcore::cuda
