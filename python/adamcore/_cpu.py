"""Settings of the CPU core: its threads and its SIMD level."""

from __future__ import annotations

import operator
import platform

from . import _core


MAX_THREADS = 1 << 16  # far above any machine's cores; beyond it OpenMP cannot start a team


def set_num_threads(n: int) -> None:
    """Sets the threads of the CPU core (default: OMP_NUM_THREADS, else all cores).

    ``n`` is an integer (a NumPy or torch integer scalar too) from 1 to 65536.
    """
    if isinstance(n, bool):
        raise TypeError(f"n must be an int, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {n!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"the number of threads must be from 1 to {MAX_THREADS}, got {n}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the CPU core uses for a large step."""
    return _core.get_num_threads()


def get_simd_level() -> str:
    """The SIMD level the CPU kernels run: 'avx512', 'avx2' or 'baseline'."""
    return _core.simd_level()


def set_simd_level(level: str | None = None) -> None:
    """Runs the CPU kernels at ``level`` (one of available_simd_levels()); None picks the best.

    The environment variable ADAMCORE_SIMD chooses the level at import in the same way.
    All levels compute the same numbers, bit for bit; they differ only in speed.
    """
    _core.set_simd_level(level or "")


def available_simd_levels() -> list[str]:
    """The levels compiled into this build that this CPU can run, widest first."""
    return _core.supported_simd_levels()


def compiled_simd_levels() -> list[str]:
    """Every level compiled into this build, widest first."""
    return _core.compiled_simd_levels()


def cpu_model() -> str:
    """The CPU's model name, as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
