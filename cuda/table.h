// table.h: the host side of a CUDA update. One builder turns tensors into the device table of
// kernel_args.h, for a one-shot step and for a Plan alike; one rule says which pointers take the
// vector path; the hyperparameter sets are rounded once per step; a table is uploaded and
// launched range by range, one launch per dtype pair.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "adamcore/adamcore.h"
#include "adamcore/core.hpp"
#include "kernel_args.h"
#include "runtime.h"

namespace adamcore::cuda::detail {

// The entries of one (param, grad, state) combo and rounding mode: table entries
// [first, first + count), tiles numbered from 0.
struct Range {
    int combo;     // Combo (combos.h)
    int rounding;  // Rounding (lowp.h)
    DType param;
    int32_t first, count;
    int64_t tiles;
};

// The table on the host, ready to upload, sorted by combo and rounding mode.
struct HostTable {
    std::vector<DeviceTensor> tensors;
    std::vector<int64_t> tile_begin;
    std::vector<const void*> grads;
    std::vector<int64_t> dims;
    std::vector<Range> ranges;
    std::vector<size_t> source;  // entry -> index in the caller's tensors
    std::vector<int64_t> low;    // entry -> offset of its lowest element (dense entries)
};

// True when ptr, an array of dtype `array` in a tensor of param dtype `param`, is aligned for
// the vector path: to a pack of V elements, V = 16 bytes of state (4 floats, or 2 doubles).
bool vector_aligned(DType param, DType array, const void* ptr);

void* lowest(const ArrayRef& a, int64_t low);

// The table of tensors (empty ones left out).
//   hparams given (a one-shot step): grads included; any layout (others take the strided
//     path, as do dense tensors not in C order under stochastic rounding, which counts elements
//     in C order); amsgrad, Kahan summation (with the compensation) and stochastic rounding
//     (with the key of the tensor's seed and the step) as each tensor's hyperparameters say;
//     ranges by (param, grad, state) combo and rounding mode.
//   hparams nullptr (a Plan, before any grad is known): grads left out (grads[] unset; each
//     step checks its grads against the params); amsgrad where a max_exp_avg_sq is given;
//     tensors not dense in one layout refused; ranges by param dtype, as combo_of(param, param).
// Refuses (ErrorKind::unavailable, naming the param) what a Plan does not take: a state dtype
// other than the default, Kahan summation, stochastic rounding (one-shot steps run them).
void require_default_precision(const TensorRef* tensors, size_t count,
                               const adamcore_hparams* hparams);

HostTable build_table(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams);

// Everything in one allocation: tensors | tile_begin | grads | dims | extra (8-byte aligned).
struct Blob {
    std::vector<char> bytes;
    size_t tile_begin, grads, dims, extra;
};

template <class T>
void append(std::vector<char>& out, const T* data, size_t count) {
    const char* bytes = reinterpret_cast<const char*>(data);
    if (count) out.insert(out.end(), bytes, bytes + count * sizeof(T));
    out.resize((out.size() + 7) / 8 * 8);  // the next part starts 8-byte aligned
}

Blob serialize(const HostTable& t, const std::vector<char>& extra);

// Both coefficient types of a step: by value when few, else also as bytes to upload.
struct StepSets {
    std::vector<CoeffSet<float>> f32;
    std::vector<CoeffSet<double>> f64;
    bool inline_sets;
    std::vector<char> bytes;  // f32 then f64 (8-byte aligned), uploaded when !inline_sets
    size_t f64_at = 0;

    StepSets(const adamcore_hparams* hparams, size_t count);
};

// Device addresses of a table's parts; sets_dev is the uploaded StepSets bytes (or nullptr).
struct DeviceTable {
    const DeviceTensor* tensors;
    const int64_t* tile_begin;
    const void* const* grads;
    const int64_t* dims;
    const char* sets_dev;
};

// One launch: the range's entries of t, with the sets in the range's arithmetic type.
void launch(const Range& r, const DeviceTable& t, const StepSets& sets, cudaStream_t stream);

// Uploads a one-shot table (and the sets when they do not fit the arguments), launches every
// range and frees the upload, all in stream order.
void run_one_shot(const HostTable& table, const StepSets& sets, cudaStream_t stream, int device);

}  // namespace adamcore::cuda::detail
