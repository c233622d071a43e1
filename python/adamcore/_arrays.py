"""What adamcore needs to know about an array of any library: its library, dtype and device.

Every question goes through array-api-compat where it has an answer, and the answers that cost
more than a dictionary look-up are cached per type or per dtype object, since ``step`` asks them
for every tensor.
"""

from __future__ import annotations

import array_api_compat as aac

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
# updated as pairs of reals, as torch.optim does (view_as_real); their state is complex too
COMPLEX_DTYPES = ("complex64", "complex128")
HALF_DTYPES = ("float16", "bfloat16")

_library_by_type: dict[type, str] = {}
_dtype_names: dict[int, tuple[object, str]] = {}  # id(dtype) -> (dtype, name): ids stay valid


def library(x) -> str:
    """The array library of ``x``: numpy, torch, cupy, jax, array_api_strict, ... ."""
    t = type(x)
    name = _library_by_type.get(t)
    if name is None:
        if aac.is_numpy_array(x):
            name = "numpy"
        elif aac.is_torch_array(x):
            name = "torch"
        elif aac.is_cupy_array(x):
            name = "cupy"
        elif aac.is_jax_array(x):
            name = "jax"
        elif aac.is_array_api_strict_namespace(aac.array_namespace(x)):
            name = "array_api_strict"
        else:
            name = t.__module__.partition(".")[0]
        _library_by_type[t] = name
    return name


def is_array(x) -> bool:
    """True for an array of a library adamcore can serve (numpy, torch, cupy, jax, strict, ...)."""
    if type(x) in _library_by_type:
        return True
    if not (hasattr(x, "shape") and hasattr(x, "dtype")) or isinstance(x, type):
        return False  # cheap: array_namespace raises (slowly) for lists and the like
    try:
        aac.array_namespace(x)
    except TypeError:
        return False
    library(x)  # caches the type
    return True


def dtype_name(dtype) -> str:
    """A dtype object of any library as its plain name: 'float32', 'bfloat16', 'int64', ..."""
    known = _dtype_names.get(id(dtype))
    if known is not None and known[0] is dtype:
        return known[1]
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    name = name.rsplit(".", 1)[-1]  # 'torch.float32', 'array_api_strict.float32'
    name = name.removesuffix("'>").removeprefix("<class '")  # a scalar type, e.g. np.float32
    _dtype_names[id(dtype)] = (dtype, name)
    return name


def state_dtype_name(param_dtype: str) -> str:
    """The dtype of the optimizer state of a parameter: float32 for 16-bit, else its own."""
    return "float32" if param_dtype in HALF_DTYPES else param_dtype


def shape_of(x) -> tuple:
    """The shape as a plain tuple (torch.Size prints differently)."""
    return tuple(x.shape)


def device(x):
    """The device of ``x`` in its library's terms."""
    return aac.device(x)


def same_device(a, b) -> bool:
    lib = library(a)
    if lib == "numpy":
        return True
    if lib in ("torch", "cupy"):
        return a.device == b.device
    return aac.device(a) == aac.device(b)


def is_writeable(x) -> bool:
    """False for read-only arrays (NumPy writeable=False) and for immutable libraries (JAX)."""
    lib = library(x)
    if lib == "numpy":
        return bool(x.flags.writeable)
    if lib in ("torch", "cupy"):
        return True
    return bool(aac.is_writeable_array(x))


def namespace(x):
    return aac.array_namespace(x)


def to_numpy(x):
    """A host NumPy view or copy of an array of any library (for moving state between libraries)."""
    import numpy as np

    lib = library(x)
    if lib == "numpy":
        return x
    if lib == "cupy":
        return x.get()
    if lib == "torch":
        return x.detach().cpu().numpy() if x.dtype != _torch_bfloat16() else \
            x.detach().cpu().float().numpy()
    try:
        return np.from_dlpack(x)
    except (TypeError, RuntimeError, BufferError, ValueError):
        return np.asarray(x)


def _torch_bfloat16():
    import torch

    return torch.bfloat16


def copy_like(value, like, dtype: str):
    """A fresh copy of ``value`` (any library) in the library and on the device of ``like``."""
    xp = namespace(like)
    if library(value) != library(like):
        try:
            value = xp.from_dlpack(value)  # zero-copy where the devices agree
        except (TypeError, RuntimeError, BufferError, ValueError, AttributeError):
            value = to_numpy(value)
    return xp.asarray(value, dtype=getattr(xp, dtype), copy=True, device=device(like))
