"""Learning-rate schedules: ``count -> lr``, where count is the number of steps already taken.

As in optax, the first step uses ``schedule(0)``. Pass a schedule as ``lr`` to
:class:`adamcore.Adam`/``AdamW`` (or to ``adamcore.minimize``)::

    lr = adamcore.schedules.warmup_cosine(init_value=0.0, peak_value=1e-3, warmup_steps=100,
                                          decay_steps=1000, end_value=1e-5)
    opt = adamcore.AdamW(params, lr=lr)

Schedules are small picklable objects (a checkpoint's param groups can hold them), and they
compose: :func:`join` runs one after another at given boundaries. Arguments are checked when a
schedule is made (ValueError), so a bad one fails at construction, not mid-training.
"""

from __future__ import annotations

import math
import operator

__all__ = ["Schedule", "constant", "cosine_decay", "join", "linear", "linear_warmup",
           "warmup_cosine"]


def _value(name: str, x) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not (math.isfinite(v) and v >= 0.0):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return v


def _steps(name: str, x, minimum: int = 0) -> int:
    if isinstance(x, bool):
        raise ValueError(f"{name} must be an int, got {x!r}")
    try:
        n = operator.index(x)
    except TypeError:
        raise ValueError(f"{name} must be an int, got {x!r}") from None
    if n < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {n}")
    return n


def _count(count) -> int:
    if isinstance(count, bool):
        raise TypeError(f"a schedule takes the step count, an int >= 0, got {count!r}")
    try:
        n = operator.index(count)
    except TypeError:
        raise TypeError(f"a schedule takes the step count, an int >= 0, got {count!r}") from None
    if n < 0:
        raise ValueError(f"the step count must be >= 0, got {n}")
    return n


class Schedule:
    """Base class: ``schedule(count) -> float``; subclasses implement ``_at(count)``."""

    def __call__(self, count) -> float:
        return self._at(_count(count))

    def _at(self, count: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    __hash__ = None


class _Constant(Schedule):
    def __init__(self, value):
        self.value = _value("value", value)

    def _at(self, count):
        return self.value


class _Linear(Schedule):
    def __init__(self, init_value, end_value, transition_steps, transition_begin=0):
        self.init_value = _value("init_value", init_value)
        self.end_value = _value("end_value", end_value)
        self.transition_steps = _steps("transition_steps", transition_steps)
        self.transition_begin = _steps("transition_begin", transition_begin)

    def _at(self, count):
        if self.transition_steps == 0:  # optax: a zero-length transition is the initial value
            return self.init_value
        t = min(max(count - self.transition_begin, 0), self.transition_steps)
        frac = t / self.transition_steps
        return self.init_value + (self.end_value - self.init_value) * frac


class _CosineDecay(Schedule):
    def __init__(self, init_value, decay_steps, alpha=0.0, exponent=1.0):
        self.init_value = _value("init_value", init_value)
        self.decay_steps = _steps("decay_steps", decay_steps, minimum=1)
        self.alpha = _value("alpha", alpha)
        if self.alpha > 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        self.exponent = _value("exponent", exponent)
        if self.exponent == 0.0:
            raise ValueError("exponent must be > 0")

    def _at(self, count):
        t = min(count, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1.0 + math.cos(math.pi * t))
        return self.init_value * ((1.0 - self.alpha) * cosine**self.exponent + self.alpha)


class _Join(Schedule):
    def __init__(self, schedules, boundaries):
        self.schedules = list(schedules)
        self.boundaries = [_steps("a boundary", b) for b in boundaries]
        if len(self.schedules) != len(self.boundaries) + 1:
            raise ValueError(f"join needs one boundary fewer than schedules: got "
                             f"{len(self.schedules)} schedules, {len(self.boundaries)} boundaries")
        if any(not callable(s) for s in self.schedules):
            raise ValueError("join takes schedules: callables count -> lr")
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries must increase, got {self.boundaries}")

    def _at(self, count):
        start = 0
        for schedule, boundary in zip(self.schedules, self.boundaries):
            if count < boundary:
                return float(schedule(count - start))
            start = boundary
        return float(self.schedules[-1](count - start))


def constant(value) -> Schedule:
    """``value`` at every step."""
    return _Constant(value)


def linear(init_value, end_value, transition_steps, transition_begin=0) -> Schedule:
    """From ``init_value`` to ``end_value`` linearly over ``transition_steps`` steps, starting
    after ``transition_begin`` steps; constant before and after (optax's linear_schedule)."""
    return _Linear(init_value, end_value, transition_steps, transition_begin)


def linear_warmup(peak_value, warmup_steps, init_value=0.0) -> Schedule:
    """From ``init_value`` up to ``peak_value`` over ``warmup_steps`` steps, then ``peak_value``.

    With ``init_value=0`` the first step uses lr 0, as optax's warmup does; pass a small
    ``init_value`` (or join a constant) if the first step should move the parameters.
    ``warmup_steps=0`` is ``peak_value`` from the start.
    """
    ramp = _Linear(init_value, peak_value, warmup_steps)
    return ramp if ramp.transition_steps else _Constant(peak_value)


def cosine_decay(init_value, decay_steps, alpha=0.0, exponent=1.0) -> Schedule:
    """``init_value * ((1 - alpha) * c**exponent + alpha)`` with
    ``c = (1 + cos(pi * min(count, decay_steps) / decay_steps)) / 2``: from ``init_value`` down to
    ``alpha * init_value`` at ``decay_steps``, and constant after (optax's
    cosine_decay_schedule)."""
    return _CosineDecay(init_value, decay_steps, alpha, exponent)


def warmup_cosine(init_value, peak_value, warmup_steps, decay_steps, end_value=0.0,
                  exponent=1.0) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value`` over ``warmup_steps``, then cosine
    decay to ``end_value``. As in optax's warmup_cosine_decay_schedule, ``decay_steps`` is the
    length of the whole schedule, warmup included (so it must be > ``warmup_steps``)."""
    warmup_steps = _steps("warmup_steps", warmup_steps)
    decay_steps = _steps("decay_steps", decay_steps, minimum=1)
    if decay_steps <= warmup_steps:
        raise ValueError(f"decay_steps ({decay_steps}) is the whole schedule's length and must "
                         f"exceed warmup_steps ({warmup_steps})")
    peak = _value("peak_value", peak_value)
    end = _value("end_value", end_value)
    if end > peak:
        raise ValueError(f"end_value ({end_value}) must not exceed peak_value ({peak_value})")
    alpha = end / peak if peak > 0 else 0.0
    cosine = _CosineDecay(peak, decay_steps - warmup_steps, alpha, exponent)
    if warmup_steps == 0:
        return cosine
    return _Join([_Linear(init_value, peak, warmup_steps), cosine], [warmup_steps])


def join(schedules, boundaries) -> Schedule:
    """Runs ``schedules[i]`` from ``boundaries[i-1]`` on, each counting from 0 at its start
    (optax's join_schedules): ``join([linear_warmup(1e-3, 100), cosine_decay(1e-3, 900)],
    [100])`` warms up for 100 steps, then decays over 900."""
    return _Join(schedules, boundaries)
