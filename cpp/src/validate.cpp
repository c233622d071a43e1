// validate.cpp: every check the core makes before it writes (docs/errors.md), for all backends.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "adamcore/core.hpp"

namespace adamcore {

const char* dtype_name(DType dtype) {
    switch (dtype) {
        case DType::float16: return "float16";
        case DType::bfloat16: return "bfloat16";
        case DType::float32: return "float32";
        case DType::float64: return "float64";
    }
    return "unknown";
}

size_t dtype_size(DType dtype) {
    switch (dtype) {
        case DType::float16:
        case DType::bfloat16: return 2;
        case DType::float32: return 4;
        case DType::float64: return 8;
    }
    return 0;
}

DType state_dtype_for(DType param) {
    return param == DType::float64 ? DType::float64 : DType::float32;
}

bool state_dtype_ok(DType param, DType state) {
    if (state == state_dtype_for(param) || state == param) return true;
    return state == DType::bfloat16 && (param == DType::float16 || param == DType::float32);
}

namespace {

[[noreturn]] void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

std::string number(double x) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", x);
    return buf;
}

// Formats a shape as Python prints a tuple: (), (5,), (2, 3).
std::string shape_text(const ArrayRef& a) {
    std::string s = "(";
    for (int32_t d = 0; d < a.ndim; ++d) {
        if (d) s += ", ";
        s += std::to_string(a.shape[d]);
    }
    return s + (a.ndim == 1 ? ",)" : ")");
}

bool same_shape(const ArrayRef& a, const ArrayRef& b) {
    return a.ndim == b.ndim && std::equal(a.shape, a.shape + a.ndim, b.shape);
}

std::string nth(const char* name, size_t i) { return std::string(name) + " " + std::to_string(i); }

int64_t element_count(const ArrayRef& a, size_t i) {
    int64_t n = 1;
    for (int32_t d = 0; d < a.ndim; ++d) {
        if (a.shape[d] < 0) fail(ErrorKind::invalid_value, nth("param", i) + " has a negative extent");
        if (a.shape[d] != 0 && n > std::numeric_limits<int64_t>::max() / a.shape[d])
            fail(ErrorKind::invalid_value,
                 nth("param", i) + " has more elements than int64 can count");
        n *= a.shape[d];
    }
    return n;
}

// Lowest and one-past-highest element offsets a non-empty array touches (its memory footprint).
void footprint(const ArrayRef& a, int64_t* low, int64_t* high) {
    *low = 0;
    *high = 1;
    for (int32_t d = 0; d < a.ndim; ++d) {
        const int64_t reach = (a.shape[d] - 1) * stride_of(a, d);
        (reach < 0 ? *low : *high) += reach;
    }
}

// An array the step writes must not alias itself: no zero stride over an extent > 1.
void check_no_self_overlap(const ArrayRef& a, const char* name, size_t i) {
    for (int32_t d = 0; d < a.ndim; ++d)
        if (a.shape[d] > 1 && stride_of(a, d) == 0)
            fail(ErrorKind::invalid_value,
                 nth(name, i) + " has a zero stride (a broadcast view); the step cannot write it");
}

bool ranges_overlap(const ArrayRef& a, const ArrayRef& b) {
    int64_t a_low, a_high, b_low, b_high;
    footprint(a, &a_low, &a_high);
    footprint(b, &b_low, &b_high);
    const char* a0 = static_cast<const char*>(a.data);
    const char* b0 = static_cast<const char*>(b.data);
    const auto sa = static_cast<int64_t>(dtype_size(a.dtype));
    const auto sb = static_cast<int64_t>(dtype_size(b.dtype));
    return a0 + a_low * sa < b0 + b_high * sb && b0 + b_low * sb < a0 + a_high * sa;
}

bool grad_dtype_ok(DType param, DType grad) {
    if (grad == param) return true;
    return grad == DType::float32 && (param == DType::float16 || param == DType::bfloat16);
}

struct Named {
    const ArrayRef* array;
    const char* name;
    bool written;
};

// Messages are built only on failure: this runs for every tensor of every step.
void validate_tensor(const TensorRef& t, size_t i, const adamcore_hparams* hparams,
                     size_t hparams_count) {
    check_hparams_index(t.hparams_index, hparams_count, i);
    const uint32_t flags = hparams[t.hparams_index].flags;
    const bool amsgrad = flags & ADAMCORE_AMSGRAD;
    const bool kahan = flags & ADAMCORE_KAHAN_SUMMATION;
    if (amsgrad && !t.has_max_exp_avg_sq)
        fail(ErrorKind::invalid_value, nth("max_exp_avg_sq", i) + " is missing (amsgrad is on)");
    const bool half = t.param.dtype == DType::float16 || t.param.dtype == DType::bfloat16;
    if (kahan && !half)
        fail(ErrorKind::invalid_dtype, nth("param", i) + " has dtype " + dtype_name(t.param.dtype) +
                                           "; kahan_summation is for float16 and bfloat16 params");
    if ((flags & ADAMCORE_STOCHASTIC_ROUNDING) && t.param.dtype != DType::bfloat16)
        fail(ErrorKind::invalid_dtype, nth("param", i) + " has dtype " + dtype_name(t.param.dtype) +
                                           "; stochastic_rounding is for bfloat16 params");
    if (kahan && !t.has_compensation)
        fail(ErrorKind::invalid_value,
             nth("compensation", i) + " is missing (kahan_summation is on)");

    const Named arrays[] = {{&t.param, "param", true},
                            {&t.grad, "grad", false},
                            {&t.exp_avg, "exp_avg", true},
                            {&t.exp_avg_sq, "exp_avg_sq", true},
                            {&t.max_exp_avg_sq, "max_exp_avg_sq", true},
                            {&t.compensation, "compensation", true}};
    // param, grad, exp_avg, exp_avg_sq, then those of max_exp_avg_sq and compensation in use
    const Named* used_arrays[6] = {&arrays[0], &arrays[1], &arrays[2], &arrays[3]};
    size_t used = 4;
    if (amsgrad) used_arrays[used++] = &arrays[4];
    if (kahan) used_arrays[used++] = &arrays[5];

    if (t.param.ndim < 0 || t.param.ndim > 64)
        fail(ErrorKind::invalid_value, nth("param", i) + " has " + std::to_string(t.param.ndim) +
                                           " dimensions; adamcore takes 0 to 64");
    const int64_t n = element_count(t.param, i);
    for (size_t k = 1; k < used; ++k) {
        const Named& a = *used_arrays[k];
        if (!same_shape(*a.array, t.param))
            fail(ErrorKind::invalid_value, nth(a.name, i) + " has shape " + shape_text(*a.array) +
                                               " but " + nth("param", i) + " has shape " +
                                               shape_text(t.param));
    }

    if (!grad_dtype_ok(t.param.dtype, t.grad.dtype)) {
        fail(ErrorKind::invalid_dtype, nth("grad", i) + " has dtype " + dtype_name(t.grad.dtype) +
                                           " but " + nth("param", i) + " has dtype " +
                                           dtype_name(t.param.dtype) + "; its grad must be " +
                                           dtype_name(t.param.dtype) + (half ? " or float32" : ""));
    }
    const DType state = t.exp_avg.dtype;
    if (!state_dtype_ok(t.param.dtype, state)) {
        const DType wide = state_dtype_for(t.param.dtype);
        const bool bf16_ok = t.param.dtype == DType::float16 || t.param.dtype == DType::float32;
        fail(ErrorKind::invalid_dtype,
             nth("exp_avg", i) + " has dtype " + dtype_name(state) + "; a " +
                 dtype_name(t.param.dtype) + " parameter keeps its state in " + dtype_name(wide) +
                 (t.param.dtype != wide ? std::string(" or ") + dtype_name(t.param.dtype) : "") +
                 (bf16_ok ? " or bfloat16" : ""));
    }
    for (size_t k = 3; k < used; ++k) {
        const Named& a = *used_arrays[k];
        const DType want = a.array == &t.compensation ? t.param.dtype : state;
        if (a.array->dtype != want)
            fail(ErrorKind::invalid_dtype,
                 nth(a.name, i) + " has dtype " + dtype_name(a.array->dtype) + "; " +
                     (a.array == &t.compensation ? "the compensation takes the param's dtype, "
                                                 : "all state arrays take exp_avg's dtype, ") +
                     dtype_name(want));
    }

    if (n == 0) return;
    for (size_t k = 0; k < used; ++k) {
        const Named& a = *used_arrays[k];
        if (!a.array->data) fail(ErrorKind::invalid_value, nth(a.name, i) + " is NULL");
        if (a.written) check_no_self_overlap(*a.array, a.name, i);
    }
    for (size_t a = 0; a < used; ++a) {
        for (size_t b = a + 1; b < used; ++b) {
            const Named& x = *used_arrays[a];
            const Named& y = *used_arrays[b];
            if (x.written && y.written && ranges_overlap(*x.array, *y.array))
                fail(ErrorKind::invalid_value,
                     nth(x.name, i) + " and " + nth(y.name, i) + " share memory; each needs its own");
        }
    }
}

}  // namespace

