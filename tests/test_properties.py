"""Property tests (hypothesis): random shapes, layouts, dtypes, hyperparameters and values, on
every backend of this machine, against two oracles.

1. Bit for bit: adamcore._reference.adam_update run in NumPy on copies in the same dtypes
   (fuzz_arrays.NumpyMirror) performs update.h's float operations in the same order, so every
   backend (the kernels at every SIMD level, dense and strided; the Array-API path) must give
   identical numbers, inf, NaN, signed zeros and subnormals included.
2. Within a derived bound: the float64 textbook (tests/textbook.py). The bound is the
   first-order propagation of float32 (or float64) rounding through the update's operations
   (fuzz_arrays.step_error_bound), doubled, plus the same bound for the float64 textbook itself;
   it applies to elements whose intermediates stay in the normal range of the compute type.

And random bad input: the documented error type, with no parameter, state array, step counter
or hyperparameter changed.

By default each test runs a bounded, derandomized set of examples (CI); set
ADAMCORE_HYPOTHESIS_PROFILE=thorough for many more, randomized.
"""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import adamcore
from adamcore._hparams import step_hparams
from fuzz_arrays import (
    Layout,
    NumpyMirror,
    Placed,
    as_float64,
    bits,
    make_values,
    same_values,
    step_error_bound,
)
from textbook import adam_textbook

_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large])
settings.register_profile("adamcore-ci", max_examples=120, derandomize=True, **_common)
settings.register_profile("adamcore-thorough", max_examples=3000, **_common)
_PROFILE = os.environ.get("ADAMCORE_HYPOTHESIS_PROFILE", "ci")
if _PROFILE not in ("ci", "thorough"):
    raise ValueError(f"ADAMCORE_HYPOTHESIS_PROFILE must be ci or thorough, got {_PROFILE!r}")
PROFILE = settings.get_profile(f"adamcore-{_PROFILE}")


def budget(fraction: float) -> settings:
    """The profile with a fraction of its examples, for the slower tests."""
    return settings(PROFILE, max_examples=max(10, int(PROFILE.max_examples * fraction)))


def _importable(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


HAVE_TORCH = _importable("torch")
HAVE_STRICT = _importable("array_api_strict")
HAVE_CUDA = HAVE_TORCH and __import__("torch").cuda.is_available()
# numpy and torch CPU go to the C++ core; torch CUDA tensors to the CUDA backend (where one is
# built and a GPU seen); array_api_strict takes the pure Array-API path
LIBS = (["numpy"] + (["torch"] if HAVE_TORCH else []) + (["torch-cuda"] if HAVE_CUDA else [])
        + (["array_api_strict"] if HAVE_STRICT else []))
DTYPES = {"numpy": ["float16", "float32", "float64"],
          "torch": ["float16", "bfloat16", "float32", "float64"],
          "torch-cuda": ["float16", "bfloat16", "float32", "float64"],
          "array_api_strict": ["float32", "float64"]}
LEVELS = adamcore.available_simd_levels()


# ---- strategies -----------------------------------------------------------------------------
SIZES_1D = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 255, 513, 1000, 4097]


@st.composite
def shapes(draw):
    ndim = draw(st.integers(0, 4))
    if ndim == 0:
        return ()
    if ndim == 1:
        # now and then one big enough that the core splits it among threads
        return (draw(st.sampled_from(SIZES_1D + [70_001])),)
    return tuple(draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim)))


