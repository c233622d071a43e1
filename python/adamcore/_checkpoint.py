"""adamcore.save and adamcore.load: optimizer checkpoints on disk that an interruption cannot lose.

The file is a NumPy ``.npz`` (a zip with a CRC-32 per member): every array of the state dict as a
member ``state/<index>/<key>``, and one member ``__adamcore__`` holding JSON metadata: a format
tag and version, the param groups' hyperparameters, each state's scalars (``step``) and the name,
shape and dtype of every array member. It is written to a temporary file in the same directory,
flushed and fsynced, renamed over the target (atomic on POSIX and Windows), and the directory is
fsynced, so after a crash or a kill at any moment the path holds either the old checkpoint or the
new one, whole. ``load`` reads and checks everything before it returns, and refuses a truncated
or foreign file with a ValueError.

The metadata also records each array's library and dtype (and which scalars were 0-d arrays,
as torch.optim's ``step``), so ``load`` gives a torch checkpoint back as torch tensors, ready for
torch.optim. Files written before that record existed load as NumPy arrays.
"""

from __future__ import annotations

import errno
import json
import math
import numbers
import os
import tempfile

import numpy as np

from . import _arrays, _convert

FORMAT = "adamcore.optimizer-checkpoint"
VERSION = 1
_META = "__adamcore__"


def save(optimizer, path) -> None:
    """Writes ``optimizer.state_dict()`` to ``path`` as an ``.npz`` checkpoint, atomically.

    Works for adamcore's optimizers and for anything with a torch-layout ``state_dict()``
    (torch.optim included). Arrays of any library are stored as NumPy arrays (bfloat16 widened,
    exactly, to float32), with a record of their library and dtype for :func:`load`;
    hyperparameters must be numbers, bools, None, strings or sequences of them. An lr schedule (a callable) is code, not data: it is left out, and the loading
    optimizer keeps its own. ``path`` is used as given (no suffix is added).
    """
    path = os.fspath(path)
    directory = _directory_of(path)  # before any work: a wrong path is the commonest error
    meta, arrays = _pack(optimizer.state_dict())
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    _write_atomically(path, directory, arrays)


def load(path, like=None, *, device=None) -> dict:
    """Reads a checkpoint written by :func:`save`; returns a state dict in torch's layout.

    Args:
        path: the checkpoint file.
        like: where the arrays go, as in :func:`adamcore.convert_state_dict`: the params the
            state dict will be loaded into (each param's state in its library and on its
            device), or a library (``torch``, ``numpy``, ``"jax"``, ...). By default each array
            comes back in the library it was saved from when that library can be imported
            (torch tensors on the CPU for a checkpoint of torch.optim or adamcore.torch, which
            torch.optim's ``load_state_dict`` takes), else as a NumPy array; checkpoints
            written before adamcore recorded the library give NumPy arrays.
        device: with a library for ``like``, the device to put the arrays on.

    adamcore's ``load_state_dict`` takes the result whatever its library (it copies into the
    params' library and device); torch.optim's takes only torch tensors: load a NumPy-made
    checkpoint for it with ``like=params`` (or ``like=torch``). Numbers are kept bit for bit.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not an adamcore checkpoint, or it is damaged (truncated,
            corrupted, another format, a newer format version); the message names the path.
    """
    path = os.fspath(path)
    meta, arrays = _read(path)
    try:
        state_dict = _unpack(meta, arrays)
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise _not_a_checkpoint(path, f"its metadata is malformed: {type(e).__name__}: "
                                      f"{e}") from e
    if like is not None:
        return _convert.convert_state_dict(state_dict, like, device=device)
    if device is not None:
        raise TypeError("load(path, device=...) needs like= (a library or the params) too")
    return _restore_libraries(state_dict, meta)


def _read(path: str) -> tuple[dict, dict]:
    """The metadata and the arrays of the checkpoint at ``path``, every member checked."""
    with open(path, "rb") as f:  # a missing file stays FileNotFoundError
        head = f.read(6)
        f.seek(0)
        try:
            contents = np.load(f, allow_pickle=False)
        except ValueError as e:
            if "pickle" not in str(e):
                raise _damaged(path, e) from e
            # np.load takes anything that is neither .npz nor .npy for a pickle
            raise _not_a_checkpoint(path, _what_else(head)) from None
        except Exception as e:  # the zip reader raises many kinds on a damaged file
            raise _damaged(path, e) from e
        if not isinstance(contents, np.lib.npyio.NpzFile):
            raise _not_a_checkpoint(path, "it is a single NumPy array (.npy), not the .npz "
                                          "archive adamcore.save writes")
        with contents as npz:
            names = npz.files
            if _META not in names:
                if any(name.endswith("data.pkl") for name in names):
                    raise _not_a_checkpoint(path, "it is a torch.save file: read it with "
                                                  "torch.load")
                if any(name.startswith("state/") for name in names):
                    raise _not_a_checkpoint(path, f"the file is damaged: it has no {_META} "
                                                  f"entry but adamcore's state arrays")
                raise _not_a_checkpoint(path, f"it has no {_META} entry (an .npz from "
                                              f"something else)")
            try:
                return _members(npz, names)
            except ValueError as e:
                if "allow_pickle" in str(e):  # a damaged array header reads as object dtype
                    raise _damaged(path, e) from e
                raise ValueError(f"{path} is not a valid adamcore checkpoint: {e}") from e
            except Exception as e:
                raise _damaged(path, e) from e


