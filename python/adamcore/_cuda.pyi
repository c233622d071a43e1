"""adamcore's CUDA backend: one Adam/AdamW step over many CUDA arrays, on a given stream.

Type stubs for the nanobind extension adamcore._cuda (cuda/python/cuda_module.cpp), built where
a CUDA toolkit was found. Arrays are CUDA device memory taken through DLPack (CuPy arrays, torch
CUDA tensors, ...); ``stream`` is a cudaStream_t as an int (0: the legacy default stream).
"""

from collections.abc import Sequence
from typing import Any, Protocol

class _DLPackArray(Protocol):
    """Any array that exports itself through DLPack."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...

# (lr, beta1, beta2, eps, weight_decay, max_lr, step, flags), as in adamcore._core
_HParams = tuple[float, float, float, float, float, float, int, int]

version: int
"""The C ABI version this module was built with."""

def device_count() -> int:
    """CUDA devices seen (0 without a driver or a GPU)."""

def unavailable_reason() -> str:
    """Why the backend cannot run here, or '' when it can."""

def runtime_version() -> int:
    """The CUDA runtime of this build (static), as 1000 * major + 10 * minor."""

def driver_version() -> int:
    """The CUDA version the driver supports (0 without a driver)."""

def devices() -> list[tuple[int, str, tuple[int, int], int, int]]:
    """(index, name, (major, minor), total memory in bytes, multiprocessors) of each device."""

class CudaPlan:
    """The params and state of repeated steps, with their device table cached."""

    def __init__(self, params: Sequence[_DLPackArray], exp_avgs: Sequence[_DLPackArray],
                 exp_avg_sqs: Sequence[_DLPackArray],
                 max_exp_avg_sqs: Sequence[_DLPackArray | None],
                 hparams_index: Sequence[int]) -> None: ...
    def step(self, grads: Sequence[_DLPackArray], hparams: Sequence[_HParams],
             check_finite: bool, stream: int) -> None: ...
    @property
    def device(self) -> int: ...
    def __len__(self) -> int: ...

def adam_step(params: Sequence[_DLPackArray], grads: Sequence[_DLPackArray],
              exp_avgs: Sequence[_DLPackArray], exp_avg_sqs: Sequence[_DLPackArray],
              max_exp_avg_sqs: Sequence[_DLPackArray | None], hparams_index: Sequence[int],
              hparams: Sequence[_HParams], check_finite: bool, stream: int) -> None:
    """One step over all tensors (CUDA arrays of one device), enqueued on stream: validates
    everything, then launches; returns without waiting for the GPU."""

def adam_step_blockwise(params: Sequence[_DLPackArray], grads: Sequence[_DLPackArray],
                        exp_avgs: Sequence[_DLPackArray], exp_avg_sqs: Sequence[_DLPackArray],
                        exp_avg_absmaxes: Sequence[_DLPackArray],
                        exp_avg_sq_absmaxes: Sequence[_DLPackArray], hparams_index: Sequence[int],
                        hparams: Sequence[_HParams], stream: int,
                        validate_only: bool = False) -> None:
    """One step over 8-bit blockwise state (CUDA arrays of one device), enqueued on stream, as
    adamcore._core.adam_step_blockwise; the finite check is the caller's."""

def first_nonfinite(arrays: Sequence[_DLPackArray], stream: int) -> int:
    """Index of the first array holding inf or NaN, or -1; waits for the check on stream."""

def stream_probe(p: _DLPackArray, g: _DLPackArray, m: _DLPackArray, v: _DLPackArray,
                 stream: int = 0) -> None:
    """Roofline probe: the step's memory traffic (4 read, 3 written) with trivial arithmetic."""

def copy(dst: _DLPackArray, src: _DLPackArray, stream: int = 0) -> None:
    """Device copy kernel, for the bench's roofline."""
