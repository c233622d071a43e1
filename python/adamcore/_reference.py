"""The pure Array-API update: the path of every library without a native kernel, and the oracle.

It uses only the standard namespace ``xp`` of the arrays, so it runs on NumPy, CuPy, PyTorch, JAX,
array-api-strict and any other conforming library. Its operations are those of
``cpp/include/adamcore/update.h`` in the same order, so for float32 it gives the native kernels'
numbers bit for bit; the tests run it on float64 copies as the textbook reference.
"""

from __future__ import annotations

import math

from ._hparams import (AMSGRAD, DECOUPLE_LR, DECOUPLED_WEIGHT_DECAY, KAHAN_SUMMATION, MAXIMIZE,
                       STOCHASTIC_ROUNDING, StepHParams)


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
    return lowp_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, None, hp)[:4]


def lowp_update(xp, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, compensation,
                hp: StepHParams, seed: int = 0):
    """adam_update with the low-precision modes of cpp/include/adamcore/lowp.h: state of any
    dtype the core keeps (widened, updated, rounded back to nearest even), Kahan summation
    (``compensation``, the param's dtype) and stochastic rounding (``seed``: the tensor's
    random stream). Returns ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq, compensation)``."""
    c = coefficients(hp)
    compute = xp.float64 if param.dtype == xp.float64 else xp.float32
    state = exp_avg.dtype
    p = xp.astype(param, compute)
    p_old = p
    g = xp.astype(grad, compute)
    exp_avg = xp.astype(exp_avg, compute)
    exp_avg_sq = xp.astype(exp_avg_sq, compute)
    if max_exp_avg_sq is not None:
        max_exp_avg_sq = xp.astype(max_exp_avg_sq, compute)
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
    m, v = xp.astype(m, state), xp.astype(v, state)
    if vmax is not None:
        vmax = xp.astype(vmax, state)
    comp = None
    if hp.flags & KAHAN_SUMMATION:
        # lowp.h's kahan_store: the update plus what earlier rounding dropped, rounded to the
        # param's dtype; what this rounding drops is the next compensation
        delta = (p - p_old) + xp.astype(compensation, compute)
        new = xp.astype(p_old + delta, param.dtype)
        comp = xp.astype(delta - (xp.astype(new, compute) - p_old), param.dtype)
        return new, m, v, vmax, comp
    if hp.flags & STOCHASTIC_ROUNDING:
        bits = random_bits(xp, rounding_key(seed, hp.step), param.shape, param)
        return stochastic_round_bf16(xp, p, bits, param.dtype), m, v, vmax, None
    return xp.astype(p, param.dtype), m, v, vmax, comp


# ---- lowp.h's counter-based random bits, in int64 arithmetic every library has ---------------
_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def rounding_key(seed: int, step: int) -> int:
    """lowp.h's rounding_key: one tensor's 32-bit key at one step."""
    return _mix64((seed + _mix64(step & _M64)) & _M64) >> 32


def _mul32(x, c: int):
    """x * c mod 2**32 for int64 arrays x < 2**32, without int64 overflow."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x):
    """lowp.h's mix32 (lowbias32) on int64 arrays holding uint32 values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def random_bits(xp, key: int, shape, like):
    """lowp.h's random_bits(key, i) of every element, i its C-order index (int64 array)."""
    n = math.prod(shape)
    index = xp.reshape(xp.arange(n, dtype=xp.int64, device=getattr(like, "device", None)), shape)
    hi = index >> 32
    block = _mix32((key + hi * 0x9E3779B9) & _M32)
    return _mix32(block ^ (index & _M32))


def stochastic_round_bf16(xp, x, bits, dtype):
    """lowp.h's stochastic_round_bf16 of float32 x with random bits, as an array of ``dtype``."""
    u = _float_bits(x)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = xp.where(nan, (u & 0xFFFF0000) | 0x400000, (u + (bits >> 16)) & 0xFFFF0000)
    return xp.astype(_bits_float(rounded, x), dtype)  # exact: already a bfloat16


def _float_bits(x):
    """The bits of a float32 array as int64 values (NumPy, CuPy and torch arrays)."""
    lib = type(x).__module__.split(".")[0]
    if lib == "torch":
        import torch

        return x.contiguous().view(torch.int32).to(torch.int64) & _M32
    if lib in ("numpy", "cupy"):
        return x.view("uint32").astype("int64")
    raise TypeError(f"stochastic_rounding on the reference path takes NumPy, CuPy or torch "
                    f"arrays, not {lib}")


def _bits_float(u, like):
    lib = type(like).__module__.split(".")[0]
    if lib == "torch":
        import torch

        signed = torch.where(u >= 2**31, u - 2**32, u).to(torch.int32)
        return signed.view(torch.float32)
    return u.astype("uint32").view("float32")


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
