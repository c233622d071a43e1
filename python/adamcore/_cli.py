"""python -m adamcore: `info` (what this install can do) and `bench` (adamcore against its peers;
docs/performance.md).

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
    lines.append(f"jax: {_jax_ffi_status()}")
    return lines


def _jax_ffi_status() -> str:
    """Whether the XLA FFI module was built; says so without importing jax."""
    import importlib.util

    if importlib.util.find_spec("adamcore._jax_ffi") is not None:
        return "XLA FFI module built (adamcore.optax and JAX arrays run the C++ core)"
    return ("XLA FFI module not built (no jaxlib where adamcore was built: JAX arrays take the "
            "Array-API path; pip install . -Cadamcore.jax=true builds it)")




def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    import adamcore

    parser.add_argument("--version", action="version", version=f"adamcore {adamcore.__version__}")
    locations = parser.add_argument_group("the C ABI (one line each, in this order)")
    locations.add_argument("--include-dir", action="store_true",
                           help="the directory holding adamcore/adamcore.h")
    locations.add_argument("--cmake-dir", action="store_true",
                           help="the directory of adamcoreConfig.cmake (for adamcore_DIR)")
    locations.add_argument("--library", action="store_true", help="the path of libadamcore")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("info", help="version, backends, SIMD levels, threads")
    from .bench.report import EXPLANATION

    bench = sub.add_parser("bench", help="time adamcore against its peers and the roofline",
                           description="Times adamcore against NumPy, torch, DeepSpeed, "
                           "torch-optimi (those installed: pip install 'adamcore[bench]') and "
                           "the memory roofline, prints a table, and writes its JSON and PNG "
                           "into --out.",
                           epilog=EXPLANATION, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("--quick", action="store_true",
                       help="small sizes and short rounds: under a minute")
    bench.add_argument("--device", choices=("cpu", "jax", "cuda"),
                       help="only this device (default: the CPU; JAX's CPU backend, "
                       "adamcore.optax against optax.adam through jit, when jax and optax are "
                       "installed; CUDA when a GPU is seen)")
    bench.add_argument("--cases", metavar="TEXT[,TEXT...]",
                       help="only the cases whose name contains one of these, ignoring case, "
                       "e.g. '64m,bf16'; a pattern that matches no case is an error")
    bench.add_argument("--out", metavar="DIR", default="bench-results",
                       help="where bench.json and bench.png go (default: bench-results/ in the "
                       "current directory; '' writes neither unless --json/--plot say where)")
    bench.add_argument("--json", metavar="PATH", help="write the results (with the machine, "
                       "versions and adamcore's build) as JSON here instead")
    bench.add_argument("--plot", metavar="PATH", help="draw the PNG here instead "
                       "(needs matplotlib)")
    bench.add_argument("--budget", type=float, metavar="SECONDS",
                       help="seconds of interleaved timing rounds per case, at least 3 rounds "
                       "(5 without --quick) whatever the budget (default: 6, or 0.6 with "
                       "--quick)")
    bench.add_argument("--ranks", type=int, nargs="+", metavar="N",
                       help="instead, the distributed case at these numbers of processes: "
                       "adamcore.distributed.ShardedAdamW over mpirun against torch's "
                       "ZeroRedundancyOptimizer(AdamW) on gloo (needs mpi4py + an MPI; "
                       "writes bench-distributed.json into --out)")
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
    if args.command == "bench" and args.ranks:
        from .bench.distributed import bench_ranks

        return bench_ranks(args.ranks, quick=args.quick, json_path=args.json, out_dir=args.out)
    if args.command == "bench":
        from .bench import main as bench_main

        return bench_main(device=args.device, quick=args.quick,
                          patterns=args.cases.split(",") if args.cases else None,
                          json_path=args.json, plot_path=args.plot, budget_s=args.budget,
                          out_dir=args.out)
    parser.print_help()
    return 0
