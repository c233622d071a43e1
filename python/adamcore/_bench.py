"""python -m adamcore bench: adamcore against its peers and the roofline, interleaved, one run.

Each case times several implementations of one fp32 Adam step in rounds (A B C A B C ...) and
reports medians: these machines are shared and noisy, so only ratios taken in one run count.
Bytes per element: 28 (read p, g, m, v; write p, m, v). The roofline probe is the core's own
kernel with that access pattern and trivial arithmetic, timed in the same rounds.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import adamcore
from adamcore import _core

BYTES_PER_ELEMENT = 28  # fp32: p, g, m, v read; p, m, v written


@dataclass
class Case:
    name: str
    sizes: list[int]  # elements per tensor
    threads: int | None = None  # None: the core's default
    impls: dict = field(default_factory=dict)  # name -> setup(sizes) -> step callable

    @property
    def elements(self) -> int:
        return sum(self.sizes)


def _arrays(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return ([rng.standard_normal(n, dtype=np.float32) for n in sizes],
            [rng.standard_normal(n, dtype=np.float32) for n in sizes])


def setup_adamcore(sizes):
    params, grads = _arrays(sizes)
    opt = adamcore.Adam(params, lr=1e-3)
    return lambda: opt.step(grads)


def setup_probe(sizes):
    params, grads = _arrays(sizes)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    return lambda: [_core.stream_probe(*a) for a in zip(params, grads, m, v)]


def setup_numpy_naive(sizes):
    params, grads = _arrays(sizes)
    state = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    t = [0]

    def step():  # the textbook expressions, each a temporary array
        t[0] += 1
        b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
        for p, g, s in zip(params, grads, state):
            s[0] = b1 * s[0] + (1 - b1) * g
            s[1] = b2 * s[1] + (1 - b2) * g * g
            m_hat = s[0] / (1 - b1 ** t[0])
            v_hat = s[1] / (1 - b2 ** t[0])
            p -= lr * m_hat / (np.sqrt(v_hat) + eps)

    return step


def setup_numpy_out(sizes):
    params, grads = _arrays(sizes)
    state = [(np.zeros_like(p), np.zeros_like(p), np.empty_like(p)) for p in params]
    t = [0]

    def step():  # in-place ufuncs with out=: no allocation, several passes over memory
        t[0] += 1
        b1, b2, lr, eps = 0.9, 0.999, 1e-3, 1e-8
        step_size = lr / (1 - b1 ** t[0])
        inv_bc2 = 1 / np.sqrt(1 - b2 ** t[0])
        for p, g, (m, v, tmp) in zip(params, grads, state):
            m *= b1
            np.multiply(g, 1 - b1, out=tmp)
            m += tmp
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp *= inv_bc2
            tmp += eps
            np.divide(m, tmp, out=tmp)
            tmp *= step_size
            p -= tmp

    return step


def _setup_torch(mode):
    def setup(sizes):
        import torch

        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(n, generator=gen) for n in sizes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        kw = {"fused": True} if mode == "fused" else {"foreach": True}
        opt = torch.optim.Adam(params, lr=1e-3, **kw)
        return opt.step

    return setup


def default_cases(quick: bool) -> list[Case]:
    impls = {
        "adamcore": setup_adamcore,
        "probe (roofline)": setup_probe,
        "numpy naive": setup_numpy_naive,
        "numpy out=": setup_numpy_out,
    }
    try:
        import torch  # noqa: F401

        impls["torch fused"] = _setup_torch("fused")
        impls["torch foreach"] = _setup_torch("foreach")
    except ImportError:
        pass
    if quick:
        specs = [("4096", [4096], None), ("64K", [1 << 16], None), ("64K, 1 thread", [1 << 16], 1),
                 ("10 x 4096", [4096] * 10, None)]
    else:
        specs = [("4096", [4096], None), ("1M, 1 thread", [1 << 20], 1),
                 ("1M", [1 << 20], None), ("16M", [1 << 24], None), ("64M", [1 << 26], None),
                 ("100 tensors, 1M total", [(1 << 20) // 100] * 100, None)]
    return [Case(name, sizes, threads, dict(impls)) for name, sizes, threads in specs]


def time_case(case: Case, budget_s: float) -> dict[str, list[float]]:
    """Interleaved rounds until the budget is spent; returns seconds per step per impl."""
    steps = {}
    for name, setup in case.impls.items():
        fn = setup(case.sizes)
        fn()  # warm-up: first-step allocation, module loads, DeepSpeed-style builds
        steps[name] = fn
    samples = {name: [] for name in steps}
    # repeat each call enough that a sample lasts ~2 ms (timer resolution, call noise)
    t0 = time.perf_counter()
    steps["adamcore"]()
    reps = max(1, int(2e-3 / max(time.perf_counter() - t0, 1e-7)))
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < 5 or (time.perf_counter() < deadline and rounds < 200):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            samples[name].append((time.perf_counter() - t0) / reps)
        rounds += 1
    return samples


def run(quick: bool = False, cases: list[Case] | None = None) -> int:
    cases = cases if cases is not None else default_cases(quick)
    budget = 1.0 if quick else 4.0
    default_threads = adamcore.get_num_threads()
    print(f"adamcore {adamcore.__version__} bench, SIMD {adamcore.get_simd_level()}, "
          f"{default_threads} threads; fp32, {BYTES_PER_ELEMENT} B/element; medians of "
          f"interleaved rounds")
    header = f"{'case':24s} {'implementation':18s} {'time':>10s} {'GB/s':>8s} {'% probe':>8s}"
    print(header)
    print("-" * len(header))
    for case in cases:
        adamcore.set_num_threads(case.threads or default_threads)
        try:
            samples = time_case(case, budget)
        finally:
            adamcore.set_num_threads(default_threads)
        medians = {name: statistics.median(s) for name, s in samples.items()}
        probe = medians["probe (roofline)"]
        nbytes = case.elements * BYTES_PER_ELEMENT
        for name, t in sorted(medians.items(), key=lambda kv: kv[1]):
            time_text = f"{t * 1e6:8.1f}us" if t < 1e-3 else f"{t * 1e3:8.3f}ms"
            print(f"{case.name:24s} {name:18s} {time_text:>10s} {nbytes / t / 1e9:8.1f} "
                  f"{100 * probe / t:7.0f}%")
        print()
    return 0
