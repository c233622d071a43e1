/* adamcore.h: the C ABI of adamcore, one Adam/AdamW step for programs that are not Python.
 *
 * Plain C (no C++ types), usable from C, C++, Rust, Julia, ... through FFI. Link the shared
 * library libadamcore; with CMake: find_package(adamcore CONFIG REQUIRED) and the target
 * adamcore::adamcore (`python -m adamcore --cmake-dir` prints where the wheel keeps the package).
 *
 * Errors: every step and setter (the functions returning a status code) validates all of its
 * arguments before it writes a byte. On error nothing was changed, the code is negative
 * (ADAMCORE_ERROR_*) and adamcore_last_error() says why, per thread. Any thread may call any
 * function; concurrent steps must not share arrays.
 *
 * Arrays: contiguous, in the caller's memory, updated in place. A float32 parameter keeps float32
 * state and computes in float32; a float64 parameter keeps float64 state and computes in float64.
 * Every SIMD level (and the CUDA backend) produces the same bits as adamcore's Python API.
 *
 * The update, per element, at step t (1-based) with learning rate lr:
 *   g  = -g                            if ADAMCORE_MAXIMIZE
 *   g  = g + weight_decay * p          if weight_decay != 0 and not decoupled (Adam + L2)
 *   p  = p * (1 - lr * weight_decay)   if ADAMCORE_DECOUPLED_WEIGHT_DECAY (AdamW)
 *   p  = p * (1 - lr / max_lr * weight_decay)   instead, if ADAMCORE_DECOUPLE_LR as well
 *   m  = beta1 * m + (1 - beta1) * g
 *   v  = beta2 * v + (1 - beta2) * g * g
 *   vmax = max(vmax, v)                if ADAMCORE_AMSGRAD (v below stands for vmax then)
 *   p  = p - lr / (1 - beta1^t) * (m / (sqrt(v) / sqrt(1 - beta2^t) + eps))
 */
#ifndef ADAMCORE_H
#define ADAMCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbol visibility for the shared library (only the adamcore_* functions are exported). */
#if defined(_WIN32)
#  if defined(ADAMCORE_BUILDING_LIBRARY)
#    define ADAMCORE_API __declspec(dllexport)
#  else
#    define ADAMCORE_API __declspec(dllimport)
#  endif
#else
#  define ADAMCORE_API __attribute__((visibility("default")))
#endif

/* ---- Version ------------------------------------------------------------------------------- */

/* Version of this header (the package version; CMake checks that they agree). */
#define ADAMCORE_VERSION_MAJOR 0
#define ADAMCORE_VERSION_MINOR 3
#define ADAMCORE_VERSION_PATCH 0
/* The same as one number, major * 10000 + minor * 100 + patch (0.3.0 is 300). */
#define ADAMCORE_VERSION \
    (ADAMCORE_VERSION_MAJOR * 10000 + ADAMCORE_VERSION_MINOR * 100 + ADAMCORE_VERSION_PATCH)
/* The same as text, "major.minor.patch". */
#define ADAMCORE_VERSION_STRING "0.3.0"

/* Version of the loaded library, encoded as ADAMCORE_VERSION. Before 1.0 the ABI may change with
 * the minor version: check adamcore_version() / 100 == ADAMCORE_VERSION / 100 at start-up. */
ADAMCORE_API int adamcore_version(void);

/* Version of the loaded library as text, "major.minor.patch" (a static string). */
ADAMCORE_API const char *adamcore_version_string(void);

/* ---- Hyperparameters ------------------------------------------------------------------------ */

/* Flags of adamcore_hparams.flags, or'ed together. */
#define ADAMCORE_DECOUPLED_WEIGHT_DECAY 0x1u /* AdamW: decay the parameter, not the gradient */
#define ADAMCORE_DECOUPLE_LR 0x2u            /* fully decoupled: decay by lr / max_lr * wd (implies 0x1) */
#define ADAMCORE_AMSGRAD 0x4u                /* keep max_exp_avg_sq and normalize by it */
#define ADAMCORE_MAXIMIZE 0x8u               /* ascend instead of descend */
/* Low precision (adamcore_adam_step_tensors only; docs/update.md): */
#define ADAMCORE_KAHAN_SUMMATION 0x10u      /* 16-bit params: carry each update's rounding error
                                                in a compensation buffer of the param's dtype */
