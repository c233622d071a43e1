"""adamcore.torch: ``torch.optim.Adam`` / ``torch.optim.AdamW`` drop-ins running on adamcore's core.

    from adamcore.torch import AdamW      # instead of: from torch.optim import AdamW

They are ``torch.optim.Optimizer`` subclasses with torch's constructor, ``step(closure=None)``
reading ``p.grad`` (params without a grad are skipped, as torch does), ``zero_grad``, param
groups, step hooks, LR schedulers (``group["lr"]``, a float or a tensor, is read at every step)
and torch's ``state_dict`` layout: ``state[p]`` holds ``step`` (a float32 scalar tensor),
``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``, so checkpoints move between
these classes and torch.optim.Adam/AdamW both ways.

All CPU tensors of a step go to the C++ core in one call, through DLPack, updated in their own
storage; CUDA tensors go to the backend that ``adamcore._dispatch.backend_for`` picks. State of
16-bit parameters is float32 (torch keeps it in 16 bits), as the core computes in float32.

Importing this module imports torch; ``import adamcore`` does not.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

from . import _blockwise, _engine, _hparams, _lowp, _steady, _validation
from ._dispatch import CPU
from ._optimizer import _load_param_state

__all__ = ["Adam", "AdamW"]

_HALF = (torch.float16, torch.bfloat16)
_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class Adam(Optimizer):
    r"""``torch.optim.Adam`` on adamcore's core: the same constructor and the same numbers.

    Args (torch's): ``params``, ``lr`` (float or tensor), ``betas``, ``eps``, ``weight_decay``,
    ``amsgrad``, ``maximize``, ``decoupled_weight_decay``.

    ``foreach`` and ``fused`` are accepted and kept in the param groups (so checkpoints stay
    torch's) but change nothing: every step is already one fused multi-tensor call.
    ``capturable=True`` (CUDA graph capture) and ``differentiable=True`` are refused with a
    ValueError: the core updates in place outside autograd and reads the step count on the host.

    adamcore's own keywords: ``decouple_lr`` with ``max_lr`` (fully decoupled weight decay,
    scaled by ``lr / max_lr``; ``max_lr`` defaults to the initial ``lr``, so an LR scheduler
    scales the decay with the learning rate) and ``check_finite`` (FloatingPointError, with
    nothing updated, when a grad holds inf or NaN).

    Low precision (docs/update.md), per group too: ``state_dtype`` (None: float32 state for
    16-bit params; ``torch.bfloat16``/"bfloat16"; "param" for the param's dtype),
    ``kahan_summation=True`` (16-bit params; state key "kahan_comp"),
    ``stochastic_rounding=True`` (bfloat16 params) with ``rounding_seed``.
    """

    _decoupled_default = False

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        amsgrad=False,
        *,
        foreach=None,
        maximize=False,
        capturable=False,
        differentiable=False,
        fused=None,
        decoupled_weight_decay=False,
        decouple_lr=False,
        max_lr=None,
        check_finite=False,
        state_dtype=None,
        kahan_summation=False,
        stochastic_rounding=False,
        rounding_seed=0,
    ):
        if capturable:
            raise ValueError("adamcore.torch does not support capturable=True (CUDA graph "
                             "capture); use torch.optim for that")
        if differentiable:
            raise ValueError("adamcore.torch does not support differentiable=True: the core "
                             "updates parameters in place, outside autograd")
        if callable(lr):
            raise TypeError("lr must be a float or a tensor; drive it with a "
                            "torch.optim.lr_scheduler (LambdaLR takes any function)")
        _check_as_torch(lr, betas, eps, weight_decay, foreach, fused)
        if decouple_lr and max_lr is None:
            max_lr = float(lr)  # the peak: schedulers only lower lr from its initial value
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=bool(amsgrad),
            maximize=bool(maximize), foreach=foreach, capturable=False, differentiable=False,
            fused=fused, decoupled_weight_decay=bool(decoupled_weight_decay),
            decouple_lr=bool(decouple_lr), max_lr=max_lr, check_finite=bool(check_finite),
            **_lowp.constructor_options(state_dtype, kahan_summation, stochastic_rounding,
                                        rounding_seed),
        )
        _hparams.check_group(_plain(defaults))
        self._plan = None
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if callable(group["lr"]):
            raise TypeError("lr must be a float or a tensor, not a callable")
        if group.get("capturable") or group.get("differentiable"):
            raise ValueError("adamcore.torch does not support capturable or differentiable")
        first = sum(len(g["params"]) for g in self.param_groups[:-1])
        try:
            _hparams.check_group(_plain(group))
            for i, p in enumerate(group["params"], start=first):
                _validation.check_param(i, p)
                if _lowp.uses_lowp(group):
                    _lowp.check_param(i, p, group)
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise
        self._plan = None

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            # a checkpoint of torch.optim (or an older adamcore) lacks some keys
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("capturable", False)
            group.setdefault("differentiable", False)
            group.setdefault("fused", None)
            group.setdefault("decoupled_weight_decay", self._decoupled_default)
            group.setdefault("decouple_lr", False)
            group.setdefault("max_lr", None)
            group.setdefault("check_finite", False)
            for p in group["params"]:
                s = self.state.get(p)
                if s and "step" in s and not torch.is_tensor(s["step"]):
                    s["step"] = torch.tensor(float(s["step"]), dtype=torch.float32)
        self._plan = None

    # ---------------------------------------------------------------------------------------
    def step(self, closure=None):
        """One update of every parameter that has a ``.grad``; returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads = [], []
        for group in self.param_groups:
            for p in group["params"]:
                g = p.grad
                if g is not None:
                    params.append(p)
                    grads.append(g)
        if not params:
            return loss
        plan = self._plan
        if plan is None or not plan.step(params, self.state, grads, self.param_groups, _plain):
            self._plan = None
            with torch.no_grad():
                self._general_step()
            self._plan = _steady_plan(self, grads)
        return loss

    def _general_step(self) -> None:
        """Any mix of devices, first steps, changed groups: validates everything, then writes."""
        work: list[_engine.Work] = []
        fresh: dict[torch.Tensor, dict] = {}  # state made now, kept only if the step succeeds
        stepped: list[dict] = []
        i = -1
        for group in self.param_groups:
            amsgrad = group["amsgrad"]
            plain = None
            for p in group["params"]:
                i += 1
                g = p.grad
                if g is None:
                    continue
                if g.is_sparse:
                    raise RuntimeError("Adam does not support sparse gradients")
                if group.get("fused"):
                    _check_fused_device(p)
                _validation.check_param(i, _local(p))
                _validation.check_grad(i, _local(p), _local(g))  # before state is made for it
                state = self.state.get(p)
                plain = plain or _plain(group)
                if _blockwise.is_quantized(group) or (state and "exp_avg_absmax" in state):
                    state = _quantized_state(self, fresh, i, p, state, group)
                    if "exp_avg_absmax" in state:
                        work.append(_engine.Work(
                            i, p, g, state["exp_avg"], state["exp_avg_sq"], None, plain,
                            int(state["step"]) + 1,
                            absmax=(state["exp_avg_absmax"], state["exp_avg_sq_absmax"])))
                        stepped.append(state)
                        continue
                lowp = _lowp.uses_lowp(group)
                if lowp and _lowp.needs_state(state or None, group):
                    _lowp.check_param(i, _local(p), group)
                    state = fresh[p] = _lowp.new_state(CPU, p, group, state or None)
                    if not torch.is_tensor(state["step"]):
                        state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
                elif not state:
                    state = fresh[p] = _new_state(p, amsgrad)
                elif amsgrad and "max_exp_avg_sq" not in state:
                    state = fresh[p] = {**state, "max_exp_avg_sq": _zeros(p)}
                work.append(_engine.Work(i, _local(p), _local(g), _local(state.get("exp_avg")),
                                         _local(state.get("exp_avg_sq")),
                                         _local(state.get("max_exp_avg_sq")) if amsgrad else None,
                                         plain, int(state["step"]) + 1,
                                         _local(state.get(_lowp.KAHAN_KEY)) if lowp else None))
                stepped.append(state)
        _engine.general_step(work)  # torch tensors are mutable: always in place
        for p, state in fresh.items():
            self.state[p] = state
        torch._foreach_add_([s["step"] for s in stepped], 1.0)

    # ---------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load_state_dict, taking checkpoints of torch.optim.Adam/AdamW, adamcore.torch
        and adamcore.Adam/AdamW with arrays of any library (NumPy, CuPy, JAX, ...).

        Counts, shapes and dtypes are checked first (ValueError; nothing changes). State is
        copied to each parameter's device; 16-bit parameters' state becomes float32.
        """
        try:
            saved_groups = list(state_dict["param_groups"])
            saved_state = dict(state_dict["state"])
        except (KeyError, TypeError):
            raise ValueError("a state dict needs 'state' and 'param_groups' entries") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(saved_groups)} param groups, "
                             f"this optimizer {len(self.param_groups)}")
        owner: dict[object, tuple[torch.Tensor, dict]] = {}
        i = 0
        for k, (ours, saved) in enumerate(zip(self.param_groups, saved_groups)):
            saved_params = list(saved.get("params", ()))
            if len(saved_params) != len(ours["params"]):
                raise ValueError(f"param group {k} of the state dict has {len(saved_params)} "
                                 f"params, this optimizer's {len(ours['params'])}")
            group = {**ours, **{key: v for key, v in saved.items() if key != "params"}}
            for saved_id, p in zip(saved_params, ours["params"]):
                owner[saved_id] = (i, p, group)
                i += 1
        converted, widened = {}, []
        for saved_id, saved in saved_state.items():
            if saved_id not in owner:
                raise ValueError(f"the state dict has state for param {saved_id}, "
                                 f"which none of its param groups lists")
            i, p, group = owner[saved_id]
            state = _load_param_state(i, p, saved, group)  # validated copies, on p's device
            state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
            converted[saved_id] = state
            if p.dtype in _HALF or _lowp.uses_lowp(group) or "exp_avg_absmax" in state:
                widened.append((p, {k: v for k, v in state.items() if k != "step"}))
        super().load_state_dict({**state_dict, "state": converted})
        for p, state in widened:  # torch casts state to the param's dtype: keep the core's float32
            self.state[p].update(state)
        self._plan = None


class AdamW(Adam):
    """``torch.optim.AdamW`` on adamcore's core (decoupled weight decay, default 1e-2).

    Always decoupled: loading a state dict of Adam keeps ``decoupled_weight_decay`` True, as
    torch.optim.AdamW does.
    """

    _decoupled_default = True

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)  # torch's load_state_dict ends here too
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        amsgrad=False,
        *,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        fused=None,
        decouple_lr=False,
        max_lr=None,
        check_finite=False,
        state_dtype=None,
        kahan_summation=False,
        stochastic_rounding=False,
        rounding_seed=0,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
            capturable=capturable, differentiable=differentiable, fused=fused,
            decoupled_weight_decay=True, decouple_lr=decouple_lr, max_lr=max_lr,
            check_finite=check_finite, state_dtype=state_dtype, kahan_summation=kahan_summation,
            stochastic_rounding=stochastic_rounding, rounding_seed=rounding_seed,
        )


# -------------------------------------------------------------------------------------------
def _check_as_torch(lr, betas, eps, weight_decay, foreach, fused) -> None:
    """torch.optim.Adam's constructor checks, with its exception types and messages (its own
    tests match them), before adamcore's own. One difference, on purpose: a tensor lr or
    tensor betas with ``foreach=True`` are accepted, since adamcore has no foreach path to
    refuse them (every step is one fused call; see docs/python-api.md)."""
    if isinstance(lr, torch.Tensor) and lr.numel() != 1:
        raise ValueError("Tensor lr must be 1-element")
    checks = ((lr, "Invalid learning rate", "lr"), (eps, "Invalid epsilon value", "eps"),
              (weight_decay, "Invalid weight_decay value", "weight_decay"))
    for value, message, name in checks:
        try:
            ok = 0.0 <= value
        except TypeError:
            continue  # not a number: adamcore's check_group says so
        if not ok:
            raise ValueError(f"{message}: {value} ({name} must be a finite number >= 0)")
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        return  # check_group raises the clear message
    for k, beta in enumerate((beta1, beta2)):
        try:
            ok = 0.0 <= beta < 1.0
        except TypeError:
            continue
        if not ok:
            raise ValueError(f"Invalid beta parameter at index {k}: {beta} (betas[{k}] must be "
                             f"in [0, 1))")
    tensors = [isinstance(b, torch.Tensor) for b in (beta1, beta2)]
    if tensors[0] != tensors[1]:
        raise ValueError("betas must be either both floats or both Tensors")
    for k, beta in enumerate((beta1, beta2)):
        if isinstance(beta, torch.Tensor) and beta.numel() != 1:
            raise ValueError(f"Tensor betas[{k}] must be 1-element")
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def _check_fused_device(p: torch.Tensor) -> None:
    """With ``fused=True`` torch.optim refuses, at the step, params of devices its fused kernels
    lack (meta, ...): the drop-in asks torch's own check, so the message is torch's."""
    from torch.optim import optimizer  # a submodule torch.optim does not export by name

    check = getattr(optimizer, "_device_dtype_check_for_fused", None)
    if check is not None:  # a private helper of torch's; older or newer torch may lack it
        check(p)


def _is_dtensor(x) -> bool:
    """A torch.distributed DTensor (FSDP2's params), told without importing torch.distributed."""
    return type(x).__name__ == "DTensor" and hasattr(x, "to_local")


def _local(x):
    """A DTensor's local shard (the same storage, so the update stays in place); anything else
    as it is."""
    return x.to_local() if _is_dtensor(x) else x


def _plain(group: dict) -> dict:
    """A group with float hyperparameters (torch allows tensors for lr and betas)."""
    beta1, beta2 = group["betas"]
    return {**group, "lr": float(group["lr"]), "betas": (float(beta1), float(beta2))}


def _zeros(p: torch.Tensor) -> torch.Tensor:
    dtype = torch.float32 if p.dtype in _HALF else p.dtype
    return torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)


def _quantized_state(opt, fresh: dict, i: int, p: torch.Tensor, state, group: dict) -> dict:
    """The state of a param whose group is int8_blockwise, or whose state is (_blockwise.py):
    made, or converted when the group changed form, into ``fresh``."""
    quantized = _blockwise.is_quantized(group)
    if quantized:
        _blockwise.check_group(group)
    has_codes = bool(state) and "exp_avg_absmax" in state
    if quantized == has_codes:
        return state
    if quantized:
        old = {**state, "step": int(state["step"])} if state else None
        new = _blockwise.new_state(i, p, old)
    else:
        new = _blockwise.dequantized_state(p, state)
    step = float(state["step"]) if state else 0.0
    new["step"] = torch.tensor(step, dtype=torch.float32)
    fresh[p] = new
    return new


def _new_state(p: torch.Tensor, amsgrad: bool) -> dict:
    state = {"step": torch.tensor(0.0, dtype=torch.float32), "exp_avg": _zeros(p),
             "exp_avg_sq": _zeros(p)}
    if amsgrad:
        state["max_exp_avg_sq"] = _zeros(p)
    return state


def _steady_plan(opt: Adam, grads: list) -> _steady.SteadyPlan | None:
    """The steady plan over the params that have grads (see _steady.py), made after a
    successful general step. FSDP2's DTensors step their local shards through the general
    step."""
    slots, groups = [], []
    i = -1
    for k, group in enumerate(opt.param_groups):
        start = len(slots)
        for p in group["params"]:
            i += 1  # the param's position among all groups' params, as the general step counts
            if p.grad is not None:
                if _is_dtensor(p):
                    return None
                slots.append(_steady.Slot(p, opt.state[p], len(groups), p, i))
        if len(slots) > start:
            groups.append((k, group))
    return _steady.SteadyPlan.build(slots, groups, _steady.TensorSteps, list(map(type, grads)))
