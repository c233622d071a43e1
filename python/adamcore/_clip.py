"""Gradient clipping by the total norm: adamcore.clip_grad_norm and adamcore.clip_by_global_norm.

torch's semantics (torch.nn.utils.clip_grad_norm_): the total norm of all grads together is
computed, then every grad is multiplied by ``min(max_norm / (total + 1e-6), 1)``. NumPy arrays
and torch CPU tensors take the C++ core (one threaded pass, float64 accumulation, any strides);
every other library, and GPU arrays, take a pure Array-API path that stays on the device and
does not synchronize unless ``error_if_nonfinite`` asks it to look at the norm.
"""

from __future__ import annotations

import math

from . import _arrays, _core, _memory, _validation
from ._arrays import FLOAT_DTYPES
from ._dispatch import CPU, _exportable, backend_for

_EPS = 1e-6  # torch's: keeps the coefficient finite for a zero norm


def clip_grad_norm(grads, max_norm, norm_type=2.0, *, error_if_nonfinite=False):
    """Scales ``grads`` in place so that their total norm is at most ``max_norm``.

    Args:
        grads: a sequence of arrays of one library and device (or one array).
        max_norm: the largest total norm allowed, >= 0 (``inf`` only measures).
        norm_type: the order of the norm, > 0; ``inf`` for the largest absolute value.
        error_if_nonfinite: raise FloatingPointError, with nothing scaled, when the total norm
            is inf or NaN. Otherwise, as in torch, the grads are scaled by the non-finite
            coefficient (a NaN norm makes every grad NaN).

    Returns the total norm before clipping, as a 0-d array of the grads' library on their
    device (float64 if any grad is float64, else float32); ``float(total)`` reads it. An empty
    ``grads`` gives 0.0.

    Arrays that cannot be changed in place (JAX) raise ValueError: use
    :func:`clip_by_global_norm`, which returns the clipped arrays.
    """
    grads, ord_, max_norm = _check(grads, max_norm, norm_type)
    for i, g in enumerate(grads):
        if not _arrays.is_writeable(g):
            kind = "read-only" if _arrays.library(g) == "numpy" else \
                f"a {_arrays.library(g)} array, which cannot be changed in place"
            raise ValueError(f"grad {i} is {kind}; adamcore.clip_by_global_norm returns "
                             f"clipped copies instead")
    if not grads:
        return 0.0
    return _clip(grads, ord_, max_norm, error_if_nonfinite)[1]


def clip_by_global_norm(grads, max_norm, norm_type=2.0, *, error_if_nonfinite=False):
    """:func:`clip_grad_norm` for every library, immutable ones included (JAX, where arrays
    cannot change): returns ``(grads, total_norm)``, the grads being the same arrays, scaled in
    place, where the library allows it, and new arrays otherwise."""
    grads, ord_, max_norm = _check(grads, max_norm, norm_type)
    if not grads:
        return [], 0.0
    return _clip(grads, ord_, max_norm, error_if_nonfinite)


def _check(grads, max_norm, norm_type):
    if _arrays.is_array(grads):
        grads = [grads]
    grads = list(grads)
    try:
        max_norm = float(max_norm)
    except (TypeError, ValueError):
        raise ValueError(f"max_norm must be a number, got {max_norm!r}") from None
    if not max_norm >= 0.0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm!r}")
    try:
        ord_ = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"norm_type must be a number or 'inf', got {norm_type!r}") from None
    if not ord_ > 0.0:
        raise ValueError(f"norm_type must be > 0 (or inf), got {norm_type!r}")
    for i, g in enumerate(grads):
        if not _arrays.is_array(g):
            raise TypeError(f"grad {i} is a {type(g).__name__}, not an array")
        _validation.check_readable_memory(i, g, "grad")
        dt = _arrays.dtype_name(g.dtype)
        if dt not in FLOAT_DTYPES:
            raise TypeError(f"grad {i} has dtype {dt}; adamcore takes float16, bfloat16, "
                            f"float32 or float64")
        if i and (_arrays.library(g) != _arrays.library(grads[0])
                  or not _arrays.same_device(grads[0], g)):
            raise ValueError(f"grad {i} is a {_arrays.library(g)} array on "
                             f"{_arrays.device(g)} but grad 0 is a {_arrays.library(grads[0])} "
                             f"array on {_arrays.device(grads[0])}; clip each library apart")
    return grads, ord_, max_norm