#define ADAMCORE_STOCHASTIC_ROUNDING 0x20u  /* bfloat16 params: round the new param up or down at
                                                random (unbiased), from a hash of (seed, step,
                                                element); not together with Kahan summation */

/* Hyperparameters of one step (the same for every element and every tensor of a call). */
typedef struct adamcore_hparams {
    double lr;           /* learning rate of this step: finite, >= 0 */
    double beta1;        /* decay of the first moment, in [0, 1) */
    double beta2;        /* decay of the second moment, in [0, 1) */
    double eps;          /* added to the denominator for stability: finite, >= 0 */
    double weight_decay; /* L2 (Adam) or decoupled (AdamW) decay coefficient: finite, >= 0 */
    double max_lr;       /* the schedule's peak lr; read only with ADAMCORE_DECOUPLE_LR (> 0) */
    int64_t step;        /* t: the 1-based index of this update (>= 1); the caller counts */
    uint32_t flags;      /* ADAMCORE_* flags above, or'ed together; unknown bits are an error */
} adamcore_hparams;

/* torch's Adam defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay, max_lr 1e-3, step 1,
 * no flags. Start from this and set the fields you need, so new fields get their defaults. */
ADAMCORE_API adamcore_hparams adamcore_hparams_default(void);

/* ---- Errors --------------------------------------------------------------------------------- */

/* Return codes: 0 is success, errors are negative. */
#define ADAMCORE_OK 0
#define ADAMCORE_ERROR_INVALID_VALUE (-1)  /* a hyperparameter, pointer, size or setting is wrong */
#define ADAMCORE_ERROR_INVALID_DTYPE (-2)  /* a dtype or dtype combination is not supported */
#define ADAMCORE_ERROR_NOT_FINITE (-3)     /* a gradient holds inf or NaN (finite check requested) */
#define ADAMCORE_ERROR_CUDA (-4)           /* a CUDA call failed; the message has CUDA's text */
#define ADAMCORE_ERROR_UNAVAILABLE (-5)    /* the backend was not built into this library */
#define ADAMCORE_ERROR_INTERNAL (-6)       /* a bug or an allocation failure */

/* Why this thread's latest int-returning adamcore call failed; "" if it succeeded (or none was
 * made). Never NULL; the text stays valid until this thread's next adamcore call. */
ADAMCORE_API const char *adamcore_last_error(void);

/* ---- CPU steps ------------------------------------------------------------------------------ */

/* One step on n contiguous float32 elements, in place. max_exp_avg_sq is read and written only
 * with ADAMCORE_AMSGRAD (pass NULL otherwise). Pointers may be NULL when n == 0.
 * Returns 0, or a negative code with nothing written. */
ADAMCORE_API int adamcore_adam_step_f32(float *param, const float *grad, float *exp_avg,
                                        float *exp_avg_sq, float *max_exp_avg_sq, int64_t n,
                                        const adamcore_hparams *hp);

/* The same on n contiguous float64 elements (state and arithmetic in float64). */
ADAMCORE_API int adamcore_adam_step_f64(double *param, const double *grad, double *exp_avg,
                                        double *exp_avg_sq, double *max_exp_avg_sq, int64_t n,
                                        const adamcore_hparams *hp);

/* ---- 8-bit blockwise state (docs/int8-state.md) ---------------------------------------------- */

/* Elements per quantization block: each block of a state keeps one float32 absmax. */
#define ADAMCORE_QUANT_BLOCK 256

/* One step on n contiguous float32 elements whose m and v are 8-bit codes (exp_avg: n int8,
 * exp_avg_sq: n uint8) with one float32 absmax per block of ADAMCORE_QUANT_BLOCK elements
 * (exp_avg_absmax, exp_avg_sq_absmax: (n + 255) / 256 each), all updated in place. ADAMCORE_AMSGRAD
 * is refused. Pointers may be NULL when n == 0. Returns 0, or a negative code with nothing
 * written. */
