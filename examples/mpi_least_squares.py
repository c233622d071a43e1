"""Least squares with the optimizer state sharded over MPI ranks (ZeRO stage 1).

    mpirun -n 2 python examples/mpi_least_squares.py   # same output as: python examples/...

Each rank takes its slice of the data rows; ShardedAdam averages the grads over the ranks, so
the result equals the single-process run on all rows to the printed 12 decimals (the optimizer's
part is bit-equal; the ranks' partial matrix products round differently from the whole one).
The README shows the code below as is.
"""

import numpy as np
from mpi4py import MPI
from adamcore.distributed import ShardedAdam

comm = MPI.COMM_WORLD
rng = np.random.default_rng(0)
A = np.round(rng.standard_normal((120, 9)) * 16) / 16
b = np.round(rng.standard_normal(120) * 16) / 16
rows = np.array_split(np.arange(120), comm.size)[comm.rank]  # this rank's rows
x = np.zeros(9)
opt = ShardedAdam([x], lr=0.05, comm=comm)  # the same x on every rank, m and v split
for step in range(500):
    opt.step([A[rows].T @ (A[rows] @ x - b[rows]) * (comm.size / 120)])  # mean: the full grad
if comm.rank == 0:
    print(" ".join(f"{v:.12f}" for v in x))
