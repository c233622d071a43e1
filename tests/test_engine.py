"""What the steady paths cache, and what they must notice changing between steps.

A steady path imports the params and state once and then only takes grads; everything it
holds must be re-checked before each use (storage moved under the same object, shapes changed
in place), the tensors it writes must look written to autograd, and the torch drop-in must get
its steady plan on CUDA as on the CPU. Also: AdamW stays AdamW after loading Adam's state.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import adamcore


# ---- state storage that moves under the same tensor (use-after-free before) ------------------

_MOVED_STATE = r"""
import torch, adamcore, adamcore.torch as at

def train(opt_of, move):
    torch.manual_seed(0)
    p = torch.randn(1 << 16)
    ref = p.clone()
    ours, theirs = opt_of([p]), opt_of([ref])
    grads = [torch.randn(1 << 16) for _ in range(8)]
    for k, g in enumerate(grads):
        if k == 2:  # the steady path is built by now
            move(ours)
            for _ in range(200):  # reuse the freed memory, if it was freed
                torch.full((1 << 16,), 7.0).sum()
        ours.step([g])
        theirs.step([g])
    state = ours.state[0]
    assert torch.equal(p, ref), "param differs after the state moved"
    assert torch.equal(state["exp_avg"], theirs.state[0]["exp_avg"]), "exp_avg stopped"
    assert torch.equal(state["exp_avg_sq"], theirs.state[0]["exp_avg_sq"]), "exp_avg_sq stopped"

def share(opt):
    opt.state[0]["exp_avg"].share_memory_()
    opt.state[0]["exp_avg_sq"].share_memory_()

def swap(opt):
    for key in ("exp_avg", "exp_avg_sq"):
        s = opt.state[0][key]
        s.data = s.clone()

for move in (share, swap):
    train(lambda ps: adamcore.Adam(ps, lr=0.1), move)
    train(lambda ps: adamcore.AdamW(ps, lr=0.1, amsgrad=True), move)
