"""The bench's outputs: the printed table, the JSON file and the PNG plot.

A row is a plain dict (the JSON's "rows"):
  case, device, dtype, grad_dtype, elements, tensors, threads   -- what was stepped
  impl, kind ("roofline" | "adamcore" | "peer"), status ("ok" | "skipped" | "error"), reason
  ms (median per step), ms_min, samples, bytes (per step, this impl's own),
  gbps (bytes / median), pct_probe (gbps / the probe's gbps, in %),
  speedup (the best peer's median / this median; > 1: faster than every peer)
"""

from __future__ import annotations

import json

ROW_KEYS = ("case", "device", "dtype", "grad_dtype", "elements", "tensors", "threads", "impl",
            "kind", "status", "reason", "ms", "ms_min", "samples", "bytes", "gbps", "pct_probe",
            "speedup")
TOP_KEYS = ("schema", "date", "machine", "versions", "build", "settings", "rows")


def finish_rows(rows: list[dict]) -> None:
    """Fills gbps, pct_probe and speedup of one case's rows from their medians."""
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        r["gbps"] = r["bytes"] / (r["ms"] * 1e-3) / 1e9
    probe = next((r for r in ok if r["impl"].startswith("probe")), None)
    peers = [r for r in ok if r["kind"] == "peer"]
    best = min(peers, key=lambda r: r["ms"]) if peers else None
    for r in ok:
        r["pct_probe"] = 100 * r["gbps"] / probe["gbps"] if probe else None
        r["speedup"] = best["ms"] / r["ms"] if best and r["kind"] != "roofline" else None


def _time_text(ms: float) -> str:
    return f"{ms * 1e3:.1f} us" if ms < 1 else f"{ms:.3f} ms"


def table(rows: list[dict]) -> str:
    """The printed table: per case, the rows that ran (fastest first), then what was skipped."""
    head = f"{'case':32s} {'implementation':24s} {'time/step':>11s} {'GB/s':>7s} " \
           f"{'% probe':>8s} {'vs best peer':>13s}"
    lines = [head, "-" * len(head)]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    for case in cases:
        mine = [r for r in rows if r["case"] == case]
        ok = sorted((r for r in mine if r["status"] == "ok"), key=lambda r: r["ms"])
        for r in ok:
            pct = f"{r['pct_probe']:.0f}%" if r["pct_probe"] is not None else "-"
            speed = f"{r['speedup']:.2f}x" if r["speedup"] is not None else ""
            lines.append(f"{case:32s} {r['impl']:24s} {_time_text(r['ms']):>11s} "
                         f"{r['gbps']:7.1f} {pct:>8s} {speed:>13s}")
        for r in mine:
            if r["status"] != "ok":
                lines.append(f"{case:32s} {r['impl']:24s} {r['status']}: {r['reason']}")
        lines.append("")
    return "\n".join(lines)


EXPLANATION = """\
Rows: "probe (roofline)" is a kernel that moves exactly the bytes of an fp32 step (4 arrays read,
3 written) with trivial arithmetic: the memory system's limit, 100%. "copy" is a plain threaded
copy of the same byte count, a second yardstick. "adamcore" is what a user writes,
opt.step(grads), Python front end included; "adamcore raw core" is the compiled step alone
(arrays imported once), so the gap between the two is the front end's cost. The rest are peers.
Above 100% of the probe: at small sizes the arrays stay in the CPU's caches, so a step can move
its bytes faster than the probe's single pass over main memory; only large cases (16M, 64M)
measure memory bandwidth. 16-bit rows are charged their own (smaller) byte counts.
"jax" cases: "adamcore.optax (jit)" and "optax.adam (jit)" are one jitted training-loop step
(state and params donated) on JAX's CPU backend; adamcore's is one XLA FFI call into the core."""


def skipped_lines(rows: list[dict]) -> list[str]:
    """One line per implementation that did not run anywhere, with why (what to install)."""
    lines = []
    for impl in dict.fromkeys(r["impl"] for r in rows):
        mine = [r for r in rows if r["impl"] == impl]
        if any(r["status"] == "ok" for r in mine):
            continue
        reasons = list(dict.fromkeys(r["reason"] for r in mine if r["reason"]))
        install = [r for r in reasons if "pip install" in r]
        lines.append(f"not run: {impl}: {(install or reasons or ['?'])[0]}")
    return lines


def write_json(path: str, result: dict) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


def write_plot(path: str, result: dict) -> str | None:
    """Bars of GB/s by case, one per implementation, with a line at the probe. Returns None, or
    why no plot was drawn (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed"
    rows = [r for r in result["rows"] if r["status"] == "ok"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    impls = list(dict.fromkeys(r["impl"] for r in rows if not r["impl"].startswith("probe")))
    width = 0.8 / max(1, len(impls))
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(cases) + 3) + 2, 6.5))
    colors = plt.get_cmap("tab10")
    for k, impl in enumerate(impls):
        xs, ys = [], []
        for i, case in enumerate(cases):
            r = next((r for r in rows if r["case"] == case and r["impl"] == impl), None)
            if r is not None:
                xs.append(i - 0.4 + (k + 0.5) * width)
                ys.append(r["gbps"])
        ax.bar(xs, ys, width, label=impl, color=colors(k % 10),
               edgecolor="black" if impl == "adamcore" else None)
    for i, case in enumerate(cases):
        probe = next((r for r in rows if r["case"] == case and r["impl"].startswith("probe")), None)
        if probe is not None:
            ax.hlines(probe["gbps"], i - 0.45, i + 0.45, colors="black", linestyles="--",
                      label="probe (roofline)" if i == 0 else None)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([c.replace(", ", "\n", 1) for c in cases], rotation=45, ha="right",
                       fontsize=8)
    ax.set_ylabel("effective GB/s (higher is better)")
    machine = result["machine"]
    ax.set_title(f"adamcore {result['versions'].get('adamcore')} bench, {result['date'][:10]}: "
                 f"{machine.get('gpu') or machine.get('cpu')} ({machine.get('cores')} cores)\n"
                 "bytes each implementation must move / median time; dashed: the roofline probe",
                 fontsize=9)
    # outside the axes, so that it hides no bar and no probe line
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None



def summary_markdown(rows: list[dict]) -> str:
    """One line per case: adamcore, the probe, the best peer (the README's table)."""
    lines = ["| case | adamcore | % of probe | probe | best peer | adamcore vs best peer |",
             "| --- | ---: | ---: | ---: | --- | ---: |"]
    for case in dict.fromkeys(r["case"] for r in rows):
        ok = {r["impl"]: r for r in rows if r["case"] == case and r["status"] == "ok"}
        ours, probe = ok.get("adamcore"), ok.get("probe (roofline)")
        if ours is None:
            continue
        peers = [r for r in ok.values() if r["kind"] == "peer"]
        best = min(peers, key=lambda r: r["ms"]) if peers else None
        pct = f"{ours['pct_probe']:.0f}%" if ours["pct_probe"] is not None else "-"
        lines.append(f"| {case} | {_time_text(ours['ms'])} | {pct} | "
                     f"{_time_text(probe['ms']) if probe else '-'} | "
                     + (f"{best['impl']} {_time_text(best['ms'])} | {ours['speedup']:.2f}x |"
                        if best else "- | - |"))
    return "\n".join(lines)
