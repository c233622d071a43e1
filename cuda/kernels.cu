// kernels.cu: every kernel of the CUDA backend, instantiated for its (param, grad, state) combos
// and rounding modes, behind the plain launch functions of launch.h. The only file nvcc compiles,
// so a change elsewhere in the backend rebuilds with the C++ compiler alone.
#include <type_traits>

#include "adam_kernels.cuh"
#include "adamcore/combos.h"
#include "adamcore/lowp.h"
#include "launch.h"
#include "probe_kernels.cuh"

namespace adamcore::cuda::detail {

namespace {

template <class S>
using LaunchFn = cudaError_t (*)(const LaunchArgs<S>&, cudaStream_t);

// Every (combo, rounding mode) the kernels take, by arithmetic type: a mode instantiates only
// where it applies to the combo's param (rounding_applies, combos.h).
template <class S>
struct LaunchTable {
    LaunchFn<S> fn[combo_count][rounding_count] = {};
    LaunchTable() {
        for_each_combo([&](auto combo) {
            constexpr int C = decltype(combo)::value;
            if constexpr (std::is_same_v<typename ComboTypes<C>::S, S>) {
                fill<C, round_nearest>();
                fill<C, round_kahan>();
                fill<C, round_stochastic>();
            }
        });
    }
    template <int C, int Mode>
    void fill() {
        if constexpr (rounding_applies<C>(Mode)) fn[C][Mode] = &launch_adam<C, Mode>;
    }
};

template <class S>
cudaError_t launch_from_table(int combo, int rounding, const LaunchArgs<S>& args, cudaStream_t stream) {
    static const LaunchTable<S> table;
    if (combo < 0 || combo >= combo_count || rounding < 0 || rounding >= rounding_count ||
        !table.fn[combo][rounding])
        return cudaErrorInvalidValue;
    return table.fn[combo][rounding](args, stream);
}

}  // namespace

cudaError_t launch_update(int combo, int rounding, const LaunchArgs<float>& args, cudaStream_t stream) {
    return launch_from_table(combo, rounding, args, stream);
}

cudaError_t launch_update(int combo, int rounding, const LaunchArgs<double>& args, cudaStream_t stream) {
    return launch_from_table(combo, rounding, args, stream);
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
