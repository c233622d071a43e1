// kernels.cu: every kernel of the CUDA backend, instantiated for its dtype pairs, behind the
// plain launch functions of launch.h. The only file nvcc compiles, so a change elsewhere in the
// backend rebuilds with the C++ compiler alone.
#include "adam_kernels.cuh"
#include "adamcore/combos.h"
#include "launch.h"
#include "probe_kernels.cuh"

namespace adamcore::cuda::detail {

cudaError_t launch_update(int combo, const LaunchArgs<float>& args, cudaStream_t stream) {
    switch (combo) {
        case f32: return launch_adam<float, float, float>(args, stream);
        case f16_f16: return launch_adam<float16, float16, float>(args, stream);
        case f16_f32: return launch_adam<float16, float, float>(args, stream);
        case bf16_bf16: return launch_adam<bfloat16, bfloat16, float>(args, stream);
        case bf16_f32: return launch_adam<bfloat16, float, float>(args, stream);
    }
    return cudaErrorInvalidValue;
}

cudaError_t launch_update(int combo, const LaunchArgs<double>& args, cudaStream_t stream) {
    if (combo != f64) return cudaErrorInvalidValue;
    return launch_adam<double, double, double>(args, stream);
}

cudaError_t launch_first_nonfinite(const CheckArgs& args, cudaStream_t stream) {
    return cuda::launch_first_nonfinite(args, stream);
}

cudaError_t launch_stream_probe(float* p, const float* g, float* m, float* v, int64_t n,
                                bool vector, cudaStream_t stream) {
    ADAMCORE_LAUNCH(probe_grid(n), kThreads, stream, probe_kernel)(p, g, m, v, n, vector);
    return cudaGetLastError();
}

cudaError_t launch_copy(float* dst, const float* src, int64_t n, bool vector, cudaStream_t stream) {
    ADAMCORE_LAUNCH(probe_grid(n), kThreads, stream, copy_kernel)(dst, src, n, vector);
    return cudaGetLastError();
}

}  // namespace adamcore::cuda::detail
