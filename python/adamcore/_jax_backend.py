"""The JAX backend: the Adam step as one XLA FFI call (adamcore._jax_ffi) over the C++ CPU core.

``fused_step`` steps any number of JAX arrays in one custom call, eagerly or under ``jax.jit``
(and ``jax.vmap``: each batch element gets its own lr and step). XLA's arrays are immutable, so
the call returns new arrays; its outputs are aliased to the param and state inputs, so where the
caller donates those buffers (``jax.jit(..., donate_argnums=...)``) the update is in place.

The learning rate and the step count are device scalars, so a traced schedule value or step
count does not retrace; the other hyperparameters are static attributes of the call. A Python
float lr reaches the core exactly (as a sum of three float32s), also without jax_enable_x64.

Importing this module imports jax; ``import adamcore`` does not import it.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _arrays, _lowp, _validation
from ._dispatch import Backend, StepTensor
from ._hparams import AMSGRAD, DECOUPLE_LR

TARGET = "adamcore_adam_step"


@functools.cache
def _registered() -> bool:
    """Registers the CPU handler with XLA once; raises ImportError where it was not built."""
    import jax

    try:
        from . import _jax_ffi
    except ImportError as e:
        raise ImportError("adamcore was built without its JAX FFI module (adamcore._jax_ffi): "
                          "no jaxlib where adamcore was built; pip install . -Cadamcore.jax=true "
                          "builds it") from e
    for name, capsule in _jax_ffi.registrations().items():
        jax.ffi.register_ffi_target(name, capsule, platform="cpu")
    # built with the CUDA backend: the same target on XLA's CUDA stream (untested: no GPU in CI)
    for name, capsule in _jax_ffi.cuda_registrations().items():
        try:
            jax.ffi.register_ffi_target(name, capsule, platform="CUDA")
        except Exception:  # a jaxlib without CUDA: the CPU target still works  # noqa: BLE001
            pass
    return True


def available() -> bool:
    try:
        return _registered()
    except ImportError:
        return False


def _lr_operand(lr):
    """lr as float[3] whose sum (in float64) is lr: exact for a Python float without x64."""
    import jax.numpy as jnp

    if isinstance(lr, (int, float, np.floating, np.integer)):
        x = float(lr)
        hi = np.float32(x)
        mid = np.float32(x - float(hi))
        lo = np.float32(x - float(hi) - float(mid))
        return jnp.asarray(np.array([hi, mid, lo], dtype=np.float32))
    lr = jnp.asarray(lr)
    if lr.dtype == jnp.float64:
        return jnp.stack([lr, jnp.zeros_like(lr), jnp.zeros_like(lr)], axis=-1)
    lr = lr.astype(jnp.float32)
    return jnp.stack([lr, jnp.zeros_like(lr), jnp.zeros_like(lr)], axis=-1)


def _step_operand(step):
    import jax.numpy as jnp

    if isinstance(step, (int, np.integer)) and not isinstance(step, bool):
        if not 1 <= int(step) < 2**31:
            raise ValueError(f"step must be an int >= 1 (the index of this update), got {step!r}")
        return jnp.asarray(np.int32(step))
    step = jnp.asarray(step)
    if step.dtype not in (jnp.int32, jnp.int64):
        raise TypeError(f"step has dtype {step.dtype}; it must be int32 or int64")
    return step



def _check_state_dtype(i: int, p, exp_avg) -> None:
    """A state dtype other than the default gets the message the other front ends give when
    the param cannot keep its state in it, and otherwise says the FFI call lacks it."""
    default = _arrays.state_dtype_name(_arrays.dtype_name(p.dtype))
    state = _arrays.dtype_name(getattr(exp_avg, "dtype", None)) if exp_avg is not None else None
    if state == default or state not in _arrays.FLOAT_DTYPES:
        return  # check_state names anything else
    _lowp.check_param(i, p, {"state_dtype": state})
    raise TypeError(f"exp_avg {i} has dtype {state}; adamcore's XLA FFI call keeps the state "
                    f"of a {_arrays.dtype_name(p.dtype)} param in {default} (state_dtype "
                    f"{state} runs in adamcore.Adam and adamcore.torch, not inside jit)")

def fused_step(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, *, lr, step, beta1,
               beta2, eps, weight_decay, max_lr, flags):
    """One step of every tensor in one FFI call; returns lists (params, exp_avgs, exp_avg_sqs,
    max_exp_avg_sqs or None). lr and step may be Python numbers or (traced) JAX scalars; the
    rest are Python numbers. Checks every array first, with adamcore's messages."""
    import jax

    _registered()
    amsgrad = bool(flags & AMSGRAD)
    n = len(params)
    for what, seq in (("grads", grads), ("exp_avgs", exp_avgs), ("exp_avg_sqs", exp_avg_sqs)):
        if len(seq) != n:
            raise ValueError(f"got {len(seq)} {what} for {n} params")
    if amsgrad and (max_exp_avg_sqs is None or len(max_exp_avg_sqs) != n):
        raise ValueError("amsgrad needs one max_exp_avg_sq per param")
    for i in range(n):
        _validation.check_param(i, params[i])
        _validation.check_grad(i, params[i], grads[i])
        _check_state_dtype(i, params[i], exp_avgs[i])
        _validation.check_state(i, params[i], exp_avgs[i], "exp_avg")
        _validation.check_state(i, params[i], exp_avg_sqs[i], "exp_avg_sq")
        if amsgrad:
            _validation.check_state(i, params[i], max_exp_avg_sqs[i], "max_exp_avg_sq")
    if n == 0:
        return [], [], [], ([] if amsgrad else None)
    if not flags & DECOUPLE_LR:
        max_lr = 1.0  # unread by the core; the handler sets it to lr
    elif not (math.isfinite(max_lr) and max_lr > 0):
        raise ValueError(f"max_lr must be a finite number > 0, got {max_lr!r}")

    operands, results, aliases = [_lr_operand(lr), _step_operand(step)], [], {}
    per_in = 5 if amsgrad else 4
    for i in range(n):
        arrays = [params[i], grads[i], exp_avgs[i], exp_avg_sqs[i]]
        if amsgrad:
            arrays.append(max_exp_avg_sqs[i])
        base = len(operands)
        operands.extend(arrays)
        for k in ((0, 2, 3, 4) if amsgrad else (0, 2, 3)):
            aliases[base + k] = len(results)
            results.append(jax.ShapeDtypeStruct(arrays[k].shape, arrays[k].dtype))
    call = jax.ffi.ffi_call(TARGET, results, vmap_method="broadcast_all",
                            input_output_aliases=aliases)
    out = call(*operands, beta1=np.float64(beta1), beta2=np.float64(beta2),
               eps=np.float64(eps), weight_decay=np.float64(weight_decay),
               max_lr=np.float64(max_lr), flags=np.int64(flags))
    per_out = per_in - 1
    new_p = [out[i * per_out] for i in range(n)]
    new_m = [out[i * per_out + 1] for i in range(n)]
    new_v = [out[i * per_out + 2] for i in range(n)]
    new_vmax = [out[i * per_out + 3] for i in range(n)] if amsgrad else None
    return new_p, new_m, new_v, new_vmax


