"""Threads: separate optimizers stepped at once agree with sequential runs (the core releases the
GIL, so their kernels really do overlap); one optimizer used from two threads at once is refused
with a RuntimeError, and never left half-updated."""

import threading
import time

import numpy as np
import pytest

import adamcore

THREADS = 8
STEPS = 12


def _problem(seed, kind):
    """Params and a fixed sequence of grads; sizes big enough that the core starts its threads."""
    rng = np.random.default_rng(seed)
    shapes = [(70_000,), (33, 17), ()] if kind == "numpy" else [(70_000,), (40, 9)]
    params = [np.asarray(rng.standard_normal(s), dtype=np.float32) for s in shapes]
    params.append(rng.standard_normal((300, 4)).T)  # a strided float64 view
    grads = [[np.asarray(rng.standard_normal(p.shape), dtype=p.dtype) for p in params]
             for _ in range(STEPS)]
    if kind == "torch":
        torch = pytest.importorskip("torch")
        params = [torch.from_numpy(np.ascontiguousarray(p)) for p in params]
        grads = [[torch.from_numpy(np.ascontiguousarray(g)) for g in gs] for gs in grads]
    return params, grads


def _run(seed, kind, barrier=None):
    params, grads = _problem(seed, kind)
    opt = adamcore.AdamW(params, lr=1e-2, amsgrad=seed % 2 == 0)
    for gs in grads:
        if barrier is not None:
            barrier.wait()  # every thread in the core at the same moment, step after step
        opt.step(gs)
    return [np.array(p.numpy() if kind == "torch" else p) for p in params]


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_separate_optimizers_in_threads_match_sequential(kind):
    if kind == "torch":
        pytest.importorskip("torch")
    expected = [_run(seed, kind) for seed in range(THREADS)]
    results, errors = [None] * THREADS, []
    barrier = threading.Barrier(THREADS)

    def worker(k):
        try:
            results[k] = _run(k, kind, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(results, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_the_core_releases_the_gil():
    """While one thread is inside a long step, another thread's Python code keeps running."""
    n = 1 << 24  # one thread on 16M elements: tens of milliseconds on any machine
    p, g = np.zeros(n, np.float32), np.ones(n, np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    window, done = [], threading.Event()

    def stepper():
        t0 = time.perf_counter()
        adamcore.adam_step(p, g, m, v, step=1, lr=1e-3)
        window.extend([t0, time.perf_counter()])
        done.set()

    threads_before = adamcore.get_num_threads()
    adamcore.set_num_threads(1)
    try:
        t = threading.Thread(target=stepper)
        stamps = []
        t.start()
        while not done.is_set():  # busy Python code: runs only while the GIL is free
            stamps.append(time.perf_counter())
        t.join()
    finally:
        adamcore.set_num_threads(threads_before)
    t0, t1 = window
    margin = (t1 - t0) * 0.1
    inside = sum(t0 + margin < s < t1 - margin for s in stamps)
    # with the GIL held through the kernels, no stamp falls inside the step
    assert inside > 100, (inside, t1 - t0)


def _parked_step(opt, grads, armed):
    """Starts opt.step(grads) in a thread and returns once that thread is inside the step.

    The optimizer's lr is a schedule that, once armed, blocks until released: step() calls it
    after taking the optimizer, on the general and on the steady path alike.
    """
    entered, release, errors = armed

    def run():
        try:
            opt.step(grads)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=run)
    t.start()
    assert entered.wait(10)
    return t


def _blocking_schedule():
    entered, release, armed = threading.Event(), threading.Event(), threading.Event()

    def lr(count):
        if armed.is_set() and not entered.is_set():
            entered.set()
            release.wait(10)
        return 0.1

    return lr, armed, (entered, release, [])


@pytest.mark.parametrize("call", ["step", "load_state_dict", "state_dict", "add_param_group"])
def test_second_thread_is_refused_while_one_steps(call):
    params = [np.ones(5, np.float32), np.ones(3, np.float32)]
    lr, armed, parking = _blocking_schedule()
    opt = adamcore.Adam(params, lr=lr)
    grads = [np.ones(5, np.float32), np.ones(3, np.float32)]
    opt.step(grads)
    saved = {k: {kk: np.array(vv) for kk, vv in s.items()} for k, s in opt.state.items()}
    sd = opt.state_dict()
    armed.set()
    t = _parked_step(opt, grads, parking)
    _, release, errors = parking
    try:
        actions = {
            "step": lambda: opt.step(grads),
            "load_state_dict": lambda: opt.load_state_dict(sd),
            "state_dict": opt.state_dict,
            "add_param_group": lambda: opt.add_param_group({"params": [np.ones(2, np.float32)]}),
        }
        with pytest.raises(RuntimeError, match=rf"Adam\.{call}\(\) was called while another "
                                               "thread is inside"):
            actions[call]()
        # the refused call changed nothing: the parked step has not written yet
        for k, s in saved.items():
            assert opt.state[k]["step"] == s["step"]
            np.testing.assert_array_equal(opt.state[k]["exp_avg"], s["exp_avg"])
        assert len(opt.param_groups) == 1
    finally:
        release.set()
        t.join()
    assert not errors
    assert opt.state[0]["step"] == 2  # exactly one more step: the parked one
    opt.step(grads)  # and the lock was released
    assert opt.state[0]["step"] == 3


def test_lock_is_released_when_step_raises():
    opt = adamcore.Adam([np.ones(3, np.float32)])
    with pytest.raises(ValueError):
        opt.step([np.ones(4, np.float32)])
    opt.step([np.ones(3, np.float32)])
    assert opt.state[0]["step"] == 1


def test_hammering_one_optimizer_never_corrupts():
    """Many threads race for one optimizer: each call either runs whole or is refused."""
    n = 50_000
    p = np.zeros(n, np.float32)
    opt = adamcore.Adam([p], lr=1e-3)
    g = np.ones(n, np.float32)
    ran, refused = [0] * 4, [0] * 4
    start = threading.Barrier(4)

    def worker(k):
        start.wait()
        for _ in range(200):
            try:
                opt.step([g])
                ran[k] += 1
            except RuntimeError as e:
                assert "another thread" in str(e)
                refused[k] += 1

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(ran)
    assert opt.state[0]["step"] == total
    # the same number of sequential steps gives the same bits
    q = np.zeros(n, np.float32)
    ref = adamcore.Adam([q], lr=1e-3)
    for _ in range(total):
        ref.step([g])
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(opt.state[0]["exp_avg_sq"], ref.state[0]["exp_avg_sq"])
