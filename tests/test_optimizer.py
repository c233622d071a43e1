"""The optimizer's API: param groups, schedules, edits, state dicts, the steady fast path."""

import copy

import numpy as np
import pytest

import adamcore
from textbook import adam_textbook


def _params(rng, shapes=((4,), (2, 3))):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def test_zero_copy_numpy(rng):
    params = _params(rng)
    pointers = [p.ctypes.data for p in params]
    before = [p.copy() for p in params]
    opt = adamcore.Adam(params, lr=0.1)
    for _ in range(3):  # first step (general path), then the steady path
        out = opt.step([np.ones_like(p) for p in params])
        assert all(a is b for a, b in zip(out, params))
    assert [p.ctypes.data for p in params] == pointers
    assert all(not np.array_equal(a, b) for a, b in zip(params, before))


def test_param_group_overrides_and_defaults(rng):
    a, b = _params(rng)
    opt = adamcore.AdamW([{"params": [a], "lr": 0.5}, {"params": b}], lr=0.1)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[1]["lr"] == 0.1
    assert opt.param_groups[1]["weight_decay"] == 1e-2  # AdamW's default
    assert opt.param_groups[1]["params"][0] is b
    a0, b0 = a.copy(), b.copy()
    opt.step([np.ones_like(a), np.ones_like(b)])
    # first step moves each element by about lr (Adam's normalized step)
    np.testing.assert_allclose(a0 - a, 0.5 + a0 * 0.5 * 1e-2, rtol=1e-4)
    np.testing.assert_allclose(b0 - b, 0.1 + b0 * 0.1 * 1e-2, rtol=1e-4)


def test_param_group_edits_apply_from_the_next_step(rng):
    (p,) = _params(rng, [(5,)])
    ref = [p.astype(np.float64), np.zeros(5), np.zeros(5), np.zeros(5)]
    opt = adamcore.Adam([p], lr=0.1)
    for step, lr in enumerate([0.1, 0.1, 0.01, 0.01, 0.3], start=1):
        opt.param_groups[0]["lr"] = lr
        g = rng.standard_normal(5).astype(np.float32)
        opt.step([g])
        ref = list(adam_textbook(ref[0], g, ref[1], ref[2], ref[3], step=step, lr=lr))
    np.testing.assert_allclose(p, ref[0], rtol=1e-5)


def test_schedule_is_called_with_steps_taken(rng):
    (p,) = _params(rng, [(5,)])
    seen = []

    def schedule(count):
        seen.append(count)
        return 0.1 / (1 + count)

    opt = adamcore.Adam([p], lr=schedule)
    ref = [p.astype(np.float64), np.zeros(5), np.zeros(5), np.zeros(5)]
    for step in range(1, 5):
        g = rng.standard_normal(5).astype(np.float32)
        opt.step([g])
        ref = list(adam_textbook(ref[0], g, ref[1], ref[2], ref[3], step=step,
                                 lr=0.1 / step))
    assert seen == [0, 1, 2, 3]  # optax's convention: the first step uses lr(0)
    np.testing.assert_allclose(p, ref[0], rtol=1e-5)


def test_decouple_lr_with_schedule(rng):
    (p,) = _params(rng, [(6,)])
    sched = [0.1, 0.05, 0.025]
    opt = adamcore.Adam([p], lr=lambda c: sched[c], weight_decay=0.5, decouple_lr=True,
                        max_lr=0.1)
    ref = [p.astype(np.float64), np.zeros(6), np.zeros(6), np.zeros(6)]
    for step in range(1, 4):
        g = rng.standard_normal(6).astype(np.float32)
        opt.step([g])
        ref = list(adam_textbook(ref[0], g, ref[1], ref[2], ref[3], step=step,
                                 lr=sched[step - 1], weight_decay=0.5, decouple_lr=True,
                                 max_lr=0.1))
    np.testing.assert_allclose(p, ref[0], rtol=1e-5)


