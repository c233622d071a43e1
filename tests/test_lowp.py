"""Low-precision modes (docs/update.md): 16-bit state, Kahan summation, stochastic rounding.

Every mode on every compiled SIMD level, dense and strided, is compared bit for bit with the pure
reference path (python/adamcore/_reference.py, run in NumPy with ml_dtypes), and the reference
itself with a float64 run of the same algorithm; the modes keep updates plain bfloat16 drops.
"""

import numpy as np
import pytest

import adamcore
from adamcore import _core, _hparams, _lowp, _reference

torch = pytest.importorskip("torch")
ml_dtypes = pytest.importorskip("ml_dtypes")
import adamcore.torch  # noqa: E402

SIZES = [1, 7, 17, 1023, 65537]
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
NUMPY = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16, "float32": np.float32}

# (param dtype, grad dtype, state dtype, options): every combination the kernels take
MODES = {
    "bf16-state-bf16": ("bfloat16", "bfloat16", "bfloat16", {}),
    "bf16-gf32-state-bf16": ("bfloat16", "float32", "bfloat16", {}),
    "f16-state-f16": ("float16", "float16", "float16", {}),
    "f16-gf32-state-bf16": ("float16", "float32", "bfloat16", {}),
    "f32-state-bf16": ("float32", "float32", "bfloat16", {}),
    "bf16-kahan": ("bfloat16", "bfloat16", "float32", {"kahan_summation": True}),
    "bf16-gf32-kahan-state-bf16": ("bfloat16", "float32", "bfloat16", {"kahan_summation": True}),
    "f16-kahan": ("float16", "float16", "float32", {"kahan_summation": True}),
    "f16-gf32-kahan-state-f16": ("float16", "float32", "float16", {"kahan_summation": True}),
    "bf16-sr": ("bfloat16", "bfloat16", "float32", {"stochastic_rounding": True}),
    "bf16-gf32-sr-state-bf16": ("bfloat16", "float32", "bfloat16",
                                {"stochastic_rounding": True}),
}
FLAGS = {
    "adamw": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "adam-l2-amsgrad": dict(weight_decay=0.05, amsgrad=True),
    "maximize": dict(maximize=True),
}


