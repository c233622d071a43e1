"""`python -m adamcore bench`: the harness runs, fills every row, writes its JSON and plot, and
reports missing libraries as skipped. Tiny sizes and short budgets; speed is never asserted."""

import json
import subprocess
import sys

import pytest

import adamcore
from adamcore.bench import cases, peers, report, runner

TINY = [cases.Case("cpu", (4096,), threads=1), cases.Case("cpu", (1000, 3000, 96), threads=2),
        cases.Case("cpu", (2048,), "float16", "float16", threads=1),
        cases.Case("cpu", (2048,), "bfloat16", "bfloat16", threads=1)]


@pytest.fixture(scope="module")
def result():
    return runner.run(quick=True, budget_s=0.01, case_list=TINY, stream=sys.stderr)


def test_step_bytes_count_each_buffer():
    assert cases.step_bytes("float32", "float32", "float32") == 28  # docs/performance.md
    assert cases.step_bytes("bfloat16", "bfloat16", "float32") == 22
    assert cases.step_bytes("float16", "float32", "float32") == 24
    assert cases.step_bytes("bfloat16", "bfloat16", "bfloat16") == 14  # torch's 16-bit state


def test_every_row_has_numbers_or_a_reason(result):
    rows = result["rows"]
    assert {r["case"] for r in rows} == {c.name for c in TINY}
    for r in rows:
        assert set(r) == set(report.ROW_KEYS)
        assert r["status"] in ("ok", "skipped", "error"), r
        assert r["status"] != "error", r  # every peer installed here must run
        if r["status"] == "ok":
            assert r["ms"] > 0 and r["ms_min"] > 0 and r["samples"] >= 3
            assert r["bytes"] > 0 and r["gbps"] > 0
            assert r["pct_probe"] > 0
        else:
            assert r["reason"]


def test_adamcore_and_the_roofline_always_run(result):
    for case in TINY:
        ok = {r["impl"] for r in result["rows"] if r["case"] == case.name and r["status"] == "ok"}
        if case.dtype == "bfloat16" and not peers.have("torch"):
            assert not ok  # bfloat16 arrays need torch: the whole case is skipped
            continue
        assert {"adamcore", "adamcore raw core", "probe (roofline)", "copy"} <= ok, case.name


def test_speedup_is_relative_to_the_fastest_peer(result):
    for case in TINY:
        rows = [r for r in result["rows"] if r["case"] == case.name and r["status"] == "ok"]
        peer_rows = [r for r in rows if r["kind"] == "peer"]
        if not peer_rows:
            continue
        best = min(r["ms"] for r in peer_rows)
        for r in rows:
            if r["kind"] == "roofline":
                assert r["speedup"] is None
            else:
                assert r["speedup"] == pytest.approx(best / r["ms"])


def test_missing_libraries_are_skipped(result):
    expected = {"torch fused": "torch", "torch foreach": "torch", "torch-optimi": "optimi"}
    for impl, module in expected.items():
        rows = [r for r in result["rows"] if r["impl"] == impl]
        assert rows
        if not peers.have(module):
            # (a bfloat16 case is skipped as a whole without torch, which it names)
            assert all(r["status"] == "skipped" and (module in r["reason"] or "torch" in
                                                     r["reason"]) for r in rows)
    # DeepSpeed builds its op on first use, so --quick never runs it
    assert all(r["status"] == "skipped" for r in result["rows"] if r["impl"] == "DeepSpeed CPU Adam")
    # NumPy has no bfloat16
    assert all(r["status"] == "skipped" for r in result["rows"]
               if r["dtype"] == "bfloat16" and r["impl"].startswith("numpy"))


def test_a_case_needing_an_absent_library_is_skipped(monkeypatch):
    monkeypatch.setattr(peers, "have", lambda module: False)
    rows = runner.run_case(cases.Case("cpu", (64,), "bfloat16", "bfloat16", threads=1),
                           quick=True, budget_s=0.0, sample_s=1e-4, progress=lambda text: None)
    assert rows and all(r["status"] == "skipped" and "torch" in r["reason"] for r in rows)


def test_the_cuda_peers_skip_cleanly_without_a_gpu():
    if runner.gpu_names():
        pytest.skip("a GPU is present: the CUDA cases run for real")
    rows = runner.run_case(cases.Case("cuda", (4096,)), quick=True, budget_s=0.0, sample_s=1e-4,
                           progress=lambda text: None)
    assert rows and all(r["status"] == "skipped" for r in rows)


def test_threads_are_restored(result):
    assert adamcore.get_num_threads() == result["machine"]["threads"]


