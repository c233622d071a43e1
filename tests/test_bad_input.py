"""docs/errors.md: a clear error naming what is wrong, and nothing changed.

Each failing step is checked against a snapshot of every parameter, state array and step
counter. The bad tensor comes last, so an implementation that writes before it checks fails.
"""

import copy

import numpy as np
import pytest

import adamcore


def _setup(warm: bool, **kw):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(5,), (3, 4), (6,)]]
    opt = adamcore.Adam(params, lr=0.1, **kw)
    if warm:  # after a step the steady fast path is in use; its checks must hold too
        opt.step([np.ones_like(p) for p in params])
    return opt, params


def _snapshot(opt):
    return ([p.copy() for g in opt.param_groups for p in g["params"]],
            copy.deepcopy(opt.state))


def _assert_unchanged(opt, snap):
    params, state = snap
    now = [p for g in opt.param_groups for p in g["params"]]
    for a, b in zip(now, params):
        np.testing.assert_array_equal(a, b)
    assert state.keys() == opt.state.keys()
    for i in state:
        assert opt.state[i]["step"] == state[i]["step"]
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(opt.state[i][key], state[i][key])


def _good_grads(params):
    return [np.full_like(p, 0.5) for p in params]


BAD_STEPS = {
    "too few grads": (ValueError, "got 2 grads for 3 params", lambda ps: _good_grads(ps)[:2]),
    "too many grads": (ValueError, "got 4 grads", lambda ps: _good_grads(ps) + [ps[0]]),
    "grad shape": (ValueError, r"grad 2 has shape \(5,\) but param 2 has shape \(6,\)",
                   lambda ps: _good_grads(ps)[:2] + [np.ones(5, np.float32)]),
    "grad dtype float64": (TypeError, "grad 2 has dtype float64 but param 2 has dtype float32",
                           lambda ps: _good_grads(ps)[:2] + [np.ones(6)]),
    "grad dtype int": (TypeError, "grad 2 has dtype int64",
                       lambda ps: _good_grads(ps)[:2] + [np.ones(6, np.int64)]),
    "grad dtype complex": (TypeError, "grad 2 has dtype complex64",
                           lambda ps: _good_grads(ps)[:2] + [np.ones(6, np.complex64)]),
    "grad not an array": (ValueError, "grad 2 is a list but param 2 is a numpy array",
                          lambda ps: _good_grads(ps)[:2] + [[1.0] * 6]),
}


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
@pytest.mark.parametrize("case", BAD_STEPS)
def test_bad_grads_change_nothing(case, warm):
    error, message, make = BAD_STEPS[case]
    opt, params = _setup(warm)
    snap = _snapshot(opt)
    with pytest.raises(error, match=message):
        opt.step(make(params))
    _assert_unchanged(opt, snap)
    opt.step(_good_grads(params))  # and the optimizer still works


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
def test_grad_of_another_library(warm):
    torch = pytest.importorskip("torch")
    opt, params = _setup(warm)
    snap = _snapshot(opt)
    grads = _good_grads(params)[:2] + [torch.ones(6)]
    with pytest.raises(ValueError, match="grad 2 is a torch array but param 2 is a numpy array"):
        opt.step(grads)
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
def test_nonfinite_grad_with_check_finite(warm):
    opt, params = _setup(warm, check_finite=True)
    snap = _snapshot(opt)
    for bad in (np.inf, -np.inf, np.nan):
        grads = _good_grads(params)
        grads[2][3] = bad
        with pytest.raises(FloatingPointError, match="grad 2 holds inf or NaN"):
            opt.step(grads)
        _assert_unchanged(opt, snap)


def test_nonfinite_grad_without_check_finite_is_stepped():
    opt, params = _setup(False)
    grads = _good_grads(params)
    grads[0][0] = np.nan
    opt.step(grads)
    assert np.isnan(params[0][0]) and np.isfinite(params[0][1:]).all()


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
def test_read_only_param(warm):
    opt, params = _setup(warm)
    params[2].flags.writeable = False
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match="param 2 is read-only"):
        opt.step(_good_grads(params))
    _assert_unchanged(opt, snap)


def test_read_only_param_at_construction():
    p = np.ones(3, np.float32)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param 0 is read-only"):
        adamcore.Adam([p])


@pytest.mark.parametrize("warm", [False, True], ids=["first-step", "steady"])
@pytest.mark.parametrize("key,value,message", [
    ("lr", -1.0, "lr must be a finite number >= 0"),
    ("lr", float("nan"), "lr must be a finite number >= 0"),
    ("eps", -1e-8, "eps must be a finite number >= 0"),
    ("weight_decay", -0.1, "weight_decay must be a finite number >= 0"),
    ("betas", (0.9, 1.0), r"beta2 must be in \[0, 1\)|betas\[1\] must be in \[0, 1\)"),
])
def test_group_edit_out_of_range_raises_at_next_step(key, value, message, warm):
    opt, params = _setup(warm)
    opt.param_groups[0][key] = value
    snap = _snapshot(opt)
    with pytest.raises(ValueError, match=message):
        opt.step(_good_grads(params))
    _assert_unchanged(opt, snap)


