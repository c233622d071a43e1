"""Low-precision options of a param group (docs/update.md, "Low precision"):

    state_dtype          dtype of exp_avg, exp_avg_sq (and max_exp_avg_sq): None (the default:
                         float32 for 16/32-bit params, float64 for float64), "float32",
                         "bfloat16" (float16/bfloat16/float32 params), "float16" (float16
                         params), "float64" (float64 params), or "param" (the param's own dtype,
                         as torch's fused Adam keeps it); dtype objects of NumPy, torch and
                         ml_dtypes are taken by name
    kahan_summation      True for float16/bfloat16 params: a buffer in the param's dtype (state
                         key "kahan_comp") carries what rounding the param dropped into the next
                         update
    stochastic_rounding  True for bfloat16 params: the new param is rounded up or down at random,
                         unbiased, from a counter-based hash of (seed, step, element)
    rounding_seed        an int (default 0): param i of the optimizer draws from the stream
                         ``rounding_seed * 2**32 + i``

The arithmetic stays float32 (float64 for float64 params) in every mode.
"""

from __future__ import annotations

import numbers

from . import _arrays, _validation

KAHAN_KEY = "kahan_comp"
LOWP_DEFAULTS = {"state_dtype": None, "kahan_summation": False, "stochastic_rounding": False,
                 "rounding_seed": 0}
#: the 8-bit block-quantized form (_blockwise.py), stepped by its own kernel
INT8_BLOCKWISE = "int8_blockwise"
_NAMED = ("float32", "bfloat16", "float16", "float64", "param")
_MASK64 = (1 << 64) - 1


def uses_lowp(group: dict) -> bool:
    """True when a group asks for any low-precision option (then no steady plan takes it)."""
    return bool(group.get("state_dtype") not in (None, INT8_BLOCKWISE)
                or group.get("kahan_summation") or group.get("stochastic_rounding"))


def _state_dtype_option(value):
    """The state_dtype option as a name ("float32", ..., "param") or None."""
    if value is None or (isinstance(value, str) and value in _NAMED + (INT8_BLOCKWISE,)):
        return value
    if isinstance(value, str):
        raise ValueError(f"state_dtype must be None, 'float32', 'bfloat16', 'float16', "
                         f"'float64', 'param' or 'int8_blockwise', got {value!r}")
    try:
        name = _arrays.dtype_name(value)
    except Exception:
        name = None
    if name is None or name not in _NAMED:
        raise ValueError(f"state_dtype must be None, 'float32', 'bfloat16', 'float16', "
                         f"'float64', 'param' or 'int8_blockwise', got {value!r}")
    return name


