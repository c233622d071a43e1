"""What the class API's Python side costs over many small tensors, warm and cold (bench/NOTES.md
section 8).

    python bench/class_overhead.py [k ...]    # k tensors of 8 elements each (default 1 10 100)
    python bench/class_overhead.py paths N T  # the steady plan's two paths, N elements per
                                              # tensor (100 tensors), T threads

Steps the bench's two adamcore rows, the raw core and ``opt.step`` (adamcore.bench.peers), on
tensors so small that the kernel is nearly free: first with the caches warm, then with a 32 MiB
write before each call, as a large step or a forward/backward pass would leave them. The
class/raw ratio at full size is the main bench's "1M in 100" case
(``python -m adamcore bench --cases "fp32 1M in 100"``).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from adamcore.bench import cases, peers, runner


def median_us(step, before=None, rounds: int = 200) -> float:
    times = []
    for _ in range(rounds):
        if before is not None:
            before()
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(counts) -> None:
    runner.set_threads(1)
    junk = np.zeros(32 << 20, np.uint8)

    def evict():
        junk.__iadd__(1)

    for k in counts:
        work = peers.make_work(cases.Case("cpu", (8,) * k, threads=1))
        raw, cls = (peer.setup(work).step for peer in (peers.AdamcoreRaw(), peers.AdamcoreClass()))
        for _ in range(10):
            raw(), cls()
        row = []
        for before in (None, evict):
            r, c = median_us(raw, before), median_us(cls, before)
            row.append(f"raw {r:.1f} us, class {c:.1f} us, gap {c - r:.1f} us")
        print(f"{k} tensors: warm {row[0]} | cold {row[1]}")


def paths(elements: int, threads: int, rounds: int = 300) -> None:
    """The raw core against adamcore.Adam's two steady paths over 100 tensors, interleaved in
    one process (each round runs the three in a rotating order): the one-call path NumPy params
    take (``CpuPlan.steady_step``) and the check-by-check path of the other libraries, forced
    by switching the plan's ``watched`` off; and the first one's native plan alone, on the same
    arrays. A 64 MiB write before each call leaves the caches as a forward and backward pass
    would, the same for every row (with 8 elements the kernel is nearly free)."""
    import adamcore

    runner.set_threads(threads)
    junk = np.zeros(64 << 20, np.uint8)  # written before each call: no call finds another's data
    work = [peers.make_work(cases.Case("cpu", (elements,) * 100, threads=threads))
            for _ in range(3)]
    raw = peers.AdamcoreRaw().setup(work[0]).step
    steps = {"raw": raw}
    for name, w in (("one call", work[1]), ("check by check", work[2])):
        opt = adamcore.Adam(w.params, lr=peers.LR, betas=(peers.BETA1, peers.BETA2),
                            eps=peers.EPS)
        opt.step(w.grads)
        opt._steady.watched = name == "one call"
        steps[name] = (lambda o, g: lambda: o.step(g))(opt, w.grads)
        if name == "one call":  # its native plan alone, on the same arrays
            hparams = opt._steady._hparams(opt.param_groups, None)
            steps["its kernel"] = (lambda n, g: lambda: n.step(g, hparams))(opt._steady.native,
                                                                            w.grads)
    names = list(steps)
    times = {n: [] for n in names}
    for r in range(rounds + 10):
        for k in range(len(names)):
            n = names[(r + k) % len(names)]
            junk.__iadd__(1)
            t0 = time.perf_counter()
            steps[n]()
            if r >= 10:
                times[n].append(time.perf_counter() - t0)
    med = {n: statistics.median(t) * 1e6 for n, t in times.items()}
    print(f"100 x {elements}, {threads} thread(s): "
          + ", ".join(f"{n} {med[n]:.1f} us ({med[n] / med['raw']:.3f}x)" for n in names))


if __name__ == "__main__":
    if sys.argv[1:2] == ["paths"]:
        paths(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main(tuple(map(int, sys.argv[1:])) or (1, 10, 100))
