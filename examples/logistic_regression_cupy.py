"""Logistic regression on the GPU: CuPy arrays stepped in place by adamcore.AdamW.

    python examples/logistic_regression_cupy.py [--epochs 20]

The model of logistic_regression.py, on the same data, trained with a plain loop: the
parameters, data and gradients live on the GPU, and adamcore.AdamW updates the CuPy arrays in
their own memory (on CuPy's current stream). The regulariser is AdamW's decoupled weight decay
on the weights (not on the bias, which gets a param group without decay). Needs CuPy and an
NVIDIA GPU.
"""

import argparse
import math
import sys
import time

import numpy as np
from synthetic_data import make_classification

import adamcore

try:
    import cupy as cp
except ImportError:
    cp = None


def gpu_missing():
    """Why this example cannot run here, or None."""
    if cp is None:
        return "CuPy is not installed (pip install cupy-cuda13x: CUDA 13, as adamcore's build)"
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError as e:
        return f"CUDA is not usable: {e}"
    return None if count > 0 else "no CUDA GPU found"


def gradients(w, b, X, y):
    """Mean logistic loss of (X, y) and its gradient w.r.t. (w, b), on the device of X."""
    z = X @ w + b
    loss = cp.mean(cp.logaddexp(0, z) - y * z)
    r = (1 / (1 + cp.exp(-z)) - y) / len(y)
    return loss, X.T @ r, r.sum(keepdims=True)


def accuracy(w, b, X, y):
    return float(cp.mean((X @ w + b > 0) == (y > 0.5)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    why = gpu_missing()
    if why:
        sys.exit(f"this example needs CuPy and an NVIDIA GPU: {why}")

    (X_train, y_train), (X_test, y_test) = (tuple(map(cp.asarray, part))
                                            for part in make_classification(seed=0))
    w = cp.zeros(X_train.shape[1], dtype=cp.float32)
    b = cp.zeros(1, dtype=cp.float32)
    batches_per_epoch = len(y_train) // args.batch_size
    steps = args.epochs * batches_per_epoch
    peak = 0.05
    opt = adamcore.AdamW(
        [{"params": [w], "weight_decay": 1e-2}, {"params": [b], "weight_decay": 0.0}],
        lr=lambda count: 0.5 * peak * (1 + math.cos(math.pi * count / steps)),
    )

    rng = np.random.default_rng(1)
    losses = cp.empty(steps, dtype=cp.float32)  # kept on the GPU: no sync inside the loop
    start = time.perf_counter()
    for epoch in range(args.epochs):
        order = cp.asarray(rng.permutation(len(y_train)))
        for k in range(batches_per_epoch):
            idx = order[k * args.batch_size:(k + 1) * args.batch_size]
            loss, grad_w, grad_b = gradients(w, b, X_train[idx], y_train[idx])
            opt.step([grad_w, grad_b])  # w and b are updated in place
            losses[epoch * batches_per_epoch + k] = loss
    cp.cuda.get_current_stream().synchronize()
    seconds = time.perf_counter() - start

    print(f"{len(y_train)} training and {len(y_test)} test samples on "
          f"{cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)['name'].decode()}; "
          f"{steps} AdamW steps of {args.batch_size} samples in {seconds:.2f} s")
    print(f"last epoch's mean minibatch loss {float(losses[-batches_per_epoch:].mean()):.5f}; "
          f"accuracy: train {accuracy(w, b, X_train, y_train):.4f}, "
          f"test {accuracy(w, b, X_test, y_test):.4f}")


if __name__ == "__main__":
    main()
