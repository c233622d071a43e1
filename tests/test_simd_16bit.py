"""The in-register 16-bit path of the AVX2/AVX-512 kernels: same bits as every other level and as
the pure Array-API path, special values included, for float16 and bfloat16 params."""

import numpy as np
import pytest

import adamcore


def _step_all_levels(make, steps=2, **kw):
    """Runs the same steps at each runnable level; returns {level: [p, m, v] as numpy}."""
    out = {}
    before = adamcore.get_simd_level()
    try:
        for level in adamcore.available_simd_levels():
            adamcore.set_simd_level(level)
            p, grads = make()
            if isinstance(p, np.ndarray):
                m, v = np.zeros(p.shape, np.float32), np.zeros(p.shape, np.float32)
            else:
                import torch

                m, v = torch.zeros(p.shape), torch.zeros(p.shape)
            for step, g in enumerate(grads[:steps], start=1):
                adamcore.adam_step(p, g, m, v, step=step, lr=1e-2, **kw)
            out[level] = [_bits(p), _numpy(m), _numpy(v)]
    finally:
        adamcore.set_simd_level(before)
    return out


def _numpy(x):
    return x.copy() if isinstance(x, np.ndarray) else x.numpy().copy()


def _bits(p):
    if isinstance(p, np.ndarray):
        return p.view(np.uint16).copy()
    import torch

    return p.view(torch.int16).numpy().copy()


@pytest.mark.parametrize("grad_dtype", ["float16", "float32"])
@pytest.mark.parametrize("config", [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1,
                                    "decoupled_weight_decay": True}, {"maximize": True}])
def test_float16_levels_agree(grad_dtype, config):
    def make():
        rng = np.random.default_rng(3)
        p = (rng.standard_normal(4099) * 10.0 ** rng.integers(-9, 4, 4099)).astype(np.float16)
        p[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 6e-8]  # specials and a subnormal
        grads = [rng.standard_normal(4099).astype(grad_dtype) for _ in range(2)]
        return p, grads

    results = _step_all_levels(make, **config)
    first = next(iter(results.values()))
    for level, arrays in results.items():
        for a, b in zip(arrays, first):
            np.testing.assert_array_equal(a, b, err_msg=level)


@pytest.mark.parametrize("grad_dtype", ["bfloat16", "float32"])
def test_bfloat16_levels_agree(grad_dtype):
    torch = pytest.importorskip("torch")

    def make():
        gen = torch.Generator().manual_seed(4)
        p = (torch.randn(4099, generator=gen) * 1e3).to(torch.bfloat16)
        p[:5] = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan")])
        grads = [torch.randn(4099, generator=gen).to(getattr(torch, grad_dtype)) for _ in range(2)]
        return p, grads

    results = _step_all_levels(make)
    first = next(iter(results.values()))
    for level, arrays in results.items():
        for a, b in zip(arrays, first):
            np.testing.assert_array_equal(a, b, err_msg=level)


def test_bfloat16_round_trips_every_bit_pattern(simd_level):
    """With lr = 0 every bfloat16 is stored back unchanged (NaNs stay NaN)."""
    torch = pytest.importorskip("torch")
    bits = torch.arange(-(1 << 15), 1 << 15, dtype=torch.int32).to(torch.int16)
    p = bits.view(torch.bfloat16).clone()
    before = p.clone()
    m, v = torch.zeros(p.shape), torch.zeros(p.shape)
    adamcore.adam_step(p, torch.ones(p.shape), m, v, step=1, lr=0.0)
    finite = ~torch.isnan(before)
    assert torch.equal(p.view(torch.int16)[finite], before.view(torch.int16)[finite])
    assert torch.isnan(p[~finite]).all()
