"""What an array's memory holds: which arrays share it, and views whose memory does not read as
their values.

An optimizer step writes every parameter and state array and reads every grad. If two written
arrays share an element (``x[:]`` passed twice, overlapping ``as_strided`` views, a param that is
a view into another), that element is updated twice, racing on large arrays; if a grad shares
memory with a written array, it can be read after being overwritten. Only the identical object
is cheap to spot, so this module looks at memory itself:

1. each array's byte range [lowest, highest) from its data pointer, shape and strides (no data
   is read, so this works for device pointers too);
2. a sort of the ranges, so that only arrays whose ranges meet are compared;
3. for those pairs, NumPy's exact test (``np.shares_memory``) on stand-in arrays that have the
   same pointer and strides but are never dereferenced.

Arrays of libraries whose arrays cannot be written (JAX) or whose memory is not visible are
skipped: nothing writes them in place.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from . import _arrays, _core


class Layout(NamedTuple):
    """Where an array's elements are: data pointer, shape, strides in bytes, item size."""

    ptr: int
    shape: tuple
    strides: tuple
    itemsize: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def byte_range(self) -> tuple[int, int]:
        """[first byte, one past the last byte] of the elements (an empty range when empty)."""
        if self.size == 0:
            return self.ptr, self.ptr
        lo = hi = self.ptr
        for n, s in zip(self.shape, self.strides):
            if s < 0:
                lo += (n - 1) * s
            else:
                hi += (n - 1) * s
        return lo, hi + self.itemsize


def layout(x) -> Layout | None:
    """The memory layout of a NumPy array, torch tensor or CuPy array; None for the others."""
    lib = _arrays.library(x)
    if lib == "numpy":
        return Layout(x.__array_interface__["data"][0], x.shape, x.strides, x.itemsize)
    if lib == "torch":
        if x.layout is not _torch_strided():
            return None  # sparse: not written in place by adamcore
        size = x.element_size()
        return Layout(x.data_ptr(), tuple(x.shape), tuple(s * size for s in x.stride()), size)
    if lib == "cupy":
        return Layout(x.data.ptr, x.shape, x.strides, x.itemsize)
    return None


def _dense(x) -> bool:
    """C-contiguous (the common case): then the byte range is plain and nothing overlaps."""
    flags = getattr(x, "flags", None)  # NumPy and CuPy
    if flags is not None:
        return bool(flags.c_contiguous)
    return bool(x.is_contiguous())  # torch


def _torch_strided():
    import torch

    return torch.strided


class _Interface:
    """An object exposing a Layout through the array interface, so NumPy can reason about it."""

    def __init__(self, lay: Layout):
        self.__array_interface__ = {
            "version": 3,
            "shape": lay.shape,
            "strides": lay.strides,
            "typestr": f"|V{lay.itemsize}",
            "data": (lay.ptr, False),
        }


def _stand_in(lay: Layout) -> np.ndarray:
    # never dereferenced: np.shares_memory only does arithmetic on pointers and strides
    return np.asarray(_Interface(lay))


def overlaps_itself(lay: Layout) -> bool:
    """True when two different indices of the array address the same bytes (e.g. a stride 0
    along a dimension of length > 1, as ``broadcast_to`` and torch's ``expand`` make)."""
    dims = sorted((abs(s), n) for n, s in zip(lay.shape, lay.strides) if n > 1)
    if not dims or lay.size == 0:
        return False
    extent = lay.itemsize  # bytes spanned by the dimensions with smaller strides
    for stride, n in dims:
        if stride < extent:
            break  # this dimension may step inside the previous ones: look exactly
        extent = stride * (n - 1) + extent
    else:
        return False
    if any(s == 0 for s, _ in dims):
        return True
    if lay.size > 1 << 22:
        return True  # too many elements to enumerate: a layout this tangled is refused
    offsets = np.zeros((), dtype=np.int64)
    for n, s in zip(lay.shape, lay.strides):
        offsets = np.add.outer(offsets, np.arange(n, dtype=np.int64) * s)
    offsets = np.sort(offsets, axis=None)
    # elements of itemsize bytes at sorted offsets overlap when two are closer than itemsize
    return bool(np.any(np.diff(offsets) < lay.itemsize))


def unique_view(x):
    """``x`` with every dimension of stride 0 cut to length 1: the same memory, each element
    addressed once. Writing it writes each memory element of ``x`` once."""
    lay = layout(x)
    if lay is None:
        return x
    index = tuple(slice(0, 1) if s == 0 and n > 1 else slice(None)
                  for n, s in zip(lay.shape, lay.strides))
    return x[index] if any(i.stop == 1 for i in index) else x


