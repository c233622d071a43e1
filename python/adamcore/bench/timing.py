"""Interleaved timing: every implementation of a case runs once per round, in an order shuffled
every round (A C B, B A C, ...).

These machines are shared and noisy; interleaving spreads a disturbance over all implementations
alike, so the ratios of medians taken in one run are what counts. A sample also starts with what
the one before it left in the caches (implementations that share arrays find them warm): the
shuffle, seeded, makes that the same for every implementation on average instead of favouring
one fixed neighbour (bench/NOTES.md, CPU section 8). Warm-up calls (first-step state
allocation, lazy builds, caches) are never timed. On a GPU each sample is bracketed by device
events on the current stream, so it measures the device's time, host gaps (Python) included.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable


class WallClock:
    """Host timer for CPU work (the work is done when the call returns)."""

    def measure(self, fn: Callable[[], object], reps: int) -> float:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t0) / reps

    def sync(self) -> None:
        pass


class CudaEvents:
    """Device timer: CUDA events around the calls, on CuPy's (or torch's) current stream."""

    def __init__(self):
        try:
            import cupy

            self._event = lambda: cupy.cuda.Event()
            self._sync = lambda: cupy.cuda.get_current_stream().synchronize()
            self._elapsed_ms = cupy.cuda.get_elapsed_time
        except ImportError:
            import torch

            self._event = lambda: torch.cuda.Event(enable_timing=True)
            self._sync = torch.cuda.synchronize
            self._elapsed_ms = lambda a, b: a.elapsed_time(b)

    def measure(self, fn: Callable[[], object], reps: int) -> float:
        start, end = self._event(), self._event()
        self._sync()  # the previous implementation's work is not charged to this one
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        return self._elapsed_ms(start, end) * 1e-3 / reps

    def sync(self) -> None:
        self._sync()


def calibrate(timer, fn: Callable[[], object], sample_s: float, warmup: int = 2) -> int:
    """Runs the warm-up calls and returns how many calls make one sample of about sample_s.

    One call is timed up to three times and the fastest counts: a single slow call (the first
    steady step after a plan is built, a cold cache) would give that implementation fewer calls
    per sample, and so a larger share of each sample's cold first call, than its neighbours
    (bench/NOTES.md, CPU section 10: 9 calls against 16 made the class API look 1.1x slower)."""
    for _ in range(warmup):
        fn()
    timer.sync()
    once = timer.measure(fn, 1)
    for _ in range(2):
        if once >= sample_s:
            break
        once = min(once, timer.measure(fn, 1))
    return max(1, min(10_000, round(sample_s / max(once, 1e-7))))


def interleaved(timer, fns: dict[str, Callable[[], object]], reps: dict[str, int],
                budget_s: float, min_rounds: int = 3, max_rounds: int = 200,
                progress: Callable[[int], None] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each fn, one sample per round, rounds until budget_s is spent; the
    order within a round is shuffled (seeded: the same orders in every run)."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    shuffle = random.Random(0).shuffle
    deadline = time.perf_counter() + budget_s
    rounds = 0
    while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() < deadline):
        shuffle(order)
        for name in order:
            samples[name].append(timer.measure(fns[name], reps[name]))
        rounds += 1
        if progress:
            progress(rounds)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)
