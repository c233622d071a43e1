"""adamcore's CPU core: one Adam/AdamW step over many arrays, SIMD and threaded.

Type stubs for the nanobind extension adamcore._core (cpp/python/core_module.cpp). Arrays are
taken through DLPack, so any array with ``__dlpack__`` (NumPy, torch CPU tensors, ...) is
accepted; arrays the core writes are never converted or copied.
"""

from collections.abc import Sequence
from types import ModuleType
from typing import Any, Protocol

class _DLPackArray(Protocol):
    """Any array that exports itself through DLPack."""

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any: ...
    def __dlpack_device__(self) -> tuple[int, int]: ...

# (lr, beta1, beta2, eps, weight_decay, max_lr, step, flags); flags: the bit constants below
_HParams = tuple[float, float, float, float, float, float, int, int]

DECOUPLED_WEIGHT_DECAY: int
DECOUPLE_LR: int
AMSGRAD: int
MAXIMIZE: int
KAHAN_SUMMATION: int
STOCHASTIC_ROUNDING: int
version: int
"""The C ABI version, 10000 * major + 100 * minor + patch."""
openmp: bool
QUANT_BLOCK: int
"""Elements per block of the 8-bit blockwise state (docs/int8-state.md): 256."""

class CpuPlan:
    """The params and state of a step, imported once; step() takes the grads."""

    def __init__(self, params: Sequence[_DLPackArray], exp_avgs: Sequence[_DLPackArray],
                 exp_avg_sqs: Sequence[_DLPackArray],
                 max_exp_avg_sqs: Sequence[_DLPackArray | None],
                 hparams_index: Sequence[int],
                 compensations: Sequence[_DLPackArray | None] = ...,
                 seeds: Sequence[int] = ...) -> None: ...
    def step(self, grads: Sequence[_DLPackArray], hparams: Sequence[_HParams],
             check_finite: bool = False) -> None: ...
    def holds(self, params: list[object], grads: list[object]) -> bool:
        """Whether each param is still a writeable NumPy array over the memory, shape,
        strides and dtype imported, and each grad a NumPy array."""
    def watch(self, params: list[object], keys: list[object], dicts: list[dict],
              array_keys: list[tuple[str, ...]], arrays: list[object], step_key: str,
              claims: list[frozenset[int]], claimed: frozenset[int]) -> None:
        """The Python objects steady_step checks: the param objects, their keys in the state
        mapping, their state dicts, per param the state arrays' keys, the arrays (param after
        param), the step counter's key; and the claims list with this plan's addresses."""
    def watch_groups(self, indices: Sequence[int], groups: list[dict], keys: tuple[str, ...],
                     values: list[object], absent: object, hparams: Sequence[_HParams],
                     steps: Sequence[int]) -> None:
        """The groups steady_step checks (each at its index in the front end's list), the
        values under keys their hparams were built from (absent: a key the group lacked),
        those hparams and the groups' step counts."""
    def steady_step(self, params: Sequence[object], state: dict, grads: Sequence[object],
                    groups: list[dict], hparams: Sequence[_HParams] | None,
                    check_finite: bool = False) -> int:
        """One step where everything watched is unchanged: 1 (the counters advance); 0 having
        written nothing where something changed, -1 where only a group's values did (pass
        hparams)."""
    def group_steps(self) -> list[int]:
        """Each watched group's step count."""
    def __len__(self) -> int: ...

def adam_step(params: Sequence[_DLPackArray], grads: Sequence[_DLPackArray],
              exp_avgs: Sequence[_DLPackArray], exp_avg_sqs: Sequence[_DLPackArray],
              max_exp_avg_sqs: Sequence[_DLPackArray | None], hparams_index: Sequence[int],
              hparams: Sequence[_HParams], check_finite: bool = False,
              compensations: Sequence[_DLPackArray | None] = ...,
              seeds: Sequence[int] = ...) -> None:
    """One step over all tensors: validates everything, then updates in place. State arrays may
    be float32 (float64 params: float64), the param's dtype or bfloat16; compensations (Kahan
    summation, the params' dtypes, None where unused) and seeds (stochastic rounding) may be
    empty."""

def adam_step_blockwise(params: Sequence[_DLPackArray], grads: Sequence[_DLPackArray],
                        exp_avgs: Sequence[_DLPackArray], exp_avg_sqs: Sequence[_DLPackArray],
                        exp_avg_absmaxes: Sequence[_DLPackArray],
                        exp_avg_sq_absmaxes: Sequence[_DLPackArray], hparams_index: Sequence[int],
                        hparams: Sequence[_HParams], check_finite: bool = False,
                        validate_only: bool = False) -> None:
    """One step over 8-bit blockwise state: int8 / uint8 codes, float32 absmax per 256 elements;
    validates everything, then updates params, codes and absmaxes in place (``validate_only``:
    validates, writes nothing)."""

def bfloat16_view(uint16_array: Any) -> _DLPackArray:
    """The memory of a NumPy uint16 array as a DLPack capsule of dtype bfloat16 (NumPy cannot
    export ml_dtypes' bfloat16 itself): no copy, same strides. A capsule is consumed by one
    import and carries no read-only flag: check a param's writeability first."""

def first_nonfinite(arrays: Sequence[_DLPackArray]) -> int:
    """Index of the first array holding inf or NaN, or -1 when all are finite."""

def total_norm(arrays: Sequence[_DLPackArray], ord: float) -> float:
    """The ord-norm of all arrays together (inf: max |x|), accumulated in float64."""

def scale(arrays: Sequence[_DLPackArray], factor: float) -> None:
    """Multiplies every array by factor in place."""

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None: ...
def compiled_simd_levels() -> list[str]: ...
def supported_simd_levels() -> list[str]: ...
def simd_level() -> str: ...
def set_simd_level(name: str) -> None: ...

def stream_probe(p: _DLPackArray, g: _DLPackArray, m: _DLPackArray, v: _DLPackArray) -> None:
    """Roofline probe: the step's memory traffic (4 read, 3 written) with trivial arithmetic.
    Contiguous float32 CPU arrays of one size."""

def copy(dst: _DLPackArray, src: _DLPackArray) -> None:
    """Threaded copy of contiguous float32 CPU arrays, for the bench's roofline."""

class _TestingModule(ModuleType):
    """Index arithmetic of the CPU step, for tests."""

    def chunks(self, total: int, threads: int) -> list[tuple[int, int]]: ...
    def pieces(self, counts: Sequence[int], begin: int,
               end: int) -> list[tuple[int, int, int]]: ...
    def strided_offsets(self, shape: Sequence[int], strides: Sequence[int], begin: int,
                        end: int) -> list[int]: ...

_testing: _TestingModule

class _SteadyModule(ModuleType):
    """The steady plan's checks of state dicts (_steady.py)."""

    def same_items(self, dicts: list[dict[str, object]], keys: tuple[str, ...],
                   expected: list[object]) -> bool:
        """Whether the entries under keys of every dict are, in order, the expected objects."""
    def increment(self, dicts: list[dict[str, object]], key: str) -> list[object]:
        """d[key] += 1 for every dict; returns the new values."""
    def claim(self, claims: list[frozenset[int]], addresses: frozenset[int], who: str) -> None:
        """Appends addresses to claims, or raises RuntimeError where a set there shares one;
        atomic under the GIL."""
    def release(self, claims: list[frozenset[int]], addresses: frozenset[int]) -> None:
        """Removes that set (or an equal one) from claims."""

_steady: _SteadyModule
