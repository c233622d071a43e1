"""adamcore.schedules: values against closed forms, composition, validation, use as lr."""

import math
import pickle

import numpy as np
import pytest

import adamcore
from adamcore import schedules


def test_constant():
    s = schedules.constant(0.5)
    assert [s(c) for c in (0, 1, 10**9)] == [0.5, 0.5, 0.5]


def test_linear_and_linear_warmup():
    s = schedules.linear(1.0, 0.0, transition_steps=4, transition_begin=2)
    assert [s(c) for c in range(8)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    w = schedules.linear_warmup(1e-3, warmup_steps=10)
    assert w(0) == 0.0 and w(5) == pytest.approx(5e-4) and w(10) == w(1000) == 1e-3
    assert schedules.linear_warmup(1e-3, 0)(0) == 1e-3
    assert schedules.linear_warmup(1e-3, 4, init_value=1e-4)(0) == 1e-4


def test_cosine_decay_closed_form():
    s = schedules.cosine_decay(2.0, decay_steps=100, alpha=0.1, exponent=2.0)
    for c in (0, 1, 37, 50, 99, 100, 150):
        t = min(c, 100) / 100
        expected = 2.0 * (0.9 * (0.5 * (1 + math.cos(math.pi * t))) ** 2 + 0.1)
        assert s(c) == pytest.approx(expected, rel=1e-15)
    assert s(0) == 2.0 and s(100) == pytest.approx(0.2)


def test_warmup_cosine_is_warmup_then_cosine_over_the_rest():
    s = schedules.warmup_cosine(init_value=0.0, peak_value=1.0, warmup_steps=10,
                                decay_steps=110, end_value=0.1)
    assert [s(c) for c in (0, 5)] == [0.0, 0.5]
    assert s(10) == 1.0
    assert s(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    # the whole schedule is non-increasing after the peak
    values = np.array([s(c) for c in range(10, 120)])
    assert np.all(np.diff(values) <= 1e-15)
    no_warmup = schedules.warmup_cosine(0.0, 1.0, 0, 100)
    assert no_warmup(0) == 1.0 and no_warmup(100) == pytest.approx(0.0, abs=1e-15)


def test_join_counts_each_piece_from_zero():
    s = schedules.join([schedules.constant(1.0), schedules.linear(0.5, 0.0, 10),
                        lambda c: 0.01 * c], boundaries=[3, 8])
    assert [s(c) for c in (0, 2)] == [1.0, 1.0]
    assert [s(c) for c in (3, 4, 7)] == [0.5, 0.45, pytest.approx(0.3)]
    assert s(8) == 0.0 and s(10) == pytest.approx(0.02)


BAD = {
    "negative value": lambda: schedules.constant(-1.0),
    "nan value": lambda: schedules.constant(float("nan")),
    "non-number": lambda: schedules.constant("fast"),
    "float steps": lambda: schedules.linear_warmup(1.0, 2.5),
    "negative steps": lambda: schedules.linear(1.0, 0.0, -1),
    "zero decay steps": lambda: schedules.cosine_decay(1.0, 0),
    "alpha above 1": lambda: schedules.cosine_decay(1.0, 10, alpha=1.5),
    "zero exponent": lambda: schedules.cosine_decay(1.0, 10, exponent=0),
    "decay within warmup": lambda: schedules.warmup_cosine(0.0, 1.0, 10, 10),
    "end above peak": lambda: schedules.warmup_cosine(0.0, 1.0, 1, 10, end_value=2.0),
    "boundary count": lambda: schedules.join([schedules.constant(1.0)], [3]),
    "boundaries not increasing": lambda: schedules.join(
        [schedules.constant(1.0)] * 3, [5, 5]),
    "not a schedule": lambda: schedules.join([schedules.constant(1.0), 3.0], [2]),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_arguments_raise_at_construction(case):
    with pytest.raises(ValueError):
        BAD[case]()


def test_bad_counts():
    s = schedules.constant(1.0)
    with pytest.raises(ValueError):
        s(-1)
    with pytest.raises(TypeError):
        s(1.5)
    assert s(np.int64(3)) == 1.0


def test_schedules_pickle_and_compare():
    s = schedules.warmup_cosine(0.0, 1e-3, 10, 100, end_value=1e-5)
    t = pickle.loads(pickle.dumps(s))
    assert t == s and [t(c) for c in range(0, 120, 7)] == [s(c) for c in range(0, 120, 7)]
    assert "peak" not in repr(schedules.constant(1.0)) and "value=1.0" in repr(
        schedules.constant(1.0))


def test_schedule_drives_the_optimizer(rng):
    """The optimizer calls the schedule with the steps already taken: step k uses s(k - 1)."""
    s = schedules.warmup_cosine(1e-3, 0.1, 3, 10)
    p = rng.standard_normal(6).astype(np.float32)
    q = p.copy()
    opt = adamcore.Adam([p], lr=s)
    manual = adamcore.Adam([q], lr=1.0)
    for count in range(10):
        g = rng.standard_normal(6).astype(np.float32)
        manual.param_groups[0]["lr"] = s(count)
        opt.step([g])
        manual.step([g.copy()])
    np.testing.assert_array_equal(p, q)
