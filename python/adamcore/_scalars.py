"""Numbers given by users: Python, NumPy and torch scalars alike, with messages that name them.

Hyperparameters, step counts and thread counts arrive as ``0.1``, ``np.float32(0.1)``,
``torch.tensor(0.1)`` or a 0-d array of any library; all are numbers. Strings, None, lists and
arrays of more than one element are not, and get a message naming the argument and what is
accepted, rather than a failure deep inside the core.
"""

from __future__ import annotations

import math
import numbers
import operator

INT64_MAX = 2**63 - 1


def _is_scalar_array(value) -> bool:
    shape = getattr(value, "shape", None)
    return shape is not None and hasattr(value, "dtype") and math.prod(shape) == 1


def real(name: str, value) -> float:
    """``value`` as a float: a real number of any library (bool excluded), or a one-element
    array; ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, bytes)):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if _is_scalar_array(value):
        kind = str(getattr(value.dtype, "name", value.dtype))
        if "complex" in kind or "bool" in kind:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        try:
            return float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            pass
    raise ValueError(f"{name} must be a real number, got {value!r}")


def integer(name: str, value) -> int:
    """``value`` as an int: an integer of any library, a float or one-element array holding an
    integral value (torch keeps step counts as float32 tensors); ValueError otherwise — never
    truncated or rounded."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)  # int, NumPy and torch integer scalars
    except TypeError:
        pass
    x = real(name, value)
    if not math.isfinite(x) or x != math.floor(x):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(x)


def step_count(what: str, value) -> int:
    """A saved step count (steps already taken): an integer from 0 to 2**63 - 2, so that the
    next step's index still fits the core's int64."""
    n = integer(what, value)
    if not 0 <= n < INT64_MAX:
        raise ValueError(f"{what} must be from 0 to {INT64_MAX - 1}, got {n}")
    return n


def step_index(what: str, value) -> int:
    """The 1-based index of an update: an integer from 1 to 2**63 - 1."""
    try:
        n = integer(what, value)
    except ValueError:
        n = 0  # refused below with the message of this argument
    if not 1 <= n <= INT64_MAX:
        raise ValueError(f"{what} must be an int >= 1 (the index of this update) and at most "
                         f"{INT64_MAX}, got {value!r}")
    return n
