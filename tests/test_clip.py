"""adamcore.clip_grad_norm / clip_by_global_norm on every array library, against float64 NumPy
and torch.nn.utils.clip_grad_norm_."""

import math

import numpy as np
import pytest

import adamcore
from adamcore import _arrays
from array_libs import asarray, library_name, to_numpy

SHAPES = [(7,), (3, 5), (), (0,), (40000,)]  # the last spans two of the core's pieces
NORMS = [2.0, 1.0, 3.0, math.inf]


def _values(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _expected_norm(values, ord_):
    flat = np.concatenate([np.ravel(v) for v in values])
    if math.isinf(ord_):
        return np.max(np.abs(flat))
    return np.sum(np.abs(flat) ** ord_) ** (1 / ord_)


@pytest.mark.parametrize("ord_", NORMS)
@pytest.mark.parametrize("clips", [True, False], ids=["clips", "under"])
def test_values_and_in_place(xp, ord_, clips):
    values = _values()
    grads = [asarray(xp, v) for v in values]
    rounded = [to_numpy(g) for g in grads]  # the float32 values
    norm = _expected_norm(rounded, ord_)
    max_norm = norm / 4 if clips else norm * 2
    if library_name(xp) == "jax":
        with pytest.raises(ValueError, match="clip_by_global_norm"):
            adamcore.clip_grad_norm(grads, max_norm, ord_)
        out, total = adamcore.clip_by_global_norm(grads, max_norm, ord_)
        for g, r in zip(grads, rounded):
            np.testing.assert_array_equal(to_numpy(g), r)  # the caller's arrays are unchanged
    else:
        total = adamcore.clip_grad_norm(grads, max_norm, ord_)
        out = grads
        same, total2 = adamcore.clip_by_global_norm([], max_norm)
        assert same == [] and total2 == 0.0
    assert _arrays.library(total) == _arrays.library(grads[0]) and total.shape == ()
    np.testing.assert_allclose(float(total), norm, rtol=1e-6)
    scale = min(max_norm / (norm + 1e-6), 1.0)
    for g, r in zip(out, rounded):
        np.testing.assert_allclose(to_numpy(g), r * scale, rtol=2e-7, atol=1e-30)
        if not clips:
            np.testing.assert_array_equal(to_numpy(g), r)  # multiplied by exactly 1


def test_clip_by_global_norm_returns_the_same_arrays_where_mutable(xp):
    grads = [asarray(xp, v) for v in _values()]
    out, _ = adamcore.clip_by_global_norm(grads, 0.1)
    same = [a is b for a, b in zip(out, grads)]
    assert all(same) if library_name(xp) != "jax" else not any(same)


def test_float64_and_16_bit(xp):
    for dtype in ("float64", "float16", "bfloat16"):
        if not hasattr(xp, dtype) or (dtype == "float16" and library_name(xp) ==
                                      "array_api_strict"):
            continue
        values = _values(1)
        grads = [asarray(xp, v, dtype) for v in values]
        rounded = [to_numpy(g) for g in grads]
        out, total = adamcore.clip_by_global_norm(grads, 1.0)
        norm = _expected_norm(rounded, 2.0)
        assert _arrays.dtype_name(total.dtype) == ("float64" if dtype == "float64"
                                                   else "float32")
        np.testing.assert_allclose(float(total), norm, rtol=1e-6 if dtype != "float64"
                                   else 1e-12)
        tol = {"float64": 1e-15, "float16": 1e-3, "bfloat16": 8e-3}[dtype]
        for g, r in zip(out, rounded):
            np.testing.assert_allclose(to_numpy(g), r / (norm + 1e-6), rtol=tol, atol=1e-7)


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nonfinite(xp):
    values = _values()
    values[1][2, 3] = np.nan
    grads = [asarray(xp, v) for v in values]
    before = [to_numpy(g) for g in grads]
    with pytest.raises(FloatingPointError, match="nothing was scaled"):
        adamcore.clip_by_global_norm(grads, 1.0, error_if_nonfinite=True)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(to_numpy(g), b)
    out, total = adamcore.clip_by_global_norm(grads, 1.0)
    assert math.isnan(float(total))
    assert np.isnan(to_numpy(out[0])).all()  # torch's behaviour: a NaN norm spreads
    grads = [asarray(xp, [1.0, np.inf, 2.0])]
    _, total = adamcore.clip_by_global_norm(grads, 1.0, math.inf)
    assert float(total) == math.inf


def test_bad_arguments(xp):
    grads = [asarray(xp, v) for v in _values()]
    before = [to_numpy(g) for g in grads]
    cases = [
        (ValueError, dict(max_norm=-1.0)),
        (ValueError, dict(max_norm=float("nan"))),
        (ValueError, dict(max_norm=1.0, norm_type=0)),
        (ValueError, dict(max_norm=1.0, norm_type=-2)),
        (ValueError, dict(max_norm="large")),
    ]
    for error, kw in cases:
        with pytest.raises(error):
            adamcore.clip_by_global_norm(grads, **kw)
    with pytest.raises(TypeError, match="grad 1 has dtype int"):
        adamcore.clip_by_global_norm([grads[0], xp.asarray([1, 2])], 1.0)
    with pytest.raises(TypeError, match="not an array"):
        adamcore.clip_by_global_norm([grads[0], [1.0, 2.0]], 1.0)
    other = np if library_name(xp) != "numpy" else None
    if other is not None:
        with pytest.raises(ValueError, match="grad 1 is a numpy array"):
            adamcore.clip_by_global_norm([grads[0], np.ones(3, np.float32)], 0.1)
    for g, b in zip(grads, before):
        np.testing.assert_array_equal(to_numpy(g), b)


def test_read_only_numpy_grad_is_refused():
    g = np.ones(4, np.float32)
    g.flags.writeable = False
    with pytest.raises(ValueError, match="grad 0 is read-only"):
        adamcore.clip_grad_norm([g], 0.1)
    assert float(adamcore.clip_grad_norm(np.ones(4, np.float32), 10.0)) == pytest.approx(2.0)


STRIDED = {
    "transposed": lambda a: a.T,
    "every-third": lambda a: a[:, ::3],
    "negative": lambda a: a[::-1, ::-2],
    "column": lambda a: a[:, 4],
    "fortran": lambda a: np.asfortranarray(a),
}


@pytest.mark.parametrize("layout", STRIDED)
def test_strided_numpy_leaves_the_gaps_alone(layout):
    base = np.random.default_rng(2).standard_normal((300, 301)).astype(np.float32)
    buffer = base.copy()
    view = STRIDED[layout](buffer)
    expected_view = view.astype(np.float64)
    norm = np.sqrt(np.sum(expected_view**2))
    total = adamcore.clip_grad_norm([view], 1.0)
    np.testing.assert_allclose(float(total), norm, rtol=1e-7)  # returned in float32
    np.testing.assert_allclose(view, expected_view / (norm + 1e-6), rtol=1e-6)
    mask = np.ones(buffer.shape, bool)
    STRIDED[layout](mask)[...] = False if layout != "fortran" else True
    if layout != "fortran":  # a Fortran copy is a new buffer: the original stays as it was
        np.testing.assert_array_equal(buffer[mask], base[mask])


def test_result_does_not_depend_on_threads():
    grads = [np.random.default_rng(3).standard_normal(1_000_003).astype(np.float32)]
    before = adamcore.get_num_threads()
    totals = []
    try:
        for threads in (1, 2, 3):
            adamcore.set_num_threads(threads)
            totals.append(float(adamcore.clip_by_global_norm(grads, math.inf)[1]))
    finally:
        adamcore.set_num_threads(before)
    assert totals[0] == totals[1] == totals[2]


def test_matches_torch_clip_grad_norm():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    for ord_ in NORMS:
        theirs = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in [(30, 20), (20,)]]
        for p in theirs:
            p.grad = torch.randn(p.shape, generator=gen)
        grads = [p.grad.clone().t() if p.ndim == 2 else p.grad.clone() for p in theirs]
        expected = torch.nn.utils.clip_grad_norm_(theirs, 0.5, ord_)
        total = adamcore.clip_grad_norm(grads, 0.5, ord_)
        assert isinstance(total, torch.Tensor) and total.dtype == torch.float32
        torch.testing.assert_close(total, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(grads[0].t(), theirs[0].grad, rtol=2e-6, atol=1e-9)
        torch.testing.assert_close(grads[1], theirs[1].grad, rtol=2e-6, atol=1e-9)
