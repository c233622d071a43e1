"""adamcore.convert_state_dict: an optimizer state dict's arrays moved to another array library.

torch.optim's ``load_state_dict`` takes only torch tensors (it treats a NumPy array as a sequence
and fails with "expected a sequence of integers"), while adamcore's optimizers take arrays of any
library. This module converts every array of a state dict in torch's layout to the library and
device of given parameters (or to a library by name), so a checkpoint moves between NumPy, torch,
CuPy and JAX optimizers, and into torch.optim, with the same numbers.
"""

from __future__ import annotations

import importlib
import types

import numpy as np

from . import _arrays

# the libraries a state dict can be converted to by name; others are imported by their name
_MODULE_LIBRARIES = {"jax.numpy": "jax", "cupy": "cupy", "numpy": "numpy", "torch": "torch"}


def convert_state_dict(state_dict: dict, like, *, device=None) -> dict:
    """A copy of ``state_dict`` whose arrays are in the array library (and on the device) of
    ``like``; the numbers are the same, bit for bit.

    Args:
        state_dict: a state dict in torch's layout (``{"state": {index: {...}}, "param_groups":
            [...]}``) from ``state_dict()`` of adamcore.Adam/AdamW, adamcore.torch or
            torch.optim.Adam/AdamW, or from :func:`adamcore.load`, with arrays of any library.
        like: where the arrays go. The parameters the state dict will be loaded into (a list of
            arrays, a list of param groups, an optimizer, or one array): each param's state goes
            to that param's library and device, matched by position as ``load_state_dict``
            matches them. Or a library, as a module (``torch``, ``numpy``, ``jax.numpy``,
            ``cupy``) or its name (``"torch"``), with ``device`` (default: the library's own,
            the CPU for torch).
        device: with a library for ``like``, the device (``"cuda:0"``, a ``torch.device``, a
            CuPy device id, a JAX device).

    Returns:
        A new dict sharing no array with ``state_dict``. Every array keeps its dtype, except
        bfloat16 where the target library has none (NumPy): it is widened to float32, exactly.
        ``step`` stays a number; a 0-d ``step`` array (torch.optim's) becomes a float32 0-d
        torch tensor on the CPU when converting to torch and a Python number otherwise. The
        param groups' hyperparameters are copied as they are.

    16-bit params: adamcore keeps their state in float32, torch.optim in the param's own dtype.
    The conversion keeps the dtype it finds; torch.optim's ``load_state_dict`` then rounds
    adamcore's float32 state to 16 bits (the only change of numbers, made by torch), and
    adamcore's optimizers widen 16-bit torch state to float32 exactly.

    Example::

        torch_opt = torch.optim.AdamW(params)
        torch_opt.load_state_dict(adamcore.convert_state_dict(numpy_opt.state_dict(), like=params))
    """
    try:
        groups, state = state_dict["param_groups"], state_dict["state"]
        state_items = list(state.items())
        groups = [dict(g) for g in groups]
    except (KeyError, TypeError, AttributeError):
        raise ValueError("convert_state_dict needs a state dict with 'state' and "
                         "'param_groups' entries (torch's layout)") from None
    target = _target(like, device)
    position = _positions(groups)
    converted = {}
    for index, entry in state_items:
        if not isinstance(entry, dict):
            raise ValueError(f"the state of param {index} is a {type(entry).__name__}, "
                             f"not a dict")
        where = target(index, position.get(index, index))
        converted[index] = {key: _convert_value(key, value, where, index)
                            for key, value in entry.items()}
    for group in groups:
        if "params" in group:
            group["params"] = list(group["params"])
    return {**state_dict, "state": converted, "param_groups": groups}


# ---- where the arrays go --------------------------------------------------------------------
class _Library:
    """A target library by name, with an optional device."""

    def __init__(self, name: str, device):
        self.name, self.device = name, device

    def module(self):
        return _import(self.name)


def _target(like, device):
    """A function (state index, position) -> a param array or a _Library."""
    if isinstance(like, (str, types.ModuleType)):
        library = _Library(_library_name(like), device)
        library.module()  # fails now, clearly, if it cannot be imported
        return lambda index, position: library
    if device is not None:
        raise TypeError("device= goes with a library for like (e.g. like=torch, "
                        "device='cuda:0'); with params for like, their devices are used")
    if _arrays.is_array(like):
        return lambda index, position: like
    params = _flat_params(like)

    def param_at(index, position):
        try:
            if isinstance(position, bool) or position < 0:
                raise IndexError
            return params[position]
        except (IndexError, TypeError):
            raise ValueError(f"the state dict has state for param {index!r} (position "
                             f"{position!r} in its param groups), but like has "
                             f"{len(params)} params") from None
    return param_at