void check_hparams_index(size_t index, size_t count, size_t tensor) {
    if (index >= count)
        fail(ErrorKind::invalid_value, nth("tensor", tensor) + " refers to hyperparameter set " +
                                           std::to_string(index) + " of " + std::to_string(count));
}

void validate_hparams(const adamcore_hparams& hp) {
    if (!(std::isfinite(hp.lr) && hp.lr >= 0))
        fail(ErrorKind::invalid_value, "lr must be a finite number >= 0, got " + number(hp.lr));
    if (!(hp.beta1 >= 0 && hp.beta1 < 1))
        fail(ErrorKind::invalid_value, "beta1 must be in [0, 1), got " + number(hp.beta1));
    if (!(hp.beta2 >= 0 && hp.beta2 < 1))
        fail(ErrorKind::invalid_value, "beta2 must be in [0, 1), got " + number(hp.beta2));
    if (!(std::isfinite(hp.eps) && hp.eps >= 0))
        fail(ErrorKind::invalid_value, "eps must be a finite number >= 0, got " + number(hp.eps));
    if (!(std::isfinite(hp.weight_decay) && hp.weight_decay >= 0))
        fail(ErrorKind::invalid_value,
             "weight_decay must be a finite number >= 0, got " + number(hp.weight_decay));
    if (hp.step < 1)
        fail(ErrorKind::invalid_value, "step must be >= 1 (the 1-based index of this update), got " +
                                           std::to_string(hp.step));
    const uint32_t known = ADAMCORE_DECOUPLED_WEIGHT_DECAY | ADAMCORE_DECOUPLE_LR |
                           ADAMCORE_AMSGRAD | ADAMCORE_MAXIMIZE | ADAMCORE_KAHAN_SUMMATION |
                           ADAMCORE_STOCHASTIC_ROUNDING;
    if (hp.flags & ~known)
        fail(ErrorKind::invalid_value, "unknown flag bits " + std::to_string(hp.flags & ~known));
    if ((hp.flags & ADAMCORE_KAHAN_SUMMATION) && (hp.flags & ADAMCORE_STOCHASTIC_ROUNDING))
        fail(ErrorKind::invalid_value,
             "kahan_summation and stochastic_rounding exclude each other: the compensation "
             "already keeps what rounding drops, and random rounding would only add noise to it");
    if ((hp.flags & ADAMCORE_DECOUPLE_LR) && !(std::isfinite(hp.max_lr) && hp.max_lr > 0))
        fail(ErrorKind::invalid_value,
             "decouple_lr needs max_lr, a finite number > 0, got " + number(hp.max_lr));
}

