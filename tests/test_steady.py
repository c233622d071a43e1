"""The steady plan (adamcore/_steady.py): whatever a caller edits between two steps, a step on
the plan does exactly what the general step does.

Each edit runs twice: on an optimizer that has been stepping on its plan, and on a twin whose
plans are switched off (every step general). Same outcome either way: the same params and state
after the step, or the same exception with nothing changed."""

import copy

import numpy as np
import pytest

import adamcore
from adamcore import _blockwise, _steady


def _replace_param(opt, params, grads):
    opt.param_groups[0]["params"][1] = params[1].copy()


def _replace_state_array(opt, params, grads):
    opt.state[0]["exp_avg"] = np.zeros_like(params[0])


def _reset_counter(opt, params, grads):
    opt.state[2]["step"] = 100


def _equal_new_counter(opt, params, grads):
    opt.state[2]["step"] = int(str(opt.state[2]["step"]))  # equal value, another object


def _copy_state_dict(opt, params, grads):
    opt.state[1] = dict(opt.state[1])


def _new_state_mapping(opt, params, grads):
    opt.state = {k: dict(v) for k, v in opt.state.items()}


def _delete_state_key(opt, params, grads):
    del opt.state[0]["exp_avg_sq"]


def _delete_counter(opt, params, grads):
    del opt.state[1]["step"]


def _reshape_param(opt, params, grads):
    params[0].shape = (params[0].size, 1)
    grads[0] = grads[0].reshape(params[0].shape)


def _read_only_param(opt, params, grads):
    params[1].flags.writeable = False


def _grads_as_tuple(opt, params, grads):
    return tuple(grads)


def _grad_float64(opt, params, grads):
    grads[1] = grads[1].astype(np.float64)


def _grad_strided(opt, params, grads):
    grads[0] = np.repeat(grads[0], 2)[::2]  # taken through nanobind's import, not NumPy's fields


def _grad_fortran_order(opt, params, grads):
    grads[2] = np.asfortranarray(grads[2])


def _grad_byte_swapped(opt, params, grads):
    grads[1] = grads[1].astype(">f4")


def _grad_read_only(opt, params, grads):
    grads[1].flags.writeable = False


def _grad_float16(opt, params, grads):
    grads[0] = grads[0].astype(np.float16)


def _grad_ndarray_subclass(opt, params, grads):
    class Sub(np.ndarray):
        pass

    grads[1] = grads[1].view(Sub)


def _grad_other_rank(opt, params, grads):
    grads[0] = grads[0].reshape(7, 1)


def _int8_off(opt, params, grads):
    opt.param_groups[0]["state_dtype"] = None


def _int8_on(opt, params, grads):
    opt.param_groups[0]["state_dtype"] = "int8_blockwise"


def _replace_codes(opt, params, grads):
    if "exp_avg_absmax" in opt.state[1]:
        opt.state[1]["exp_avg_absmax"] = opt.state[1]["exp_avg_absmax"] * 2


def _grad_wrong_shape(opt, params, grads):
    grads[2] = np.ones(3, np.float32)


def _grad_a_list(opt, params, grads):
    grads[0] = grads[0].tolist()


def _one_grad_missing(opt, params, grads):
    del grads[-1]


def _lr_edited(opt, params, grads):
    opt.param_groups[0]["lr"] = 0.5


def _eps_edited_to_none(opt, params, grads):
    opt.param_groups[0]["eps"] = None


def _maximize_on(opt, params, grads):
    opt.param_groups[0]["maximize"] = True


def _betas_edited(opt, params, grads):
    opt.param_groups[0]["betas"] = (0.5, 0.75)


def _weight_decay_edited(opt, params, grads):
    opt.param_groups[0]["weight_decay"] = 0.5


def _group_replaced(opt, params, grads):
    opt.param_groups[0] = dict(opt.param_groups[0], lr=0.01)


def _amsgrad_on(opt, params, grads):
    opt.param_groups[0]["amsgrad"] = True


def _grad_not_finite_with_check(opt, params, grads):
    opt.param_groups[0]["check_finite"] = True
    grads[1][0] = np.nan


