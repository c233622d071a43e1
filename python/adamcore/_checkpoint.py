"""adamcore.save and adamcore.load: optimizer checkpoints on disk that an interruption cannot lose.

The file is a NumPy ``.npz`` (a zip with a CRC-32 per member): every array of the state dict as a
member ``state/<index>/<key>``, and one member ``__adamcore__`` holding JSON metadata: a format
tag and version, the param groups' hyperparameters, each state's scalars (``step``) and the name,
shape and dtype of every array member. It is written to a temporary file in the same directory,
flushed and fsynced, renamed over the target (atomic on POSIX and Windows), and the directory is
fsynced, so after a crash or a kill at any moment the path holds either the old checkpoint or the
new one, whole. ``load`` reads and checks everything before it returns, and refuses a truncated
or foreign file with a ValueError.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
import zipfile

import numpy as np

from . import _arrays

FORMAT = "adamcore.optimizer-checkpoint"
VERSION = 1
_META = "__adamcore__"


def save(optimizer, path) -> None:
    """Writes ``optimizer.state_dict()`` to ``path`` as an ``.npz`` checkpoint, atomically.

    Works for adamcore's optimizers and for anything with a torch-layout ``state_dict()``
    (torch.optim included). Arrays of any library are stored as NumPy arrays (bfloat16 widened,
    exactly, to float32); hyperparameters must be numbers, bools, None, strings or sequences of
    them. An lr schedule (a callable) is code, not data: it is left out, and the loading
    optimizer keeps its own. ``path`` is used as given (no suffix is added).
    """
    path = os.fspath(path)
    meta, arrays = _pack(optimizer.state_dict())
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _write_atomically(path, arrays)


def load(path) -> dict:
    """Reads a checkpoint written by :func:`save`; returns a state dict in torch's layout.

    Pass it to ``optimizer.load_state_dict``, which copies the arrays (NumPy here) into the
    parameters' library and device. Raises ValueError when the file is not a whole adamcore
    checkpoint (truncated, corrupted, another format, a newer version).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError
        try:
            with np.load(f, allow_pickle=False) as npz:
                if not isinstance(npz, np.lib.npyio.NpzFile):
                    raise ValueError("it is a single .npy array, not an .npz archive")
                if _META not in npz.files:
                    raise ValueError(f"it has no {_META} entry (an .npz from something else)")
                meta = json.loads(npz[_META].tobytes().decode())
                _check_header(meta)
                listed = {name for name, _, _ in meta["arrays"]}
                stored = set(npz.files) - {_META}
                if listed != stored:
                    raise ValueError(f"its arrays {sorted(stored)} are not those its metadata "
                                     f"lists {sorted(listed)}")
                arrays = {}
                for name, shape, dtype in meta["arrays"]:
                    a = npz[name]  # reading checks the member's CRC-32
                    if list(a.shape) != shape or a.dtype.str != dtype:
                        raise ValueError(f"array {name} has shape {a.shape} and dtype {a.dtype}; "
                                         f"its metadata says {tuple(shape)} and {dtype}")
                    arrays[name] = a
                return _unpack(meta, arrays)
        except ValueError as e:
            raise ValueError(f"{path} is not a valid adamcore checkpoint: {e}") from e
        except (OSError, EOFError, KeyError, TypeError, AttributeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a valid adamcore checkpoint (truncated or "
                             f"corrupted?): {type(e).__name__}: {e}") from e


# ---- packing --------------------------------------------------------------------------------
def _pack(state_dict: dict) -> tuple[dict, dict]:
    try:
        groups, state = state_dict["param_groups"], state_dict["state"]
    except (KeyError, TypeError):
        raise ValueError("the optimizer's state_dict() has no 'state' and 'param_groups'") from None
    meta_groups = []
    for k, group in enumerate(groups):
        packed = {}
        for key, value in group.items():
            if callable(value):
                continue  # a schedule: the loading optimizer's own applies
            packed[key] = _json_value(value, f"param group {k}'s {key!r}")
        meta_groups.append(packed)
    meta_state, arrays, listing = {}, {}, []
    for index, entry in state.items():
        scalars = {}
        for key, value in entry.items():
            if key != "step" and _arrays.is_array(value):  # 0-d too: a 0-d param's state
                name = f"state/{int(index)}/{key}"
                a = np.asarray(_arrays.to_numpy(value))  # np.save writes any layout
                arrays[name] = a
                listing.append([name, list(a.shape), a.dtype.str])
            else:  # step: a number, or a 0-d tensor in torch.optim's state
                scalars[key] = _json_value(value, f"the state of param {index}'s {key!r}")
        meta_state[str(int(index))] = scalars
    meta = {"format": FORMAT, "version": VERSION, "param_groups": meta_groups,
            "state": meta_state, "arrays": listing}
    return meta, arrays


def _json_value(value, what: str):
    """A hyperparameter or scalar as JSON: numbers, bools, None, strings, lists of them."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return _json_float(float(value))
    if isinstance(value, (list, tuple)):
        return [_json_value(v, what) for v in value]
    if _arrays.is_array(value) and tuple(value.shape) == ():  # a 0-d array (torch's step, lr)
        x = _arrays.to_numpy(value)
        return _json_value(x.item(), what)
    raise TypeError(f"{what} is a {type(value).__name__}, which a checkpoint cannot hold "
                    f"(numbers, bools, None, strings and lists of them)")


def _json_float(x: float):
    # JSON has no inf or NaN; strict parsers refuse Python's extension, so spell them out
    return x if math.isfinite(x) else {"float": repr(x)}


def _from_json(value):
    if isinstance(value, dict) and set(value) == {"float"}:
        return float(value["float"])
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _check_header(meta) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"its format tag is not {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or version < 1:
        raise ValueError(f"its version {version!r} is not a format version")
    if version > VERSION:
        raise ValueError(f"it is format version {version}, written by a newer adamcore; this "
                         f"one reads up to version {VERSION}")
    for key, kind in (("param_groups", list), ("state", dict), ("arrays", list)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"its metadata has no {key!r} {kind.__name__}")


def _unpack(meta: dict, arrays: dict) -> dict:
    groups = []
    for packed in meta["param_groups"]:
        group = {key: _from_json(value) for key, value in packed.items()}
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    state = {}
    for index, scalars in meta["state"].items():
        state[int(index)] = {key: _from_json(value) for key, value in scalars.items()}
    for name, a in arrays.items():
        _, index, key = name.split("/", 2)
        state.setdefault(int(index), {})[key] = a
    return {"state": dict(sorted(state.items())), "param_groups": groups}


# ---- the atomic write -----------------------------------------------------------------------
def _write_atomically(path: str, arrays: dict) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; give what open() would have
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _mode_for(path: str) -> int:
    try:
        return os.stat(path).st_mode & 0o7777  # keep an existing checkpoint's permissions
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # read without setting it: os.umask() would change it for every thread for a moment
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _fsync_directory(directory: str) -> None:
    """Makes the rename itself durable (POSIX; Windows cannot open a directory for this)."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
