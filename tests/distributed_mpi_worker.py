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
        # an index of the first, one-dtype format (version 1: total and bounds, no dtype) loads
        if rank == 0:
            from adamcore import _checkpoint

            space = opt.spaces[0]
            v1 = {"format": "adamcore.sharded-checkpoint-index", "version": 1, "ranks": size,
                  "total": space.total, "bounds": [list(b) for b in space.bounds],
                  "files": [f"ckpt.rank{r}-of-{size}.npz" for r in range(size)]}
            _checkpoint._write_atomically(path, d, {_checkpoint._META: np.frombuffer(
                json.dumps(v1).encode(), dtype=np.uint8)})
        comm.Barrier()
        old = ShardedAdamW([p.copy() for p in params], comm=comm, lr=1e-2, amsgrad=True)
        old.load(path)
        assert old.state_dict(sharded=True)["state"].keys() == twin.state_dict(
            sharded=True)["state"].keys()
        comm.Barrier()
    # a sharded state dict with the one-dtype shard entry [rank, ranks, lo, hi] loads as well
    sd = opt.state_dict(sharded=True)
    early = ShardedAdamW([p.copy() for p in params], comm=comm, lr=1e-2, amsgrad=True)
    early.load_state_dict({**sd, "shard": [rank, size, *sd["shard"][2][0]]})
    for a, b in zip(early.state_dict(sharded=True)["state"].values(), sd["state"].values()):
        assert all(np.array_equal(a[k], b[k]) for k in b)
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
    # the ranks must agree on the transport before one is made
    from adamcore._transports import MpiHostTransport

    other = CountingTransport(MpiHostTransport(comm))
    other.name = "stand-in"
    msgs["transport"] = expect_error(
        lambda: ShardedAdam(params, comm=comm, transport=other if rank == size - 1 else "auto"),
        ["different transports", "stand-in"])
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


MIXED = [((7,), np.float16), ((3, 5), np.float32), ((), np.float64), ((17,), np.float32),
         ((0,), np.float16), ((1023,), np.float64), ((2, 2, 3), np.float16), ((65,), np.float32)]


# fewer elements than ranks in two dtypes: some ranks own nothing of a space
TINY = [((), np.float64), ((2,), np.float16), ((5,), np.float32)]


def mixed_params(specs=MIXED):
    rng = np.random.default_rng(0)
    return [np.asarray(rng.standard_normal(s)).astype(d) for s, d in specs]


def mean_grads(step, params):
    """What the single-process optimizer gets: the mean over ranks, summed in the dtype (float32
    for 16-bit params, which ShardedAdam reduces in float32 and steps with float32 grads)."""
    per_rank = [rank_grads_mixed(step, r, params) for r in range(size)]
    out = []
    for i, p in enumerate(params):
        wide = np.float32 if p.dtype.itemsize < 4 else p.dtype.type
        total = sum(g[i].astype(wide) for g in per_rank)
        out.append(np.array(np.asarray(total) / wide(size), dtype=wide))
    return out


def rank_grads_mixed(step, r, params):
    rng = np.random.default_rng(1000 * step + r)
    # dyadic and small: exact in float16, sums over ranks exact in any order
    return [np.asarray(np.round(rng.standard_normal(p.shape) * 64) / 256).astype(p.dtype)
            for p in params]


