"""adamcore.distributed with CuPy params on real GPUs (mpirun, one rank per GPU).

Skips without CuPy, a GPU or mpirun: on the project's CPU machines it never runs. The same
transport code is exercised without a GPU by tests/test_distributed_transports.py and by the
NCCL stand-in scenario of tests/test_distributed_mpi.py."""

import pytest

cupy = pytest.importorskip("cupy")
try:
    GPUS = cupy.cuda.runtime.getDeviceCount()
except Exception:  # noqa: BLE001 - no driver
    GPUS = 0
pytestmark = pytest.mark.skipif(GPUS == 0, reason="no GPU")

from test_distributed_mpi import MPIRUN, run_scenario  # noqa: E402


def nccl_available():
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", True))


@pytest.mark.skipif(MPIRUN is None, reason="no mpirun")
@pytest.mark.parametrize("transport", ["auto", "nccl"])
def test_cupy_params_bit_equal_single_process(transport):
    if transport == "nccl" and not nccl_available():
        pytest.skip("CuPy without NCCL")
    n = min(2, GPUS)  # NCCL takes one rank per GPU
    result = run_scenario(n, "cupy", transport)
    assert result["cupy"] == "bit-equal"