def _np(t):
    """A torch tensor's values as a NumPy array of the same dtype (bfloat16 via ml_dtypes)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return t.numpy().copy()


def _bits(x):
    x = np.ascontiguousarray(x)
    return x.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize])


def _group(flags, options, state):
    group = {"lr": 3e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
             "decoupled_weight_decay": False, "decouple_lr": False, "max_lr": None,
             "amsgrad": False, "maximize": False, **flags, **options, "state_dtype": state}
    if "betas" in flags:
        group["betas"] = flags["betas"]
    return group


def _reference_steps(p, grads, group, seed_index=0):
    """The reference path in NumPy: (p, m, v, vmax, comp) after the steps."""
    state = _lowp.state_dtype(group, str(p.dtype) if p.dtype != ml_dtypes.bfloat16 else "bfloat16")
    sd = NUMPY[state]
    m = np.zeros(p.shape, sd)
    v = np.zeros(p.shape, sd)
    vmax = np.zeros(p.shape, sd) if group["amsgrad"] else None
    comp = np.zeros(p.shape, p.dtype) if group.get("kahan_summation") else None
    for step, g in enumerate(grads, start=1):
        hp = _hparams.step_hparams(group, step)
        p, m, v, vmax, comp = _reference.lowp_update(
            np, p, g, m, v, vmax, comp, hp, _lowp.tensor_seed(group, seed_index))
    return p, m, v, vmax, comp


def _native_steps(p, grads, group):
    """adam_step on torch CPU tensors (the C++ core at the current SIMD level)."""
    state = TORCH[_lowp.state_dtype(group, str(p.dtype).replace("torch.", ""))]
    m = torch.zeros(p.shape, dtype=state)
    v = torch.zeros(p.shape, dtype=state)
    vmax = torch.zeros(p.shape, dtype=state) if group["amsgrad"] else None
    comp = torch.zeros(p.shape, dtype=p.dtype) if group.get("kahan_summation") else None
    beta1, beta2 = group["betas"]
    for step, g in enumerate(grads, start=1):
        adamcore.adam_step(
            p, g, m, v, step=step, lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
            weight_decay=group["weight_decay"],
            decoupled_weight_decay=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
            max_exp_avg_sq=vmax, maximize=group["maximize"],
            kahan_summation=group.get("kahan_summation", False), compensation=comp,
            stochastic_rounding=group.get("stochastic_rounding", False))
    return p, m, v, vmax, comp


def _inputs(shape, pdt, gdt, steps=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    p = (torch.randn(shape, generator=gen) * 2).to(TORCH[pdt])
    grads = [torch.randn(shape, generator=gen).to(TORCH[gdt]) for _ in range(steps)]
    return p, grads


def _assert_same(native, reference):
    for name, a, b in zip(("param", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "kahan_comp"),
                          native, reference):
        if a is None:
            assert b is None, name
            continue
        np.testing.assert_array_equal(_bits(_np(a)), _bits(b), err_msg=name)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_matches_reference_bitwise(simd_level, mode, size):
    pdt, gdt, state, options = MODES[mode]
    group = _group({}, options, state)
    p, grads = _inputs((size,), pdt, gdt)
    ref = _reference_steps(_np(p), [_np(g) for g in grads], group)
    _assert_same(_native_steps(p, grads, group), ref)


@pytest.mark.parametrize("flags", sorted(FLAGS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_flags_in_every_mode(simd_level, mode, flags):
    pdt, gdt, state, options = MODES[mode]
    group = _group(FLAGS[flags], options, state)
    p, grads = _inputs((1031,), pdt, gdt, seed=1)
    ref = _reference_steps(_np(p), [_np(g) for g in grads], group)
    _assert_same(_native_steps(p, grads, group), ref)


@pytest.mark.parametrize("layout", ["strided", "unaligned", "transposed"])
@pytest.mark.parametrize("mode", ["bf16-kahan", "bf16-sr", "f16-state-f16", "bf16-state-bf16",
                                  "bf16-gf32-sr-state-bf16"])
def test_strided_and_unaligned_views(simd_level, mode, layout):
    """Views take the strided loop (or, unaligned, the vector path off alignment); stochastic
    rounding counts elements in C order, so a transposed dense view draws the same bits."""
    pdt, gdt, state, options = MODES[mode]
    group = _group({}, options, state)
    p, grads = _inputs((33, 34), pdt, gdt, seed=2)
    ref = _reference_steps(_np(p), [_np(g) for g in grads], group)

    def view(t):
        if layout == "strided":
            big = torch.zeros((33, 68), dtype=t.dtype)
            big[:, ::2] = t
            return big[:, ::2]
        if layout == "unaligned":
            flat = torch.zeros(33 * 34 + 1, dtype=t.dtype)
            flat[1:] = t.reshape(-1)
            return flat[1:].view(33, 34)
        return t.t().contiguous().t()  # dense, Fortran order

    p = view(p)
    grads = [view(g) for g in grads]
    state_t = TORCH[state]
    m, v = view(torch.zeros((33, 34), dtype=state_t)), view(torch.zeros((33, 34), dtype=state_t))
    comp = view(torch.zeros((33, 34), dtype=p.dtype)) if options.get("kahan_summation") else None
    for step, g in enumerate(grads, start=1):
        adamcore.adam_step(p, g, m, v, step=step, lr=group["lr"], compensation=comp,
                           kahan_summation=bool(options.get("kahan_summation")),
                           stochastic_rounding=bool(options.get("stochastic_rounding")))
    _assert_same((p, m, v, None, comp), ref)


def test_reference_against_float64_run():
    """The reference path (the oracle of the bit tests) is the algorithm it claims: its
    Kahan-summed bfloat16 trajectory stays within a few bfloat16 ulps of a float64 run, its
    bfloat16 state within bfloat16 rounding of the float64 moments."""
    rng = np.random.default_rng(5)
    n, steps = 4096, 200
    p64 = rng.standard_normal(n)
    grads = [rng.standard_normal(n) for _ in range(steps)]
    group = _group({}, {"kahan_summation": True}, "bfloat16")
    p = p64.astype(ml_dtypes.bfloat16)
    p64 = p.astype(np.float64)
    m64 = np.zeros(n)
    v64 = np.zeros(n)
    m = np.zeros(n, ml_dtypes.bfloat16)
    v = np.zeros(n, ml_dtypes.bfloat16)
    comp = np.zeros(n, ml_dtypes.bfloat16)
    for t, g in enumerate(grads, start=1):
        hp = _hparams.step_hparams(group, t)
        p, m, v, _, comp = _reference.lowp_update(np, p, g.astype(np.float32), m, v, None, comp,
                                                  hp, 0)
        m64 = 0.9 * m64 + 0.1 * g
        v64 = 0.999 * v64 + 0.001 * g * g
        p64 = p64 - 3e-3 / (1 - 0.9**t) * m64 / (np.sqrt(v64 / (1 - 0.999**t)) + 1e-8)
    ulp = np.abs(p64) * 2.0**-7 + 1e-3
    # the moments in bfloat16 differ from float64's by rounding, which moves each step a little
    assert np.median(np.abs(p.astype(np.float64) - p64) / ulp) < 1.0
    np.testing.assert_allclose(m.astype(np.float64), m64, rtol=0.05, atol=0.02)
    # v in bfloat16 loses increments below its resolution (beta2 = 0.999): a drift of percents
    rel = np.abs(v.astype(np.float64) - v64) / v64
    assert np.median(rel) < 0.02 and rel.max() < 0.15


def test_small_updates_kept_by_kahan_and_stochastic_rounding():
    """lr far below half a bfloat16 ulp of the params: plain bfloat16 rounding drops every
    update, Kahan summation and stochastic rounding keep them (loose bounds on the mean)."""
    n, steps, lr = 4096, 500, 2e-4  # ulp of 1.0 in bfloat16 is 2**-7 = 0.0078
    results = {}
    for name, options in {"plain": {}, "kahan": {"kahan_summation": True},
                          "sr": {"stochastic_rounding": True}, "fp32": None}.items():
        p = torch.ones(n, dtype=torch.float32 if options is None else torch.bfloat16)
        opt = adamcore.torch.Adam([p], lr=lr, **(options or {}))
        for _ in range(steps):
            p.grad = torch.ones(n, dtype=p.dtype)
            opt.step()
        results[name] = float(p.double().mean())
    moved = 1.0 - results["fp32"]
    assert moved == pytest.approx(steps * lr, rel=0.01)
    assert results["plain"] == 1.0  # every update rounded away
    assert abs(1.0 - results["kahan"] - moved) < 2 * 2.0**-8
    assert abs(1.0 - results["sr"] - moved) < 0.1 * moved


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = np.full(1 << 16, 1.0 + 2.0**-9, np.float32)  # a quarter of the way to the next bfloat16
    bits = _reference.random_bits(np, _reference.rounding_key(7, 3), x.shape, x)
    r = _reference.stochastic_round_bf16(np, x, bits, ml_dtypes.bfloat16).astype(np.float64)
    assert set(np.unique(r)) == {1.0, 1.0 + 2.0**-7}
    assert np.mean(r == 1.0 + 2.0**-7) == pytest.approx(0.25, abs=0.01)
    again = _reference.random_bits(np, _reference.rounding_key(7, 3), x.shape, x)
    assert np.array_equal(bits, again)
    other = _reference.random_bits(np, _reference.rounding_key(7, 4), x.shape, x)
    assert np.mean(bits == other) < 0.01


def test_random_bits_known_values():
    """The generator is pinned (docs/update.md gives these values): a change would silently
    change every stochastically rounded trajectory and checkpoint resumption."""
    key = _reference.rounding_key(0, 1)
    assert key == 0x5E41AB08
    bits = _reference.random_bits(np, key, (4,), np.zeros(4))
    assert [int(b) for b in bits] == [0x4A26A9B5, 0x5AE0B59F, 0xAF92061F, 0x3563B553]
    # an index past 2**32 takes the next block's key
    big = _reference.random_bits(np, key, (1,), np.zeros(1))
    assert int(big[0]) == 0x4A26A9B5


def test_stochastic_rounding_seeds_differ_between_params():
    ps = [torch.ones(4096, dtype=torch.bfloat16) for _ in range(2)]
    opt = adamcore.torch.Adam(ps, lr=1e-3, stochastic_rounding=True)
    for p in ps:
        p.grad = torch.ones(4096, dtype=torch.bfloat16)
    opt.step()
    assert not torch.equal(ps[0], ps[1])  # each param draws its own stream
    again = [torch.ones(4096, dtype=torch.bfloat16) for _ in range(2)]
    opt2 = adamcore.torch.Adam(again, lr=1e-3, stochastic_rounding=True)
    for p in again:
        p.grad = torch.ones(4096, dtype=torch.bfloat16)
    opt2.step()
    assert torch.equal(ps[0], again[0]) and torch.equal(ps[1], again[1])


# ---- front ends, state dicts, checkpoints --------------------------------------------------

@pytest.mark.parametrize("options", [{"kahan_summation": True}, {"stochastic_rounding": True},
                                     {"state_dtype": "bfloat16", "kahan_summation": True},
                                     {"state_dtype": "param"}])
def test_state_dict_round_trip_continues_exactly(options, tmp_path):
    def run(opt_cls, steps, params, opt=None, start=0):
        opt = opt or opt_cls(params, lr=1e-2, **options)
        for k in range(start, start + steps):
            for j, p in enumerate(params):
                gen = torch.Generator().manual_seed(100 * k + j)
                p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
            opt.step()
        return opt

    def fresh():
        gen = torch.Generator().manual_seed(0)
        return [torch.randn(257, generator=gen).to(torch.bfloat16),
                torch.randn(3, 5, generator=gen).to(torch.bfloat16)]

    straight = fresh()
    run(adamcore.torch.AdamW, 6, straight)

    first = fresh()
    opt = run(adamcore.torch.AdamW, 3, first)
    sd = opt.state_dict()
    state0 = sd["state"][0]
    if options.get("kahan_summation"):
        assert state0["kahan_comp"].dtype == torch.bfloat16
        assert bool(state0["kahan_comp"].ne(0).any())
    want = torch.bfloat16 if options.get("state_dtype") else torch.float32
    assert state0["exp_avg"].dtype == want
    resumed = [p.clone() for p in first]
    opt2 = adamcore.torch.AdamW(resumed, lr=1e-2, **options)
    opt2.load_state_dict(sd)
    assert opt2.state[resumed[0]]["exp_avg"].dtype == want
    run(adamcore.torch.AdamW, 3, resumed, opt2, start=3)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)

    # adamcore.Adam over torch tensors, through adamcore.save / adamcore.load
    third = fresh()
    opt3 = adamcore.AdamW(third, lr=1e-2, **options)
    grads = [[torch.randn(p.shape, generator=torch.Generator().manual_seed(7 * k + j)).to(p.dtype)
              for j, p in enumerate(third)] for k in range(4)]
    for g in grads[:2]:
        opt3.step(g)
    path = tmp_path / "ckpt.npz"
    adamcore.save(opt3, path)
    fourth = [p.clone() for p in third]
    opt4 = adamcore.AdamW(fourth, lr=1e-2, **options)
    opt4.load_state_dict(adamcore.load(path, like=opt4))
    if options.get("kahan_summation"):
        assert torch.equal(opt4.state[0]["kahan_comp"], opt3.state[0]["kahan_comp"])
    for g in grads[2:]:
        opt3.step(g)
        opt4.step([x.clone() for x in g])
    for a, b in zip(third, fourth):
        assert torch.equal(a, b)


@pytest.mark.parametrize("mode", sorted(MODES) + ["bf16-plain", "bf16-gf32-plain"])
def test_numpy_front_end_runs_the_core_in_place(mode, monkeypatch):
    """adamcore.Adam on NumPy arrays, bfloat16 (ml_dtypes) ones included, in every mode: the
    core runs (the reference path is switched off), in the arrays' own memory, with the torch
    front end's bits."""
    plain = {"bf16-plain": ("bfloat16", "bfloat16", "float32", {}),
             "bf16-gf32-plain": ("bfloat16", "float32", "float32", {})}
    pdt, gdt, state, options = MODES.get(mode) or plain[mode]
    gen = torch.Generator().manual_seed(3)
    pt = (torch.randn(1000, generator=gen) * 2).to(TORCH[pdt])
    pn = _np(pt)
    address = pn.ctypes.data
    grads = [torch.randn(1000, generator=gen).to(TORCH[gdt]) for _ in range(3)]
    kw = dict(lr=1e-2, state_dtype=state, **options)
    a = adamcore.Adam([pt], **kw)
    b = adamcore.Adam([pn], **kw)

    def no_reference(*args, **kwargs):
        raise AssertionError("the reference path ran")

    monkeypatch.setattr(_reference, "lowp_update", no_reference)
    monkeypatch.setattr(_reference, "adam_update", no_reference)
    for g in grads:
        a.step([g])
        b.step([_np(g)])
    assert pn.ctypes.data == address
    np.testing.assert_array_equal(_bits(_np(pt)), _bits(pn))
    for key, value in a.state[0].items():
        if key != "step":
            np.testing.assert_array_equal(_bits(_np(value)), _bits(b.state[0][key]), err_msg=key)
            assert b.state[0][key].dtype == NUMPY[str(value.dtype).replace("torch.", "")]


