// table.cpp: building, uploading and launching the CUDA update's table (table.h).
#include "table.h"

#include <algorithm>
#include <string>

#include "adamcore/combos.h"
#include "adamcore/lowp.h"
#include "adamcore/strided.h"
#include "adamcore/update.h"
#include "device.h"
#include "launch.h"
#include "memory.h"

namespace adamcore::cuda::detail {

bool vector_aligned(DType param, DType array, const void* ptr) {
    const size_t pack = param == DType::float64 ? 2 : 4;
    return reinterpret_cast<uintptr_t>(ptr) % (pack * dtype_size(array)) == 0;
}

void* lowest(const ArrayRef& a, int64_t low) {
    return static_cast<char*>(a.data) + low * static_cast<int64_t>(dtype_size(a.dtype));
}

namespace {

int64_t tile_elements_for(DType param) {
    return param == DType::float64 ? tile_elements<double>() : tile_elements<float>();
}

// A range's key: its combo and rounding mode.
int range_key(int combo, int rounding) { return combo * rounding_count + rounding; }

// Sorts the entries by key (range_key, stable) and numbers each key's tiles from 0.
void finish_ranges(HostTable& t, const std::vector<int>& keys, const std::vector<DType>& params) {
    std::vector<size_t> order(t.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return keys[a] < keys[b]; });
    HostTable sorted;
    sorted.dims = std::move(t.dims);
    for (size_t i : order) {
        const DType param = params[i];
        if (sorted.ranges.empty() ||
            range_key(sorted.ranges.back().combo, sorted.ranges.back().rounding) != keys[i])
            sorted.ranges.push_back({keys[i] / rounding_count, keys[i] % rounding_count, param,
                                     static_cast<int32_t>(sorted.tensors.size()), 0, 0});
        Range& r = sorted.ranges.back();
        const DeviceTensor& d = t.tensors[i];
        sorted.tensors.push_back(d);
        sorted.grads.push_back(t.grads[i]);
        sorted.source.push_back(t.source[i]);
        sorted.low.push_back(t.low[i]);
        sorted.tile_begin.push_back(r.tiles);
        const int64_t tile = tile_elements_for(param);
        r.tiles += (d.n + tile - 1) / tile;
        ++r.count;
    }
    t = std::move(sorted);
}

}  // namespace

void require_default_precision(const TensorRef* tensors, size_t count,
                               const adamcore_hparams* hparams) {
    for (size_t i = 0; i < count; ++i) {
        const TensorRef& t = tensors[i];
        const bool lowp_flags = hparams && (hparams[t.hparams_index].flags &
                                            (ADAMCORE_KAHAN_SUMMATION | ADAMCORE_STOCHASTIC_ROUNDING));
        if (lowp_flags || t.exp_avg.dtype != state_dtype_for(t.param.dtype))
            fail(ErrorKind::unavailable,
                 "param " + std::to_string(i) +
                     ": a CUDA plan takes only the default state dtype, without "
                     "kahan_summation or stochastic_rounding (step those without a plan)");
    }
}

HostTable build_table(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams) {
    const bool with_grads = hparams != nullptr;
    HostTable table;
    std::vector<int> keys;
    std::vector<DType> params;
    for (size_t i = 0; i < count; ++i) {
        const TensorRef& t = tensors[i];
        const int64_t n = numel(t.param);
        if (n == 0) continue;
        const bool amsgrad = with_grads ? (hparams[t.hparams_index].flags & ADAMCORE_AMSGRAD) != 0
                                        : t.has_max_exp_avg_sq;
        const int rounding = with_grads ? rounding_of(hparams[t.hparams_index].flags) : round_nearest;
        const bool kahan = rounding == round_kahan;
        // param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, compensation; a plan leaves the
        // grad out
        const ArrayRef* all[6] = {&t.param, &t.grad, &t.exp_avg, &t.exp_avg_sq,
                                  amsgrad ? &t.max_exp_avg_sq : &t.param,
                                  kahan ? &t.compensation : &t.param};
        const ArrayRef* layout[6];
        size_t used = 0;
        for (size_t k = 0; k < 6; ++k)
            if ((k != 1 || with_grads) && (k != 4 || amsgrad) && (k != 5 || kahan)) layout[used++] = all[k];
        DeviceTensor d{};
        d.n = n;
        d.set = static_cast<int32_t>(t.hparams_index);
        d.ndim = t.param.ndim;
        d.key = rounding == round_stochastic ? rounding_key(t.seed, hparams[t.hparams_index].step) : 0u;
        int64_t low = 0;
        const void* grad = nullptr;
        bool dense = dense_layout(layout, used, &low);
        // stochastic rounding counts elements in C order: other dense layouts walk strided
        if (dense && rounding == round_stochastic && !c_order(t.param)) dense = false;
        if (dense) {
            d.p = lowest(t.param, low);
            d.m = lowest(t.exp_avg, low);
            d.v = lowest(t.exp_avg_sq, low);
            d.vmax = amsgrad ? lowest(t.max_exp_avg_sq, low) : nullptr;
            d.comp = kahan ? lowest(t.compensation, low) : nullptr;
            if (with_grads) grad = lowest(t.grad, low);
            bool vector = true;
            for (size_t k = 0; k < used; ++k)
                vector = vector && vector_aligned(t.param.dtype, layout[k]->dtype, lowest(*layout[k], low));
            d.kind = vector ? kVector : kScalar;
        } else if (!with_grads) {
            fail(ErrorKind::invalid_value, "param " + std::to_string(i) +
                                               " and its state are not dense in one layout; "
                                               "step it without a plan");
        } else {
            d.kind = kStrided;
            d.p = t.param.data;
            grad = t.grad.data;
            d.m = t.exp_avg.data;
            d.v = t.exp_avg_sq.data;
            d.vmax = amsgrad ? t.max_exp_avg_sq.data : nullptr;
            d.comp = kahan ? t.compensation.data : nullptr;
            d.dims = static_cast<int64_t>(table.dims.size());
            table.dims.insert(table.dims.end(), t.param.shape, t.param.shape + t.param.ndim);
            for (size_t k = 0; k < 6; ++k) append_strides(*all[k], table.dims);
        }
        table.tensors.push_back(d);
        table.grads.push_back(grad);
        table.source.push_back(i);
        table.low.push_back(low);
        params.push_back(t.param.dtype);
        keys.push_back(with_grads ? range_key(combo_of(t.param.dtype, t.grad.dtype, t.exp_avg.dtype), rounding)
                                  : range_key(combo_of(t.param.dtype, t.param.dtype), round_nearest));
    }
    finish_ranges(table, keys, params);
    return table;
}

