"""adamcore.torch.Adam/AdamW against torch.optim.Adam/AdamW: trajectories, schedulers, state."""

import copy
import subprocess
import sys

import numpy as np
import pytest

import adamcore

torch = pytest.importorskip("torch")
adamcore_torch = pytest.importorskip("adamcore.torch")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _batch(step):
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(64, 12, generator=gen), torch.randn(64, 1, generator=gen)


def _train(model, opt, steps, scheduler=None):
    for step in steps:
        X, y = _batch(step)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _assert_same_params(a, b, tol=2e-6):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=tol, atol=tol)


def test_mlp_50_steps_with_cosine_annealing_match_torch():
    ours_model, theirs_model = _mlp(), _mlp()
    kw = dict(lr=1e-2, amsgrad=True, weight_decay=0.1)
    ours, theirs = adamcore_torch.AdamW(ours_model.parameters(), **kw), \
        torch.optim.AdamW(theirs_model.parameters(), **kw)
    sched = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=50) for o in (ours, theirs)]
    start = [p.detach().clone() for p in ours_model.parameters()]
    _train(ours_model, ours, range(50), sched[0])
    _train(theirs_model, theirs, range(50), sched[1])
    _assert_same_params(ours_model, theirs_model)
    assert all(not torch.equal(p.detach(), s) for p, s in zip(ours_model.parameters(), start))
    assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"])
    state = ours.state[ours_model[0].weight]
    assert set(state) == {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}
    assert torch.is_tensor(state["step"]) and float(state["step"]) == 50.0


CONFIGS = {
    "adam": (adamcore_torch.Adam, torch.optim.Adam, dict()),
    "adam-l2-maximize": (adamcore_torch.Adam, torch.optim.Adam,
                         dict(weight_decay=0.05, maximize=True)),
    "adam-decoupled": (adamcore_torch.Adam, torch.optim.Adam,
                       dict(weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)),
    "adamw-betas": (adamcore_torch.AdamW, torch.optim.AdamW, dict(betas=(0.8, 0.99), eps=1e-6)),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_match_torch_with_param_groups(name):
    ours_cls, torch_cls, kw = CONFIGS[name]
    a, b = _mlp(), _mlp()
    groups = lambda m: [{"params": m[0].parameters(), "lr": 3e-3},  # noqa: E731
                        {"params": list(m[2].parameters()) + list(m[4].parameters())}]
    ours, theirs = ours_cls(groups(a), lr=1e-2, **kw), torch_cls(groups(b), lr=1e-2, **kw)
    _train(a, ours, range(20))
    _train(b, theirs, range(20))
    _assert_same_params(a, b)


def test_tensor_lr_and_lr_edits_between_steps():
    a, b = _mlp(), _mlp()
    ours = adamcore_torch.Adam(a.parameters(), lr=torch.tensor(0.01))
    theirs = torch.optim.Adam(b.parameters(), lr=torch.tensor(0.01))
    for step, lr in enumerate([0.01, 0.02, 0.005, 0.005]):
        for o in (ours, theirs):
            o.param_groups[0]["lr"] = torch.tensor(lr)
        _train(a, ours, [step])
        _train(b, theirs, [step])
    _assert_same_params(a, b)


def test_params_without_grad_are_skipped():
    model = _mlp()
    frozen = model[0].weight
    frozen.requires_grad_(False)
    before = frozen.detach().clone()
    opt = adamcore_torch.AdamW(model.parameters(), lr=0.1)
    _train(model, opt, range(3))
    assert torch.equal(frozen, before) and frozen not in opt.state
    frozen.requires_grad_(True)  # joins later with its own step count, as in torch
    _train(model, opt, range(3, 5))
    assert float(opt.state[frozen]["step"]) == 2.0
    assert float(opt.state[model[0].bias]["step"]) == 5.0


def test_closure_and_zero_copy():
    model = _mlp()
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    opt = adamcore_torch.Adam(params, lr=0.1)
    X, y = _batch(0)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(5)]
    assert losses[-1] < losses[0]
    assert [p.data_ptr() for p in params] == pointers
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in params)


def test_storage_swapped_under_a_param_is_noticed():
    """p.data = ... keeps the Parameter object but gives it new storage: the new one is updated."""
    model = _mlp()
    opt = adamcore_torch.Adam(model.parameters(), lr=0.1)
    _train(model, opt, range(2))
    assert opt._plan is not None
    w = model[0].weight
    old = w.data
    old_values = old.clone()
    w.data = old.clone()
    _train(model, opt, [2])
    assert torch.equal(old, old_values)
    assert not torch.equal(w.detach(), old_values)


def test_step_counter_edits_are_noticed():
    model = _mlp()
    opt = adamcore_torch.Adam(model.parameters(), lr=0.1)
    _train(model, opt, range(2))
    for p in model.parameters():
        opt.state[p]["step"].fill_(10.0)  # as a user resetting the bias correction would
    twin = _mlp()
    twin_opt = torch.optim.Adam(twin.parameters(), lr=0.1)
    twin_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    with torch.no_grad():
        for p, q in zip(twin.parameters(), model.parameters()):
            p.copy_(q)
    _train(model, opt, [2])
    _train(twin, twin_opt, [2])
    _assert_same_params(model, twin)
    assert float(opt.state[model[0].weight]["step"]) == 11.0


