"""The pure Array-API update: the path of every library without a native kernel, and the oracle.

It uses only the standard namespace ``xp`` of the arrays, so it runs on NumPy, CuPy, PyTorch, JAX,
array-api-strict and any other conforming library. Its operations are those of
``cpp/include/adamcore/update.h`` in the same order, so for float32 it gives the native kernels'
numbers bit for bit; the tests run it on float64 copies as the textbook reference.
"""

from __future__ import annotations

import math

from ._hparams import AMSGRAD, DECOUPLE_LR, DECOUPLED_WEIGHT_DECAY, MAXIMIZE, StepHParams


def coefficients(hp: StepHParams) -> dict:
    """The per-step scalars, computed in double precision as the C++ core and torch do."""
    t = float(hp.step)
    bias_correction1 = 1.0 - hp.beta1**t
    bias_correction2 = 1.0 - hp.beta2**t
    decoupled = bool(hp.flags & (DECOUPLED_WEIGHT_DECAY | DECOUPLE_LR))
    decay = 1.0
    if decoupled:
        lr_ratio = hp.lr / hp.max_lr if hp.flags & DECOUPLE_LR else hp.lr
        decay = 1.0 - lr_ratio * hp.weight_decay
    return {
        "l2": hp.weight_decay != 0.0 and not decoupled,
        "decay": decay,
        "step_size": hp.lr / bias_correction1,
        "inv_bias_correction2_sqrt": 1.0 / math.sqrt(bias_correction2),
    }


def adam_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hp: StepHParams):
    r"""One Adam/AdamW step on arrays of namespace ``xp``; returns new arrays, changes none.

    .. math::

        g &\leftarrow -g \quad\text{(maximize)}, \qquad g \leftarrow g + \lambda\theta
            \quad\text{(L2, not decoupled)} \\
        \theta &\leftarrow \theta\,(1 - \gamma_t\lambda) \quad\text{(decoupled; }
            \gamma_t/\gamma_{max}\text{ with decouple\_lr)} \\
        m &\leftarrow \beta_1 m + (1-\beta_1)\,g, \qquad
        v \leftarrow \beta_2 v + (1-\beta_2)\,g^2, \qquad
        \bar v \leftarrow \max(\bar v, v) \quad\text{(amsgrad, else } \bar v = v) \\
        \theta &\leftarrow \theta - \frac{\gamma_t}{1-\beta_1^t}\cdot
            \frac{m}{\sqrt{\bar v}/\sqrt{1-\beta_2^t} + \epsilon}

    Arithmetic is float32 for 16- and 32-bit parameters and float64 for float64 ones; the new
    parameter is rounded back to the parameter's dtype. Returns
    ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq)``, the last None without amsgrad.
    """
    if xp.isdtype(param.dtype, "complex floating"):
        return _complex_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hp)
    c = coefficients(hp)
    compute = xp.float64 if param.dtype == xp.float64 else xp.float32
    p = xp.astype(param, compute)
    g = xp.astype(grad, compute)
    if hp.flags & MAXIMIZE:
        g = -g
    if c["l2"]:
        g = g + hp.weight_decay * p
    if c["decay"] != 1.0:
        p = p * c["decay"]
    m = hp.beta1 * exp_avg + (1.0 - hp.beta1) * g
    v = hp.beta2 * exp_avg_sq + (1.0 - hp.beta2) * g * g
    second = v
    vmax = None
    if hp.flags & AMSGRAD:
        vmax = xp.maximum(max_exp_avg_sq, v)
        second = vmax
    # times the reciprocal, as update.h does (one division fewer than torch, same to an ulp)
    denom = xp.sqrt(second) * c["inv_bias_correction2_sqrt"] + hp.eps
    p = p - c["step_size"] * (m / denom)
    return xp.astype(p, param.dtype), m, v, vmax


def _complex_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, hp: StepHParams):
    """A complex parameter as a pair of reals (torch.optim's view_as_real): the real and the
    imaginary parts are updated as separate elements, and the state keeps each part's moments
    in its own part."""
    parts = []
    for take in (xp.real, xp.imag):
        vmax = take(max_exp_avg_sq) if max_exp_avg_sq is not None else None
        parts.append(adam_update(xp, take(param), take(grad), take(exp_avg), take(exp_avg_sq),
                                 vmax, hp))
    dtype = param.dtype

    def join(re, im):
        if re is None:
            return None
        # (re + 0j) + (0 + 1j)(im + 0j) is exact: each part lands in its own component
        return xp.astype(re, dtype) + xp.asarray(1j, dtype=dtype) * xp.astype(im, dtype)

    return tuple(join(a, b) for a, b in zip(*parts))