def _nothing(opt, params, grads):
    pass


EDITS = [_nothing, _replace_param, _replace_state_array, _reset_counter, _equal_new_counter,
         _copy_state_dict, _new_state_mapping, _delete_state_key, _delete_counter,
         _reshape_param, _read_only_param, _grads_as_tuple, _grad_float64, _grad_strided,
         _grad_fortran_order, _grad_byte_swapped, _grad_read_only, _grad_float16,
         _grad_ndarray_subclass, _grad_other_rank, _grad_wrong_shape,
         _grad_a_list, _one_grad_missing, _lr_edited, _eps_edited_to_none, _maximize_on,
         _betas_edited, _weight_decay_edited, _group_replaced, _amsgrad_on,
         _grad_not_finite_with_check, _int8_off, _int8_on, _replace_codes]


def _run(edit, plans: bool, monkeypatch, shapes, state_dtype=None):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    with monkeypatch.context() as m:
        if not plans:
            m.setattr(_steady.SteadyPlan, "build", classmethod(lambda *a, **k: None))
        opt = adamcore.AdamW(params, lr=0.1, weight_decay=0.1, state_dtype=state_dtype)
        for _ in range(3):
            opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
        if plans:
            assert opt._steady is not None
            if state_dtype == "int8_blockwise":
                assert isinstance(opt._steady.native, _blockwise.Plan)
            else:
                assert opt._steady.watched
        grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
        grads = edit(opt, params, grads) or grads  # an edit may return other grads
        before = copy.deepcopy((params, opt.state))
        try:
            opt.step(grads)
            error = None
        except Exception as e:  # noqa: BLE001 - compared between the two runs
            error = (type(e), str(e))
            after = (params, opt.state)
            np.testing.assert_equal(after, before)  # nothing changed
        # one more step: the optimizer goes on from wherever the edit left it
        if error is None:
            opt.step([np.full_like(p, 0.25) if isinstance(p, np.ndarray) else p for p in params])
        return error, params, opt.state


@pytest.mark.parametrize("state_dtype", [None, "int8_blockwise"], ids=["float", "int8"])
@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__.strip("_"))
def test_an_edit_between_steps_gives_what_the_general_step_gives(edit, state_dtype,
                                                                 monkeypatch):
    shapes = [(7,), (17,), (2, 5)]
    planned = _run(edit, True, monkeypatch, shapes, state_dtype)
    general = _run(edit, False, monkeypatch, shapes, state_dtype)
    assert planned[0] == general[0]
    np.testing.assert_equal(planned[1], general[1])
    np.testing.assert_equal(planned[2], general[2])


def test_the_plan_stays_while_nothing_changes_and_counts_every_step():
    params = [np.zeros(5, np.float32) for _ in range(300)]  # keys past the small-int cache
    opt = adamcore.Adam(params, lr=0.1)
    grads = [np.ones(5, np.float32) for _ in params]
    opt.step(grads)
    plan = opt._steady
    for _ in range(4):
        opt.step(tuple(grads))
    assert opt._steady is plan and plan.watched
    assert {s["step"] for s in opt.state.values()} == {5}
    assert plan.group_steps == [5]
    np.testing.assert_allclose(params[299], -0.5)  # lr 0.1 times 5 steps of sign(g)


def test_a_group_shares_one_counter_object_past_the_small_int_cache():
    """The plan advances equal counters to one new int (made once a step, not once a param);
    each state dict still reads its own count, and a counter set apart leaves the plan."""
    params = [np.zeros(3, np.float32) for _ in range(4)]
    opt = adamcore.Adam(params, lr=0.1)
    grads = [np.ones(3, np.float32) for _ in params]
    for _ in range(300):
        opt.step(grads)
    counters = [s["step"] for s in opt.state.values()]
    assert counters == [300] * 4 and len({id(c) for c in counters}) == 1
    opt.state[2]["step"] = 1000
    opt.step(grads)
    assert [s["step"] for s in opt.state.values()] == [301, 301, 1001, 301]