def _members(npz, names) -> tuple[dict, dict]:
    meta = json.loads(npz[_META].tobytes().decode())
    _check_header(meta)
    listed = {name for name, _, _ in meta["arrays"]}
    stored = set(names) - {_META}
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
    for key in ("libraries", "scalar_arrays"):  # optional: older files have neither
        if not isinstance(meta.get(key, {}), dict):
            raise ValueError(f"its metadata's {key!r} is not a dict")
    return meta, arrays


def _not_a_checkpoint(path: str, why: str) -> ValueError:
    return ValueError(f"{path} is not a valid adamcore checkpoint: {why}")


def _damaged(path: str, error: BaseException) -> ValueError:
    reason = f"{type(error).__name__}: {error}"
    if "allow_pickle" in reason:  # NumPy's advice to load pickles does not apply here
        reason = "an array header is damaged (it reads as pickled data)"
    return ValueError(f"{path} is not a valid adamcore checkpoint: the file is damaged "
                      f"(truncated or corrupted): {reason}")


def _what_else(head: bytes) -> str:
    if head[:1] == b"\x80":
        return ("it is a pickle (pickle.dump or an old torch.save), not the .npz archive "
                "adamcore.save writes")
    if head[:2] == b"PK":
        return "it is a damaged zip archive"
    return "it is neither an .npz archive (what adamcore.save writes) nor a NumPy array"


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
    meta_state, arrays, listing, libraries, scalar_arrays = {}, {}, [], {}, {}
    for index, entry in state.items():
        scalars = {}
        for key, value in entry.items():
            if key != "step" and _arrays.is_array(value):  # 0-d too: a 0-d param's state
                name = f"state/{int(index)}/{key}"
                a = np.asarray(_arrays.to_numpy(value))  # np.save writes any layout
                arrays[name] = a
                listing.append([name, list(a.shape), a.dtype.str])
                libraries[name] = [_arrays.library(value), _arrays.dtype_name(value.dtype)]
            else:  # step: a number, or a 0-d tensor in torch.optim's state
                scalars[key] = _json_value(value, f"the state of param {index}'s {key!r}")
                if _arrays.is_array(value):
                    scalar_arrays[f"{int(index)}/{key}"] = [_arrays.library(value),
                                                            _arrays.dtype_name(value.dtype)]
        meta_state[str(int(index))] = scalars
    # libraries and scalar_arrays are optional keys: readers that predate them ignore them
    meta = {"format": FORMAT, "version": VERSION, "param_groups": meta_groups,
            "state": meta_state, "arrays": listing, "libraries": libraries,
            "scalar_arrays": scalar_arrays}
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


def _restore_libraries(state_dict: dict, meta: dict) -> dict:
    """Each array (and 0-d scalar) back in the library it was saved from, where importable."""
    importable = {}

    def back(value, record):
        if not (isinstance(record, list) and len(record) == 2 and record[0] != "numpy"):
            return value
        library, dtype = record
        if library not in importable:
            try:
                _convert._import(library)
                importable[library] = True
            except ImportError:
                importable[library] = False
        if not importable[library]:
            return value  # NumPy, as the format promises where the library is missing
        try:
            return _convert.to_library(value, library, dtype=dtype)
        except (TypeError, ValueError, RuntimeError, AttributeError, ImportError):
            return value  # e.g. CuPy without a GPU: NumPy then
    libraries = meta.get("libraries", {})
    scalar_arrays = meta.get("scalar_arrays", {})
    for index, entry in state_dict["state"].items():
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                entry[key] = back(value, libraries.get(f"state/{index}/{key}"))
            elif isinstance(value, (int, float)) and f"{index}/{key}" in scalar_arrays:
                restored = back(np.asarray(value), scalar_arrays[f"{index}/{key}"])
                if not isinstance(restored, np.ndarray):  # else the number it was
                    entry[key] = restored
    return state_dict


# ---- the atomic write -----------------------------------------------------------------------
def _directory_of(path: str) -> str:
    """The folder the checkpoint goes into, checked so that errors name the user's path (the
    temporary file's name would mean nothing to them)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"cannot save a checkpoint to {path!r}: it is a "
                                f"folder; give a file name, e.g. {os.path.join(path, 'opt.ckpt')!r}",
                                path)
    if not os.path.isdir(directory):
        what = "is a file, not a folder" if os.path.exists(directory) else "does not exist"
        raise FileNotFoundError(errno.ENOENT, f"cannot save a checkpoint to {path!r}: its folder "
                                f"{directory!r} {what} (create it first, e.g. "
                                f"os.makedirs({os.path.dirname(path) or '.'!r}, exist_ok=True))",
                                path)
    return directory


def _write_atomically(path: str, directory: str, arrays: dict) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                                   dir=directory)
    except OSError as e:
        raise _write_error(e, path, f"cannot create a file in its folder {directory!r}") from e
    try:
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, _mode_for(path))  # mkstemp makes 0600; give what open() would have
            os.replace(tmp, path)
        except OSError as e:
            raise _write_error(e, path, "writing it failed; the previous checkpoint there, if "
                                        "any, is unchanged") from e
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def _write_error(error: OSError, path: str, what: str) -> OSError:
    """The same kind of OSError (PermissionError, ...), naming the user's path, not the
    temporary file's."""
    reason = error.strerror or str(error)
    return type(error)(error.errno, f"cannot save a checkpoint to {path!r}: {what}: {reason}",
                       path)


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
