"""The step engine: the one path from every front end to every backend.

    front end          adamcore.Adam/AdamW (_optimizer.py), adamcore.torch.Adam/AdamW (torch.py),
                       adamcore.adam_step (_functional.py): each keeps its state its own way and
                       hands the engine one Work item per parameter to update
    general_step       validate everything -> hyperparameters -> finite check -> group by
                       backend -> run; nothing is written until every check has passed
    backends           _dispatch.backend_for picks one by library and device among those
                       registered in _dispatch.BACKENDS: the C++ CPU core, the CUDA backend
                       (_cuda_backend.py), JAX's FFI call (registered here), the Array-API
                       reference path

Repeated steps over unchanged params skip this through the one steady plan (_steady.py), which
hands the arrays to a backend's native plan (``Backend.make_plan``) once and re-checks before
each step only what can change; whenever something did, the front end comes back here.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _arrays, _blockwise, _hparams, _lowp, _memory, _validation
from . import _cuda_backend  # noqa: F401  registers the CUDA backend (its module loads at first use)
from ._dispatch import BACKENDS, REFERENCE, StepTensor, backend_for
# torch tensors that require grad are written through detach(): the same storage, outside autograd
from ._dispatch import _outside_autograd as _detached


_STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


def _load_jax():
    """The JAX backend (adamcore._jax_ffi), imported only when a JAX array first steps."""
    from . import _jax_backend

    return _jax_backend.load()


BACKENDS.register("jax", _load_jax)


class Work(NamedTuple):
    """One parameter of a step: the arrays, its param group and the index of this update."""

    index: int  # the param's position among all groups' params: errors name it
    param: object
    grad: object
    exp_avg: object
    exp_avg_sq: object
    max_exp_avg_sq: object  # None without amsgrad
    group: dict  # hyperparameters as plain numbers (a schedule may stand for lr)
    step: int  # the 1-based index of this update
    compensation: object = None  # Kahan summation's buffer (the param's dtype), else None
    # (exp_avg_absmax, exp_avg_sq_absmax) of an int8_blockwise group (_blockwise.py), whose
    # exp_avg and exp_avg_sq are then the codes; None for float state
    absmax: tuple | None = None


def validate(work: list[Work]) -> None:
    """Every check of a step, for every parameter, before any backend writes (docs/errors.md):
    layouts, libraries, devices, shapes and dtypes of params, grads and states, and memory
    shared between arrays the step writes, or between them and the grads."""
    written, read = [], []
    for w in work:
        i, p = w.index, w.param
        _validation.check_param(i, p)
        _validation.check_grad(i, p, w.grad)
        _memory.check_plain_view(f"param {i}", p)
        written.append((f"param {i}", p))
        lowp = _lowp.uses_lowp(w.group)
        state_dtype = None
        if lowp:
            _lowp.check_param(i, p, w.group)
            state_dtype = _lowp.state_dtype(w.group, _arrays.dtype_name(p.dtype))
        for key in _STATE_KEYS[:3 if w.group["amsgrad"] else 2]:
            x = getattr(w, key)
            _validation.check_state(i, p, x, key, state_dtype)  # a missing one raises too
            _memory.check_plain_view(f"{key} {i}", x)
            written.append((f"{key} {i}", x))
        if lowp and w.group.get("kahan_summation"):
            x = w.compensation
            _validation.check_state(i, p, x, _lowp.KAHAN_KEY, _arrays.dtype_name(p.dtype))
            if not _arrays.is_writeable(p):
                raise TypeError(f"param {i} is a {_arrays.library(p)} array, which cannot be "
                                f"updated in place; kahan_summation takes NumPy, CuPy or torch "
                                f"arrays")
            _memory.check_plain_view(f"{_lowp.KAHAN_KEY} {i}", x)
            written.append((f"{_lowp.KAHAN_KEY} {i}", x))
        read.append((f"grad {i}", w.grad))
    _memory.check_disjoint(written, read)


def general_step(work: list[Work]) -> list[tuple | None]:
    """Validates and runs one step over any mix of libraries and devices.

    Returns, per Work item, None where its arrays were updated in place, or the new
    ``(param, exp_avg, exp_avg_sq, max_exp_avg_sq)`` of an immutable library (JAX).
    On error nothing has been written.
    """
    if any(w.absmax is not None for w in work):
        return _with_blockwise(work)
    validate(work)
    hparams: list[_hparams.StepHParams] = []
    hparams_at: dict[tuple[int, int], int] = {}
    by_backend: dict[object, list[int]] = {}
    tensors: list[StepTensor] = []
    finite: list[int] = []
    for k, w in enumerate(work):
        key = (id(w.group), w.step)
        h = hparams_at.get(key)
        if h is None:
            h = hparams_at[key] = len(hparams)
            hparams.append(_hparams.step_hparams(w.group, w.step))
        grad = _memory.readable(w.grad)  # a lazily negated torch view, resolved
        backend = backend_for(w.param)
        if _lowp.uses_lowp(w.group):
            tensor = StepTensor(_detached(w.param), _detached(grad), w.exp_avg, w.exp_avg_sq,
                                w.max_exp_avg_sq, h, w.compensation,
                                _lowp.tensor_seed(w.group, w.index))
            backend = _lowp.backend_for(backend, tensor)
        else:
            tensor = StepTensor(_detached(w.param), _detached(grad), w.exp_avg, w.exp_avg_sq,
                                w.max_exp_avg_sq, h)
        if _arrays.dtype_name(w.param.dtype) in _arrays.COMPLEX_DTYPES:
            tensor, backend = _as_reals(tensor, backend)
        tensors.append(tensor)
        by_backend.setdefault(backend, []).append(k)
        if w.group.get("check_finite"):
            finite.append(k)
    if finite:
        check_finite([work[k].index for k in finite], [tensors[k].grad for k in finite])

    layouts = [_memory.layout(t.param) for t in tensors]
    claimed = frozenset(lay.ptr for lay in layouts if lay is not None)
    _memory.claim(claimed, "step()")
    try:
        results: list[tuple | None] = [None] * len(work)
        for backend, ks in by_backend.items():
            out = backend.run([tensors[k] for k in ks], hparams)
            if out is not None:
                for k, new in zip(ks, out):
                    results[k] = new
    finally:
        _memory.release(claimed)
    return results


def _with_blockwise(work: list[Work]) -> list[tuple | None]:
    """A step with int8_blockwise params: the float-state params are validated and every grad
    checked first, then the quantized ones step in one core call (which validates all of its
    arrays before writing), then the rest through the general step."""
    blockwise = [w for w in work if w.absmax is not None]
    plain = [w for w in work if w.absmax is None]
    validate(plain)
    finite = [w for w in work if w.group.get("check_finite")]
    if finite:
        check_finite([w.index for w in finite], [_memory.readable(w.grad) for w in finite])
    _blockwise.step(blockwise)
    results = iter(general_step(plain) if plain else ())
    return [None if w.absmax is not None else next(results) for w in work]


def _as_reals(t: StepTensor, backend):
    """A complex parameter's arrays as real views (pairs of reals, as torch.optim's
    view_as_real), for the backend of its library; where its library has no such views (JAX,
    ...), the reference path, which updates the real and imaginary parts apart."""
    views = [None if x is None else _memory.real_view(x) for x in t[:5]]
    if views[0] is None:
        return t, REFERENCE
    return StepTensor(*views, t.hparams_index), backend


def check_finite(indices: list[int], grads: list) -> None:
    """FloatingPointError naming the first param index whose grad holds inf or NaN."""
    by_backend: dict[object, list[int]] = {}
    for k, g in enumerate(grads):
        by_backend.setdefault(backend_for(g), []).append(k)
    bad = []
    for backend, ks in by_backend.items():
        first = backend.first_nonfinite([grads[k] for k in ks])
        if first >= 0:
            bad.append(indices[ks[first]])
    if bad:
        raise FloatingPointError(nonfinite_message(min(bad)))


def nonfinite_message(index: int) -> str:
    return f"grad {index} holds inf or NaN (check_finite is on); nothing was updated"