@st.composite
def layouts(draw, shape, lib):
    ndim = len(shape)
    if lib == "array_api_strict" or ndim == 0:
        return Layout((tuple(range(ndim))), (1,) * ndim, draw(st.sampled_from([0, 0, 1, 3])))
    order = tuple(draw(st.permutations(range(ndim))))
    step_choices = [1, 1, 1, 2, 3] + ([-1, -2] if lib == "numpy" else [])
    steps = list(draw(st.lists(st.sampled_from(step_choices), min_size=ndim, max_size=ndim)))
    offset = draw(st.sampled_from([0, 0, 1, 3]))
    if draw(st.integers(0, 9)) == 0:  # a huge stride, where the buffer stays modest
        k = draw(st.integers(0, ndim - 1))
        huge = list(steps)
        huge[k] = (1 << 17) + 1 if steps[k] > 0 else -((1 << 17) + 1)
        if Layout(order, tuple(huge), offset).geometry(shape)[0] <= 2_000_000:
            steps = huge
    return Layout(order, tuple(steps), offset)


BETAS = st.sampled_from([0.0, 1e-12, 0.5, 0.9, 0.999, 1 - 1e-9, float(np.nextafter(1.0, 0.0))]) \
    | st.floats(0.0, 1.0, exclude_max=True)


@st.composite
def hyperparameters(draw):
    lr = draw(st.sampled_from([0.0, 1e-45, 1e-6, 1e-3, 0.1, 1.0]) | st.floats(1e-6, 1.0))
    hp = dict(
        lr=lr,
        beta1=draw(BETAS),
        beta2=draw(BETAS),
        eps=draw(st.sampled_from([0.0, 1e-300, 1e-30, 1e-8, 1e-3, 1.0])),
        weight_decay=draw(st.sampled_from([0.0, 0.0, 1e-4, 0.01, 0.5])),
        decoupled_weight_decay=draw(st.booleans()),
        decouple_lr=draw(st.booleans()),
        amsgrad=draw(st.booleans()),
        maximize=draw(st.booleans()),
    )
    hp["max_lr"] = (lr if lr > 0 else 1e-3) * draw(st.sampled_from([1.0, 2.0, 10.0]))
    return hp


SPECIALS = st.sampled_from(["none", "none", "none", "tiny", "huge", "inf", "nan"])


# ---- helpers --------------------------------------------------------------------------------
def _state_dtype(dtype):
    return "float64" if dtype == "float64" else "float32"


def _strict(values, dtype):
    import array_api_strict as xp

    return xp.asarray(np.asarray(values, dtype=dtype), dtype=getattr(xp, dtype))


def _to_f64(x):
    if type(x).__module__.startswith("array_api_strict"):
        return np.from_dlpack(x).astype(np.float64)
    return as_float64(x)


class _Level:
    """Runs the CPU kernels at one SIMD level inside a with block."""

    def __init__(self, level):
        self.level = level

    def __enter__(self):
        self.before = adamcore.get_simd_level()
        adamcore.set_simd_level(self.level)

    def __exit__(self, *exc):
        adamcore.set_simd_level(self.before)


# ---- 1. one step: both oracles --------------------------------------------------------------
@st.composite
def one_step_cases(draw):
    lib = draw(st.sampled_from(LIBS))
    dtype = draw(st.sampled_from(DTYPES[lib]))
    grad_dtype = dtype
    if dtype in ("float16", "bfloat16") and draw(st.booleans()):
        grad_dtype = "float32"
    shape = draw(shapes())
    shared = draw(st.booleans())  # one layout for all arrays: the dense kernels
    first = draw(layouts(shape, lib))
    lays = [first if shared else draw(layouts(shape, lib)) for _ in range(5)]
    hp = draw(hyperparameters())
    step = draw(st.sampled_from([1, 2, 3, 10, 1000, 10**6, 2**40]))
    seed = draw(st.integers(0, 2**32 - 1))
    g_scale = draw(st.floats(-40, 40) if grad_dtype != "float16" else st.floats(-8, 4))
    p_specials = draw(st.sampled_from(["none", "none", "tiny", "huge", "nan"]))
    g_specials = draw(SPECIALS)
    level = draw(st.sampled_from(LEVELS))
    return lib, dtype, grad_dtype, shape, lays, hp, step, seed, g_scale, p_specials, \
        g_specials, level


