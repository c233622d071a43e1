"""The CPU core's threads: any thread count gives the same bits, chunks cover every element of
every tensor exactly once (tensor boundaries inside chunks), and the setting behaves."""

import numpy as np
import pytest

import adamcore


@pytest.fixture
def threads():
    before = adamcore.get_num_threads()
    yield
    adamcore.set_num_threads(before)


def _many_tensors(seed):
    """~600K elements in tensors of awkward sizes (so chunks straddle tensor boundaries), a
    float16 one and a strided one among them."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40_000, 30).tolist() + [1, 3, 65_537, 131_071]
    params = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    params.append(rng.standard_normal(50_001).astype(np.float16))
    params.append(rng.standard_normal((300, 400)).astype(np.float32)[:, ::2])  # strided view
    grads = [[rng.standard_normal(p.shape).astype(p.dtype) for p in params] for _ in range(3)]
    return params, grads


def _run(n_threads, seed=0):
    adamcore.set_num_threads(n_threads)
    params, grads = _many_tensors(seed)
    opt = adamcore.AdamW(params, lr=1e-2)
    for g in grads:
        opt.step(g)
    return params, opt


@pytest.mark.parametrize("n_threads", [2, 3, 8])
def test_thread_count_does_not_change_the_bits(threads, n_threads):
    ref, ref_opt = _run(1)
    got, opt = _run(n_threads)
    for i, (a, b) in enumerate(zip(ref, got)):
        np.testing.assert_array_equal(a, b, err_msg=f"param {i}")
        np.testing.assert_array_equal(ref_opt.state[i]["exp_avg"], opt.state[i]["exp_avg"])
        np.testing.assert_array_equal(ref_opt.state[i]["exp_avg_sq"], opt.state[i]["exp_avg_sq"])


def test_every_element_is_updated_once(threads):
    """With lr = 0 and grads of 1, m after one step is exactly 1 - beta1 everywhere: an element
    updated twice (overlapping chunks) or never would show."""
    adamcore.set_num_threads(4)
    params, _ = _many_tensors(1)
    opt = adamcore.Adam(params, lr=0.0)
    opt.step([np.ones(p.shape, p.dtype) for p in params])
    for i in range(len(params)):
        m = opt.state[i]["exp_avg"]
        np.testing.assert_array_equal(m, np.float32(1 - 0.9) * np.ones(m.shape, np.float32))


def test_non_finite_grad_found_with_threads(threads):
    adamcore.set_num_threads(3)
    params, grads = _many_tensors(2)
    before = [p.copy() for p in params]
    grads[0][33][-1] = np.nan  # the last element of a late tensor
    opt = adamcore.Adam(params, check_finite=True)
    with pytest.raises(FloatingPointError, match="grad 33"):
        opt.step(grads[0])
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)


def test_setting(threads):
    adamcore.set_num_threads(5)
    assert adamcore.get_num_threads() == 5
    with pytest.raises(ValueError):
        adamcore.set_num_threads(0)
    with pytest.raises(TypeError):
        adamcore.set_num_threads(2.0)
    assert adamcore.get_num_threads() == 5


def test_setting_range_and_integer_scalars(threads):
    adamcore.set_num_threads(np.int64(3))  # a NumPy integer is an integer
    assert adamcore.get_num_threads() == 3
    for bad in (2**31, 2**16 + 1, -1):
        with pytest.raises(ValueError, match=f"from 1 to 65536, got {bad}"):
            adamcore.set_num_threads(bad)
    with pytest.raises(TypeError, match="n must be an int"):
        adamcore.set_num_threads(True)
    assert adamcore.get_num_threads() == 3
