// kernel_args.h: what the host hands the CUDA kernels (adam_kernels.cuh), shared by the host code
// that builds it (table.cpp, finite_check.cpp) and the device code that reads it.
//
// The update's table: one DeviceTensor per non-empty tensor (sorted by dtype pair), the index of
// each tensor's first tile, and the grad pointers (a separate array: they change between steps
// while everything else stays). A tile is kThreads * kUnroll 16-byte vectors of state; block b
// handles tiles b, b + gridDim.x, ... and finds its tensor by binary search over the tile
// starts. The per-step scalars of each hyperparameter set (param group) travel by value in the
// kernel's arguments when few; a tensor names its set. Indices are 64-bit throughout.
#pragma once

#include <cstdint>

#include "adamcore/update.h"

namespace adamcore::cuda {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr int kInlineSets = 16;                 // hyperparameter sets passed by value
constexpr int64_t kMaxGrid = int64_t{1} << 20;  // blocks; more tiles are grid-strided
constexpr int64_t kCheckTile = int64_t{kThreads} * 16;  // elements per tile of the finite check

// Three element paths, chosen per tensor (uniform within a block):
//   vector  all arrays dense in one layout and every pointer aligned to its 16-byte state pack
//           (vector_aligned in table.h): each thread loads kUnroll packs of every array first;
//   scalar  dense but not aligned: one element per thread and iteration, still coalesced;
//   strided any other layout: each element's offsets from its logical index and the strides.
enum Kind : int32_t { kVector = 0, kScalar = 1, kStrided = 2 };

struct DeviceTensor {
    void* p;  // dense: the lowest element of each array; strided: the array's data pointer
    void* m;
    void* v;
    void* vmax;     // nullptr without amsgrad
    void* comp;     // Kahan summation's compensation (the param's dtype), else nullptr
    int64_t n;      // elements
    int64_t dims;   // strided: where its shape, then the strides of p, g, m, v, vmax, comp, start
    int32_t set;    // hyperparameter set
    int32_t kind;
    int32_t ndim;
    uint32_t key;   // stochastic rounding: rounding_key(seed, step) (lowp.h), else 0
};

// Elements per tile: kUnroll 16-byte packs of state per thread.
template <class S>
ADAMCORE_HD constexpr int64_t tile_elements() {
    return int64_t{kThreads} * kUnroll * (16 / static_cast<int64_t>(sizeof(S)));
}

template <class S>
struct CoeffSet {
    Coeffs<S> c;
    int32_t l2;
    int32_t amsgrad;
};

// The arguments of one update launch (one (param, grad, state) combo and rounding mode).
template <class S>
struct LaunchArgs {
    const DeviceTensor* tensors;  // this launch's tensors
    const int64_t* tile_begin;    // first tile of each
    const void* const* grads;     // grad pointer of each (the lowest element when dense)
    const int64_t* dims;          // shapes and strides of strided tensors
    int64_t tiles;
    int32_t count;
    int32_t sets_inline;          // sets[] holds the hyperparameters, else sets_global
    const CoeffSet<S>* sets_global;
    CoeffSet<S> sets[kInlineSets];
};

// One array of the finite check.
struct CheckArray {
    const void* data;  // dense: the lowest element; strided: the data pointer
    int64_t n;
    int64_t dims;      // strided: shape then strides in the dims array
    int32_t dtype;     // DType
    int32_t ndim;
    int32_t index;     // position in the caller's list
    int32_t strided;
};

// The arguments of the finite check's launch; *result ends as the lowest bad index, or stays.
struct CheckArgs {
    const CheckArray* arrays;
    const int64_t* tile_begin;
    const int64_t* dims;
    int64_t tiles;
    int32_t count;
    int* result;
};

}  // namespace adamcore::cuda
