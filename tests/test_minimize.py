"""adamcore.minimize and adamcore.scipy_adam: convergence, SciPy's conventions, bad input."""

import subprocess
import sys

import numpy as np
import pytest

import adamcore

ROSEN_X0 = (-1.2, 1.0)
ROSEN_OPTIONS = {"lr": 0.05, "maxiter": 5000}  # converges (gtol 1e-6) in about 2400 steps


def rosen(x):
    return float(np.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2))


def rosen_der(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


def quadratic(center):
    """0.5 |x - center|^2 with its gradient, for jac=True."""
    center = np.asarray(center)
    return lambda x: (0.5 * float(np.sum((x - center) ** 2)), x - center)


def record_iterates(into):
    def callback(intermediate_result):
        into.append(intermediate_result.x)
    return callback


# --------------------------------------------------------------------------------- convergence
def test_rosenbrock_converges_to_the_minimum():
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, **ROSEN_OPTIONS)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)
    assert res.success and res.status == 0
    assert "gtol" in res.message
    assert 0 < res.nit < ROSEN_OPTIONS["maxiter"]
    assert res.nfev == res.njev == res.nit + 1  # every iterate evaluated once, x0 included
    # fun and jac are those of the returned x, as in SciPy
    assert res.fun == rosen(res.x)
    np.testing.assert_array_equal(res.jac, rosen_der(res.x))
    assert np.max(np.abs(res.jac)) <= 1e-6
    assert res.x.dtype == np.float64 and res.x.shape == (2,)


def test_jac_true_gives_the_same_run_as_a_gradient_function():
    a = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, **ROSEN_OPTIONS)
    b = adamcore.minimize(lambda x: (rosen(x), rosen_der(x)), ROSEN_X0, jac=True,
                          **ROSEN_OPTIONS)
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.nit, a.nfev, a.njev, a.fun) == (b.nit, b.nfev, b.njev, b.fun)


def test_the_run_is_adam_steps_through_the_core():
    """Every iterate equals a hand-written adamcore.Adam loop, bit for bit (float32 here)."""
    x0 = np.array([0.3, -2.0, 1.5], dtype=np.float32)
    target = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    schedule = lambda count: 0.1 / (1 + count)  # noqa: E731
    seen = []
    res = adamcore.minimize(lambda x: float(np.sum((x - target) ** 2)), x0,
                            jac=lambda x: 2 * (x - target), lr=schedule, maxiter=40, gtol=0,
                            amsgrad=True, weight_decay=0.01, callback=record_iterates(seen))
    x = x0.copy()
    opt = adamcore.Adam([x], lr=schedule, amsgrad=True, weight_decay=0.01)
    for k in range(40):
        opt.step([2 * (x - target)])
        np.testing.assert_array_equal(seen[k], x)
    np.testing.assert_array_equal(res.x, x)
    assert res.x.dtype == np.float32


def test_finite_differences_when_no_gradient_is_given():
    res = adamcore.minimize(rosen, ROSEN_X0, **ROSEN_OPTIONS)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)
    n = 2
    assert res.njev == res.nit + 1
    assert res.nfev == (n + 1) * (res.nit + 1)  # forward: one extra call per coordinate
    central = adamcore.minimize(rosen, ROSEN_X0, jac="3-point", **ROSEN_OPTIONS)
    np.testing.assert_allclose(central.x, [1.0, 1.0], atol=1e-2)
    assert central.nfev == (2 * n + 1) * (central.nit + 1)


@pytest.mark.parametrize("jac, rtol", [("2-point", 1e-6), ("3-point", 1e-9)])
def test_finite_difference_gradient_is_accurate(jac, rtol):
    x0 = np.array([[0.5, -1.5], [2.0, 3.0]])
    res = adamcore.minimize(lambda x: rosen(x.ravel()), x0, jac=jac, maxiter=0)
    assert res.fun == rosen(x0.ravel())
    np.testing.assert_allclose(res.jac, rosen_der(x0.ravel()).reshape(2, 2), rtol=rtol)


def test_maxiter_reached_is_not_success():
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=100)
    assert not res.success and res.status == 1
    assert res.message == "Maximum number of iterations has been exceeded."
    assert res.nit == 100 and res.nfev == res.njev == 101
    assert res.fun == rosen(res.x)


