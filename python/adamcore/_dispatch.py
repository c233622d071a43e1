"""Which backend steps an array: chosen by its library and device.

    numpy, torch on the CPU  -> CpuNative   (adamcore._core: the SIMD C++ kernels)
    cupy, torch on a GPU     -> the CUDA backend (adamcore._cuda), where it is built and sees a
                                GPU; else Reference
    jax                      -> JaxNative   (adamcore._jax_ffi: the CPU core as an XLA FFI call,
                                new arrays returned), where it is built; else Reference
    anything else            -> Reference   (the pure Array-API path of _reference.py)

A backend takes all of its tensors of one step at once.
"""

from __future__ import annotations

from typing import NamedTuple

from numpy import ndarray as _ndarray
from numpy import uint16 as _uint16

from . import _arrays, _core, _lowp, _reference
from ._hparams import StepHParams


class StepTensor(NamedTuple):
    """One parameter of a step with its gradient and state (max_exp_avg_sq None without amsgrad)."""

    param: object
    grad: object
    exp_avg: object
    exp_avg_sq: object
    max_exp_avg_sq: object
    hparams_index: int
    compensation: object = None  # Kahan summation's buffer (the param's dtype), else None
    seed: int = 0  # stochastic rounding's random stream of this tensor


class Backend:
    """Steps the tensors of one array library (and device)."""

    name = "?"
    in_place = True  # False where arrays are immutable and step returns new ones
    plans_lowp = False  # whether make_plan takes low-precision groups (Kahan, seeds, 16-bit state)

    def zeros(self, param, dtype_name: str):
        """A zero state array in the parameter's library, on its device, laid out like it."""
        xp = _arrays.namespace(param)
        return xp.zeros(param.shape, dtype=getattr(xp, dtype_name), device=_arrays.device(param))

    def first_nonfinite(self, arrays: list) -> int:
        """Index of the first array holding inf or NaN, or -1."""
        for i, a in enumerate(arrays):
            xp = _arrays.namespace(a)
            if not bool(xp.all(xp.isfinite(a))):
                return i
        return -1

    def run(self, tensors: list[StepTensor], hparams: list[StepHParams]) -> list[tuple] | None:
        """Updates all tensors; returns their new (p, m, v, vmax) where not in place, else None."""
        raise NotImplementedError

    def make_plan(self, tensors: list[StepTensor]):
        """A plan for repeated steps over the same params and state, or None if unsupported.

        A plan has ``step(grads, hparams, check_finite)``; it holds the arrays, so the caller
        must check before each use that they are still the ones it was made from.
        """
        return None


class CpuNative(Backend):
    """NumPy arrays and torch CPU tensors, stepped in place by the C++ core through DLPack."""

    name = "cpu"
    plans_lowp = True  # its CpuPlan takes Kahan buffers, seeds and 16-bit state

    def __init__(self, core):
        self.core = core

    def zeros(self, param, dtype_name: str):
        if _arrays.library(param) == "numpy":
            import numpy as np

            return np.zeros_like(param, dtype=dtype_name)  # keeps a Fortran layout Fortran
        import torch

        return torch.zeros_like(param, dtype=getattr(torch, dtype_name),
                                memory_format=torch.preserve_format)

    def first_nonfinite(self, arrays: list) -> int:
        return self.core.first_nonfinite(arrays)

    def run(self, tensors, hparams):
        core = self.core
        params, grads, exp_avgs, exp_avg_sqs, max_sqs, index, comps, seeds = zip(*tensors)
        has_max = any(m is not None for m in max_sqs)
        has_comp = any(c is not None for c in comps)
        params_in, grads_in = [_exportable(p) for p in params], [_exportable(g) for g in grads]
        exp_avgs, exp_avg_sqs, max_sqs, comps_in = (list(exp_avgs), list(exp_avg_sqs),
                                                    list(max_sqs), list(comps))
        if any(map(_lowp.numpy_bfloat16, tensors)):
            params_in, grads_in, exp_avgs, exp_avg_sqs, max_sqs, comps_in = (
                list(map(native, xs)) for xs in (params_in, grads_in, exp_avgs, exp_avg_sqs,
                                                 max_sqs, comps_in))
        core.adam_step(
            params_in,
            grads_in,
            exp_avgs,
            exp_avg_sqs,
            max_sqs if has_max else [],
            list(index) if len(hparams) > 1 else [],
            hparams,
            compensations=comps_in if has_comp else [],
            seeds=list(seeds) if any(seeds) else [],
        )
        if type(params[0]) is not _ndarray:
            bump_versions([x for x in (*params, *exp_avgs, *exp_avg_sqs, *max_sqs, *comps)
                           if x is not None and type(x) is not _ndarray])
        return None

    def make_plan(self, tensors):
        """The core's CpuPlan over NumPy arrays; over torch CPU tensors, the same plan taking
        the grads as DLPack capsules. Mixed libraries: none."""
        if all(type(t.param) is _ndarray for t in tensors):
            if any(map(_lowp.numpy_bfloat16, tensors)):
                return None  # bfloat16 NumPy arrays go through native() views: the general step
            return self._core_plan(tensors)
        if all(_arrays.library(t.param) == "torch" for t in tensors):
            return _TorchGrads(self._core_plan(tensors))
        return None

    def _core_plan(self, tensors):
        params, _, exp_avgs, exp_avg_sqs, max_sqs, index, comps, seeds = zip(*tensors)
        has_max = any(m is not None for m in max_sqs)
        return self.core.CpuPlan([_exportable(p) for p in params], list(exp_avgs),
                                 list(exp_avg_sqs), list(max_sqs) if has_max else [], list(index),
                                 list(comps) if any(c is not None for c in comps) else [],
                                 list(seeds) if any(seeds) else [])


