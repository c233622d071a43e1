"""docs/python-api.md for each library (``xp``): values, zero-copy or new arrays, state in
the parameter's library, bad input, and state dicts within and across libraries."""

import copy

import numpy as np
import pytest

import adamcore
from adamcore import _arrays
from array_libs import asarray, library_name, namespace, to_numpy
from conftest import CONFIGS, hparam_kwargs
from textbook import adam_textbook

SHAPES = [(7,), (3, 5), ()]


def _start(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def _grads(step):
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(s) for s in SHAPES]


def _immutable(xp) -> bool:
    return library_name(xp) == "jax"


def _pointer(x):
    lib = _arrays.library(x)
    if lib == "numpy":
        return x.ctypes.data
    if lib == "torch":
        return x.data_ptr()
    if lib == "cupy":
        return x.data.ptr
    return None


def _textbook_run(start, steps, dtype, config):
    kw = hparam_kwargs(config)
    kw.setdefault("lr", 0.01)
    state = [(np.asarray(p, dtype).astype(np.float64), 0.0, 0.0, 0.0) for p in start]
    for step in range(steps):
        new = []
        for (p, m, v, vmax), g in zip(state, _grads(step)):
            g = np.asarray(g, dtype).astype(np.float64)
            new.append(adam_textbook(p, g, np.zeros_like(p) + m, np.zeros_like(p) + v,
                                     np.zeros_like(p) + (vmax if vmax is not None else 0.0),
                                     step=step + 1, **kw))
        state = new
    return [s[0] for s in state]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", CONFIGS)
def test_values_match_the_textbook(xp, name, dtype):
    config = CONFIGS[name]
    params = [asarray(xp, v, dtype) for v in _start()]
    opt = adamcore.Adam(params, lr=0.01, **config)
    for step in range(3):
        params = opt.step([asarray(xp, g, dtype) for g in _grads(step)])
    expected = _textbook_run(_start(), 3, dtype, config)
    tol = 1e-5 if dtype == "float32" else 1e-12
    for p, e in zip(params, expected):
        np.testing.assert_allclose(to_numpy(p), e, rtol=tol, atol=tol)


def test_same_numbers_as_the_numpy_core(xp):
    """float32: every library's path gives the core's numbers (bit for bit but for XLA,
    which may fuse operations differently)."""
    params = [asarray(xp, v) for v in _start()]
    ref = [np.asarray(v, np.float32) for v in _start()]
    opt = adamcore.AdamW(params, lr=0.01, amsgrad=True)
    ref_opt = adamcore.AdamW(ref, lr=0.01, amsgrad=True)
    for step in range(4):
        params = opt.step([asarray(xp, g) for g in _grads(step)])
        ref_opt.step([np.asarray(g, np.float32) for g in _grads(step)])
    for p, r in zip(params, ref):
        if _immutable(xp):
            np.testing.assert_allclose(to_numpy(p), r, rtol=1e-6, atol=1e-7)
        else:
            np.testing.assert_array_equal(to_numpy(p), r)


def test_in_place_where_the_library_allows(xp):
    params = [asarray(xp, v) for v in _start()]
    pointers = [_pointer(p) for p in params]
    before = [to_numpy(p) for p in params]
    opt = adamcore.Adam(params, lr=0.1)
    for step in range(3):  # the first step, then the steady path where there is one
        out = opt.step([asarray(xp, g) for g in _grads(step)])
        if _immutable(xp):
            assert not any(a is b for a, b in zip(out, params))
            for p, b in zip(params, before):  # the caller's arrays did not change
                np.testing.assert_array_equal(to_numpy(p), b)
            assert all(a is b for a, b in zip(out, opt.param_groups[0]["params"]))
        else:
            assert all(a is b for a, b in zip(out, params))
            assert [_pointer(p) for p in params] == pointers
    expected = _textbook_run(_start(), 3, "float32", {"lr": 0.1})
    for p, e in zip(out, expected):
        np.testing.assert_allclose(to_numpy(p), e, rtol=1e-5, atol=1e-6)