ADAMCORE_API int adamcore_adam_step_blockwise_f32(float *param, const float *grad,
                                                  int8_t *exp_avg, uint8_t *exp_avg_sq,
                                                  float *exp_avg_absmax,
                                                  float *exp_avg_sq_absmax, int64_t n,
                                                  const adamcore_hparams *hp);

/* One tensor of adamcore_adam_step_blockwise_tensors: n contiguous elements of param
 * (param_dtype ADAMCORE_FLOAT32, ADAMCORE_FLOAT16 or ADAMCORE_BFLOAT16) and grad (grad_dtype the
 * param's, or ADAMCORE_FLOAT32 for a 16-bit param), and their 8-bit state as
 * adamcore_adam_step_blockwise_f32 keeps it. Arithmetic is float32. (New in 0.3.0.) */
typedef struct adamcore_blockwise_tensor {
    void *param;
    const void *grad;
    int8_t *exp_avg;
    uint8_t *exp_avg_sq;
    float *exp_avg_absmax;
    float *exp_avg_sq_absmax;
    int64_t n;
    int32_t param_dtype;
    int32_t grad_dtype;
} adamcore_blockwise_tensor;

/* One step on count such tensors at once (one parallel region over all their blocks); hp applies
 * to all. All tensors are validated before any is written. Pointers may be NULL where n == 0. */
ADAMCORE_API int adamcore_adam_step_blockwise_tensors(const adamcore_blockwise_tensor *tensors,
                                                      size_t count, const adamcore_hparams *hp);

/* One step on count float32 tensors at once (one parallel region over all their elements; the
 * fast way to step a model's many small tensors). Tensor i is params[i], grads[i], exp_avgs[i],
 * exp_avg_sqs[i] (and max_exp_avg_sqs[i] with ADAMCORE_AMSGRAD; that table may be NULL
 * otherwise), each lengths[i] contiguous elements; hp applies to all. The tables may be NULL only
 * when count == 0, their entries only when lengths[i] == 0. All tensors are validated before any
 * is written: on error, none was. */
ADAMCORE_API int adamcore_adam_step_multi_f32(float *const *params, const float *const *grads,
                                              float *const *exp_avgs, float *const *exp_avg_sqs,
                                              float *const *max_exp_avg_sqs,
                                              const int64_t *lengths, size_t count,
                                              const adamcore_hparams *hp);

/* The same on count float64 tensors. */
ADAMCORE_API int adamcore_adam_step_multi_f64(double *const *params, const double *const *grads,
                                              double *const *exp_avgs, double *const *exp_avg_sqs,
                                              double *const *max_exp_avg_sqs,
                                              const int64_t *lengths, size_t count,
                                              const adamcore_hparams *hp);

/* ---- Any dtype: tensors described by a struct (16-bit params, 16-bit state, low precision) --- */

/* Dtypes of adamcore_tensor. */
#define ADAMCORE_FLOAT16 0
#define ADAMCORE_BFLOAT16 1
#define ADAMCORE_FLOAT32 2
#define ADAMCORE_FLOAT64 3

/* One tensor of adamcore_adam_step_tensors: n contiguous elements in each array.
 *   param_dtype  any of the four; grad_dtype the param's, or float32 for a 16-bit param;
 *   state_dtype  of exp_avg, exp_avg_sq and max_exp_avg_sq: float32 (16/32-bit params), the
 *                param's dtype, or bfloat16 (float16/float32 params); arithmetic stays float32
 *                (float64 for float64 params) and 16-bit state is rounded to nearest even;
 *   compensation read and written with ADAMCORE_KAHAN_SUMMATION (n elements of param_dtype,
 *                zeros at the first step), else ignored;
 *   seed         with ADAMCORE_STOCHASTIC_ROUNDING, this tensor's random stream (give each tensor
 *                its own: the same seed and step draw the same bits for the same element index).
 * Zero every field you do not use (e.g. with memset or = {0}): reserved must be 0. */
typedef struct adamcore_tensor {
    void *param;
    const void *grad;
    void *exp_avg;
    void *exp_avg_sq;
    void *max_exp_avg_sq; /* with ADAMCORE_AMSGRAD, else NULL */
    void *compensation;   /* with ADAMCORE_KAHAN_SUMMATION, else NULL */
    int64_t n;
    uint64_t seed;
    int32_t param_dtype;
    int32_t grad_dtype;
    int32_t state_dtype;
    int32_t reserved;
} adamcore_tensor;

