// finite_check.cpp: the table of the finite check, its upload and launch (finite_check.h).
#include "finite_check.h"

#include <algorithm>
#include <climits>
#include <vector>

#include "adamcore/strided.h"
#include "device.h"
#include "kernel_args.h"
#include "launch.h"
#include "memory.h"
#include "table.h"

namespace adamcore::cuda::detail {

int64_t first_nonfinite_on(const ArrayRef* arrays, size_t count, int device, cudaStream_t stream) {
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
            dims.insert(dims.end(), a.shape, a.shape + a.ndim);
            append_strides(a, dims);
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
    upload(base, bytes.data(), bytes.size(), stream);
    const CheckArgs args{reinterpret_cast<const CheckArray*>(base),
                         reinterpret_cast<const int64_t*>(base + at_tiles),
                         reinterpret_cast<const int64_t*>(base + at_dims), tiles,
                         static_cast<int32_t>(checks.size()), reinterpret_cast<int*>(base + at_result)};
    const cudaError_t err = launch_first_nonfinite(args, stream);
    if (err != cudaSuccess) fail_cuda(err, "the finite check's launch");
    int result = INT_MAX;
    ADAMCORE_CUDA_CHECK(cudaMemcpyAsync(&result, base + at_result, sizeof result,
                                        cudaMemcpyDeviceToHost, stream));
    ADAMCORE_CUDA_CHECK(cudaStreamSynchronize(stream));  // the answer is needed now: this stream only
    return result == INT_MAX ? -1 : result;
}

void check_finite_grads(const TensorRef* tensors, size_t count, int device, cudaStream_t stream) {
    std::vector<ArrayRef> grads(count);
    for (size_t i = 0; i < count; ++i) grads[i] = tensors[i].grad;
    const int64_t bad = first_nonfinite_on(grads.data(), count, device, stream);
    if (bad >= 0) throw nonfinite_grad_error(bad);
}

}  // namespace adamcore::cuda::detail