def check_group(group: dict) -> None:
    """Raises ValueError naming the first low-precision option of a group that is wrong."""
    quantized = _state_dtype_option(group.get("state_dtype")) == INT8_BLOCKWISE
    for key in ("kahan_summation", "stochastic_rounding"):
        value = group.get(key, False)
        if isinstance(value, str) or value not in (True, False):
            raise ValueError(f"{key} must be True or False, got {value!r}")
    if group.get("kahan_summation") and group.get("stochastic_rounding"):
        raise ValueError("kahan_summation and stochastic_rounding exclude each other: the "
                         "compensation already keeps what rounding drops, and random rounding "
                         "would only add noise to it")
    if quantized:
        check_int8_group(group)
    seed = group.get("rounding_seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"rounding_seed must be an int from 0 to 2**32 - 1, got {seed!r}")


def check_int8_group(group: dict) -> None:
    """ValueError for what the 8-bit form does not support: amsgrad (a running max would have to
    survive requantization, which can round it down and break max(v_bar, v) >= v_bar), and the
    rounding options (its kernel rounds the params to nearest)."""
    if group.get("amsgrad"):
        raise ValueError("state_dtype='int8_blockwise' does not support amsgrad; use "
                         "state_dtype='float32' for amsgrad groups")
    for key in ("kahan_summation", "stochastic_rounding"):
        if group.get(key):
            raise ValueError(f"state_dtype='int8_blockwise' does not combine with {key}")


def state_dtype(group: dict, param_dtype: str) -> str:
    """The state dtype of a param of dtype ``param_dtype`` in ``group`` (checked by check_param)."""
    option = _state_dtype_option(group.get("state_dtype"))
    if option is None:
        return _arrays.state_dtype_name(param_dtype)
    return param_dtype if option == "param" else option


def state_dtype_ok(param_dtype: str, state: str) -> bool:
    """As the core's state_dtype_ok: the default, the param's dtype, or bfloat16 for
    float16/float32 params."""
    if state in (_arrays.state_dtype_name(param_dtype), param_dtype):
        return True
    return state == "bfloat16" and param_dtype in ("float16", "float32")


def check_param(i: int, p, group: dict) -> None:
    """TypeError when a group's low-precision options do not apply to param i's dtype."""
    dt = _arrays.dtype_name(p.dtype)
    if dt in _arrays.COMPLEX_DTYPES:
        if uses_lowp(group):
            raise TypeError(f"param {i} has dtype {dt}; the low-precision options "
                            f"(state_dtype, kahan_summation, stochastic_rounding) take real params")
        return
    state = state_dtype(group, dt)
    if not state_dtype_ok(dt, state):
        allowed = sorted({_arrays.state_dtype_name(dt), dt}
                         | ({"bfloat16"} if dt in ("float16", "float32") else set()))
        raise TypeError(f"param {i} has dtype {dt}, which cannot keep its state in {state} "
                        f"(state_dtype of its group); it takes {' or '.join(allowed)}")
    if group.get("kahan_summation") and dt not in _arrays.HALF_DTYPES:
        raise TypeError(f"param {i} has dtype {dt}; kahan_summation is for float16 and "
                        f"bfloat16 params (a {dt} param loses no updates to rounding that "
                        f"Kahan summation would keep)")
    if group.get("stochastic_rounding") and dt != "bfloat16":
        raise TypeError(f"param {i} has dtype {dt}; stochastic_rounding is for bfloat16 params")
    if group.get("stochastic_rounding") and _arrays.library(p) not in ("numpy", "torch", "cupy"):
        raise TypeError(f"param {i} is a {_arrays.library(p)} array; stochastic_rounding takes "
                        f"NumPy, CuPy or torch arrays (its bits are drawn through their views)")


def tensor_seed(group: dict, index: int) -> int:
    """The random stream of param ``index`` of the optimizer (a 64-bit seed)."""
    return ((int(group.get("rounding_seed", 0) or 0) << 32) + index) & _MASK64


def flags_of(group: dict) -> int:
    from ._hparams import KAHAN_SUMMATION, STOCHASTIC_ROUNDING

    flags = 0
    if group.get("kahan_summation"):
        flags |= KAHAN_SUMMATION
    if group.get("stochastic_rounding"):
        flags |= STOCHASTIC_ROUNDING
    return flags


def numpy_bfloat16(tensor) -> bool:
    """True when a NumPy tensor holds an ml_dtypes.bfloat16 array, which NumPy cannot export
    through DLPack: the CPU backend hands such arrays to the core as bfloat16 views
    (``_dispatch.native``), and the steady plans decline them."""
    return any(x is not None and type(x).__module__ == "numpy"
               and _arrays.dtype_name(x.dtype) == "bfloat16"
               for x in (tensor.param, tensor.grad, tensor.exp_avg, tensor.compensation))


def backend_for(backend, tensor):
    """The backend of a tensor whose group uses a low-precision option: the C++ CPU core (NumPy
    arrays, bfloat16 ones included, and torch CPU tensors), a backend that runs the modes natively (``lowp``:
    the CUDA kernels, for CuPy arrays and torch CUDA tensors) or the reference path, which
    implements the same modes bit for bit (every other library and device)."""
    from ._dispatch import CPU, REFERENCE

    if backend is CPU:
        return CPU
    if backend is not CPU and getattr(backend, "lowp", False):
        return backend
    return REFERENCE


def dtype_object(like, name: str):
    """The dtype object of ``name`` in the library of ``like`` (ml_dtypes' for NumPy bfloat16)."""
    if _arrays.library(like) == "numpy" and name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise TypeError("a NumPy bfloat16 state needs the ml_dtypes package "
                            "(pip install ml-dtypes)") from None
        return ml_dtypes.bfloat16
    return getattr(_arrays.namespace(like), name)


def zeros(backend, like, name: str):
    """A zero array like ``like`` (library, device, layout) of dtype ``name``."""
    lib = _arrays.library(like)
    if lib == "numpy":
        import numpy as np

        return np.zeros_like(like, dtype=dtype_object(like, name))
    if lib == "torch":
        import torch

        return torch.zeros_like(like, dtype=getattr(torch, name),
                                memory_format=torch.preserve_format)
    return backend.zeros(like, name)


def new_state(backend, p, group: dict, old: dict | None) -> dict:
    """Fresh state of param p in a group with low-precision options; missing entries of an
    existing state (amsgrad or kahan_summation switched on after steps) are added as zeros."""
    state_name = state_dtype(group, _arrays.dtype_name(p.dtype))
    state = dict(old) if old is not None else {"step": 0}
    for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
        if key not in state:
            state[key] = zeros(backend, p, state_name)
    if group.get("kahan_summation") and KAHAN_KEY not in state:
        state[KAHAN_KEY] = zeros(backend, p, _arrays.dtype_name(p.dtype))
    return state


def needs_state(state: dict | None, group: dict) -> bool:
    """True when a param's state lacks an entry its group needs."""
    if state is None or (group["amsgrad"] and "max_exp_avg_sq" not in state):
        return True
    return bool(group.get("kahan_summation")) and KAHAN_KEY not in state


def copy_like(value, like, name: str):
    """_arrays.copy_like, also for NumPy bfloat16 (ml_dtypes), which NumPy names no dtype for."""
    if _arrays.library(like) == "numpy" and name == "bfloat16":
        import numpy as np

        host = value if _arrays.library(value) == "numpy" else _arrays.to_numpy(value)
        return np.array(host, copy=True).astype(dtype_object(like, name))
    return _arrays.copy_like(value, like, name)


def constructor_options(state_dtype, kahan_summation, stochastic_rounding, rounding_seed) -> dict:
    """The low-precision keywords of a constructor that differ from their defaults (only those
    enter the optimizer's defaults, so plain optimizers keep torch's group keys)."""
    given = {"state_dtype": _state_dtype_option(state_dtype), "kahan_summation": kahan_summation,
             "stochastic_rounding": stochastic_rounding, "rounding_seed": rounding_seed}
    return {k: v for k, v in given.items() if v != LOWP_DEFAULTS[k] or k == "state_dtype"
            and v is not None}


def load_state(i: int, p, saved: dict, group: dict, state: dict) -> None:
    """The compensation of a saved state (Kahan summation), checked and copied into ``state``;
    a state without one starts from zeros at the next step."""
    if not group.get("kahan_summation") or KAHAN_KEY not in saved:
        return
    value = saved[KAHAN_KEY]
    got = _validation.check_saved_array(i, KAHAN_KEY, value, p)
    if got not in _arrays.FLOAT_DTYPES:
        raise ValueError(f"{KAHAN_KEY} of param {i} has dtype {got}; expected "
                         f"{_arrays.dtype_name(p.dtype)}")
    state[KAHAN_KEY] = copy_like(value, p, _arrays.dtype_name(p.dtype))