def test_16_bit_params_keep_float32_state():
    for dtype in (torch.float16, torch.bfloat16):
        p = torch.nn.Parameter(torch.randn(50).to(dtype))
        ref = p.detach().float().numpy().copy()
        opt = adamcore_torch.Adam([p], lr=0.01)
        ref_opt = adamcore.Adam([ref], lr=0.01)
        for step in range(3):
            g = torch.randn(50, generator=torch.Generator().manual_seed(step))
            p.grad = g.to(dtype)
            opt.step()
            ref_opt.step([p.grad.float().numpy()])
            ref[...] = p.detach().float().numpy()  # the same rounding of the param each step
        assert opt.state[p]["exp_avg"].dtype == torch.float32
        np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), ref_opt.state[0]["exp_avg"],
                                   rtol=1e-6)


def test_torch_fp16_checkpoint_state_is_widened_without_loss():
    p = torch.nn.Parameter(torch.randn(10).half())
    theirs = torch.optim.Adam([p], lr=1e-2)
    p.grad = torch.randn(10).half()
    theirs.step()
    ours = adamcore_torch.Adam([p], lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    assert ours.state[p]["exp_avg"].dtype == torch.float32
    torch.testing.assert_close(ours.state[p]["exp_avg"], theirs.state[p]["exp_avg"].float())


def test_checkpoint_torch_to_adamcore_torch_and_back():
    a, b = _mlp(), _mlp()
    theirs = torch.optim.AdamW(a.parameters(), lr=1e-2, amsgrad=True)
    _train(a, theirs, range(10))
    with torch.no_grad():
        for p, q in zip(b.parameters(), a.parameters()):
            p.copy_(q)
    ours = adamcore_torch.AdamW(b.parameters(), lr=1e-2, amsgrad=True)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    _train(a, theirs, range(10, 20))
    _train(b, ours, range(10, 20))
    _assert_same_params(a, b)
    # and back: adamcore.torch's checkpoint continues in torch.optim.AdamW
    c = _mlp()
    with torch.no_grad():
        for p, q in zip(c.parameters(), b.parameters()):
            p.copy_(q)
    back = torch.optim.AdamW(c.parameters(), lr=1e-2, amsgrad=True)
    back.load_state_dict(copy.deepcopy(ours.state_dict()))
    _train(b, ours, range(20, 30))
    _train(c, back, range(20, 30))
    _assert_same_params(b, c)


def test_numpy_adamcore_checkpoint_loads_into_adamcore_torch():
    """adamcore.AdamW on NumPy arrays, its state dict (NumPy arrays) into adamcore.torch."""
    model = _mlp()
    arrays = [p.detach().numpy().copy() for p in model.parameters()]
    np_opt = adamcore.AdamW(arrays, lr=1e-2)
    for step in range(5):
        gen = np.random.default_rng(step)
        np_opt.step([gen.standard_normal(a.shape).astype(np.float32) for a in arrays])
    with torch.no_grad():
        for p, a in zip(model.parameters(), arrays):
            p.copy_(torch.from_numpy(a))
    opt = adamcore_torch.AdamW(model.parameters(), lr=1e-2)
    opt.load_state_dict(np_opt.state_dict())
    state = opt.state[model[0].weight]
    assert isinstance(state["exp_avg"], torch.Tensor) and float(state["step"]) == 5.0
    for step in range(5, 8):
        gen = np.random.default_rng(step)
        grads = [gen.standard_normal(a.shape).astype(np.float32) for a in arrays]
        np_opt.step(grads)
        for p, g in zip(model.parameters(), grads):
            p.grad = torch.from_numpy(g)
        opt.step()
    for p, a in zip(model.parameters(), arrays):
        np.testing.assert_allclose(p.detach().numpy(), a, rtol=1e-6, atol=1e-7)


def test_bad_checkpoints_change_nothing():
    model = _mlp()
    opt = adamcore_torch.Adam(model.parameters(), lr=0.1, amsgrad=True)
    _train(model, opt, range(2))
    good = copy.deepcopy(opt.state_dict())
    before = copy.deepcopy(opt.state_dict())

    def broken(edit):
        sd = copy.deepcopy(good)
        edit(sd)
        return sd

    cases = {
        "group count": lambda sd: sd["param_groups"].append(dict(sd["param_groups"][0])),
        "param count": lambda sd: sd["param_groups"][0]["params"].pop(),
        "shape": lambda sd: sd["state"][0].__setitem__("exp_avg", torch.zeros(3)),
        "dtype": lambda sd: sd["state"][0].__setitem__(
            "exp_avg_sq", sd["state"][0]["exp_avg_sq"].to(torch.int32)),
        "missing amsgrad state": lambda sd: sd["state"][1].pop("max_exp_avg_sq"),
    }
    for name, edit in cases.items():
        with pytest.raises(ValueError):
            opt.load_state_dict(broken(edit))
        now = opt.state_dict()
        assert now["param_groups"] == before["param_groups"], name
        for i in before["state"]:
            for key, value in before["state"][i].items():
                assert torch.equal(now["state"][i][key], value), (name, i, key)


def test_constructor_arguments():
    params = list(_mlp().parameters())
    for flags in (dict(foreach=True), dict(fused=True), dict(foreach=False, fused=False)):
        opt = adamcore_torch.AdamW(params, **flags)  # accepted; the core is always fused
        for key, value in flags.items():
            assert opt.param_groups[0][key] is value
    with pytest.raises(ValueError, match="capturable"):
        adamcore_torch.AdamW(params, capturable=True)
    with pytest.raises(ValueError, match="differentiable"):
        adamcore_torch.Adam(params, differentiable=True)
    with pytest.raises(ValueError, match="lr"):
        adamcore_torch.Adam(params, lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        adamcore_torch.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="LambdaLR"):
        adamcore_torch.Adam(params, lr=lambda count: 0.1)
    with pytest.raises(TypeError, match="dtype"):
        adamcore_torch.Adam([torch.zeros(3, dtype=torch.int64)])
    assert isinstance(adamcore_torch.AdamW(params), torch.optim.Optimizer)
    assert adamcore_torch.AdamW(params).param_groups[0]["weight_decay"] == 1e-2


def test_decouple_lr_scales_decay_with_the_scheduler():
    p = torch.nn.Parameter(torch.ones(4))
    opt = adamcore_torch.AdamW([p], lr=0.1, weight_decay=0.5, decouple_lr=True)
    assert opt.param_groups[0]["max_lr"] == 0.1
    ref = np.ones(4, np.float32)
    ref_opt = adamcore.AdamW([ref], lr=0.1, weight_decay=0.5, decouple_lr=True, max_lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    for _ in range(3):
        ref_opt.param_groups[0]["lr"] = opt.param_groups[0]["lr"]
        p.grad = torch.full((4,), 0.5)
        opt.step()
        ref_opt.step([np.full(4, 0.5, np.float32)])
        sched.step()
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=1e-7)


def test_bad_grads_change_nothing():
    model = _mlp()
    opt = adamcore_torch.Adam(model.parameters(), lr=0.1)
    _train(model, opt, range(2))  # the steady plan is in use
    snapshot = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[4].bias.grad_dtype = None  # torch checks grad dtypes on assignment unless told not to
    model[4].bias.grad = torch.ones(1, dtype=torch.float64)  # the last param's grad is wrong
    with pytest.raises(TypeError, match="grad 5 has dtype float64"):
        opt.step()
    model[4].bias.grad = torch.ones(1)
    model[2].weight.grad = torch.full_like(model[2].weight, float("nan"))
    opt.param_groups[0]["check_finite"] = True
    with pytest.raises(FloatingPointError):
        opt.step()
    sd, params = snapshot
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p.detach(), q)
    for i, s in opt.state_dict()["state"].items():
        assert float(s["step"]) == float(sd["state"][i]["step"]) == 2.0
        assert torch.equal(s["exp_avg"], sd["state"][i]["exp_avg"])