def test_maxiter_zero_only_evaluates_x0():
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=0)
    np.testing.assert_array_equal(res.x, ROSEN_X0)
    assert res.nit == 0 and res.nfev == 1 and res.fun == rosen(np.array(ROSEN_X0))


def test_stochastic_objective_runs_maxiter_steps():
    rng = np.random.default_rng(0)
    center = np.array([1.0, -2.0, 0.5])

    def noisy(x):  # a minibatch-like gradient: the true one plus noise
        return 0.5 * float(np.sum((x - center) ** 2)), x - center + rng.normal(0, 0.3, 3)

    decay = lambda count: 0.05 / (1 + count / 100)  # noqa: E731  (noise needs a decaying lr)
    res = adamcore.minimize(noisy, np.zeros(3), jac=True, lr=decay, maxiter=3000, gtol=0,
                            ftol=None)
    assert res.nit == 3000 and res.nfev == 3001
    assert res.success and res.status == 0 and "Completed" in res.message
    np.testing.assert_allclose(res.x, center, atol=0.1)


def test_ftol_stops_when_the_value_stalls():
    res = adamcore.minimize(quadratic([3.0, -1.0]), [0.0, 0.0], jac=True, lr=0.1, gtol=0,
                            ftol=1e-10, maxiter=100_000)
    assert res.success and res.status == 0 and "ftol" in res.message
    assert res.nit < 100_000
    np.testing.assert_allclose(res.x, [3.0, -1.0], atol=1e-3)


def test_l2_weight_decay_is_part_of_the_gtol_test():
    # Adam with L2 minimizes 0.5|x - c|^2 + wd/2 |x|^2, whose minimum is c / (1 + wd)
    c, wd = np.array([2.0, -4.0]), 0.5
    res = adamcore.minimize(quadratic(c), np.zeros(2), jac=True, lr=0.05, weight_decay=wd,
                            maxiter=20_000, gtol=1e-7)
    assert res.success and "gtol" in res.message
    np.testing.assert_allclose(res.x, c / (1 + wd), atol=1e-6)
    np.testing.assert_allclose(res.jac, res.x - c)  # fun's own gradient, without the penalty


@pytest.mark.parametrize("shape", [(), (1,), (3, 4), (2, 1, 3)])
def test_x_of_any_shape(shape):
    rng = np.random.default_rng(1)
    center = rng.normal(size=shape)
    res = adamcore.minimize(quadratic(center), np.zeros(shape), jac=True, lr=0.05,
                            maxiter=20_000, gtol=1e-8)
    assert res.success and res.x.shape == shape and res.jac.shape == shape
    np.testing.assert_allclose(res.x, center, atol=1e-7)


def test_float32_stays_float32():
    x0 = np.array(ROSEN_X0, dtype=np.float32)
    dtypes = set()

    def fun(x):
        dtypes.add(x.dtype)
        return rosen(x), rosen_der(x.astype(np.float64))  # a float64 gradient is cast

    res = adamcore.minimize(fun, x0, jac=True, lr=0.05, maxiter=5000, gtol=1e-4)
    assert res.x.dtype == np.float32 and res.jac.dtype == np.float32
    assert dtypes == {np.dtype(np.float32)}
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)


def test_float16_stays_float16_with_float32_gradients():
    def fun(x):  # the core takes float32 gradients for 16-bit x without rounding them
        assert x.dtype == np.float16
        d = x.astype(np.float32) - 0.5
        return float(d @ d), 2 * d

    res = adamcore.minimize(fun, np.zeros(3, np.float16), jac=True, lr=0.01, maxiter=500,
                            gtol=1e-2)
    assert res.x.dtype == np.float16 and res.jac.dtype == np.float32 and res.success
    np.testing.assert_allclose(res.x, 0.5, atol=5e-3)


def test_integer_x0_becomes_float64_and_x0_is_not_changed():
    x0 = np.array([-1, 1])
    res = adamcore.minimize(rosen, x0, jac=rosen_der, maxiter=5)
    assert res.x.dtype == np.float64
    np.testing.assert_array_equal(x0, [-1, 1])
    x0 = np.array(ROSEN_X0)
    adamcore.minimize(rosen, x0, jac=rosen_der, maxiter=5)
    np.testing.assert_array_equal(x0, ROSEN_X0)


