"""adamcore.Adam and adamcore.AdamW: the optimizer classes (docs/python-api.md)."""

from __future__ import annotations

import threading

from . import _arrays, _blockwise, _engine, _hparams, _lowp, _scalars, _steady, _validation
from ._dispatch import backend_for


class Adam:
    r"""Adam for arrays of any Array-API library, updated in place where the library allows.

    At step :math:`t` (1-based) with learning rate :math:`\gamma_t`:

    .. math::

        g &\leftarrow -g \ \text{(maximize)}, \qquad
        g \leftarrow g + \lambda\theta \ \text{(weight\_decay, not decoupled)} \\
        \theta &\leftarrow \theta (1 - \gamma_t \lambda) \ \text{(decoupled\_weight\_decay; }
            \gamma_t/\gamma_{max} \text{ with decouple\_lr)} \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2,
        \qquad \bar v \leftarrow \max(\bar v, v) \ \text{(amsgrad, else } \bar v = v) \\
        \theta &\leftarrow \theta - \frac{\gamma_t}{1-\beta_1^t}
            \frac{m}{\sqrt{\bar v}/\sqrt{1-\beta_2^t} + \epsilon}

    Args:
        params: a sequence of arrays, or of param-group dicts ``{"params": [...], "lr": ...}``
            whose keys override the defaults below for that group (as in torch.optim).
        lr: a float, or a schedule ``count -> lr`` called with the number of steps already
            taken (see :mod:`adamcore.schedules`).
        betas, eps, weight_decay: as in torch.optim.Adam.
        decoupled_weight_decay: decay the parameter directly (AdamW) instead of adding
            ``weight_decay * param`` to the gradient.
        decouple_lr: fully decoupled decay, scaled by ``lr / max_lr`` rather than ``lr``.
        max_lr: the peak learning rate for ``decouple_lr``; defaults to a float ``lr``.
        amsgrad, maximize: as in torch.optim.Adam.
        check_finite: raise FloatingPointError, with nothing updated, when a gradient holds
            inf or NaN.
        state_dtype, kahan_summation, stochastic_rounding, rounding_seed: low precision
            (docs/update.md): the state's dtype (None: float32 for 16-bit params; "bfloat16";
            "param" for the param's own), Kahan-compensated updates of 16-bit params (state key
            "kahan_comp"), stochastic rounding of bfloat16 params from a seeded hash.

    ``step(grads)`` takes the gradients in the order of all groups' params and returns the
    params: the same arrays, updated in their own memory, or new arrays for immutable libraries
    (JAX), which the optimizer then tracks. State arrays live in each parameter's library and on
    its device; ``state_dict()`` has torch's layout.
    """

    _always_decoupled = False  # AdamW: decoupled whatever a loaded state dict says

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        *,
        decoupled_weight_decay=False,
        decouple_lr=False,
        max_lr=None,
        amsgrad=False,
        maximize=False,
        check_finite=False,
        state_dtype=None,
        kahan_summation=False,
        stochastic_rounding=False,
        rounding_seed=0,
    ):
        # step, load_state_dict, state_dict and add_param_group hold this lock; a second thread
        # that calls one of them meanwhile gets a RuntimeError instead of waiting (see _busy)
        self._lock = threading.Lock()
        self.defaults = {
            "lr": lr,
            "betas": _pair(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "decoupled_weight_decay": bool(decoupled_weight_decay),
            "decouple_lr": bool(decouple_lr),
            "max_lr": max_lr,
            "amsgrad": bool(amsgrad),
            "maximize": bool(maximize),
            "check_finite": bool(check_finite),
            **_lowp.constructor_options(state_dtype, kahan_summation, stochastic_rounding,
                                        rounding_seed),
        }
        _hparams.check_group(self.defaults)
        if _arrays.is_array(params):
            raise TypeError("params must be a sequence of arrays or param-group dicts, "
                            "not a single array")
        if isinstance(params, dict):
            kind = ("one param-group dict: pass [group]" if "params" in params else
                    "a dict of arrays (a pytree, as optax takes): pass list(params.values()) "
                    "and the grads in the same order, or use adamcore.optax for pytrees")
            raise TypeError(f"params must be a sequence of arrays or of param-group dicts; "
                            f"got {kind}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.param_groups: list[dict] = []
        self.state: dict[int, dict] = {}
        self._steady = None
        for group in groups:
            self.add_param_group(group)

    # ---------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Adds a group; its params get the next indices, its missing keys the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        if not self._lock.acquire(blocking=False):
            raise _busy(self, "add_param_group")
        try:
            self._add_param_group(param_group)
        finally:
            self._lock.release()

    def _add_param_group(self, param_group: dict) -> None:
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a param group needs a 'params' entry")
        group["params"] = [params] if _arrays.is_array(params) else list(params)
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["betas"] = _pair(group["betas"])
        _hparams.check_group(group)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        first = sum(len(g["params"]) for g in self.param_groups)
        for i, p in enumerate(group["params"], start=first):
            _validation.check_param(i, p)
            if id(p) in seen:
                raise ValueError(f"param {i} appears more than once in the parameter groups")
            seen.add(id(p))
            if _lowp.uses_lowp(group):
                _lowp.check_param(i, p, group)
        self.param_groups.append(group)
        self._steady = None

    # ---------------------------------------------------------------------------------------
    def step(self, grads=None):
        """One update of every parameter from ``grads`` (in the order of all groups' params).

        Everything is checked before anything is written: on error no parameter, no state and
        no step counter has changed. Returns the list of params.
        """
        if type(grads) is not list and type(grads) is not tuple:  # the usual case first
            if grads is None:
                raise TypeError(f"{type(self).__name__}.step() needs the grads, one per param "
                                f"in the order of the params; it does not read p.grad (for "
                                f"torch training loops that fill p.grad, use adamcore.torch."
                                f"{type(self).__name__}, a torch.optim drop-in)")
            if _arrays.is_array(grads):
                raise TypeError("grads must be a sequence of arrays (one per param), not an "
                                "array")
            if not isinstance(grads, (list, tuple)):
                grads = list(grads)
        if not self._lock.acquire(blocking=False):
            raise _busy(self, "step")
        try:
            steady = self._steady
            if steady is not None:
                groups = self.param_groups
                params = groups[0]["params"] if len(groups) == 1 else \
                    [p for g in groups for p in g["params"]]
                if steady.step(params, self.state, grads, groups):
                    return list(params)
                self._steady = None
            params = self._step(grads)
            self._steady = _steady_plan(self, grads)
            return params
        finally:
            self._lock.release()

    def _step(self, grads):
        """The general step: any mix of libraries and devices, first steps, changed groups."""
        count = sum(len(g["params"]) for g in self.param_groups)
        if len(grads) != count:
            raise ValueError(f"got {len(grads)} grads for {count} params")
        work: list[_engine.Work] = []
        fresh: dict[int, dict] = {}  # state made for this step, kept only if the step succeeds
        i = 0
        for group in self.param_groups:
            amsgrad = group["amsgrad"]
            quantized = _blockwise.is_quantized(group)
            if quantized:
                _blockwise.check_group(group)
            for p in group["params"]:
                g = grads[i]
                if g is None:
                    raise ValueError(_missing_grad(self, i, p))
                _validation.check_writeable(i, p)
                _validation.check_grad(i, p, g)  # before state is made for it
                state = self.state.get(i)
                if quantized or (state is not None and "exp_avg_absmax" in state):
                    # 8-bit blockwise state (_blockwise.py); converted when the group changed form
                    if quantized and (state is None or "exp_avg_absmax" not in state):
                        state = fresh[i] = _blockwise.new_state(i, p, state)
                    elif not quantized:
                        state = fresh[i] = _blockwise.dequantized_state(p, state)
                    if quantized:
                        work.append(_engine.Work(
                            i, p, g, state["exp_avg"], state["exp_avg_sq"], None, group,
                            state["step"] + 1,
                            absmax=(state["exp_avg_absmax"], state["exp_avg_sq_absmax"])))
                        i += 1
                        continue
                lowp = _lowp.uses_lowp(group)
                if lowp and _lowp.needs_state(state, group):
                    _lowp.check_param(i, p, group)
                    state = fresh[i] = _lowp.new_state(backend_for(p), p, group, state)
                elif state is None or (amsgrad and "max_exp_avg_sq" not in state):
                    state = fresh[i] = self._new_state(backend_for(p), p, amsgrad, state)
                work.append(_engine.Work(i, p, g, state["exp_avg"], state["exp_avg_sq"],
                                         state.get("max_exp_avg_sq") if amsgrad else None,
                                         group, state["step"] + 1,
                                         state.get(_lowp.KAHAN_KEY) if lowp else None))
                i += 1

        results = _engine.general_step(work)
        if any(r is not None for r in results):
            self._replace(work, results, fresh)
        self.state.update(fresh)
        for i in range(count):
            self.state[i]["step"] += 1
        return [p for g in self.param_groups for p in g["params"]]

    def _new_state(self, backend, p, amsgrad: bool, old: dict | None) -> dict:
        dtype = _arrays.state_dtype_name(_arrays.dtype_name(p.dtype))
        if old is not None:  # amsgrad switched on after steps without it
            return {**old, "max_exp_avg_sq": backend.zeros(p, dtype)}
        state = {"step": 0, "exp_avg": backend.zeros(p, dtype), "exp_avg_sq": backend.zeros(p, dtype)}
        if amsgrad:
            state["max_exp_avg_sq"] = backend.zeros(p, dtype)
        return state

    def _replace(self, work, results, fresh) -> None:
        """Tracks the new arrays of an immutable library (JAX) in the groups and the state."""
        where = [(g, j) for g in self.param_groups for j in range(len(g["params"]))]
        for w, new in zip(work, results):
            if new is None:
                continue
            p, m, v, vmax = new
            group, j = where[w.index]
            group["params"][j] = p
            state = fresh.get(w.index) or self.state[w.index]
            state["exp_avg"], state["exp_avg_sq"] = m, v
            if vmax is not None:
                state["max_exp_avg_sq"] = vmax

    # ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """torch's layout: {"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}.

        The arrays are the optimizer's own (not copies), as in torch.
        """
        if not self._lock.acquire(blocking=False):
            raise _busy(self, "state_dict")
        try:
            return self._state_dict()
        finally:
            self._lock.release()

    def _state_dict(self) -> dict:
        state = {i: dict(s) for i, s in sorted(self.state.items())}
        return {"state": state, "param_groups": packed_groups(self.param_groups)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Loads a state dict of adamcore or torch.optim.Adam/AdamW, from any array library.

        Arrays are copied into each parameter's library and device. Group counts, sizes and
        every array's shape and dtype are checked first; on error nothing changes. A group
        key the state dict lacks (e.g. an lr schedule, which adamcore.save cannot store) keeps
        this optimizer's value.
        """
        if not self._lock.acquire(blocking=False):
            raise _busy(self, "load_state_dict")
        try:
            self._load_state_dict(state_dict)
        finally:
            self._lock.release()

    def _load_state_dict(self, state_dict: dict) -> None:
        try:
            saved_groups = list(state_dict["param_groups"])
            saved_state = dict(state_dict["state"])
        except (KeyError, TypeError):
            raise ValueError("a state dict needs 'state' and 'param_groups' entries") from None
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(saved_groups)} param groups, "
                             f"this optimizer {len(self.param_groups)}")
        owners = [(k, p) for k, g in enumerate(self.param_groups) for p in g["params"]]
        groups, index_of = [], {}
        for k, (ours, saved) in enumerate(zip(self.param_groups, saved_groups)):
            saved_params = list(saved.get("params", ()))
            if len(saved_params) != len(ours["params"]):
                raise ValueError(f"param group {k} of the state dict has {len(saved_params)} "
                                 f"params, this optimizer's {len(ours['params'])}")
            for saved_index in saved_params:
                index_of[int(saved_index)] = len(index_of)
            group = {key: value for key, value in saved.items() if key != "params"}
            for key, value in self.defaults.items():
                group.setdefault(key, ours.get(key, value))
            group["betas"] = _pair(group["betas"])
            group["params"] = ours["params"]
            if self._always_decoupled:  # AdamW stays AdamW with an Adam checkpoint, as in torch
                group["decoupled_weight_decay"] = True
            _hparams.check_group(group)
            groups.append(group)

        state = {}
        for saved_index, saved in saved_state.items():
            i = index_of.get(int(saved_index))
            if i is None:
                raise ValueError(f"the state dict has state for param {saved_index}, "
                                 f"which none of its param groups lists")
            k, p = owners[i]
            state[i] = _load_param_state(i, p, saved, groups[k])
        self.param_groups = groups
        self.state = state
        self._steady = None

    # pickle and copy.deepcopy: the lock and the native plan (which holds raw views of the
    # arrays) are not state; they are made afresh.
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_lock"]
        state["_steady"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for k, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {k}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


def packed_groups(param_groups: list[dict]) -> list[dict]:
    """The param groups of a state dict: hyperparameters as they are, params as the indices
    0, 1, ... running through all groups (torch's layout)."""
    groups, start = [], 0
    for group in param_groups:
        packed = {k: v for k, v in group.items() if k != "params"}
        packed["params"] = list(range(start, start + len(group["params"])))
        start += len(group["params"])
        groups.append(packed)
    return groups


def _pair(betas):
    """betas as a tuple when it is a sequence; anything else is left for check_group to refuse
    with a clear ValueError (tuple() would raise an unclear TypeError first)."""
    try:
        return tuple(betas)
    except TypeError:
        return betas


def _missing_grad(opt, i: int, p) -> str:
    message = f"grad {i} is None: {type(opt).__name__}.step(grads) needs one grad per param"
    if _arrays.library(p) == "torch":
        message += (f" (a param without a grad is skipped only by adamcore.torch."
                    f"{type(opt).__name__}, the torch.optim drop-in that reads p.grad)")
    return message


def _busy(opt, what: str) -> RuntimeError:
    return RuntimeError(
        f"{type(opt).__name__}.{what}() was called while another thread is inside step(), "
        f"load_state_dict(), state_dict() or add_param_group() of the same optimizer; one "
        f"optimizer is not used from several threads at once (give each thread its own, or "
        f"serialize the calls with a lock)"
    )


def _load_param_state(i: int, p, saved: dict, group: dict) -> dict:
    if _blockwise.is_quantized(group) or (isinstance(saved, dict) and "exp_avg_absmax" in saved):
        return _blockwise.load_param_state(i, p, saved, group)
    param_dtype = _arrays.dtype_name(p.dtype)
    want = _lowp.state_dtype(group, param_dtype)
    keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
    if not isinstance(saved, dict) or "step" not in saved:
        raise ValueError(f"the state of param {i} has no 'step'")
    # an exact integer (torch saves a float32 tensor): never truncated, never rounded
    state = {"step": _scalars.step_count(f"the step of param {i}", saved["step"])}
    for key in keys:
        if key not in saved:
            raise ValueError(f"the state of param {i} has no '{key}'")
        value = saved[key]
        got = _validation.check_saved_array(i, key, value, p)
        # torch keeps 16-bit parameters' state in 16 bits; adamcore widens it to float32 (or
        # keeps the group's state_dtype)
        if got != want and got != param_dtype and not (
                _lowp.uses_lowp(group) and got in _arrays.FLOAT_DTYPES):
            raise ValueError(f"{key} of param {i} has dtype {got}; expected {want}")
        state[key] = _lowp.copy_like(value, p, want)
    _lowp.load_state(i, p, saved, group, state)
    return state


def _steady_plan(opt: Adam, grads) -> _steady.SteadyPlan | None:
    """The steady plan over every param, made after a successful general step (each param then
    has state); see _steady.py."""
    slots, groups = [], []
    i = 0
    for k, group in enumerate(opt.param_groups):
        for p in group["params"]:
            slots.append(_steady.Slot(p, opt.state[i], len(groups), i, i))
            i += 1
        groups.append((k, group))
    return _steady.SteadyPlan.build(slots, groups, _steady.IntSteps, list(map(type, grads)))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), torch.optim.AdamW's defaults.

    Always decoupled: loading a state dict of Adam keeps ``decoupled_weight_decay`` True, as
    torch.optim.AdamW does.
    """

    _always_decoupled = True

    def __init__(
        self,
        params,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=1e-2,
        *,
        decoupled_weight_decay=True,
        decouple_lr=False,
        max_lr=None,
        amsgrad=False,
        maximize=False,
        check_finite=False,
        state_dtype=None,
        kahan_summation=False,
        stochastic_rounding=False,
        rounding_seed=0,
    ):
        super().__init__(
            params, lr, betas, eps, weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, decouple_lr=decouple_lr,
            max_lr=max_lr, amsgrad=amsgrad, maximize=maximize, check_finite=check_finite,
            state_dtype=state_dtype, kahan_summation=kahan_summation,
            stochastic_rounding=stochastic_rounding, rounding_seed=rounding_seed,
        )
