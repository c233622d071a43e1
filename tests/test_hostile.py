"""Inputs of an adversarial user: shared memory, lazy torch views, numbers of other libraries,
bad step counts and edited groups. Each is refused with a message naming the culprit and with
nothing changed, or, where it is a number, accepted as one."""

import threading

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import adamcore


def _snapshot(*arrays):
    return [np.array(a, copy=True) for a in arrays]


def _unchanged(before, *arrays):
    for b, a in zip(before, arrays):
        np.testing.assert_array_equal(np.asarray(a), b)


# ---- memory shared between the arrays of one step ------------------------------------------------
@pytest.mark.parametrize("views", [
    lambda b: (b[:], b[:]),                      # x[:] passed twice
    lambda b: (b[0:6], b[3:9]),                  # overlapping slices
    lambda b: (b, b[2:5]),                       # a param that is a view into another
    lambda b: (as_strided(b, (3,), (8,)), as_strided(b[1:], (3,), (4,))),
])
def test_params_sharing_memory_are_refused(views):
    buf = np.arange(12, dtype=np.float32)
    a, b = views(buf)
    before = _snapshot(buf)
    opt = adamcore.Adam([a, b], lr=0.1)
    with pytest.raises(ValueError, match=r"param 0 and param 1 share memory"):
        opt.step([np.ones_like(a), np.ones_like(b)])
    _unchanged(before, buf)
    assert opt.state == {}


def test_interleaved_params_are_fine():
    buf = np.zeros(12, dtype=np.float32)
    opt = adamcore.Adam([buf[::2], buf[1::2]], lr=0.1)
    opt.step([np.ones(6, np.float32), -np.ones(6, np.float32)])
    np.testing.assert_allclose(buf, np.tile([-0.1, 0.1], 6), rtol=1e-5)


def test_grad_overlapping_its_param_is_refused():
    buf = np.linspace(0, 1, 200_001, dtype=np.float32)
    p, g = buf[1:], buf[:-1]
    before = _snapshot(buf)
    with pytest.raises(ValueError, match="grad 0 would be read after the update wrote param 0"):
        adamcore.adam_step(p, g, np.zeros_like(p), np.zeros_like(p), step=1, lr=0.1)
    _unchanged(before, buf)


def test_dropin_with_one_tensor_twice_is_refused_as_torch_does():
    torch = pytest.importorskip("torch")
    import adamcore.torch as at

    w = torch.zeros(3, requires_grad=True)
    with pytest.warns(UserWarning), pytest.raises(ValueError):
        # torch warns about the duplicate; adamcore then refuses to update it twice
        opt = at.Adam([w, w], lr=0.1)
        w.grad = torch.ones(3)
        opt.step()
    assert torch.equal(w.detach(), torch.zeros(3))


def test_torch_overlapping_views_are_refused():
    torch = pytest.importorskip("torch")
    base = torch.zeros(12)
    with pytest.raises(ValueError, match="param 0 and param 1 share memory"):
        adamcore.Adam([base[0:6], base[3:9]]).step([torch.ones(6), torch.ones(6)])
    assert torch.equal(base, torch.zeros(12))


def test_broadcast_torch_param_is_refused():
    torch = pytest.importorskip("torch")
    p = torch.zeros(1).expand(4)
    with pytest.raises(ValueError, match="param 0 has a zero stride"):
        adamcore.Adam([p]).step([torch.ones(4)])


# ---- lazily negated or conjugated torch views ----------------------------------------------------
def test_negated_view_grad_is_read_by_its_values():
    torch = pytest.importorskip("torch")
    z = torch.tensor([1 + 2j, 3 - 4j])
    g = z.conj().imag  # values [-2, 4], memory [2, -4]
    assert g.is_neg()
    p, q = torch.zeros(2), torch.zeros(2)
    adamcore.Adam([p], lr=0.1).step([g])
    adamcore.Adam([q], lr=0.1).step([g.resolve_neg()])
    torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert p[0] > 0 and p[1] < 0  # moved against the gradient


def test_negated_view_param_is_refused():
    torch = pytest.importorskip("torch")
    z = torch.tensor([1 + 2j, 3 - 4j])
    p = z.conj().imag
    with pytest.raises(ValueError, match="param 0 is a lazily negated torch view"):
        adamcore.adam_step(p, torch.ones(2), torch.zeros(2), torch.zeros(2), step=1, lr=0.1)
    assert torch.equal(z, torch.tensor([1 + 2j, 3 - 4j]))


