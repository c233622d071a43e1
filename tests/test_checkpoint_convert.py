"""Checkpoints between adamcore and torch.optim: adamcore.convert_state_dict, load(like=...),
the library record of adamcore.save, and the errors of save/load that name the user's path."""

import json
import sys

import numpy as np
import pytest

import adamcore

torch = pytest.importorskip("torch")

SHAPES = [(7,), (3, 5), (), (17,)]


def _grads(rng, params):
    return [rng.standard_normal(tuple(p.shape)).astype(np.float32 if p.dtype in
            (np.float32, torch.float32) else np.float64) for p in params]


def _numpy_params(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dt) for s, dt in
            zip(SHAPES, [np.float32, np.float64, np.float32, np.float64])]


def _torch_step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.from_numpy(g.copy())
    opt.step()


@pytest.mark.parametrize("torch_cls, ours_cls, kw", [
    (torch.optim.Adam, adamcore.Adam, {}),
    (torch.optim.AdamW, adamcore.AdamW, {"amsgrad": True, "weight_decay": 0.1}),
])
def test_adamcore_numpy_to_torch_optim_and_back_bit_equal(torch_cls, ours_cls, kw):
    """adamcore (NumPy) 3 steps -> torch.optim (0 steps) -> adamcore continues: the same
    trajectory, bit for bit, as adamcore run without the detour."""
    rng = np.random.default_rng(1)
    params = _numpy_params()
    opt = ours_cls(params, lr=0.01, **kw)
    for _ in range(3):
        opt.step(_grads(rng, params))
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    topt = torch_cls(tparams, lr=0.01, **kw)
    topt.load_state_dict(adamcore.convert_state_dict(opt.state_dict(), like=tparams))
    tsd = topt.state_dict()
    for i, p in enumerate(params):
        for key in ("exp_avg", "exp_avg_sq"):
            assert isinstance(tsd["state"][i][key], torch.Tensor)
            np.testing.assert_array_equal(tsd["state"][i][key].numpy(), opt.state[i][key])
    # back into a fresh adamcore optimizer over copies, then both continue
    copies = [p.copy() for p in params]
    other = ours_cls(copies, lr=0.01, **kw)
    other.load_state_dict(adamcore.convert_state_dict(tsd, like=copies))
    for _ in range(4):
        grads = _grads(rng, params)
        opt.step(grads)
        other.step(grads)
    for a, b in zip(params, copies):
        np.testing.assert_array_equal(a, b)


def test_torch_optim_through_adamcore_and_back_continues_its_trajectory(tmp_path):
    """torch.optim 3 steps -> adamcore.Adam (NumPy) -> save/load -> torch.optim continues:
    bit-equal to torch.optim run without interruption."""
    rng = np.random.default_rng(2)
    start = _numpy_params(3)
    run = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in start]
    topt = torch.optim.AdamW(run, lr=0.01, weight_decay=0.05)
    history = [_grads(rng, start) for _ in range(8)]
    for g in history[:3]:
        _torch_step(topt, run, g)
    numpy_params = [p.detach().numpy().copy() for p in run]
    middle = adamcore.AdamW(numpy_params, lr=0.01, weight_decay=0.05)
    middle.load_state_dict(adamcore.convert_state_dict(topt.state_dict(), like=numpy_params))
    adamcore.save(middle, tmp_path / "m.ckpt")
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in run]
    topt2 = torch.optim.AdamW(resumed, lr=0.01, weight_decay=0.05)
    topt2.load_state_dict(adamcore.load(tmp_path / "m.ckpt", like=resumed))
    for g in history[3:]:
        _torch_step(topt, run, g)
        _torch_step(topt2, resumed, g)
    for a, b in zip(run, resumed):
        assert torch.equal(a, b)


