"""The JAX rows of the bench: adamcore.optax through jax.jit against optax.adam through jax.jit.

A JAX case ("jax fp32 64M, 2 threads") runs on JAX's CPU backend. Each step is a jitted
function of (grads, state, params) with the state and the params donated, as a training loop
runs it: adamcore's is adamcore.optax.apply (one XLA FFI call over every leaf, updating the
donated buffers in place), optax's is tx.update + optax.apply_updates. Both are set against the
same roofline probe as the CPU cases, over the same number of float32 elements.
"""

from __future__ import annotations

import numpy as np

from . import peers as peers_mod
from .peers import ADAMCORE, BETA1, BETA2, EPS, LR, PEER, Impl, Peer, Skip, Work, have

INSTALL_JAX = "jax is not installed (pip install jax optax)"


def make_work(case) -> Work:
    """Host float32 params (each implementation puts its own copy into JAX) and shared grads."""
    if not (have("jax") and have("optax")):
        raise Skip(INSTALL_JAX)
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n, dtype=np.float32) for n in case.sizes]
    grads = [jnp.asarray(rng.standard_normal(n, dtype=np.float32)) for n in case.sizes]
    return Work(case, "jax", params, grads)


def _jitted_stepper(work: Work, tx, step_fn) -> Impl:
    """A callable running one jitted, donated step of step_fn(tx, grads, state, params) ->
    (params, state) on the work's own copy of the params, waiting for its result."""
    import jax
    import jax.numpy as jnp

    params = [jnp.asarray(p) for p in work.params]
    box = [tx.init(params), params]
    grads = work.grads
    # The outputs in the donated arguments' order, (state, params): jax pairs each donated buffer
    # with the first output of its shape and dtype, so (params, state) would hand params' output
    # the first moment's buffer, and XLA would copy every array at every step.
    fn = jax.jit(lambda g, s, p: step_fn(tx, g, s, p)[::-1], donate_argnums=(1, 2))

    def step():
        box[0], box[1] = fn(grads, box[0], box[1])
        jax.block_until_ready(box[1])

    step.arrays = box  # (state, params), for the test that the step stays in place
    return Impl(step, lambda: 28 * work.case.elements)


class AdamcoreOptax(Peer):
    name, kind, devices = "adamcore.optax (jit)", ADAMCORE, ("jax",)

    def setup(self, work):
        from adamcore import _jax_backend

        if not _jax_backend.available():
            raise Skip("adamcore was built without its JAX FFI module "
                       "(pip install . -Cadamcore.jax=true)")
        import adamcore.optax as aox

        return _jitted_stepper(work, aox.adam(LR, b1=BETA1, b2=BETA2, eps=EPS),
                               lambda tx, g, s, p: aox.apply(tx, g, s, p))


class OptaxAdam(Peer):
    name, kind, devices = "optax.adam (jit)", PEER, ("jax",)

    def setup(self, work):
        import optax

        def step(tx, g, s, p):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        return _jitted_stepper(work, optax.adam(LR, b1=BETA1, b2=BETA2, eps=EPS), step)


JAX_PEERS = [peers_mod.CpuProbe(), AdamcoreOptax(), OptaxAdam()]