def _place(lib, values, dtype, layout):
    if lib == "array_api_strict":
        return None, _strict(values, dtype)
    placed = Placed(lib, values, dtype, layout)
    return placed, placed.array


@PROFILE
@given(one_step_cases())
def test_one_step_matches_both_oracles(case):
    (lib, dtype, grad_dtype, shape, lays, hp, step, seed, g_scale, p_specials, g_specials,
     level) = case
    sizes = [lay.geometry(shape)[0] for lay in lays]
    assume(sum(sizes) < 3_000_000)
    rng = np.random.default_rng(seed)
    sdt = _state_dtype(dtype)
    p_vals = make_values(rng, shape, dtype, rng.uniform(-3, 2), p_specials)
    g_vals = make_values(rng, shape, grad_dtype, g_scale, g_specials)
    m_vals = make_values(rng, shape, sdt, g_scale - rng.uniform(0, 2), "none")
    v_vals = np.abs(make_values(rng, shape, sdt, g_scale - rng.uniform(0, 2), "none")) ** 2
    v_vals = np.minimum(v_vals, 1e300 if sdt == "float64" else 3e38)
    vmax_vals = np.minimum(v_vals * rng.uniform(0, 2, shape), 1e300 if sdt == "float64" else 3e38)
    arrays = [_place(lib, x, t, lay) for x, t, lay in
              zip([p_vals, g_vals, m_vals, v_vals, vmax_vals], [dtype, grad_dtype, sdt, sdt, sdt],
                  lays)]
    placed = [a for a, _ in arrays]
    p, g, m, v, vmax = (x for _, x in arrays)
    inputs = [_to_f64(x) for x in (p, g, m, v, vmax)]  # the stored values, exactly
    amsgrad = hp["amsgrad"]
    note(f"{lib} {dtype}/{grad_dtype} {shape} step={step} {hp} level={level} layouts={lays}")

    # oracle 1: the Array-API path in NumPy, same dtypes
    mirror = NumpyMirror(inputs[0], *inputs[2:], dtype)
    mirror.step(inputs[1], grad_dtype, step_hparams(_group_dict(hp, False), step))
    expected = [mirror.p, mirror.m, mirror.v, mirror.vmax]

    with _Level(level), np.errstate(all="ignore"):
        out = adamcore.adam_step(p, g, m, v, step=step, max_exp_avg_sq=vmax, **hp)
    assert out[0] is p and out[1] is m and out[2] is v
    assert (out[3] is vmax) if amsgrad else out[3] is None
    for x in placed:
        if x is not None:
            assert x.gaps_untouched(), "the step wrote outside the array's elements"
    if not amsgrad:
        assert np.array_equal(bits(_to_f64(vmax)), bits(inputs[4]))

    results = [p, m, v] + ([vmax] if amsgrad else [])
    for name, got, want in zip(["param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"], results,
                               expected):
        assert same_values(_to_f64(got), want), f"{name} differs from the Array-API path's bits"

    # oracle 2: the float64 textbook, within the derived bound
    with np.errstate(all="ignore"):
        tp, tm, tv, tvmax = adam_textbook(*inputs, step=step, **hp)
    compute = "float64" if dtype == "float64" else "float32"
    kw = dict(hp, step=step)
    ours = step_error_bound(*inputs, **kw, compute=compute, param_dtype=dtype)
    theirs = step_error_bound(*inputs, **kw, compute="float64", param_dtype="float64")
    mask = ours[4] & theirs[4]
    for k, (got, want) in enumerate(zip(results, [tp, tm, tv, tvmax])):
        bound = 2 * (ours[k] + theirs[k])
        with np.errstate(invalid="ignore"):
            err = np.abs(_to_f64(got) - want)
        bad = mask & ~(err <= bound)
        assert not bad.any(), (
            f"{['param', 'exp_avg', 'exp_avg_sq', 'max_exp_avg_sq'][k]}: error "
            f"{err[bad][:5]} beyond the bound {bound[bad][:5]} at {np.argwhere(bad)[:5].tolist()}")


