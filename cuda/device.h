// device.h: errors, the device probe and the current-device guard of the CUDA backend.
#pragma once

#include <string>

#include "adamcore/core.hpp"
#include "runtime.h"

namespace adamcore::cuda::detail {

[[noreturn]] void fail(ErrorKind kind, const std::string& message);
// Error(cuda) with CUDA's own name and text of err, saying which call failed.
[[noreturn]] void fail_cuda(cudaError_t err, const char* what);

#define ADAMCORE_CUDA_CHECK(expr)                                                  \
    do {                                                                           \
        const cudaError_t adamcore_err_ = (expr);                                  \
        if (adamcore_err_ != cudaSuccess) ::adamcore::cuda::detail::fail_cuda(adamcore_err_, #expr); \
    } while (0)

// The devices this process sees, probed once: count, or 0 with the reason.
struct Probe {
    int count = 0;
    std::string reason;
};
const Probe& probe();

// Error(unavailable) without a device, Error(invalid_value) for a device that does not exist.
void require_device(int device);

// Error(invalid_value) when a step has more tensors than the kernels' 32-bit table index.
void check_index_range(size_t count);

// Makes device current for this thread for the guard's lifetime (the caller's choice is restored).
class DeviceGuard {
public:
    explicit DeviceGuard(int device);
    ~DeviceGuard();
    DeviceGuard(const DeviceGuard&) = delete;
    DeviceGuard& operator=(const DeviceGuard&) = delete;

private:
    int previous_ = -1;
};

}  // namespace adamcore::cuda::detail