def test_check_finite_switched_on_while_the_plan_is_in_use():
    model = _mlp()
    opt = adamcore_torch.Adam(model.parameters(), lr=0.1)
    _train(model, opt, range(2))
    assert opt._plan is not None
    opt.param_groups[0]["check_finite"] = True
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    model[0].bias.grad[3] = float("inf")
    with pytest.raises(FloatingPointError):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))


def test_reference_backend_route_for_torch_tensors(monkeypatch):
    """Where no CUDA backend is built, torch CUDA tensors take the Reference backend: run that
    route on CPU tensors (which require grad) and compare with the core."""
    from adamcore import _dispatch, _engine, _steady
    import adamcore.torch as at

    a, b = _mlp(), _mlp()
    ours = at.AdamW(a.parameters(), lr=1e-2, amsgrad=True)
    native = at.AdamW(b.parameters(), lr=1e-2, amsgrad=True)
    for module in (_engine, _steady):  # the general step and the steady plan's backend choice
        monkeypatch.setattr(module, "backend_for", lambda x: _dispatch.REFERENCE)
    _train(a, ours, range(5))
    monkeypatch.undo()
    _train(b, native, range(5))
    assert ours._plan is None
    _assert_same_params(a, b, tol=1e-6)


def test_importing_adamcore_does_not_import_torch():
    code = "import sys, adamcore; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mlp_matches_torch():
    a, b = _mlp().cuda(), _mlp().cuda()
    ours = adamcore_torch.AdamW(a.parameters(), lr=1e-2, amsgrad=True, weight_decay=0.1)
    theirs = torch.optim.AdamW(b.parameters(), lr=1e-2, amsgrad=True, weight_decay=0.1)
    for model, opt in ((a, ours), (b, theirs)):
        for step in range(10):
            X, y = (t.cuda() for t in _batch(step))
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(X), y).backward()
            opt.step()
    _assert_same_params(a, b, tol=1e-5)
    assert ours.state[a[0].weight]["exp_avg"].is_cuda
