"""8-bit block-quantized Adam state (``state_dtype="int8_blockwise"``, docs/low-precision.md).

m and v are kept as one 8-bit code per element and one float32 absmax per block of 256
consecutive elements of the flattened parameter::

    m = absmax_m * sign(c) * (|c| / 127)**2      c: int8 in [-127, 127]
    v = absmax_v * (c / 255)**4                  c: uint8 in [0, 255]

This module holds the format's pure NumPy form: allocation, quantize / dequantize, and one step
(:func:`adam_update_blockwise`), written with the same float32 operations in the same order as
``cpp/include/adamcore/blockwise.h`` and the kernels, so it is their oracle bit for bit.
"""

from __future__ import annotations

import numpy as np

from . import _reference
from ._hparams import AMSGRAD, StepHParams

BLOCK = 256
M_CODE_MAX = np.float32(127.0)
V_CODE_MAX = np.float32(255.0)
M_DIVISOR = np.float32(16129.0)  # 127**2
V_DIVISOR = np.float32(4228250625.0)  # 255**4, rounded to float32 as the kernels do
_ROUND_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23: (r + magic) - magic rounds half to even

#: the state_dict keys of a quantized parameter's state, with their dtypes
STATE_KEYS = {"exp_avg": "int8", "exp_avg_sq": "uint8",
              "exp_avg_absmax": "float32", "exp_avg_sq_absmax": "float32"}


def blocks(n: int) -> int:
    """Number of blocks (and absmax entries) of a tensor of n elements."""
    return (n + BLOCK - 1) // BLOCK


def _padded(x, n: int):
    """x (flat, length n) padded with zeros to whole blocks, shaped (blocks, BLOCK)."""
    out = np.zeros(blocks(n) * BLOCK, dtype=x.dtype)
    out[:n] = x
    return out.reshape(-1, BLOCK)


def dequantize_m(codes, absmax):
    """Flat int8 codes and their blocks' absmax -> float32 m."""
    codes = np.asarray(codes).reshape(-1)
    n = codes.size
    scale = (np.asarray(absmax, dtype=np.float32) / M_DIVISOR)[:, None]
    q = _padded(codes, n).astype(np.float32)
    return ((q * np.abs(q)) * scale).reshape(-1)[:n]


def dequantize_v(codes, absmax):
    """Flat uint8 codes and their blocks' absmax -> float32 v."""
    codes = np.asarray(codes).reshape(-1)
    n = codes.size
    scale = (np.asarray(absmax, dtype=np.float32) / V_DIVISOR)[:, None]
    q = _padded(codes, n).astype(np.float32)
    q2 = q * q
    return ((q2 * q2) * scale).reshape(-1)[:n]


def _absmax(x2d):
    """Per-row max of |x| by the bits (NaN above inf), as the kernels reduce it."""
    bits = x2d.view(np.uint32) & np.uint32(0x7FFFFFFF)
    return bits.max(axis=1).astype(np.uint32).view(np.float32)


def _factor(absmax):
    """1 / absmax per block (1 where absmax is not positive), as blockwise.h's quant_factor."""
    with np.errstate(divide="ignore"):
        return np.where(absmax > 0, np.float32(1.0) / absmax, np.float32(1.0)).astype(np.float32)


def _round(r, limit):
    clamped = np.where(r < limit, r, limit).astype(np.float32)
    return (clamped + _ROUND_MAGIC) - _ROUND_MAGIC


def quantize_m(m):
    """float32 m (any shape) -> (flat int8 codes, float32 absmax per block)."""
    m = np.asarray(m, dtype=np.float32).reshape(-1)
    n = m.size
    x = _padded(m, n)
    absmax = _absmax(x)
    magnitude = np.abs(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.sqrt(magnitude * _factor(absmax)[:, None]) * M_CODE_MAX
    code = _round(r, M_CODE_MAX).astype(np.int32)
    code = np.where(x < 0, -code, code).astype(np.int8)
    return code.reshape(-1)[:n].copy(), absmax


def quantize_v(v):
    """float32 v >= 0 (any shape) -> (flat uint8 codes, float32 absmax per block)."""
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = v.size
    x = _padded(v, n)
    absmax = _absmax(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = x * _factor(absmax)[:, None]
        s = np.where(s < 0, np.float32(0.0), s).astype(np.float32)
        r = np.sqrt(np.sqrt(s)) * V_CODE_MAX
    code = _round(r, V_CODE_MAX).astype(np.int32).astype(np.uint8)
    return code.reshape(-1)[:n].copy(), absmax


def zeros_state(n: int) -> dict:
    """The quantized state of a fresh parameter of n elements (all codes and absmax 0)."""
    return {"exp_avg": np.zeros(n, np.int8), "exp_avg_sq": np.zeros(n, np.uint8),
            "exp_avg_absmax": np.zeros(blocks(n), np.float32),
            "exp_avg_sq_absmax": np.zeros(blocks(n), np.float32)}


def adam_update_blockwise(param, grad, exp_avg, exp_avg_sq, exp_avg_absmax, exp_avg_sq_absmax,
                          hp: StepHParams):
    """One step over quantized state (NumPy); returns new arrays, changes none.

    Dequantizes m and v, runs the update of ``_reference.adam_update`` in float32, then
    requantizes with each block's new absmax. Returns ``(param, exp_avg, exp_avg_sq,
    exp_avg_absmax, exp_avg_sq_absmax)`` with param in its own dtype and shape.
    """
    if hp.flags & AMSGRAD:
        raise ValueError("int8_blockwise state does not support amsgrad")
    param = np.asarray(param)
    shape = param.shape
    m = dequantize_m(exp_avg, exp_avg_absmax)
    v = dequantize_v(exp_avg_sq, exp_avg_sq_absmax)
    # 16-bit values widen to float32 exactly, and the update's arithmetic is float32 anyway, so
    # widening first and narrowing the result back is the reference's own rounding (and lets
    # ml_dtypes' bfloat16, which numpy.isdtype does not know, through)
    p32 = param.reshape(-1).astype(np.float32)
    g32 = np.asarray(grad).reshape(-1).astype(np.float32)
    with np.errstate(all="ignore"):
        p, m, v, _ = _reference.adam_update(np, p32, g32, m, v, None, hp)
        p = p.astype(param.dtype)
    mc, ma = quantize_m(m)
    vc, va = quantize_v(v)
    return p.reshape(shape), mc, vc, ma, va