def test_adam_step_functional(xp):
    p, g = asarray(xp, _start()[1]), asarray(xp, _grads(0)[1])
    m, v, vmax = (xp.zeros_like(p) for _ in range(3))
    expected = adam_textbook(to_numpy(p), to_numpy(g), 0.0, 0.0, 0.0, step=1, lr=0.1,
                             amsgrad=True)
    out = adamcore.adam_step(p, g, m, v, step=1, lr=0.1, amsgrad=True, max_exp_avg_sq=vmax)
    if _immutable(xp):
        assert not any(a is b for a, b in zip(out, (p, m, v, vmax)))
        assert not to_numpy(m).any()  # the inputs are unchanged
    else:
        assert all(a is b for a, b in zip(out, (p, m, v, vmax)))
    for got, want in zip(out, expected):
        np.testing.assert_allclose(to_numpy(got), want, rtol=1e-6, atol=1e-7)
    # the next step from what was returned
    out2 = adamcore.adam_step(out[0], g, out[1], out[2], step=2, lr=0.1, amsgrad=True,
                              max_exp_avg_sq=out[3])
    expected2 = adam_textbook(expected[0], to_numpy(g), expected[1], expected[2], expected[3],
                              step=2, lr=0.1, amsgrad=True)
    np.testing.assert_allclose(to_numpy(out2[0]), expected2[0], rtol=1e-6, atol=1e-7)


def test_state_lives_in_the_parameters_library(xp):
    params = [asarray(xp, v) for v in _start()]
    opt = adamcore.AdamW(params, amsgrad=True)
    opt.step([asarray(xp, g) for g in _grads(0)])
    sd = opt.state_dict()
    for i, p in enumerate(opt.param_groups[0]["params"]):
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            s = sd["state"][i][key]
            assert _arrays.library(s) == _arrays.library(p)
            assert _arrays.same_device(s, p) and tuple(s.shape) == tuple(p.shape)
            assert _arrays.dtype_name(s.dtype) == "float32"


def test_state_dict_round_trip(xp):
    params = [asarray(xp, v) for v in _start()]
    opt = adamcore.AdamW(params, lr=0.02, amsgrad=True)
    for step in range(3):
        params = opt.step([asarray(xp, g) for g in _grads(step)])
    twin_params = [asarray(xp, to_numpy(p)) for p in params]
    twin = adamcore.AdamW(twin_params, lr=0.5, amsgrad=True)
    twin.load_state_dict(opt.state_dict())
    assert twin.param_groups[0]["lr"] == 0.02
    for step in range(3, 6):
        params = opt.step([asarray(xp, g) for g in _grads(step)])
        twin_params = twin.step([asarray(xp, g) for g in _grads(step)])
    for a, b in zip(params, twin_params):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


CPU_LIBRARIES = ["numpy", "array_api_strict", "torch", "jax"]


@pytest.mark.parametrize("target", CPU_LIBRARIES)
@pytest.mark.parametrize("source", CPU_LIBRARIES)
def test_state_dict_moves_between_libraries(source, target):
    """A checkpoint of an optimizer over one library continues in another with the same numbers
    (a torch checkpoint into NumPy, NumPy into JAX, ...)."""
    src_xp, dst_xp = namespace(source), namespace(target)
    params = [asarray(src_xp, v) for v in _start()]
    opt = adamcore.Adam(params, lr=0.02, amsgrad=True, weight_decay=0.1)
    for step in range(3):
        params = opt.step([asarray(src_xp, g) for g in _grads(step)])
    moved = [asarray(dst_xp, to_numpy(p)) for p in params]
    other = adamcore.Adam(moved, lr=0.02, amsgrad=True, weight_decay=0.1)
    other.load_state_dict(opt.state_dict())
    state = other.state[0]
    assert _arrays.library(state["exp_avg"]) == _arrays.library(moved[0])
    assert state["step"] == 3
    for step in range(3, 6):
        params = opt.step([asarray(src_xp, g) for g in _grads(step)])
        moved = other.step([asarray(dst_xp, g) for g in _grads(step)])
    for a, b in zip(params, moved):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


