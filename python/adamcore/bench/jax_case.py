"""The JAX case: adamcore.optax.adam through jax.jit against optax.adam through jax.jit (CPU).

    python -m adamcore.bench.jax_case [--sizes 1048576,67108864] [--tensors 1,64] [--rounds 5]

Each step is a jitted function of (grads, state, params) with the state and params donated, as a
training loop runs it; adamcore's is adamcore.optax.apply (one FFI call over all leaves, updated
in place), optax's is update + apply_updates. Both are timed in interleaved rounds (median), and
set against the roofline probe (adamcore._core.stream_probe: the step's 4 reads and 3 writes
with trivial arithmetic) over the same float32 elements. Separate from the main bench's CLI.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _split(total: int, count: int) -> list[int]:
    base = total // count
    return [base + (1 if i < total - base * count else 0) for i in range(count)]


def _steppers(sizes: list[int]):
    import jax
    import jax.numpy as jnp
    import optax

    import adamcore.optax as aox

    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.standard_normal(n).astype(np.float32)) for n in sizes]

    def make(tx, fused):
        params = [jnp.asarray(rng.standard_normal(n).astype(np.float32)) for n in sizes]
        state = tx.init(params)
        if fused:
            fn = jax.jit(lambda g, s, p: aox.apply(tx, g, s, p)[::-1], donate_argnums=(1, 2))
        else:
            def step(g, s, p):
                u, s = tx.update(g, s, p)
                return optax.apply_updates(p, u), s
            fn = jax.jit(lambda g, s, p: step(g, s, p)[::-1], donate_argnums=(1, 2))
        box = [state, params]

        def run():
            box[0], box[1] = fn(grads, box[0], box[1])
            jax.block_until_ready(box[1])
        return run

    return {"adamcore.optax.adam": make(aox.adam(1e-3), True),
            "optax.adam": make(optax.adam(1e-3), False)}


def _probe(total: int):
    from adamcore import _core

    p, g, m, v = (np.ones(total, np.float32) for _ in range(4))
    return lambda: _core.stream_probe(p, g, m, v)


def _time(fn, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def run_case(total: int, tensors: int, rounds: int = 5) -> dict[str, float]:
    """Median seconds per step of each implementation and of the probe for one case."""
    impls = dict(_steppers(_split(total, tensors)))
    impls["probe"] = _probe(total)
    reps = max(1, int(0.2 / max(1e-6, _time(impls["probe"], 1) * 3)))
    for fn in impls.values():
        fn()
        fn()
    samples: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(rounds):
        for name, fn in impls.items():
            samples[name].append(_time(fn, reps))
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1048576,67108864")
    ap.add_argument("--tensors", default="1,64")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args(argv)
    import adamcore

    print(f"threads {adamcore.get_num_threads()}, SIMD {adamcore.get_simd_level()}")
    print("| elements | tensors | implementation | time/step | % of probe |")
    print("|---:|---:|---|---:|---:|")
    for total in (int(s) for s in args.sizes.split(",")):
        for count in (int(c) for c in args.tensors.split(",")):
            res = run_case(total, count, args.rounds)
            for name in ("adamcore.optax.adam", "optax.adam"):
                pct = 100.0 * res["probe"] / res[name]
                print(f"| {total} | {count} | {name} | {res[name] * 1e3:.3f} ms | {pct:.0f}% |",
                      flush=True)


if __name__ == "__main__":
    main()
