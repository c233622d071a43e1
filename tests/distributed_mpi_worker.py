"""Run under mpirun by tests/test_distributed_mpi.py: one scenario per argv[1]; rank 0 prints
'OK <json>' when every check held. Every rank checks its own results."""

import json
import sys
import tempfile

import numpy as np
from mpi4py import MPI

import adamcore
from adamcore.distributed import ShardedAdam, ShardedAdamW

comm = MPI.COMM_WORLD
rank, size = comm.rank, comm.size
SHAPES = [(7,), (3, 5), (), (1,), (0,), (17,), (2, 2, 3), (1023,)]


def make_params(dtype, shapes=SHAPES):
    rng = np.random.default_rng(0)
    return [np.asarray(rng.standard_normal(s)).astype(dtype) for s in shapes]


def rank_grads(step, r, params, dtype):
    # dyadic values: sums over ranks are exact in any order, so the reduce order cannot matter
    rng = np.random.default_rng(1000 * step + r)
    return [np.asarray(np.round(rng.standard_normal(p.shape) * 256) / 256).astype(dtype) for p in params]


def trajectory(cls, ref_cls, dtype, steps, groups_of, kw, opt_kw=None, ref_kw=None):
    ours = make_params(dtype)
    theirs = make_params(dtype)
    opt = cls(groups_of(ours), comm=comm, **kw, **(opt_kw or {}))
    ref = ref_cls(groups_of(theirs), **kw)
    for t in range(steps):
        gs = rank_grads(t, rank, ours, dtype)
        opt.step(gs)
        per_rank = [rank_grads(t, r, theirs, dtype) for r in range(size)]
        total = [sum(g[i] for g in per_rank) for i in range(len(theirs))]
        total = [np.array(np.asarray(x) / dtype(size), dtype=dtype) for x in total]
        if (ref_kw or {}).get("max_grad_norm") is not None:
            adamcore.clip_grad_norm(total, ref_kw["max_grad_norm"])
        ref.step(total)
    return ours, theirs, opt, ref


def scenario_trajectory():
    out = {}
    two_groups = lambda ps: [{"params": ps[:4]}, {"params": ps[4:], "lr": 3e-3, "weight_decay": 0.1}]
    cases = [
        (ShardedAdam, adamcore.Adam, np.float64, lambda ps: ps, {"lr": 1e-2}),
        (ShardedAdam, adamcore.Adam, np.float32, two_groups, {"lr": 1e-2, "amsgrad": True}),
        (ShardedAdamW, adamcore.AdamW, np.float32, lambda ps: ps,
         {"lr": adamcore.schedules.cosine_decay(1e-2, 20) if hasattr(adamcore, "schedules") else 1e-2,
          "maximize": True}),
        (ShardedAdamW, adamcore.AdamW, np.float64, two_groups,
         {"lr": 1e-2, "decouple_lr": True, "max_lr": 2e-2, "check_finite": True}),
        (ShardedAdam, adamcore.Adam, np.float32, lambda ps: ps,
         {"lr": 1e-2, "weight_decay": 0.05}),
    ]
    for k, (cls, ref_cls, dtype, groups_of, kw) in enumerate(cases):
        ours, theirs, opt, ref = trajectory(cls, ref_cls, dtype, 25, groups_of, kw)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert a.tobytes() == b.tobytes(), (k, i, np.abs(a - b).max())
        full = opt.state_dict()
        if rank == 0:
            want = ref.state_dict()
            for i, s in want["state"].items():
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in s:
                        assert full["state"][i][key].tobytes() == np.asarray(s[key]).tobytes(), (k, i, key)
                assert full["state"][i]["step"] == s["step"]
        else:
            assert full is None
        out[f"case{k}"] = "bit-equal"
    return out


def scenario_clip():
    ours, theirs, *_ = trajectory(ShardedAdam, adamcore.Adam, np.float64, 10, lambda ps: ps,
                                  {"lr": 1e-2}, {"max_grad_norm": 0.5}, {"max_grad_norm": 0.5})
    err = max(float(np.abs(a - b).max(initial=0.0)) for a, b in zip(ours, theirs))
    assert err < 1e-12, err
    return {"clip_max_abs_err": err}


def scenario_memory():
    n = 1 << 16
    params = [np.zeros(n + 1, np.float32), np.zeros(n - 1, np.float32)]
    opt = ShardedAdam(params, comm=comm, amsgrad=True)
    opt.step([np.ones_like(p) for p in params])
    full = 3 * 4 * 2 * n
    got = comm.allgather(opt.state_bytes)
    assert sum(got) == full, (got, full)
    assert max(got) <= full / size + 3 * 4, (got, full)
    return {"state_bytes_per_rank": got, "unsharded": full}


