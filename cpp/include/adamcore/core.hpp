// core.hpp: adamcore's C++ core, with no Python: tensors described by pointer, dtype, shape and
// strides; one call steps all of them. The nanobind module and the C ABI are thin layers on this.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "adamcore/adamcore.h"

namespace adamcore {

enum class DType : uint8_t { float16, bfloat16, float32, float64 };

const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

// A view of the caller's memory. Strides count elements, not bytes (as DLPack does).
struct ArrayRef {
    void* data = nullptr;
    DType dtype = DType::float32;
    int32_t ndim = 0;
    const int64_t* shape = nullptr;
    const int64_t* strides = nullptr;  // nullptr means C-contiguous
};

// Number of elements (shapes already validated: no negative extents, no overflow).
inline int64_t numel(const ArrayRef& a) {
    int64_t n = 1;
    for (int32_t d = 0; d < a.ndim; ++d) n *= a.shape[d];
    return n;
}

// Stride of dimension d in elements, also when strides is nullptr (C order).
inline int64_t stride_of(const ArrayRef& a, int32_t d) {
    if (a.strides) return a.strides[d];
    int64_t stride = 1;
    for (int32_t k = d + 1; k < a.ndim; ++k) stride *= a.shape[k];
    return stride;
}

// True when a dense array is laid out in C order (so memory order is the logical index, which
// stochastic rounding counts by).
inline bool c_order(const ArrayRef& a) {
    int64_t expected = 1;
    for (int32_t d = a.ndim - 1; d >= 0; --d) {
        if (a.shape[d] > 1 && stride_of(a, d) != expected) return false;
        expected *= a.shape[d];
    }
    return true;
}

// One parameter, its gradient and its state. max_exp_avg_sq is used only with ADAMCORE_AMSGRAD,
// compensation (the param's dtype) only with ADAMCORE_KAHAN_SUMMATION, seed only with
// ADAMCORE_STOCHASTIC_ROUNDING. The state arrays' dtype is the state dtype (state_dtype_ok).
struct TensorRef {
    ArrayRef param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq;
    bool has_max_exp_avg_sq = false;
    size_t hparams_index = 0;  // which entry of the call's hyperparameter table applies
    ArrayRef compensation;
    bool has_compensation = false;
    uint64_t seed = 0;
};

// Errors carry a kind that each front end maps to its own (Python exception, C return code).
enum class ErrorKind { invalid_value, invalid_dtype, not_finite, cuda, unavailable, internal };

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
    ErrorKind kind() const { return kind_; }

private:
    ErrorKind kind_;
};

// The error of a step whose finite check found inf or NaN in grad `index` (every backend's).
inline Error nonfinite_grad_error(int64_t index) {
    return Error(ErrorKind::not_finite, "grad " + std::to_string(index) +
                                            " holds inf or NaN (check_finite is on); "
                                            "nothing was updated");
}

// Throws Error(invalid_value) naming the first hyperparameter out of range.
void validate_hparams(const adamcore_hparams& hp);

// Error(invalid_value) unless tensor i's hyperparameter set index is below count.
void check_hparams_index(size_t index, size_t count, size_t tensor);

// The default state dtype for a parameter dtype: float32 for 16-bit parameters.
DType state_dtype_for(DType param);

// True when the kernels keep state of dtype `state` for a param of dtype `param`: the default,
// the param's dtype, or bfloat16 for float16/float32 params.
bool state_dtype_ok(DType param, DType state);

// True when every array has arrays[0]'s strides (over extents > 1) and those lay the elements out
// densely (C, Fortran, any permutation, negative strides); *low is then the offset, in elements,
// from data to the lowest element. The CPU and CUDA steps take such tensors as one flat run.
bool dense_layout(const ArrayRef* const* arrays, size_t used, int64_t* low);

// The bytes [begin, end) of an array a step writes, of tensor `tensor` (name: its role).
struct WrittenSpan {
    const char* begin;
    const char* end;
    size_t tensor;
    const char* name;
};

// Fails (invalid_value, naming both) when two spans share memory: an element would be updated
// twice. With across_tensors_only, spans of one tensor may overlap (checked elsewhere). Sorts spans.
void require_disjoint(std::vector<WrittenSpan>& spans, bool across_tensors_only);

// Every check (docs/errors.md) the core can make (shapes, dtypes, sizes, overlap, hparams), for
// all tensors, before anything is written. Throws Error; the CPU and CUDA steps call it first.
void validate_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
                   size_t hparams_count);

// One Adam step on CPU memory, for all tensors in one parallel region. Contiguous tensors (all
// arrays with the same dense layout) take the vectorized kernels, the others a strided loop.
// With check_finite, every gradient is checked (read-only) before any write.
void cpu_adam_step(const TensorRef* tensors, size_t count, const adamcore_hparams* hparams,
                   size_t hparams_count, bool check_finite);

// Index of the first array (CPU memory, any layout) holding inf or NaN, or -1 if all are finite.
int64_t cpu_first_nonfinite(const ArrayRef* arrays, size_t count);

// Throws the non-finite-grad error when a grad of the tensors (anything with an ArrayRef grad)
// holds inf or NaN; run before any write.
template <class Tensor>
void require_finite_grads(const Tensor* tensors, size_t count) {
    std::vector<ArrayRef> grads(count);
    for (size_t i = 0; i < count; ++i) grads[i] = tensors[i].grad;
    const int64_t bad = cpu_first_nonfinite(grads.data(), count);
    if (bad >= 0) throw nonfinite_grad_error(bad);
}

// Threads of the CPU core: default OMP_NUM_THREADS, else all cores. n >= 1.
int get_num_threads();
void set_num_threads(int n);

// SIMD levels: compiled into this build, runnable on this CPU, and the one in use.
std::vector<std::string> compiled_simd_levels();
std::vector<std::string> supported_simd_levels();
std::string simd_level();
// Use a named level ("" picks the best supported; ADAMCORE_SIMD sets the first choice).
void set_simd_level(const std::string& name);

// Roofline probes for the bench, threaded like the step: the step's access pattern with trivial
// arithmetic (4 streams read, 3 written: p += g, m += g, v += g), and a plain copy.
void cpu_stream_probe(float* p, const float* g, float* m, float* v, int64_t n);
void cpu_copy(float* dst, const float* src, int64_t n);

}  // namespace adamcore
