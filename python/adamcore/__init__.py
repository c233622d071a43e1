"""adamcore: one fast Adam/AdamW for every array library.

NumPy arrays and PyTorch CPU tensors are stepped in place by SIMD C++ kernels; arrays of any
other Array-API library take the pure Array-API path, with the same numbers.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from ._checkpoint import load, save
from ._convert import convert_state_dict
from ._cpu import (
    available_simd_levels,
    compiled_simd_levels,
    get_num_threads,
    get_simd_level,
    set_num_threads,
    set_simd_level,
)
from . import schedules
from ._clip import clip_by_global_norm, clip_grad_norm
from ._functional import adam_step
from ._minimize import minimize, scipy_adam
from ._optimizer import Adam, AdamW
from ._paths import get_cmake_dir, get_include, get_library

try:
    __version__ = _version("adamcore")
except _PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"

__all__ = [
    "Adam",
    "AdamW",
    "adam_step",
    "available_simd_levels",
    "clip_by_global_norm",
    "clip_grad_norm",
    "compiled_simd_levels",
    "convert_state_dict",
    "get_cmake_dir",
    "get_include",
    "get_library",
    "get_num_threads",
    "get_simd_level",
    "load",
    "minimize",
    "save",
    "schedules",
    "scipy_adam",
    "set_num_threads",
    "set_simd_level",
]