class _TorchGrads:
    """The core's CpuPlan over torch CPU tensors: grads go to it as DLPack capsules (torch's
    ``Tensor.__dlpack__`` costs about 4 us a call, ``to_dlpack`` well under 1)."""

    def __init__(self, plan):
        from torch.utils.dlpack import to_dlpack

        self.plan = plan
        self.to_dlpack = to_dlpack

    def step(self, grads, hparams, check_finite: bool) -> None:
        to_dlpack = self.to_dlpack
        self.plan.step([to_dlpack(g.detach() if g.requires_grad else g) for g in grads],
                       hparams, check_finite)


def written_tensors(tensors) -> list:
    """The arrays a step writes: each param and its state arrays."""
    out = []
    for t in tensors:
        out += (t.param, t.exp_avg, t.exp_avg_sq)
        if t.max_exp_avg_sq is not None:
            out.append(t.max_exp_avg_sq)
    return out


def bump_versions(tensors: list) -> None:
    """Tells autograd that these torch tensors were written in place (as an in-place op would),
    so that a backward through a graph that saved one of them raises instead of computing a
    wrong gradient. One call for the whole list."""
    if tensors:
        from torch.autograd.graph import increment_version

        increment_version(tensors)


def native(x):
    """x as the core imports it: an ml_dtypes bfloat16 NumPy array, which NumPy cannot export
    through DLPack, as a bfloat16 DLPack view of its own memory (no copy; it carries no read-only
    flag, so params are checked writeable before); anything else as it is."""
    # dtype.kind first: NumPy's dtype.name is a Python property (~2 us), kind is not
    if type(x) is _ndarray and x.dtype.kind == "V" and _arrays.dtype_name(x.dtype) == "bfloat16":
        return _core.bfloat16_view(x.view(_uint16))
    return x


def _exportable(x):
    """torch refuses DLPack export of tensors that require grad; detach() shares their storage."""
    if type(x) is _ndarray or not getattr(x, "requires_grad", False):
        return x
    return x.detach()


class Reference(Backend):
    """Every other library: the pure Array-API path, in place where the library allows."""

    name = "reference"

    def run(self, tensors, hparams):
        results = []
        for t in tensors:
            xp = _arrays.namespace(t.param)
            # torch tensors that require grad (torch CUDA params without a CUDA backend): compute
            # and write outside autograd, through views of the same storage
            param, grad = _outside_autograd(t.param), _outside_autograd(t.grad)
            hp = hparams[t.hparams_index]
            if _arrays.dtype_name(param.dtype) in _arrays.COMPLEX_DTYPES:
                new = _reference.adam_update(xp, param, grad, t.exp_avg, t.exp_avg_sq,
                                             t.max_exp_avg_sq, hp)
            else:
                new = _reference.lowp_update(xp, param, grad, t.exp_avg, t.exp_avg_sq,
                                             t.max_exp_avg_sq, t.compensation, hp, t.seed)
            if _arrays.is_writeable(t.param):
                targets = (param, t.exp_avg, t.exp_avg_sq, t.max_exp_avg_sq, t.compensation)
                for target, value in zip(targets, new):
                    if target is not None:
                        target[...] = value
                results.append((t.param, t.exp_avg, t.exp_avg_sq, t.max_exp_avg_sq))
            else:
                results.append(new[:4])
        return results


def _outside_autograd(x):
    return x.detach() if getattr(x, "requires_grad", False) and type(x) is not _ndarray else x


_by_type: dict[type, Backend] = {}  # backend_for's answers, by array type


class Registry:
    """The backends the engine steps arrays with, by name: each registers a loader, called once
    on first use (the CUDA and JAX backends import their native modules only then); a loader
    that returns None says the backend cannot run here (not built, no GPU)."""

    def __init__(self):
        self._loaders: dict[str, object] = {}
        self._loaded: dict[str, Backend | None] = {}

    def register(self, name: str, loader) -> None:
        self._loaders[name] = loader
        self.forget(name)

    def get(self, name: str) -> Backend | None:
        if name not in self._loaded:
            loader = self._loaders.get(name)
            self._loaded[name] = loader() if loader is not None else None
        return self._loaded[name]

    def forget(self, name: str) -> None:
        """Loads the backend afresh at its next use (tests: a probe under other conditions)."""
        self._loaded.pop(name, None)
        _by_type.clear()


REFERENCE = Reference()
CPU = CpuNative(_core)
BACKENDS = Registry()
BACKENDS.register("cpu", lambda: CPU)
BACKENDS.register("reference", lambda: REFERENCE)
# "cuda" (_cuda_backend.py) and "jax" (_engine.py) register themselves

def backend_for(x) -> Backend:
    """The backend of an array, by library and device."""
    backend = _by_type.get(type(x))
    if backend is not None:
        return backend
    lib = _arrays.library(x)
    if lib == "numpy":
        backend = _by_type[type(x)] = CPU
        return backend
    if lib == "torch":
        # one type for every device: decided per tensor, not cached by type
        if x.device.type == "cpu":
            return CPU
        return (cuda_backend() or REFERENCE) if x.device.type == "cuda" else REFERENCE
    if lib == "cupy":
        backend = _by_type[type(x)] = cuda_backend() or REFERENCE
        return backend
    if lib == "jax":
        # the C++ core as an XLA FFI call, where adamcore._jax_ffi was built
        backend = _by_type[type(x)] = BACKENDS.get("jax") or REFERENCE
        return backend
    backend = _by_type[type(x)] = REFERENCE
    return backend


def cuda_backend() -> Backend | None:
    """The CUDA backend, or None where adamcore._cuda is not built or sees no GPU."""
    return BACKENDS.get("cuda")