def test_fun_gets_a_read_only_x_and_a_gradient_aliasing_x_is_safe():
    def fun(x):
        assert not x.flags.writeable
        return 0.5 * float(x @ x), x  # the gradient is x itself: a view of the iterate
    res = adamcore.minimize(fun, [1.0, -2.0], jac=True, lr=0.05, maxiter=20_000, gtol=1e-9)
    assert res.success
    np.testing.assert_allclose(res.x, 0.0, atol=1e-8)


def test_args_reach_fun_and_jac():
    c = np.array([0.5, 0.25])
    res = adamcore.minimize(lambda x, c, s: s * float(np.sum((x - c) ** 2)), [0.0, 0.0],
                            (c, 2.0), jac=lambda x, c, s: 2 * s * (x - c), lr=0.05,
                            maxiter=10_000, gtol=1e-9)
    np.testing.assert_allclose(res.x, c, atol=1e-8)


# ------------------------------------------------------------------------------------ callback
def test_callback_gets_an_intermediate_result_each_iteration():
    seen = []

    def callback(intermediate_result):
        seen.append((intermediate_result.nit, intermediate_result.x, intermediate_result.fun))

    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=30,
                            callback=callback)
    assert [nit for nit, _, _ in seen] == list(range(1, 31))
    for _, x, f in seen:
        assert f == rosen(x)  # fun belongs to x
    assert len({id(x) for _, x, _ in seen}) == 30  # copies: keeping them is safe
    assert not np.array_equal(seen[0][1], seen[-1][1])
    np.testing.assert_array_equal(seen[-1][1], res.x)


def test_legacy_callback_gets_a_copy_of_x():
    seen = []
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=10,
                            callback=lambda xk: seen.append(xk))
    assert len(seen) == 10 and all(isinstance(x, np.ndarray) for x in seen)
    assert not np.array_equal(seen[0], seen[-1])
    np.testing.assert_array_equal(seen[-1], res.x)


@pytest.mark.parametrize("style", ["intermediate_result", "legacy"])
def test_stop_iteration_in_the_callback_stops_cleanly(style):
    seen = []

    def record(x):
        seen.append(x)
        if len(seen) == 7:
            raise StopIteration

    if style == "legacy":
        callback = record
    else:
        def callback(intermediate_result):
            record(intermediate_result.x)

    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=1000,
                            callback=callback)
    assert res.nit == 7 and res.nfev == 8
    assert not res.success and res.status == 99
    assert res.message == "`callback` raised `StopIteration`."
    np.testing.assert_array_equal(res.x, seen[-1])
    assert res.fun == rosen(res.x)


# -------------------------------------------------------------------------------------- bounds
def _bounds_object(lo, hi):
    optimize = pytest.importorskip("scipy.optimize")
    return optimize.Bounds(lo, hi)


@pytest.mark.parametrize("form", ["pairs", "Bounds"])
def test_bounds_hold_at_every_iterate(form):
    lo, hi = np.array([-np.inf, -0.5]), np.array([0.8, 0.6])
    bounds = [(None, 0.8), (-0.5, 0.6)] if form == "pairs" else _bounds_object(lo, hi)
    seen = []
    res = adamcore.minimize(rosen, [-1.2, 1.0], jac=rosen_der, lr=0.05, maxiter=4000,
                            bounds=bounds, callback=lambda xk: seen.append(xk))
    assert len(seen) == res.nit
    for x in seen:
        assert np.all(x >= lo) and np.all(x <= hi)
    # x0 was outside (1.0 > 0.6) and was clipped; the box optimum has x[1] at its bound 0.6
    assert res.x[1] == 0.6
    # the projected gradient vanishes there, so gtol stops the run (as L-BFGS-B's pgtol)
    assert res.success and "gtol" in res.message
    # and x[0] minimizes 100 (0.6 - a^2)^2 + (1 - a)^2: a root of 400 a^3 - 238 a - 2
    a = max(np.roots([400.0, 0.0, -238.0, -2.0]).real)
    np.testing.assert_allclose(res.x[0], a, atol=1e-6)


def test_float32_bounds_are_rounded_inward():
    seen = []
    x0 = np.array([0.2, 0.2], dtype=np.float32)  # pushed up into hi = 0.3, down into lo = 0.1
    res = adamcore.minimize(quadratic(np.array([1.0, -1.0], np.float32)), x0, jac=True, lr=0.05,
                            maxiter=200, bounds=[(0.1, 0.3), (0.1, 0.3)],
                            callback=lambda xk: seen.append(xk))
    for x in seen:  # compared in float64: float32(0.3) > 0.3 would break the bound
        assert np.all(x.astype(np.float64) <= 0.3) and np.all(x.astype(np.float64) >= 0.1)
    assert res.x.dtype == np.float32
    assert res.x[0] == np.nextafter(np.float32(0.3), np.float32(0))
    assert res.x[1] == np.float32(0.1) or res.x[1] == np.nextafter(np.float32(0.1), np.float32(1))


