"""Least squares with the optimizer state sharded over MPI ranks (ZeRO stage 1).

    mpirun -n 2 python examples/mpi_least_squares.py   # same output as: python examples/...

Each rank takes its slice of the data rows; ShardedAdam averages the grads over the ranks, so
the result equals the single-process run on all rows (the data are dyadic, the sums exact).
"""

import numpy as np
from mpi4py import MPI

from adamcore.distributed import ShardedAdam

comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
A = np.round(rng.standard_normal((120, 9)) * 16) / 16
b = np.round(rng.standard_normal(120) * 16) / 16
rows = np.array_split(np.arange(120), comm.size)[comm.rank]  # this rank's rows: 120/size each

x = np.zeros(9)
opt = ShardedAdam([x], lr=0.05, comm=comm)
for step in range(500):
    residual = A[rows] @ x - b[rows]
    opt.step([A[rows].T @ residual * (comm.size / 120)])  # averaged over ranks: the full grad
if comm.rank == 0:
    print(" ".join(f"{v:.12f}" for v in x))
