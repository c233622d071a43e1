"""What the class API adds to the native plan over many small tensors (bench/NOTES.md section 8).

    python bench/class_overhead.py ratio [threads]    # interleaved adamcore.Adam.step / CpuPlan.step
    python bench/class_overhead.py cold [k ...]       # the Python side, warm and cold, k tensors

``ratio`` alternates the two on their own copies of 100 float32 tensors of 10,000 elements and
prints medians and minima. ``cold`` steps k tensors of 8 elements (so the kernel is nearly
free; k = 1, 10, 100 by default) with the caches warm, then after a 32 MiB write before each
call, as a large step or a forward/backward pass would leave them.
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import adamcore
from adamcore import _core

HPARAMS = (1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3)


def tensors(n: int, k: int = 100):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(n).astype(np.float32) for _ in range(k)]
    grads = [(rng.standard_normal(n) * 1e-3).astype(np.float32) for _ in range(k)]
    copies = [p.copy() for p in params]
    plan = _core.CpuPlan(copies, [np.zeros(n, np.float32) for _ in range(k)],
                         [np.zeros(n, np.float32) for _ in range(k)], [], [], [], list(range(k)))
    t = [0]

    def raw():
        t[0] += 1
        plan.step(grads, [HPARAMS + (t[0], 0)])

    opt = adamcore.Adam(params, lr=HPARAMS[0])
    return raw, lambda: opt.step(grads)


def timed(f, before=None, rounds: int = 200) -> list[float]:
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return times


def ratio(threads: int, rounds: int = 400) -> None:
    adamcore.set_num_threads(threads)
    raw, cls = tensors(10_000)
    for _ in range(20):
        raw(), cls()
    r, c = [], []
    for i in range(rounds):
        for f in ((raw, cls) if i % 2 == 0 else (cls, raw)):
            (r if f is raw else c).extend(timed(f, rounds=1))
    mr, mc = statistics.median(r), statistics.median(c)
    print(f"threads={threads}: raw median {mr * 1e3:.3f} ms (min {min(r) * 1e3:.3f}), class "
          f"{mc * 1e3:.3f} ms (min {min(c) * 1e3:.3f}); class/raw {mc / mr:.3f} "
          f"(min {min(c) / min(r):.3f})")


def cold(counts=(1, 10, 100)) -> None:
    adamcore.set_num_threads(1)
    junk = np.zeros(32 << 20, np.uint8)

    def evict():
        junk.__iadd__(1)

    for k in counts:
        raw, cls = tensors(8, k)
        for _ in range(10):
            raw(), cls()
        row = []
        for before in (None, evict):
            r = statistics.median(timed(raw, before)) * 1e6
            c = statistics.median(timed(cls, before)) * 1e6
            row.append(f"raw {r:.1f} us, class {c:.1f} us, gap {c - r:.1f} us")
        print(f"{k} tensors: warm {row[0]} | cold {row[1]}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["ratio"]:
        ratio(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    elif sys.argv[1:2] == ["cold"]:
        cold(tuple(map(int, sys.argv[2:])) or (1, 10, 100))
    else:
        sys.exit(__doc__)