# ---- 2. the optimizer over several steps: check_finite, groups, the steady path -------------
@st.composite
def optimizer_cases(draw):
    lib = draw(st.sampled_from(LIBS))
    n = draw(st.integers(1, 4))
    params = []
    for _ in range(n):
        dtype = draw(st.sampled_from(DTYPES[lib]))
        shape = draw(shapes().filter(lambda s: math.prod(s) <= 5000))
        params.append((dtype, shape, draw(layouts(shape, lib))))
    split = draw(st.integers(0, n))  # params[:split] in group 0, the rest in group 1
    groups = [draw(hyperparameters()) for _ in range(2)]
    finite = [draw(st.booleans()) for _ in range(2)]
    steps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    specials = draw(st.lists(SPECIALS, min_size=steps, max_size=steps))
    level = draw(st.sampled_from(LEVELS))
    return lib, params, split, groups, finite, steps, seed, specials, level


def _group_dict(hp, check_finite):
    d = {k: v for k, v in hp.items() if k not in ("beta1", "beta2")}
    d["betas"] = (hp["beta1"], hp["beta2"])
    d["check_finite"] = check_finite
    return d


@budget(0.4)
@given(optimizer_cases())
def test_optimizer_steps_match_reference_and_check_finite_changes_nothing(case):
    lib, specs, split, groups, finite, steps, seed, specials, level = case
    assume(sum(lay.geometry(shape)[0] for _, shape, lay in specs) < 2_000_000)
    rng = np.random.default_rng(seed)
    params = []
    for dtype, shape, lay in specs:
        _, x = _place(lib, make_values(rng, shape, dtype, 0.0, "none"), dtype, lay)
        params.append(x)
    gdicts = [_group_dict(groups[0], finite[0]), _group_dict(groups[1], finite[1])]
    param_groups = [dict(gdicts[0], params=params[:split]), dict(gdicts[1], params=params[split:])]
    param_groups = [g for g in param_groups if g["params"]]
    opt = adamcore.Adam(param_groups)
    # the mirror: the Array-API path in NumPy, stepped by hand
    mirrors = [None] * len(params)
    counts = [0] * len(params)
    which = [0 if i < split else 1 for i in range(len(params))]
    for t in range(1, steps + 1):
        grads = []
        for i, (dtype, shape, lay) in enumerate(specs):
            gd = dtype
            vals = make_values(rng, shape, gd, rng.uniform(-3, 3), specials[t - 1])
            grads.append(_place(lib, vals, gd, Layout.contiguous(len(shape)))[1])
        nonfinite = [i for i, gr in enumerate(grads) if not np.isfinite(_to_f64(gr)).all()]
        refused = [i for i in nonfinite if finite[which[i]]]
        before = ([bits(_to_f64(x)) for x in params], copy.deepcopy(
            {i: {k: (bits(_to_f64(a)) if k != "step" else a) for k, a in s.items()}
             for i, s in opt.state.items()}))
        before_step = [_to_f64(x) for x in params]
        with _Level(level), np.errstate(all="ignore"):
            if refused:
                with pytest.raises(FloatingPointError, match=f"grad {min(refused)} holds inf"):
                    opt.step(grads)
                after = ([bits(_to_f64(x)) for x in params],
                         {i: {k: (bits(_to_f64(a)) if k != "step" else a) for k, a in s.items()}
                          for i, s in opt.state.items()})
                assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0]))
                assert before[1].keys() == after[1].keys()
                for i in before[1]:
                    assert before[1][i]["step"] == after[1][i]["step"]
                    for k in before[1][i]:
                        assert np.array_equal(before[1][i][k], after[1][i][k])
                continue
            out = opt.step(grads)
        assert all(a is b for a, b in zip(out, params))
        for i, gr in enumerate(grads):
            if mirrors[i] is None:
                zeros = np.zeros(tuple(params[i].shape))
                mirrors[i] = NumpyMirror(before_step[i], zeros, zeros, zeros, specs[i][0])
            counts[i] += 1
            mirrors[i].step(_to_f64(gr), specs[i][0], step_hparams(gdicts[which[i]], counts[i]))
    for i, x in enumerate(params):
        if mirrors[i] is None:
            continue
        assert same_values(_to_f64(x), mirrors[i].p), f"param {i}"
        assert opt.state[i]["step"] == counts[i]
        assert same_values(_to_f64(opt.state[i]["exp_avg"]), mirrors[i].m), f"exp_avg {i}"
        assert same_values(_to_f64(opt.state[i]["exp_avg_sq"]), mirrors[i].v), f"exp_avg_sq {i}"