def test_numpy_bfloat16_state_dtype():
    p = np.linspace(-1, 1, 100, dtype=np.float32)
    q = torch.from_numpy(p.copy())
    opt = adamcore.Adam([p], lr=1e-2, state_dtype="bfloat16")
    opt.step([np.ones(100, np.float32)])
    assert opt.state[0]["exp_avg"].dtype == ml_dtypes.bfloat16
    ref = adamcore.Adam([q], lr=1e-2, state_dtype=torch.bfloat16)
    ref.step([torch.ones(100)])
    np.testing.assert_array_equal(p, q.numpy())


# ---- bad input: a clear error, nothing changed -------------------------------------------

def test_refused_at_construction():
    p32 = torch.zeros(3)
    p16 = torch.zeros(3, dtype=torch.float16)
    with pytest.raises(TypeError, match="param 0 has dtype float32; kahan_summation is for"):
        adamcore.torch.Adam([p32], kahan_summation=True)
    with pytest.raises(TypeError, match="param 0 has dtype float16; stochastic_rounding is for"):
        adamcore.Adam([p16], stochastic_rounding=True)
    with pytest.raises(ValueError, match="exclude each other"):
        adamcore.Adam([torch.zeros(3, dtype=torch.bfloat16)], kahan_summation=True,
                      stochastic_rounding=True)
    with pytest.raises(ValueError, match="int8_blockwise' does not combine with kahan"):
        adamcore.Adam([p16], state_dtype="int8_blockwise", kahan_summation=True)
    with pytest.raises(ValueError, match="int8_blockwise' does not support amsgrad"):
        adamcore.torch.Adam([p16], state_dtype="int8_blockwise", amsgrad=True)
    with pytest.raises(ValueError, match="state_dtype must be"):
        adamcore.Adam([p16], state_dtype="int4")
    with pytest.raises(TypeError, match="cannot keep its state in float16"):
        adamcore.Adam([torch.zeros(3, dtype=torch.bfloat16)], state_dtype="float16")
    with pytest.raises(TypeError, match="cannot keep its state in bfloat16"):
        adamcore.Adam([torch.zeros(3, dtype=torch.float64)], state_dtype="bfloat16")
    with pytest.raises(ValueError, match="rounding_seed"):
        adamcore.Adam([p16], rounding_seed=-1)
    with pytest.raises(TypeError, match="param 1 has dtype float32; kahan_summation"):
        adamcore.Adam([{"params": [p16]}, {"params": [p32], "kahan_summation": True}])


