"""The checks on arrays (docs/errors.md), run for every tensor of a step before any backend writes.

The native cores check shapes and dtypes again (the C ABI needs that), with the same messages;
running them here too keeps a step that spans several backends all-or-nothing.
"""

from __future__ import annotations

from . import _arrays
from ._arrays import COMPLEX_DTYPES, FLOAT_DTYPES, HALF_DTYPES, dtype_name, library, shape_of

_FLOAT_LIST = "float16, bfloat16, float32 or float64"


def check_param(i: int, p) -> None:
    """A parameter: an array of a float dtype that its library lets adamcore update."""
    if not _arrays.is_array(p):
        raise TypeError(f"param {i} is a {type(p).__name__}, not an array")
    dt = dtype_name(p.dtype)
    if dt not in FLOAT_DTYPES and dt not in COMPLEX_DTYPES:
        raise TypeError(f"param {i} has dtype {dt}; adamcore takes {_FLOAT_LIST} (or "
                        f"complex64/complex128, updated as pairs of reals)")
    check_readable_memory(i, p, "param", allow_bfloat16=True)
    check_writeable(i, p)


def check_readable_memory(i: int, x, what: str, allow_bfloat16: bool = False) -> None:
    """Arrays whose memory the kernels cannot read as plain floats: refused with what to do,
    before nanobind would refuse them with a list of signatures that names nothing."""
    lib = library(x)
    if lib == "numpy":
        if not x.dtype.isnative:
            raise TypeError(f"{what} {i} has a non-native byte order ({x.dtype.str}); adamcore "
                            f"reads native-order floats: convert with "
                            f"x.astype(x.dtype.newbyteorder('='))")
        if dtype_name(x.dtype) == "bfloat16" and not allow_bfloat16:
            raise TypeError(f"{what} {i} is a NumPy array of ml_dtypes.bfloat16, which NumPy "
                            f"cannot hand over through DLPack; use float32 NumPy arrays or "
                            f"torch bfloat16 tensors")
    elif lib == "torch" and x.layout is not _torch_strided():
        raise TypeError(f"{what} {i} is a {x.layout} torch tensor; adamcore takes dense "
                        f"(strided) tensors: pass .to_dense()")


def _torch_strided():
    import torch

    return torch.strided


def check_writeable(i: int, p, what: str = "param") -> None:
    # Read-only arrays of mutable libraries are refused; immutable libraries (JAX) get new arrays.
    if library(p) == "numpy" and not p.flags.writeable:
        raise ValueError(f"{what} {i} is read-only (writeable=False); adamcore updates it in place")


def _check_same_array_kind(i: int, p, x, what: str) -> None:
    if type(x) is not type(p) and (not _arrays.is_array(x) or library(x) != library(p)):
        kind = f"{library(x)} array" if _arrays.is_array(x) else type(x).__name__
        raise ValueError(f"{what} {i} is a {kind} but param {i} is a {library(p)} array")
    if not _arrays.same_device(p, x):
        raise ValueError(
            f"{what} {i} is on device {_arrays.device(x)} but param {i} is on {_arrays.device(p)}"
        )
    if x.shape != p.shape:
        raise ValueError(
            f"{what} {i} has shape {shape_of(x)} but param {i} has shape {shape_of(p)}"
        )


def check_grad(i: int, p, g) -> None:
    """A gradient: same library, device and shape as its parameter, and a dtype the kernels pair."""
    _check_same_array_kind(i, p, g, "grad")
    check_readable_memory(i, g, "grad", allow_bfloat16=True)  # steps take the reference path
    gd, pd = dtype_name(g.dtype), dtype_name(p.dtype)
    if gd != pd and not (gd == "float32" and pd in HALF_DTYPES):
        if gd not in FLOAT_DTYPES and pd not in COMPLEX_DTYPES:
            raise TypeError(f"grad {i} has dtype {gd}; adamcore takes {_FLOAT_LIST}")
        extra = " or float32" if pd in HALF_DTYPES else ""
        raise TypeError(
            f"grad {i} has dtype {gd} but param {i} has dtype {pd}; its grad must be {pd}{extra}"
        )


def check_saved_array(i: int, key: str, value, p) -> str:
    """A state array of a loaded state dict: an array of param i's shape. Returns its dtype's
    name (which dtypes fit is the caller's rule)."""
    if not _arrays.is_array(value):
        raise ValueError(f"{key} of param {i} is a {type(value).__name__}, not an array")
    if tuple(value.shape) != tuple(p.shape):
        raise ValueError(f"{key} of param {i} has shape {tuple(value.shape)} "
                         f"but the param has shape {tuple(p.shape)}")
    return dtype_name(value.dtype)


def check_state(i: int, p, x, what: str, expected: str | None = None) -> None:
    """A state array handed in by the caller (adam_step): like its parameter, in the state dtype
    (``expected``; None: the default one)."""
    if x is None:
        raise ValueError(f"{what} {i} is missing")
    _check_same_array_kind(i, p, x, what)
    xd = dtype_name(x.dtype)
    if expected is None:
        expected = _arrays.state_dtype_name(dtype_name(p.dtype))
    if xd != expected:
        raise TypeError(
            f"{what} {i} has dtype {xd}; a {dtype_name(p.dtype)} parameter keeps its state "
            f"in {expected}"
        )
    check_writeable(i, x, what)