# ---- 3. bad input: the error, and nothing changed -------------------------------------------
BAD_GROUP_EDITS = [
    ("lr", -1.0), ("lr", float("nan")), ("lr", float("inf")), ("eps", -1e-8),
    ("eps", float("nan")), ("weight_decay", -0.1), ("weight_decay", float("inf")),
    ("betas", (1.0, 0.999)), ("betas", (0.9, 1.0)), ("betas", (-0.1, 0.9)),
    ("betas", (0.9, float("nan"))), ("betas", 0.9), ("betas", (0.9, 0.99, 0.5)),
]
KINDS = ["count", "shape", "dtype", "library", "nonfinite", "read-only", "group edit",
         "state shape", "state dtype", "state missing key", "state extra param"]


@st.composite
def bad_cases(draw):
    lib = draw(st.sampled_from([x for x in LIBS if x != "array_api_strict"]))
    n = draw(st.integers(1, 4))
    specs = []
    for _ in range(n):
        shape = draw(shapes().filter(lambda s: math.prod(s) <= 5000))
        specs.append((draw(st.sampled_from(DTYPES[lib])), shape,
                      draw(layouts(shape, lib).filter(lambda lay: max(map(abs, lay.steps),
                                                                      default=1) < 100))))
    kind = draw(st.sampled_from(KINDS))
    if kind == "read-only":
        lib_ok = lib == "numpy"
        assume(lib_ok)
    return (lib, specs, kind, draw(st.integers(0, n - 1)), draw(st.booleans()),
            draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, len(BAD_GROUP_EDITS) - 1)),
            draw(st.booleans()))


