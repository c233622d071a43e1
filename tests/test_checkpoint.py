"""adamcore.save / adamcore.load: round trips, atomic replacement under SIGKILL, bad files refused."""

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import adamcore


def _trained(seed=0, steps=3, **kw):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dt) for s, dt in
              [((5,), np.float32), ((3, 4), np.float64), ((), np.float32), ((7,), np.float16)]]
    opt = adamcore.Adam([{"params": params[:2], "lr": 0.01},
                         {"params": params[2:], "amsgrad": True, "weight_decay": 0.1}], **kw)
    for _ in range(steps):
        opt.step([rng.standard_normal(p.shape).astype(p.dtype) for p in params])
    return opt, params


def _assert_same_state(a: dict, b: dict):
    assert a["param_groups"] == b["param_groups"]
    assert a["state"].keys() == b["state"].keys()
    for i in a["state"]:
        assert a["state"][i].keys() == b["state"][i].keys()
        for key, x in a["state"][i].items():
            np.testing.assert_array_equal(np.asarray(x), np.asarray(b["state"][i][key]))


def test_round_trip_continues_the_same_trajectory(tmp_path):
    opt, params = _trained()
    path = tmp_path / "opt.ckpt"
    adamcore.save(opt, path)
    sd = adamcore.load(path)
    _assert_same_state(sd, opt.state_dict())
    assert sd["param_groups"][0]["betas"] == (0.9, 0.999)

    # a fresh optimizer over copies of the params, loaded from the file, steps identically
    copies = [p.copy() for p in params]
    other = adamcore.Adam([{"params": copies[:2]}, {"params": copies[2:], "amsgrad": True}])
    other.load_state_dict(sd)
    rng = np.random.default_rng(9)
    for _ in range(2):
        grads = [rng.standard_normal(p.shape).astype(p.dtype) for p in params]
        opt.step(grads)
        other.step(grads)
    for a, b in zip(params, copies):
        np.testing.assert_array_equal(a, b)


def test_file_is_a_plain_npz_with_json_metadata(tmp_path):
    opt, _ = _trained()
    path = tmp_path / "opt.npz"
    adamcore.save(opt, path)
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(npz["__adamcore__"].tobytes())
        assert meta["format"] == "adamcore.optimizer-checkpoint" and meta["version"] == 1
        assert meta["param_groups"][1]["amsgrad"] is True
        assert meta["state"]["0"]["step"] == 3
        np.testing.assert_array_equal(npz["state/1/exp_avg"], opt.state[1]["exp_avg"])
        assert npz["state/3/exp_avg"].dtype == np.float32  # float16 param, float32 state


def test_schedule_is_not_saved_and_the_loader_keeps_its_own(tmp_path):
    def lr(count):
        return 1e-3 * (count + 1)

    p = np.ones(4, np.float32)
    opt = adamcore.Adam([p], lr=lr)
    opt.step([np.ones(4, np.float32)])
    adamcore.save(opt, tmp_path / "s.ckpt")
    sd = adamcore.load(tmp_path / "s.ckpt")
    assert "lr" not in sd["param_groups"][0]
    q = np.ones(4, np.float32)
    other = adamcore.Adam([q], lr=lr)
    other.load_state_dict(sd)
    assert other.param_groups[0]["lr"] is lr
    assert other.state[0]["step"] == 1


def test_non_finite_hyperparameter_values_round_trip(tmp_path):
    # the loader refuses them later, but the file format must not lose or mangle them
    opt, _ = _trained()
    sd = opt.state_dict()
    sd["param_groups"][0]["note"] = [float("inf"), float("-inf"), float("nan")]

    class Holder:
        def state_dict(self):
            return sd

    adamcore.save(Holder(), tmp_path / "x.ckpt")
    note = adamcore.load(tmp_path / "x.ckpt")["param_groups"][0]["note"]
    assert note[0] == np.inf and note[1] == -np.inf and np.isnan(note[2])