def test_result_has_the_documented_keys(result, tmp_path):
    assert set(report.TOP_KEYS) <= set(result)
    machine = result["machine"]
    for key in ("cpu", "cores", "gpu", "simd", "threads"):
        assert key in machine
    assert result["versions"]["numpy"]
    path = tmp_path / "bench.json"
    report.write_json(str(path), result)
    assert json.loads(path.read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_table_and_plot(result, tmp_path):
    text = report.table(result["rows"])
    for case in TINY:
        assert case.name in text
    summary = report.summary_markdown(result["rows"]).splitlines()
    assert len(summary) == 2 + len({r["case"] for r in result["rows"]
                                    if r["impl"] == "adamcore" and r["status"] == "ok"})
    why = report.write_plot(str(tmp_path / "bench.png"), result)
    if peers.have("matplotlib"):
        assert why is None
        assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib" in why


def test_default_cases_cover_spec_5():
    full = {c.name for c in cases.default_cases("cpu", quick=False, cores=2)}
    for name in ("cpu fp32 4096, 2 threads", "cpu fp32 1M, 1 thread", "cpu fp32 1M in 100, 1 thread",
                 "cpu fp32 64M, 1 thread", "cpu fp32 64M, 2 threads", "cpu bf16 16M, 2 threads",
                 "cpu f16 16M, 2 threads"):
        assert name in full
    gpu = {c.name for c in cases.default_cases("cuda", quick=False, cores=2)}
    assert {"cuda fp32 128M", "cuda fp32 16M in 200", "cuda fp32 1000x4096"} <= gpu
    one_core = cases.default_cases("cpu", quick=False, cores=1)
    assert len(one_core) == len(set(one_core))
    assert cases.select(cases.default_cases("cpu", False, 2), ["64M", "bf16"]) == [
        c for c in cases.default_cases("cpu", False, 2) if "64M" in c.name or "bf16" in c.name]


def test_cli_quick_json(tmp_path):
    path = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "adamcore", "bench", "--quick", "--device", "cpu",
                           "--cases", "4096", "--budget", "0.01", "--json", str(path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "cpu fp32 4096" in proc.stdout and "probe (roofline)" in proc.stdout
    assert "[1/1] cpu fp32 4096" in proc.stderr  # the progress line
    data = json.loads(path.read_text())
    assert data["settings"]["quick"] is True
    assert {r["case"] for r in data["rows"]} == {"cpu fp32 4096, %d thread%s" % (
        data["machine"]["cores"], "s" if data["machine"]["cores"] > 1 else "")}


def bench_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "adamcore", "bench", "--quick", "--device",
                           "cpu", "--budget", "0.01", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def test_cases_ignore_case_and_say_what_matched(tmp_path):
    every = cases.default_cases("cpu", quick=True, cores=2)
    assert cases.select(every, ["BF16"]) == [c for c in every if "bf16" in c.name]
    assert cases.unmatched(every, ["bf16", "NOPE"]) == ["nope"]
    proc = bench_cli("--cases", "FP32 4096", "--out", "", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--cases FP32 4096: 1 case: cpu fp32 4096" in proc.stdout


def test_a_pattern_matching_no_case_fails_clearly(tmp_path):
    proc = bench_cli("--cases", "4096,nothing-like-this", cwd=tmp_path)
    assert proc.returncode != 0
    assert "'nothing-like-this' matches no case" in proc.stderr
    assert "cpu fp32 4096" in proc.stderr  # the cases there are
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bench-results").exists()


def test_default_outputs_and_what_to_install(tmp_path):
    proc = bench_cli("--cases", "4096", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out_dir = tmp_path / "bench-results"
    data = json.loads((out_dir / "bench.json").read_text())
    assert f"wrote {out_dir / 'bench.json'}" in proc.stdout
    if peers.have("matplotlib"):
        assert f"wrote {out_dir / 'bench.png'}" in proc.stdout
        assert (out_dir / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "no plot: matplotlib is not installed (pip install matplotlib)" in proc.stdout
    # one line per peer that did not run, naming what to install
    for impl, package in (("torch fused", "torch"), ("torch-optimi", "torch-optimi")):
        module = "optimi" if package == "torch-optimi" else package
        if not peers.have(module):
            assert f"not run: {impl}: {module} is not installed (pip install {package})" \
                in proc.stdout
    assert "not run: DeepSpeed CPU Adam" in proc.stdout  # never in --quick
    # the rows and the percentages are explained where the user reads
    for words in ('"copy" is a plain threaded', '"adamcore raw core" is the compiled step',
                  "Above 100% of the probe"):
        assert words in proc.stdout
    assert data["rows"]


def test_json_records_adamcore_build_not_the_current_directory(tmp_path):
    # a git repository in the current directory must not be taken for adamcore's source
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=x", "-c", "user.email=x@x",
                    "commit", "-q", "--allow-empty", "-m", "unrelated"], check=True)
    unrelated = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                               capture_output=True, text=True, check=True).stdout.strip()
    proc = bench_cli("--cases", "4096", "--json", "r.json", "--out", "", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert "git_commit" not in data
    assert data["build"]["version"] == adamcore.__version__
    assert unrelated not in json.dumps(data)


def test_help_documents_budget_as_seconds_and_explains_rows():
    proc = subprocess.run([sys.executable, "-m", "adamcore", "bench", "--help"],
                          capture_output=True, text=True, timeout=60, check=True)
    text = " ".join(proc.stdout.split())
    assert "--budget SECONDS seconds of interleaved timing rounds per case" in text
    assert "rounds per case (default" not in text.replace("timing rounds per case, at", "")
    assert '"copy" is a plain threaded copy' in text and "Above 100% of the probe" in text


def test_budget_is_seconds(tmp_path):
    case = cases.Case("cpu", (4096,), threads=1)
    rows = runner.run_case(case, quick=True, budget_s=0.3, sample_s=1e-4,
                           progress=lambda text: None)
    ours = next(r for r in rows if r["impl"] == "adamcore")
    assert ours["samples"] > 6  # 0.3 s of rounds, not 0.3 rounds


def test_plot_title_fits_and_legend_is_outside(result, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saved = {}
    real_savefig = plt.Figure.savefig

    def keep(fig, *args, **kwargs):
        saved["fig"] = fig
        return real_savefig(fig, *args, **kwargs)

    plt.Figure.savefig = keep
    try:
        assert report.write_plot(str(tmp_path / "p.png"), result) is None
    finally:
        plt.Figure.savefig = real_savefig
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = saved["fig"]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    box = fig.bbox
    title = ax.title.get_window_extent(renderer)
    assert box.x0 <= title.x0 and title.x1 <= box.x1, "the title is clipped"
    legend = ax.get_legend().get_window_extent(renderer)
    assert legend.x0 >= ax.get_window_extent(renderer).x1, "the legend covers the bars"
    assert legend.x1 <= box.x1, "the legend is clipped"
