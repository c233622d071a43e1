"""adamcore.distributed over real MPI processes: mpirun -n 2 and -n 3 from pytest.

Skipped when mpi4py or mpirun is missing (pip install mpich mpi4py gives both)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
HERE = Path(__file__).parent
MPIRUN = shutil.which("mpirun", path=os.path.dirname(sys.executable) + os.pathsep
                      + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIRUN is None, reason="no mpirun on PATH")


def mpirun(n, *args, timeout=60):
    # mpich's hydra runs more ranks than cores; OMP/adamcore threads kept at 1 per rank
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ADAMCORE_NUM_THREADS": "1"}
    return subprocess.run([MPIRUN, "-n", str(n), sys.executable, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def run_scenario(n, name, *extra):
    proc = mpirun(n, str(HERE / "distributed_mpi_worker.py"), name, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("OK ")]
    assert line, proc.stdout + proc.stderr
    return json.loads(line[0][3:])


@pytest.mark.parametrize("n", [2, 3])
def test_trajectories_bit_equal_single_process(n):
    result = run_scenario(n, "trajectory")
    assert set(result.values()) == {"bit-equal"} and len(result) == 5


@pytest.mark.parametrize("n", [2, 3])
def test_state_bytes_one_nth(n):
    result = run_scenario(n, "memory")
    per_rank, full = result["state_bytes_per_rank"], result["unsharded"]
    assert sum(per_rank) == full and max(per_rank) - min(per_rank) <= 3 * 4 * 2


@pytest.mark.parametrize("n", [2, 3])
def test_mixed_dtypes_bit_equal_one_collective_per_dtype(n):
    # float16, float32 and float64 params in one optimizer: a flat space per dtype, one
    # reduce-scatter and one all-gather per dtype per step, checkpoints, buckets
    result = run_scenario(n, "mixed")
    assert result == {"mixed": "bit-equal", "spaces": ["float16", "float32", "float64"]}


@pytest.mark.parametrize("n", [2, 3])
def test_nccl_transport_against_a_stand_in_communicator(n):
    # the NCCL transport's real calls (pointers, one count, NCCL types, in-place all-gather,
    # the stream) on a stand-in NcclCommunicator that reduces host buffers with MPI
    result = run_scenario(n, "nccl_standin")
    assert result == {"nccl_standin": "bit-equal", "calls_per_step": 6}


@pytest.mark.parametrize("name", ["clip", "state_dict", "buckets"])
def test_features_3_ranks(name):
    run_scenario(3, name)


@pytest.mark.parametrize("n", [2, 3])
def test_bad_input_raises_on_every_rank(n):
    result = run_scenario(n, "bad_input")
    assert set(result) == {"shapes", "grad_shape", "count", "lr", "ctor", "transport",
                           "finite"}


def test_failure_mid_step_aborts_all_ranks():
    proc = mpirun(3, str(HERE / "distributed_mpi_worker.py"), "abort", timeout=30)
    assert proc.returncode != 0
    assert "rank 1 failed inside step() (ZeroDivisionError" in proc.stderr


EXAMPLE = HERE.parent / "examples" / "mpi_least_squares.py"


@pytest.mark.parametrize("n", [2, 3])
def test_example_matches_single_process(n):
    single = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert single.returncode == 0, single.stderr
    multi = mpirun(n, str(EXAMPLE))
    assert multi.returncode == 0, multi.stderr
    assert multi.stdout.strip() == single.stdout.strip() != ""
    assert len(single.stdout.split()) == 9


def test_readme_shows_the_example_as_is():
    readme = (HERE.parent / "README.md").read_text()
    section = readme[readme.index("## Distributed"):]
    block = section.split("```python\n", 1)[1].split("```", 1)[0].strip()
    code = EXAMPLE.read_text().split('"""', 2)[2].strip()  # the file after its docstring
    assert block == code
    assert len(code.splitlines()) <= 16  # the README's short example stays short
