"""Helpers of the property tests: arrays in any memory layout, their values, and the error bound
of one float32 (or float64) Adam step against the float64 textbook.

Layouts: any axis order, any step per axis (negative ones for NumPy, huge ones), a start offset
of a few elements (so the data is not vector-aligned). Each array lives inside a larger buffer
filled with a sentinel, so a test can check that the step wrote nothing between the elements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SENTINEL = -7680.0  # 15 * 2**9: exact in float16, bfloat16, float32 and float64

# ---- layouts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Where the elements of an array of ``shape`` sit in a buffer.

    ``order`` lists the axes from the outermost in memory to the innermost; ``steps[k]`` is how
    many buffer slots axis k advances per element (negative: the axis runs backwards);
    ``offset`` is where the used block starts in the buffer.
    """

    order: tuple
    steps: tuple
    offset: int

    @staticmethod
    def contiguous(ndim: int) -> "Layout":
        return Layout(tuple(range(ndim)), (1,) * ndim, 0)

    def geometry(self, shape):
        """(buffer size, index of the first element, strides in elements)."""
        ndim = len(shape)
        extents = [shape[k] * abs(self.steps[k]) for k in range(ndim)]
        base = [0] * ndim
        running = 1
        for k in reversed(self.order):
            base[k] = running
            running *= max(extents[k], 1)
        strides = [base[k] * self.steps[k] for k in range(ndim)]
        start = self.offset + sum((shape[k] - 1) * base[k] * abs(self.steps[k])
                                  for k in range(ndim) if self.steps[k] < 0 and shape[k] > 0)
        size = self.offset + (running if all(shape) else 1)
        return size, start, strides


def positions(shape, layout: Layout) -> np.ndarray:
    """Buffer indices of every element, in C order of the logical index."""
    _, start, strides = layout.geometry(shape)
    idx = np.full(shape, start, dtype=np.int64)
    for axis, (extent, stride) in enumerate(zip(shape, strides)):
        view = [1] * len(shape)
        view[axis] = extent
        idx = idx + (np.arange(extent, dtype=np.int64) * stride).reshape(view)
    return idx.reshape(-1)


class Placed:
    """An array of a library, laid out by a Layout inside a sentinel-filled buffer."""

    def __init__(self, lib: str, values: np.ndarray, dtype: str, layout: Layout):
        self.lib, self.dtype, self.layout = lib, dtype, layout
        shape = values.shape
        size, start, strides = layout.geometry(shape)
        self.positions = positions(shape, layout)
        if lib == "numpy":
            buf = np.full(size, SENTINEL, dtype=dtype)
            item = buf.itemsize
            view = np.lib.stride_tricks.as_strided(buf[start:], shape,
                                                   [s * item for s in strides])
            view[...] = values.astype(dtype)
        elif lib in ("torch", "torch-cuda"):
            import torch

            device = "cuda" if lib == "torch-cuda" else "cpu"
            tdtype = getattr(torch, dtype)
            buf = torch.full((size,), SENTINEL, dtype=tdtype, device=device)
            view = torch.as_strided(buf, shape, strides, start)
            view.copy_(torch.from_numpy(np.array(values, order="C")).to(device=device,
                                                                        dtype=tdtype))
        else:
            raise ValueError(lib)
        self.buffer, self.array = buf, view

    def numpy(self) -> np.ndarray:
        """The values as a float64 (any dtype) NumPy copy."""
        return as_float64(self.array)

    def gaps_untouched(self) -> bool:
        buf = as_float64(self.buffer)
        mask = np.ones(buf.size, bool)
        mask[self.positions] = False
        return bool((buf[mask] == SENTINEL).all())


def as_float64(x) -> np.ndarray:
    if isinstance(x, (np.ndarray, np.generic)):  # NumPy's 0-d arithmetic gives scalars
        return np.asarray(x).astype(np.float64)
    return x.detach().cpu().to(dtype=__import__("torch").float64).numpy().copy()


def bits(x) -> np.ndarray:
    """The array's raw bits as unsigned integers (for bit-for-bit comparisons, NaNs included)."""
    if isinstance(x, (np.ndarray, np.generic)):
        a = np.ascontiguousarray(x)
        return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])
    import torch

    t = x.detach().cpu().contiguous()
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.view(as_int).numpy().copy()


def same_bits_or_both_nan(a, b) -> bool:
    """Bit-for-bit equal, except that any NaN equals any NaN (payloads are not specified)."""
    fa, fb = as_float64(a), as_float64(b)
    nan = np.isnan(fa)
    if not np.array_equal(nan, np.isnan(fb)):
        return False
    return bool(np.array_equal(bits(a).reshape(-1)[~nan.reshape(-1)],
                               bits(b).reshape(-1)[~nan.reshape(-1)]))


