"""adamcore.torch held to torch's own optimizer database (OptimizerInfo in torch's test package).

For Adam and AdamW, every CPU input of ``optim_inputs_func`` runs through the drop-in and
torch.optim side by side (trajectories, states, state dicts and param groups after a load), the
constructor errors of ``optim_error_inputs_func`` are raised as torch raises them, and
checkpoints move between Adam and AdamW of both libraries as torch.optim moves them.
"""

import copy
import re
import warnings

import pytest

torch = pytest.importorskip("torch")
common_optimizers = pytest.importorskip(
    "torch.testing._internal.common_optimizers",
    reason="torch's test package (needs expecttest)")

import adamcore.torch as adamcore_torch  # noqa: E402

OPTIM_DB = {info.optim_cls.__name__: info for info in common_optimizers.optim_db
            if info.optim_cls.__name__ in ("Adam", "AdamW")}
NAMES = sorted(OPTIM_DB)
SHAPES = [(5, 3), (3,), (2, 2, 2), (), (17,)]

# Where adamcore deliberately accepts what torch refuses, and why (docs/python-api.md says so).
ACCEPTED = {
    # every adamcore step is one fused multi-tensor call: foreach is kept in the param group
    # for torch's checkpoints but does not choose an implementation, so a tensor lr or tensor
    # betas have no foreach path to be refused by
    "lr as Tensor doesn't work with foreach & not capturable",
    r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True",
}


def _inputs(name: str, dtype):
    info = OPTIM_DB[name]
    return info.optim_inputs_func(device="cpu", dtype=dtype)


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=dtype).requires_grad_() for s in SHAPES]


def _twins(name: str, optim_input, dtype):
    """torch.optim's optimizer and adamcore's, over equal copies of the same params."""
    ours_p, theirs_p = _params(dtype), _params(dtype)
    kwargs = dict(optim_input.kwargs)
    ours = getattr(adamcore_torch, name)(ours_p, **kwargs)
    theirs = getattr(torch.optim, name)(theirs_p, **kwargs)
    return ours, ours_p, theirs, theirs_p


def _set_grads(params_pair, step: int, dtype):
    gen = torch.Generator().manual_seed(100 + step)
    for p, q in zip(*params_pair):
        g = torch.randn(p.shape, generator=gen, dtype=dtype)
        p.grad, q.grad = g.clone(), g.clone()


def _tol(dtype):
    return dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)


