"""Trajectories against torch.optim.Adam/AdamW, and checkpoints exchanged with it."""

import copy

import numpy as np
import pytest

import adamcore

torch = pytest.importorskip("torch")

TORCH_CONFIGS = {
    "adam": (torch.optim.Adam, adamcore.Adam, dict()),
    "adam-l2": (torch.optim.Adam, adamcore.Adam, dict(weight_decay=0.1)),
    "adam-amsgrad-maximize": (torch.optim.Adam, adamcore.Adam, dict(amsgrad=True, maximize=True)),
    "adamw": (torch.optim.AdamW, adamcore.AdamW, dict()),
    "adamw-amsgrad": (torch.optim.AdamW, adamcore.AdamW, dict(amsgrad=True, weight_decay=0.1)),
    "adamw-maximize-betas": (torch.optim.AdamW, adamcore.AdamW,
                             dict(maximize=True, betas=(0.8, 0.99), eps=1e-6)),
}
SHAPES = [(7,), (33, 17), (1023,), ()]


def _grads(step, dtype=torch.float32):
    gen = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES]


@pytest.mark.parametrize("name", TORCH_CONFIGS)
@pytest.mark.parametrize("library", ["numpy", "torch"])
def test_100_steps_match_torch(name, library, simd_level):
    torch_cls, ours_cls, kw = TORCH_CONFIGS[name]
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) for s in SHAPES]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    topt = torch_cls(theirs, lr=1e-2, **kw)
    ours = [x.clone().numpy() if library == "numpy" else x.clone() for x in start]
    opt = ours_cls(ours, lr=1e-2, **kw)
    for step in range(100):
        grads = _grads(step)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        topt.step()
        opt.step([g.numpy() if library == "numpy" else g for g in grads])
    for a, b in zip(ours, theirs):
        a = torch.as_tensor(a)
        # float32 rounding accumulated over 100 steps of size ~lr
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)


def test_nn_parameter_updated_in_its_own_storage():
    model = torch.nn.Linear(5, 3)
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    before = [p.detach().clone() for p in params]
    opt = adamcore.AdamW(params, lr=0.1)
    grads = [torch.ones_like(p) for p in params]
    out = opt.step(grads)
    for p, q, ptr, b in zip(params, out, pointers, before):
        assert q is p and p.requires_grad and isinstance(p, torch.nn.Parameter)
        assert p.data_ptr() == ptr
        assert not torch.equal(p.detach(), b)
    # the module sees the new values: no copy was updated instead
    assert torch.equal(model.weight.detach(), params[0].detach())


def test_parameters_on_the_steady_path_follow_storage_swaps():
    """After the first step nn.Parameters take the planned path; ``p.data = ...`` (same object,
    new storage) must move the update to the new storage, as torch.optim does."""
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) for s in SHAPES]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    ours = [torch.nn.Parameter(x.clone()) for x in start]
    topt = torch.optim.AdamW(theirs, lr=1e-2, amsgrad=True)
    opt = adamcore.AdamW(ours, lr=1e-2, amsgrad=True)
    for step in range(12):
        if step == 6:
            old = ours[1].data
            kept = old.clone()
            for p in (ours[1], theirs[1]):
                p.data = p.data.clone()  # same Parameter object, new storage
        grads = _grads(step)
        for p, g in zip(theirs, grads):
            p.grad = g
        topt.step()
        opt.step(grads)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-6, atol=2e-7)
    assert torch.equal(old, kept)  # the storage the parameter left is no longer written


def test_bad_grad_on_the_steady_path_changes_nothing():
    params = [torch.nn.Parameter(torch.ones(s)) for s in SHAPES]
    opt = adamcore.Adam(params, lr=0.1)
    opt.step(_grads(0))
    opt.step(_grads(1))  # the planned path from here
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict()["state"])
    bad = _grads(2)
    bad[2] = torch.ones(1024)
    with pytest.raises(ValueError, match="shape"):
        opt.step(bad)
    wrong_dtype = _grads(2, dtype=torch.float64)
    with pytest.raises(TypeError):
        opt.step(wrong_dtype)
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
    after = opt.state_dict()["state"]
    for i, s in state.items():
        assert after[i]["step"] == s["step"] == 2
        assert torch.equal(after[i]["exp_avg"], s["exp_avg"])


def _torch_run(steps, kw, params=None, opt=None):
    if params is None:
        gen = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in SHAPES]
        opt = torch.optim.AdamW(params, lr=1e-2, **kw)
    for step in steps:
        for p, g in zip(params, _grads(step)):
            p.grad = g
        opt.step()
    return params, opt


@pytest.mark.parametrize("kw", [dict(), dict(amsgrad=True, weight_decay=0.1)])
def test_load_torch_state_dict_then_continue(kw):
    """torch.optim.AdamW for 10 steps, its checkpoint into adamcore (NumPy), 10 more steps,
    equals torch doing all 20."""
    params, topt = _torch_run(range(10), kw)
    checkpoint = topt.state_dict()
    ours = [p.detach().numpy().copy() for p in params]
    opt = adamcore.AdamW(ours, lr=1e-2, **kw)
    opt.load_state_dict(checkpoint)
    assert opt.state[0]["step"] == 10 and isinstance(opt.state[0]["exp_avg"], np.ndarray)
    for step in range(10, 20):
        opt.step([g.numpy() for g in _grads(step)])
    _torch_run(range(10, 20), kw, params, topt)
    for a, b in zip(ours, params):
        torch.testing.assert_close(torch.as_tensor(a), b.detach(), rtol=1e-5, atol=1e-6)


def test_adamcore_state_dict_loads_into_torch():
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen) for s in SHAPES]
    ours = [x.clone() for x in start]
    opt = adamcore.AdamW(ours, lr=1e-2, amsgrad=True)
    for step in range(10):
        opt.step(_grads(step))
    theirs = [torch.nn.Parameter(x.clone()) for x in ours]
    topt = torch.optim.AdamW(theirs, lr=1e-2, amsgrad=True)
    # torch keeps the loaded tensors themselves when their dtype and device fit: a checkpoint,
    # not the live state, is what it must get
    topt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for step in range(10, 20):
        opt.step(_grads(step))
    _torch_run(range(10, 20), dict(amsgrad=True), theirs, topt)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_float16_torch_state_is_widened_on_load():
    p16 = [torch.nn.Parameter(torch.randn(10).half())]
    topt = torch.optim.Adam(p16, lr=1e-2)
    p16[0].grad = torch.randn(10).half()
    topt.step()
    ours = [p16[0].detach().clone()]
    opt = adamcore.Adam(ours, lr=1e-2)
    opt.load_state_dict(topt.state_dict())
    assert opt.state[0]["exp_avg"].dtype == torch.float32
