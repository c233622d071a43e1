// update.h: the Adam/AdamW update of one element, written once for every backend.
//
// The CPU kernels (each SIMD level; the compiler vectorizes the loop around this function), the
// strided CPU path and the CUDA kernels all call adam_update(). Everything is compiled with
// floating-point contraction off, so each backend performs the same IEEE operations in the same
// order and they agree bit for bit (the pure Array-API path in _reference.py too).
//
// The order is torch.optim.Adam's except for one operation: torch divides sqrt(v) by
// sqrt(1 - beta2^t); we multiply by its reciprocal. That leaves one sqrt and one division per
// element, which share the divider unit that bounds in-cache speed (torch's two divisions and a
// sqrt cost 1.5x as much), and moves denom by at most an ulp, so trajectories still match
// torch's to float32 rounding.
#pragma once

#include <cmath>
#include <cstdint>

#include "adamcore/adamcore.h"

#if defined(__CUDACC__)
#  define ADAMCORE_HD static __host__ __device__ __forceinline__
#else
// static: each SIMD level's translation unit keeps its own copy. With plain inline, the linker
// could resolve every level's calls to one copy compiled with, say, AVX-512 instructions.
#  define ADAMCORE_HD static inline
#endif

namespace adamcore {

// Per-step scalars, computed once on the host in double precision (as torch does in Python) and
// rounded to the arithmetic type T (float for 16/32-bit parameters, double for float64).
template <class T>
struct Coeffs {
    T beta1, one_minus_beta1;
    T beta2, one_minus_beta2;
    T grad_sign;              // -1 when maximizing: multiplying by -1 is exact negation
    T weight_decay;           // the L2 coefficient (used only by the L2 variant)
    T decay;                  // 1 - lr * wd for decoupled decay, exactly 1 otherwise
    T step_size;                   // lr / (1 - beta1^t)
    T inv_bias_correction2_sqrt;   // 1 / sqrt(1 - beta2^t)
    T eps;
};

// ADAMCORE_DECOUPLE_LR is fully decoupled decay, so it implies decoupled decay.
static inline bool is_decoupled(const adamcore_hparams& hp) {
    return (hp.flags & (ADAMCORE_DECOUPLED_WEIGHT_DECAY | ADAMCORE_DECOUPLE_LR)) != 0;
}

// The host computes these once per step in double precision, from validated hyperparameters.
static inline Coeffs<double> make_coeffs(const adamcore_hparams& hp) {
    const double t = static_cast<double>(hp.step);
    const double bias_correction1 = 1.0 - std::pow(hp.beta1, t);
    const double bias_correction2 = 1.0 - std::pow(hp.beta2, t);
    double decay = 1.0;
    if (is_decoupled(hp)) {
        const double lr_ratio = (hp.flags & ADAMCORE_DECOUPLE_LR) ? hp.lr / hp.max_lr : hp.lr;
        decay = 1.0 - lr_ratio * hp.weight_decay;
    }
    Coeffs<double> c;
    c.beta1 = hp.beta1;
    c.one_minus_beta1 = 1.0 - hp.beta1;
    c.beta2 = hp.beta2;
    c.one_minus_beta2 = 1.0 - hp.beta2;
    c.grad_sign = (hp.flags & ADAMCORE_MAXIMIZE) ? -1.0 : 1.0;
    c.weight_decay = hp.weight_decay;
    c.decay = decay;
    c.step_size = hp.lr / bias_correction1;
    c.inv_bias_correction2_sqrt = 1.0 / std::sqrt(bias_correction2);
    c.eps = hp.eps;
    return c;
}

// The same scalars rounded to the arithmetic type, as torch rounds its Python floats.
template <class T>
static inline Coeffs<T> round_coeffs(const Coeffs<double>& c) {
    return {static_cast<T>(c.beta1),        static_cast<T>(c.one_minus_beta1),
            static_cast<T>(c.beta2),        static_cast<T>(c.one_minus_beta2),
            static_cast<T>(c.grad_sign),    static_cast<T>(c.weight_decay),
            static_cast<T>(c.decay),        static_cast<T>(c.step_size),
            static_cast<T>(c.inv_bias_correction2_sqrt), static_cast<T>(c.eps)};
}

// True when the gradient gets the L2 term (Adam with weight decay, not AdamW).
static inline bool uses_l2(const adamcore_hparams& hp) {
    return hp.weight_decay != 0.0 && !is_decoupled(hp);
}

// Correctly rounded square root on the host and on the device.
ADAMCORE_HD float sqrt_rn(float x) {
#if defined(__CUDA_ARCH__)
    return __fsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}
ADAMCORE_HD double sqrt_rn(double x) {
#if defined(__CUDA_ARCH__)
    return __dsqrt_rn(x);
#else
    return std::sqrt(x);
#endif
}

// max that propagates NaN from either side, like torch.maximum and numpy.maximum.
template <class T>
ADAMCORE_HD T nan_max(T a, T b) {
    return (a != a || a > b) ? a : b;
}

// One element of docs/update.md. p, m, v (and vmax with AMSGRAD) are read and written; g is read.
template <bool L2, bool AMSGRAD, class T>
ADAMCORE_HD void adam_update(T& p, T g, T& m, T& v, T& vmax, const Coeffs<T>& c) {
    g = g * c.grad_sign;
    if constexpr (L2) g = g + c.weight_decay * p;
    p = p * c.decay;
    m = c.beta1 * m + c.one_minus_beta1 * g;
    v = c.beta2 * v + c.one_minus_beta2 * g * g;
    T second = v;
    if constexpr (AMSGRAD) {  // compiled only where used: vector types have no nan_max
        vmax = nan_max(vmax, v);
        second = vmax;
    }
    const T denom = sqrt_rn(second) * c.inv_bias_correction2_sqrt + c.eps;
    p = p - c.step_size * (m / denom);
}

}  // namespace adamcore
