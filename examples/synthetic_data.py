"""The seeded binary-classification data set of the logistic-regression and PyTorch examples.

Features are correlated Gaussians; labels are drawn from a logistic model with a known weight
vector, so the best possible test accuracy is below 100% and a good fit gets close to it.
"""

import numpy as np


def make_classification(n_samples=20_000, n_features=20, test_fraction=0.25, seed=0,
                        dtype=np.float32):
    """Returns ``(X_train, y_train), (X_test, y_test)``; labels are 0.0 or 1.0 in ``dtype``."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(n_features) + 0.3 * rng.standard_normal((n_features, n_features))
    X = rng.standard_normal((n_samples, n_features)) @ mixing
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    w_true = rng.standard_normal(n_features) * 1.5
    logits = X @ w_true + 0.5
    y = (rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logits))).astype(dtype)
    n_test = int(n_samples * test_fraction)
    X = X.astype(dtype)
    return (X[n_test:], y[n_test:]), (X[:n_test], y[:n_test])