@pytest.mark.parametrize("jac", ["2-point", "3-point"])
def test_finite_differences_stay_inside_the_bounds(jac):
    def fun(x):  # think of a log barrier: undefined outside the box
        assert x[0] >= 0.0 and 0.0 <= x[1] <= 1.0
        return float((x[0] + 1.0) ** 2 + (x[1] - 2.0) ** 2)  # minimum outside, at (-1, 2)

    res = adamcore.minimize(fun, [0.0, 1.0], jac=jac, lr=0.05, maxiter=50,
                            bounds=[(0.0, None), (0.0, 1.0)])
    np.testing.assert_array_equal(res.x, [0.0, 1.0])  # the box's corner
    np.testing.assert_allclose(res.jac, [2.0, -2.0], rtol=1e-6)  # one-sided, inward
    assert res.success  # the projected gradient is 0 at the corner


def test_bounds_for_a_multidimensional_x():
    x0 = np.zeros((2, 2))
    pairs = [(None, None), (0.0, 0.1), (-0.1, 0.0), (None, None)]
    res = adamcore.minimize(quadratic(np.ones((2, 2))), x0, jac=True, lr=0.05, maxiter=2000,
                            bounds=pairs)
    np.testing.assert_allclose(res.x, [[1.0, 0.1], [0.0, 1.0]], atol=1e-4)


# ------------------------------------------------------------------------------------ SciPy path
def test_scipy_method_gives_the_same_iterates_as_minimize():
    optimize = pytest.importorskip("scipy.optimize")
    options = {"lr": 0.05, "maxiter": 300, "betas": (0.8, 0.99), "amsgrad": True, "gtol": 1e-5}
    bounds = [(-1.0, 0.9), (None, 0.95)]
    ours, theirs = [], []
    a = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, bounds=bounds,
                          callback=record_iterates(ours), **options)
    b = optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, method=adamcore.scipy_adam,
                          bounds=bounds, callback=record_iterates(theirs), options=options)
    assert isinstance(b, optimize.OptimizeResult)
    assert len(ours) == len(theirs) == a.nit == b.nit
    for x, y in zip(ours, theirs):
        np.testing.assert_array_equal(x, y)
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "success", "status", "message"):
        np.testing.assert_array_equal(a[key], b[key])


def test_scipy_method_with_jac_true_and_float32():
    optimize = pytest.importorskip("scipy.optimize")
    x0 = np.array(ROSEN_X0, np.float32)
    fg = lambda x: (rosen(x), rosen_der(x))  # noqa: E731
    a = adamcore.minimize(fg, x0, jac=True, lr=0.05, maxiter=500)
    b = optimize.minimize(fg, x0, jac=True, method=adamcore.scipy_adam,
                          options={"lr": 0.05, "maxiter": 500})
    assert b.x.dtype == np.float32
    np.testing.assert_array_equal(a.x, b.x)
    assert (a.nit, a.nfev, a.njev) == (b.nit, b.nfev, b.njev)


def test_scipy_method_options():
    optimize = pytest.importorskip("scipy.optimize")
    # tol sets gtol, as it does for BFGS
    res = optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, method=adamcore.scipy_adam,
                            tol=1e-2, options={"lr": 0.05, "maxiter": 5000})
    assert res.success and np.max(np.abs(res.jac)) <= 1e-2
    with pytest.warns(optimize.OptimizeWarning, match="Unknown solver options: colour"):
        optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, method=adamcore.scipy_adam,
                          options={"maxiter": 3, "colour": "red"})
    with pytest.warns(RuntimeWarning, match="first order"):
        optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, hess=optimize.rosen_hess,
                          method=adamcore.scipy_adam, options={"maxiter": 3})
    with pytest.raises(ValueError, match="constraints"):
        optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, method=adamcore.scipy_adam,
                          constraints=[{"type": "ineq", "fun": lambda x: x[0]}])


