"""Does low precision lose updates? A 2-layer MLP on a synthetic regression, trained with
adamcore.AdamW (over torch CPU tensors) in each low-precision mode, against the same run in float32.

Every mode sees the same data, the same initial weights (rounded to the mode's param dtype) and a
float32 gradient of its own weights (the forward and backward run in float32 on a float32 copy),
so the only difference between the runs is how the optimizer stores params and state. The
learning rate decays (cosine) to a small final value: late updates are far below half a bfloat16
ulp of the weights, which is where plain bfloat16 rounding drops them.

    python bench/lowp_experiment.py [--steps 3000] [--out bench/results]

prints a table (final loss, distance of the weights to the float32 run) and writes
lowp_experiment.json and lowp_experiment.png (matplotlib, if installed) under --out.

MODES maps a row name to the optimizer's keyword arguments; the key "param_dtype" (default
float32) is the dtype the weights are stored in and is not passed to the optimizer. Add a row to
compare another mode (e.g. ``"bf16 + SR + bf16 states": {"param_dtype": "bfloat16",
"stochastic_rounding": True, "state_dtype": "bfloat16"}``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import adamcore

MODES = {
    "fp32": {},
    "bf16": {"param_dtype": "bfloat16"},
    "bf16 + kahan": {"param_dtype": "bfloat16", "kahan_summation": True},
    "bf16 + stochastic rounding": {"param_dtype": "bfloat16", "stochastic_rounding": True},
    "bf16 + kahan + bf16 states": {"param_dtype": "bfloat16", "kahan_summation": True,
                                   "state_dtype": "bfloat16"},
    "fp32 + bf16 states": {"state_dtype": "bfloat16"},
    "fp32 + int8 states": {"state_dtype": "int8_blockwise"},
    "bf16 + int8 states": {"param_dtype": "bfloat16", "state_dtype": "int8_blockwise"},
}

IN, HIDDEN, SAMPLES = 16, 64, 2048


def data(seed: int = 0):
    """A fixed teacher MLP plus noise: inputs, targets, and a held-out set."""
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(IN, HIDDEN, generator=gen) / math.sqrt(IN)
    w2 = torch.randn(HIDDEN, 1, generator=gen) / math.sqrt(HIDDEN)
    x = torch.randn(2 * SAMPLES, IN, generator=gen)
    y = torch.tanh(x @ w1) @ w2 + 0.01 * torch.randn(2 * SAMPLES, 1, generator=gen)
    return x[:SAMPLES], y[:SAMPLES], x[SAMPLES:], y[SAMPLES:]


def initial_weights(seed: int = 1) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(IN, HIDDEN, generator=gen) / math.sqrt(IN),
            torch.zeros(HIDDEN),
            torch.randn(HIDDEN, 1, generator=gen) / math.sqrt(HIDDEN),
            torch.zeros(1)]


def loss_of(weights, x, y) -> torch.Tensor:
    w1, b1, w2, b2 = weights
    return torch.mean((torch.tanh(x @ w1 + b1) @ w2 + b2 - y) ** 2)


def train(options: dict, steps: int, lr: float = 3e-3, final_lr: float = 1e-5,
          record_every: int = 10) -> dict:
    """One run; returns the loss curve, the final losses and the final weights (float32)."""
    options = dict(options)
    dtype = getattr(torch, options.pop("param_dtype", "float32"))
    x, y, x_test, y_test = data()
    params = [w.to(dtype) for w in initial_weights()]
    opt = adamcore.AdamW(params, lr=lr, weight_decay=0.0, **options)
    curve = []
    start = time.perf_counter()
    for step in range(steps):
        # cosine decay from lr to final_lr
        opt.param_groups[0]["lr"] = final_lr + 0.5 * (lr - final_lr) * (
            1 + math.cos(math.pi * step / max(1, steps - 1)))
        shadow = [p.detach().float().requires_grad_() for p in params]
        loss = loss_of(shadow, x, y)
        loss.backward()
        opt.step([s.grad for s in shadow])  # float32 grads: the same quality in every mode
        if step % record_every == 0 or step == steps - 1:
            curve.append((step, float(loss.detach())))
    seconds = time.perf_counter() - start
    with torch.no_grad():
        weights = [p.float() for p in params]
        return {"curve": curve, "train_loss": float(loss_of(weights, x, y)),
                "test_loss": float(loss_of(weights, x_test, y_test)), "weights": weights,
                "seconds": seconds}


def run(modes: dict = MODES, steps: int = 3000) -> dict:
    """Every mode; adds each one's relative distance to the float32 run's weights."""
    results = {name: train(options, steps) for name, options in modes.items()}
    reference = results.get("fp32")
    for r in results.values():
        if reference is not None:
            num = math.sqrt(sum(float(((a - b) ** 2).sum())
                                for a, b in zip(r["weights"], reference["weights"])))
            den = math.sqrt(sum(float((b ** 2).sum()) for b in reference["weights"]))
            r["distance_to_fp32"] = num / den
    return results


def table(results: dict) -> str:
    lines = ["| mode | final train loss | held-out loss | distance to fp32 (relative) |",
             "| --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['train_loss']:.3e} | {r['test_loss']:.3e} | "
                     f"{r.get('distance_to_fp32', float('nan')):.2e} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in results.items():
        steps, losses = zip(*r["curve"])
        ax.semilogy(steps, losses, label=name, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (MSE)")
    ax.set_title("2-layer MLP, AdamW with cosine lr 3e-3 -> 1e-5: low-precision modes")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = run(MODES, args.steps)
    print(table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {name: {k: v for k, v in r.items() if k != "weights"} for name, r in results.items()}
    (args.out / "lowp_experiment.json").write_text(json.dumps(
        {"steps": args.steps, "modes": {k: MODES[k] for k in results}, "results": summary},
        ) + "\n")
    if plot(results, args.out / "lowp_experiment.png"):
        print(f"plot: {args.out / 'lowp_experiment.png'}")


if __name__ == "__main__":
    main()