def test_steady_step_declines_without_writing_when_an_object_changed():
    """The native call itself: 0 (or -1 for a group's values) having written nothing, counters
    included; 1 having stepped."""
    params = [np.zeros(4, np.float32), np.zeros(3, np.float32)]
    opt = adamcore.Adam(params, lr=0.1)
    grads = [np.ones(4, np.float32), np.ones(3, np.float32)]
    opt.step(grads)
    opt.step(grads)
    plan, groups = opt._steady, opt.param_groups
    values = copy.deepcopy((params, opt.state))

    def step(params=params, state=opt.state, grads=grads, groups=groups):
        return plan.native.steady_step(params, state, grads, groups, None)

    assert step(params=params[::-1]) == 0
    assert step(state={k: dict(v) for k, v in opt.state.items()}) == 0
    assert step(grads=grads[:1]) == 0
    assert step(grads=[grads[0], [1.0, 1.0, 1.0]]) == 0
    assert step(grads=iter(grads)) == 0
    assert step(groups=[dict(groups[0])]) == -1
    assert step(groups=tuple(groups)) == -1
    groups[0]["lr"] = float("0.1")  # equal, another object: hyperparameters built again
    assert step() == -1
    np.testing.assert_equal((params, opt.state), values)
    assert plan.group_steps == [2]
    opt.step(grads)  # builds them and watches the new value
    assert step() == 1
    assert opt.state[0]["step"] == 4 and opt.state[1]["step"] == 4 and plan.group_steps == [4]