class CountingTransport:
    """Wraps a transport and counts its collectives (one of each kind per dtype per step)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.name, self.equal_counts = inner.name, inner.equal_counts

    def reduce_scatter_sum(self, send, recv, counts):
        self.calls.append(("reduce_scatter", str(send.dtype), len(send)))
        self.inner.reduce_scatter_sum(send, recv, counts)

    def all_gather_in_place(self, buf, counts):
        self.calls.append(("all_gather", str(buf.dtype), len(buf)))
        self.inner.all_gather_in_place(buf, counts)

    def abort(self):
        self.inner.abort()


def mixed_run(make_transport, steps=12, bucket_elements=1 << 24, check_state=True, specs=MIXED,
              **kw):
    ours, theirs = mixed_params(specs), mixed_params(specs)
    groups = lambda ps: [{"params": ps[:3]}, {"params": ps[3:], "lr": 3e-3, "weight_decay": 0.1}]
    transport = CountingTransport(make_transport())
    opt = ShardedAdamW(groups(ours), comm=comm, lr=1e-2, transport=transport,
                       bucket_elements=bucket_elements, **kw)
    ref = adamcore.AdamW(groups(theirs), lr=1e-2, **kw)
    assert [str(s.dtype) for s in opt.spaces] == ["float16", "float32", "float64"]
    for t in range(steps):
        before = len(transport.calls)
        opt.step(rank_grads_mixed(t, rank, ours))
        ref.step(mean_grads(t, theirs))
        kinds = sorted((k, d) for k, d, _ in transport.calls[before:])
        if bucket_elements >= 1 << 24:  # one of each kind per dtype, nothing per tensor
            assert kinds == sorted([("reduce_scatter", "float32"), ("reduce_scatter", "float32"),
                                    ("reduce_scatter", "float64"), ("all_gather", "float16"),
                                    ("all_gather", "float32"), ("all_gather", "float64")]), kinds
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (i, a.dtype, np.abs(
            a.astype(np.float64) - b.astype(np.float64)).max(initial=0))
    if check_state:
        full = opt.state_dict()
        if rank == 0:
            for i, st in ref.state_dict()["state"].items():
                for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                    if key in st:
                        got, want = full["state"][i][key], np.asarray(st[key])
                        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), (i, key)
    return opt, ours


def scenario_mixed():
    from adamcore._transports import MpiHostTransport

    opt, ours = mixed_run(lambda: MpiHostTransport(comm), amsgrad=True)
    per_space = comm.allgather([s.lo - s.hi for s in opt.spaces])
    # every dtype's state is split 1/N: per space, the ranks' shards differ by at most one
    for k in range(3):
        sizes = [-x[k] for x in per_space]
        assert sum(sizes) == opt.spaces[k].total and max(sizes) - min(sizes) <= 1, sizes
    # a checkpoint of mixed dtypes, resumed on fresh params, stays bit-equal
    with tempfile.TemporaryDirectory() as d0:
        d = comm.bcast(d0 if rank == 0 else None)
        opt.save(f"{d}/ckpt")
        twin_params = [p.copy() for p in ours]
        groups = [{"params": twin_params[:3]},
                  {"params": twin_params[3:], "lr": 3e-3, "weight_decay": 0.1}]
        twin = ShardedAdamW(groups, comm=comm, lr=1e-2, amsgrad=True)
        twin.load(f"{d}/ckpt")
        comm.Barrier()
    for t in range(12, 15):
        opt.step(rank_grads_mixed(t, rank, ours))
        twin.step(rank_grads_mixed(t, rank, twin_params))
    for a, b in zip(ours, twin_params):
        assert a.tobytes() == b.tobytes()
    mixed_run(lambda: MpiHostTransport(comm), steps=5, bucket_elements=7)  # bucketed
    mixed_run(lambda: MpiHostTransport(comm), steps=5, specs=TINY, amsgrad=True)
    return {"mixed": "bit-equal", "spaces": [str(s.dtype) for s in opt.spaces]}


class StandInNccl:
    """Stands in for cupy.cuda.nccl: the constants, get_unique_id, and an NcclCommunicator that
    records each call and does it with MPI on the host memory the pointers name (the buffers are
    NumPy here), checking NCCL's rules on the way (one count, in-place all-gather layout)."""

    NCCL_SUM, NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 6, 7, 8
    _DTYPES = {6: np.float16, 7: np.float32, 8: np.float64}
    ids = []

    @staticmethod
    def get_unique_id():
        StandInNccl.ids.append("made")
        return tuple(range(-64, 64))  # 128 chars, as NCCL's unique id

    class NcclCommunicator:
        def __init__(self, ndev, commId, rank):
            assert ndev == size and rank == comm.rank and commId == tuple(range(-64, 64))
            self.calls = []

        @staticmethod
        def _view(address, count, datatype):
            import ctypes

            dtype = np.dtype(StandInNccl._DTYPES[datatype])
            raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(address)
            return np.frombuffer(raw, dtype=dtype)

        def reduceScatter(self, sendbuf, recvbuf, recvcount, datatype, op, stream):
            assert op == StandInNccl.NCCL_SUM
            self.calls.append(("reduceScatter", recvcount, datatype, stream))
            send = self._view(sendbuf, recvcount * size, datatype)
            recv = self._view(recvbuf, recvcount, datatype)
            comm.Reduce_scatter_block(send.copy(), recv, op=MPI.SUM)

        def allGather(self, sendbuf, recvbuf, count, datatype, stream):
            itemsize = np.dtype(StandInNccl._DTYPES[datatype]).itemsize
            assert sendbuf == recvbuf + rank * count * itemsize  # what ShardedAdam promises
            self.calls.append(("allGather", count, datatype, stream))
            recv = self._view(recvbuf, count * size, datatype)
            comm.Allgather(recv[rank * count:(rank + 1) * count].copy(), recv)

        def abort(self):
            self.calls.append(("abort",))