# ---- numbers of other libraries are numbers ------------------------------------------------------
def test_numpy_and_torch_scalars_as_hyperparameters():
    ref = np.zeros(3, np.float32)
    adamcore.Adam([ref], lr=0.1, betas=(0.9, 0.99)).step([np.ones(3, np.float32)])
    x = np.zeros(3, np.float32)
    opt = adamcore.Adam([x], lr=np.float32(0.1), betas=(np.float32(0.9), np.float64(0.99)),
                        eps=np.float32(1e-8), decouple_lr=True, max_lr=np.float32(0.1))
    opt.step([np.ones(3, np.float32)])
    np.testing.assert_allclose(x, ref, rtol=1e-6)
    p, *_ = adamcore.adam_step(np.zeros(3, np.float32), np.ones(3, np.float32),
                               np.zeros(3, np.float32), np.zeros(3, np.float32),
                               step=np.int64(1), lr=0.1)
    np.testing.assert_allclose(p, ref, rtol=1e-6)


@pytest.mark.parametrize("key, value, message", [
    ("lr", "0.1", "lr must be a number"),
    ("eps", None, "eps must be a number"),
    ("weight_decay", "x", "weight_decay must be a number"),
    ("betas", (0.9, "0.99"), r"betas\[1\] must be in \[0, 1\)"),
])
def test_group_edited_to_a_non_number_is_refused_on_every_step(key, value, message):
    x = np.zeros(3, np.float32)
    opt = adamcore.Adam([x], lr=0.1)
    for _ in range(2):  # the second step takes the steady path
        opt.step([np.ones(3, np.float32)])
    before = _snapshot(x)
    opt.param_groups[0][key] = value
    for _ in range(2):
        with pytest.raises(ValueError, match=message):
            opt.step([np.ones(3, np.float32)])
    _unchanged(before, x)
    assert opt.state[0]["step"] == 2


@pytest.mark.parametrize("bad", [None, "0.1", [0.1]])
def test_schedule_giving_a_non_number_is_refused(bad):
    x = np.zeros(3, np.float32)
    opt = adamcore.Adam([x], lr=lambda count: 0.1 if count < 2 else bad)
    for _ in range(2):
        opt.step([np.ones(3, np.float32)])
    before = _snapshot(x)
    with pytest.raises(ValueError, match="the lr schedule gave"):
        opt.step([np.ones(3, np.float32)])
    _unchanged(before, x)


def test_adam_step_refuses_a_step_past_int64():
    arrays = [np.zeros(3, np.float32) for _ in range(4)]
    with pytest.raises(ValueError, match=r"step must be an int >= 1"):
        adamcore.adam_step(*arrays, step=2**63, lr=0.1)


# ---- step counts in state dicts ------------------------------------------------------------------
def _state_dict_with(**state):
    x = np.zeros(3, np.float32)
    opt = adamcore.Adam([x], lr=0.1)
    opt.step([np.ones(3, np.float32)])
    sd = opt.state_dict()
    sd["state"][0] = {**sd["state"][0], **state}
    return opt, sd


@pytest.mark.parametrize("state, message", [
    (dict(step=float("inf")), "the step of param 0 must be an integer"),
    (dict(step=2.5), "the step of param 0 must be an integer"),
    (dict(step=-1), "must be from 0 to"),
    (dict(step=2**63 - 1), "must be from 0 to"),
    (dict(exp_avg=[0.0, 0.0, 0.0]), "exp_avg of param 0 is a list, not an array"),
    (dict(exp_avg_sq=None), "exp_avg_sq of param 0 is a NoneType, not an array"),
])
def test_bad_saved_state_is_refused_with_nothing_changed(state, message):
    opt, sd = _state_dict_with(**state)
    before = {k: dict(v) for k, v in opt.state.items()}
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(sd)
    assert opt.state[0]["step"] == before[0]["step"] == 1


def test_large_step_count_is_kept_exactly():
    opt, sd = _state_dict_with(step=2**63 - 2)
    opt.load_state_dict(sd)
    assert opt.state[0]["step"] == 2**63 - 2


def test_torch_step_tensor_is_accepted():
    torch = pytest.importorskip("torch")
    opt, sd = _state_dict_with(step=torch.tensor(5.0))
    opt.load_state_dict(sd)
    assert opt.state[0]["step"] == 5


