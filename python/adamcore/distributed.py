"""Optimizer state sharded across MPI processes (ZeRO stage 1): ShardedAdam and ShardedAdamW.

Every rank holds the same parameters (NumPy arrays, or CuPy arrays on each rank's GPU). The
params of each dtype are laid end to end in one flat space of ``T`` elements; rank ``r`` of
``N`` owns the contiguous range ``[T*r//N, T*(r+1)//N)`` of every space (balanced by element
count; a tensor may be split between ranks) and keeps ``exp_avg``, ``exp_avg_sq`` (and
``max_exp_avg_sq``) only for it. ``step(grads)``:

1. one small collective checks that every rank passes grads of the right count, shapes and dtypes
   and the same hyperparameters (otherwise every rank raises the same ValueError, nothing changed);
2. per dtype, one reduce-scatter over the flat grad buffer (sum, divided by N unless
   ``average=False``), in buckets of at most ``bucket_elements`` elements when large; the grads of
   16-bit params are reduced in float32 and reach the update in float32;
3. global-norm clipping (``max_grad_norm``) and ``check_finite`` agreed by one allreduce;
4. adamcore's own Adam/AdamW steps the owned pieces in place (the same per-element arithmetic as
   the single-process optimizer, so trajectories are equal bit for bit);
5. per dtype, one all-gather of the updated shards into the flat parameter buffer, in place,
   copied back into the params in place.

The flat buffers move through a transport (adamcore._transports): MPI for NumPy, a CUDA-aware
MPI or NCCL for CuPy. NCCL wants equal parts, so there each space is padded to a multiple of N
and rank ``r`` owns ``[c*r, c*(r+1))`` with ``c = ceil(T/N)`` (the padding is never stepped).

An unexpected failure after data started moving aborts the communicator with the reason, so no
rank waits forever. mpi4py is imported only when a ShardedAdam is made.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys

import numpy as np

from . import _checkpoint
from ._optimizer import Adam, packed_groups
from ._transports import make_transport, transport_kind

_INDEX_FORMAT = "adamcore.sharded-checkpoint-index"
_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay", "decoupled_weight_decay", "decouple_lr",
               "max_lr", "amsgrad", "maximize", "check_finite")
_CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


def _world():
    try:
        from mpi4py import MPI
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("adamcore.distributed needs mpi4py (pip install mpi4py mpich)") from e
    return MPI


def _library_of(a) -> str | None:
    if isinstance(a, np.ndarray):
        return "numpy"
    if type(a).__module__.split(".")[0] == "cupy" and hasattr(a, "__cuda_array_interface__"):
        return "cupy"
    return None


def _array_module(library: str):
    if library == "cupy":
        import cupy

        return cupy
    return np


class FlatSpace:
    """The params of one dtype laid end to end, and this rank's part of that flat space.

    ``segments[r]`` is rank r's range in the (possibly padded) flat buffers, ``bounds[r]`` the
    real elements in it (they differ only by NCCL's padding at the end)."""

    def __init__(self, xp, dtype, indices, params, rank, size, equal_counts):
        self.dtype = np.dtype(dtype)
        # 16-bit grads are summed in float32: no rounding per rank, and MPI has no float16 SUM
        self.reduce_dtype = np.dtype(np.float32) if self.dtype.itemsize < 4 else self.dtype
        self.indices = list(indices)
        sizes = [int(p.size) for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(int).tolist()
        total = self.total = int(self.offsets[-1])
        if equal_counts:
            c = -(-total // size)
            self.segments = [(c * r, c * (r + 1)) for r in range(size)]
        else:
            self.segments = [(total * r // size, total * (r + 1) // size) for r in range(size)]
        self.counts = [b - a for a, b in self.segments]
        self.bounds = [(min(a, total), min(b, total)) for a, b in self.segments]
        self.lo, self.hi = self.bounds[rank]
        start = self.segments[rank][0]
        padded = self.segments[-1][1]
        self.pflat = xp.zeros(padded, self.dtype)
        self.gflat = xp.zeros(padded, self.reduce_dtype)  # the padding stays zero
        self.gshard = xp.zeros(self.counts[rank], self.reduce_dtype)
        self.pshard = self.pflat[start:start + self.counts[rank]]
        # pieces: (param index, start in the tensor, stop, start in the shard)
        self.pieces = []
        for k, i in enumerate(self.indices):
            a, b = max(self.offsets[k], self.lo), min(self.offsets[k + 1], self.hi)
            if a < b:
                self.pieces.append((i, a - self.offsets[k], b - self.offsets[k], a - start))

    def param_range(self, k: int) -> tuple[int, int]:
        return self.offsets[k], self.offsets[k + 1]

    def buckets(self, width):
        """Per bucket, each rank's range of the flat buffers in it: a bucket moves at most
        ``width`` elements per rank."""
        width = max(1, int(width))
        for k in range(0, max(max(self.counts), 1), width):
            yield [(min(lo + k, hi), min(lo + k + width, hi)) for lo, hi in self.segments]


class ShardedAdam:
    """adamcore.Adam with its state sharded over the ranks of an MPI communicator.

    Args: as :class:`adamcore.Adam` (param groups, schedules and every flag), plus
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``);
        average: divide the summed grads by the number of ranks (default) or keep the sum;
        max_grad_norm: clip the reduced grads by their global 2-norm (reduced across ranks);
        bucket_elements: the largest number of elements one reduce-scatter/all-gather moves
            per rank;
        transport: what moves the flat buffers: "auto" (MPI for NumPy; for CuPy a CUDA-aware
            MPI when the MPI says it is one, else NCCL), "mpi", "nccl", or a transport object
            (see adamcore._transports).

    Params may have several dtypes (float16, float32, float64): each dtype gets its own flat
    space, one reduce-scatter and one all-gather per step.
    """

    _defaults = {"weight_decay": 0.0, "decoupled_weight_decay": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=None, *,
                 comm=None, average=True, max_grad_norm=None, bucket_elements=1 << 24,
                 transport="auto", **flags):
        MPI = _world()
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.average = bool(average)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.bucket_elements = int(bucket_elements)
        if weight_decay is None:
            weight_decay = self._defaults["weight_decay"]
        flags.setdefault("decoupled_weight_decay", self._defaults["decoupled_weight_decay"])
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        # a plain Adam over the whole params checks every argument as the single-process one does
        error = None
        try:
            self._full = Adam(groups, lr, betas, eps, weight_decay, **flags)
        except Exception as e:  # noqa: BLE001 - reported on every rank below
            error = e
        self._agree_or_raise(error, "the optimizer's arguments")
        self.param_groups = self._full.param_groups
        self.defaults = self._full.defaults
        self._params = [p for g in self.param_groups for p in g["params"]]
        libraries = [_library_of(p) for p in self._params]
        for i, (p, lib) in enumerate(zip(self._params, libraries)):
            if lib is None:
                error = TypeError(f"param {i} is a {type(p).__name__}; ShardedAdam takes NumPy "
                                  f"or CuPy arrays")
                break
            if lib != libraries[0]:
                error = TypeError(f"param {i} is a {lib} array, param 0 a {libraries[0]} one: "
                                  f"one library per ShardedAdam")
                break
        self._agree_or_raise(error, "the params")
        self.library = libraries[0] if libraries else "numpy"
        self.xp = _array_module(self.library)
        # the ranks agree on the kind of transport before one is made (NCCL's is collective)
        kind = None if isinstance(transport, str) else getattr(transport, "name", "given")
        if kind is None:
            try:
                kind = transport_kind(self.library, transport)
            except Exception as e:  # noqa: BLE001
                error = e
        self._agree_or_raise(error, "the transport")
        kinds = self.comm.allgather(kind)
        if len(set(kinds)) > 1:
            raise ValueError(f"ShardedAdam: the ranks chose different transports {kinds} "
                             f"(set ADAMCORE_MPI_CUDA_AWARE or transport= alike on every rank)")
        try:
            self.transport = transport if not isinstance(transport, str) else \
                make_transport(kind, self.comm)
        except Exception as e:  # noqa: BLE001
            error = e
        self._agree_or_raise(error, "the transport")
        # one flat space per dtype, in an order every rank computes alike
        by_dtype = {}
        for i, p in enumerate(self._params):
            by_dtype.setdefault(np.dtype(p.dtype).str, []).append(i)
        self.spaces = [FlatSpace(self.xp, np.dtype(key), idx, [self._params[i] for i in idx],
                                 self.rank, self.size, self.transport.equal_counts)
                       for key, idx in sorted(by_dtype.items())]
        self._space_of = {i: (s, k) for s in self.spaces for k, i in enumerate(s.indices)}
        self._pack_params()
        # pieces over every space, in param order: (space, param index, start, stop, shard start)
        self._pieces = sorted(((s, *piece) for s in self.spaces for piece in s.pieces),
                              key=lambda t: t[1])
        group_of = self._group_of = [k for k, g in enumerate(self.param_groups)
                                     for _ in g["params"]]
        inner_groups = [{**_hparams_of(g), "params": []} for g in self.param_groups]
        self._piece_grads = []
        for s, i, a, b, at in self._pieces:
            inner_groups[group_of[i]]["params"].append(s.pshard[at:at + b - a])
            self._piece_grads.append(s.gshard[at:at + b - a])
        self._inner = Adam(inner_groups, lr, betas, eps, weight_decay, **flags)
        self._steps = [0] * len(self.param_groups)

    # --- collectives that keep the ranks in agreement ----------------------------------------
    def _agree_or_raise(self, error, what):
        """Every rank learns of any rank's error and raises the same one (nothing changed)."""
        errors = self.comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
        bad = [(r, e) for r, e in enumerate(errors) if e is not None]
        if bad:
            text = "; ".join(f"rank {r}: {e}" for r, e in bad)
            kind = type(error) if error is not None and isinstance(
                error, (ValueError, TypeError, ImportError)) else ValueError
            raise kind(f"ShardedAdam: {what} are bad on {len(bad)} of {self.size} ranks ({text})")

    def _summary(self) -> str:
        """A digest of what must be equal on every rank: shapes, dtypes, groups, hyperparameters."""
        groups = []
        for g, step in zip(self.param_groups, self._steps):
            hp = {k: (repr(g[k]) if not callable(g[k]) else f"schedule@{step}:{g[k](step)!r}")
                  for k in _GROUP_KEYS}
            groups.append([hp, [[list(p.shape), str(p.dtype)] for p in g["params"]]])
        text = json.dumps([self.library, self.transport.name, groups, self.average,
                           self.max_grad_norm], default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def _check_step(self, grads):
        error = None
        try:
            if len(grads) != len(self._params):
                raise ValueError(f"got {len(grads)} grads for {len(self._params)} params")
            for i, (p, g) in enumerate(zip(self._params, grads)):
                if _library_of(g) != self.library:
                    raise TypeError(f"grad {i} is a {type(g).__name__}, not a {self.library} "
                                    f"array like its param")
                if g.shape != p.shape:
                    raise ValueError(f"grad {i} has shape {g.shape}, its param {p.shape}")
                if g.dtype != p.dtype:
                    raise ValueError(f"grad {i} has dtype {g.dtype}, its param {p.dtype}")
        except (TypeError, ValueError) as e:
            error = e
        summary = self._summary()
        reports = self.comm.allgather((summary, None if error is None else
                                       f"{type(error).__name__}: {error}"))
        bad = [(r, e) for r, (_, e) in enumerate(reports) if e is not None]
        if bad:
            text = "; ".join(f"rank {r}: {e}" for r, e in bad)
            raise ValueError(f"ShardedAdam.step: bad grads on {len(bad)} of {self.size} ranks "
                             f"({text}); nothing was updated")
        differ = [r for r, (s, _) in enumerate(reports) if s != reports[0][0]]
        if differ:
            raise ValueError(f"ShardedAdam.step: ranks {differ} disagree with rank 0 on the "
                             f"params' shapes, dtypes, param groups or hyperparameters; nothing "
                             f"was updated")

    # --- the step ------------------------------------------------------------------------------
    def step(self, grads):
        """Reduce-scatter ``grads``, update the own shard, all-gather; returns the params."""
        grads = list(grads)
        self._check_step(grads)
        for g, inner in zip(self.param_groups, self._inner.param_groups):
            inner.update(_hparams_of(g))
        try:
            self._reduce_scatter(grads)
            if self.average and self.size > 1:
                for s in self.spaces:
                    self.xp.divide(s.gshard, self.size, out=s.gshard)
            finite = self._agree_finite()
            if not finite:
                raise FloatingPointError("a reduced grad holds inf or NaN (check_finite is on, "
                                         "agreed by all ranks); nothing was updated")
            if self.max_grad_norm is not None:
                self.clip_grad_norm(self.max_grad_norm)
            self._inner.step(self._piece_grads)
            self._all_gather()
        except FloatingPointError:
            raise
        except BaseException as e:
            self._abort(e)
        self._steps = [s + 1 for s in self._steps]
        return self._params

    def _reduce_scatter(self, grads):
        """One reduce-scatter per dtype (per bucket when a rank's part is over bucket_elements)."""
        for s in self.spaces:
            if s.total == 0:
                continue
            for k, i in enumerate(s.indices):
                a, b = s.param_range(k)
                s.gflat[a:b] = grads[i].reshape(-1)
            if max(s.counts) <= self.bucket_elements:
                self.transport.reduce_scatter_sum(s.gflat, s.gshard, s.counts)
                continue
            start = s.segments[self.rank][0]
            for parts in s.buckets(self.bucket_elements):
                send = self.xp.concatenate([s.gflat[lo:hi] for lo, hi in parts])
                lo, hi = parts[self.rank]
                self.transport.reduce_scatter_sum(send, s.gshard[lo - start:hi - start],
                                                  [b - a for a, b in parts])

    def _all_gather(self):
        """One in-place all-gather per dtype (per bucket when large), then the params."""
        for s in self.spaces:
            if s.total == 0:
                continue
            if max(s.counts) <= self.bucket_elements:
                self.transport.all_gather_in_place(s.pflat, s.counts)
            else:
                for parts in s.buckets(self.bucket_elements):
                    counts = [b - a for a, b in parts]
                    buf = self.xp.empty(sum(counts), s.dtype)
                    a, b = parts[self.rank]
                    at = sum(counts[:self.rank])
                    buf[at:at + b - a] = s.pflat[a:b]
                    self.transport.all_gather_in_place(buf, counts)
                    at = 0
                    for (a, b) in parts:
                        s.pflat[a:b] = buf[at:at + b - a]
                        at += b - a
            for k, i in enumerate(s.indices):
                p = self._params[i]
                a, b = s.param_range(k)
                p[...] = s.pflat[a:b].reshape(p.shape)

    def _pack_params(self):
        for s in self.spaces:
            for k, i in enumerate(s.indices):
                a, b = s.param_range(k)
                s.pflat[a:b] = self._params[i].reshape(-1)

    def _agree_finite(self) -> bool:
        if not any(g["check_finite"] for g in self.param_groups):
            return True
        ok = all(bool(self.xp.isfinite(self._piece_grads[j]).all())
                 for j, (_s, i, *_r) in enumerate(self._pieces)
                 if self.param_groups[self._group_of[i]]["check_finite"])
        return bool(self.comm.allreduce(ok, op=self._MPI.LAND))

    def clip_grad_norm(self, max_norm) -> float:
        """Scales the reduced grads of the own shard so the global 2-norm is <= max_norm
        (torch's rule); returns the global norm. Called by step() when max_grad_norm is set."""
        local = 0.0
        for s in self.spaces:
            g = s.gshard.astype(np.float64)
            local += float(self.xp.dot(g, g))  # NCCL's padding is zero: it adds nothing
        total = math.sqrt(self.comm.allreduce(local, op=self._MPI.SUM))
        coef = float(max_norm) / (total + _CLIP_EPS)
        if coef < 1.0:
            for s in self.spaces:
                self.xp.multiply(s.gshard, s.reduce_dtype.type(coef), out=s.gshard)
        return total

    def _abort(self, error):
        sys.stderr.write(f"adamcore.distributed: rank {self.rank} failed inside step() "
                         f"({type(error).__name__}: {error}); aborting the communicator\n")
        sys.stderr.flush()
        abort = getattr(self.transport, "abort", None)
        if abort is not None:
            abort()
        self.comm.Abort(1)

    # --- state ---------------------------------------------------------------------------------
    @property
    def state_bytes(self) -> int:
        """Bytes of optimizer state (m, v, v-max) this rank holds."""
        return sum(int(a.nbytes) for s in self._inner.state.values() for k, a in s.items()
                   if k != "step")

    def _shard_id(self):
        """What a sharded state dict must match: this rank, the ranks, its range per dtype."""
        return [self.rank, self.size, [list(s.bounds[self.rank]) for s in self.spaces]]

    def _layout(self):
        """Per flat space: dtype, elements, every rank's range (recorded in the index)."""
        return [[s.dtype.str, s.total, [list(b) for b in s.bounds]] for s in self.spaces]

    def _groups_layout(self):
        return packed_groups(self.param_groups)

    def state_dict(self, sharded=False, root=0):
        """torch's layout as if unsharded, gathered on ``root`` (other ranks get None); with
        ``sharded=True`` every rank gets its own pieces: state[i] holds the piece of param i this
        rank owns and its range ``start``/``stop`` in the flattened param."""
        inner = self._inner.state
        mine = {}
        for j, (_space, i, a, b, _at) in enumerate(self._pieces):
            s = inner.get(j)
            if s is not None:
                mine[i] = {"step": s["step"], "start": a, "stop": b,
                           **{k: v for k, v in s.items() if k != "step"}}
        if sharded:
            return {"state": mine, "param_groups": self._groups_layout(),
                    "shard": self._shard_id()}
        everyone = self.comm.gather(mine, root=root)
        if self.rank != root:
            return None
        state = {}
        group_of, xp = self._group_of, self.xp
        for i, p in enumerate(self._params):
            parts = [d[i] for d in everyone if i in d]
            if not parts:  # an empty param: no rank owns any of it
                step = self._steps[group_of[i]]
                if step:
                    zero = xp.zeros(p.shape, np.float32 if p.dtype.itemsize < 4 else p.dtype)
                    keys = ("exp_avg", "exp_avg_sq") + (
                        ("max_exp_avg_sq",) if self.param_groups[group_of[i]]["amsgrad"] else ())
                    state[i] = {"step": step, **{k: zero.copy() for k in keys}}
                continue
            entry = {"step": parts[0]["step"]}
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in parts[0]:
                    full = xp.empty(p.size, parts[0][key].dtype)
                    for part in parts:
                        full[part["start"]:part["stop"]] = part[key]
                    entry[key] = full.reshape(p.shape)
            state[i] = entry
        return {"state": state, "param_groups": self._groups_layout()}

    def load_state_dict(self, state_dict, root=0):
        """Loads a full state dict given on ``root`` (other ranks may pass None; it is scattered)
        or, when it carries a ``shard`` entry, this rank's own shard. Errors on any rank are
        raised on every rank, with nothing changed."""
        sharded = self.comm.allreduce(int(state_dict is not None and "shard" in state_dict),
                                      op=self._MPI.SUM)
        if sharded and sharded != self.size:
            raise ValueError("ShardedAdam.load_state_dict: some ranks got a sharded state dict, "
                             "others a full one")
        error, piece_state = None, None
        if sharded:
            try:
                shard = _shard_of(state_dict["shard"])
                if shard != self._shard_id():
                    raise ValueError(f"the shard was written as (rank, ranks, ranges per dtype) "
                                     f"{shard}; this is {self._shard_id()}")
                piece_state = dict(state_dict["state"])
                groups = state_dict["param_groups"]
            except Exception as e:  # noqa: BLE001
                error, groups = e, None
        else:
            parts = groups = None
            if self.rank == root:
                try:
                    groups = state_dict["param_groups"]
                    parts = [{} for _ in range(self.size)]
                    for key, entry in dict(state_dict["state"]).items():
                        i = int(key)
                        if not 0 <= i < len(self._params):
                            raise ValueError(f"the state dict has state for param {i}, "
                                             f"this optimizer {len(self._params)} params")
                        space, k = self._space_of[i]
                        first, last = space.param_range(k)
                        for r, (lo, hi) in enumerate(space.bounds):
                            a, b = max(first, lo) - first, min(last, hi) - first
                            if a < b:
                                parts[r][i] = {key: (_flat(v)[a:b] if key != "step" else v)
                                               for key, v in entry.items()}
                except Exception as e:  # noqa: BLE001
                    error, parts = e, None
            failed = self.comm.bcast(None if error is None else f"{type(error).__name__}: {error}",
                                     root=root)
            if failed:
                raise ValueError(f"ShardedAdam.load_state_dict: {failed}; nothing changed")
            piece_state = self.comm.scatter(parts, root=root)
            groups = self.comm.bcast(groups, root=root)
        inner_sd = None
        if error is None:
            try:
                inner_sd = self._inner_state_dict(piece_state, groups)
                probe = Adam([{**_hparams_of(g), "params": [p.copy() for p in ig["params"]]}
                              for g, ig in zip(self.param_groups, self._inner.param_groups)])
                probe.load_state_dict(inner_sd)  # checks everything without touching ours
            except Exception as e:  # noqa: BLE001
                error = e
        self._agree_or_raise(error, "the state dict's entries")
        self._inner.load_state_dict(inner_sd)
        for k, g in enumerate(groups):
            for key, value in g.items():
                if key != "params" and key in _GROUP_KEYS:
                    self.param_groups[k][key] = tuple(value) if key == "betas" else value
        steps = self.comm.allgather([s.get("step") for s in self._inner.state.values()][:1])
        known = [s[0] for s in steps if s]
        self._steps = [int(known[0]) if known else 0] * len(self.param_groups)

    def _inner_state_dict(self, piece_state, groups):
        if len(groups) != len(self.param_groups):
            raise ValueError(f"the state dict has {len(groups)} param groups, "
                             f"this optimizer {len(self.param_groups)}")
        state = {}
        for j, (_space, i, a, b, _at) in enumerate(self._pieces):
            entry = piece_state.get(i, piece_state.get(str(i)))
            if entry is None:
                continue
            state[j] = {k: (_flat(v) if k != "step" else v)
                        for k, v in entry.items() if k not in ("start", "stop")}
            for k, v in state[j].items():
                if k != "step" and v.size != b - a:
                    raise ValueError(f"{k} of param {i} has {v.size} elements for this rank's "
                                     f"piece of {b - a}")
        inner_groups, start = [], 0
        for g, ig in zip(groups, self._inner.param_groups):
            packed = {k: v for k, v in g.items() if k != "params"}
            packed["params"] = list(range(start, start + len(ig["params"])))
            start += len(ig["params"])
            inner_groups.append(packed)
        return {"state": state, "param_groups": inner_groups}

    # --- checkpoints ---------------------------------------------------------------------------
    def save(self, path):
        """One ``.npz`` per rank (``path.rank<r>-of-<N>.npz``) plus the index ``path``, each
        written atomically; the index is written last, after every shard is on disk."""
        path = os.fspath(path)
        sd = self.state_dict(sharded=True)
        meta, arrays = _checkpoint._pack(sd)
        meta["shard"] = sd["shard"]
        arrays[_checkpoint._META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        error = None
        try:
            shard = _shard_path(path, self.rank, self.size)
            _checkpoint._write_atomically(shard, _checkpoint._directory_of(shard), arrays)
        except Exception as e:  # noqa: BLE001
            error = e
        self._agree_or_raise(error, "the shard files written")
        if self.rank == 0:
            index = {"format": _INDEX_FORMAT, "version": 2, "ranks": self.size,
                     "spaces": self._layout(),
                     "files": [os.path.basename(_shard_path(path, r, self.size))
                               for r in range(self.size)]}
            _checkpoint._write_atomically(path, _checkpoint._directory_of(path), {
                _checkpoint._META: np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)})
        self.comm.Barrier()

    def load(self, path):
        """Reads a checkpoint written by :meth:`save` with the same number of ranks."""
        path = os.fspath(path)
        error, sd = None, None
        try:
            with np.load(path, allow_pickle=False) as npz:
                index = json.loads(bytes(npz[_checkpoint._META]).decode())
            if index.get("format") != _INDEX_FORMAT:
                raise ValueError(f"{path} is not a sharded adamcore checkpoint index")
            if index.get("version") == 1 and len(self.spaces) == 1:  # one dtype, no dtype named
                index["spaces"] = [[self.spaces[0].dtype.str, index["total"], index["bounds"]]]
            if index["ranks"] != self.size or index.get("spaces") != self._layout():
                raise ValueError(f"{path} was written by {index['ranks']} ranks over "
                                 f"{index.get('spaces', index.get('total'))} (dtype, elements, "
                                 f"ranges); this is {self.size} over {self._layout()}")
            shard = os.path.join(os.path.dirname(path), index["files"][self.rank])
            sd = _checkpoint.load(shard)
            with np.load(shard, allow_pickle=False) as npz:
                sd["shard"] = json.loads(bytes(npz[_checkpoint._META]).decode())["shard"]
        except Exception as e:  # noqa: BLE001
            error = e
        self._agree_or_raise(error, "the checkpoint files")
        self.load_state_dict(sd)


class ShardedAdamW(ShardedAdam):
    """ShardedAdam with decoupled weight decay and AdamW's default weight_decay of 1e-2."""

    _defaults = {"weight_decay": 1e-2, "decoupled_weight_decay": True}


def _shard_of(entry) -> list:
    """A sharded state dict's ``shard`` entry as [rank, ranks, [[lo, hi] per dtype]]; the
    one-dtype form [rank, ranks, lo, hi] of earlier versions is read as one range."""
    entry = json.loads(json.dumps(entry))  # tuples -> lists, NumPy ints refused early
    if len(entry) == 4 and all(isinstance(x, int) for x in entry):
        entry = [entry[0], entry[1], [entry[2:]]]
    return entry


def _flat(v):
    """A state entry as one flat array of its own library (NumPy or CuPy)."""
    return v.reshape(-1) if hasattr(v, "reshape") and hasattr(v, "dtype") else \
        np.asarray(v).reshape(-1)


def _hparams_of(group: dict) -> dict:
    return {k: group[k] for k in _GROUP_KEYS if k in group}


def _shard_path(path: str, rank: int, size: int) -> str:
    return f"{path}.rank{rank}-of-{size}.npz"
