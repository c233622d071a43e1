"""Complex parameters: updated as pairs of reals, as torch.optim does (view_as_real), in place,
with complex state of the param's dtype, in every front end."""

import numpy as np
import pytest

import adamcore
from conftest import CONFIGS

SHAPES = [(), (1,), (7,), (17,), (3, 5)]


def _complex(rng, shape, dtype):
    return np.array(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype=dtype)


def _reals_reference(p, grads, config):
    """The same steps on the real view with adamcore's real-valued path: the definition."""
    r = np.ascontiguousarray(p).view(p.real.dtype).reshape(p.shape + (2,)).copy()
    opt = adamcore.Adam([r], lr=0.05, **config)
    for g in grads:
        opt.step([np.ascontiguousarray(g).view(g.real.dtype).reshape(g.shape + (2,)).copy()])
    return r[..., 0] + 1j * r[..., 1]


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_numpy_complex_equals_pairs_of_reals(config, dtype, simd_level, rng):
    for shape in SHAPES:
        p = _complex(rng, shape, dtype)
        grads = [_complex(rng, shape, dtype) for _ in range(4)]
        expected = _reals_reference(p, grads, config)
        memory = p.ctypes.data
        opt = adamcore.Adam([p], lr=0.05, **config)
        for g in grads:
            opt.step([g])
        assert p.ctypes.data == memory and p.dtype == dtype  # in place
        np.testing.assert_array_equal(p, expected.astype(dtype))
        assert opt.state[0]["exp_avg"].dtype == dtype


def test_strided_complex_param_is_updated_in_place(rng):
    base = _complex(rng, (6, 8), np.complex64)
    p = base[::2, 1::3]  # not contiguous
    before = base.copy()
    g = _complex(rng, p.shape, np.complex64)
    expected = _reals_reference(p.copy(), [g], {})
    adamcore.Adam([p], lr=0.05).step([g])
    np.testing.assert_array_equal(base[::2, 1::3], expected.astype(np.complex64))
    mask = np.ones(base.shape, bool)
    mask[::2, 1::3] = False
    np.testing.assert_array_equal(base[mask], before[mask])  # nothing else written


def test_adam_step_complex(rng):
    p = _complex(rng, (5,), np.complex128)
    g = _complex(rng, (5,), np.complex128)
    expected = _reals_reference(p.copy(), [g], {})
    m, v = np.zeros_like(p), np.zeros_like(p)
    adamcore.adam_step(p, g, m, v, step=1, lr=0.05)
    np.testing.assert_array_equal(p, expected)


def test_complex_grad_for_a_complex_param_must_match():
    p = np.zeros(3, np.complex64)
    with pytest.raises(TypeError, match="grad 0 has dtype complex128 but param 0 has dtype "
                                        "complex64"):
        adamcore.Adam([p]).step([np.zeros(3, np.complex128)])
    with pytest.raises(TypeError, match="grad 0 has dtype float32 but param 0 has dtype "
                                        "complex64"):
        adamcore.Adam([p]).step([np.zeros(3, np.float32)])


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_torch_complex_matches_torch_optim(config):
    torch = pytest.importorskip("torch")
    import adamcore.torch as at

    gen = torch.Generator().manual_seed(0)
    init = torch.randn(4, 3, generator=gen, dtype=torch.complex64)
    kwargs = dict(config)
    if "decouple_lr" in kwargs:
        pytest.skip("decouple_lr is adamcore's own")
    ours_p, theirs_p, plain_p = (torch.nn.Parameter(init.clone()) for _ in range(3))
    ours = at.Adam([ours_p], lr=0.05, **kwargs)
    theirs = torch.optim.Adam([theirs_p], lr=0.05, **kwargs)
    plain = adamcore.Adam([plain_p.detach()], lr=0.05, **kwargs)
    for _ in range(5):
        g = torch.randn(4, 3, generator=gen, dtype=torch.complex64)
        ours_p.grad, theirs_p.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        plain.step([g.clone()])
    torch.testing.assert_close(ours_p.detach(), theirs_p.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plain_p.detach(), theirs_p.detach(), rtol=1e-5, atol=1e-6)
    for key in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(ours.state[ours_p][key], theirs.state[theirs_p][key],
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lib", ["array_api_strict", "jax.numpy"])
def test_reference_path_complex_equals_numpy(lib, rng):
    xp = pytest.importorskip(lib)
    p0 = _complex(rng, (7,), np.complex64)
    grads = [_complex(rng, (7,), np.complex64) for _ in range(3)]
    expected = _reals_reference(p0, grads, {})
    params = [xp.asarray(p0)]
    opt = adamcore.Adam(params, lr=0.05)
    for g in grads:
        params = opt.step([xp.asarray(g)])
    np.testing.assert_allclose(np.asarray(params[0]), expected, rtol=1e-6, atol=1e-7)
