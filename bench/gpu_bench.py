"""The GPU half of SPEC §5, standalone: adamcore's CUDA step against a device copy, the roofline
probe, torch fused/foreach and a hand-written CuPy ElementwiseKernel, timed in one run.

    python bench/gpu_bench.py [--quick] [--json FILE]

Each case runs its implementations in interleaved rounds (A B C A B C ...) and reports the
median time per step, from CUDA events on the current stream (Python included for the
optimizer steps, as a user sees them: the event pair brackets the Python call). Bandwidth is
bytes the step must move / time; the probe's and the copy's GB/s are the ceilings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import adamcore
from adamcore import _cuda


def _bytes_per_element(param_dtype, amsgrad=False):
    p = torch.finfo(param_dtype).bits // 8
    s = 8 if param_dtype == torch.float64 else 4
    # read p, g, m, v (+ vmax); write p, m, v (+ vmax); 16-bit params take 16-bit grads here
    return 2 * p + p + 2 * 2 * s + (2 * s if amsgrad else 0)


def _events_time(fn, rounds_of):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    rounds_of.append((start, end))


def run_case(name, sizes, dtype, impls, rounds):
    """impls: name -> setup(sizes, dtype) -> step callable. Returns rows."""
    steps = {k: setup(sizes, dtype) for k, setup in impls.items()}
    steps = {k: f for k, f in steps.items() if f is not None}
    for f in steps.values():  # warm up: first steps build state and plans
        for _ in range(3):
            f()
    torch.cuda.synchronize()
    events = {k: [] for k in steps}
    for _ in range(rounds):
        for k, f in steps.items():
            _events_time(f, events[k])
    torch.cuda.synchronize()
    n = sum(sizes)
    rows = []
    for k, evs in events.items():
        ms = statistics.median(s.elapsed_time(e) for s, e in evs)
        moved = n * (8 if k == "copy" else _bytes_per_element(dtype) if k != "probe" else 28)
        rows.append({"case": name, "impl": k, "elements": n, "tensors": len(sizes),
                     "dtype": str(dtype).split(".")[-1], "ms": ms, "GB/s": moved / ms / 1e6})
    return rows


def _tensors(sizes, dtype, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [torch.randn(n, generator=gen, device="cuda").to(dtype) for n in sizes]


def setup_copy(sizes, dtype):
    src = torch.randn(sum(sizes), device="cuda")
    dst = torch.empty_like(src)
    stream = torch.cuda.current_stream().cuda_stream
    return lambda: _cuda.copy(dst, src, stream)


def setup_probe(sizes, dtype):
    n = sum(sizes)
    p, g, m, v = (torch.rand(n, device="cuda") for _ in range(4))
    stream = torch.cuda.current_stream().cuda_stream
    return lambda: _cuda.stream_probe(p, g, m, v, stream)


def setup_adamcore(sizes, dtype):
    params = _tensors(sizes, dtype)
    grads = _tensors(sizes, dtype, 1)
    opt = adamcore.Adam(params, lr=1e-3)
    return lambda: opt.step(grads)


def _setup_torch(sizes, dtype, **kw):
    params = [torch.nn.Parameter(t) for t in _tensors(sizes, dtype)]
    for p, g in zip(params, _tensors(sizes, dtype, 1)):
        p.grad = g
    opt = torch.optim.Adam(params, lr=1e-3, **kw)
    return opt.step


def setup_torch_fused(sizes, dtype):
    return _setup_torch(sizes, dtype, fused=True)


def setup_torch_foreach(sizes, dtype):
    return _setup_torch(sizes, dtype, foreach=True)


def setup_cupy_kernel(sizes, dtype):
    try:
        import cupy
    except ImportError:
        return None
    if dtype != torch.float32:
        return None
    kernel = cupy.ElementwiseKernel(
        "float32 g, float32 b1, float32 b2, float32 step_size, float32 inv_bc2, float32 eps",
        "float32 p, float32 m, float32 v",
        """
        m = b1 * m + (1.0f - b1) * g;
        v = b2 * v + (1.0f - b2) * g * g;
        p = p - step_size * m / (sqrtf(v) * inv_bc2 + eps);
        """, "adam_hand")
    params = [cupy.asarray(t) for t in _tensors(sizes, dtype)]
    grads = [cupy.asarray(t) for t in _tensors(sizes, dtype, 1)]
    ms = [cupy.zeros_like(p) for p in params]
    vs = [cupy.zeros_like(p) for p in params]
    t = [0]

    def step():
        t[0] += 1
        step_size = 1e-3 / (1 - 0.9 ** t[0])
        inv_bc2 = 1 / (1 - 0.999 ** t[0]) ** 0.5
        for p, g, m, v in zip(params, grads, ms, vs):
            kernel(g, 0.9, 0.999, step_size, inv_bc2, 1e-8, p, m, v)

    return step


IMPLS = {"copy": setup_copy, "probe": setup_probe, "adamcore": setup_adamcore,
         "torch fused": setup_torch_fused, "torch foreach": setup_torch_foreach,
         "cupy kernel": setup_cupy_kernel}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() or _cuda.device_count() == 0:
        print("needs torch with CUDA and a GPU", file=sys.stderr)
        return 1
    m = 1 << 20
    cases = [("16M, 1 tensor", [16 * m], torch.float32),
             ("16M in 200 tensors", [16 * m // 200] * 199 + [16 * m - 199 * (16 * m // 200)],
              torch.float32),
             ("1000 x 4096", [4096] * 1000, torch.float32),
             ("bf16 16M, 1 tensor", [16 * m], torch.bfloat16)]
    if not args.quick:
        cases.insert(1, ("128M, 1 tensor", [128 * m], torch.float32))
    rows = []
    for name, sizes, dtype in cases:
        rows += run_case(name, sizes, dtype, IMPLS, rounds=5 if args.quick else 25)
    print(f"GPU: {torch.cuda.get_device_name()}")
    print(f"{'case':22} {'impl':14} {'ms':>9} {'GB/s':>8} {'% copy':>7} {'% probe':>8}")
    for name in dict.fromkeys(r["case"] for r in rows):
        case = [r for r in rows if r["case"] == name]
        copy = next(r["GB/s"] for r in case if r["impl"] == "copy")
        probe = next(r["GB/s"] for r in case if r["impl"] == "probe")
        for r in case:
            r["pct_copy"], r["pct_probe"] = 100 * r["GB/s"] / copy, 100 * r["GB/s"] / probe
            print(f"{name:22} {r['impl']:14} {r['ms']:9.4f} {r['GB/s']:8.1f} "
                  f"{r['pct_copy']:6.1f}% {r['pct_probe']:7.1f}%")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