def check_disjoint(written: list[tuple[str, object]], read: list[tuple[str, object]] = ()) -> None:
    """Raises ValueError when a written array overlaps itself or another array of the step.

    ``written`` and ``read`` are ``(name, array)`` pairs, e.g. ``("param 3", p)``; read arrays
    may overlap each other (two params may share one grad buffer) but no written one.
    """
    entries = []
    for k, (name, x) in enumerate(list(written) + list(read)):
        lay = layout(x)
        if lay is None or lay.size == 0:
            continue
        is_written, dense = k < len(written), _dense(x)
        if is_written and not dense and overlaps_itself(lay):
            zero = any(st == 0 and n > 1 for n, st in zip(lay.shape, lay.strides))
            raise ValueError(
                f"{name} has {'a zero stride, so ' if zero else ''}elements that share memory "
                f"(shape {lay.shape}, strides "
                f"{tuple(s // lay.itemsize for s in lay.strides)} in elements), so an update "
                f"would write them more than once; pass a contiguous array (nothing was updated)")
        lo, hi = (lay.ptr, lay.ptr + lay.size * lay.itemsize) if dense else lay.byte_range()
        entries.append((lo, hi, k, is_written, name, lay))
    entries.sort()
    active: list[tuple] = []  # entries whose byte range reaches past the current start
    for entry in entries:
        active = [a for a in active if a[1] > entry[0]]
        for other in active:
            if (entry[3] or other[3]) and np.shares_memory(_stand_in(other[5]),
                                                           _stand_in(entry[5])):
                raise _shared(*sorted((other, entry), key=lambda e: e[2]))
        active.append(entry)


def _shared(first: tuple, second: tuple) -> ValueError:
    (_, _, _, first_written, first_name, _), (_, _, _, _, second_name, _) = first, second
    if first_written and second[3]:
        why = "an element would be updated twice"
    else:
        reader, writer = (second_name, first_name) if first_written else (first_name, second_name)
        why = f"{reader} would be read after the update wrote {writer}"
    return ValueError(f"{first_name} and {second_name} share memory, so {why}; pass separate "
                      f"arrays (nothing was updated)")


# ---- views whose memory does not hold their values -------------------------------------------
# torch marks some views lazily: a tensor with is_neg() holds -x in memory for x, one with
# is_conj() the conjugate. The kernels read raw memory, so such a grad is resolved to a plain
# tensor first (a copy, read only), and such a param or state, which would be written raw, is
# refused.

def lazy_view_flag(x) -> str | None:
    """'negative' or 'conjugate' for a torch tensor whose memory holds -x or conj(x), else None."""
    if _arrays.library(x) != "torch":
        return None
    if x.is_neg():
        return "negative"
    if x.is_conj():
        return "conjugate"
    return None


def readable(x):
    """``x`` with its memory holding its values: lazily negated or conjugated torch views are
    resolved (a copy); everything else is returned as it is."""
    if lazy_view_flag(x) is None:
        return x
    return x.resolve_neg().resolve_conj()


def check_plain_view(what: str, x) -> None:
    """Refuses a lazily negated or conjugated torch tensor as an array the step writes."""
    flag = lazy_view_flag(x)
    if flag is not None:
        raise ValueError(
            f"{what} is a lazily {'negated' if flag == 'negative' else 'conjugated'} torch view "
            f"(is_{'neg' if flag == 'negative' else 'conj'}() is True), whose memory does not "
            f"hold its values; adamcore writes memory directly, so pass a resolved tensor "
            f"(.resolve_{'neg' if flag == 'negative' else 'conj'}()) (nothing was updated)")


# ---- steps of different optimizers writing the same memory at once ---------------------------
# One optimizer refuses a second thread itself (its lock). Two optimizers that share a param and
# step from two threads would each read the old value and one update would be lost; the cheap
# part of that is caught here: the start addresses of the arrays a step writes are claimed for
# the length of the step, and a step that finds one of them claimed raises instead of racing.

# The claims now held, one frozenset per step in progress: a claim compares its set with each of
# them (none, unless optimizers step in several threads at once), so claiming costs nothing per
# array; a single merged set would hash every address in and out at every step (~10 us a step
# over 100 params with the caches cold, bench/NOTES.md CPU section 8). The check and the append
# are one native call holding the GIL, hence atomic; the steady plan's native step claims in the
# same list (CpuPlan.watch).
CLAIMS: list[frozenset[int]] = []


def claim(addresses: frozenset[int], who: str) -> None:
    """Claims the start addresses of the arrays a step writes; RuntimeError if another step,
    in another thread, holds one of them. Pair every claim with :func:`release`."""
    _core._steady.claim(CLAIMS, addresses, who)


def release(addresses: frozenset[int]) -> None:
    """Ends a claim of these addresses."""
    _core._steady.release(CLAIMS, addresses)


# ---- complex arrays as pairs of reals ----------------------------------------------------------
def real_view(x):
    """A complex NumPy, torch or CuPy array as a real view of its memory with a trailing axis of
    2 (real, imaginary), as torch.view_as_real; None for other libraries (no such views)."""
    lib = _arrays.library(x)
    if lib == "torch":
        import torch

        return torch.view_as_real(x)
    if lib in ("numpy", "cupy"):
        parts = x.real  # a view with x's strides, at the real parts
        if lib == "numpy":
            return np.lib.stride_tricks.as_strided(parts, x.shape + (2,),
                                                   x.strides + (x.itemsize // 2,))
        import cupy

        return cupy.lib.stride_tricks.as_strided(parts, x.shape + (2,),
                                                 x.strides + (x.itemsize // 2,))
    return None
