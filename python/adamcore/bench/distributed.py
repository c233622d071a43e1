"""The distributed bench: ShardedAdam over MPI against ZeroRedundancyOptimizer(torch.optim.AdamW).

    python -m adamcore.bench.distributed --ranks 1 2 [--elements 4000000] [--steps 20]

For each N it launches ``mpirun -n N`` (adamcore) and N gloo processes (torch), and prints per
step: the median step time, the time inside the collectives, and the optimizer state bytes per
rank. Everything runs on this machine's cores, so N > cores measures contention, not scaling.
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
                          "state_bytes_per_rank": opt.state_bytes}))


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


def _run_mpi(n, elements, steps):
    mpirun = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep
                          + os.environ.get("PATH", ""))
    if mpirun is None:
        return {"error": "no mpirun (pip install mpich mpi4py)"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAMCORE_NUM_THREADS": "1"}
    proc = subprocess.run([mpirun, "-n", str(n), sys.executable, "-m", "adamcore.bench.distributed", "--rank-main",
                           str(elements), str(steps)], capture_output=True, text=True, env=env,
                          timeout=300)
    if proc.returncode:
        return {"error": proc.stderr.strip()[-300:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adamcore.bench.distributed")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--elements", type=int, default=4_000_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rank-main", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rank_main:
        _mpi_rank_main(*args.rank_main)
        return 0
    print(f"{args.elements} float32 elements, median of {args.steps} steps, "
          f"{os.cpu_count()} cores")
    print(f"{'N':>3} {'engine':<40} {'step ms':>9} {'comm ms':>9} {'state B/rank':>13}")
    for n in args.ranks:
        for name, fn in (("adamcore ShardedAdamW (mpich)", _run_mpi),
                         ("ZeroRedundancyOptimizer(torch AdamW, gloo)", _run_torch)):
            r = fn(n, args.elements, args.steps)
            if "error" in r:
                print(f"{n:>3} {name:<40} {r['error']}")
                continue
            comm = f"{r['comm_ms']:9.2f}" if "comm_ms" in r else f"{'-':>9}"
            print(f"{n:>3} {name:<40} {r['step_ms']:9.2f} {comm} {r['state_bytes_per_rank']:13d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
