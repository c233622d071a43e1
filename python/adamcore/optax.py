"""adamcore as optax GradientTransformations: the C++ core inside ``jax.jit``.

    tx = adamcore.optax.adamw(learning_rate=1e-3, weight_decay=1e-4)
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)   # optax's contract
    params = optax.apply_updates(params, updates)
    # or, fused (the core's bits, in place with donated buffers):
    params, state = adamcore.optax.apply(tx, grads, state, params)

Every step is one XLA FFI call over all leaves (adamcore._jax_ffi): one parallel region of the
CPU core. ``update`` follows optax: it returns updates to add, ``new_params - params``, which
optax.apply_updates adds back (that add rounds once, so params then agree with the core's to
one ulp). ``apply`` returns the core's new params themselves: bit for bit adamcore.Adam's.

The mapping to optax's formula: optax computes m_hat / (sqrt(v_hat + eps_root) + eps) with
m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t); adamcore computes
m / (sqrt(v) / sqrt(1 - b2^t) + eps) * lr / (1 - b1^t), the same expression with eps_root = 0
(eps is added to the bias-corrected sqrt(v_hat) in both). eps_root != 0 is refused: the core
has no term under the square root. b1 and b2 are adamcore's beta1 and beta2; optax.adamw's
weight_decay (lr * wd * p subtracted) is adamcore's decoupled weight decay (AdamW).

Importing this module imports jax and optax; ``import adamcore`` does not.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _hparams
from ._arrays import state_dtype_name
from ._jax_backend import fused_step

__all__ = ["ScaleByAdamState", "adam", "adamw", "apply", "scale_by_adam"]


class ScaleByAdamState(NamedTuple):
    """count: steps taken (int32, as optax's); mu, nu (, nu_max with amsgrad): like params, in
    the state dtype (float32 for 16-bit params)."""

    count: Any
    mu: Any
    nu: Any
    nu_max: Any = None


def _static(name, value):
    """A hyperparameter that becomes an FFI attribute: a number, or a concrete JAX scalar."""
    if isinstance(value, jax.core.Tracer):
        raise ValueError(f"{name} must be a static number (it is an attribute of the FFI call), "
                         f"got a traced value; only learning_rate may be traced (with "
                         f"optax.inject_hyperparams, pass static_args=('b1', 'b2', 'eps', ...))")
    return float(value) if isinstance(value, jax.Array) else value


def _check(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype):
    if eps_root != 0.0:
        raise ValueError(f"eps_root={eps_root!r} is not supported: adamcore's core adds eps "
                         "outside the square root only (optax's eps_root=0)")
    if mu_dtype is not None:
        raise ValueError("mu_dtype is not supported: adamcore keeps mu in the state dtype "
                         "(float32 for 16-bit params, else the param's)")
    group = {"lr": learning_rate if callable(learning_rate) or not isinstance(
                 learning_rate, jax.Array) else 0.0,
             "betas": (b1, b2), "eps": eps, "weight_decay": weight_decay,
             "decoupled_weight_decay": True, "decouple_lr": False, "max_lr": None,
             "amsgrad": False, "maximize": False}
    _hparams.check_group(group)


def _init(params, amsgrad):
    def zeros(p):
        return jnp.zeros(jnp.shape(p), dtype=state_dtype_name(jnp.dtype(p.dtype).name))

    mu = jax.tree.map(zeros, params)
    nu = jax.tree.map(zeros, params)
    return ScaleByAdamState(jnp.zeros([], jnp.int32), mu, nu,
                            jax.tree.map(zeros, params) if amsgrad else None)


def _make(learning_rate, b1, b2, eps, weight_decay, mask, amsgrad, direction_only):
    flags = _hparams.DECOUPLED_WEIGHT_DECAY | (_hparams.AMSGRAD if amsgrad else 0)

    def fused(grads, state, params):
        """(new params, new state): one FFI call per weight-decay value over all leaves."""
        count = state.count
        lr = learning_rate(count) if callable(learning_rate) else learning_rate
        step = optax.safe_int32_increment(count)
        leaves, treedef = jax.tree.flatten(params)
        g = treedef.flatten_up_to(grads)
        m = treedef.flatten_up_to(state.mu)
        v = treedef.flatten_up_to(state.nu)
        vmax = treedef.flatten_up_to(state.nu_max) if amsgrad else [None] * len(leaves)
        if mask is None:
            decayed = [True] * len(leaves)
        else:
            masked = mask(params) if callable(mask) else mask
            decayed = [bool(x) for x in treedef.flatten_up_to(masked)]
        new = [None] * len(leaves)
        for wd in {weight_decay if d else 0.0 for d in decayed}:
            idx = [i for i, d in enumerate(decayed) if (weight_decay if d else 0.0) == wd]
            out = fused_step([leaves[i] for i in idx], [g[i] for i in idx],
                             [m[i] for i in idx], [v[i] for i in idx],
                             [vmax[i] for i in idx] if amsgrad else None,
                             lr=lr, step=step, beta1=b1, beta2=b2, eps=eps,
                             weight_decay=wd, max_lr=1.0, flags=flags)
            for k, i in enumerate(idx):
                new[i] = tuple(o[k] if o is not None else None for o in out)
        unflat = lambda j: treedef.unflatten([n[j] for n in new])  # noqa: E731
        return unflat(0), ScaleByAdamState(step, unflat(1), unflat(2),
                                           unflat(3) if amsgrad else None)

    def init_fn(params):
        return _init(params, amsgrad)

    def update_fn(updates, state, params=None):
        if direction_only:
            # scale_by_adam: the core's step from a zero param with lr 1 is -m_hat/(sqrt(v_hat)+eps)
            zeros = jax.tree.map(jnp.zeros_like, updates)
            new_zero, new_state = fused(updates, state, zeros)
            return jax.tree.map(jnp.negative, new_zero), new_state
        if params is None:
            raise ValueError("adamcore.optax needs params in update(grads, state, params): the "
                             "core steps them (the updates are new_params - params)")
        new_params, new_state = fused(updates, state, params)
        deltas = jax.tree.map(lambda n, p: (n - p).astype(p.dtype), new_params, params)
        return deltas, new_state

    update_fn.fused = fused
    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adam(b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *, amsgrad=False):
    """optax.scale_by_adam over the core: updates m_hat / (sqrt(v_hat) + eps), for chaining."""
    b1, b2, eps, eps_root = (_static(n, x) for n, x in
                             (("b1", b1), ("b2", b2), ("eps", eps), ("eps_root", eps_root)))
    _check(1.0, b1, b2, eps, eps_root, 0.0, mu_dtype)
    return _make(1.0, b1, b2, eps, 0.0, None, amsgrad, True)


def adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None, *,
         amsgrad=False):
    """optax.adam over the core; learning_rate is a number, a (traced) scalar or a schedule."""
    b1, b2, eps, eps_root = (_static(n, x) for n, x in
                             (("b1", b1), ("b2", b2), ("eps", eps), ("eps_root", eps_root)))
    _check(learning_rate, b1, b2, eps, eps_root, 0.0, mu_dtype)
    return _make(learning_rate, b1, b2, eps, 0.0, None, amsgrad, False)


def adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, eps_root=0.0, mu_dtype=None,
          weight_decay=1e-4, mask=None, *, amsgrad=False):
    """optax.adamw over the core (decoupled weight decay lr * weight_decay * p; mask: a pytree
    of bools, or a callable of params giving one, True where decay applies)."""
    b1, b2, eps, eps_root, weight_decay = (_static(n, x) for n, x in (
        ("b1", b1), ("b2", b2), ("eps", eps), ("eps_root", eps_root),
        ("weight_decay", weight_decay)))
    _check(learning_rate, b1, b2, eps, eps_root, weight_decay, mu_dtype)
    return _make(learning_rate, b1, b2, eps, weight_decay, mask, amsgrad, False)


def apply(tx, grads, state, params):
    """(new_params, new_state) from an adamcore.optax transformation in one fused call: the
    core's params exactly (no add of updates), in place where the buffers are donated."""
    fused = getattr(tx.update, "fused", None)
    if fused is None:
        raise TypeError("adamcore.optax.apply takes a transformation made by adamcore.optax")
    return fused(grads, state, params)
