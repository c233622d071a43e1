"""The distributed bench: ShardedAdam over MPI against ZeroRedundancyOptimizer(torch.optim.AdamW).

    python -m adamcore bench --ranks 1 2 [--quick] [--json PATH]
    python -m adamcore.bench.distributed --ranks 1 2 [--elements 4000000] [--steps 20]

For each N it launches ``mpirun -n N`` (adamcore) and N gloo processes (torch), and prints per
step: the median step time, the time inside the collectives, and the optimizer state bytes per
rank, with the scaling model's bytes moved per rank per step. Without mpi4py or mpirun the
adamcore rows say so and are skipped. Everything runs on this machine's cores, so N > cores
measures contention, not scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time


def _mpi_rank_main(elements: int, steps: int) -> None:
    import numpy as np
    from mpi4py import MPI

    from adamcore.distributed import ShardedAdamW

    comm = MPI.COMM_WORLD
    params = [np.zeros(elements // 2 + 1, np.float32), np.zeros(elements - elements // 2 - 1,
                                                                np.float32)]
    grads = [np.full_like(p, 1e-3) for p in params]
    opt = ShardedAdamW(params, comm=comm, lr=1e-3)
    comm_time = [0.0]
    for name in ("_reduce_scatter", "_all_gather"):  # time the two data collectives
        inner = getattr(opt, name)

        def timed(*a, _inner=inner):
            t = time.perf_counter()
            _inner(*a)
            comm_time[0] += time.perf_counter() - t

        setattr(opt, name, timed)
    opt.step(grads)
    times, comms = [], []
    for _ in range(steps):
        comm.Barrier()
        comm_time[0] = 0.0
        t = time.perf_counter()
        opt.step(grads)
        times.append(time.perf_counter() - t)
        comms.append(comm_time[0])
    if comm.rank == 0:
        print(json.dumps({"step_ms": 1e3 * sorted(times)[len(times) // 2],
                          "comm_ms": 1e3 * sorted(comms)[len(comms) // 2],
                          "state_bytes_per_rank": opt.state_bytes,
                          "transport": opt.transport.name,
                          "mpi": MPI.Get_library_version().splitlines()[0].strip()}))


def _torch_rank(rank, world, port, elements, steps, out):
    import torch
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    params = [torch.nn.Parameter(torch.zeros(elements // 2 + 1)),
              torch.nn.Parameter(torch.zeros(elements - elements // 2 - 1))]
    for p in params:
        p.grad = torch.full_like(p, 1e-3)
    opt = ZeroRedundancyOptimizer(params, optimizer_class=torch.optim.AdamW, lr=1e-3)
    opt.step()
    times = []
    for _ in range(steps):
        dist.barrier()
        t = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t)
    state = sum(v.numel() * v.element_size() for s in opt.optim.state.values()
                for v in s.values() if torch.is_tensor(v) and v.dim() > 0)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"step_ms": 1e3 * sorted(times)[len(times) // 2],
                       "state_bytes_per_rank": state}, f)
    dist.destroy_process_group()
    # Skip interpreter finalization: torch's gloo threads can still be freeing a finished work
    # item while Python finalizes, and their GIL request then aborts the process (seen with torch
    # 2.13 in about 1 run in 30; tests/test_distributed_torch.py's workers do the same).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _mpirun() -> str | None:
    return shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep
                        + os.environ.get("PATH", ""))


def missing_mpi() -> str | None:
    """Why the adamcore rows cannot run here (None when mpi4py and mpirun are both present)."""
    import importlib.util

    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py mpich)"
    if _mpirun() is None:
        return "no mpirun next to this Python or on PATH (pip install mpich ships one)"
    return None


def _run_mpi(n, elements, steps):
    why = missing_mpi()
    if why:
        return {"status": "skipped", "reason": why}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAMCORE_NUM_THREADS": "1"}
    proc = subprocess.run([_mpirun(), "-n", str(n), sys.executable, "-m",
                           "adamcore.bench.distributed", "--rank-main", str(elements), str(steps)],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode:
        return {"status": "error", "reason": proc.stderr.strip()[-300:]}
    return {"status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def _run_torch(n, elements, steps):
    import socket
    import tempfile

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "r.json")
        mp.spawn(_torch_rank, args=(n, port, elements, steps, out), nprocs=n)
        with open(out) as f:
            return json.load(f)


def _torch_row(n, elements, steps):
    try:
        import torch.distributed as dist

        if not dist.is_available():
            return {"status": "skipped", "reason": "this torch has no torch.distributed"}
    except ImportError:
        return {"status": "skipped", "reason": "torch is not installed"}
    try:
        return {"status": "ok", **_run_torch(n, elements, steps)}
    except Exception as e:  # noqa: BLE001 - one failed row does not stop the others
        return {"status": "error", "reason": f"{type(e).__name__}: {e}"[-300:]}


# (name, run, collectives of P elements in one step)
ENGINES = (("adamcore ShardedAdamW (mpi4py)", _run_mpi, 2),
           ("ZeroRedundancyOptimizer(torch AdamW, gloo)", _torch_row, 1))


def model_bytes_moved(elements: int, ranks: int, itemsize: int = 4, collectives: int = 2) -> int:
    """Bytes each rank sends (and receives) per step with the bandwidth-optimal algorithms:
    (N-1)/N P b per collective (bench/NOTES.md, ## Distributed). ShardedAdam's step does two
    (reduce-scatter of the grads, all-gather of the params); ZeroRedundancyOptimizer's step one
    (the params' broadcasts: its caller, e.g. DDP, all-reduced the grads before)."""
    return collectives * (ranks - 1) * elements * itemsize // ranks


def run(ranks, elements=4_000_000, steps=20, progress=None) -> dict:
    """Every engine at every N: rows of step/comm time, state bytes per rank and the model's
    bytes moved, with the machine and versions (as the main bench's JSON)."""
    from .runner import _load_average, build_info, machine, versions

    load_before = _load_average()
    rows = []
    for n in ranks:
        for name, fn, collectives in ENGINES:
            if progress:
                progress(f"N={n} {name}")
            r = fn(n, elements, steps)
            rows.append({"case": f"distributed {elements} float32, N={n}", "ranks": n,
                         "engine": name, "model_bytes_moved_per_rank": model_bytes_moved(
                             elements, n, collectives=collectives), **r})
    return {"kind": "distributed", "machine": machine(), "versions": versions(),
            "build": build_info(),
            "settings": {"ranks": list(ranks), "elements": elements, "steps": steps,
                         "threads_per_rank": 1,
                         "load_average": {"before": load_before, "after": _load_average()}},
            "rows": rows}


def table(result) -> str:
    lines = [f"{'N':>3} {'engine':<42} {'step ms':>9} {'comm ms':>9} {'state B/rank':>13} "
             f"{'model MB moved/rank':>20}"]
    for r in result["rows"]:
        head = f"{r['ranks']:>3} {r['engine']:<42}"
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']}: {r['reason']}")
            continue
        comm = f"{r['comm_ms']:9.2f}" if "comm_ms" in r else f"{'-':>9}"
        lines.append(f"{head} {r['step_ms']:9.2f} {comm} {r['state_bytes_per_rank']:13d} "
                     f"{r['model_bytes_moved_per_rank'] / 1e6:20.1f}")
    return "\n".join(lines)


def bench_ranks(ranks, quick=False, json_path=None, out_dir=None) -> int:
    """``python -m adamcore bench --ranks N [N ...]``: the distributed case; writes its JSON to
    json_path, or bench-distributed.json in out_dir."""
    elements, steps = (1_000_000, 5) if quick else (4_000_000, 20)
    why = missing_mpi()
    if why:
        print(f"python -m adamcore bench --ranks: the adamcore rows need MPI: {why}; "
              f"only the torch rows run")
    bad = [n for n in ranks if n < 1]
    if bad:
        print(f"python -m adamcore bench: --ranks must be >= 1, got {bad}", file=sys.stderr)
        return 2
    result = run(ranks, elements, steps, progress=lambda t: print(f"  running {t}", flush=True))
    print(f"{elements} float32 elements in 2 tensors, median of {steps} steps, 1 thread per rank, "
          f"{result['machine']['cores']} cores (N > cores measures contention, not scaling)")
    print(table(result))
    if json_path is None and out_dir:
        os.makedirs(out_dir, exist_ok=True)
        json_path = os.path.join(out_dir, "bench-distributed.json")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"wrote {os.path.abspath(json_path)}")
    return 0 if any(r["status"] == "ok" for r in result["rows"]) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamcore.bench.distributed")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--elements", type=int, default=4_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", metavar="PATH", help="write the rows (and the machine) here")
    parser.add_argument("--rank-main", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_main:
        _mpi_rank_main(*args.rank_main)
        return 0
    result = run(args.ranks, args.elements, args.steps)
    print(f"{args.elements} float32 elements, median of {args.steps} steps, "
          f"{result['machine']['cores']} cores")
    print(table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return 0 if any(r["status"] == "ok" for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