# ---- values ---------------------------------------------------------------------------------

# The largest finite value and the smallest normal of each dtype.
LIMITS = {
    "float16": (65504.0, 2.0**-14, 2.0**-24),
    "bfloat16": (3.3895313892515355e38, 2.0**-126, 2.0**-133),
    "float32": (3.4028234663852886e38, 2.0**-126, 2.0**-149),
    "float64": (1.7976931348623157e308, 2.0**-1022, 2.0**-1074),
}


def make_values(rng: np.random.Generator, shape, dtype: str, scale_exp: float, specials: str):
    """Values of a gradient (or parameter): normal times 10**scale_exp, clipped to the dtype's
    range, with some elements replaced by special values: 'none', 'tiny' (subnormals and zeros
    of both signs), 'huge' (near the dtype's max), 'inf', 'nan'."""
    big, normal_min, sub_min = LIMITS[dtype]
    scale = 10.0**scale_exp
    x = rng.standard_normal(shape) * scale
    x = np.clip(x, -big / 4, big / 4)
    n = x.size
    if n and specials != "none":
        k = int(rng.integers(1, max(2, n // 3) + 1))
        where = rng.choice(n, size=min(k, n), replace=False)
        flat = x.reshape(-1)
        if specials == "tiny":
            choices = np.array([0.0, -0.0, sub_min, -sub_min, 3 * sub_min, normal_min / 2,
                                -normal_min / 3, normal_min])
        elif specials == "huge":
            choices = np.array([big / 2, -big / 2, big, -big])
        elif specials == "inf":
            choices = np.array([np.inf, -np.inf])
        else:
            choices = np.array([np.nan])
        flat[where] = rng.choice(choices, size=where.size)
    return x


# ---- the error bound ------------------------------------------------------------------------

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
# relative half-ulp of the parameter's storage type, and half its smallest subnormal
NARROW = {"float16": (2.0**-11, 2.0**-25), "bfloat16": (2.0**-8, 2.0**-134),
          "float32": (0.0, 0.0), "float64": (0.0, 0.0)}


def step_error_bound(p, g, m, v, vmax, *, step, lr, beta1, beta2, eps, weight_decay,
                     decoupled_weight_decay, decouple_lr, max_lr, amsgrad, maximize,
                     compute: str, param_dtype: str):
    """Bounds on |computed - exact| for one step of update.h's operations in ``compute``
    precision from the same inputs (float64 arrays holding the stored values).

    Each IEEE operation gives ``(x op y)(1 + d)`` with |d| <= u while the result is a normal
    number; each coefficient is rounded to ``compute`` once, with the relative error measured
    here exactly (a coefficient below float32's range, eps=1e-300 say, loses all of itself).
    The first-order propagation of those errors through update.h's order of operations is
    returned, with a mask of the elements where it applies: inputs and float64 intermediates
    finite and, when nonzero, inside ``compute``'s normal range (no overflow, no gradual
    underflow), and a denominator larger than its own error. Elsewhere only the bit-exact
    oracle judges. Second-order terms (products of two errors) are left out: callers double
    the bound, which covers them by a wide margin at these magnitudes.

    Returns (bound_p, bound_m, bound_v, bound_vmax or None, mask).
    """
    u = UNIT_ROUNDOFF[compute]
    big, normal_min, _ = LIMITS[compute]
    big = big * (1 - 8 * u)  # a result within a few ulps of the max may round to inf

    def rho(c):  # relative error of rounding the double coefficient c to the compute type
        if compute == "float64" or c == 0.0:
            return 0.0
        return abs(float(np.float32(c)) - c) / abs(c)

    A = np.abs
    decoupled = decoupled_weight_decay or decouple_lr
    l2 = weight_decay != 0.0 and not decoupled
    decay = 1.0
    if decoupled:
        decay = 1.0 - (lr / max_lr if decouple_lr else lr) * weight_decay
    c1 = lr / (1.0 - beta1**step)
    c2 = 1.0 / math.sqrt(1.0 - beta2**step)
    omb1, omb2 = 1.0 - beta1, 1.0 - beta2
    intermediates = []
    with np.errstate(all="ignore"):
        g1 = -g if maximize else g
        e_g = np.zeros_like(g)
        if l2:
            wp = weight_decay * p
            g1 = g1 + wp
            e_g = (rho(weight_decay) + u) * A(wp) + u * (A(g) + A(wp))
            intermediates += [wp, g1]
        p1 = p * decay
        e_p1 = (rho(decay) + u) * A(p1) if decay != 1.0 else np.zeros_like(p)
        a, b = beta1 * m, omb1 * g1
        m1 = a + b
        e_m = (rho(beta1) + u) * A(a) + (rho(omb1) + u) * A(b) + omb1 * e_g + u * (A(a) + A(b))
        a2, b1, b2 = beta2 * v, omb2 * g1, omb2 * g1 * g1
        v1 = a2 + b2
        e_v = ((rho(beta2) + u) * A(a2) + (rho(omb2) + 2 * u) * A(b2)
               + 2 * omb2 * A(g1) * e_g + u * (A(a2) + A(b2)))
        intermediates += [p1, a, b, m1, a2, b1, b2, v1]
        second, e_s = v1, e_v
        vmax1 = e_vmax = None
        if amsgrad:
            vmax1 = np.maximum(vmax, v1)
            e_vmax = np.where(v1 + e_v >= vmax, e_v, 0.0)  # max() is 1-Lipschitz
            second, e_s = vmax1, e_vmax
            intermediates.append(vmax1)
        sq = np.sqrt(second)
        # |sqrt(s + e) - sqrt(s)| <= min(e / (2 sqrt(s)), sqrt(e))
        e_sq = np.minimum(np.where(sq > 0, e_s / (2 * sq), np.inf), np.sqrt(e_s)) + u * sq
        d1 = sq * c2
        e_d1 = c2 * e_sq + (rho(c2) + u) * d1
        den = d1 + eps
        e_den = e_d1 + rho(eps) * eps + u * den
        r = m1 / den
        e_r = (e_m + A(r) * e_den) / (den - e_den) + u * A(r)
        upd = c1 * r
        e_upd = c1 * e_r + (rho(c1) + u) * A(upd)
        p2 = p1 - upd
        e_p = e_p1 + e_upd + u * (A(p1) + A(upd))
        intermediates += [sq, d1, den, r, upd, p2]
        rel, absolute = NARROW[param_dtype]
        mask = den > e_den
        if rel:  # the final rounding to 16 bits, where the result is inside their range
            e_p = e_p + np.maximum(rel * A(p2), absolute)
            mask &= A(p2) <= LIMITS[param_dtype][0] * (1 - 2 * rel)
        for x in intermediates + [p, g, m, v] + ([vmax] if amsgrad else []):
            mask &= np.isfinite(x) & ((x == 0) | ((A(x) >= normal_min) & (A(x) <= big)))
    return e_p, e_m, e_v, e_vmax, mask


# ---- the bit-exact oracle in NumPy ----------------------------------------------------------
def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (to nearest, ties to even), returned as float32."""
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = np.asarray((rounded & 0xFFFFFFFF).astype(np.uint32)).view(np.float32)
    return np.asarray(np.where(np.isnan(x), np.float32(np.nan), out), dtype=np.float32)


def storage(values: np.ndarray, dtype: str) -> np.ndarray:
    """float64 values (already representable in dtype) as NumPy arrays of dtype; bfloat16,
    which NumPy lacks, as float32 (exact)."""
    return np.asarray(values, dtype=np.float32 if dtype == "bfloat16" else dtype)


class NumpyMirror:
    """One parameter and its state stepped by adamcore's Array-API path in NumPy.

    NumPy's float32 operations are correctly rounded, as the kernels' are, so this is the
    bit-exact oracle for every backend (torch's own sqrt is not correctly rounded on every
    CPU, so the Array-API path run on torch tensors can differ from the kernels by an ulp).
    bfloat16 is emulated: float32 arithmetic, then rounding to bfloat16.
    """

    def __init__(self, p, m, v, vmax, dtype: str):
        state = "float64" if dtype == "float64" else "float32"
        self.dtype = dtype
        self.p = storage(p, dtype)
        self.m, self.v, self.vmax = (np.asarray(x, dtype=state) for x in (m, v, vmax))

    def step(self, g, grad_dtype: str, hparams) -> None:
        from adamcore import _reference

        with np.errstate(all="ignore"):
            p, m, v, vmax = _reference.adam_update(
                np, self.p, storage(g, grad_dtype), self.m, self.v,
                self.vmax if hparams.amsgrad else None, hparams)
        self.p = round_to_bfloat16(p) if self.dtype == "bfloat16" else np.asarray(p)
        self.m, self.v = np.asarray(m), np.asarray(v)
        if vmax is not None:
            self.vmax = np.asarray(vmax)


def same_values(got, want) -> bool:
    """Equal as numbers with the same sign bit (so +0 and -0 differ); any NaN equals any NaN."""
    a, b = as_float64(got), np.asarray(want, dtype=np.float64)
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    keep = ~np.isnan(a)
    return bool(np.array_equal(a[keep], b[keep])
                and np.array_equal(np.signbit(a[keep]), np.signbit(b[keep])))
