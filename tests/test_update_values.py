"""The update's numbers: every flag combination, size and memory layout, at every SIMD level.

Oracles: the float64 textbook formula (tests/textbook.py) within float32 rounding, and
adamcore's pure Array-API path, which performs the same float32 operations and must agree with
the native kernels bit for bit.
"""

import numpy as np
import pytest

import adamcore
from adamcore import _reference
from adamcore._hparams import step_hparams
from conftest import CONFIGS, hparam_kwargs
from textbook import adam_textbook

SIZES = [0, 1, 7, 17, 1023, 65537]
LAYOUTS = ["contiguous", "unaligned", "strided", "negative", "fortran", "fortran-c-grad", "0-d"]
SENTINEL = 12345.0


class Layout:
    """Makes arrays of one memory layout holding given values; remembers the gaps between them."""

    def __init__(self, name, n, dtype):
        self.name, self.n, self.dtype = name, n, dtype
        self.buffers = []

    def shape(self):
        if self.name == "0-d":
            return ()
        if self.name.startswith("fortran"):
            return (self.n, 3)
        return (self.n,)

    def make(self, values, *, role="param"):
        shape = self.shape()
        values = np.asarray(values, dtype=np.float64).reshape(shape)
        kind = self.name
        if kind == "fortran-c-grad":
            kind = "contiguous" if role == "grad" else "fortran"
        if kind in ("contiguous", "0-d"):
            return values.astype(self.dtype)
        if kind == "fortran":
            return np.asfortranarray(values.astype(self.dtype))
        if kind == "unaligned":
            buf = np.full(values.size + 1, SENTINEL, self.dtype)
            out = buf[1:]
        elif kind == "strided":
            buf = np.full(3 * values.size, SENTINEL, self.dtype)
            out = buf[::3]
        elif kind == "negative":
            buf = np.full(values.size, SENTINEL, self.dtype)
            out = buf[::-1]
        out[...] = values
        self.buffers.append((buf, out))
        return out

    def check_gaps_untouched(self):
        for buf, view in self.buffers:
            mask = np.ones(buf.size, bool)
            mask[_positions(buf, view)] = False
            assert (buf[mask] == SENTINEL).all(), "memory between strided elements was written"