@pytest.mark.parametrize("source", ["torch.optim", "adamcore.torch"])
def test_torch_checkpoint_loads_back_as_torch_tensors(tmp_path, source):
    """adamcore.load of a torch-made checkpoint goes straight into torch.optim (on main it
    gave NumPy arrays, which torch.optim refuses with 'expected a sequence of integers')."""
    import adamcore.torch as act

    rng = np.random.default_rng(4)
    start = _numpy_params(5)
    run = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in start]
    cls = torch.optim.Adam if source == "torch.optim" else act.Adam
    opt = cls(run, lr=0.02, amsgrad=True)
    history = [_grads(rng, start) for _ in range(6)]
    for g in history[:2]:
        _torch_step(opt, run, g)
    adamcore.save(opt, tmp_path / "t.ckpt")
    sd = adamcore.load(tmp_path / "t.ckpt")
    for i, p in enumerate(run):
        entry = sd["state"][i]
        assert isinstance(entry["exp_avg"], torch.Tensor) and entry["exp_avg"].dtype == p.dtype
        assert isinstance(entry["step"], torch.Tensor) and entry["step"].dtype == torch.float32
        assert torch.equal(entry["max_exp_avg_sq"], opt.state[p]["max_exp_avg_sq"])
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in run]
    topt = torch.optim.Adam(resumed, lr=0.02, amsgrad=True)
    topt.load_state_dict(sd)
    reference = [torch.nn.Parameter(p.detach().clone()) for p in run]
    ref_opt = torch.optim.Adam(reference, lr=0.02, amsgrad=True)
    ref_opt.load_state_dict(opt.state_dict())
    for g in history[2:]:
        _torch_step(ref_opt, reference, g)
        _torch_step(topt, resumed, g)
    for a, b in zip(reference, resumed):
        assert torch.equal(a, b)


def test_numpy_checkpoint_stays_numpy_and_converts_on_request(tmp_path):
    params = _numpy_params()
    opt = adamcore.Adam(params)
    opt.step(_grads(np.random.default_rng(0), params))
    adamcore.save(opt, tmp_path / "n.ckpt")
    assert isinstance(adamcore.load(tmp_path / "n.ckpt")["state"][0]["exp_avg"], np.ndarray)
    for like in (torch, "torch", [torch.zeros(s) for s in SHAPES]):
        sd = adamcore.load(tmp_path / "n.ckpt", like=like)
        assert isinstance(sd["state"][1]["exp_avg"], torch.Tensor)
        assert sd["state"][1]["exp_avg"].dtype == torch.float64  # dtype kept, not like's
        np.testing.assert_array_equal(sd["state"][1]["exp_avg"].numpy(), opt.state[1]["exp_avg"])
    w = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]
    torch.optim.Adam(w).load_state_dict(adamcore.load(tmp_path / "n.ckpt", like=w))


def test_library_missing_at_load_gives_numpy(tmp_path, monkeypatch):
    w = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.Adam([w])
    w.grad = torch.ones(3)
    topt.step()
    adamcore.save(topt, tmp_path / "t.ckpt")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    sd = adamcore.load(tmp_path / "t.ckpt")
    assert type(sd["state"][0]["exp_avg"]) is np.ndarray and sd["state"][0]["step"] == 1.0