def test_torch_state_dict_saved_and_loaded_into_adamcore(tmp_path):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(6, generator=gen, requires_grad=True)
    topt = torch.optim.Adam([w], lr=0.01)
    for _ in range(3):
        w.grad = torch.randn(6, generator=gen)
        topt.step()
    adamcore.save(topt, tmp_path / "t.ckpt")
    sd = adamcore.load(tmp_path / "t.ckpt")
    assert sd["state"][0]["step"] == 3.0
    p = w.detach().numpy().copy()
    opt = adamcore.Adam([p], lr=0.01)
    opt.load_state_dict(sd)
    np.testing.assert_array_equal(opt.state[0]["exp_avg"], topt.state[w]["exp_avg"].numpy())


def test_unsaveable_hyperparameter_refused_before_writing(tmp_path):
    opt, _ = _trained()
    opt.param_groups[0]["custom"] = object()
    path = tmp_path / "opt.ckpt"
    with pytest.raises(TypeError, match="param group 0's 'custom' is a object"):
        adamcore.save(opt, path)
    assert list(tmp_path.iterdir()) == []


def test_save_replaces_and_keeps_permissions(tmp_path):
    opt, _ = _trained()
    path = tmp_path / "opt.ckpt"
    adamcore.save(opt, path)
    os.chmod(path, 0o640)
    opt.step([np.ones(p.shape, p.dtype) for g in opt.param_groups for p in g["params"]])
    adamcore.save(opt, path)
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert adamcore.load(path)["state"][0]["step"] == 4
    assert sorted(os.listdir(tmp_path)) == ["opt.ckpt"]  # no temporary file left behind


# ---- bad files ------------------------------------------------------------------------------
def _valid_file(tmp_path):
    opt, _ = _trained()
    path = tmp_path / "good.ckpt"
    adamcore.save(opt, path)
    return path


def test_truncated_files_refused(tmp_path):
    good = _valid_file(tmp_path)
    data = good.read_bytes()
    bad = tmp_path / "bad.ckpt"
    for size in sorted({0, 1, 10, 100, len(data) // 3, len(data) // 2, len(data) - 22,
                        len(data) - 1}):
        bad.write_bytes(data[:size])
        with pytest.raises(ValueError, match="not a valid adamcore checkpoint"):
            adamcore.load(bad)


def test_corrupted_member_refused(tmp_path):
    good = _valid_file(tmp_path)
    data = bytearray(good.read_bytes())
    # flip one byte inside the stored exp_avg of param 1 (stored uncompressed: CRC-32 catches it)
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("state/1/exp_avg.npy")
    assert info.compress_type == zipfile.ZIP_STORED
    h = info.header_offset  # the local header's own name and extra lengths locate the data
    name_len = int.from_bytes(data[h + 26:h + 28], "little")
    extra_len = int.from_bytes(data[h + 28:h + 30], "little")
    data[h + 30 + name_len + extra_len + info.compress_size - 8] ^= 0xFF
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid adamcore checkpoint"):
        adamcore.load(bad)


@pytest.mark.parametrize("kind", ["text", "npy", "foreign npz", "pickle", "wrong tag",
                                  "newer version", "missing array", "extra array", "bad json",
                                  "bad state entry", "bad array name"])
