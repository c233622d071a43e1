"""What the class API's Python side costs over many small tensors, warm and cold (bench/NOTES.md
section 8).

    python bench/class_overhead.py [k ...]    # k tensors of 8 elements each (default 1 10 100)

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


if __name__ == "__main__":
    main(tuple(map(int, sys.argv[1:])) or (1, 10, 100))
