"""python -m adamcore: `info` (what this install can do) and `bench` (docs/performance.md).

For C and C++ builds against the C ABI: --include-dir, --cmake-dir and --library print where the
header, the CMake package and libadamcore are.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys


def info_lines() -> list[str]:
    import adamcore
    from adamcore import _core, _cpu

    lines = [
        f"adamcore {adamcore.__version__} (C ABI {_core.version})",
        f"python {platform.python_version()} on {platform.machine()} {platform.system()}",
        f"cpu: {_cpu.cpu_model()} ({os.cpu_count()} logical cores)",
        "backends: cpu (compiled), reference (pure Array API)",
        f"simd: {adamcore.get_simd_level()} in use; available here: "
        f"{', '.join(adamcore.available_simd_levels())}; compiled: "
        f"{', '.join(adamcore.compiled_simd_levels())}",
        f"threads: {adamcore.get_num_threads()} (OpenMP: {'yes' if _core.openmp else 'no'})",
    ]
    from ._cuda_backend import info_lines as cuda_info_lines

    lines += cuda_info_lines()
    return lines




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    locations = parser.add_argument_group("the C ABI (one line each, in this order)")
    locations.add_argument("--include-dir", action="store_true",
                           help="the directory holding adamcore/adamcore.h")
    locations.add_argument("--cmake-dir", action="store_true",
                           help="the directory of adamcoreConfig.cmake (for adamcore_DIR)")
    locations.add_argument("--library", action="store_true", help="the path of libadamcore")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="version, backends, SIMD levels, threads")
    bench = sub.add_parser("bench", help="time adamcore against its peers and the roofline")
    bench.add_argument("--quick", action="store_true",
                       help="small sizes and short rounds: under a minute")
    bench.add_argument("--device", choices=("cpu", "cuda"),
                       help="only this device (default: the CPU, and CUDA when a GPU is seen)")
    bench.add_argument("--cases", metavar="TEXT[,TEXT...]",
                       help="only the cases whose name contains one of these, e.g. '64M,bf16'")
    bench.add_argument("--json", metavar="PATH", help="write the results (with the machine, "
                       "versions and commit) as JSON")
    bench.add_argument("--plot", metavar="PATH", help="draw a PNG (needs matplotlib)")
    bench.add_argument("--budget", type=float, metavar="SECONDS",
                       help="timing rounds per case (default: 6, or 0.6 with --quick)")
    args = parser.parse_args(argv)

    if args.include_dir or args.cmake_dir or args.library:
        from . import _paths

        try:
            lines = [location() for wanted, location in (
                (args.include_dir, _paths.get_include), (args.cmake_dir, _paths.get_cmake_dir),
                (args.library, _paths.get_library)) if wanted]
        except FileNotFoundError as e:
            print(f"python -m adamcore: {e}", file=sys.stderr)
            return 1
        print("\n".join(lines))
        return 0

    if args.command == "info":
        print("\n".join(info_lines()))
        return 0
    if args.command == "bench":
        from .bench import main as bench_main

        return bench_main(device=args.device, quick=args.quick,
                          patterns=args.cases.split(",") if args.cases else None,
                          json_path=args.json, plot_path=args.plot, budget_s=args.budget)
    parser.print_help()
    return 0
