/* adamcore.h: the C ABI of adamcore, one Adam/AdamW step for programs that are not Python.
 *
 * Plain C (no C++ types), usable from C, C++, Rust, Julia, ... through FFI. Every entry point
 * validates all of its arguments before it writes a byte: on error nothing was changed, the
 * return code is negative and adamcore_last_error() says why (per thread).
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

/* Symbol visibility for the shared library. */
#if defined(_WIN32)
#  if defined(ADAMCORE_BUILDING_LIBRARY)
#    define ADAMCORE_API __declspec(dllexport)
#  else
#    define ADAMCORE_API __declspec(dllimport)
#  endif
#else
#  define ADAMCORE_API __attribute__((visibility("default")))
#endif

/* Version of this header: major * 10000 + minor * 100 + patch. */
#define ADAMCORE_VERSION_MAJOR 0
#define ADAMCORE_VERSION_MINOR 1
#define ADAMCORE_VERSION_PATCH 0
#define ADAMCORE_VERSION \
    (ADAMCORE_VERSION_MAJOR * 10000 + ADAMCORE_VERSION_MINOR * 100 + ADAMCORE_VERSION_PATCH)

/* Flags of adamcore_hparams.flags. */
#define ADAMCORE_DECOUPLED_WEIGHT_DECAY 0x1u /* AdamW: decay the parameter, not the gradient */
#define ADAMCORE_DECOUPLE_LR 0x2u            /* fully decoupled: decay by lr / max_lr * wd (implies 0x1) */
#define ADAMCORE_AMSGRAD 0x4u                /* keep max_exp_avg_sq and normalize by it */
#define ADAMCORE_MAXIMIZE 0x8u               /* ascend instead of descend */

/* Return codes (0 is success). */
#define ADAMCORE_OK 0
#define ADAMCORE_ERROR_INVALID_VALUE (-1)  /* a hyperparameter, pointer, size or shape is wrong */
#define ADAMCORE_ERROR_INVALID_DTYPE (-2)  /* a dtype or dtype combination is not supported */
#define ADAMCORE_ERROR_NOT_FINITE (-3)     /* a gradient holds inf or NaN (finite check requested) */
#define ADAMCORE_ERROR_CUDA (-4)           /* a CUDA call failed; the message has CUDA's text */
#define ADAMCORE_ERROR_UNAVAILABLE (-5)    /* the backend was not built into this library */
#define ADAMCORE_ERROR_INTERNAL (-6)       /* a bug or an allocation failure */

/* Hyperparameters of one step. */
typedef struct adamcore_hparams {
    double lr;           /* learning rate of this step (>= 0) */
    double beta1;        /* decay of the first moment, in [0, 1) */
    double beta2;        /* decay of the second moment, in [0, 1) */
    double eps;          /* added to the denominator (>= 0) */
    double weight_decay; /* L2 or decoupled decay coefficient (>= 0) */
    double max_lr;       /* the schedule's peak lr, used only with ADAMCORE_DECOUPLE_LR (> 0) */
    int64_t step;        /* t: the 1-based index of this update (>= 1) */
    uint32_t flags;      /* ADAMCORE_* flags above, or'ed together */
} adamcore_hparams;

/* Library version as ADAMCORE_VERSION encodes it; compare with the header's macro. */
ADAMCORE_API int adamcore_version(void);

/* torch's defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8, no decay, max_lr 1e-3, step 1. */
ADAMCORE_API adamcore_hparams adamcore_hparams_default(void);

/* Message of this thread's last failed call ("" if none). Valid until its next call. */
ADAMCORE_API const char *adamcore_last_error(void);

/* One step on n contiguous float32 elements. max_exp_avg_sq may be NULL unless ADAMCORE_AMSGRAD. */
ADAMCORE_API int adamcore_adam_step_f32(float *param, const float *grad, float *exp_avg,
                                        float *exp_avg_sq, float *max_exp_avg_sq, int64_t n,
                                        const adamcore_hparams *hp);

/* One step on n contiguous float64 elements (arithmetic in float64). */
ADAMCORE_API int adamcore_adam_step_f64(double *param, const double *grad, double *exp_avg,
                                        double *exp_avg_sq, double *max_exp_avg_sq, int64_t n,
                                        const adamcore_hparams *hp);

#ifdef __cplusplus
}
#endif

#endif /* ADAMCORE_H */