# ---- two optimizers sharing a param, stepping at once -------------------------------------------
def test_two_optimizers_stepping_one_param_at_once_raise():
    from adamcore import _memory

    x = np.zeros(1 << 16, np.float32)
    second = adamcore.Adam([x], lr=0.1)
    held = _memory.layout(x).ptr
    _memory.claim(frozenset({held}), "test")  # as if another thread were inside a step now
    try:
        with pytest.raises(RuntimeError, match="another optimizer is stepping a parameter"):
            second.step([np.ones_like(x)])
    finally:
        _memory.release(frozenset({held}))
    np.testing.assert_array_equal(x, 0)
    second.step([np.ones_like(x)])  # released: fine again
    second.step([np.ones_like(x)])  # the steady path
    _memory.claim(frozenset({held}), "test")
    try:
        with pytest.raises(RuntimeError, match="another optimizer is stepping a parameter"):
            second.step([np.ones_like(x)])  # the steady path claims too
    finally:
        _memory.release(frozenset({held}))


def test_two_optimizers_on_disjoint_params_step_concurrently():
    xs = [np.zeros(1 << 18, np.float32) for _ in range(2)]
    opts = [adamcore.Adam([x], lr=0.1) for x in xs]
    errors = []

    def run(opt, x):
        try:
            for _ in range(20):
                opt.step([np.ones_like(x)])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(o, x)) for o, x in zip(opts, xs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    np.testing.assert_allclose(xs[0], xs[1])


# ---- what a new user types first ---------------------------------------------------------------
def test_step_without_grads_points_to_the_dropin():
    opt = adamcore.Adam([np.zeros(3)])
    with pytest.raises(TypeError, match=r"needs the grads.*adamcore\.torch\.Adam"):
        opt.step()


def test_torch_grad_none_names_the_grad_and_the_dropin():
    torch = pytest.importorskip("torch")
    w = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]
    opt = adamcore.AdamW(w)
    with pytest.raises(ValueError, match=r"grad 1 is None.*adamcore\.torch\.AdamW"):
        opt.step([torch.ones(2), w[1].grad])
    assert opt.state == {}


def test_a_dict_of_arrays_is_refused_clearly():
    with pytest.raises(TypeError, match=r"a dict of arrays \(a pytree.*adamcore\.optax"):
        adamcore.Adam({"w": np.zeros(3), "b": np.zeros(1)})
    with pytest.raises(TypeError, match=r"one param-group dict: pass \[group\]"):
        adamcore.Adam({"params": [np.zeros(3)], "lr": 0.1})


# ---- arrays nanobind would refuse with a dump of signatures -----------------------------------
def test_big_endian_arrays_are_named():
    with pytest.raises(TypeError, match=r"param 0 has a non-native byte order \(>f4\)"):
        adamcore.Adam([np.zeros(3, ">f4")]).step([np.ones(3, ">f4")])
    with pytest.raises(TypeError, match=r"grad 0 has a non-native byte order"):
        adamcore.Adam([np.zeros(3, np.float32)]).step([np.ones(3, ">f4")])
    with pytest.raises(TypeError, match=r"grad 0 has a non-native byte order"):
        adamcore.clip_grad_norm([np.ones(3, ">f4")], 1.0)


def test_ml_dtypes_bfloat16_numpy_steps_and_clip_names_it():
    """NumPy cannot export ml_dtypes.bfloat16 through DLPack: a step takes the reference path
    (the same numbers as the core's); the native-only clip_grad_norm names what to do."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p = np.zeros(3, ml_dtypes.bfloat16)
    adamcore.Adam([p], lr=0.5).step([np.ones(3, ml_dtypes.bfloat16)])
    assert np.all(p.astype(np.float32) == -0.5)
    with pytest.raises(TypeError, match="grad 0 is a NumPy array of ml_dtypes.bfloat16"):
        adamcore.clip_grad_norm([np.ones(3, ml_dtypes.bfloat16)], 1.0)


def test_sparse_torch_grad_is_named():
    torch = pytest.importorskip("torch")
    w = torch.zeros(3)
    with pytest.raises(TypeError, match=r"grad 0 is a torch.sparse_coo torch tensor"):
        adamcore.Adam([w]).step([torch.ones(3).to_sparse()])


def test_structured_field_param_is_updated_in_place():
    s = np.zeros(3, dtype=[("a", "f4"), ("b", "f4")])
    ref = np.zeros(3, np.float32)
    adamcore.Adam([s["a"]], lr=0.1).step([np.ones(3, np.float32)])
    adamcore.Adam([ref], lr=0.1).step([np.ones(3, np.float32)])
    np.testing.assert_array_equal(s["a"], ref)
    np.testing.assert_array_equal(s["b"], 0)
