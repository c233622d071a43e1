"""Optimizer state sharded across MPI processes (ZeRO stage 1): ShardedAdam and ShardedAdamW.

Every rank holds the same parameters (NumPy arrays of one floating dtype). The parameters are laid
end to end in one flat space of ``T`` elements; rank ``r`` of ``N`` owns the contiguous range
``[T*r//N, T*(r+1)//N)`` (balanced by element count; a tensor may be split between ranks) and keeps
``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``) only for it. ``step(grads)``:

1. one small collective checks that every rank passes grads of the right count, shapes and dtype
   and the same hyperparameters (otherwise every rank raises the same ValueError, nothing changed);
2. one reduce-scatter over the flat grad buffer (sum, divided by N unless ``average=False``),
   in buckets of at most ``bucket_elements`` elements when large;
3. global-norm clipping (``max_grad_norm``) and ``check_finite`` agreed by one allreduce;
4. adamcore's own Adam/AdamW steps the owned pieces in place (the same per-element arithmetic as
   the single-process optimizer, so trajectories are equal bit for bit);
5. one all-gather of the updated shards into the flat parameter buffer, copied back into the
   params in place.

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


class ShardedAdam:
    """adamcore.Adam with its state sharded over the ranks of an MPI communicator.

    Args: as :class:`adamcore.Adam` (param groups, schedules and every flag), plus
        comm: an mpi4py communicator (default ``MPI.COMM_WORLD``);
        average: divide the summed grads by the number of ranks (default) or keep the sum;
        max_grad_norm: clip the reduced grads by their global 2-norm (reduced across ranks);
        bucket_elements: the largest number of elements one reduce-scatter/all-gather moves.
    """

    _defaults = {"weight_decay": 0.0, "decoupled_weight_decay": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=None, *,
                 comm=None, average=True, max_grad_norm=None, bucket_elements=1 << 24, **flags):
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
        dtypes = {p.dtype for p in self._params}
        for i, p in enumerate(self._params):
            if not isinstance(p, np.ndarray):
                error = TypeError(f"param {i} is a {type(p).__name__}; ShardedAdam takes NumPy arrays")
                break
        else:
            if len(dtypes) > 1:
                error = TypeError(f"all params must share one dtype, got {sorted(map(str, dtypes))}")
        self._agree_or_raise(error, "the params")
        self.dtype = self._params[0].dtype if self._params else np.dtype(np.float32)
        sizes = [int(p.size) for p in self._params]
        self._offsets = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).tolist()
        total = self.total = int(self._offsets[-1])
        n = self.size
        self.bounds = [(total * r // n, total * (r + 1) // n) for r in range(n)]
        self.counts = [hi - lo for lo, hi in self.bounds]
        self.lo, self.hi = self.bounds[self.rank]
        self._pflat = np.empty(total, self.dtype)
        self._gflat = np.empty(total, self.dtype)
        self._gshard = np.empty(self.hi - self.lo, self.dtype)
        self._pshard = self._pflat[self.lo:self.hi]
        # pieces: (param index, start in the tensor, stop, start in the shard)
        self._pieces = []
        for i, p in enumerate(self._params):
            a, b = max(self._offsets[i], self.lo), min(self._offsets[i + 1], self.hi)
            if a < b:
                self._pieces.append((i, a - self._offsets[i], b - self._offsets[i], a - self.lo))
        self._pack_params()
        group_of = [k for k, g in enumerate(self.param_groups) for _ in g["params"]]
        inner_groups = [{**_hparams_of(g), "params": []} for g in self.param_groups]
        self._piece_grads = []
        for i, a, b, s in self._pieces:
            inner_groups[group_of[i]]["params"].append(self._pshard[s:s + b - a])
            self._piece_grads.append(self._gshard[s:s + b - a])
        self._inner = Adam(inner_groups, lr, betas, eps, weight_decay, **flags)
        self._steps = [0] * len(self.param_groups)
        self._checked = None

    # --- collectives that keep the ranks in agreement ----------------------------------------
    def _agree_or_raise(self, error, what):
        """Every rank learns of any rank's error and raises the same one (nothing changed)."""
        errors = self.comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
        bad = [(r, e) for r, e in enumerate(errors) if e is not None]
        if bad:
            text = "; ".join(f"rank {r}: {e}" for r, e in bad)
            kind = type(error) if error is not None and isinstance(error, (ValueError, TypeError)) \
                else ValueError
            raise kind(f"ShardedAdam: {what} are bad on {len(bad)} of {self.size} ranks ({text})")

    def _summary(self) -> str:
        """A digest of what must be equal on every rank: shapes, dtype, groups, hyperparameters."""
        groups = []
        for g, step in zip(self.param_groups, self._steps):
            hp = {k: (repr(g[k]) if not callable(g[k]) else f"schedule@{step}:{g[k](step)!r}")
                  for k in _GROUP_KEYS}
            groups.append([hp, [list(p.shape) for p in g["params"]]])
        text = json.dumps([str(self.dtype), groups, self.average, self.max_grad_norm], default=repr)
        return hashlib.sha256(text.encode()).hexdigest()

    def _check_step(self, grads):
        error = None
        try:
            if len(grads) != len(self._params):
                raise ValueError(f"got {len(grads)} grads for {len(self._params)} params")
            for i, (p, g) in enumerate(zip(self._params, grads)):
                if not isinstance(g, np.ndarray):
                    raise TypeError(f"grad {i} is a {type(g).__name__}, not a NumPy array")
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
            raise ValueError(f"ShardedAdam.step: ranks {differ} disagree with rank 0 on the params' "
                             f"shapes, dtype, param groups or hyperparameters; nothing was updated")

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
                np.divide(self._gshard, self.size, out=self._gshard)
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
        for i, g in enumerate(grads):
            self._gflat[self._offsets[i]:self._offsets[i + 1]] = g.reshape(-1)
        MPI = self._MPI
        if max(self.counts, default=0) <= self.bucket_elements:
            self.comm.Reduce_scatter(self._gflat, self._gshard, self.counts, op=MPI.SUM)
            return
        for parts in self._buckets():
            counts = [hi - lo for lo, hi in parts]
            send = np.concatenate([self._gflat[lo:hi] for lo, hi in parts])
            lo, hi = parts[self.rank]
            self.comm.Reduce_scatter(send, self._gshard[lo - self.lo:hi - self.lo], counts,
                                     op=MPI.SUM)

    def _buckets(self):
        """Per bucket, the range of the flat space each rank's shard contributes to it: a
        bucket moves at most bucket_elements per rank."""
        width = max(1, self.bucket_elements)
        for k in range(0, max(max(self.counts), 1), width):
            yield [(min(lo + k, hi), min(lo + k + width, hi)) for lo, hi in self.bounds]

    def _all_gather(self):
        if max(self.counts, default=0) <= self.bucket_elements:
            displs = [lo for lo, _ in self.bounds]
            self.comm.Allgatherv(self._pshard.copy(), [self._pflat, self.counts, displs,
                                                       self._MPI_type()])
        else:
            for parts in self._buckets():
                counts = [b - a for a, b in parts]
                recv = np.empty(sum(counts), self.dtype)
                a, b = parts[self.rank]
                self.comm.Allgatherv(self._pflat[a:b].copy(), [recv, counts, self._MPI_type()])
                at = 0
                for (a, b) in parts:
                    self._pflat[a:b] = recv[at:at + b - a]
                    at += b - a
        for i, p in enumerate(self._params):
            p[...] = self._pflat[self._offsets[i]:self._offsets[i + 1]].reshape(p.shape)

    def _MPI_type(self):
        return self._MPI._typedict[self.dtype.char]

    def _pack_params(self):
        for i, p in enumerate(self._params):
            self._pflat[self._offsets[i]:self._offsets[i + 1]] = p.reshape(-1)

    def _agree_finite(self) -> bool:
        if not any(g["check_finite"] for g in self.param_groups):
            return True
        group_of = [k for k, g in enumerate(self.param_groups) for _ in g["params"]]
        ok = all(np.isfinite(self._piece_grads[j]).all()
                 for j, (i, *_r) in enumerate(self._pieces)
                 if self.param_groups[group_of[i]]["check_finite"])
        return bool(self.comm.allreduce(ok, op=self._MPI.LAND))

    def clip_grad_norm(self, max_norm) -> float:
        """Scales the reduced grads of the own shard so the global 2-norm is <= max_norm
        (torch's rule); returns the global norm. Called by step() when max_grad_norm is set."""
        local = float(np.dot(self._gshard.astype(np.float64), self._gshard.astype(np.float64)))
        total = math.sqrt(self.comm.allreduce(local, op=self._MPI.SUM))
        coef = float(max_norm) / (total + _CLIP_EPS)
        if coef < 1.0:
            np.multiply(self._gshard, self.dtype.type(coef), out=self._gshard)
        return total

    def _abort(self, error):
        sys.stderr.write(f"adamcore.distributed: rank {self.rank} failed inside step() "
                         f"({type(error).__name__}: {error}); aborting the communicator\n")
        sys.stderr.flush()
        self.comm.Abort(1)

    # --- state ---------------------------------------------------------------------------------
    @property
    def state_bytes(self) -> int:
        """Bytes of optimizer state (m, v, v-max) this rank holds."""
        return sum(a.nbytes for s in self._inner.state.values() for a in s.values()
                   if isinstance(a, np.ndarray))

    def _groups_layout(self):
        return packed_groups(self.param_groups)

    def state_dict(self, sharded=False, root=0):
        """torch's layout as if unsharded, gathered on ``root`` (other ranks get None); with
        ``sharded=True`` every rank gets its own pieces: state[i] holds the piece of param i this
        rank owns and its range ``start``/``stop`` in the flattened param."""
        inner = self._inner.state
        mine = {}
        for j, (i, a, b, _s) in enumerate(self._pieces):
            s = inner.get(j)
            if s is not None:
                mine[i] = {"step": s["step"], "start": a, "stop": b,
                           **{k: v for k, v in s.items() if k != "step"}}
        if sharded:
            return {"state": mine, "param_groups": self._groups_layout(),
                    "shard": [self.rank, self.size, self.lo, self.hi]}
        everyone = self.comm.gather(mine, root=root)
        if self.rank != root:
            return None
        state = {}
        group_of = [k for k, g in enumerate(self.param_groups) for _ in g["params"]]
        for i, p in enumerate(self._params):
            parts = [d[i] for d in everyone if i in d]
            if not parts:  # an empty param: no rank owns any of it
                step = self._steps[group_of[i]]
                if step:
                    zero = np.zeros(p.shape, np.float32 if p.dtype.itemsize < 4 else p.dtype)
                    keys = ("exp_avg", "exp_avg_sq") + (
                        ("max_exp_avg_sq",) if self.param_groups[group_of[i]]["amsgrad"] else ())
                    state[i] = {"step": step, **{k: zero.copy() for k in keys}}
                continue
            entry = {"step": parts[0]["step"]}
            for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
                if key in parts[0]:
                    full = np.empty(p.size, parts[0][key].dtype)
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
                r, n, lo, hi = state_dict["shard"]
                if (r, n, lo, hi) != (self.rank, self.size, self.lo, self.hi):
                    raise ValueError(f"the shard was written by rank {r} of {n} for [{lo}, {hi}); "
                                     f"this is rank {self.rank} of {self.size} for "
                                     f"[{self.lo}, {self.hi})")
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
                        for r, (lo, hi) in enumerate(self.bounds):
                            a = max(self._offsets[i], lo) - self._offsets[i]
                            b = min(self._offsets[i + 1], hi) - self._offsets[i]
                            if a < b:
                                parts[r][i] = {k: (np.asarray(v).reshape(-1)[a:b]
                                                   if k != "step" else v) for k, v in entry.items()}
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
        for j, (i, a, b, _s) in enumerate(self._pieces):
            entry = piece_state.get(i, piece_state.get(str(i)))
            if entry is None:
                continue
            state[j] = {k: (np.asarray(v).reshape(-1) if k not in ("step", "start", "stop") else v)
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
            index = {"format": _INDEX_FORMAT, "version": 1, "ranks": self.size,
                     "total": self.total, "bounds": self.bounds,
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
            if index["ranks"] != self.size or index["total"] != self.total:
                raise ValueError(f"{path} was written by {index['ranks']} ranks over "
                                 f"{index['total']} elements; this is {self.size} over {self.total}")
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


def _hparams_of(group: dict) -> dict:
    return {k: group[k] for k in _GROUP_KEYS if k in group}


def _shard_path(path: str, rank: int, size: int) -> str:
    return f"{path}.rank{rank}-of-{size}.npz"
