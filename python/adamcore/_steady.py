"""The steady-state plan: repeated steps over unchanged params, without the general step.

Every front end (adamcore.Adam/AdamW, adamcore.torch.Adam/AdamW) makes one after a successful
general step (``_engine.general_step``) and tries it first at the next step. A plan asks the
params' backend for its native plan (``Backend.make_plan``: the CPU core's CpuPlan, the CUDA
backend's plan with its work table uploaded once; the reference path has none), which holds the
params and state arrays; before each step it checks only what can change between steps:

- the params and state arrays are the objects it holds (identity), as are the state dicts and
  the param groups; each group's amsgrad and check_finite, and the step counters;
- the params' memory, shape, strides, dtype and writeability, which NumPy and torch let a caller
  change under the same object (``p.shape = ...``, ``p.data = ...``, ``resize_``): NumPy params
  through the native plan's ``holds`` (one call for all), torch ones by data pointer and shape;
- the grads' types; the native plan checks their shapes, dtypes and devices, and the
  hyperparameters, before it writes.

For NumPy params with int counters (adamcore.Adam) all of this but the groups is one native call
(``CpuPlan.watch`` once, ``CpuPlan.steady_step`` each step), which also steps and advances the
counters: each object is then touched once per step instead of once per check.

Whenever anything changed, or an input is unusual, ``step`` returns False having written
nothing and the front end runs the general step, which validates everything and raises the
precise error, if there is one, then builds a new plan. ``build`` says which optimizers take
none. Groups with 8-bit state have their own native side (``_blockwise.Plan``: one call of the
core per step, which imports and validates every array again).
"""

from __future__ import annotations

import operator
from itertools import chain
from typing import NamedTuple

import numpy as np

from . import _arrays, _blockwise, _core, _hparams, _lowp, _memory
from ._dispatch import StepTensor, backend_for, bump_versions


def plan_flags(group: dict) -> tuple:
    """What a plan's arrays, seeds and checks were made for: a change to any of these ends the
    plan (amsgrad's max is another array, 16-bit state another dtype, Kahan summation another
    buffer, the seed another stream)."""
    return (group["amsgrad"], bool(group["check_finite"]), group.get("state_dtype"),
            bool(group.get("kahan_summation")), bool(group.get("stochastic_rounding")),
            group.get("rounding_seed", 0))


# Every key of a param group whose value a steady step reads (the hyperparameters, their flags,
# and the options that send a group to the general path): while each is the very object it was,
# the hyperparameters built from them hold (tests/test_steady.py checks that no other is read).
GROUP_KEYS = ("lr", "betas", "eps", "weight_decay", "max_lr", "decoupled_weight_decay",
              "decouple_lr", "amsgrad", "maximize", "check_finite", "state_dtype",
              "kahan_summation", "stochastic_rounding", "rounding_seed")
_IMMUTABLE = (float, int, str, type(None), np.generic)
_ABSENT = object()  # a key the group lacks
_PLACEHOLDER = _hparams.StepHParams(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1, 0)  # never used (_watch_groups)


def _cacheable(value) -> bool:
    """Whether hyperparameters built from value stay right while value is the same object: a
    number, a string, None or a tuple of those (not a schedule, a list or a tensor)."""
    if type(value) is tuple:
        return all(map(_cacheable, value))
    return isinstance(value, _IMMUTABLE)


class Slot(NamedTuple):
    """A param the plan steps: the array, its state dict, its group's position, the key of its
    state dict in the front end's state mapping and its position among all groups' params."""

    param: object  # what the backend writes (a DTensor's local shard, a detached tensor, ...)
    state: dict
    group: int  # index into the plan's groups
    key: object  # opt.state[key] is state: the param's index (adamcore.Adam), the param (torch)
    index: int  # stochastic rounding's stream (_lowp.tensor_seed)


def state_keys(group: dict) -> tuple:
    """The keys of the state arrays a plan holds for a param of this group."""
    if _blockwise.is_quantized(group):
        return ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax")
    keys = ("exp_avg", "exp_avg_sq")
    if group["amsgrad"]:
        keys += ("max_exp_avg_sq",)
    if group.get("kahan_summation"):
        keys += (_lowp.KAHAN_KEY,)
    return keys


_is = operator.is_
# whether each state dict's arrays are still the plan's: one native call (300 dict lookups in
# Python cost ~20 us, a tenth of a 1M-element step on two threads)
_same_items = _core._steady.same_items
_shape = operator.attrgetter("shape")


class IntSteps:
    """Step counters kept as Python ints in the state dicts (adamcore.Adam)."""

    def __init__(self, states: list[dict]):
        self.values = [s["step"] for s in states]  # the very objects: compared by identity

    @classmethod
    def count(cls, state: dict) -> int:
        return state["step"]

    def unchanged(self, states: list[dict]) -> bool:
        # a counter set to an equal but new int also ends the plan: the general step is right
        return _same_items(states, ("step",), self.values)

    def advance(self, states: list[dict]) -> None:
        self.values = _core._steady.increment(states, "step")  # s["step"] += 1, one call