def _positions(buf, view):
    """Indices into buf of the elements of view."""
    itemsize = buf.itemsize
    start = (view.__array_interface__["data"][0] - buf.__array_interface__["data"][0]) // itemsize
    strides = [s // itemsize for s in view.strides]
    idx = np.full(view.shape, start, dtype=np.int64)
    for axis, (extent, stride) in enumerate(zip(view.shape, strides)):
        shape = [1] * view.ndim
        shape[axis] = extent
        idx = idx + (np.arange(extent) * stride).reshape(shape)
    return idx.ravel()


def _cases():
    for size in SIZES:
        for layout in LAYOUTS:
            if layout == "0-d" and size != 1:
                continue
            yield size, layout


def _run(config, size, layout, dtype, rng, steps=3, lr=1e-3):
    """Steps adamcore.adam_step and the textbook side by side; returns both and the layout."""
    kw = hparam_kwargs(config)
    amsgrad = kw.get("amsgrad", False)
    lay = Layout(layout, size, dtype)
    shape = lay.shape()
    state_dtype = np.float32 if dtype in (np.float16,) else dtype
    start = rng.standard_normal(shape)
    p = lay.make(start)
    states = [Layout(layout, size, state_dtype) for _ in range(3)]
    m, v, vmax = (s.make(np.zeros(shape)) for s in states)
    ref = [p.astype(np.float64), np.zeros(shape), np.zeros(shape), np.zeros(shape)]
    # one gradient scale per run: scales that change between steps make m cancel, and then
    # float32 rounding (torch's too) is amplified far past what these tolerances expect
    scale = 10.0 ** rng.uniform(-3, 1)
    for step in range(1, steps + 1):
        g_values = rng.standard_normal(shape) * scale
        g = lay.make(g_values, role="grad")
        out = adamcore.adam_step(p, g, m, v, step=step, lr=lr, max_exp_avg_sq=vmax, **kw)
        assert out[0] is p and out[1] is m and out[2] is v
        assert (out[3] is vmax) if amsgrad else out[3] is None
        ref = adam_textbook(ref[0], g, ref[1], ref[2], ref[3], step=step, lr=lr, **kw)
    for s in [lay] + states:
        s.check_gaps_untouched()
    return (p, m, v, vmax), ref, scale


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("size,layout", list(_cases()))
def test_float32_matches_textbook(config, size, layout, rng, simd_level):
    (p, m, v, vmax), (rp, rm, rv, rvmax), scale = _run(config, size, layout, np.float32, rng)
    # absolute tolerances in the units of each quantity: lr for p, the grad scale for m, v
    np.testing.assert_allclose(p, rp, rtol=2e-6, atol=1e-5 * 1e-3)
    np.testing.assert_allclose(m, rm, rtol=2e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(v, rv, rtol=2e-6, atol=1e-6 * scale**2)
    if config.get("amsgrad"):
        np.testing.assert_allclose(vmax, rvmax, rtol=2e-6, atol=1e-6 * scale**2)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("size,layout", [(1023, "contiguous"), (65537, "strided"),
                                         (17, "fortran-c-grad"), (1, "0-d")])
def test_float64_matches_textbook_to_1e12(config, size, layout, rng, simd_level):
    (p, m, v, vmax), (rp, rm, rv, rvmax), scale = _run(config, size, layout, np.float64, rng)
    np.testing.assert_allclose(p, rp, rtol=1e-12, atol=1e-12 * 1e-3)
    np.testing.assert_allclose(m, rm, rtol=1e-12, atol=1e-14 * scale)
    np.testing.assert_allclose(v, rv, rtol=1e-12, atol=1e-14 * scale**2)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("size,layout", [(1023, "contiguous"), (65537, "strided"),
                                         (17, "unaligned"), (1, "0-d")])
def test_float16_close_to_textbook(config, size, layout, rng, simd_level):
    (p, m, v, vmax), (rp, rm, rv, rvmax), _ = _run(config, size, layout, np.float16, rng)
    assert p.dtype == np.float16 and m.dtype == np.float32
    np.testing.assert_allclose(p.astype(np.float64), rp, rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("dtype,grad_dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                              (np.float16, np.float16), (np.float16, np.float32)])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "fortran-c-grad"])
def test_native_equals_array_api_path_bit_for_bit(config, dtype, grad_dtype, layout, rng,
                                                  simd_level):
    """The kernels and the pure Array-API path do the same operations: identical bits."""
    kw = hparam_kwargs(config)
    group = {"lr": 1e-3, "betas": (kw.pop("beta1", 0.9), kw.pop("beta2", 0.999)),
             "eps": 1e-8, "weight_decay": 0.0, "decoupled_weight_decay": False,
             "decouple_lr": False, "max_lr": None, "amsgrad": False, "maximize": False}
    group.update(kw)
    state_dtype = np.float64 if dtype == np.float64 else np.float32
    lay = Layout(layout, 257, dtype)
    p = lay.make(rng.standard_normal(lay.shape()))
    m, v, vmax = (np.zeros(lay.shape(), state_dtype) for _ in range(3))
    ref = [p.copy(), m.copy(), v.copy(), vmax.copy()]
    for step in range(1, 4):
        g = Layout(layout, 257, grad_dtype).make(rng.standard_normal(lay.shape()), role="grad")
        g[..., :1] = 0.0  # exact zeros too
        hp = step_hparams(group, step)
        adamcore.adam_step(p, g, m, v, step=step, lr=group["lr"], beta1=group["betas"][0],
                           beta2=group["betas"][1], max_exp_avg_sq=vmax, **kw)
        ref = list(_reference.adam_update(np, *ref[:1], g, *ref[1:3],
                                          ref[3] if group["amsgrad"] else None, hp))
        if ref[3] is None:
            ref[3] = vmax
    np.testing.assert_array_equal(p, ref[0])
    np.testing.assert_array_equal(m, ref[1])
    np.testing.assert_array_equal(v, ref[2])


def _at_line_offset(n, dtype, offset):
    """n elements of dtype starting offset elements past a 64-byte cache-line boundary."""
    itemsize = np.dtype(dtype).itemsize
    buf = np.empty(n + offset + 64 // itemsize, dtype)
    start = (-buf.ctypes.data % 64) // itemsize + offset
    return buf[start:start + n]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_every_offset_from_a_cache_line(dtype, amsgrad, rng, simd_level):
    """The kernels take elements one by one until the param sits on a cache line, then whole
    vectors: every param offset within a line, with the grad and state at other offsets, gives
    the Array-API path's bits."""
    per_line = 64 // np.dtype(dtype).itemsize
    group = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.1,
             "decoupled_weight_decay": False, "decouple_lr": False, "max_lr": None,
             "amsgrad": amsgrad, "maximize": False}
    for n in (1, 7, per_line + 1, 3 * per_line + 5):
        for p_offset in range(per_line):
            other = (p_offset * 5 + 3) % per_line  # grad and state elsewhere in their lines
            p = _at_line_offset(n, dtype, p_offset)
            p[...] = rng.standard_normal(n)
            m, v, vmax = (_at_line_offset(n, dtype, other) for _ in range(3))
            for x in (m, v, vmax):
                x[...] = 0
            ref = [p.copy(), m.copy(), v.copy(), vmax.copy() if amsgrad else None]
            for step in (1, 2):
                g = _at_line_offset(n, dtype, other)
                g[...] = rng.standard_normal(n)
                adamcore.adam_step(p, g, m, v, step=step, lr=1e-2, weight_decay=0.1,
                                   amsgrad=amsgrad, max_exp_avg_sq=vmax if amsgrad else None)
                ref = list(_reference.adam_update(np, ref[0], g, ref[1], ref[2], ref[3],
                                                  step_hparams(group, step)))
            for got, want in zip((p, m, v), ref):
                np.testing.assert_array_equal(got, want, err_msg=f"n={n} offset={p_offset}")
            if amsgrad:
                np.testing.assert_array_equal(vmax, ref[3])


def test_float16_round_trips_every_bit_pattern(simd_level):
    """With lr = 0 the step stores each float16 back unchanged: widen/narrow are exact."""
    p = np.arange(1 << 16, dtype=np.uint16).view(np.float16).copy()
    before = p.copy()
    g = np.ones_like(p)
    m = np.zeros(p.shape, np.float32)
    v = np.zeros(p.shape, np.float32)
    adamcore.adam_step(p, g, m, v, step=1, lr=0.0)
    finite = ~np.isnan(before)
    np.testing.assert_array_equal(p.view(np.uint16)[finite], before.view(np.uint16)[finite])
    assert np.isnan(p[~finite]).all()


def test_bfloat16_parameters_through_torch(simd_level):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(1000, generator=gen).to(torch.bfloat16)
    ref_p = p.clone()
    m, v = torch.zeros(1000), torch.zeros(1000)
    ref_m, ref_v = m.clone(), v.clone()
    group = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "decoupled_weight_decay": False, "decouple_lr": False, "max_lr": None,
             "amsgrad": False, "maximize": False}
    import array_api_compat.torch as xp

    for step in range(1, 4):
        for g in (torch.randn(1000, generator=gen).to(torch.bfloat16),
                  torch.randn(1000, generator=gen)):
            adamcore.adam_step(p, g, m, v, step=step, lr=1e-2)
            ref_p, ref_m, ref_v, _ = _reference.adam_update(
                xp, ref_p, g, ref_m, ref_v, None, step_hparams(group, step))
    assert p.dtype == torch.bfloat16
    assert torch.equal(p, ref_p) and torch.equal(m, ref_m) and torch.equal(v, ref_v)


def test_levels_agree_bit_for_bit(rng):
    """Every runnable SIMD level computes the same bits (no FMA contraction anywhere)."""
    results = {}
    before = adamcore.get_simd_level()
    try:
        for level in adamcore.available_simd_levels():
            adamcore.set_simd_level(level)
            local = np.random.default_rng(5)
            outs = []
            for dtype in (np.float32, np.float64, np.float16):
                p = local.standard_normal(4099).astype(dtype)
                st = np.float64 if dtype == np.float64 else np.float32
                m, v, vm = (np.zeros(4099, st) for _ in range(3))
                for step in (1, 2):
                    g = local.standard_normal(4099).astype(dtype)
                    adamcore.adam_step(p, g, m, v, step=step, lr=1e-2, weight_decay=0.1,
                                       amsgrad=True, max_exp_avg_sq=vm)
                outs += [p, m, v, vm]
            results[level] = outs
    finally:
        adamcore.set_simd_level(before)
    levels = list(results)
    for level in levels[1:]:
        for a, b in zip(results[levels[0]], results[level]):
            np.testing.assert_array_equal(a, b)


def test_multi_step_class_matches_textbook(rng, simd_level):
    """The optimizer class (its steady fast path included) over 20 steps, several groups."""
    shapes = [(7,), (33, 5), (1023,), ()]
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    refs = [[p.astype(np.float64), np.zeros(p.shape), np.zeros(p.shape), np.zeros(p.shape)]
            for p in params]
    opt = adamcore.Adam([{"params": params[:2], "weight_decay": 0.1},
                         {"params": params[2:], "lr": 3e-3, "amsgrad": True}], lr=1e-3)
    settings = [dict(lr=1e-3, weight_decay=0.1), dict(lr=1e-3, weight_decay=0.1),
                dict(lr=3e-3, amsgrad=True), dict(lr=3e-3, amsgrad=True)]
    for step in range(1, 21):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        out = opt.step(grads)
        assert all(a is b for a, b in zip(out, params))
        for ref, g, s in zip(refs, grads, settings):
            ref[:] = adam_textbook(ref[0], g, ref[1], ref[2], ref[3], step=step, **s)
    assert opt._steady is not None, "the steady fast path should be in use"
    for p, ref in zip(params, refs):
        np.testing.assert_allclose(p, ref[0], rtol=1e-5, atol=1e-7)