/* One step on count tensors of any supported dtypes, in one parallel region (CPU memory). hp
 * applies to all, its flags including ADAMCORE_KAHAN_SUMMATION / ADAMCORE_STOCHASTIC_ROUNDING.
 * All tensors are validated before any is written. */
ADAMCORE_API int adamcore_adam_step_tensors(const adamcore_tensor *tensors, size_t count,
                                            const adamcore_hparams *hp);

/* ---- CPU settings (process-wide for this library) ------------------------------------------- */

/* Threads a large CPU step uses (default: OMP_NUM_THREADS, else all cores). */
ADAMCORE_API int adamcore_get_num_threads(void);

/* Sets the threads of the CPU steps; n >= 1. Returns 0 or ADAMCORE_ERROR_INVALID_VALUE. */
ADAMCORE_API int adamcore_set_num_threads(int n);

/* The SIMD level the CPU kernels run: "avx512", "avx2" or "baseline" (a static string). The
 * environment variable ADAMCORE_SIMD picks the first choice; every level gives the same bits. */
ADAMCORE_API const char *adamcore_simd_level(void);

/* Runs the CPU kernels at the named level; NULL or "" picks the widest this CPU runs. Returns 0,
 * or ADAMCORE_ERROR_INVALID_VALUE (the message lists the levels available) and keeps the level. */
ADAMCORE_API int adamcore_set_simd_level(const char *name);

/* ---- CUDA steps (device memory) -------------------------------------------------------------- */

/* Nonzero when this library was built with the CUDA backend and can run it; 0 otherwise (then
 * every adamcore_cuda_* step returns ADAMCORE_ERROR_UNAVAILABLE). */
ADAMCORE_API int adamcore_cuda_available(void);

/* adamcore_adam_step_f32 on device pointers, enqueued on stream (a cudaStream_t; NULL is the
 * default stream). Asynchronous: returns once the kernel is launched, without synchronizing;
 * a failed launch returns ADAMCORE_ERROR_CUDA. */
ADAMCORE_API int adamcore_cuda_adam_step_f32(float *param, const float *grad, float *exp_avg,
                                             float *exp_avg_sq, float *max_exp_avg_sq, int64_t n,
                                             const adamcore_hparams *hp, void *stream);

/* adamcore_adam_step_f64 on device pointers, enqueued on stream (as above). */
ADAMCORE_API int adamcore_cuda_adam_step_f64(double *param, const double *grad, double *exp_avg,
                                             double *exp_avg_sq, double *max_exp_avg_sq, int64_t n,
                                             const adamcore_hparams *hp, void *stream);

/* adamcore_adam_step_multi_f32 on device pointers (the pointer and length arrays themselves are
 * in host memory), in one launch on stream (as above). */
ADAMCORE_API int adamcore_cuda_adam_step_multi_f32(float *const *params, const float *const *grads,
                                                   float *const *exp_avgs,
                                                   float *const *exp_avg_sqs,
                                                   float *const *max_exp_avg_sqs,
                                                   const int64_t *lengths, size_t count,
                                                   const adamcore_hparams *hp, void *stream);

/* adamcore_adam_step_tensors on device pointers (the adamcore_tensor array itself is in host
 * memory), every array, compensations included, on one device; one launch per (param, grad,
 * state) combination and rounding mode, enqueued on stream (as above). The same dtypes, flags,
 * compensations and seeds as on the CPU give the same bits. */
ADAMCORE_API int adamcore_cuda_adam_step_tensors(const adamcore_tensor *tensors, size_t count,
                                                 const adamcore_hparams *hp, void *stream);

/* adamcore_adam_step_blockwise_tensors on device pointers (the descriptors themselves are in
 * host memory), every array on one device; one launch per tensor on stream (as above). The same
 * inputs give the CPU's bits. (New in 0.3.0.) */
ADAMCORE_API int adamcore_cuda_adam_step_blockwise_tensors(const adamcore_blockwise_tensor *tensors,
                                                           size_t count,
                                                           const adamcore_hparams *hp,
                                                           void *stream);

#ifdef __cplusplus
}
#endif

#endif /* ADAMCORE_H */
