"""Hyperparameters: checked once here, turned into the per-step set every backend takes."""

from __future__ import annotations

import math
from typing import NamedTuple

from . import _lowp, _scalars

# The flags of adamcore.h (ADAMCORE_*), for the native backends.
DECOUPLED_WEIGHT_DECAY = 0x1
DECOUPLE_LR = 0x2
AMSGRAD = 0x4
MAXIMIZE = 0x8
KAHAN_SUMMATION = 0x10
STOCHASTIC_ROUNDING = 0x20


class StepHParams(NamedTuple):
    """Everything one step needs, as adamcore.h's ``adamcore_hparams``: lr is this step's value."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    max_lr: float
    step: int  # t, the 1-based index of this update
    flags: int

    @property
    def amsgrad(self) -> bool:
        return bool(self.flags & AMSGRAD)


def _finite_nonnegative(name: str, value) -> float:
    try:
        x = _scalars.real(name, value)  # Python, NumPy and torch numbers; never a string
    except ValueError:
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(x) and x >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return x


def check_group(group: dict) -> None:
    """Raises ValueError naming the first hyperparameter of a param group that is out of range."""
    lr = group["lr"]
    if not callable(lr):
        _finite_nonnegative("lr", lr)
    try:
        beta1, beta2 = group["betas"]
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {group['betas']!r}") from None
    for i, beta in enumerate((beta1, beta2)):
        try:
            ok = 0.0 <= _scalars.real(f"betas[{i}]", beta) < 1.0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"betas[{i}] must be in [0, 1), got {beta!r}")
    _finite_nonnegative("eps", group["eps"])
    _finite_nonnegative("weight_decay", group["weight_decay"])
    if group["decouple_lr"]:
        max_lr = group["max_lr"]
        if max_lr is None:
            if callable(lr):
                raise ValueError("decouple_lr with an lr schedule needs max_lr (the peak lr)")
            max_lr = lr
        try:
            ok = 0.0 < _scalars.real("max_lr", max_lr) < math.inf
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"max_lr must be a finite number > 0, got {max_lr!r}")
    _lowp.check_group(group)


def flags_of(group: dict) -> int:
    flags = 0
    if group["decoupled_weight_decay"]:
        flags |= DECOUPLED_WEIGHT_DECAY
    if group["decouple_lr"]:
        flags |= DECOUPLE_LR | DECOUPLED_WEIGHT_DECAY
    if group["amsgrad"]:
        flags |= AMSGRAD
    if group["maximize"]:
        flags |= MAXIMIZE
    if group.get("kahan_summation") or group.get("stochastic_rounding"):
        flags |= _lowp.flags_of(group)
    return flags


def lr_at(lr, count: int) -> float:
    """The learning rate after ``count`` steps: lr itself, or lr(count) for a schedule (optax)."""
    value = lr(count) if callable(lr) else lr
    try:
        value = _scalars.real("lr", value)
    except ValueError:
        raise ValueError(f"the lr schedule gave {value!r} at count {count}; lr must be a "
                         f"finite number >= 0") from None
    if not (0.0 <= value < math.inf):
        raise ValueError(f"the lr schedule gave {value!r} at count {count}; lr must be finite and >= 0")
    return value


def step_hparams(group: dict, step: int, *, checked: bool = True) -> StepHParams:
    """The hyperparameters of update number ``step`` (1-based) of a param group: the one
    record every backend takes (a native backend takes it as adamcore.h's tuple).

    Checked (the general step), every value is a float in range, or the ValueError names the
    first that is not (group edits take effect, and are checked, at the next step). Unchecked
    (the steady plan, every step): the values as the group holds them, for a native backend
    whose core checks every value, with the same messages, before it writes; a value it refuses
    sends the step back to the general path.
    """
    lr = group["lr"]
    if checked:
        check_group(group)  # an edited group (eps=None, lr="0.1", ...) is refused by name
    scheduled = callable(lr)
    if scheduled:
        lr = lr_at(lr, step - 1) if checked else lr(step - 1)
    try:
        beta1, beta2 = group["betas"]
    except (TypeError, ValueError):  # an edited group's betas that is not a pair
        check_group(group)  # raises the clear ValueError
        raise
    max_lr = group["max_lr"]
    flags = flags_of(group)
    if not checked:
        return StepHParams(lr, beta1, beta2, group["eps"], group["weight_decay"],
                           lr if max_lr is None else max_lr, step, flags)
    lr = float(lr)
    hp = StepHParams(
        lr,
        float(beta1),
        float(beta2),
        float(group["eps"]),
        float(group["weight_decay"]),
        float(max_lr) if max_lr is not None else lr,
        int(step),
        flags,
    )
    inf = math.inf
    if not (
        0.0 <= hp.lr < inf
        and 0.0 <= hp.beta1 < 1.0
        and 0.0 <= hp.beta2 < 1.0
        and 0.0 <= hp.eps < inf
        and 0.0 <= hp.weight_decay < inf
        and (not flags & DECOUPLE_LR or (0.0 < hp.max_lr < inf and not (scheduled and max_lr is None)))
    ):
        check_group(group)  # raises with the detailed message
        raise ValueError(f"hyperparameters out of range: {hp}")
    return hp
