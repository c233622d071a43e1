"""Numbers of every library are numbers: _scalars' conversions and their messages."""

import math

import numpy as np
import pytest

from adamcore import _scalars


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1),
                                   np.array(0.5), np.array([0.5])])
def test_real_accepts_numbers_of_any_library(value):
    assert _scalars.real("lr", value) == pytest.approx(float(np.asarray(value).ravel()[0]))


def test_real_accepts_torch_scalars():
    torch = pytest.importorskip("torch")
    assert _scalars.real("lr", torch.tensor(0.25)) == 0.25
    assert _scalars.real("betas[0]", torch.tensor([0.9], dtype=torch.float64)) == 0.9


@pytest.mark.parametrize("value", ["0.1", None, [0.1], (0.1,), True, np.zeros(2), 1j,
                                   np.complex64(1), object()])
def test_real_refuses_what_is_not_a_number(value):
    with pytest.raises(ValueError, match=r"^lr must be a real number, got "):
        _scalars.real("lr", value)


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int32(3), 3), (3.0, 3),
                                             (np.float32(3), 3), (2**63 - 2, 2**63 - 2)])
def test_integer_is_exact(value, expected):
    n = _scalars.integer("step", value)
    assert n == expected and type(n) is int


@pytest.mark.parametrize("value", [2.5, math.inf, math.nan, "3", None, True])
def test_integer_never_truncates(value):
    with pytest.raises(ValueError, match="step must be"):
        _scalars.integer("step", value)


def test_step_count_range():
    assert _scalars.step_count("step", 2**63 - 2) == 2**63 - 2
    for bad in (-1, 2**63 - 1, 2**64):
        with pytest.raises(ValueError, match="from 0 to 9223372036854775806"):
            _scalars.step_count("step", bad)


def test_step_count_from_torch_float_tensor():
    torch = pytest.importorskip("torch")
    assert _scalars.step_count("step", torch.tensor(7.0)) == 7
    with pytest.raises(ValueError):
        _scalars.step_count("step", torch.tensor(7.5))


def test_step_index_range():
    assert _scalars.step_index("step", np.int64(3)) == 3
    for bad in (0, 2**63):
        with pytest.raises(ValueError, match=r"step must be an int >= 1"):
            _scalars.step_index("step", bad)