@pytest.mark.parametrize("kw,message", [
    (dict(lr=-1e-3), "lr must be a finite number >= 0"),
    (dict(eps=-1.0), "eps must be"),
    (dict(weight_decay=-1.0), "weight_decay must be"),
    (dict(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
    (dict(betas=(0.9, -0.1)), r"betas\[1\] must be in \[0, 1\)"),
    (dict(decouple_lr=True, lr=lambda count: 1e-3), "decouple_lr with an lr schedule needs max_lr"),
    (dict(decouple_lr=True, max_lr=0.0), "max_lr must be a finite number > 0"),
])
def test_bad_hyperparameters_at_construction(kw, message):
    with pytest.raises(ValueError, match=message):
        adamcore.Adam([np.ones(3, np.float32)], **kw)


def test_empty_parameter_list():
    with pytest.raises(ValueError, match="empty parameter list"):
        adamcore.Adam([])


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])  # complex: test_complex.py
def test_param_dtype_refused(dtype):
    with pytest.raises(TypeError, match="param 1 has dtype"):
        adamcore.Adam([np.ones(3, np.float32), np.ones(3, dtype)])


def test_duplicate_param_refused():
    p = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="appears more than once"):
        adamcore.Adam([{"params": [p]}, {"params": [p]}])


def test_single_array_instead_of_a_list():
    with pytest.raises(TypeError, match="not a single array"):
        adamcore.Adam(np.ones(3, np.float32))
    opt = adamcore.Adam([np.ones(3, np.float32)])
    with pytest.raises(TypeError, match="sequence of arrays"):
        opt.step(np.ones(3, np.float32))


# --- adam_step --------------------------------------------------------------------------------
def _functional_arrays():
    p = np.ones(4, np.float32)
    return p, np.ones(4, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32)


@pytest.mark.parametrize("change,error,message", [
    (dict(exp_avg=np.zeros(5, np.float32)), ValueError, r"exp_avg 0 has shape \(5,\)"),
    (dict(exp_avg_sq=np.zeros(4, np.float64)), TypeError, "exp_avg_sq 0 has dtype float64"),
    (dict(grad=np.ones(4, np.float16)), TypeError, "grad 0 has dtype float16"),
    (dict(step=0), ValueError, "step must be an int >= 1"),
    (dict(amsgrad=True), ValueError, "max_exp_avg_sq 0 is missing"),
    (dict(beta1=1.5), ValueError, r"betas\[0\] must be in \[0, 1\)"),
])
def test_adam_step_bad_input_changes_nothing(change, error, message):
    p, g, m, v = _functional_arrays()
    args = dict(param=p, grad=g, exp_avg=m, exp_avg_sq=v, step=1, lr=0.1)
    args.update(change)
    before = {k: a.copy() for k, a in args.items() if isinstance(a, np.ndarray)}
    with pytest.raises(error, match=message):
        adamcore.adam_step(**args)
    for k, a in before.items():
        np.testing.assert_array_equal(args[k], a)


def test_core_refuses_shared_state_memory():
    p, g, m, _ = _functional_arrays()
    with pytest.raises(ValueError, match="exp_avg 0 and exp_avg_sq 0 share memory"):
        adamcore.adam_step(p, g, m, m, step=1, lr=0.1)
    np.testing.assert_array_equal(p, np.ones(4, np.float32))


def test_core_refuses_broadcast_param():
    torch = pytest.importorskip("torch")
    p = torch.zeros(1).expand(4)  # writable, every element the same memory
    with pytest.raises(ValueError, match="param 0 has a zero stride"):
        adamcore.adam_step(p, torch.ones(4), torch.zeros(4), torch.zeros(4), step=1, lr=0.1)


# --- load_state_dict ---------------------------------------------------------------------------
def _trained():
    opt, params = _setup(True, amsgrad=True)
    return opt, params


@pytest.mark.parametrize("corrupt,message", [
    (lambda sd: sd["state"][1].update(exp_avg=np.zeros((4, 3), np.float32)),
     r"exp_avg of param 1 has shape \(4, 3\)"),
    (lambda sd: sd["state"][2].update(exp_avg_sq=np.zeros(6, np.float64)),
     "exp_avg_sq of param 2 has dtype float64"),
    (lambda sd: sd["state"][0].pop("max_exp_avg_sq"), "has no 'max_exp_avg_sq'"),
    (lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
     "the state dict has 2 param groups"),
    (lambda sd: sd["param_groups"][0].update(params=[0, 1]), "has 2 params"),
    (lambda sd: sd["state"].update({7: sd["state"][0]}), "state for param 7"),
    (lambda sd: sd["param_groups"][0].update(lr=-1.0), "lr must be"),
])
def test_load_state_dict_mismatch_changes_nothing(corrupt, message):
    opt, params = _trained()
    sd = copy.deepcopy(opt.state_dict())
    corrupt(sd)
    snap = _snapshot(opt)
    groups_before = copy.deepcopy([{k: v for k, v in g.items() if k != "params"}
                                   for g in opt.param_groups])
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == \
        groups_before