namespace {

// Written arrays of different tensors must not share memory (the same pointer twice in a
// multi-tensor call, overlapping buffers): an element would be updated twice, racing between
// threads. Checked exactly for arrays without gaps, whose byte range is their memory; arrays
// with gaps are left to the caller (the Python front end tests them exactly, element by element).
void check_tensors_disjoint(const TensorRef* tensors, size_t count) {
    std::vector<WrittenSpan> spans;
    spans.reserve(count * 5);
    for (size_t i = 0; i < count; ++i) {
        const TensorRef& t = tensors[i];
        const std::pair<const ArrayRef*, const char*> written[] = {
            {&t.param, "param"}, {&t.exp_avg, "exp_avg"}, {&t.exp_avg_sq, "exp_avg_sq"},
            {t.has_max_exp_avg_sq ? &t.max_exp_avg_sq : nullptr, "max_exp_avg_sq"},
            {t.has_compensation ? &t.compensation : nullptr, "compensation"}};
        for (const auto& [a, name] : written) {
            if (!a) continue;
            const int64_t n = numel(*a);
            int64_t low = 0, high = 0;
            footprint(*a, &low, &high);
            if (n == 0 || high - low != n) continue;  // empty, or with gaps
            const auto size = static_cast<int64_t>(dtype_size(a->dtype));
            const char* base = static_cast<const char*>(a->data);
            spans.push_back({base + low * size, base + high * size, i, name});
        }
    }
    require_disjoint(spans, /*across_tensors_only=*/true);
}

}  // namespace

