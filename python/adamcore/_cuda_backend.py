"""The CUDA backend: CuPy arrays and torch CUDA tensors, stepped in place by adamcore._cuda.

Every call is enqueued on the caller's current stream of the arrays' device (CuPy's current
stream, torch's current stream) and returns without synchronizing; only ``check_finite`` waits,
on that stream, for its answer. Arrays reach the kernels through DLPack with no copy; torch
tensors that require grad are exported through ``.detach()``, which shares their storage.

The module is imported lazily: ``import adamcore`` works where it was not built, or where there
is no driver or no GPU; ``probe()`` says which.
"""

from __future__ import annotations

import functools
import importlib

from . import _arrays
from ._dispatch import BACKENDS, Backend, StepTensor, _exportable, bump_versions, written_tensors


@functools.cache
def probe():
    """(adamcore._cuda, "") where the backend can run, else (module or None, why not)."""
    try:
        _cuda = importlib.import_module("adamcore._cuda")
    except ImportError as e:
        if getattr(e, "name", None) == "adamcore._cuda":
            return None, ("not built (this install has no adamcore._cuda: no CUDA compiler was "
                          "found when it was built, or ADAMCORE_CUDA=OFF)")
        return None, f"built but adamcore._cuda does not load: {e}"
    if _cuda.device_count() == 0:
        return _cuda, _cuda.unavailable_reason()
    return _cuda, ""


def load() -> CudaNative | None:
    """The backend, or None where adamcore._cuda is missing or sees no GPU."""
    module, reason = probe()
    return CudaNative(module) if module is not None and not reason else None


# looked up at each load, so a test can stand in for load()
BACKENDS.register("cuda", lambda: load())


def info_lines() -> list[str]:
    """The CUDA lines of ``python -m adamcore info``."""
    module, reason = probe()
    if module is None:
        return [f"cuda: {reason}"]
    runtime, driver = module.runtime_version(), module.driver_version()
    lines = [f"cuda: built (CUDA runtime {_version(runtime)}, linked statically); driver: "
             + (f"supports CUDA {_version(driver)}" if driver else "none found")]
    if reason:
        lines.append(f"cuda devices: none usable: {reason}")
    for index, name, (major, minor), memory, sms in module.devices():
        lines.append(f"cuda device {index}: {name} (sm_{major}{minor}, "
                     f"{memory / 2**30:.1f} GiB, {sms} multiprocessors)")
    return lines


def _version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


# ---------------------------------------------------------------------------------------------


def _device_key(x) -> tuple[str, int]:
    """(library, device index): the arrays one native call may take together."""
    lib = _arrays.library(x)
    return lib, (x.device.id if lib == "cupy" else x.device.index)


def _current_stream(lib: str, device: int) -> int:
    """The caller's current stream on that device, as an int (a cudaStream_t; 0 the default)."""
    if lib == "cupy":
        import cupy

        with cupy.cuda.Device(device):
            return cupy.cuda.get_current_stream().ptr
    import torch

    return torch.cuda.current_stream(device).cuda_stream


def _same_device_groups(tensors) -> dict[tuple[str, int], list[int]]:
    groups: dict[tuple[str, int], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(_device_key(t.param), []).append(i)
    return groups


class CudaNative(Backend):
    """CuPy arrays and torch CUDA tensors, one launch per dtype pair and device."""

    name = "cuda"
    lowp = True  # runs the low-precision modes natively (_lowp.backend_for)

    def __init__(self, module):
        self.cuda = module

    def zeros(self, param, dtype_name: str):
        if _arrays.library(param) == "cupy":
            import cupy

            with param.device:  # zeros_like allocates on the current device, not param's
                return cupy.zeros_like(param, dtype=dtype_name)  # order="K" keeps the layout
        import torch

        return torch.zeros_like(param, dtype=getattr(torch, dtype_name),
                                memory_format=torch.preserve_format)

    def first_nonfinite(self, arrays: list) -> int:
        bad = []
        groups: dict[tuple[str, int], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(_device_key(a), []).append(i)
        for (lib, device), idx in groups.items():
            k = self.cuda.first_nonfinite([_exportable(arrays[i]) for i in idx],
                                          _current_stream(lib, device))
            if k >= 0:
                bad.append(idx[k])
        return min(bad) if bad else -1

    def run(self, tensors: list[StepTensor], hparams) -> None:
        several = len(hparams) > 1
        for (lib, device), idx in _same_device_groups(tensors).items():
            ts = [tensors[i] for i in idx]
            max_sqs = [t.max_exp_avg_sq for t in ts]
            comps = [t.compensation for t in ts]
            seeds = [t.seed for t in ts]
            lowp = {}  # the low-precision modes' buffers and random streams, where used
            if any(c is not None for c in comps):
                lowp["compensations"] = comps
            if any(seeds):
                lowp["seeds"] = seeds
            self.cuda.adam_step(
                [_exportable(t.param) for t in ts],
                [_exportable(t.grad) for t in ts],
                [t.exp_avg for t in ts],
                [t.exp_avg_sq for t in ts],
                max_sqs if any(m is not None for m in max_sqs) else [],
                [t.hparams_index for t in ts] if several else [],
                hparams,
                False,
                _current_stream(lib, device),
                **lowp,
            )
            if lib == "torch":
                bump_versions(written_tensors(ts))
        return None

    def make_plan(self, tensors: list[StepTensor]):
        """The native plan over one device's params (its work table built and uploaded once),
        or None for params on several devices or not dense (the general step takes them)."""
        groups = _same_device_groups(tensors)
        if len(groups) != 1:
            return None
        (lib, device), = groups
        max_sqs = [t.max_exp_avg_sq for t in tensors]
        try:
            plan = self.cuda.CudaPlan(
                [_exportable(t.param) for t in tensors],
                [t.exp_avg for t in tensors],
                [t.exp_avg_sq for t in tensors],
                max_sqs if any(m is not None for m in max_sqs) else [],
                [t.hparams_index for t in tensors],
            )
        except ValueError:  # a param or state that is not dense
            return None
        return _StreamSteps(plan, lib, device)


class _StreamSteps:
    """The CUDA backend's native plan, as the steady plan (_steady.py) calls it: each step
    exports the grads and launches once, on the caller's current stream of the device."""

    def __init__(self, plan, lib: str, device: int):
        self.plan = plan
        self.lib = lib
        self.device = device

    def step(self, grads, hparams, check_finite: bool) -> None:
        self.plan.step([_exportable(g) for g in grads], hparams, check_finite,
                       _current_stream(self.lib, self.device))
