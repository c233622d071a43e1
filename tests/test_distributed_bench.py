"""`python -m adamcore bench --ranks N`: the distributed case through the bench command."""

import json
import os
import subprocess
import sys

import pytest

from adamcore import _cli
from adamcore.bench import distributed as dist_bench


def test_model_bytes_moved_per_rank():
    # two collectives of (N-1)/N P b each for ShardedAdam, one for ZeRO's own step
    assert dist_bench.model_bytes_moved(1000, 1) == 0
    assert dist_bench.model_bytes_moved(1000, 2) == 4000
    assert dist_bench.model_bytes_moved(1000, 4, collectives=1) == 3000
    assert dist_bench.model_bytes_moved(10**9, 1024) == 2 * 1023 * 4 * 10**9 // 1024


def test_missing_mpi_is_said_and_the_torch_rows_still_run(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(dist_bench, "_mpirun", lambda: None)
    monkeypatch.setattr(dist_bench, "ENGINES", (
        dist_bench.ENGINES[0],
        ("stand-in torch row", lambda n, e, s: {"status": "ok", "step_ms": 1.0,
                                                "state_bytes_per_rank": 8 * e // n}, 1)))
    out = tmp_path / "d.json"
    rc = _cli.main(["bench", "--ranks", "1", "2", "--quick", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    if dist_bench.missing_mpi().startswith("mpi4py"):
        assert "mpi4py is not installed" in text
    else:
        assert "the adamcore rows need MPI: no mpirun" in text
    rows = json.loads(out.read_text())["rows"]
    assert [(r["ranks"], r["status"]) for r in rows] == [
        (1, "skipped"), (1, "ok"), (2, "skipped"), (2, "ok")]
    assert rows[2]["reason"] == dist_bench.missing_mpi()
    assert rows[3]["model_bytes_moved_per_rank"] == 4 * 10**6 // 2  # 1M float32, N=2, one


def test_bad_rank_count_is_refused(capsys):
    assert _cli.main(["bench", "--ranks", "0", "--json", ""]) == 2
    assert "--ranks must be >= 1" in capsys.readouterr().err


def test_bench_ranks_1_runs_both_engines(tmp_path):
    pytest.importorskip("mpi4py")
    pytest.importorskip("torch.distributed")
    if dist_bench.missing_mpi():
        pytest.skip(dist_bench.missing_mpi())
    out = tmp_path / "r.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "adamcore", "bench", "--ranks", "1", "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=240,
                          env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["kind"] == "distributed" and result["settings"]["ranks"] == [1]
    ours, zero = result["rows"]
    assert ours["status"] == zero["status"] == "ok", result["rows"]
    # N = 1 holds all of m and v: 8 bytes per float32 element, in both engines
    assert ours["state_bytes_per_rank"] == zero["state_bytes_per_rank"] == 8 * 10**6
    assert ours["transport"] == "mpi" and ours["step_ms"] > 0 and ours["comm_ms"] >= 0
    assert "model MB moved/rank" in proc.stdout
