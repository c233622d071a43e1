"""Runs the cases: sets threads, builds every implementation, times them interleaved, and
collects the rows with the machine, the versions and the commit."""

from __future__ import annotations

import ctypes
import datetime
import gc
import os
import platform
import sys
from importlib import metadata

from .. import _cpu
from . import cases as cases_mod
from . import peers as peers_mod
from . import report, timing


# ---- the machine --------------------------------------------------------------------------------

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_names() -> list[str]:
    """Names of the CUDA GPUs that CuPy or torch see (none without either)."""
    try:
        import cupy

        return [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode()
                for i in range(cupy.cuda.runtime.getDeviceCount())]
    except Exception:  # noqa: BLE001 - no CuPy, no driver, no device: all mean "no GPU"
        pass
    try:
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def machine() -> dict:
    import adamcore

    gpus = gpu_names()
    return {"cpu": _cpu.cpu_model(), "cores": usable_cores(), "logical_cores": os.cpu_count(),
            "simd": adamcore.get_simd_level(), "threads": adamcore.get_num_threads(),
            "gpu": gpus[0] if gpus else None, "gpus": gpus,
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def versions() -> dict:
    out = {}
    for dist in ("adamcore", "numpy", "torch", "cupy", "cupy-cuda12x", "cupy-cuda13x",
                 "deepspeed", "torch-optimi", "jax", "jaxlib", "optax", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def build_info() -> dict:
    """The installed adamcore's version and the commit it was built from. The commit comes from
    the build (a generated adamcore/_build_info.py, where the build writes one) or from pip's
    record of a VCS install (direct_url.json); None when neither says. Never from the current
    directory, which may be any repository."""
    import adamcore

    commit, source = None, None
    try:
        from adamcore import _build_info  # type: ignore[attr-defined]

        commit, source = getattr(_build_info, "commit", None) or None, "build"
    except ImportError:
        pass
    if commit is None:
        try:
            import json

            text = metadata.distribution("adamcore").read_text("direct_url.json")
            vcs = json.loads(text).get("vcs_info", {}) if text else {}
            commit, source = vcs.get("commit_id"), "direct_url.json" if vcs else None
        except (metadata.PackageNotFoundError, ValueError):
            pass
    return {"version": adamcore.__version__, "commit": commit,
            "commit_source": source if commit else None}


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


# ---- threads ------------------------------------------------------------------------------------

def set_threads(n: int) -> None:
    """The thread count of everything a CPU case runs: adamcore's core, torch, and any other
    OpenMP runtime already loaded (DeepSpeed's op uses the system libgomp)."""
    import adamcore

    adamcore.set_num_threads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    for name in ("libgomp.so.1", "libomp.so", "libiomp5.so"):
        try:
            lib = ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
        except (OSError, AttributeError):
            continue
        lib.omp_set_num_threads(ctypes.c_int(n))


# ---- one case -----------------------------------------------------------------------------------

def _row(case: cases_mod.Case, peer, status: str, reason: str | None = None) -> dict:
    row = dict.fromkeys(report.ROW_KEYS)
    row.update(case=case.name, device=case.device, dtype=case.dtype, grad_dtype=case.grad_dtype,
               elements=case.elements, tensors=case.tensors, threads=case.threads,
               impl=peer.name, kind=peer.kind, status=status, reason=reason)
    return row


def run_case(case, quick: bool, budget_s: float, sample_s: float, progress,
             min_rounds: int = 3) -> list[dict]:
    """Times every implementation of one case; threads are back as they were afterwards."""
    import adamcore

    before = adamcore.get_num_threads()
    if case.threads is not None:
        set_threads(case.threads)
    try:
        return _run_case(case, quick, budget_s, sample_s, progress, min_rounds)
    finally:
        set_threads(before)


def _run_case(case, quick, budget_s, sample_s, progress, min_rounds) -> list[dict]:
    rows, fns, reps, impls = [], {}, {}, {}
    try:
        work = peers_mod.make_work(case)
    except peers_mod.Skip as e:
        return [_row(case, p, "skipped", str(e)) for p in peers_mod.peers_for(case.device)]
    timer = timing.WallClock() if case.device in ("cpu", "jax") else timing.CudaEvents()
    for peer in peers_mod.peers_for(case.device):
        row = _row(case, peer, "ok")
        rows.append(row)
        if quick and not peer.quick:
            row.update(status="skipped", reason="not in --quick (builds its op on first use)")
            continue
        if case.lowp and peer.kind == peers_mod.PEER:
            row.update(status="skipped", reason="has no such low-precision mode")
            continue
        progress(f"{case.name}: setting up {peer.name}")
        try:
            impl = peer.setup(work)
            reps[peer.name] = timing.calibrate(timer, impl.step, sample_s)
        except peers_mod.Skip as e:
            row.update(status="skipped", reason=str(e))
            continue
        except Exception as e:  # noqa: BLE001 - a broken peer is reported, not fatal
            row.update(status="error", reason=f"{type(e).__name__}: {e}".splitlines()[0][:200])
            continue
        fns[peer.name], impls[peer.name] = impl.step, impl

    def tick(done):
        progress(f"{case.name}: round {done}")

    try:
        samples = timing.interleaved(timer, fns, reps, budget_s, min_rounds=min_rounds,
                                     progress=tick)
    except Exception as e:  # noqa: BLE001
        for row in rows:
            if row["status"] == "ok":
                row.update(status="error", reason=f"{type(e).__name__}: {e}"[:200])
        return rows
    for row in rows:
        if row["status"] != "ok":
            continue
        s = samples[row["impl"]]
        row.update(ms=1e3 * timing.median(s), ms_min=1e3 * min(s), samples=len(s),
                   bytes=int(impls[row["impl"]].nbytes()))
    report.finish_rows(rows)
    return rows


class Progress:
    """One progress line on stderr: rewritten in place on a terminal, one line per case else."""

    def __init__(self, stream, total: int):
        self.stream, self.total, self.index, self.width = stream, total, 0, 0
        self.interactive = getattr(stream, "isatty", lambda: False)()

    def next_case(self, name: str) -> None:
        self.index += 1
        self.case = name
        self._write(name, force=True)

    def detail(self, text: str) -> None:
        if self.interactive:
            self._write(text)

    def _write(self, text: str, force: bool = False) -> None:
        line = f"[{self.index}/{self.total}] {text}"
        if self.interactive:
            self.stream.write("\r" + line.ljust(self.width))
            self.width = len(line)
        elif force:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.interactive:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()


# ---- the run ------------------------------------------------------------------------------------

def devices(wanted: str | None) -> list[str]:
    """cpu always; jax when jax and optax are installed; cuda when a GPU is visible (or each
    when asked for explicitly)."""
    if wanted:
        return [wanted]
    jax = ["jax"] if peers_mod.have("jax") and peers_mod.have("optax") else []
    return ["cpu"] + jax + (["cuda"] if gpu_names() else [])


class NoCases(ValueError):
    """Some --cases patterns match no case."""

    def __init__(self, patterns: list[str], cases: list):
        self.patterns, self.cases = patterns, cases
        super().__init__(
            f"--cases: {', '.join(repr(p) for p in patterns)} "
            f"match{'es' if len(patterns) == 1 else ''} no case; the cases here are: "
            + "; ".join(c.name for c in cases))


def run(device: str | None = None, quick: bool = False, patterns: list[str] | None = None,
        budget_s: float | None = None, case_list: list | None = None,
        stream=sys.stderr) -> dict:
    """Runs the bench and returns its result (the JSON's content)."""
    budget = budget_s if budget_s is not None else (0.6 if quick else 6.0)
    sample_s = 0.002 if quick else 0.005
    if case_list is not None:
        todo = case_list
    else:
        every = [c for d in devices(device)
                 for c in cases_mod.default_cases(d, quick, usable_cores())]
        todo = cases_mod.select(every, patterns)
        missing = cases_mod.unmatched(every, patterns)
        if missing:
            raise NoCases(missing, every)
    progress = Progress(stream, len(todo))
    load_before = _load_average()
    rows = []
    try:
        for case in todo:
            progress.next_case(case.name)
            rows += run_case(case, quick, budget, sample_s, progress.detail,
                             min_rounds=3 if quick else 5)
            gc.collect()  # the case's arrays go before the next case allocates
    finally:
        progress.close()
    return {
        "schema": 1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "build": build_info(),
        "settings": {"quick": quick, "budget_s": budget, "sample_s": sample_s,
                     "cases": patterns or None, "device": device,
                     # how busy the machine was (other processes disturb the timings)
                     "load_average": {"before": load_before, "after": _load_average()}},
        "rows": rows,
    }


DEFAULT_OUT = "bench-results"


def main(device=None, quick=False, patterns=None, json_path=None, plot_path=None,
         budget_s=None, out_dir=DEFAULT_OUT) -> int:
    """The command: runs, prints the table, writes the JSON and the PNG (by default into
    bench-results/ in the current directory) and says where."""
    try:
        result = run(device, quick, patterns, budget_s)
    except NoCases as e:
        print(f"python -m adamcore bench: {e}", file=sys.stderr)
        return 2
    m = result["machine"]
    print(f"adamcore {result['build']['version']} bench on {m['cpu']} "
          f"({m['cores']} cores, SIMD {m['simd']})" + (f", GPU {m['gpu']}" if m["gpu"] else ""))
    if patterns:
        names = list(dict.fromkeys(r["case"] for r in result["rows"]))
        print(f"--cases {','.join(patterns)}: {len(names)} case"
              f"{'s' if len(names) != 1 else ''}: {'; '.join(names)}")
    print("time/step: median of interleaved rounds; GB/s: bytes each implementation must move "
          "(fp32: 28 B/element) / time; % probe: of the roofline probe's GB/s; vs best peer: "
          "the fastest peer's time / this time\n")
    print(report.table(result["rows"]))
    print(report.EXPLANATION + "\n")
    for line in report.skipped_lines(result["rows"]):
        print(line)
    if device is None and "jax" not in devices(None):
        from .jax_peers import INSTALL_JAX

        print(f"not run: the jax cases (adamcore.optax, optax.adam): {INSTALL_JAX}")
    if out_dir and (json_path is None or plot_path is None):
        os.makedirs(out_dir, exist_ok=True)
        json_path = json_path or os.path.join(out_dir, "bench.json")
        plot_path = plot_path or os.path.join(out_dir, "bench.png")
    if json_path:
        report.write_json(json_path, result)
        print(f"wrote {os.path.abspath(json_path)}")
    if plot_path:
        why = report.write_plot(plot_path, result)
        print(f"no plot: {why} (pip install matplotlib)" if why
              else f"wrote {os.path.abspath(plot_path)}")
    errors = [r for r in result["rows"] if r["status"] == "error"]
    return 1 if errors and all(r["status"] != "ok" for r in result["rows"]) else 0