class JaxNative(Backend):
    """JAX arrays (CPU), stepped by the C++ core through one XLA FFI call per hparams set."""

    name = "jax"
    in_place = False  # JAX arrays are immutable: run returns the new arrays

    def zeros(self, param, dtype_name: str):
        import jax.numpy as jnp

        return jnp.zeros(param.shape, dtype=dtype_name)

    def run(self, tensors: list[StepTensor], hparams) -> list[tuple]:
        results: list = [None] * len(tensors)
        for index, hp in enumerate(hparams):
            idx = [i for i, t in enumerate(tensors) if t.hparams_index == index]
            if not idx:
                continue
            ts = [tensors[i] for i in idx]
            amsgrad = bool(hp.flags & AMSGRAD)
            p, m, v, vmax = fused_step(
                [t.param for t in ts], [t.grad for t in ts], [t.exp_avg for t in ts],
                [t.exp_avg_sq for t in ts], [t.max_exp_avg_sq for t in ts] if amsgrad else None,
                lr=hp.lr, step=hp.step, beta1=hp.beta1, beta2=hp.beta2, eps=hp.eps,
                weight_decay=hp.weight_decay, max_lr=hp.max_lr, flags=hp.flags)
            for k, i in enumerate(idx):
                results[i] = (p[k], m[k], v[k], vmax[k] if amsgrad else None)
        return results


def load() -> JaxNative | None:
    """The backend, or None where adamcore._jax_ffi was not built."""
    return JaxNative() if available() else None