def test_scipy_method_finite_differences():
    optimize = pytest.importorskip("scipy.optimize")
    res = optimize.minimize(rosen, ROSEN_X0, method=adamcore.scipy_adam, options=ROSEN_OPTIONS)
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)
    assert res.nfev == 3 * (res.nit + 1)


def test_scipy_method_inside_basinhopping():
    """SciPy's global optimizers take a custom local method; the first local run, from x0,
    already finds the minimum, so the random hops cannot make the result worse."""
    optimize = pytest.importorskip("scipy.optimize")
    res = optimize.basinhopping(rosen, ROSEN_X0, niter=2, minimizer_kwargs={
        "method": adamcore.scipy_adam, "jac": rosen_der, "options": ROSEN_OPTIONS})
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-2)


def test_result_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)  # `from scipy.optimize` now fails
    seen = []
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=20,
                            callback=lambda intermediate_result: seen.append(intermediate_result))
    assert type(res).__module__ == "adamcore._minimize" and isinstance(res, dict)
    assert set(res) == {"x", "fun", "jac", "nit", "nfev", "njev", "success", "status", "message"}
    assert res.nit == res["nit"] == 20 and res.status == 1 and not res.success
    assert "nit:" in repr(res) and "nit" in dir(res)
    res.extra = 1
    assert res["extra"] == 1
    with pytest.raises(AttributeError):
        res.hess_inv  # noqa: B018
    assert seen[0].x.shape == (2,) and seen[0].nit == 1


def test_importing_adamcore_does_not_import_scipy():
    code = "import sys, adamcore; assert 'scipy' not in sys.modules, 'scipy was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------- progress and disp
def test_progress_bar_with_tqdm(capsys):
    pytest.importorskip("tqdm")
    adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=50, progress=True)
    err = capsys.readouterr().err
    assert "50/50" in err and "loss=" in err


def test_progress_without_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=50, progress=True)
    err = capsys.readouterr().err
    assert f"adamcore.minimize: 50/50 iterations, loss {res.fun:.6g}" in err


def test_disp_prints_the_summary(capsys):
    adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=5, disp=True)
    out = capsys.readouterr().out
    assert "Maximum number of iterations" in out and "Iterations: 5" in out


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("x0, error, match", [
    ("abc", TypeError, "real numbers"),
    (["a", "b"], TypeError, "real numbers"),
    ([1.0, None], TypeError, "real numbers"),
    ([[1.0, 2.0], [3.0]], TypeError, "x0 must be an array"),
    (np.array([1 + 2j, 0]), TypeError, "complex"),
    (np.array([True, False]), TypeError, "real numbers"),
    (np.array([1.0, np.nan]), ValueError, "inf or NaN"),
    (np.array([1.0], dtype=np.longdouble), TypeError, "float16, float32 or float64"),
])
def test_bad_x0(x0, error, match):
    if isinstance(x0, np.ndarray) and x0.dtype == np.longdouble and np.longdouble == np.float64:
        pytest.skip("longdouble is float64 on this platform")
    with pytest.raises(error, match=match):
        adamcore.minimize(lambda x: 0.0, x0, jac=np.zeros_like)


def test_nan_objective_names_the_iteration():
    calls = []

    def fun(x):
        calls.append(1)
        return np.nan if len(calls) == 6 else rosen(x)

    with pytest.raises(FloatingPointError, match=r"fun returned nan at iteration 5\b"):
        adamcore.minimize(fun, ROSEN_X0, jac=rosen_der, maxiter=100)
    with pytest.raises(FloatingPointError, match="fun returned inf at iteration 0"):
        adamcore.minimize(lambda x: np.inf, ROSEN_X0, jac=rosen_der)
    # a step size that blows up reaches inf/NaN: the message says so, and when
    with pytest.raises(FloatingPointError, match=r"iteration \d+.*lr"), \
            np.errstate(over="ignore"):
        adamcore.minimize(lambda x: float(np.exp(x @ x)), [1.0, 1.0],
                          jac=lambda x: 2 * x * np.exp(x @ x), lr=50.0, maxiter=1000)


def test_nan_gradient_names_the_iteration():
    def jac(x):
        jac.calls += 1
        return np.array([np.nan, 0.0]) if jac.calls == 4 else rosen_der(x)
    jac.calls = 0
    with pytest.raises(FloatingPointError, match="gradient at iteration 3 holds inf or NaN"):
        adamcore.minimize(rosen, ROSEN_X0, jac=jac, maxiter=100)