def scenario_state_dict():
    params = make_params(np.float32)
    opt = ShardedAdamW(params, comm=comm, lr=1e-2, amsgrad=True)
    for t in range(3):
        opt.step(rank_grads(t, rank, params, np.float32))
    full = opt.state_dict()
    with tempfile.TemporaryDirectory() as d0:
        d = comm.bcast(d0 if rank == 0 else None)
        path = f"{d}/ckpt"
        opt.save(path)
        twin_params = [p.copy() for p in params]
        twin = ShardedAdamW(twin_params, comm=comm, lr=1e-2, amsgrad=True)
        twin.load(path)
        comm.Barrier()
    other_params = [p.copy() for p in params]
    other = ShardedAdamW(other_params, comm=comm, lr=1e-2, amsgrad=True)
    other.load_state_dict(full)  # full on rank 0, None elsewhere: scattered
    for t in range(3, 6):
        for o, ps in ((opt, params), (twin, twin_params), (other, other_params)):
            o.step(rank_grads(t, rank, ps, np.float32))
    for a, b, c in zip(params, twin_params, other_params):
        assert a.tobytes() == b.tobytes() == c.tobytes()
    return {"resumed": "bit-equal"}


def expect_error(fn, words):
    try:
        fn()
    except (ValueError, TypeError) as e:
        for w in words:
            assert w in str(e), (str(e), w)
        return str(e)
    raise AssertionError("no error")


def scenario_bad_input():
    msgs = {}
    # shapes disagree on the last rank
    shapes = SHAPES if rank != size - 1 else SHAPES[:-1] + [(1022,)]
    params = make_params(np.float32, shapes)
    opt = ShardedAdam(params, comm=comm)
    before = [p.copy() for p in params]
    msgs["shapes"] = expect_error(lambda: opt.step([np.ones_like(p) for p in params]), ["disagree"])
    # a wrong grad on one rank only: every rank raises, nothing changed
    params = make_params(np.float32)
    opt = ShardedAdam(params, comm=comm)
    before = [p.copy() for p in params]
    gs = [np.ones_like(p) for p in params]
    if rank == 1:
        gs[1] = np.ones((2,), np.float32)
    msgs["grad_shape"] = expect_error(lambda: opt.step(gs), ["rank 1", "grad 1", "nothing"])
    if rank == 0:
        gs2 = gs[:-1]
    else:
        gs2 = [np.ones_like(p) for p in params]
    msgs["count"] = expect_error(lambda: opt.step(gs2), ["rank 0", "grads for"])
    # hyperparameters disagree
    opt = ShardedAdam(params, comm=comm, lr=1e-3 * (1 + (rank == size - 1)))
    msgs["lr"] = expect_error(lambda: opt.step([np.ones_like(p) for p in params]), ["disagree"])
    for a, b in zip(params, before):
        assert a.tobytes() == b.tobytes()
    # bad constructor argument on one rank
    msgs["ctor"] = expect_error(
        lambda: ShardedAdam(params, comm=comm, lr=-1.0 if rank == 0 else 1e-3), ["rank 0", "lr"])
    # check_finite agreed: a NaN in one rank's grad makes every rank raise, nothing updated
    opt = ShardedAdam(params, comm=comm, check_finite=True)
    gs = [np.ones_like(p) for p in params]
    if rank == size - 1:
        gs[0][3] = np.nan  # param 0 lives in rank 0's shard: others must still skip
    try:
        opt.step(gs)
        raise AssertionError("no FloatingPointError")
    except FloatingPointError as e:
        msgs["finite"] = str(e)
    for a, b in zip(params, before):
        assert a.tobytes() == b.tobytes()
    opt.step([np.ones_like(p) for p in params])  # and the optimizer still works
    return {k: v[:60] for k, v in msgs.items()}


def scenario_abort():
    params = make_params(np.float32)
    opt = ShardedAdam(params, comm=comm)
    if rank == 1:
        opt._inner.step = lambda grads: 1 / 0  # an unexpected failure mid-step
    opt.step([np.ones_like(p) for p in params])
    return {}


def scenario_buckets():
    ours = make_params(np.float64)
    theirs = [p.copy() for p in ours]
    a = ShardedAdam(ours, comm=comm, bucket_elements=5)
    b = ShardedAdam(theirs, comm=comm)
    for t in range(5):
        g = rank_grads(t, rank, ours, np.float64)
        a.step(g)
        b.step(g)
    for x, y in zip(ours, theirs):
        assert x.tobytes() == y.tobytes()
    return {"buckets": "bit-equal"}


if __name__ == "__main__":
    result = globals()[f"scenario_{sys.argv[1]}"]()
    results = comm.gather(result)
    if rank == 0:
        print("OK", json.dumps(results[0]))
