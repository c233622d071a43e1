// strided.h: the elements of a strided view in C order of their logical index, for K arrays of
// one shape at once (param, grad and state in a step; one array in a check or a norm). strides
// holds K rows of ndim strides, in elements. Offsets are 64-bit throughout.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "adamcore/core.hpp"
#include "adamcore/update.h"  // ADAMCORE_HD

namespace adamcore {

// The offsets of logical element i in each of the K arrays (host and device: a CUDA thread
// computes its element's offsets alone).
template <int K>
ADAMCORE_HD void element_offsets(int64_t i, int32_t ndim, const int64_t* shape,
                                 const int64_t* strides, int64_t* offsets) {
    for (int k = 0; k < K; ++k) offsets[k] = 0;
    for (int32_t d = ndim - 1; d >= 0; --d) {
        const int64_t index = i % shape[d];
        i /= shape[d];
        for (int k = 0; k < K; ++k) offsets[k] += index * strides[k * ndim + d];
    }
}

// Calls run(offsets, count) for each run of logical elements [begin, end) along the last
// dimension: element j of a run lies at offsets[k] + j * strides[k * ndim + ndim - 1] in array
// k. A 0-d view is one run of one element. (Host only: it carries an index between runs.)
template <int K, class Run>
void walk_runs(int32_t ndim, const int64_t* shape, const int64_t* strides, int64_t begin,
               int64_t end, const Run& run) {
    int64_t offsets[K] = {};
    if (begin >= end) return;
    if (ndim == 0) {
        run(offsets, int64_t{1});
        return;
    }
    int64_t small[64];
    std::vector<int64_t> large;
    int64_t* index = small;
    if (ndim > 64) {
        large.resize(static_cast<size_t>(ndim));
        index = large.data();
    }
    int64_t rest = begin;
    for (int32_t d = ndim - 1; d >= 0; --d) {
        index[d] = rest % shape[d];
        rest /= shape[d];
    }
    const int32_t last = ndim - 1;
    while (begin < end) {
        for (int k = 0; k < K; ++k) {
            offsets[k] = 0;
            for (int32_t d = 0; d < ndim; ++d) offsets[k] += index[d] * strides[k * ndim + d];
        }
        const int64_t count = std::min(shape[last] - index[last], end - begin);
        run(static_cast<const int64_t*>(offsets), count);
        begin += count;
        index[last] += count;
        for (int32_t d = last; d > 0 && index[d] == shape[d]; --d) {
            index[d] = 0;
            ++index[d - 1];
        }
    }
}

// Calls visit(offsets) for every element of [begin, end), in order.
template <int K, class Visit>
void walk_elements(int32_t ndim, const int64_t* shape, const int64_t* strides, int64_t begin,
                   int64_t end, const Visit& visit) {
    walk_runs<K>(ndim, shape, strides, begin, end, [&](const int64_t* first, int64_t count) {
        int64_t at[K];
        for (int k = 0; k < K; ++k) at[k] = first[k];
        for (int64_t j = 0; j < count; ++j) {
            visit(static_cast<const int64_t*>(at));
            for (int k = 0; k < K; ++k) at[k] += ndim ? strides[k * ndim + ndim - 1] : 0;
        }
    });
}

// The ndim strides of one array (C order when it has none), one row of a strides table.
inline void append_strides(const ArrayRef& a, std::vector<int64_t>& out) {
    for (int32_t d = 0; d < a.ndim; ++d) out.push_back(stride_of(a, d));
}

}  // namespace adamcore
