"""`python -m adamcore bench`: adamcore against its peers and the roofline (docs/performance.md).

cases   the workloads (sizes, tensor counts, dtypes, threads) and the bytes a step must move
peers   the implementations: roofline probe and copy, adamcore, NumPy, torch, DeepSpeed, ...
timing  interleaved rounds, medians; host clock on the CPU, CUDA events on a GPU
report  the table, the JSON and the PNG plot
runner  runs the cases and collects rows with the machine, versions and commit
"""

from .runner import main, run

__all__ = ["main", "run"]