def test_param_groups_mixing_libraries():
    libs = [lib for lib in CPU_LIBRARIES if _available(lib)]
    namespaces = [namespace(lib) for lib in libs]
    start = _start()[1]
    params = [asarray(ns, start) for ns in namespaces]
    opt = adamcore.AdamW([{"params": [p], "lr": 0.01 * (k + 1)} for k, p in enumerate(params)])
    for step in range(3):
        g = _grads(step)[1]
        params = opt.step([asarray(ns, g) for ns in namespaces])
    for k, (lib, p) in enumerate(zip(libs, params)):
        assert _arrays.library(p) == _arrays.library(asarray(namespaces[k], [0.0]))
        expected = _textbook_run(_start(), 3, "float32",
                                 {"lr": 0.01 * (k + 1), "weight_decay": 1e-2,
                                  "decoupled_weight_decay": True})[1]
        np.testing.assert_allclose(to_numpy(p), expected, rtol=1e-5, atol=1e-6, err_msg=lib)


def _available(lib):
    try:
        namespace(lib)
    except pytest.skip.Exception:
        return False
    return True


# ---- docs/errors.md on every library -----------------------------------------------------------
def _other_library_array(xp, values):
    if library_name(xp) != "numpy":
        return np.asarray(values, np.float32)
    strict = namespace("array_api_strict")
    return strict.asarray(np.asarray(values, np.float32))


def _bad_grads(xp, name):
    good = [asarray(xp, g) for g in _grads(0)]
    if name == "count":
        return good[:2], ValueError, "got 2 grads for 3 params"
    if name == "shape":
        return good[:1] + [asarray(xp, np.ones((5, 3)))] + good[2:], ValueError, \
            r"grad 1 has shape \(5, 3\) but param 1 has shape \(3, 5\)"
    if name == "int dtype":
        return good[:2] + [xp.asarray(3)], TypeError, "grad 2 has dtype int"
    if name == "float64 grad":
        return good[:2] + [asarray(xp, 0.5, "float64")], TypeError, \
            "grad 2 has dtype float64 but param 2 has dtype float32"
    if name == "library":
        return good[:2] + [_other_library_array(xp, 0.5)], ValueError, "grad 2 is a"
    raise ValueError(name)


@pytest.mark.parametrize("case", ["count", "shape", "int dtype", "float64 grad", "library"])
@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
def test_bad_grads_change_nothing(xp, case, warm):
    params = [asarray(xp, v) for v in _start()]
    opt = adamcore.Adam(params, lr=0.1)
    if warm:
        opt.step([asarray(xp, g) for g in _grads(0)])
    now = opt.param_groups[0]["params"]
    snapshot = [to_numpy(p) for p in now], copy.deepcopy(
        {i: {k: (to_numpy(v) if k != "step" else v) for k, v in s.items()}
         for i, s in opt.state.items()})
    grads, error, message = _bad_grads(xp, case)
    with pytest.raises(error, match=message):
        opt.step(grads)
    for p, b in zip(opt.param_groups[0]["params"], snapshot[0]):
        np.testing.assert_array_equal(to_numpy(p), b)
    for i, s in snapshot[1].items():
        assert opt.state[i]["step"] == s["step"]
        np.testing.assert_array_equal(to_numpy(opt.state[i]["exp_avg"]), s["exp_avg"])
    opt.step([asarray(xp, g) for g in _grads(1)])  # and it still works


def test_bad_construction(xp):
    p = asarray(xp, [1.0, 2.0])
    with pytest.raises(ValueError, match="empty parameter list"):
        adamcore.Adam([])
    for kw in (dict(lr=-1.0), dict(eps=-1.0), dict(weight_decay=-0.1), dict(betas=(1.0, 0.9))):
        with pytest.raises(ValueError):
            adamcore.Adam([p], **kw)
    with pytest.raises(TypeError, match="param 0 has dtype int"):
        adamcore.Adam([xp.asarray([1, 2])])


