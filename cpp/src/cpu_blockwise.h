// cpu_blockwise.h: the Adam step over 8-bit block-quantized state (blockwise.h) on the CPU: its
// tensors, its per-SIMD-level kernel table (cpu_blockwise.cpp, compiled once per level like
// cpu_kernels.cpp) and the step that validates, then runs the kernels over blocks in parallel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "adamcore/adamcore.h"
#include "adamcore/blockwise.h"
#include "adamcore/combos.h"
#include "adamcore/core.hpp"
#include "adamcore/update.h"

namespace adamcore {

// The element type of a state array (codes or absmax), as its caller described it.
enum class StateType : uint8_t { int8, uint8, float32, other };

// A C-contiguous state array: its memory is data[0, numel).
struct StateArray {
    void* data = nullptr;
    StateType type = StateType::other;
    int64_t numel = 0;
    bool contiguous = true;
    const char* type_name = "";  // for messages: the caller's name of its dtype
};

// One parameter with its block-quantized state. param and grad must be C-contiguous; block b
// covers elements [256 b, min(256 (b + 1), n)) of the flattened param.
struct BlockwiseTensorRef {
    ArrayRef param, grad;
    StateArray exp_avg;             // int8 codes, numel(param)
    StateArray exp_avg_sq;          // uint8 codes, numel(param)
    StateArray exp_avg_absmax;      // float32, quant_blocks(numel(param))
    StateArray exp_avg_sq_absmax;   // float32, quant_blocks(numel(param))
    size_t hparams_index = 0;
};

// True when an array with these extents and element strides (nullptr: C order) is C-contiguous.
bool c_contiguous(int32_t ndim, const int64_t* shape, const int64_t* strides);

// Every check (dtypes, sizes, block counts, contiguity, overlap, hparams; amsgrad refused) for
// all tensors, before anything is written. Throws Error.
void validate_blockwise_step(const BlockwiseTensorRef* tensors, size_t count,
                             const adamcore_hparams* hparams, size_t hparams_count);

// One Adam step over block-quantized state: validates everything, optionally checks every grad
// for inf/NaN (read-only), then dequantizes, updates and requantizes each block in one pass,
// the blocks shared among the threads.
void cpu_adam_step_blockwise(const BlockwiseTensorRef* tensors, size_t count,
                             const adamcore_hparams* hparams, size_t hparams_count,
                             bool check_finite);

namespace cpu {

// The pointers of one tensor's step, validated.
struct BlockwiseTensor {
    void* param;
    const void* grad;
    int8_t* m_codes;
    uint8_t* v_codes;
    float* m_absmax;
    float* v_absmax;
    int64_t n;
};

// Steps blocks [block_begin, block_end) of one tensor.
using BlockwiseFn = void (*)(const BlockwiseTensor&, int64_t block_begin, int64_t block_end,
                             const Coeffs<float>&);

struct BlockwiseTable {
    const char* name;
    BlockwiseFn step[default_state_combos][2];  // [Combo (combos.h); f64 is empty][l2]
};

extern const BlockwiseTable baseline_blockwise;
extern const BlockwiseTable avx2_blockwise;
extern const BlockwiseTable avx512_blockwise;

// The table of the SIMD level in use (the one simd_dispatch.cpp picked for the dense kernels).
const BlockwiseTable& active_blockwise();

}  // namespace cpu
}  // namespace adamcore