@pytest.mark.parametrize("maxiter, error", [(-1, ValueError), (2.5, TypeError),
                                            ("10", TypeError), (True, TypeError)])
def test_bad_maxiter(maxiter, error):
    with pytest.raises(error, match="maxiter must be an integer >= 0"):
        adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=maxiter)


def test_maxiter_as_an_integral_float():
    assert adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=1e1).nit == 10


def test_gradient_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"gradient at iteration 0 has shape \(3,\) but x has "
                                         r"shape \(2,\)"):
        adamcore.minimize(rosen, ROSEN_X0, jac=lambda x: np.zeros(3))
    with pytest.raises(ValueError, match=r"shape \(1, 2\)"):
        adamcore.minimize(lambda x: (rosen(x), rosen_der(x)[None]), ROSEN_X0, jac=True)


@pytest.mark.parametrize("fun, jac, error, match", [
    (lambda x: np.ones(2), rosen_der, ValueError, "fun must return a scalar"),
    (lambda x: 1j, rosen_der, TypeError, "fun must return a real number"),
    (lambda x: "1", rosen_der, TypeError, "fun must return a real number"),
    (rosen, lambda x: np.ones(2, complex), TypeError, "complex"),
    (rosen, True, TypeError, r"with jac=True, fun must return \(value, gradient\)"),
    (rosen, "cs", ValueError, "jac must be"),
    (rosen, 3, TypeError, "jac must be"),
    ("rosen", rosen_der, TypeError, "fun must be callable"),
])
def test_bad_objective(fun, jac, error, match):
    with pytest.raises(error, match=match):
        adamcore.minimize(fun, ROSEN_X0, jac=jac, maxiter=3)


@pytest.mark.parametrize("bounds, error, match", [
    ([(0.0, 1.0)], ValueError, "1 .* pairs but x0 has 2 elements"),
    ([(1.0, 0.0), (None, None)], ValueError, r"element 0 are \(1.0, 0.0\)"),
    ([(0.0, 1.0), (None, np.nan)], ValueError, "element 1"),
    ([(0.0, 1.0), (0.0,)], ValueError, r"bounds\[1\] must be a pair"),
    ([(0.0, 1.0), ("a", 1.0)], ValueError, r"bounds\[1\] must be a pair"),
    (5.0, TypeError, "bounds must be"),
])
def test_bad_bounds(bounds, error, match):
    with pytest.raises(error, match=match):
        adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, bounds=bounds)


def test_bad_bounds_object():
    bounds = _bounds_object([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=r"Bounds.lb has shape \(3,\)"):
        adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, bounds=bounds)


@pytest.mark.parametrize("options, error, match", [
    ({"lr": -1.0}, ValueError, "lr"),
    ({"betas": (0.9, 1.0)}, ValueError, "betas"),
    ({"gtol": -1.0}, ValueError, "gtol must be a number >= 0"),
    ({"ftol": "x"}, TypeError, "ftol must be a number"),
    ({"callback": 3}, TypeError, "callback must be callable"),
])
def test_bad_options(options, error, match):
    calls = []
    with pytest.raises(error, match=match):
        adamcore.minimize(lambda x: calls.append(1) or rosen(x), ROSEN_X0, jac=rosen_der,
                          **options)
    assert not calls  # checked before fun is first called


# ------------------------------------------------------- scipy.optimize.minimize's own signature
def test_the_same_call_works_with_scipy_and_adamcore():
    """scipy.optimize.minimize's arguments, positional and keyword, give adamcore the run that
    scipy.optimize.minimize(method=adamcore.scipy_adam) gives (main refused tol/options)."""
    optimize = pytest.importorskip("scipy.optimize")
    ours, theirs = [], []
    call = dict(jac=rosen_der, bounds=[(-2.0, 2.0), (None, 1.5)], tol=1e-5,
                options={"maxiter": 4000, "lr": 0.05, "disp": False})
    a = adamcore.minimize(rosen, ROSEN_X0, (), None, callback=record_iterates(ours), **call)
    b = optimize.minimize(rosen, ROSEN_X0, (), adamcore.scipy_adam,
                          callback=record_iterates(theirs), **call)
    assert a.success and "gtol" in a.message and np.max(np.abs(a.jac)) <= 1e-5
    assert len(ours) == len(theirs) == a.nit == b.nit
    for key in ("x", "fun", "jac", "nit", "nfev", "njev", "success", "status", "message"):
        np.testing.assert_array_equal(a[key], b[key])
    # and SciPy's own methods take the same arguments
    assert optimize.minimize(rosen, ROSEN_X0, method="L-BFGS-B", jac=rosen_der,
                             bounds=call["bounds"], tol=1e-5).success