def test_steady_path_notices_replaced_arrays(rng):
    """Swapping a param or a state array between steps must not update the old one."""
    params = _params(rng)
    opt = adamcore.Adam(params, lr=0.1)
    grads = [np.ones_like(p) for p in params]
    opt.step(grads)
    opt.step(grads)
    assert opt._steady is not None
    new = params[1].copy()
    old = params[1]
    old_values = old.copy()
    opt.param_groups[0]["params"][1] = new
    opt.step(grads)
    np.testing.assert_array_equal(old, old_values)
    assert not np.array_equal(new, old_values)
    # a state array reset by the user is used from then on
    opt.state[0]["exp_avg"] = np.zeros_like(params[0])
    fresh = opt.state[0]["exp_avg"]
    opt.step(grads)
    assert opt.state[0]["exp_avg"] is fresh and fresh.any()


def test_amsgrad_switched_on_later(rng):
    (p,) = _params(rng, [(5,)])
    opt = adamcore.Adam([p], lr=0.1)
    opt.step([np.ones(5, np.float32)])
    opt.param_groups[0]["amsgrad"] = True
    opt.step([np.ones(5, np.float32)])
    assert opt.state[0]["max_exp_avg_sq"].shape == (5,)
    assert opt.state[0]["step"] == 2


def test_state_dict_round_trip(rng):
    params = _params(rng)
    opt = adamcore.AdamW(params, lr=0.05, amsgrad=True)
    for _ in range(5):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    sd = copy.deepcopy(opt.state_dict())
    assert sd["param_groups"][0]["params"] == [0, 1]
    assert set(sd["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    twin_params = [p.copy() for p in params]
    twin = adamcore.AdamW(twin_params, lr=0.05, amsgrad=True)
    twin.load_state_dict(sd)
    assert twin.state[0]["exp_avg"] is not sd["state"][0]["exp_avg"]  # loading copies
    for _ in range(5):
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        opt.step(grads)
        twin.step([g.copy() for g in grads])
    for a, b in zip(params, twin_params):
        np.testing.assert_array_equal(a, b)


def test_state_dict_before_any_step_is_empty(rng):
    opt = adamcore.Adam(_params(rng))
    assert opt.state_dict()["state"] == {}


def test_mixed_float_dtypes_in_one_step(rng):
    params = [rng.standard_normal(9).astype(d) for d in (np.float16, np.float32, np.float64)]
    opt = adamcore.Adam(params, lr=0.1)
    opt.step([np.ones(9, np.float32), np.ones(9, np.float32), np.ones(9, np.float64)])
    assert [opt.state[i]["exp_avg"].dtype for i in range(3)] == [np.float32, np.float32,
                                                                np.float64]


def test_array_api_strict_takes_the_reference_path(rng):
    xp = pytest.importorskip("array_api_strict")
    values = rng.standard_normal(7).astype(np.float32)
    p = xp.asarray(values)
    np_p = values.copy()
    grads = [rng.standard_normal(7).astype(np.float32) for _ in range(3)]
    opt, np_opt = adamcore.Adam([p], lr=0.1), adamcore.Adam([np_p], lr=0.1)
    for g in grads:
        out = opt.step([xp.asarray(g)])
        np_opt.step([g])
    assert out[0] is p  # updated in place: strict arrays are writeable
    np.testing.assert_array_equal(np.asarray(p), np_p)  # the same numbers, bit for bit


def test_threads_setting_and_bit_identical_results(rng):
    before = adamcore.get_num_threads()
    shapes = [(70001,), (3,), (50000, 3), (1,)]
    start = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    results = []
    try:
        for threads in (1, 2, 3):
            adamcore.set_num_threads(threads)
            assert adamcore.get_num_threads() == threads
            params = [s.copy() for s in start]
            opt = adamcore.AdamW(params, lr=0.1, amsgrad=True)
            for _ in range(3):
                opt.step(grads)
            results.append(params)
    finally:
        adamcore.set_num_threads(before)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        adamcore.set_num_threads(0)


def test_simd_level_functions():
    assert adamcore.get_simd_level() in adamcore.available_simd_levels()
    assert "baseline" in adamcore.compiled_simd_levels()
    assert set(adamcore.available_simd_levels()) <= set(adamcore.compiled_simd_levels())
    with pytest.raises(ValueError, match="not compiled in or not supported"):
        adamcore.set_simd_level("sse9")


def test_repr_lists_groups(rng):
    text = repr(adamcore.AdamW(_params(rng), lr=0.25))
    assert text.startswith("AdamW (") and "lr: 0.25" in text