print("ok")
"""


def test_state_moved_under_the_same_tensor_is_followed():
    """``share_memory_()`` (the usual multiprocessing setup) or ``.data = ...`` on a state
    tensor after the steady path is built: before, the plan kept writing the old (freed)
    buffer: a crash, heap corruption, or a state that silently stopped advancing. Run in a
    subprocess so that a crash fails this test and not the suite."""
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, "-c", _MOVED_STATE], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_dropin_follows_a_moved_state_tensor():
    torch = pytest.importorskip("torch")
    import adamcore.torch as at

    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(1000))
    b = torch.nn.Parameter(a.detach().clone())
    ours, ref = at.Adam([a], lr=0.1), torch.optim.Adam([b], lr=0.1)
    for k in range(6):
        g = torch.randn(1000)
        if k == 3:
            ours.state[a]["exp_avg"].share_memory_()
        a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(ours.state[a]["exp_avg"], ref.state[b]["exp_avg"])
    torch.testing.assert_close(a.detach(), b.detach())


# ---- a NumPy param reshaped in place ----------------------------------------------------------

def test_numpy_param_reshaped_in_place():
    p = np.arange(6, dtype=np.float32)
    opt = adamcore.Adam([p], lr=0.1)
    for _ in range(2):
        opt.step([np.ones(6, np.float32)])
    p.shape = (2, 3)  # the same object and memory, a new shape
    before = p.copy()
    with pytest.raises(ValueError, match=r"grad 0 has shape \(6,\) but param 0 has shape \(2, 3\)"):
        opt.step([np.ones(6, np.float32)])
    np.testing.assert_array_equal(p, before)
    # a grad of the new shape is the right one (state of the old shape fails the general step's
    # own check with its message; the reshape is the caller's, so either outcome is clear)
    try:
        opt.step([np.ones((2, 3), np.float32)])
    except ValueError as e:
        assert "shape" in str(e) and "param 0" in str(e)
        np.testing.assert_array_equal(p, before)


def test_numpy_param_made_read_only_after_the_steady_path():
    p = np.zeros(5, np.float32)
    opt = adamcore.Adam([p], lr=0.1)
    for _ in range(2):
        opt.step([np.ones(5, np.float32)])
    p.flags.writeable = False
    before = p.copy()
    with pytest.raises(ValueError, match="param 0 is read-only"):
        opt.step([np.ones(5, np.float32)])
    np.testing.assert_array_equal(p, before)


# ---- autograd sees the update -----------------------------------------------------------------

def _autograd_after_step(make, steps_before):
    torch = pytest.importorskip("torch")
    w = torch.nn.Parameter(torch.ones(4))
    opt, step = make(w)
    for _ in range(steps_before):
        step(opt, w)
    y = (w * w).sum()
    step(opt, w)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def _class_step(opt, w):
    import torch

    opt.step([torch.ones(4)])


def _dropin_step(opt, w):
    import torch

    w.grad = torch.ones(4)
    opt.step()


@pytest.mark.parametrize("steps_before", [0, 3], ids=["general", "steady"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_autograd_sees_the_update_of_adamcore_adam(steps_before, amsgrad):
    _autograd_after_step(lambda w: (adamcore.Adam([w], lr=0.1, amsgrad=amsgrad), _class_step),
                         steps_before)


@pytest.mark.parametrize("steps_before", [0, 3], ids=["general", "steady"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_autograd_sees_the_update_of_the_dropin(steps_before, amsgrad):
    import adamcore.torch as at

    _autograd_after_step(lambda w: (at.AdamW([w], lr=0.1, amsgrad=amsgrad), _dropin_step),
                         steps_before)


def test_torch_optim_raises_the_same():
    """The reference behaviour the two tests above follow."""
    torch = pytest.importorskip("torch")
    _autograd_after_step(lambda w: (torch.optim.Adam([w], lr=0.1), _dropin_step), 3)


def test_state_versions_bumped_too():
    torch = pytest.importorskip("torch")
    w = torch.ones(4)
    opt = adamcore.Adam([w], lr=0.1)
    for _ in range(3):
        versions = [w._version, *(opt.state[0][k]._version for k in ("exp_avg", "exp_avg_sq"))] \
            if opt.state else [w._version, -1, -1]
        opt.step([torch.ones(4)])
        now = [w._version, opt.state[0]["exp_avg"]._version, opt.state[0]["exp_avg_sq"]._version]
        assert all(n > v for n, v in zip(now, versions)), (versions, now)


# ---- AdamW stays decoupled after loading Adam's state (as torch.optim.AdamW) -------------------

def _torch_pair():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    return torch, torch.nn.Parameter(torch.randn(8))


@pytest.mark.parametrize("source", ["adamcore.torch", "torch.optim"])
def test_dropin_adamw_loading_adam_state_stays_decoupled(source):
    torch, p = _torch_pair()
    import adamcore.torch as at

    adam_cls = at.Adam if source == "adamcore.torch" else torch.optim.Adam
    q = torch.nn.Parameter(p.detach().clone())
    sd_ours = adam_cls([p], lr=0.1, weight_decay=0.5).state_dict()
    sd_theirs = torch.optim.Adam([q], lr=0.1, weight_decay=0.5).state_dict()
    ours, theirs = at.AdamW([p]), torch.optim.AdamW([q])
    ours.load_state_dict(sd_ours)
    theirs.load_state_dict(sd_theirs)
    assert theirs.param_groups[0]["decoupled_weight_decay"] is True  # torch's behaviour
    assert ours.param_groups[0]["decoupled_weight_decay"] is True
    for _ in range(5):
        g = torch.randn(8)
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(p.detach(), q.detach())


def test_adamcore_adamw_loading_adam_state_stays_decoupled():
    p = np.linspace(-1, 1, 8).astype(np.float32)
    q = p.copy()
    adam = adamcore.Adam([p.copy()], lr=0.1, weight_decay=0.5)
    adam.step([np.ones(8, np.float32)])
    opt = adamcore.AdamW([p], lr=0.1, weight_decay=0.5)
    opt.load_state_dict(adam.state_dict())
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    ref = adamcore.AdamW([q], lr=0.1, weight_decay=0.5)
    ref.load_state_dict({**adam.state_dict(), "param_groups": [
        {**adam.state_dict()["param_groups"][0], "decoupled_weight_decay": True}]})
    for k in range(4):
        g = np.full(8, 0.5 + k, np.float32)
        opt.step([g])
        ref.step([g])
    np.testing.assert_array_equal(p, q)
    # plain Adam keeps what the checkpoint says
    back = adamcore.Adam([np.zeros(8, np.float32)], decoupled_weight_decay=True)
    back.load_state_dict(adam.state_dict())
    assert back.param_groups[0]["decoupled_weight_decay"] is False


def test_adamcore_adamw_matches_torch_adamw_from_a_torch_adam_checkpoint():
    torch, p = _torch_pair()
    q = torch.nn.Parameter(p.detach().clone())
    adam = torch.optim.Adam([q], lr=0.1, weight_decay=0.5)
    q.grad = torch.ones(8)
    adam.step()
    x = q.detach().numpy().copy()
    theirs = torch.optim.AdamW([q], lr=0.1, weight_decay=0.5)
    theirs.load_state_dict(adam.state_dict())
    ours = adamcore.AdamW([x], lr=0.1, weight_decay=0.5)
    ours.load_state_dict(adam.state_dict())
    for k in range(5):
        g = torch.full((8,), 0.25 * (k + 1))
        q.grad = g.clone()
        theirs.step()
        ours.step([g.numpy().copy()])
    np.testing.assert_allclose(x, q.detach().numpy(), rtol=1e-6, atol=1e-6)


# ---- the torch drop-in on CUDA tensors takes the CUDA backend's steady plan --------------------

def test_dropin_on_cuda_takes_the_steady_plan(monkeypatch):
    """Over the stand-in for adamcore._cuda of test_cuda_unavailable.py: after the first
    (general) step the drop-in builds the backend's plan once and then only steps it; before,
    every step was a one-shot call that rebuilt and uploaded the work table."""
    torch = pytest.importorskip("torch")
    import adamcore.torch as at
    from adamcore import _cuda_backend, _engine, _steady
    from test_cuda_unavailable import _FakeCuda

    fake = _FakeCuda()
    backend = _cuda_backend.CudaNative(fake)
    monkeypatch.setattr(_cuda_backend, "_current_stream", lambda lib, device: 1234)
    monkeypatch.setattr(_cuda_backend, "_device_key", lambda x: ("torch", 0))
    monkeypatch.setattr(_steady, "backend_for", lambda x: backend)  # the steady plan
    monkeypatch.setattr(_engine, "backend_for", lambda x: backend)  # the general step
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(5))]
    opt = at.AdamW(params, lr=0.1)
    for _ in range(4):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["adam_step", "plan", "plan.step", "plan.step", "plan.step"], kinds
    assert [float(opt.state[p]["step"]) for p in params] == [4.0, 4.0]
    # a param swapped for new storage: the plan rebuilds before it steps
    params[0].data = torch.zeros(3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert [c[0] for c in fake.calls[-2:]] in (["plan", "plan.step"], ["adam_step", "plan"])
    assert fake.calls[-2][1][0] == params[0].data_ptr() or fake.calls[-1][1][0] == \
        params[0].data_ptr()
