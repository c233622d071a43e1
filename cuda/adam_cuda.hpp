// adam_cuda.hpp: the CUDA backend's host interface, free of CUDA headers, so the nanobind module
// and the C ABI include it with a plain C++ compiler.
//
// Every call takes the CUDA device of the arrays and the caller's stream (a cudaStream_t as
// void*; nullptr is the legacy default stream). Steps are asynchronous: they validate on the host,
// enqueue on the stream and return without synchronizing. Errors are adamcore::Error, with kind
// cuda carrying CUDA's own text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "adamcore/core.hpp"

namespace adamcore {
struct BlockwiseTensorRef;  // cpp/src/cpu_blockwise.h
}

namespace adamcore::cuda {

// Why the backend cannot run here ("" when it can): no driver, a driver too old for this build,
// or no device. Probed once per process.
std::string unavailable_reason();

// CUDA devices this process sees (0 when unavailable).
int device_count();

struct DeviceInfo {
    int index;
    std::string name;
    int major, minor;        // compute capability
    size_t total_memory;     // bytes
    int multiprocessors;
};
std::vector<DeviceInfo> devices();

// CUDA runtime version this build links (static runtime), and the driver's (0 without one), as
// CUDA encodes them: 1000 * major + 10 * minor.
int runtime_version();
int driver_version();

// The CUDA device holding ptr, or -1 when it is not device (or managed) memory.
int device_of_pointer(const void* ptr);

// One step over all tensors (device memory of one device), validated first; one kernel launch per
// (param, grad) dtype pair. check_finite reads every grad first (and waits for that check on the
// stream, the only synchronization, and only then).
void adam_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
               size_t hparams_count, bool check_finite, int device, void* stream);

// One step over 8-bit block-quantized state (docs/int8-state.md; tensors as the CPU's
// cpu_adam_step_blockwise takes them, in device memory of one device), validated first; one
// launch per tensor. The finite check is the caller's (first_nonfinite below).
void adam_step_blockwise(const BlockwiseTensorRef* tensors, size_t count,
                         const adamcore_hparams* hparams, size_t hparams_count, int device,
                         void* stream);

// Index of the first array holding inf or NaN, or -1. Waits for the check on the stream.
int64_t first_nonfinite(const ArrayRef* arrays, size_t count, int device, void* stream);

// Roofline probes for the bench (contiguous float32): the step's traffic with trivial arithmetic
// (p += g, m += g, v += g: 4 streams read, 3 written), and a copy.
void stream_probe(float* p, const float* g, float* m, float* v, int64_t n, int device,
                  void* stream);
void copy(float* dst, const float* src, int64_t n, int device, void* stream);

// The params and state of repeated steps, with their device table cached: after the first step a
// step is one launch per dtype pair, with no host-to-device copy unless the grads moved.
// Tensors whose arrays are not all dense in one layout are refused (Error invalid_value): the
// one-shot adam_step takes them every step.
class Plan {
public:
    // tensors' grads are ignored (they come with each step); the arrays must stay alive.
    Plan(const TensorRef* tensors, size_t count, int device);
    ~Plan();
    Plan(const Plan&) = delete;
    Plan& operator=(const Plan&) = delete;

    void step(const ArrayRef* grads, size_t count, const adamcore_hparams* hparams,
              size_t hparams_count, bool check_finite, void* stream);
    size_t size() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace adamcore::cuda