def test_group_edit_refused_at_step_with_nothing_changed():
    p = torch.ones(5, dtype=torch.bfloat16)
    q = torch.ones(5)
    opt = adamcore.torch.Adam([{"params": [p]}, {"params": [q]}], lr=0.1)
    for x in (p, q):
        x.grad = torch.ones_like(x)
    opt.step()
    before = [p.clone(), q.clone(), opt.state[p]["exp_avg"].clone()]
    opt.param_groups[1]["kahan_summation"] = True
    with pytest.raises(TypeError, match="param 1 has dtype float32; kahan_summation"):
        opt.step()
    assert torch.equal(p, before[0]) and torch.equal(q, before[1])
    assert torch.equal(opt.state[p]["exp_avg"], before[2])
    assert int(opt.state[p]["step"]) == 1
    opt.param_groups[1]["kahan_summation"] = False
    opt.param_groups[0]["kahan_summation"] = True  # switched on later: the buffer starts at zero
    opt.step()
    assert opt.state[p]["kahan_comp"].dtype == torch.bfloat16


def test_adam_step_bad_compensation_changes_nothing():
    p = torch.ones(8, dtype=torch.bfloat16)
    g = torch.ones(8, dtype=torch.bfloat16)
    m, v = torch.zeros(8), torch.zeros(8)
    for comp, error, match in [
        (None, ValueError, "kahan_comp 0 is missing"),
        (torch.zeros(8), TypeError, "kahan_comp 0 has dtype float32"),
        (torch.zeros(7, dtype=torch.bfloat16), ValueError, "kahan_comp 0 has shape"),
        (p, ValueError, "share memory|same memory|overlap"),
    ]:
        with pytest.raises(error, match=match):
            adamcore.adam_step(p, g, m, v, step=1, lr=0.1, kahan_summation=True,
                               compensation=comp)
        assert torch.equal(p, torch.ones(8, dtype=torch.bfloat16))
        assert torch.equal(m, torch.zeros(8))
    with pytest.raises(TypeError, match="exp_avg_sq 0 has dtype float32"):
        adamcore.adam_step(p, g, torch.zeros(8, dtype=torch.bfloat16), v, step=1, lr=0.1)
    assert torch.equal(p, torch.ones(8, dtype=torch.bfloat16))