def test_device_mismatch():
    strict = pytest.importorskip("array_api_strict")
    p = strict.asarray(np.ones(3, np.float32))
    g = strict.asarray(np.ones(3, np.float32), device=strict.Device("device1"))
    opt = adamcore.Adam([p])
    with pytest.raises(ValueError, match="grad 0 is on device"):
        opt.step([g])
    torch = pytest.importorskip("torch")
    tp = torch.ones(3)
    with pytest.raises(ValueError, match="grad 0 is on device meta"):
        adamcore.Adam([tp]).step([torch.ones(3, device="meta")])


def test_bad_state_dicts(xp):
    params = [asarray(xp, v) for v in _start()]
    opt = adamcore.Adam(params, amsgrad=True)
    opt.step([asarray(xp, g) for g in _grads(0)])
    good = opt.state_dict()
    twin = adamcore.Adam([asarray(xp, v) for v in _start()], amsgrad=True)
    cases = {
        "shape": lambda sd: sd["state"][1].__setitem__("exp_avg", np.zeros(4, np.float32)),
        "dtype": lambda sd: sd["state"][0].__setitem__("exp_avg_sq", np.zeros(7, np.int32)),
        "count": lambda sd: sd["param_groups"][0].__setitem__("params", [0, 1]),
        "missing": lambda sd: sd["state"][2].pop("max_exp_avg_sq"),
    }
    for name, edit in cases.items():
        sd = {"state": {i: dict(s) for i, s in good["state"].items()},
              "param_groups": [dict(g) for g in good["param_groups"]]}
        edit(sd)
        with pytest.raises(ValueError):
            twin.load_state_dict(sd)
        assert twin.state == {}, name


# ---- the Reference route of torch tensors (torch CUDA where no CUDA backend is built) -------
def test_reference_backend_on_torch_tensors_that_require_grad(monkeypatch):
    torch = pytest.importorskip("torch")
    from adamcore import _dispatch, _optimizer

    start = [torch.tensor(v, dtype=torch.float32) for v in _start()]
    params = [torch.nn.Parameter(s.clone()) for s in start]
    native = [s.clone() for s in start]
    opt, ref = adamcore.AdamW(params, amsgrad=True), adamcore.AdamW(native, amsgrad=True)
    monkeypatch.setattr(_optimizer, "backend_for", lambda x: _dispatch.REFERENCE)
    for step in range(3):
        grads = [torch.tensor(g, dtype=torch.float32) for g in _grads(step)]
        assert opt.step(grads)[0] is params[0]
        monkeypatch.undo()
        ref.step(grads)
        monkeypatch.setattr(_optimizer, "backend_for", lambda x: _dispatch.REFERENCE)
    for p, q in zip(params, native):
        assert p.requires_grad and p.grad_fn is None
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)


def test_jax_arrays_never_reach_the_native_core(monkeypatch):
    """nanobind would take a JAX array's buffer as writable through DLPack: adamcore must keep
    immutable arrays away from the native backends (and leave the caller's arrays unchanged)."""
    jnp = namespace("jax")
    from adamcore import _dispatch

    seen = []
    real_run = _dispatch.CpuNative.run

    def spy(self, tensors, hparams):
        seen.extend(_arrays.library(t.param) for t in tensors)
        return real_run(self, tensors, hparams)

    monkeypatch.setattr(_dispatch.CpuNative, "run", spy)
    p, np_p = jnp.asarray(_start()[0], dtype=jnp.float32), np.asarray(_start()[0], np.float32)
    before = np.asarray(p).copy()
    opt = adamcore.Adam([{"params": [p]}, {"params": [np_p]}], lr=0.1)
    for step in range(2):
        g = _grads(step)[0]
        new_p, _ = opt.step([jnp.asarray(g, dtype=jnp.float32), g.astype(np.float32)])
    assert seen == ["numpy", "numpy"]
    np.testing.assert_array_equal(np.asarray(p), before)
    np.testing.assert_allclose(np.asarray(new_p), np_p, rtol=1e-6, atol=1e-7)
    grads = [jnp.asarray(g, dtype=jnp.float32) for g in _grads(0)]
    out, _ = adamcore.clip_by_global_norm(grads, 0.01)
    assert seen == ["numpy", "numpy"] and not any(a is b for a, b in zip(out, grads))
