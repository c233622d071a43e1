"""The installed C ABI seen from ctypes: adamcore.h's constants and declarations, adamcore_hparams,
and libadamcore (the wheel's copy) with each entry point's signature. For the C ABI tests.

Constants and the list of functions are read from the installed header, so the tests check the
header a C program would include, not a copy of it.
"""

from __future__ import annotations

import ctypes
import functools
import re
from ctypes import (POINTER, c_char_p, c_double, c_int, c_int32, c_int64, c_size_t, c_uint32,
                    c_uint64, c_void_p)
from pathlib import Path

import adamcore

HEADER = Path(adamcore.get_include()) / "adamcore" / "adamcore.h"


@functools.cache
def header_text() -> str:
    return HEADER.read_text()


@functools.cache
def constants() -> dict[str, int]:
    """Integer #defines of adamcore.h by name without the ADAMCORE_ prefix: OK, AMSGRAD, ..."""
    found = {}
    for name, value in re.findall(r"^#define ADAMCORE_(\w+) +\(?(-?(?:0x)?[0-9a-fA-F]+)u?\)?",
                                  header_text(), re.MULTILINE):
        found[name] = int(value, 0)
    return found


def declared_functions() -> list[str]:
    """Every function adamcore.h declares, in order."""
    return re.findall(r"\bADAMCORE_API\b[^;(]*?\b(adamcore_\w+)\s*\(", header_text())


class HParams(ctypes.Structure):
    """adamcore_hparams."""

    _fields_ = [("lr", c_double), ("beta1", c_double), ("beta2", c_double), ("eps", c_double),
                ("weight_decay", c_double), ("max_lr", c_double), ("step", c_int64),
                ("flags", c_uint32)]


def hparams(*, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
            decoupled_weight_decay=False, decouple_lr=False, max_lr=None, amsgrad=False,
            maximize=False) -> HParams:
    """adamcore_hparams from adamcore.adam_step's keyword arguments. ADAMCORE_DECOUPLE_LR alone
    stands for decouple_lr (the header says it implies decoupled decay)."""
    k = constants()
    flags = ((k["DECOUPLED_WEIGHT_DECAY"] if decoupled_weight_decay else 0)
             | (k["DECOUPLE_LR"] if decouple_lr else 0) | (k["AMSGRAD"] if amsgrad else 0)
             | (k["MAXIMIZE"] if maximize else 0))
    return HParams(lr, beta1, beta2, eps, weight_decay, lr if max_lr is None else max_lr, step,
                   flags)


class Tensor(ctypes.Structure):
    """adamcore_tensor."""

    _fields_ = [("param", c_void_p), ("grad", c_void_p), ("exp_avg", c_void_p),
                ("exp_avg_sq", c_void_p), ("max_exp_avg_sq", c_void_p),
                ("compensation", c_void_p), ("n", c_int64), ("seed", c_uint64),
                ("param_dtype", c_int32), ("grad_dtype", c_int32), ("state_dtype", c_int32),
                ("reserved", c_int32)]


class BlockwiseTensor(ctypes.Structure):
    """adamcore_blockwise_tensor."""

    _fields_ = [("param", c_void_p), ("grad", c_void_p), ("exp_avg", c_void_p),
                ("exp_avg_sq", c_void_p), ("exp_avg_absmax", c_void_p),
                ("exp_avg_sq_absmax", c_void_p), ("n", c_int64), ("param_dtype", c_int32),
                ("grad_dtype", c_int32)]


_ptr, _ptrs = c_void_p, POINTER(c_void_p)  # arrays are passed by address
_hp = POINTER(HParams)
SIGNATURES = {
    "adamcore_version": (c_int, []),
    "adamcore_version_string": (c_char_p, []),
    "adamcore_hparams_default": (HParams, []),
    "adamcore_last_error": (c_char_p, []),
    "adamcore_adam_step_f32": (c_int, [_ptr] * 5 + [c_int64, _hp]),
    "adamcore_adam_step_f64": (c_int, [_ptr] * 5 + [c_int64, _hp]),
    "adamcore_adam_step_multi_f32": (c_int, [_ptrs] * 5 + [POINTER(c_int64), c_size_t, _hp]),
    "adamcore_adam_step_multi_f64": (c_int, [_ptrs] * 5 + [POINTER(c_int64), c_size_t, _hp]),
    "adamcore_adam_step_tensors": (c_int, [POINTER(Tensor), c_size_t, _hp]),
    "adamcore_adam_step_blockwise_f32": (c_int, [_ptr] * 6 + [c_int64, _hp]),
    "adamcore_adam_step_blockwise_tensors": (c_int, [POINTER(BlockwiseTensor), c_size_t, _hp]),
    "adamcore_get_num_threads": (c_int, []),
    "adamcore_set_num_threads": (c_int, [c_int]),
    "adamcore_simd_level": (c_char_p, []),
    "adamcore_set_simd_level": (c_int, [c_char_p]),
    "adamcore_cuda_available": (c_int, []),
    "adamcore_cuda_adam_step_f32": (c_int, [_ptr] * 5 + [c_int64, _hp, c_void_p]),
    "adamcore_cuda_adam_step_f64": (c_int, [_ptr] * 5 + [c_int64, _hp, c_void_p]),
    "adamcore_cuda_adam_step_multi_f32": (c_int, [_ptrs] * 5 + [POINTER(c_int64), c_size_t, _hp,
                                                                c_void_p]),
    "adamcore_cuda_adam_step_tensors": (c_int, [POINTER(Tensor), c_size_t, _hp, c_void_p]),
    "adamcore_cuda_adam_step_blockwise_tensors": (c_int, [POINTER(BlockwiseTensor), c_size_t, _hp,
                                                          c_void_p]),
}


@functools.cache
def load() -> ctypes.CDLL:
    """The wheel's libadamcore with the signatures above set (on the functions it exports)."""
    lib = ctypes.CDLL(adamcore.get_library())
    for name, (restype, argtypes) in SIGNATURES.items():
        if hasattr(lib, name):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
    return lib


def address(array) -> int | None:
    """The address of a NumPy array's first element (None for None: a NULL pointer)."""
    return None if array is None else array.ctypes.data


def pointer_table(arrays) -> ctypes.Array | None:
    """A C array of the arrays' addresses (None for None)."""
    if arrays is None:
        return None
    return (c_void_p * max(1, len(arrays)))(*(address(a) for a in arrays))


def length_table(lengths) -> ctypes.Array | None:
    if lengths is None:
        return None
    return (c_int64 * max(1, len(lengths)))(*lengths)
