// backend.cpp: the CUDA backend's one-shot entry points (adam_cuda.hpp): a step, the finite
// check and the bench's probes. Each validates on the host, enqueues on the caller's stream and
// returns without synchronizing (the finite check waits for its answer, on that stream only).
#include "adam_cuda.hpp"
#include "device.h"
#include "finite_check.h"
#include "launch.h"
#include "table.h"

namespace adamcore::cuda {

using namespace detail;

void adam_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
               size_t hparams_count, bool check_finite, int device, void* stream) {
    require_device(device);
    validate_step(tensors, count, hparams, hparams_count);
    check_index_range(count);
    const auto s = static_cast<cudaStream_t>(stream);
    DeviceGuard guard(device);
    if (check_finite) check_finite_grads(tensors, count, device, s);
    run_one_shot(build_table(tensors, count, hparams), StepSets(hparams, hparams_count), s, device);
}

int64_t first_nonfinite(const ArrayRef* arrays, size_t count, int device, void* stream) {
    require_device(device);
    for (size_t i = 0; i < count; ++i)
        if (numel(arrays[i]) > 0 && !arrays[i].data)
            fail(ErrorKind::invalid_value, "array " + std::to_string(i) + " is NULL");
    return first_nonfinite_on(arrays, count, device, static_cast<cudaStream_t>(stream));
}

namespace {
bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }
}  // namespace

void stream_probe(float* p, const float* g, float* m, float* v, int64_t n, int device, void* stream) {
    require_device(device);
    if (n <= 0) return;
    DeviceGuard guard(device);
    const bool vector = aligned16(p) && aligned16(g) && aligned16(m) && aligned16(v);
    const cudaError_t err = launch_stream_probe(p, g, m, v, n, vector, static_cast<cudaStream_t>(stream));
    if (err != cudaSuccess) fail_cuda(err, "the stream probe's launch");
}

void copy(float* dst, const float* src, int64_t n, int device, void* stream) {
    require_device(device);
    if (n <= 0) return;
    DeviceGuard guard(device);
    const bool vector = aligned16(dst) && aligned16(src);
    const cudaError_t err = launch_copy(dst, src, n, vector, static_cast<cudaStream_t>(stream));
    if (err != cudaSuccess) fail_cuda(err, "the copy kernel's launch");
}

}  // namespace adamcore::cuda
