"""L2-regularised logistic regression trained with minibatches by adamcore.minimize.

    python examples/logistic_regression.py [--plot loss.png] [--epochs 20]

The objective returns the loss and gradient of the next minibatch, so it is stochastic: the
convergence tests are off (gtol=0) and the run lasts epochs * batches steps, with a cosine
learning-rate schedule. Everything is float32 (the dtype of x0 is kept). When SciPy is
installed, a full-batch L-BFGS fit of the same objective shows how close the minibatch run got.
When matplotlib is installed, the loss curve goes to a PNG.
"""

import argparse
import math
import time

import numpy as np
from synthetic_data import make_classification

import adamcore

L2 = 1e-3  # the penalty L2/2 * |w|^2 (the bias is not penalised)


def loss_and_grad(params, X, y):
    """Mean logistic loss of (X, y) plus the L2 penalty, and its gradient: params = (w, b)."""
    w, b = params[:-1], params[-1]
    z = X @ w + b
    loss = np.mean(np.logaddexp(0, z) - y * z) + 0.5 * L2 * (w @ w)
    r = (1 / (1 + np.exp(-z)) - y) / len(y)  # d loss / d z
    return float(loss), np.append(X.T @ r + L2 * w, r.sum())


def accuracy(params, X, y):
    return float(np.mean((X @ params[:-1] + params[-1] > 0) == (y > 0.5)))


def minibatches(X, y, batch_size, seed):
    """An endless stream of shuffled minibatches, a new order each epoch."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(y))
        for start in range(0, len(y) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield X[idx], y[idx]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plot", default="logistic_regression_loss.png",
                        help="where to save the loss curve (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    (X_train, y_train), (X_test, y_test) = make_classification(seed=0)
    steps = args.epochs * (len(y_train) // args.batch_size)
    batches = minibatches(X_train, y_train, args.batch_size, seed=1)
    peak = 0.05
    cosine = lambda count: 0.5 * peak * (1 + math.cos(math.pi * count / steps))  # noqa: E731

    losses = []
    start = time.perf_counter()
    res = adamcore.minimize(
        lambda params: loss_and_grad(params, *next(batches)),
        np.zeros(X_train.shape[1] + 1, dtype=np.float32),
        jac=True, lr=cosine, maxiter=steps, gtol=0, ftol=None,
        callback=lambda intermediate_result: losses.append(intermediate_result.fun),
    )
    seconds = time.perf_counter() - start

    full_loss = loss_and_grad(res.x, X_train, y_train)[0]
    print(f"{len(y_train)} training and {len(y_test)} test samples, {X_train.shape[1]} features; "
          f"{res.nit} Adam steps of {args.batch_size} samples in {seconds:.2f} s "
          f"({res.x.dtype})")
    print(f"training loss {full_loss:.5f}; accuracy: train {accuracy(res.x, X_train, y_train):.4f}"
          f", test {accuracy(res.x, X_test, y_test):.4f}")
    print(f"result: {res.message}")

    try:
        from scipy import optimize
    except ImportError:
        print("SciPy is not installed: no full-batch reference")
    else:
        X64, y64 = X_train.astype(np.float64), y_train.astype(np.float64)
        ref = optimize.minimize(loss_and_grad, np.zeros(X64.shape[1] + 1), (X64, y64), jac=True,
                                method="L-BFGS-B", options={"gtol": 1e-10})
        print(f"full-batch L-BFGS-B: training loss {ref.fun:.5f}, test accuracy "
              f"{accuracy(ref.x, X_test, y_test):.4f} (minibatch Adam is "
              f"{full_loss - ref.fun:+.1e} above it)")

    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no loss curve")
        return
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    window = len(y_train) // args.batch_size  # one epoch
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(losses, color="0.8", linewidth=0.6, label="minibatch loss")
    ax.plot(np.arange(window - 1, len(losses)), smooth, label="mean over one epoch")
    ax.set(xlabel="Adam step", ylabel="loss (with L2 penalty)", yscale="log",
           title="Logistic regression, adamcore.minimize with minibatches")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=100)
    print(f"loss curve saved to {args.plot}")


if __name__ == "__main__":
    main()
