"""docs/update.md written out literally in float64 NumPy: the oracle the kernels are checked by.

Independent of adamcore's own code on purpose (adamcore._reference is checked against it too).
"""

import numpy as np


def adam_textbook(p, g, m, v, vmax, *, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0, decoupled_weight_decay=False, decouple_lr=False,
                  max_lr=None, amsgrad=False, maximize=False):
    """One step on float64 copies; returns (p, m, v, vmax)."""
    p, g, m, v = (np.array(x, dtype=np.float64) for x in (p, g, m, v))
    vmax = np.array(vmax, dtype=np.float64) if amsgrad else None
    if maximize:
        g = -g
    if weight_decay and not (decoupled_weight_decay or decouple_lr):
        g = g + weight_decay * p
    if decouple_lr:
        p = p * (1 - lr / (max_lr if max_lr is not None else lr) * weight_decay)
    elif decoupled_weight_decay:
        p = p * (1 - lr * weight_decay)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    second = v
    if amsgrad:
        vmax = np.maximum(vmax, v)
        second = vmax
    p = p - lr / (1 - beta1**step) * m / (np.sqrt(second) / np.sqrt(1 - beta2**step) + eps)
    return p, m, v, vmax
