"""python -m adamcore: `info` (what this install can do) and `bench` (SPEC §5's table)."""

from __future__ import annotations

import argparse
import os
import platform
import sys


def info_lines() -> list[str]:
    import adamcore
    from adamcore import _core

    lines = [
        f"adamcore {adamcore.__version__} (C ABI {_core.version})",
        f"python {platform.python_version()} on {platform.machine()} {platform.system()}",
        f"cpu: {_cpu_model()} ({os.cpu_count()} logical cores)",
        "backends: cpu (compiled), reference (pure Array API)",
        f"simd: {adamcore.get_simd_level()} in use; available here: "
        f"{', '.join(adamcore.available_simd_levels())}; compiled: "
        f"{', '.join(adamcore.compiled_simd_levels())}",
        f"threads: {adamcore.get_num_threads()} (OpenMP: {'yes' if _core.openmp else 'no'})",
    ]
    return lines


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamcore", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="version, backends, SIMD levels, threads")
    bench = sub.add_parser("bench", help="time adamcore against its peers and the roofline")
    bench.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    args = parser.parse_args(argv)

    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    if args.command == "bench":
        from ._bench import run

        return run(quick=args.quick)
    parser.print_help()
    return 0