def _result_dtype(grads) -> str:
    return "float64" if any(_arrays.dtype_name(g.dtype) == "float64" for g in grads) \
        else "float32"


def _clip(grads, ord_, max_norm, error_if_nonfinite):
    _check_writable_layout(grads)
    if backend_for(grads[0]) is CPU:
        return _clip_native(grads, ord_, max_norm, error_if_nonfinite)
    return _clip_reference(grads, ord_, max_norm, error_if_nonfinite)


def _check_writable_layout(grads) -> None:
    """Grads that address one memory element from several indices (``broadcast_to``, torch's
    ``expand`` and ``autograd.grad`` of a sum give stride 0) are scaled through
    _memory.unique_view, which writes each element once; other self-overlapping layouts
    cannot be scaled element by element and are refused before anything is scaled."""
    for i, g in enumerate(grads):
        lay = _memory.layout(g)
        if lay is None or not _arrays.is_writeable(g):
            continue
        unique = _memory.layout(_memory.unique_view(g))
        if _memory.overlaps_itself(unique):
            raise ValueError(f"grad {i} has elements that share memory (strides "
                             f"{tuple(s // lay.itemsize for s in lay.strides)} in elements), so "
                             f"scaling it would scale them more than once; pass a contiguous "
                             f"copy (nothing was scaled)")


def _nonfinite(total) -> FloatingPointError:
    return FloatingPointError(
        f"the total norm of the grads is {total}, so they cannot be clipped "
        f"(error_if_nonfinite=True); nothing was scaled")


def _clip_native(grads, ord_, max_norm, error_if_nonfinite):
    arrays = [_exportable(g) for g in grads]
    total = _core.total_norm(arrays, ord_)
    if error_if_nonfinite and not math.isfinite(total):
        raise _nonfinite(total)
    coef = max_norm / (total + _EPS)
    if not coef >= 1.0:  # also NaN, as torch: a NaN norm scales every grad to NaN
        _core.scale([_memory.unique_view(a) for a in arrays], coef)
    xp = _arrays.namespace(grads[0])
    dtype = getattr(xp, _result_dtype(grads))
    return grads, xp.asarray(total, dtype=dtype, device=_arrays.device(grads[0]))


def _clip_reference(grads, ord_, max_norm, error_if_nonfinite):
    """The Array-API path: partial norms on the device, no synchronization."""
    originals = grads
    if _arrays.library(grads[0]) == "torch":
        grads = [g.detach() for g in grads]  # the same storage, outside autograd
    xp = _arrays.namespace(grads[0])
    result = getattr(xp, _result_dtype(grads))
    partials = []
    for g in grads:
        if math.prod(g.shape) == 0:
            continue
        x = xp.astype(g, xp.float64 if g.dtype == xp.float64 else xp.float32)
        if math.isinf(ord_):
            part = xp.max(xp.abs(x))
        elif ord_ == 2.0:
            part = xp.sum(x * x)
        elif ord_ == 1.0:
            part = xp.sum(xp.abs(x))
        else:
            part = xp.sum(xp.abs(x) ** ord_)
        partials.append(xp.astype(part, result))
    device = _arrays.device(grads[0])
    if not partials:
        total = xp.zeros((), dtype=result, device=device)
    else:
        stacked = xp.stack(partials)
        if math.isinf(ord_):
            total = xp.max(stacked)
        else:
            total = xp.sum(stacked)
            total = xp.sqrt(total) if ord_ == 2.0 else total ** (1.0 / ord_) if ord_ != 1.0 \
                else total
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise _nonfinite(float(total))
    coef = max_norm / (total + _EPS)
    coef = xp.minimum(coef, xp.ones_like(coef))  # NaN stays NaN, as in torch
    out = []
    for g, original in zip(grads, originals):
        if _arrays.is_writeable(g):
            g = _memory.unique_view(g)  # a stride-0 grad: scale its memory once
        scaled = xp.astype(xp.astype(g, xp.float64 if g.dtype == xp.float64 else xp.float32)
                           * xp.astype(coef, xp.float64 if g.dtype == xp.float64
                                       else xp.float32), g.dtype)
        if _arrays.is_writeable(g):
            g[...] = scaled
            out.append(original)
        else:
            out.append(scaled)
    return out, total
