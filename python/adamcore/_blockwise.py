"""8-bit block-quantized Adam state (``state_dtype="int8_blockwise"``, docs/int8-state.md).

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

from . import _lowp, _reference, _validation
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
        # from sqrt(v), which the kernels share with the update's denominator, against
        # 1 / sqrt(absmax) (blockwise.h's quant_root_factor)
        root_factor = np.where(absmax > 0, np.float32(1.0) / np.sqrt(absmax),
                               np.float32(1.0)).astype(np.float32)
        r = np.sqrt(np.sqrt(x) * root_factor[:, None]) * V_CODE_MAX
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


# ---- the optimizers' side: groups, state, steps, state dicts ----------------------------------

STATE_DTYPE = _lowp.INT8_BLOCKWISE


def is_quantized(group: dict) -> bool:
    """True when a param group keeps its state in the 8-bit blockwise form."""
    return group.get("state_dtype") == STATE_DTYPE


check_group = _lowp.check_int8_group  # one rule for the group, also checked at construction


def _check_param(i: int, p) -> None:
    from . import _arrays
    lib = _arrays.library(p)
    dtype = _arrays.dtype_name(p.dtype)
    if dtype not in ("float32", "float16", "bfloat16"):
        raise TypeError(f"param {i} has dtype {dtype}; state_dtype='int8_blockwise' takes "
                        f"float32, float16 or bfloat16 params")
    if lib in ("numpy", "cupy"):
        contiguous = p.flags.c_contiguous
    elif lib == "torch":
        if p.device.type not in ("cpu", "cuda"):
            raise ValueError(f"param {i} is on {p.device}; state_dtype='int8_blockwise' runs on "
                             f"the CPU core and the CUDA backend")
        contiguous = p.is_contiguous()
    else:
        raise TypeError(f"param {i} is a {lib} array; state_dtype='int8_blockwise' takes NumPy "
                        f"and CuPy arrays and torch CPU and CUDA tensors")
    if _device_of(p) is not None:
        _require_cuda(i, p)
    if not contiguous:
        raise ValueError(f"param {i} is not C-contiguous; state_dtype='int8_blockwise' quantizes "
                         f"blocks of the flattened param and takes contiguous params")


def _device_of(p):
    """None for host memory (the CPU core's), else the CUDA backend's (library, device) key."""
    if type(p) is np.ndarray:
        return None
    from . import _arrays
    lib = _arrays.library(p)
    if lib == "numpy" or (lib == "torch" and p.device.type == "cpu"):
        return None
    from ._cuda_backend import _device_key
    return _device_key(p)


def _require_cuda(i: int, p) -> None:
    from . import _cuda_backend
    if _cuda_backend.load() is None:
        raise ValueError(f"param {i} is on {p.device}, but the CUDA backend cannot run here: "
                         f"{_cuda_backend.probe()[1]}")


def new_state(i: int, p, old: dict | None = None) -> dict:
    """The quantized state of param i: zeros, or ``old`` (a float state) quantized."""
    _check_param(i, p)
    n = int(_size(p))
    if old is not None and "exp_avg_absmax" not in old:
        from . import _arrays
        mc, ma = quantize_m(_arrays.to_numpy(old["exp_avg"]))
        vc, va = quantize_v(_arrays.to_numpy(old["exp_avg_sq"]))
        arrays = {"exp_avg": mc, "exp_avg_sq": vc, "exp_avg_absmax": ma, "exp_avg_sq_absmax": va}
    else:
        arrays = zeros_state(n)
    state = {k: v for k, v in (old or {"step": 0}).items() if k == "step"}
    state.update(_in_library(p, arrays))
    return state


def dequantized_state(p, state: dict) -> dict:
    """A quantized state as float32 m and v of p's shape, in p's library (the other way)."""
    from . import _arrays
    m = dequantize_m(_arrays.to_numpy(state["exp_avg"]), _arrays.to_numpy(state["exp_avg_absmax"]))
    v = dequantize_v(_arrays.to_numpy(state["exp_avg_sq"]),
                     _arrays.to_numpy(state["exp_avg_sq_absmax"]))
    out = {k: v for k, v in state.items() if k == "step"}
    out["exp_avg"] = _arrays.copy_like(m.reshape(tuple(p.shape)), p, "float32")
    out["exp_avg_sq"] = _arrays.copy_like(v.reshape(tuple(p.shape)), p, "float32")
    return out


def _size(p) -> int:
    n = 1
    for d in p.shape:
        n *= int(d)
    return n


def _in_library(p, arrays: dict) -> dict:
    """Codes shaped like p, absmax flat, in p's library and on its device."""
    from . import _arrays
    shape = tuple(p.shape)
    out = {}
    for key, dtype in STATE_KEYS.items():
        value = arrays[key]
        if key in ("exp_avg", "exp_avg_sq"):
            value = value.reshape(shape)
        out[key] = _arrays.copy_like(value, p, dtype)
    return out


def load_param_state(i: int, p, saved: dict, group: dict) -> dict:
    """A saved state (quantized or float) for param i of a group, in the group's form: the
    quantized form is restored exactly; a float state is quantized into an int8_blockwise group,
    and a quantized one dequantized into a float32 group. Checked before anything is made."""
    from . import _arrays, _scalars
    if not isinstance(saved, dict) or "step" not in saved:
        raise ValueError(f"the state of param {i} has no 'step'")
    step = _scalars.step_count(f"the step of param {i}", saved["step"])
    quantized_saved = "exp_avg_absmax" in saved
    if not quantized_saved:  # a float state into a quantized group
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in saved or not _arrays.is_array(saved[key]):
                raise ValueError(f"the state of param {i} has no array '{key}'")
            _validation.check_saved_array(i, key, saved[key], p)
        state = new_state(i, p, {"step": step, "exp_avg": saved["exp_avg"],
                                 "exp_avg_sq": saved["exp_avg_sq"]})
        return state
    n = _size(p)
    want = {"exp_avg": n, "exp_avg_sq": n, "exp_avg_absmax": blocks(n), "exp_avg_sq_absmax": blocks(n)}
    for key, dtype in STATE_KEYS.items():
        value = saved.get(key)
        if value is None or not _arrays.is_array(value):
            raise ValueError(f"the quantized state of param {i} has no array '{key}'")
        got = _arrays.dtype_name(value.dtype)
        if got != dtype:
            raise ValueError(f"{key} of param {i} has dtype {got}; the int8_blockwise form keeps "
                             f"it as {dtype}")
        size = _size(value)
        if size != want[key]:
            raise ValueError(f"{key} of param {i} has {size} elements; a param of {n} elements "
                             f"needs {want[key]} (blocks of {BLOCK})")
    arrays = {key: _arrays.to_numpy(saved[key]).reshape(-1) for key in STATE_KEYS}
    state = {"step": step, **arrays}
    if not is_quantized(group):
        if group.get("amsgrad"):
            raise ValueError(f"the state of param {i} is int8_blockwise, its group has amsgrad "
                             f"on: there is no max_exp_avg_sq to restore")
        return dequantized_state(p, state)
    _check_param(i, p)
    return {"step": step, **_in_library(p, arrays)}


def step(work: list) -> None:
    """Steps the quantized params of one optimizer step (engine Work items with ``absmax``): one
    call of the CPU core for host memory and one of the CUDA backend per device, each validating
    all of its arrays before it writes any; with several calls, every call validates first."""
    from functools import partial

    from . import _core, _cuda_backend, _hparams
    from ._dispatch import _exportable, bump_versions, native
    from ._memory import readable
    hparams, at = [], {}
    calls: dict = {}  # None (the CPU core) or a CUDA device key -> the call's argument lists
    for w in work:
        _check_param(w.index, w.param)
        key = (id(w.group), w.step)
        if key not in at:
            at[key] = len(hparams)
            hparams.append(tuple(_hparams.step_hparams(w.group, w.step)))
        args = calls.setdefault(_device_of(w.param), ([], [], [], [], [], [], []))
        for arg, x in zip(args, (native(_exportable(w.param)),
                                 native(_exportable(readable(w.grad))), w.exp_avg, w.exp_avg_sq,
                                 w.absmax[0], w.absmax[1], at[key])):
            arg.append(x)
    runs = []
    for device, args in calls.items():
        if device is None:
            runs.append(partial(_core.adam_step_blockwise, *args, hparams))
        else:
            module = _cuda_backend.load().cuda
            runs.append(partial(module.adam_step_blockwise, *args, hparams,
                                stream=_cuda_backend._current_stream(*device)))
    if len(runs) > 1:
        for run in runs:
            run(validate_only=True)
    for run in runs:
        run()
    if not all(type(w.param) is np.ndarray for w in work):
        written = [x for args in calls.values() for arrays in (args[0], *args[2:6]) for x in arrays]
        bump_versions([x for x in written if type(x).__module__.startswith("torch")])


class Plan:
    """The steady plan's native side for 8-bit groups of NumPy params (adamcore.Adam): the
    arrays' lists built once; each step is one call of the CPU core, which imports and
    validates every array again (so a param reshaped or made read-only in place is refused
    before any write, and the general step then says why). Made by ``make_plan``."""

    def __init__(self, params, codes_m, codes_v, absmax_m, absmax_v, index):
        from . import _core

        self._step = _core.adam_step_blockwise
        self.arrays = (params, codes_m, codes_v, absmax_m, absmax_v)
        self.index = index

    def holds(self, params, grads) -> bool:
        """Whether the grads are NumPy arrays (the core checks the rest)."""
        return all(type(g) is np.ndarray for g in grads)

    def step(self, grads, hparams, check_finite: bool) -> None:
        params, codes_m, codes_v, absmax_m, absmax_v = self.arrays
        self._step(params, grads, codes_m, codes_v, absmax_m, absmax_v, self.index, hparams,
                   check_finite)


def make_plan(params: list, states: list[dict], index: list[int]) -> Plan | None:
    """A Plan over these params and their 8-bit states, or None where the general step must take
    them: a state not (yet) in the 8-bit form, params that are not plain NumPy arrays in float16
    or float32 (ml_dtypes bfloat16 goes to the core as single-use views; torch and CUDA params
    keep the general step)."""
    if not all(type(p) is np.ndarray and p.dtype.kind == "f" for p in params):
        return None
    if not all("exp_avg_absmax" in s for s in states):
        return None
    return Plan(list(params), [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["exp_avg_absmax"] for s in states],
                [s["exp_avg_sq_absmax"] for s in states], index)