class _Recording(dict):
    """A param group that records the keys read from it."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)


@pytest.mark.parametrize("options", [{}, {"amsgrad": True, "maximize": True},
                                     {"decouple_lr": True, "max_lr": 0.2, "weight_decay": 0.1}])
def test_a_steady_step_reads_no_group_key_the_plan_does_not_watch(options):
    """GROUP_KEYS must name every key whose value the plan's step depends on: the cached
    hyperparameters are reused while those are unchanged."""
    opt = adamcore.AdamW([np.zeros(3, np.float32)], lr=0.1, **options)
    opt.step([np.ones(3, np.float32)])
    plan = opt._steady
    group = _Recording(opt.param_groups[0])
    plan.groups = [(0, group)]
    assert plan._hparams([group], None) is not None  # what a step computes from a group
    assert group.read  # (the hyperparameters were read from it)
    assert group.read <= set(_steady.GROUP_KEYS) | {"params"}


def test_group_edits_take_effect_on_the_plan_without_leaving_it(monkeypatch):
    """lr edited every step (what an LR scheduler does), and a schedule: the plan stays, and
    each step uses the value of that moment."""
    p, q = np.zeros(5, np.float32), np.zeros(5, np.float32)
    opt = adamcore.Adam([{"params": [p]}, {"params": [q], "lr": lambda c: 0.01 * (c + 1)}],
                        lr=0.1)
    g = [np.ones(5, np.float32)] * 2
    opt.step(g)
    plan = opt._steady
    for k in range(4):
        opt.param_groups[0]["lr"] = 0.1 / (k + 2)
        opt.step(g)
        assert opt._steady is plan
    # the sign of the first update is kept (g constant): each step moves by its lr
    np.testing.assert_allclose(p, -(0.1 + sum(0.1 / (k + 2) for k in range(4))), rtol=1e-5)
    np.testing.assert_allclose(q, -sum(0.01 * (c + 1) for c in range(5)), rtol=1e-5)
    assert plan.group_steps == [5, 5]


LOWP_MODES = {
    "float16 kahan": ("numpy", "float16", {"kahan_summation": True}),
    "float16 param state": ("numpy", "float16", {"state_dtype": "param"}),
    "bfloat16 kahan": ("torch", "bfloat16", {"kahan_summation": True}),
    "bfloat16 stochastic rounding": ("torch", "bfloat16",
                                     {"stochastic_rounding": True, "rounding_seed": 7}),
    "bfloat16 state": ("torch", "bfloat16", {"state_dtype": "bfloat16"}),
    "bfloat16 kahan bfloat16 state": ("torch", "bfloat16",
                                      {"kahan_summation": True, "state_dtype": "bfloat16"}),
}


def _lowp_seed_edited(opt):
    opt.param_groups[0]["rounding_seed"] = 3


def _lowp_kahan_off(opt):
    opt.param_groups[0]["kahan_summation"] = False


def _lowp_state_dtype_edited(opt):
    opt.param_groups[0]["state_dtype"] = "float32"


def _lowp_compensation_replaced(opt):
    for s in opt.state.values():
        if "kahan_comp" in s:
            s["kahan_comp"] = s["kahan_comp"] * 0


def _run_lowp(mode, edit, plans, monkeypatch):
    lib, dtype, options = LOWP_MODES[mode]
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(s).astype(np.float32) for s in [(7,), (33,), (3, 5)]]
    if lib == "torch":
        torch = pytest.importorskip("torch")
        params = [torch.from_numpy(v).to(getattr(torch, dtype)) for v in values]

        def grad(p):
            return torch.from_numpy(rng.standard_normal(tuple(p.shape)).astype(np.float32))
    else:
        params = [v.astype(dtype) for v in values]

        def grad(p):
            return rng.standard_normal(p.shape).astype(dtype)
    with monkeypatch.context() as m:
        if not plans:
            m.setattr(_steady.SteadyPlan, "build", classmethod(lambda *a, **k: None))
        opt = adamcore.AdamW(params, lr=1e-2, weight_decay=0.1, **options)
        error = None
        for step in range(6):
            if step == 3:
                edit(opt)
            try:
                opt.step([grad(p) for p in params])
            except (TypeError, ValueError) as e:  # compared between the two runs
                error = (type(e), str(e))
                break
            if plans and step == 2:
                assert opt._steady is not None, "a low-precision group took no plan"
                assert opt._steady.watched == (lib == "numpy")
        return params, opt.state_dict(), error


@pytest.mark.parametrize("edit", [lambda opt: None, _lowp_seed_edited, _lowp_kahan_off,
                                  _lowp_state_dtype_edited, _lowp_compensation_replaced],
                         ids=["nothing", "seed", "kahan off", "state dtype", "compensation"])
@pytest.mark.parametrize("mode", LOWP_MODES)
def test_low_precision_groups_step_on_the_plan_as_the_general_step_does(mode, edit,
                                                                       monkeypatch):
    """Kahan summation, stochastic rounding and 16-bit state take the steady plan (the core's
    CpuPlan holds the compensation buffers and seeds); an edit of any low-precision option
    between steps gives what the general step gives."""
    planned = _run_lowp(mode, edit, True, monkeypatch)
    general = _run_lowp(mode, edit, False, monkeypatch)
    assert planned[2] == general[2]
    for a, b in zip(planned[0], general[0]):
        assert np.asarray(a.float() if hasattr(a, "float") else a).tobytes() == \
            np.asarray(b.float() if hasattr(b, "float") else b).tobytes()
    sa, sb = planned[1]["state"], general[1]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for key in sa[k]:
            x, y = sa[k][key], sb[k][key]
            if hasattr(x, "float"):
                x, y = x.float().numpy(), y.float().numpy()
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{k} {key}")


@pytest.mark.parametrize("state_dtype", [None, "int8_blockwise"], ids=["float", "int8"])
def test_a_non_finite_grad_on_the_plan_with_check_finite_on_writes_nothing(state_dtype):
    """check_finite on from the start: the plan itself must refuse the NaN grad."""
    rng = np.random.default_rng(3)
    params = [rng.standard_normal(n).astype(np.float32) for n in (5, 300)]
    opt = adamcore.Adam(params, lr=0.1, check_finite=True, state_dtype=state_dtype)
    for _ in range(3):
        opt.step([np.ones_like(p) for p in params])
    assert opt._steady is not None
    grads = [np.ones_like(p) for p in params]
    grads[1][7] = np.nan
    before = copy.deepcopy((params, opt.state))
    with pytest.raises(FloatingPointError, match="grad 1 holds inf or NaN"):
        opt.step(grads)
    np.testing.assert_equal((params, opt.state), before)