def test_foreign_files_refused(tmp_path, kind):
    path = tmp_path / "foreign"
    meta = {"format": "adamcore.optimizer-checkpoint", "version": 1, "param_groups": [{}],
            "state": {"0": {"step": 1}}, "arrays": [["state/0/exp_avg", [3], "<f4"]]}

    def npz(meta_obj=meta, **arrays):
        payload = json.dumps(meta_obj).encode() if not isinstance(meta_obj, bytes) else meta_obj
        with open(path, "wb") as f:
            np.savez(f, __adamcore__=np.frombuffer(payload, np.uint8), **arrays)

    good = {"state/0/exp_avg": np.zeros(3, np.float32)}
    message = "not a valid adamcore checkpoint"
    if kind == "text":
        path.write_text("hello")
    elif kind == "npy":
        np.save(open(path, "wb"), np.zeros(3))
    elif kind == "foreign npz":
        np.savez(open(path, "wb"), a=np.zeros(3))
        message = "has no __adamcore__ entry"
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"state": {}, "param_groups": []}))
    elif kind == "wrong tag":
        npz(dict(meta, format="something-else"), **good)
        message = "format tag"
    elif kind == "newer version":
        npz(dict(meta, version=2), **good)
        message = "newer adamcore"
    elif kind == "missing array":
        npz(meta)
        message = "not those its metadata lists"
    elif kind == "extra array":
        npz(meta, **good, **{"state/0/exp_avg_sq": np.zeros(3, np.float32)})
        message = "not those its metadata lists"
    elif kind == "bad json":
        npz(b"{not json", **good)
    elif kind == "bad state entry":
        npz(dict(meta, state={"0": [1, 2]}), **good)
    elif kind == "bad array name":
        npz(dict(meta, arrays=[["state/x/exp_avg", [3], "<f4"]]),
            **{"state/x/exp_avg": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=message):
        adamcore.load(path)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        adamcore.load(tmp_path / "nothing-here")


# ---- killed mid-save --------------------------------------------------------------------------
_WRITER = textwrap.dedent("""
    import sys
    import numpy as np
    import adamcore

    path = sys.argv[1]
    # big enough that one save takes a while, so a kill lands inside it
    params = [np.zeros(3_000_000, np.float32) for _ in range(2)]
    opt = adamcore.Adam(params)
    for version in range(1, 1_000_000):
        opt.step([np.full(p.shape, 1.0, np.float32) for p in params])
        for p in params:
            p[:] = version
        print("saving", version, flush=True)
        adamcore.save(opt, path)
        print("saved", version, flush=True)
""")


def _check_whole(path, params_version_at_least):
    sd = adamcore.load(path)
    step = sd["state"][0]["step"]
    assert step >= params_version_at_least
    # every array of one checkpoint comes from the same save
    for i in (0, 1):
        assert sd["state"][i]["step"] == step
        m = sd["state"][i]["exp_avg"]
        assert m.shape == (3_000_000,) and np.all(m == m[0])
    return step


def test_writer_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    last_saved, kills_mid_save, rng = 0, 0, np.random.default_rng(0)
    try:
        for _ in range(12):  # until two kills land inside a save (nearly always the first two)
            # let it finish at least one save, then kill it at a random moment of the next one
            while True:
                line = proc.stdout.readline()
                assert line, "the writer died on its own"
                word, version = line.split()
                if word == "saved":
                    last_saved = int(version)
                elif last_saved:
                    break
            time.sleep(rng.uniform(0.0, 0.15))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            tail = proc.stdout.read().split()
            if "saved" in tail:
                last_saved = int(tail[tail.index("saved") + 1])
            leftovers = [f for f in os.listdir(tmp_path) if f != "run.ckpt"]
            if leftovers:  # killed between the temporary file's creation and the rename
                kills_mid_save += 1
                assert all(f.startswith(".run.ckpt.") and f.endswith(".tmp") for f in leftovers)
                for f in leftovers:
                    os.unlink(tmp_path / f)
            step = _check_whole(path, last_saved)
            assert step in (last_saved, last_saved + 1)  # the old one, or the new one whole
            # start again from the checkpoint, as a training job would
            proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                                    stdout=subprocess.PIPE, text=True)
            last_saved = 0
            if kills_mid_save >= 2:
                break
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert kills_mid_save >= 1, "no kill landed inside a save; the test proved nothing"


# ---- pickling -------------------------------------------------------------------------------
def test_optimizer_pickles_and_deepcopies(tmp_path):
    opt, params = _trained()
    for clone in (pickle.loads(pickle.dumps(opt)), copy.deepcopy(opt)):
        assert clone._steady is None
        new_params = [p for g in clone.param_groups for p in g["params"]]
        assert all(a is not b for a, b in zip(params, new_params))
        _assert_same_state(clone.state_dict(), opt.state_dict())
        grads = [np.ones(p.shape, p.dtype) for p in params]
        opt_copy = copy.deepcopy(opt)
        opt_copy.step(grads)
        clone.step(grads)
        for a, b in zip([p for g in opt_copy.param_groups for p in g["params"]], new_params):
            np.testing.assert_array_equal(a, b)