def test_old_checkpoint_without_the_library_record_loads_as_numpy(tmp_path):
    w = torch.nn.Parameter(torch.ones(3))
    topt = torch.optim.Adam([w])
    w.grad = torch.ones(3)
    topt.step()
    path = tmp_path / "old.ckpt"
    adamcore.save(topt, path)
    with np.load(path) as npz:
        members = {name: npz[name] for name in npz.files}
    meta = json.loads(members["__adamcore__"].tobytes())
    del meta["libraries"], meta["scalar_arrays"]  # as adamcore wrote it before the record
    members["__adamcore__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **members)
    sd = adamcore.load(path)
    assert type(sd["state"][0]["exp_avg"]) is np.ndarray
    other = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    other.load_state_dict(adamcore.load(path, like=torch))
    assert torch.equal(other.state_dict()["state"][0]["exp_avg"], topt.state[w]["exp_avg"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_params(dtype, tmp_path):
    """adamcore keeps float32 state, torch.optim the param's dtype: into torch.optim it is
    rounded (by torch); torch's 16-bit state comes into adamcore exactly."""
    p = torch.linspace(-1, 1, 17).to(dtype)
    opt = adamcore.Adam([p.clone()])
    opt.step([torch.linspace(0.3, -2, 17).to(dtype)])
    sd = adamcore.convert_state_dict(opt.state_dict(), like=torch)
    assert sd["state"][0]["exp_avg"].dtype == torch.float32
    w = torch.nn.Parameter(p.clone())
    topt = torch.optim.Adam([w])
    topt.load_state_dict(sd)
    assert torch.equal(topt.state[w]["exp_avg"], opt.state[0]["exp_avg"].to(dtype))
    adamcore.save(topt, tmp_path / "h.ckpt")  # bfloat16 stored widened, restored exactly
    back = adamcore.load(tmp_path / "h.ckpt")["state"][0]["exp_avg"]
    assert back.dtype == dtype and torch.equal(back, topt.state[w]["exp_avg"])
    as_numpy = adamcore.convert_state_dict(topt.state_dict(), like=np)["state"][0]["exp_avg"]
    assert as_numpy.dtype == (np.float16 if dtype == torch.float16 else np.float32)
    np.testing.assert_array_equal(as_numpy.astype(np.float32),
                                  topt.state[w]["exp_avg"].float().numpy())


def test_convert_state_dict_shares_no_memory_and_other_libraries():
    params = _numpy_params()
    opt = adamcore.Adam(params)
    opt.step(_grads(np.random.default_rng(0), params))
    sd = opt.state_dict()
    same = adamcore.convert_state_dict(sd, like=params)
    assert not np.shares_memory(same["state"][0]["exp_avg"], sd["state"][0]["exp_avg"])
    assert same["param_groups"] == sd["param_groups"]
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    if not jax.config.jax_enable_x64:  # float64 state would be rounded: refused, naming it
        with pytest.raises(ValueError, match="exp_avg of param 1 .*jax_enable_x64"):
            adamcore.convert_state_dict(sd, like=jnp)
        params = [p.astype(np.float32) for p in params]
        opt = adamcore.Adam(params)
        opt.step(_grads(np.random.default_rng(0), params))
        sd = opt.state_dict()
    as_jax = adamcore.convert_state_dict(sd, like=jnp)
    np.testing.assert_array_equal(np.asarray(as_jax["state"][1]["exp_avg"]),
                                  sd["state"][1]["exp_avg"])
    jparams = [jnp.asarray(p) for p in params]
    jopt = adamcore.Adam(jparams)
    jopt.load_state_dict(as_jax)
    assert jopt.state[0]["step"] == 1


def test_convert_state_dict_bad_input():
    params = _numpy_params()
    opt = adamcore.Adam(params)
    opt.step(_grads(np.random.default_rng(0), params))
    with pytest.raises(ValueError, match="like has 2 params"):
        adamcore.convert_state_dict(opt.state_dict(), like=params[:2])
    with pytest.raises(ImportError, match="cannot convert to no_such_lib"):
        adamcore.convert_state_dict(opt.state_dict(), like="no_such_lib")
    with pytest.raises(TypeError, match="like must be"):
        adamcore.convert_state_dict(opt.state_dict(), like=3)
    with pytest.raises(TypeError, match="device= goes with a library"):
        adamcore.convert_state_dict(opt.state_dict(), like=params, device="cpu")
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        adamcore.convert_state_dict({"x": 1}, like=np)


# ---- errors of save and load that name the user's path ----------------------------------------
def test_save_into_a_missing_folder_names_the_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opt = adamcore.Adam([np.ones(3, np.float32)])
    with pytest.raises(FileNotFoundError, match=r"'run/opt.ckpt'.*folder .*run' does not exist"):
        adamcore.save(opt, "run/opt.ckpt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        adamcore.save(opt, "file/opt.ckpt")
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        adamcore.save(opt, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_load_of_npy_text_and_pickle_say_what_the_file_is(tmp_path):
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"a.npy is not a valid adamcore checkpoint: it is a "
                                         r"single NumPy array \(.npy\)"):
        adamcore.load(npy)
    text = tmp_path / "t.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="t.txt is not a valid adamcore checkpoint") as e:
        adamcore.load(text)
    assert "allow_pickle" not in str(e.value)
    torch_file = tmp_path / "torch.pt"
    torch.save({"state": {}}, torch_file)
    with pytest.raises(ValueError, match="torch.save file: read it with torch.load"):
        adamcore.load(torch_file)


def test_every_damaged_byte_gives_a_value_error_naming_the_path(tmp_path):
    params = _numpy_params()
    opt = adamcore.Adam(params)
    opt.step(_grads(np.random.default_rng(0), params))
    good = tmp_path / "good.ckpt"
    adamcore.save(opt, good)
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    for i in range(0, len(data), 3):
        damaged = bytearray(data)
        damaged[i] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            sd = adamcore.load(bad)
        except ValueError as e:  # NotImplementedError and RuntimeError escaped on main
            assert str(e).startswith(f"{bad} is not a valid adamcore checkpoint"), str(e)
            assert "allow_pickle" not in str(e)
        else:  # a byte the zip format does not check (a timestamp): the contents are whole
            for k, entry in opt.state.items():
                np.testing.assert_array_equal(sd["state"][k]["exp_avg"], entry["exp_avg"])
