"""The array libraries the Array-API tests run on, SciPy-style: the ``xp`` fixture of conftest.py
yields each one's namespace, on its device.

    numpy, array_api_strict, torch (CPU), jax (CPU): whenever installed
    cupy, torch-cuda: when installed and a CUDA GPU is visible

Tests make arrays with ``asarray(xp, values, dtype)`` (which puts them on the library's test
device) and read them back with ``to_numpy``.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

NAMES = ["numpy", "array_api_strict", "torch", "jax", "cupy", "torch-cuda"]


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _cupy_gpu():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # not installed, or no usable driver
        return False


def namespace(name: str):
    """The namespace of library ``name``, or pytest.skip if it is not usable here."""
    if name == "numpy":
        return np
    if name == "array_api_strict":
        return pytest.importorskip("array_api_strict")
    if name in ("torch", "torch-cuda"):
        pytest.importorskip("torch")
        if name == "torch-cuda" and not _torch_cuda():
            pytest.skip("needs torch with a CUDA GPU")
        from array_api_compat import torch as compat_torch
        return compat_torch
    if name == "jax":
        jax = pytest.importorskip("jax")
        jax.config.update("jax_enable_x64", True)  # float64 params, as SciPy's tests do
        return importlib.import_module("jax.numpy")
    if name == "cupy":
        if not _cupy_gpu():
            pytest.skip("needs CuPy with a CUDA GPU")
        return importlib.import_module("cupy")
    raise ValueError(name)


def device_for_tests(xp):
    """Where the tests put this library's arrays (None: the library's default)."""
    if getattr(xp, "__name__", "").endswith("torch"):
        import torch
        return torch.get_default_device()
    return None


def asarray(xp, values, dtype: str = "float32"):
    """``values`` as an array of namespace ``xp`` of the given dtype, on the test device."""
    device = device_for_tests(xp)
    kw = {} if device is None else {"device": device}
    host = np.asarray(values, dtype=np.float64)
    if dtype == "bfloat16":  # NumPy has no bfloat16
        return xp.astype(xp.asarray(host.astype(np.float32), **kw), xp.bfloat16)
    return xp.asarray(host.astype(dtype), **kw)


def to_numpy(x) -> np.ndarray:
    """A float64 NumPy copy of an array of any of the libraries."""
    from adamcore import _arrays

    lib = _arrays.library(x)
    if lib == "torch":
        return x.detach().cpu().double().numpy().copy()  # .double() of a float64 tensor is itself
    if lib == "cupy":
        return x.get().astype(np.float64)
    try:
        return np.asarray(x).astype(np.float64)
    except (TypeError, ValueError, RuntimeError):
        return np.from_dlpack(x).astype(np.float64)


def library_name(xp) -> str:
    name = getattr(xp, "__name__", "")
    for lib in ("array_api_strict", "torch", "jax", "cupy", "numpy"):
        if lib in name:
            return lib
    return name


def supports(xp, dtype: str) -> bool:
    return hasattr(xp, dtype)
