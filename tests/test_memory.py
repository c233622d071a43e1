"""Memory shared between arrays: _memory's detection, and clipping of stride-0 grads."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import adamcore
from adamcore import _memory


def _check(written, read=()):
    _memory.check_disjoint([(f"param {i}", x) for i, x in enumerate(written)],
                            [(f"grad {i}", x) for i, x in enumerate(read)])


def test_disjoint_views_pass():
    buf = np.zeros(40, np.float32)
    _check([buf[::2], buf[1::2]])                      # interleaved, never the same element
    _check([buf[:10], buf[10:20]], [buf[30:], buf[30:]])  # grads may share memory with each other
    _check([buf.reshape(4, 10)[:, :5], buf.reshape(4, 10)[:, 5:]])
    _check([buf[:0], buf[:0]])                         # empty arrays hold no element


@pytest.mark.parametrize("make", [
    lambda b: (b[:10], b[5:15]),                        # overlapping slices
    lambda b: (b[:], b[:]),                             # x[:] passed twice
    lambda b: (b, b[3:4]),                              # a param that is a view into another
    lambda b: (b[::3], b[::2]),                         # strided views meeting at 0, 6, ...
    lambda b: (as_strided(b, (4, 4), (8, 4)), b[30:]),  # as_strided rows that overlap
])
def test_overlapping_written_arrays_are_refused(make):
    a, b = make(np.zeros(40, np.float32))
    with pytest.raises(ValueError, match="share memory"):
        _check([a, b])


def test_grad_overlapping_a_written_array_is_refused():
    buf = np.zeros(20, np.float32)
    with pytest.raises(ValueError, match="grad 0 would be read after the update wrote param 0"):
        _check([buf[1:]], [buf[:-1]])


@pytest.mark.parametrize("shape, strides, overlaps", [
    ((3, 4), (16, 4), False),
    ((3, 4), (0, 4), True),     # broadcast rows
    ((4, 3), (4, 16), False),   # transposed
    ((5, 4), (8, 4), True),     # rows of 4 every 2 elements
    ((2, 4), (16, 4), False),   # a gap between rows
    ((1, 4), (0, 4), False),    # stride 0 along a dimension of length 1 is harmless
    ((3, 3), (-12, 4), False),  # a negative stride
])
def test_memorys_itself(shape, strides, overlaps):
    buf = np.zeros(64, np.float32)
    view = as_strided(buf[32:], shape, strides)
    assert _memory.overlaps_itself(_memory.layout(view)) is overlaps


def test_self_overlapping_param_is_refused():
    buf = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="param 0 has a zero stride, so elements that share memory"):
        _check([as_strided(buf, (3, 4), (0, 4))])


def test_byte_range_with_negative_strides():
    buf = np.zeros(10, np.float64)
    lo, hi = _memory.layout(buf[::-1]).byte_range()
    assert (lo, hi) == (buf.ctypes.data, buf.ctypes.data + 80)


def test_clip_scales_a_stride0_numpy_grad_once():
    memory = np.ones(1, np.float32)
    g = as_strided(memory, (3, 4), (0, 0))  # 12 logical ones, one element in memory
    total = adamcore.clip_grad_norm([g], 1.0)
    assert float(total) == pytest.approx(np.sqrt(12.0), rel=1e-6)
    np.testing.assert_allclose(g, np.full((3, 4), 1 / (np.sqrt(12.0) + 1e-6)), rtol=1e-6)


def test_clip_refuses_a_tangled_layout_with_nothing_scaled():
    memory = np.ones(8, np.float32)
    g = as_strided(memory, (5, 4), (4, 4))  # rows overlapping by three elements
    before = memory.copy()
    with pytest.raises(ValueError, match="grad 0 has elements that share memory"):
        adamcore.clip_grad_norm([g], 1e-3)
    np.testing.assert_array_equal(memory, before)


def test_clip_scales_a_stride0_torch_grad_once():
    torch = pytest.importorskip("torch")
    w = torch.zeros(3, 4, requires_grad=True)
    (g,) = torch.autograd.grad(w.sum(), [w])  # an expanded tensor: strides (0, 0)
    assert g.stride() == (0, 0)
    adamcore.clip_grad_norm([g], 1.0)
    torch.testing.assert_close(g, torch.full((3, 4), 0.2887), atol=1e-4, rtol=0)


def test_torch_layouts():
    torch = pytest.importorskip("torch")
    base = torch.zeros(12)
    with pytest.raises(ValueError, match="param 0 and param 1 share memory"):
        _check([base[0:6], base[3:9]])
    _check([base[0:6], base[6:12]])
    with pytest.raises(ValueError, match="elements that share memory"):
        _check([torch.zeros(1).expand(4)])


def test_lazy_torch_views():
    torch = pytest.importorskip("torch")
    z = torch.tensor([1 + 2j, 3 - 4j])
    g = z.conj().imag  # is_neg(): memory holds 2, -4 for values -2, 4
    assert g.is_neg()
    assert _memory.lazy_view_flag(g) == "negative"
    torch.testing.assert_close(_memory.readable(g), torch.tensor([-2.0, 4.0]))
    assert not _memory.readable(g).is_neg()
    plain = torch.ones(2)
    assert _memory.readable(plain) is plain
    with pytest.raises(ValueError, match=r"param 0 is a lazily negated torch view"):
        _memory.check_plain_view("param 0", g)
    with pytest.raises(ValueError, match=r"lazily conjugated"):
        _memory.check_plain_view("param 1", z.conj())
    _memory.check_plain_view("param 2", plain)


def test_claims_are_exclusive_until_released():
    a = frozenset({0x1000, 0x2000})
    _memory.claim(a, "Adam.step()")
    try:
        with pytest.raises(RuntimeError, match="another optimizer is stepping a parameter"):
            _memory.claim(frozenset({0x2000, 0x3000}), "AdamW.step()")
        _memory.claim(frozenset({0x3000}), "AdamW.step()")  # disjoint: fine
        _memory.release(frozenset({0x3000}))
    finally:
        _memory.release(a)
    _memory.claim(frozenset({0x2000}), "AdamW.step()")
    _memory.release(frozenset({0x2000}))