class TensorSteps:
    """Step counters kept as float32 scalar tensors (torch.optim's layout, the drop-in).

    They become views of one buffer, so that a step increments them all at once (through
    NumPy: a torch op per counter costs microseconds each). They stay separate elements, so
    torch.optim, given this state, counts each on its own. A counter replaced or written to by
    anyone else (its autograd version moved) ends the plan.
    """

    def __init__(self, states: list[dict]):
        import torch

        buffer = torch.tensor([float(s["step"]) for s in states], dtype=torch.float32)
        for j, s in enumerate(states):
            s["step"] = buffer[j]
        self.tensors = [s["step"] for s in states]
        self.versions = [t._version for t in self.tensors]
        self.buffer = buffer.numpy()

    @classmethod
    def count(cls, state: dict) -> int:
        return int(state["step"])

    def unchanged(self, states: list[dict]) -> bool:
        steps = [s["step"] for s in states]
        return all(map(_is, steps, self.tensors)) and [t._version for t in steps] == self.versions

    def advance(self, states: list[dict]) -> None:
        self.buffer += 1  # not through torch: the versions recorded stay those of our writes


class SteadyPlan:
    """See the module's docstring. Made by ``build``; ``step`` runs it or declines."""

    def __init__(self, native, slots, groups, group_steps, counters, grad_types, library):
        self.native = native
        self.params = [s.param for s in slots]
        self.states = [s.state for s in slots]
        names = [state_keys(groups[s.group][1]) for s in slots]
        self.getters = [operator.itemgetter(*k) for k in names]
        # the state keys, where every param has the same (one call checks all, see step)
        self.keys = names[0] if len(set(names)) == 1 else None
        self.arrays = list(chain.from_iterable(map(operator.call, self.getters, self.states)))
        self.groups = groups  # (index among the front end's param groups, the group dict)
        self.flags = [plan_flags(g) for _, g in groups]
        self._group_steps = group_steps
        self.check_finite = self.flags[0][1]
        self.counters = counters
        self.grad_types = grad_types
        # NumPy params can change shape, strides and flags in place: the native plan checks them
        # (``holds``). torch params and state can change storage or shape under the same
        # object: compared by data pointer and shape. CuPy arrays cannot.
        self.numpy = library == "numpy"
        self.torch = library == "torch"
        if self.torch:
            self.written = self.params + self.arrays  # their autograd versions get bumped
            self.pointers = self._pointers()
            self.shapes = list(map(_shape, self.params))
        # claimed while the plan steps: another optimizer stepping one of these params at the
        # same time raises instead of losing an update (see _memory.claim)
        self.claimed = frozenset(lay.ptr for lay in map(_memory.layout, self.params)
                                 if lay is not None)
        self.state_keys = [s.key for s in slots]
        # NumPy params with int counters (adamcore.Adam): the native plan checks the params, the
        # state dicts, their arrays and counters, steps and advances the counters, all in one
        # call (CpuPlan.steady_step), touching each object once: after a large step every one of
        # them is a cache miss, and the checks made one by one from Python cost a 100-tensor
        # step ~50 us (bench/NOTES.md, CPU section 8)
        self.watched = self.numpy and isinstance(counters, IntSteps) and hasattr(native, "watch")
        if self.watched:
            native.watch(self.params, self.state_keys, self.states, names, self.arrays, "step",
                         _memory.CLAIMS, self.claimed)
            self._watch_groups(group_steps)

    @property
    def group_steps(self) -> list[int]:
        """How many steps each of the plan's groups has taken."""
        return self.native.group_steps() if self.watched else self._group_steps

    def _watch_groups(self, steps: list[int], hparams: list | None = None) -> None:
        """Hands the native plan the groups, the values their hyperparameters are built from,
        those hyperparameters (built here unless given) and the step counts. A group whose
        values are not cacheable (a schedule) gets a value that never matches, so that each of
        its steps builds its hyperparameters in ``step``."""
        values, built = [], []
        for ((_, group), step) in zip(self.groups, steps):
            row = [group.get(key, _ABSENT) for key in GROUP_KEYS]
            cacheable = all(_cacheable(v) or v is _ABSENT for v in row)
            if not cacheable:
                row[0] = object()
            values += row
            if hparams is None:
                built.append(_hparams.step_hparams(group, step + 1, checked=False)
                             if cacheable else _PLACEHOLDER)
        self.native.watch_groups([k for k, _ in self.groups], [g for _, g in self.groups],
                                 GROUP_KEYS, values, _ABSENT,
                                 built if hparams is None else hparams, steps)

    @classmethod
    def build(cls, slots: list[Slot], groups: list[tuple[int, dict]], steps_kind,
              grad_types: list[type]) -> SteadyPlan | None:
        """A plan over these params, or None where the general step must take them: complex
        params (stepped as real views), several backends, a backend without plans (or without
        low-precision modes, for such groups), groups whose params differ in step count, mixed
        check_finite, 8-bit groups beside float ones or of params other than NumPy's."""
        if not slots or len({bool(g["check_finite"]) for _, g in groups}) != 1:
            return None
        quantized = {_blockwise.is_quantized(g) for _, g in groups}
        if len(quantized) != 1:
            return None  # 8-bit and float groups in one optimizer: the general step
        steps: list[set] = [set() for _ in groups]
        for s in slots:
            steps[s.group].add(steps_kind.count(s.state))
        if any(len(k) != 1 for k in steps):
            return None
        native = (_blockwise.make_plan([s.param for s in slots], [s.state for s in slots],
                                       [s.group for s in slots])
                  if quantized == {True} else cls._float_plan(slots, groups))
        if native is None:
            return None
        return cls(native, slots, groups, [k.pop() for k in steps],
                   steps_kind([s.state for s in slots]), grad_types,
                   _arrays.library(slots[0].param))

    @staticmethod
    def _float_plan(slots: list[Slot], groups: list[tuple[int, dict]]):
        """The backend's native plan over float state, or None."""
        backends = set()
        tensors = []
        for s in slots:
            p = s.param
            if _arrays.dtype_name(p.dtype) in _arrays.COMPLEX_DTYPES:
                return None
            backends.add(backend_for(p))
            group = groups[s.group][1]
            tensors.append(StepTensor(
                p, None, s.state["exp_avg"], s.state["exp_avg_sq"],
                s.state["max_exp_avg_sq"] if group["amsgrad"] else None, s.group,
                s.state[_lowp.KAHAN_KEY] if group.get("kahan_summation") else None,
                _lowp.tensor_seed(group, s.index) if group.get("stochastic_rounding") else 0))
        if len(backends) != 1:
            return None
        backend = backends.pop()
        if not backend.plans_lowp and any(_lowp.uses_lowp(g) for _, g in groups):
            return None  # its native plan has no low-precision modes: the general step
        return backend.make_plan(tensors)

    def _pointers(self) -> list:
        return [x.data_ptr() for x in self.written]

    def step(self, params: list, state: dict, grads: list, groups: list[dict],
             plain=None) -> bool:
        """One step through the native plan: True, or False having written nothing where
        something changed (then the front end runs the general step). ``state`` is the front
        end's state mapping (each param's dict under its key); ``plain`` turns a group into
        plain numbers first (torch allows tensors for lr and betas)."""
        if self.watched:
            native, check_finite = self.native, self.check_finite
            try:
                done = native.steady_step(params, state, grads, groups, None, check_finite)
                if done < 0:  # a group's values changed, or follow a schedule: built here
                    hparams = self._hparams(groups, plain)
                    if hparams is None:
                        return False
                    self._watch_groups(native.group_steps(), hparams)
                    done = native.steady_step(params, state, grads, groups, hparams, check_finite)
            except (TypeError, ValueError, BufferError, RuntimeError):
                return False  # refused before writing: the general step says precisely why
            return done > 0
        if not self.numpy:  # NumPy grads are checked by the native plan (holds)
            types = self.grad_types
            if len(grads) != len(types) or not all(map(_is, map(type, grads), types)):
                return False
        if len(params) != len(self.params) or not all(map(_is, params, self.params)):
            return False
        states = list(map(state.get, self.state_keys))
        if not all(map(_is, states, self.states)):
            return False
        if self.keys is not None:
            if not _same_items(states, self.keys, self.arrays):
                return False
        else:
            try:
                # each getter yields its fixed number of arrays (or raises KeyError)
                arrays = chain.from_iterable(map(operator.call, self.getters, states))
                if not all(map(_is, arrays, self.arrays)):
                    return False
            except (KeyError, TypeError):
                return False
        if not self.counters.unchanged(states):
            return False
        hparams = self._hparams(groups, plain)
        if hparams is None:
            return False
        if self.torch:
            if self._pointers() != self.pointers or list(map(_shape, params)) != self.shapes:
                return False  # storage swapped (p.data = ..., share_memory_()) or resized
        elif self.numpy and not self.native.holds(params if type(params) is list else list(params),
                                                  grads if type(grads) is list else list(grads)):
            return False  # a NumPy param reshaped, restrided or made read-only; a grad not NumPy
        _memory.claim(self.claimed, "step()")
        try:
            self.native.step(grads, hparams, self.check_finite)
        except (TypeError, ValueError, BufferError, RuntimeError):
            # refused before writing (an edited group, a grad of another shape or kind): the
            # general step says precisely what is wrong
            return False
        finally:
            _memory.release(self.claimed)
        if self.torch:
            bump_versions(self.written)  # as an in-place op would: autograd sees the update
        self.counters.advance(states)
        self._group_steps = [s + 1 for s in self._group_steps]
        return True

    def _hparams(self, groups: list[dict], plain) -> list | None:
        """Each group's hyperparameters for the next step, or None where a group was replaced
        or its amsgrad, check_finite or low-precision options changed."""
        hparams = []
        for (k, group), flags, step in zip(self.groups, self.flags, self.group_steps):
            if (k >= len(groups) or groups[k] is not group
                    or plan_flags(group) != flags):
                return None
            hparams.append(_hparams.step_hparams(group if plain is None else plain(group),
                                                 step + 1, checked=False))
        return hparams