def scenario_nccl_standin():
    from adamcore._transports import NcclTransport

    made = []

    def make():
        made.append(NcclTransport(comm, nccl=StandInNccl, stream=0xBEEF))
        return made[-1]

    opt, _ = mixed_run(make, steps=6)
    calls = made[0].communicator.calls
    assert len(calls) == 6 * 6, len(calls)  # 3 dtypes x (reduceScatter + allGather) x 6 steps
    c = {str(s.dtype): -(-s.total // size) for s in opt.spaces}
    want = {("reduceScatter", c["float16"], 7, 0xBEEF), ("reduceScatter", c["float32"], 7, 0xBEEF),
            ("reduceScatter", c["float64"], 8, 0xBEEF), ("allGather", c["float16"], 6, 0xBEEF),
            ("allGather", c["float32"], 7, 0xBEEF), ("allGather", c["float64"], 8, 0xBEEF)}
    assert set(calls) == want, (set(calls), want)
    # NCCL's equal parts: every rank's segment is ceil(T/N) long, the padding never stepped
    for s in opt.spaces:
        assert s.counts == [c[str(s.dtype)]] * size and s.bounds[-1][1] == s.total
    assert StandInNccl.ids == (["made"] if rank == 0 else [])  # rank 0 makes the id
    mixed_run(make, steps=4, bucket_elements=5)  # bucketed: equal parts per bucket too
    mixed_run(make, steps=4, specs=TINY)  # NCCL's padding larger than the space itself
    return {"nccl_standin": "bit-equal", "calls_per_step": len(calls) // 6}


def scenario_cupy():
    """On GPUs: CuPy params through the transport ShardedAdam picks (or argv[2]), against
    single-process adamcore.Adam on CuPy."""
    import cupy

    cupy.cuda.Device(rank % cupy.cuda.runtime.getDeviceCount()).use()
    how = sys.argv[2] if len(sys.argv) > 2 else "auto"
    host = mixed_params()
    ours = [cupy.asarray(p) for p in host]
    theirs = [cupy.asarray(p) for p in host]
    opt = ShardedAdamW(ours, comm=comm, lr=1e-2, transport=how)
    ref = adamcore.AdamW(theirs, lr=1e-2)
    for t in range(10):
        opt.step([cupy.asarray(g) for g in rank_grads_mixed(t, rank, host)])
        ref.step([cupy.asarray(g) for g in mean_grads(t, host)])
    cupy.cuda.get_current_stream().synchronize()
    for a, b in zip(ours, theirs):
        assert cupy.asnumpy(a).tobytes() == cupy.asnumpy(b).tobytes()
    return {"cupy": "bit-equal", "transport": opt.transport.name}


if __name__ == "__main__":
    try:
        result = globals()[f"scenario_{sys.argv[1]}"]()
    except Exception:  # one rank's failed check must not leave the others waiting
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        comm.Abort(1)
    results = comm.gather(result)
    if rank == 0:
        print("OK", json.dumps(results[0]))