void require_disjoint(std::vector<WrittenSpan>& spans, bool across_tensors_only) {
    std::sort(spans.begin(), spans.end(),
              [](const WrittenSpan& x, const WrittenSpan& y) { return x.begin < y.begin; });
    size_t reach = 0;  // the span reaching furthest so far: the one a later start can fall in
    for (size_t k = 1; k < spans.size(); ++k) {
        const WrittenSpan& prev = spans[reach];
        const WrittenSpan& next = spans[k];
        if (next.begin < prev.end && !(across_tensors_only && next.tensor == prev.tensor)) {
            const bool in_order = prev.tensor <= next.tensor;
            const WrittenSpan& first = in_order ? prev : next;
            const WrittenSpan& second = in_order ? next : prev;
            fail(ErrorKind::invalid_value,
                 nth(first.name, first.tensor) + " and " + nth(second.name, second.tensor) +
                     " share memory, so an element would be updated twice; pass separate arrays");
        }
        if (next.end > prev.end) reach = k;
    }
}

void validate_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
                   size_t hparams_count) {
    if (count > 0 && !tensors) fail(ErrorKind::invalid_value, "tensors is NULL");
    if (hparams_count > 0 && !hparams) fail(ErrorKind::invalid_value, "hparams is NULL");
    for (size_t h = 0; h < hparams_count; ++h) validate_hparams(hparams[h]);

    for (size_t i = 0; i < count; ++i) validate_tensor(tensors[i], i, hparams, hparams_count);
    if (count > 1) check_tensors_disjoint(tensors, count);
}

bool dense_layout(const ArrayRef* const* arrays, size_t used, int64_t* low) {
    const ArrayRef& p = *arrays[0];
    for (size_t k = 1; k < used; ++k)
        for (int32_t d = 0; d < p.ndim; ++d)
            if (p.shape[d] > 1 && stride_of(*arrays[k], d) != stride_of(p, d)) return false;
    std::vector<std::pair<int64_t, int64_t>> dims;  // (|stride|, extent) of extents > 1
    *low = 0;
    for (int32_t d = 0; d < p.ndim; ++d) {
        if (p.shape[d] <= 1) continue;
        const int64_t s = stride_of(p, d);
        dims.emplace_back(s < 0 ? -s : s, p.shape[d]);
        if (s < 0) *low += (p.shape[d] - 1) * s;
    }
    std::sort(dims.begin(), dims.end());
    int64_t expected = 1;
    for (const auto& [stride, extent] : dims) {
        if (stride != expected) return false;
        expected *= extent;
    }
    return true;
}

}  // namespace adamcore