def _library_name(like) -> str:
    if isinstance(like, types.ModuleType):
        name = like.__name__
        if name.startswith("array_api_compat."):
            name = name.split(".", 1)[1]
        return _MODULE_LIBRARIES.get(name, name.partition(".")[0])
    name = like.strip()
    return _MODULE_LIBRARIES.get(name, name)


def _import(name: str):
    module = "jax.numpy" if name == "jax" else name
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"cannot convert to {name}: {e}") from e


def _flat_params(like) -> list:
    groups = getattr(like, "param_groups", None)  # an optimizer: adamcore's or torch.optim's
    if groups is None:
        try:
            groups = list(like)
        except TypeError:
            raise TypeError(f"like must be params (arrays, param groups or an optimizer), an "
                            f"array library or its name, got {type(like).__name__}") from None
    params = []
    for k, item in enumerate(groups):
        if isinstance(item, dict):
            params.extend(item.get("params", ()))
        elif _arrays.is_array(item):
            params.append(item)
        else:
            raise TypeError(f"like[{k}] is a {type(item).__name__}; like must be params "
                            f"(arrays or param groups), an optimizer, or an array library")
    return params


def _positions(groups) -> dict:
    """Each saved param index -> its position in the chained param groups, the pairing that
    load_state_dict of torch.optim and adamcore uses."""
    positions = {}
    for group in groups:
        for saved in group.get("params", ()):
            positions.setdefault(saved, len(positions))
    return positions


# ---- converting one value -------------------------------------------------------------------
def _convert_value(key, value, where, index):
    if not _arrays.is_array(value):
        return value  # a number or other scalar (step as an int, a flag)
    if key == "step" and tuple(value.shape) == ():
        return _convert_step(value, where)
    dtype = _arrays.dtype_name(value.dtype)
    try:
        if isinstance(where, _Library):
            return to_library(value, where.name, device=where.device)
        return _arrays.copy_like(value, where, _dtype_in(where, dtype))
    except (TypeError, ValueError, RuntimeError, AttributeError, BufferError) as e:
        target = where.name if isinstance(where, _Library) else _arrays.library(where)
        raise ValueError(f"cannot convert {key} of param {index} ({_arrays.library(value)}, "
                         f"{dtype}) to {target}: {e}") from e


def _convert_step(value, where):
    library = where.name if isinstance(where, _Library) else _arrays.library(where)
    number = _arrays.to_numpy(value).item()
    if library == "torch":
        import torch

        dtype = value.dtype if _arrays.library(value) == "torch" else torch.float32
        return torch.tensor(number, dtype=dtype)  # on the CPU, as torch.optim keeps it
    return number


def _dtype_in(like, dtype: str) -> str:
    """dtype, or float32 for bfloat16 where like's library has no bfloat16 (NumPy)."""
    if dtype == "bfloat16" and not hasattr(_arrays.namespace(like), "bfloat16"):
        return "float32"
    return dtype


def to_library(value, library: str, *, dtype: str | None = None, device=None):
    """A fresh copy of ``value`` (any library) as an array of ``library`` on ``device``; its
    dtype (or ``dtype``), bfloat16 widened to float32 where the library has none."""
    dtype = dtype or _arrays.dtype_name(value.dtype)
    if library == "torch":
        import torch

        if _arrays.library(value) == "torch":
            out = value.detach().clone()
        else:
            out = torch.from_numpy(_numpy_copy(value))
        out = out.to(dtype=getattr(torch, dtype))
        return out.to(device) if device is not None else out
    host = _numpy_copy(value)
    if library == "numpy":
        return host if device in (None, "cpu") else _refuse_device(library, device)
    if library == "cupy":
        import cupy

        if device is None:
            return cupy.asarray(host)
        with cupy.cuda.Device(device):
            return cupy.asarray(host)
    if library == "jax":
        import jax

        if dtype == "float64" and not jax.config.jax_enable_x64:  # JAX would round to float32
            raise ValueError("JAX has float64 turned off: enable it (jax.config.update("
                             "'jax_enable_x64', True)) to keep float64 state exactly")
        out = jax.numpy.asarray(host, dtype=jax.numpy.dtype(dtype))  # bfloat16 too
        return jax.device_put(out, device) if device is not None else out
    xp = _import(library)
    kind = getattr(xp, dtype, None)  # None: the stored dtype (float32 for bfloat16)
    if device is None:
        return xp.asarray(host, dtype=kind)
    return xp.asarray(host, dtype=kind, device=device)


def _numpy_copy(value) -> np.ndarray:
    return np.array(_arrays.to_numpy(value), copy=True)  # bfloat16 comes back as float32


def _refuse_device(library, device):
    raise ValueError(f"{library} arrays live on the CPU; device={device!r} does not apply")