@pytest.mark.parametrize("method", [None, "adam", "Adam", adamcore.scipy_adam])
def test_method_adam_in_every_spelling(method):
    a = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=50)
    b = adamcore.minimize(rosen, ROSEN_X0, method=method, jac=rosen_der,
                          options={"lr": 0.05, "maxiter": 50})
    np.testing.assert_array_equal(a.x, b.x)
    assert a.nit == b.nit == 50


@pytest.mark.parametrize("method", ["BFGS", "nelder-mead", print])
def test_other_methods_are_refused(method):
    with pytest.raises(ValueError, match="runs Adam only.*scipy.optimize.minimize"):
        adamcore.minimize(rosen, ROSEN_X0, method=method, jac=rosen_der)


def test_tol_sets_gtol_unless_gtol_is_given():
    loose = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, tol=1e-2, lr=0.05, maxiter=5000)
    assert loose.success and np.max(np.abs(loose.jac)) <= 1e-2
    default = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, maxiter=5000)
    assert loose.nit < default.nit
    both = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, tol=1e-2, gtol=1e-6, lr=0.05,
                             maxiter=5000)
    assert both.nit == default.nit
    in_options = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, tol=1e-2,
                                   options={"gtol": 1e-6, "lr": 0.05, "maxiter": 5000})
    assert in_options.nit == default.nit


def test_options_dict(capsys):
    a = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, betas=(0.8, 0.99),
                          amsgrad=True, maxiter=30, disp=True)
    first = capsys.readouterr().out
    b = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, lr=0.05, options={
        "betas": (0.8, 0.99), "amsgrad": True, "maxiter": 30, "disp": True})
    assert capsys.readouterr().out == first and "Iterations: 30" in first
    np.testing.assert_array_equal(a.x, b.x)
    with pytest.raises(TypeError, match="maxiter given both as a keyword and in options"):
        adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, maxiter=5, options={"maxiter": 6})
    with pytest.raises(TypeError, match="options must be a dict"):
        adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der, options=5)


def test_unknown_options_warn_as_scipy_does():
    optimize = pytest.importorskip("scipy.optimize")
    with pytest.warns(optimize.OptimizeWarning, match="Unknown solver options: xrtol"):
        res = adamcore.minimize(rosen, ROSEN_X0, jac=rosen_der,
                                options={"maxiter": 3, "xrtol": 1e-3})
    assert res.nit == 3


@pytest.mark.parametrize("keyword, value, match", [
    ("hess", lambda x: np.eye(2), "first order .* does not use hess"),
    ("hessp", lambda x, p: p, "does not use hessp"),
    ("constraints", [{"type": "ineq", "fun": lambda x: x[0]}], "not general constraints"),
    ("constraints", {"type": "ineq", "fun": lambda x: x[0]}, "not general constraints"),
])
def test_second_order_arguments_and_constraints_are_refused(keyword, value, match):
    calls = []
    with pytest.raises(ValueError, match=match):
        adamcore.minimize(lambda x: calls.append(1) or rosen(x), ROSEN_X0, jac=rosen_der,
                          **{keyword: value})
    assert not calls


def test_complex_step_is_refused_clearly():
    with pytest.raises(ValueError, match="jac='cs'.*not supported"):
        adamcore.minimize(rosen, ROSEN_X0, jac="cs")


def test_scipy_new_style_callback_stop_iteration_through_scipy():
    optimize = pytest.importorskip("scipy.optimize")
    seen = []

    def callback(intermediate_result):
        seen.append(intermediate_result)
        if intermediate_result.nit == 5:
            raise StopIteration

    res = optimize.minimize(rosen, ROSEN_X0, jac=rosen_der, method=adamcore.scipy_adam,
                            tol=1e-8, options={"maxiter": 100, "lr": 0.05}, callback=callback)
    assert isinstance(res, optimize.OptimizeResult) and isinstance(seen[0], optimize.OptimizeResult)
    assert res.nit == 5 and res.status == 99 and not res.success
    assert res.message == "`callback` raised `StopIteration`."
    assert {"x", "fun", "jac", "nit", "nfev", "njev", "status", "success", "message"} <= set(res)