def _assert_same_state(ours, ours_p, theirs, theirs_p, dtype):
    for p, q in zip(ours_p, theirs_p):
        torch.testing.assert_close(p.detach(), q.detach(), **_tol(dtype))
        mine, torchs = ours.state[p], theirs.state[q]
        assert sorted(mine) == sorted(torchs)
        for key in torchs:
            if key == "step":
                assert float(mine[key]) == float(torchs[key])
            else:
                torch.testing.assert_close(mine[key], torchs[key], **_tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", NAMES)
def test_trajectories_match_torch_for_every_db_input(name, dtype):
    for optim_input in _inputs(name, dtype):
        ours, ours_p, theirs, theirs_p = _twins(name, optim_input, dtype)
        for step in range(6):
            _set_grads((ours_p, theirs_p), step, dtype)
            ours.step()
            theirs.step()
            _assert_same_state(ours, ours_p, theirs, theirs_p, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_state_dicts_cross_load_and_continue(name):
    dtype = torch.float32
    for optim_input in _inputs(name, dtype):
        ours, ours_p, theirs, theirs_p = _twins(name, optim_input, dtype)
        for step in range(3):
            _set_grads((ours_p, theirs_p), step, dtype)
            ours.step()
            theirs.step()
        # swap checkpoints: each optimizer continues from the other's state
        ours_sd, theirs_sd = copy.deepcopy(ours.state_dict()), copy.deepcopy(theirs.state_dict())
        ours.load_state_dict(theirs_sd)
        theirs.load_state_dict(ours_sd)
        for group, torch_group in zip(ours.param_groups, theirs.param_groups):
            for key, value in torch_group.items():
                if key != "params":
                    assert group[key] == value, (optim_input.desc, key)
        for step in range(3, 6):
            _set_grads((ours_p, theirs_p), step, dtype)
            ours.step()
            theirs.step()
            _assert_same_state(ours, ours_p, theirs, theirs_p, dtype)


def _error_cases():
    for name in NAMES:
        for case in OPTIM_DB[name].optim_error_inputs_func(device="cpu", dtype=torch.float32):
            if case.error_on == common_optimizers.OptimizerErrorEnum.CONSTRUCTION_ERROR:
                yield pytest.param(name, case, id=f"{name}-{case.optimizer_error_input.desc}")


def _construct(cls, case):
    inp = case.optimizer_error_input
    params = inp.params if inp.params is not None else [torch.randn(2, 3, requires_grad=True)]
    return cls(params, **inp.kwargs)


@pytest.mark.parametrize("name, case", list(_error_cases()))
def test_construction_errors_as_torch_raises_them(name, case):
    desc = case.optimizer_error_input.desc
    torch_cls, ours_cls = getattr(torch.optim, name), getattr(adamcore_torch, name)
    outcomes = []
    for cls in (torch_cls, ours_cls):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                _construct(cls, case)
                outcomes.append(None)
            except Exception as e:  # noqa: BLE001 - compared below
                outcomes.append(e)
    theirs, ours = outcomes
    if theirs is None:
        pytest.skip(f"torch itself does not raise on {desc!r} when constructed alone")
    if case.error_regex in ACCEPTED or desc in ACCEPTED:
        assert ours is None, f"{desc}: documented as accepted by adamcore, but raised {ours!r}"
        return
    assert ours is not None, f"{desc}: torch raises {theirs!r}, adamcore accepted it"
    assert type(ours) is type(theirs), f"{desc}: torch raises {theirs!r}, adamcore {ours!r}"
    assert re.search(case.error_regex, str(ours)), (desc, str(ours))


def test_fused_on_meta_params_raises_as_torch():
    """torch constructs, then refuses at the step; so does the drop-in, with torch's words."""
    errors = []
    for cls in (torch.optim.Adam, adamcore_torch.Adam):
        meta = [torch.empty(3, device="meta", requires_grad=True)]
        opt = cls(meta, fused=True)
        meta[0].grad = torch.empty(3, device="meta")
        with pytest.raises(RuntimeError) as e:
            opt.step()
        errors.append(str(e.value))
    assert errors[0] == errors[1]


# ---- checkpoints between Adam and AdamW, both libraries ------------------------------------------
LIBS = {"torch": torch.optim, "adamcore": adamcore_torch}


@pytest.mark.parametrize("source_lib", LIBS)
@pytest.mark.parametrize("target_lib", LIBS)
@pytest.mark.parametrize("source, target", [("Adam", "AdamW"), ("AdamW", "Adam")])
def test_adam_adamw_checkpoints_behave_as_in_torch(source_lib, target_lib, source, target):
    """The param groups and the trajectory after loading follow torch.optim's own rules (AdamW
    stays decoupled whatever it loads), and the drop-in agrees with torch.optim."""
    params = _params(torch.float32)
    src = getattr(LIBS[source_lib], source)(params, lr=0.1, weight_decay=0.5)
    _set_grads((params, params), 0, torch.float32)
    src.step()
    sd = copy.deepcopy(src.state_dict())

    results = {}
    for lib in ("torch", target_lib):
        ps = [p.detach().clone().requires_grad_() for p in params]
        opt = getattr(LIBS[lib], target)(ps, lr=0.1, weight_decay=0.5)
        opt.load_state_dict(copy.deepcopy(sd))
        for step in range(1, 6):
            _set_grads((ps, ps), step, torch.float32)
            opt.step()
        results[lib] = (opt.param_groups[0]["decoupled_weight_decay"], ps)
    assert results[target_lib][0] == results["torch"][0]
    if target == "AdamW":
        assert results[target_lib][0] is True
    for p, q in zip(results[target_lib][1], results["torch"][1]):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