def test_core_refuses_what_python_would():
    """The C++ core checks on its own (the C ABI relies on it), with the same names."""
    p = torch.ones(8, dtype=torch.bfloat16)
    g = torch.ones(8, dtype=torch.bfloat16)
    m, v = torch.zeros(8), torch.zeros(8)
    hp = (0.1, 0.9, 0.999, 1e-8, 0.0, 0.1, 1, _core.KAHAN_SUMMATION)
    with pytest.raises(ValueError, match="compensation 0 is missing"):
        _core.adam_step([p], [g], [m], [v], [], [], [hp])
    with pytest.raises(TypeError, match="compensation 0 has dtype float32"):
        _core.adam_step([p], [g], [m], [v], [], [], [hp], compensations=[torch.zeros(8)])
    both = hp[:7] + (_core.KAHAN_SUMMATION | _core.STOCHASTIC_ROUNDING,)
    with pytest.raises(ValueError, match="exclude each other"):
        _core.adam_step([p], [g], [m], [v], [], [], [both],
                        compensations=[torch.zeros(8, dtype=torch.bfloat16)])
    sr16 = hp[:7] + (_core.STOCHASTIC_ROUNDING,)
    p16 = torch.ones(8, dtype=torch.float16)
    with pytest.raises(TypeError, match="stochastic_rounding is for bfloat16"):
        _core.adam_step([p16], [p16.clone()], [m], [v], [], [], [sr16])
    with pytest.raises(TypeError, match="exp_avg 0 has dtype float16"):
        _core.adam_step([p], [g], [torch.zeros(8, dtype=torch.float16)],
                        [torch.zeros(8, dtype=torch.float16)], [], [], [hp[:7] + (0,)])
    assert torch.equal(p, torch.ones(8, dtype=torch.bfloat16)) and torch.equal(m, torch.zeros(8))


def test_experiment_plain_bfloat16_loses_what_kahan_and_rounding_keep():
    """bench/lowp_experiment.py, short: with the lr decaying far below bfloat16's ulp, plain
    bfloat16 params end at a clearly worse loss; Kahan summation and stochastic rounding stay
    at the float32 run's (loose bounds: the full run's table is in bench/NOTES.md)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        import lowp_experiment as experiment
    finally:
        sys.path.pop(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        names = ["fp32", "bf16", "bf16 + kahan", "bf16 + stochastic rounding"]
        r = experiment.run({k: experiment.MODES[k] for k in names}, steps=400)
    finally:
        torch.set_num_threads(threads)
    fp32 = r["fp32"]["train_loss"]
    assert r["bf16"]["train_loss"] > 1.2 * fp32
    assert r["bf16 + kahan"]["train_loss"] < 1.05 * fp32
    assert r["bf16 + stochastic rounding"]["train_loss"] < 1.1 * fp32
    assert r["bf16 + kahan"]["distance_to_fp32"] < 0.3 * r["bf16"]["distance_to_fp32"]
    assert r["bf16 + stochastic rounding"]["distance_to_fp32"] < 0.5 * r["bf16"]["distance_to_fp32"]