def _snapshot(opt):
    params = [bits(_to_f64(p)) for g in opt.param_groups for p in g["params"]]
    state = {i: {k: (bits(_to_f64(a)) if k != "step" else a) for k, a in s.items()}
             for i, s in opt.state.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    return params, state, repr(groups)


@PROFILE
@given(bad_cases())
def test_bad_input_raises_and_changes_nothing(case):
    lib, specs, kind, i, warm, seed, edit, amsgrad = case
    rng = np.random.default_rng(seed)
    params = [_place(lib, make_values(rng, shape, dtype, 0.0, "none"), dtype, lay)[1]
              for dtype, shape, lay in specs]
    opt = adamcore.Adam(params, lr=1e-2, amsgrad=amsgrad, check_finite=kind == "nonfinite")

    def good_grads():
        return [_place(lib, make_values(rng, tuple(p.shape), str(p.dtype).split(".")[-1], 0.0,
                                        "none"), str(p.dtype).split(".")[-1],
                       Layout.contiguous(p.ndim))[1] for p in params]

    if warm:
        opt.step(good_grads())  # the steady fast path is in use from here on
    grads = good_grads()
    dt = str(params[i].dtype).split(".")[-1]
    shape = tuple(params[i].shape)
    action = lambda: opt.step(grads)  # noqa: E731
    if kind == "count":
        grads = grads[:-1] if rng.integers(2) else grads + [grads[0]]
        error = ValueError
    elif kind == "shape":
        grads[i] = _place(lib, np.zeros(shape + (2,)), dt, Layout.contiguous(len(shape) + 1))[1]
        error = ValueError
    elif kind == "dtype":
        wrong = {"float32": "float64", "float64": "float32", "float16": "float64",
                 "bfloat16": "float16"}[dt]
        if lib == "numpy" and rng.integers(2):
            grads[i] = np.zeros(shape, dtype=rng.choice(["int32", "int64", "complex64", "bool"]))
        else:
            grads[i] = _place(lib, np.zeros(shape), wrong, Layout.contiguous(len(shape)))[1]
        error = TypeError
    elif kind == "library":
        if (lib == "numpy" and HAVE_TORCH) or lib == "torch-cuda":
            import torch

            grads[i] = torch.zeros(shape)  # another library, or the CPU for a CUDA param
        elif lib == "numpy":
            grads[i] = [0.0] * math.prod(shape)
        else:
            grads[i] = np.zeros(shape, np.float32)
        error = ValueError
    elif kind == "nonfinite":
        assume(math.prod(shape) > 0)
        vals = _to_f64(grads[i])
        vals.reshape(-1)[rng.integers(vals.size)] = rng.choice([np.inf, -np.inf, np.nan])
        grads[i] = _place(lib, vals, dt, Layout.contiguous(len(shape)))[1]
        error = FloatingPointError
    elif kind == "read-only":
        params[i].flags.writeable = False
        error = ValueError
    elif kind == "group edit":
        key, value = BAD_GROUP_EDITS[edit]
        opt.param_groups[0][key] = value
        error = ValueError
    else:
        if not warm:
            opt.step(grads)
            grads = good_grads()
        sd = opt.state_dict()
        sd = {"state": {k: dict(s) for k, s in sd["state"].items()},
              "param_groups": [dict(g) for g in sd["param_groups"]]}
        if kind == "state shape":
            sd["state"][i]["exp_avg"] = np.zeros(shape + (1,), np.float32)
        elif kind == "state dtype":
            sdt = _state_dtype(dt)
            sd["state"][i]["exp_avg_sq"] = np.zeros(shape, np.int32 if sdt == "float64"
                                                    else np.float64)
        elif kind == "state missing key":
            sd["state"][i].pop("exp_avg_sq")
        else:
            sd["state"][len(params)] = sd["state"][i]
        action = lambda: opt.load_state_dict(sd)  # noqa: E731
        error = ValueError
    note(f"{kind} at {i}, warm={warm}, lib={lib}, specs={specs}")
    before = _snapshot(opt)
    with pytest.raises(error):
        action()
    after = _snapshot(opt)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0])), "a param changed"
    assert before[1].keys() == after[1].keys()
    for k in before[1]:
        assert before[1][k]["step"] == after[1][k]["step"], "a step counter moved"
        for key in before[1][k]:
            assert np.array_equal(before[1][k][key], after[1][k][key]), f"state {k} {key} changed"
    if kind != "group edit":
        assert before[2] == after[2], "hyperparameters changed"


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
@pytest.mark.parametrize("betas", [0.9, (0.9,), (0.9, 0.99, 0.5), None])
def test_non_pair_betas_is_a_clear_value_error(betas, warm):
    """At construction, and as a group edit on the general and on the steady path."""
    with pytest.raises(ValueError, match=r"betas must be a pair \(beta1, beta2\)"):
        adamcore.Adam([np.ones(3, np.float32)], betas=betas)
    p = np.ones(3, np.float32)
    opt = adamcore.Adam([p])
    if warm:
        opt.step([np.ones(3, np.float32)])
    before = _snapshot(opt)
    opt.param_groups[0]["betas"] = betas
    with pytest.raises(ValueError, match=r"betas must be a pair \(beta1, beta2\)"):
        opt.step([np.ones(3, np.float32)])
    after = _snapshot(opt)
    assert all(np.array_equal(a, b) for a, b in zip(before[0], after[0]))
    assert all(before[1][k]["step"] == after[1][k]["step"] for k in before[1])