Blob serialize(const HostTable& t, const std::vector<char>& extra) {
    Blob b;
    append(b.bytes, t.tensors.data(), t.tensors.size());
    b.tile_begin = b.bytes.size();
    append(b.bytes, t.tile_begin.data(), t.tile_begin.size());
    b.grads = b.bytes.size();
    append(b.bytes, t.grads.data(), t.grads.size());
    b.dims = b.bytes.size();
    append(b.bytes, t.dims.data(), t.dims.size());
    b.extra = b.bytes.size();
    append(b.bytes, extra.data(), extra.size());
    return b;
}

namespace {

// The per-step scalars of every hyperparameter set, in arithmetic type S.
template <class S>
std::vector<CoeffSet<S>> coeff_sets(const adamcore_hparams* hparams, size_t count) {
    std::vector<CoeffSet<S>> sets(count);
    for (size_t h = 0; h < count; ++h) {
        sets[h].c = round_coeffs<S>(make_coeffs(hparams[h]));
        sets[h].l2 = uses_l2(hparams[h]);
        sets[h].amsgrad = (hparams[h].flags & ADAMCORE_AMSGRAD) != 0;
    }
    return sets;
}

template <class S>
void launch_range(const Range& r, const DeviceTable& t, const std::vector<CoeffSet<S>>& sets,
                  size_t sets_offset, cudaStream_t stream) {
    LaunchArgs<S> a{};
    a.tensors = t.tensors + r.first;
    a.tile_begin = t.tile_begin + r.first;
    a.grads = t.grads + r.first;
    a.dims = t.dims;
    a.tiles = r.tiles;
    a.count = r.count;
    if (sets.size() <= kInlineSets) {
        a.sets_inline = 1;
        std::copy(sets.begin(), sets.end(), a.sets);
    } else {
        a.sets_inline = 0;
        a.sets_global = reinterpret_cast<const CoeffSet<S>*>(t.sets_dev + sets_offset);
    }
    const cudaError_t err = launch_update(r.combo, r.rounding, a, stream);
    if (err == cudaErrorInvalidValue)
        fail(ErrorKind::internal, "no CUDA kernel for combo " + std::to_string(r.combo) +
                                      " in rounding mode " + std::to_string(r.rounding));
    if (err != cudaSuccess) fail_cuda(err, "the update kernel's launch");
}

}  // namespace

StepSets::StepSets(const adamcore_hparams* hparams, size_t count)
    : f32(coeff_sets<float>(hparams, count)),
      f64(coeff_sets<double>(hparams, count)),
      inline_sets(count <= kInlineSets) {
    if (!inline_sets) {
        append(bytes, f32.data(), f32.size());
        f64_at = bytes.size();
        append(bytes, f64.data(), f64.size());
    }
}

void launch(const Range& r, const DeviceTable& t, const StepSets& sets, cudaStream_t stream) {
    if (r.combo == f64)
        launch_range(r, t, sets.f64, sets.f64_at, stream);
    else
        launch_range(r, t, sets.f32, 0, stream);
}

void run_one_shot(const HostTable& table, const StepSets& sets, cudaStream_t stream, int device) {
    if (table.tensors.empty()) return;
    const Blob blob = serialize(table, sets.bytes);
    StreamBuffer buffer(blob.bytes.size(), stream, device_state(device));
    upload(buffer.ptr, blob.bytes.data(), blob.bytes.size(), stream);
    const char* base = static_cast<const char*>(buffer.ptr);
    const DeviceTable t{reinterpret_cast<const DeviceTensor*>(base),
                        reinterpret_cast<const int64_t*>(base + blob.tile_begin),
                        reinterpret_cast<const void* const*>(base + blob.grads),
                        reinterpret_cast<const int64_t*>(base + blob.dims),
                        sets.inline_sets ? nullptr : base + blob.extra};
    for (const Range& r : table.ranges) launch(r, t, sets, stream);
}

}  // namespace adamcore::cuda::detail
