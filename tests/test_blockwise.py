"""8-bit block-quantized state (state_dtype="int8_blockwise", docs/int8-state.md): the CPU
kernels of every SIMD level bit for bit against the NumPy reference (python/adamcore/_blockwise.py),
the format's own properties, the distance to float32-state Adam, the front ends and their state
dicts, and bad input refused with nothing changed."""

import numpy as np
import pytest
import torch

import adamcore
import adamcore.torch as adamcore_torch
from adamcore import _blockwise as bw
from adamcore import _core
from adamcore._hparams import DECOUPLED_WEIGHT_DECAY, MAXIMIZE, StepHParams

SIZES = [1, 7, 17, 255, 256, 257, 1023, 65537]


def _torch_view(x):
    """A NumPy (ml_dtypes) bfloat16 array as a torch tensor sharing its memory; others as they are."""
    if x.dtype.name == "bfloat16":
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return x


def _bits(x):
    x = np.asarray(x)
    return x.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[x.itemsize])


def _core_step(p, g, state, hp):
    _core.adam_step_blockwise([_torch_view(p)], [_torch_view(g)], [state["exp_avg"]],
                              [state["exp_avg_sq"]], [state["exp_avg_absmax"]],
                              [state["exp_avg_sq_absmax"]], [], [tuple(hp)])


def _dtypes():
    import ml_dtypes
    return [(np.float32, np.float32), (np.float16, np.float16), (np.float16, np.float32),
            (ml_dtypes.bfloat16, ml_dtypes.bfloat16), (ml_dtypes.bfloat16, np.float32)]


@pytest.mark.parametrize("n", SIZES)
def test_kernels_match_the_reference_bit_for_bit(simd_level, n, rng):
    for pdt, gdt in _dtypes():
        p = (rng.standard_normal(n) * 3).astype(pdt)
        state = bw.zeros_state(n)
        ref_p, ref = p.copy(), {k: v.copy() for k, v in state.items()}
        for t in range(1, 5):
            # gradients over six decades, so blocks mix large and tiny moments
            g = (rng.standard_normal(n) * 10.0 ** rng.integers(-5, 2, n)).astype(gdt)
            flags = (DECOUPLED_WEIGHT_DECAY if t % 2 else 0) | (MAXIMIZE if t == 3 else 0)
            hp = StepHParams(1e-2, 0.9, 0.999, 1e-8, 0.05 * (t != 2), 1e-2, t, flags)
            _core_step(p, g, state, hp)
            out = bw.adam_update_blockwise(ref_p, g, ref["exp_avg"], ref["exp_avg_sq"],
                                           ref["exp_avg_absmax"], ref["exp_avg_sq_absmax"], hp)
            ref_p, ref = out[0], dict(zip(bw.STATE_KEYS, out[1:]))
            where = f"{simd_level} {np.dtype(pdt).name}/{np.dtype(gdt).name} n={n} step {t}"
            np.testing.assert_array_equal(_bits(p), _bits(ref_p), err_msg=where)
            for key in bw.STATE_KEYS:
                np.testing.assert_array_equal(_bits(state[key]), _bits(ref[key]),
                                              err_msg=f"{key} {where}")


def test_special_values_match_the_reference(simd_level):
    n = 700
    p = np.linspace(-2, 2, n).astype(np.float32)
    g = np.ones(n, np.float32)
    g[3], g[300], g[301] = np.inf, np.nan, -np.inf
    g[512:] = 0.0  # an all-zero block: absmax 0, codes 0
    state = bw.zeros_state(n)
    hp = StepHParams(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)
    ref = bw.adam_update_blockwise(p.copy(), g, *state.values(), hp)
    _core_step(p, g, state, hp)
    np.testing.assert_array_equal(_bits(p), _bits(ref[0]))
    for key, want in zip(bw.STATE_KEYS, ref[1:]):
        np.testing.assert_array_equal(_bits(state[key]), _bits(want), err_msg=key)
    assert state["exp_avg_absmax"][2] == 0 and not state["exp_avg"][512:].any()


def test_quantization_round_trip_is_close_and_exact_on_codes(rng):
    m = (rng.standard_normal(1000) * 10.0 ** rng.integers(-3, 1, 1000)).astype(np.float32)
    v = m * m
    mc, ma = bw.quantize_m(m)
    vc, va = bw.quantize_v(v)
    m2, v2 = bw.dequantize_m(mc, ma), bw.dequantize_v(vc, va)
    # the block's largest magnitude survives to float32 rounding; every value within half a
    # code step in the root domain
    for b in range(bw.blocks(m.size)):
        blk = slice(b * 256, (b + 1) * 256)
        assert ma[b] == np.abs(m[blk]).max() and va[b] == v[blk].max()
        np.testing.assert_allclose(np.sqrt(np.abs(m2[blk]) / ma[b]),
                                   np.sqrt(np.abs(m[blk]) / ma[b]), atol=0.5 / 127 + 1e-6)
        np.testing.assert_allclose((v2[blk] / va[b]) ** 0.25, (v[blk] / va[b]) ** 0.25,
                                   atol=0.5 / 255 + 1e-6)
    assert (np.sign(m2) == np.sign(m) * (mc != 0)).all()
    # requantizing what was dequantized gives the same codes (a fixed point)
    np.testing.assert_array_equal(bw.quantize_m(m2)[0], mc)
    np.testing.assert_array_equal(bw.quantize_v(v2)[0], vc)


def test_ties_round_to_even():
    # r = sqrt(|m| / absmax) * 127 lands exactly on k + 0.5 for these m: 0.5 -> 0, 1.5 -> 2
    assert float(bw._round(np.float32(0.5), bw.M_CODE_MAX)) == 0.0
    assert float(bw._round(np.float32(1.5), bw.M_CODE_MAX)) == 2.0
    assert float(bw._round(np.float32(2.5), bw.M_CODE_MAX)) == 2.0


def test_close_to_float32_state_adam_over_training():
    """A noisy quadratic over 300 steps: the 8-bit run stays within a few percent of the
    float32-state run's distance travelled (a loose bound; the format's noise is per step)."""
    rng = np.random.default_rng(7)
    n = 4096
    target = rng.standard_normal(n).astype(np.float32)
    p8 = np.zeros(n, np.float32)
    p32 = np.zeros(n, np.float32)
    scales = (10.0 ** rng.uniform(-3, 0, n)).astype(np.float32)
    o8 = adamcore.Adam([{"params": [p8], "state_dtype": "int8_blockwise"}], lr=1e-2)
    o32 = adamcore.Adam([p32], lr=1e-2)
    for _ in range(300):
        noise = rng.standard_normal(n).astype(np.float32) * 0.1
        o8.step([(scales * (p8 - target) + noise).astype(np.float32)])
        o32.step([(scales * (p32 - target) + noise).astype(np.float32)])
    travelled = np.linalg.norm(p32)
    assert np.linalg.norm(p8 - p32) < 0.05 * travelled
    assert np.linalg.norm(p8 - target) < 1.05 * np.linalg.norm(p32 - target)


# ---- front ends --------------------------------------------------------------------------------

@pytest.mark.parametrize("pair", range(5))
def test_numpy_optimizer_steps_like_the_reference(pair, rng):
    # every param/grad dtype pair, ml_dtypes' bfloat16 included (NumPy cannot export it through
    # DLPack: the core gets a bfloat16 view of the same memory), read-only grads too
    pdt, gdt = _dtypes()[pair]
    p = rng.standard_normal((3, 300)).astype(pdt)
    address = p.ctypes.data
    opt = adamcore.AdamW([{"params": [p], "state_dtype": "int8_blockwise"}], lr=1e-2,
                         weight_decay=0.1)
    ref_p, ref = p.copy(), bw.zeros_state(p.size)
    for t in range(1, 4):
        g = rng.standard_normal(p.shape).astype(gdt)
        g.flags.writeable = t != 2
        opt.step([g])
        hp = StepHParams(1e-2, 0.9, 0.999, 1e-8, 0.1, 1e-2, t, DECOUPLED_WEIGHT_DECAY)
        out = bw.adam_update_blockwise(ref_p, g, *ref.values(), hp)
        ref_p, ref = out[0], dict(zip(bw.STATE_KEYS, out[1:]))
    assert p.ctypes.data == address and p.dtype == pdt
    np.testing.assert_array_equal(_bits(p), _bits(ref_p))
    state = opt.state[0]
    assert state["step"] == 3
    assert state["exp_avg"].dtype == np.int8 and state["exp_avg"].shape == p.shape
    assert state["exp_avg_sq"].dtype == np.uint8
    assert state["exp_avg_absmax"].shape == (bw.blocks(p.size),)
    for key in bw.STATE_KEYS:
        np.testing.assert_array_equal(state[key].reshape(-1), ref[key])


def test_mixed_groups_step_together(rng):
    a = rng.standard_normal(300).astype(np.float32)
    b = rng.standard_normal(50).astype(np.float32)
    b_ref = b.copy()
    opt = adamcore.Adam([{"params": [a], "state_dtype": "int8_blockwise"}, {"params": [b]}])
    ref = adamcore.Adam([b_ref])
    for _ in range(3):
        ga, gb = rng.standard_normal(300).astype(np.float32), rng.standard_normal(50).astype(np.float32)
        opt.step([ga, gb])
        ref.step([gb])
    np.testing.assert_array_equal(b, b_ref)
    assert opt.state[0]["exp_avg"].dtype == np.int8 and opt.state[1]["exp_avg"].dtype == np.float32


def test_state_dict_and_checkpoint_round_trip(tmp_path, rng):
    p = rng.standard_normal(1000).astype(np.float32)
    opt = adamcore.Adam([{"params": [p], "state_dtype": "int8_blockwise"}], lr=1e-2)
    for _ in range(3):
        opt.step([rng.standard_normal(1000).astype(np.float32)])
    adamcore.save(opt, tmp_path / "ck")
    back = adamcore.load(tmp_path / "ck")
    assert back["param_groups"][0]["state_dtype"] == "int8_blockwise"
    q = p.copy()
    opt2 = adamcore.Adam([{"params": [q], "state_dtype": "int8_blockwise"}], lr=1e-2)
    opt2.load_state_dict(back)
    for key in bw.STATE_KEYS:
        np.testing.assert_array_equal(opt2.state[0][key], opt.state[0][key])
    g = rng.standard_normal(1000).astype(np.float32)
    opt.step([g])
    opt2.step([g])
    np.testing.assert_array_equal(p, q)


def test_float_state_is_quantized_on_load_and_back(rng):
    p = rng.standard_normal(600).astype(np.float32)
    plain = adamcore.Adam([p.copy()])
    plain.step([rng.standard_normal(600).astype(np.float32)])
    sd = plain.state_dict()
    opt8 = adamcore.Adam([{"params": [p.copy()], "state_dtype": "int8_blockwise"}])
    opt8.load_state_dict({**sd, "param_groups": [{**sd["param_groups"][0],
                                                  "state_dtype": "int8_blockwise"}]})
    mc, ma = bw.quantize_m(sd["state"][0]["exp_avg"])
    np.testing.assert_array_equal(opt8.state[0]["exp_avg"].reshape(-1), mc)
    np.testing.assert_array_equal(opt8.state[0]["exp_avg_absmax"], ma)
    back = adamcore.Adam([p.copy()])
    sd8 = opt8.state_dict()
    back.load_state_dict({**sd8, "param_groups": [{k: v for k, v in sd8["param_groups"][0].items()
                                                   if k != "state_dtype"}]})
    assert back.state[0]["exp_avg"].dtype == np.float32
    np.testing.assert_array_equal(back.state[0]["exp_avg"],
                                  bw.dequantize_m(mc, ma).reshape(p.shape))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_optimizer_and_state_dict(dtype):
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(777, generator=gen).to(dtype))
    opt = adamcore_torch.AdamW([{"params": [p], "state_dtype": "int8_blockwise"}], lr=1e-2)
    ref_p = p.detach().clone()
    ref = bw.zeros_state(777)
    for t in range(1, 4):
        g = torch.randn(777, generator=gen).to(dtype)
        p.grad = g.clone()
        opt.step()
        hp = StepHParams(1e-2, 0.9, 0.999, 1e-8, 1e-2, 1e-2, t, DECOUPLED_WEIGHT_DECAY)
        out = bw.adam_update_blockwise(_to_numpy(ref_p), _to_numpy(g), *ref.values(), hp)
        ref_p, ref = _from_numpy(out[0]), dict(zip(bw.STATE_KEYS, out[1:]))
    assert torch.equal(p.detach().view(torch.int16 if dtype != torch.float32 else torch.int32),
                       ref_p.view(torch.int16 if dtype != torch.float32 else torch.int32))
    state = opt.state[p]
    assert state["exp_avg"].dtype == torch.int8 and state["exp_avg_sq"].dtype == torch.uint8
    assert state["exp_avg_absmax"].dtype == torch.float32
    sd = opt.state_dict()
    opt2 = adamcore_torch.AdamW([{"params": [p], "state_dtype": "int8_blockwise"}], lr=1e-2)
    opt2.load_state_dict(sd)
    for key in bw.STATE_KEYS:
        assert opt2.state[p][key].dtype == state[key].dtype
        assert torch.equal(opt2.state[p][key], state[key])


def _to_numpy(t):
    import ml_dtypes
    if t.dtype == torch.bfloat16:
        return t.detach().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.detach().numpy()


def _from_numpy(a):
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def test_torch_loads_torch_optim_state_quantized():
    p = torch.nn.Parameter(torch.randn(300))
    ref = torch.optim.Adam([p])
    p.grad = torch.randn(300)
    ref.step()
    opt = adamcore_torch.Adam([{"params": [p], "state_dtype": "int8_blockwise"}])
    opt.load_state_dict(ref.state_dict())  # torch's groups have no state_dtype: ours stays
    mc, ma = bw.quantize_m(ref.state[p]["exp_avg"].numpy())
    assert torch.equal(opt.state[p]["exp_avg"].reshape(-1), torch.from_numpy(mc))
    assert torch.equal(opt.state[p]["exp_avg_absmax"], torch.from_numpy(ma))


def test_cuda_params_go_to_the_cuda_backend_on_the_callers_stream(monkeypatch, rng):
    """The routing of int8_blockwise steps, over a stand-in for adamcore._cuda (no GPU here; the
    kernel itself is checked over the host emulation below and on a GPU in tests/test_cuda.py):
    params on a GPU go to _cuda.adam_step_blockwise with the caller's stream, host ones to the
    core; with both, every call validates before any writes, so a bad one changes nothing."""
    from adamcore import _cuda_backend

    calls = []
    cpu_step = _core.adam_step_blockwise

    class FakeCuda:
        def adam_step_blockwise(self, *args, stream, validate_only=False):
            calls.append(("cuda", len(args[0]), stream, validate_only))
            cpu_step(*args, validate_only=validate_only)  # host tensors stand in for the GPU's

    def core_step(*args, validate_only=False):
        calls.append(("cpu", len(args[0]), None, validate_only))
        cpu_step(*args, validate_only=validate_only)

    on_gpu = set()
    monkeypatch.setattr(bw, "_device_of", lambda p: ("torch", 0) if p.data_ptr() in on_gpu else None)
    monkeypatch.setattr(_cuda_backend, "load", lambda: _cuda_backend.CudaNative(FakeCuda()))
    monkeypatch.setattr(_cuda_backend, "_current_stream", lambda lib, device: 1234)
    monkeypatch.setattr(_core, "adam_step_blockwise", core_step)
    gpu = [torch.nn.Parameter(torch.randn(300)), torch.nn.Parameter(torch.randn(7))]
    host = torch.nn.Parameter(torch.randn(50))
    on_gpu.update(p.data_ptr() for p in gpu)
    refs = [torch.nn.Parameter(p.detach().clone()) for p in (*gpu, host)]
    opt = adamcore_torch.AdamW([{"params": [*gpu, host], "state_dtype": "int8_blockwise"}])
    ref = adamcore_torch.AdamW([{"params": refs, "state_dtype": "int8_blockwise"}])
    for _ in range(2):
        for p, q in zip((*gpu, host), refs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        ref.step()
        calls.clear()
        opt.step()
        assert calls == [("cuda", 2, 1234, True), ("cpu", 1, None, True),
                         ("cuda", 2, 1234, False), ("cpu", 1, None, False)]
    for p, q in zip((*gpu, host), refs):
        assert torch.equal(p, q)
    # a bad state on the host side: refused before the GPU side is launched
    before = [p.detach().clone() for p in gpu]
    opt.state[host]["exp_avg_absmax"] = torch.zeros(2)
    with pytest.raises(ValueError, match="exp_avg_absmax 0 has 2 elements"):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(gpu, before))
    assert [c[3] for c in calls[-2:]] == [True, True]


# ---- bad input ---------------------------------------------------------------------------------

def _arrays(n=300):
    p = np.ones(n, np.float32)
    return p, np.ones(n, np.float32), bw.zeros_state(n)


def _snapshot(*arrays):
    return [a.copy() for a in arrays]


@pytest.mark.parametrize("case, error, match", [
    ("codes_dtype", TypeError, "exp_avg 1 has dtype uint8"),
    ("v_codes_dtype", TypeError, "exp_avg_sq 1 has dtype int8"),
    ("absmax_dtype", TypeError, "exp_avg_absmax 1 has dtype float64"),
    ("absmax_length", ValueError, "exp_avg_sq_absmax 1 has 1 elements but needs 2"),
    ("codes_length", ValueError, "exp_avg 1 has 299 elements but needs 300"),
    ("strided_codes", ValueError, "exp_avg 1 is not C-contiguous"),
    ("strided_param", ValueError, "param 1 is not C-contiguous"),
    ("float64", TypeError, "float64"),
    ("grad_dtype", TypeError, "grad 1 has dtype float16"),
    ("amsgrad", ValueError, "amsgrad"),
    ("shared", ValueError, "share memory"),
])
def test_bad_input_changes_nothing(case, error, match):
    p, g, s = _arrays()
    m, v, ma, va = s["exp_avg"], s["exp_avg_sq"], s["exp_avg_absmax"], s["exp_avg_sq_absmax"]
    m[:] = 3
    v[:] = 9
    ma[:] = 0.5
    va[:] = 0.25
    flags = 0
    if case == "codes_dtype":
        m = m.view(np.uint8)
    elif case == "v_codes_dtype":
        v = v.view(np.int8)
    elif case == "absmax_dtype":
        ma = ma.astype(np.float64)
    elif case == "absmax_length":
        va = va[:1]
    elif case == "codes_length":
        m = m[:299]
    elif case == "strided_codes":
        m = np.zeros(600, np.int8)[::2]
    elif case == "strided_param":
        p = np.ones(600, np.float32)[::2]
    elif case == "float64":
        p, g = p.astype(np.float64), g.astype(np.float64)
    elif case == "grad_dtype":
        g = g.astype(np.float16)
    elif case == "amsgrad":
        flags = 0x4
    elif case == "shared":
        va = ma
    before = _snapshot(p, m, v, ma, va)
    hp = (1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, flags)
    # a good tensor first: it must not be written either
    p0, g0, s0 = _arrays(10)
    good = _snapshot(p0, *s0.values())
    with pytest.raises(error, match=match):
        _core.adam_step_blockwise([p0, p], [g0, g], [s0["exp_avg"], m], [s0["exp_avg_sq"], v],
                                  [s0["exp_avg_absmax"], ma], [s0["exp_avg_sq_absmax"], va],
                                  [], [hp])
    for a, b in zip(before, (p, m, v, ma, va)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(good, (p0, *s0.values())):
        np.testing.assert_array_equal(a, b)


def test_bfloat16_view_keeps_memory_and_strides():
    import ml_dtypes
    x = np.arange(6, dtype=np.float32).astype(ml_dtypes.bfloat16)[::2]
    x.flags.writeable = False  # read-only sources are taken (grads); params are checked before
    t = torch.from_dlpack(_core.bfloat16_view(x.view(np.uint16)))
    assert t.dtype == torch.bfloat16 and t.data_ptr() == x.ctypes.data
    assert t.stride() == (2,) and t.tolist() == [0.0, 2.0, 4.0]
    with pytest.raises(TypeError):
        _core.bfloat16_view(np.ones(3, np.float32))


def test_read_only_bfloat16_param_refused_with_nothing_changed():
    import ml_dtypes
    p = np.ones(300, ml_dtypes.bfloat16)
    opt = adamcore.Adam([{"params": [p], "state_dtype": "int8_blockwise"}])
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param 0 is read-only"):
        opt.step([np.ones(300, ml_dtypes.bfloat16)])
    assert (p == 1).all() and not opt.state


def test_tensors_sharing_state_across_tensors_refused():
    p, g, s = _arrays()
    q = np.ones(300, np.float32)
    with pytest.raises(ValueError, match="share memory"):
        _core.adam_step_blockwise([p, q], [g, g], [s["exp_avg"]] * 2,
                                  [s["exp_avg_sq"], np.zeros(300, np.uint8)],
                                  [s["exp_avg_absmax"], np.zeros(2, np.float32)],
                                  [s["exp_avg_sq_absmax"], np.zeros(2, np.float32)],
                                  [], [(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)])
    assert (p == 1).all()


def test_nonfinite_grad_refused_with_check_finite():
    p = np.ones(300, np.float32)
    opt = adamcore.Adam([{"params": [p], "state_dtype": "int8_blockwise"}], check_finite=True)
    g = np.ones(300, np.float32)
    g[7] = np.nan
    with pytest.raises(FloatingPointError, match="grad 0"):
        opt.step([g])
    assert (p == 1).all() and 0 not in opt.state


def test_front_end_refusals():
    with pytest.raises(ValueError, match="amsgrad"):
        adamcore.Adam([{"params": [np.ones(3, np.float32)], "state_dtype": "int8_blockwise"}],
                      amsgrad=True).step([np.ones(3, np.float32)])
    with pytest.raises(TypeError, match="float64"):
        adamcore.Adam([{"params": [np.ones(3)], "state_dtype": "int8_blockwise"}]).step([np.ones(3)])
    p = np.ones((4, 4), np.float32)[:, ::2]
    with pytest.raises(ValueError, match="not C-contiguous"):
        adamcore.Adam([{"params": [p], "state_dtype": "int8_blockwise"}]).step(
            [np.ones((4, 2), np.float32)])


def test_gpu_param_refused_where_the_cuda_backend_cannot_run(monkeypatch):
    from adamcore import _cuda_backend
    p = torch.nn.Parameter(torch.ones(300))
    monkeypatch.setattr(bw, "_device_of", lambda x: ("torch", 0))
    monkeypatch.setattr(_cuda_backend, "load", lambda: None)
    opt = adamcore_torch.Adam([{"params": [p], "state_dtype": "int8_blockwise"}])
    p.grad = torch.ones(300)
    with pytest.raises(ValueError, match="param 0 is on cpu, but the CUDA backend cannot run here"):
        opt.step()
    assert (p == 1).all() and not opt.state


def test_load_refuses_bad_quantized_state():
    p = np.ones(300, np.float32)
    opt = adamcore.Adam([{"params": [p], "state_dtype": "int8_blockwise"}])
    opt.step([np.ones(300, np.float32)])
    sd = opt.state_dict()
    bad = {**sd, "state": {0: {**sd["state"][0], "exp_avg_absmax": np.zeros(3, np.float32)}}}
    with pytest.raises(ValueError, match="exp_avg_absmax of param 0 has 3 elements"):
        opt.load_state_dict(bad)
    bad = {**sd, "state": {0: {**sd["state"][0], "exp_avg": np.zeros(300, np.float32)}}}
    with pytest.raises(ValueError, match="exp_avg of param 0 has dtype float32"):
        opt.load_state_dict(bad)
    assert opt.state[0]["step"] == 1


# ---- the C ABI ---------------------------------------------------------------------------------

def _c_lib():
    import ctypes
    import c_abi
    lib = c_abi.load()
    return lib, lib.adamcore_adam_step_blockwise_f32


def _ptr(a):
    import ctypes
    return a.ctypes.data_as(ctypes.c_void_p) if a is not None else None


@pytest.mark.parametrize("n", [0, 1, 257, 65537])
def test_c_abi_matches_the_python_binding(simd_level, n, rng):
    import ctypes
    import c_abi
    lib, f = _c_lib()
    assert c_abi.constants()["QUANT_BLOCK"] == bw.BLOCK
    p = rng.standard_normal(n).astype(np.float32)
    s = bw.zeros_state(n)
    q, t = p.copy(), {k: v.copy() for k, v in s.items()}
    for step in range(1, 4):
        g = rng.standard_normal(n).astype(np.float32)
        hp = c_abi.hparams(step=step, lr=1e-2, weight_decay=0.01)
        rc = f(_ptr(p), _ptr(g), _ptr(s["exp_avg"]), _ptr(s["exp_avg_sq"]),
               _ptr(s["exp_avg_absmax"]), _ptr(s["exp_avg_sq_absmax"]), ctypes.c_int64(n),
               ctypes.byref(hp))
        assert rc == 0, lib.adamcore_last_error()
        _core_step(q, g, t, StepHParams(1e-2, 0.9, 0.999, 1e-8, 0.01, 1e-2, step, 0))
    np.testing.assert_array_equal(p, q)
    for key in bw.STATE_KEYS:
        np.testing.assert_array_equal(s[key], t[key])


def _c_tensor(p, g, s):
    import c_abi
    k = c_abi.constants()
    code = {"float32": k["FLOAT32"], "float16": k["FLOAT16"], "bfloat16": k["BFLOAT16"],
            "float64": k["FLOAT64"]}
    return c_abi.BlockwiseTensor(p.ctypes.data or None, g.ctypes.data or None,
                                 s["exp_avg"].ctypes.data or None,
                                 s["exp_avg_sq"].ctypes.data or None,
                                 s["exp_avg_absmax"].ctypes.data or None,
                                 s["exp_avg_sq_absmax"].ctypes.data or None, p.size,
                                 code[p.dtype.name], code[g.dtype.name])


def test_c_abi_tensors_entry_matches_the_python_binding(simd_level, rng):
    """adamcore_adam_step_blockwise_tensors: every dtype pair in one call (and an empty tensor),
    bit for bit with the Python binding on the same inputs."""
    import ctypes
    import c_abi
    lib = c_abi.load()
    pairs = _dtypes() + [(np.float32, np.float32)]
    sizes = [300, 17, 1023, 1, 257, 0]
    ps = [(rng.standard_normal(n) * 3).astype(pdt) for n, (pdt, _) in zip(sizes, pairs)]
    states = [bw.zeros_state(p.size) for p in ps]
    refs = [(p.copy(), {k: v.copy() for k, v in st.items()}) for p, st in zip(ps, states)]
    for step in range(1, 4):
        gs = [(rng.standard_normal(p.size) * 10.0 ** rng.integers(-5, 2, p.size)).astype(gdt)
              for p, (_, gdt) in zip(ps, pairs)]
        hp = c_abi.hparams(step=step, lr=1e-2, weight_decay=0.01, decoupled_weight_decay=True)
        table = (c_abi.BlockwiseTensor * len(ps))(*map(_c_tensor, ps, gs, states))
        rc = lib.adamcore_adam_step_blockwise_tensors(table, len(ps), ctypes.byref(hp))
        assert rc == 0, lib.adamcore_last_error()
        for (q, t), g in zip(refs, gs):
            _core_step(q, g, t, StepHParams(1e-2, 0.9, 0.999, 1e-8, 0.01, 1e-2, step,
                                            DECOUPLED_WEIGHT_DECAY))
    for p, st, (q, t) in zip(ps, states, refs):
        np.testing.assert_array_equal(_bits(p), _bits(q))
        for key in bw.STATE_KEYS:
            np.testing.assert_array_equal(st[key], t[key])


@pytest.mark.parametrize("case, code, match", [
    ("dtype_code", "ERROR_INVALID_DTYPE", b"tensors[1].param_dtype is 7"),
    ("float64", "ERROR_INVALID_DTYPE", b"param 1 has dtype float64"),
    ("grad_dtype", "ERROR_INVALID_DTYPE", b"grad 1 has dtype float16"),
    ("negative_n", "ERROR_INVALID_VALUE", b"tensors[1].n must be >= 0"),
])
def test_c_abi_tensors_entry_refuses_with_nothing_written(case, code, match):
    import ctypes
    import c_abi
    lib = c_abi.load()
    k = c_abi.constants()
    good = (np.ones(300, np.float32), np.ones(300, np.float32), bw.zeros_state(300))
    bad = (np.ones(300, np.float32), np.ones(300, np.float32), bw.zeros_state(300))
    if case == "float64":
        bad = (np.ones(300), np.ones(300), bad[2])
    elif case == "grad_dtype":
        bad = (bad[0], np.ones(300, np.float16), bad[2])
    table = (c_abi.BlockwiseTensor * 2)(_c_tensor(*good), _c_tensor(*bad))
    if case == "dtype_code":
        table[1].param_dtype = 7
    elif case == "negative_n":
        table[1].n = -1
    hp = c_abi.hparams(step=1, lr=1e-2)
    rc = lib.adamcore_adam_step_blockwise_tensors(table, 2, ctypes.byref(hp))
    assert rc == k[code] and match in lib.adamcore_last_error(), lib.adamcore_last_error()
    for p, _, st in (good, bad):
        assert (p == 1).all() and not st["exp_avg"].any() and not st["exp_avg_absmax"].any()
    if not lib.adamcore_cuda_available():  # without a GPU the CUDA entry says so
        rc = lib.adamcore_cuda_adam_step_blockwise_tensors(table, 2, ctypes.byref(hp), None)
        assert rc == k["ERROR_UNAVAILABLE"] and b"CUDA" in lib.adamcore_last_error()


def test_c_abi_refuses_amsgrad_and_null_with_nothing_written():
    import ctypes
    import c_abi
    lib, f = _c_lib()
    lib.adamcore_last_error.restype = ctypes.c_char_p
    K = c_abi.constants()
    n = 300
    p, g, s = np.ones(n, np.float32), np.ones(n, np.float32), bw.zeros_state(n)
    hp = c_abi.hparams(step=1, lr=1e-3, amsgrad=True)
    rc = f(_ptr(p), _ptr(g), _ptr(s["exp_avg"]), _ptr(s["exp_avg_sq"]), _ptr(s["exp_avg_absmax"]),
           _ptr(s["exp_avg_sq_absmax"]), ctypes.c_int64(n), ctypes.byref(hp))
    assert rc == K["ERROR_INVALID_VALUE"] and b"amsgrad" in lib.adamcore_last_error()
    hp = c_abi.hparams(step=1, lr=1e-3)
    rc = f(_ptr(p), _ptr(g), _ptr(s["exp_avg"]), _ptr(s["exp_avg_sq"]), None,
           _ptr(s["exp_avg_sq_absmax"]), ctypes.c_int64(n), ctypes.byref(hp))
    assert rc == K["ERROR_INVALID_VALUE"]
    assert b"exp_avg_absmax 0 is NULL" in lib.adamcore_last_error()
    assert (p == 1).all() and not s["exp_avg"].any()


# ---- the CUDA kernel over the host emulation ----------------------------------------------------

_COMBOS = {("float32", "float32"): 0, ("float16", "float16"): 2, ("float16", "float32"): 3,
           ("bfloat16", "bfloat16"): 4, ("bfloat16", "float32"): 5}  # combos.h


@pytest.fixture(scope="module")
def emulated_cuda(tmp_path_factory):
    """The CUDA backend's blockwise step (cuda/blockwise_step.cpp, its validation and the kernel of
    cuda/blockwise.cu) compiled as C++ over cuda/host_emulation.h with its driver (under
    AddressSanitizer where the compiler has it: an emulated memcheck)."""
    import shutil
    import subprocess
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("needs a C++ compiler")
    tmp = tmp_path_factory.mktemp("blockwise_emulated")
    exe = tmp / "blockwise_emulated"
    flags = ["-std=c++17", "-O1", "-g", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
             "-DADAMCORE_CUDA_EMULATION", f"-I{root / 'cpp' / 'include'}",
             f"-I{root / 'cpp' / 'src'}", f"-I{root / 'cuda'}"]
    probe = subprocess.run([cxx, "-fsanitize=address", "-x", "c++", "-", "-o", tmp / "probe"],
                           input="int main() { return 0; }\n", capture_output=True, text=True)
    if probe.returncode == 0:
        flags.append("-fsanitize=address")
    host = [root / "cuda" / "blockwise_step.cpp", root / "cuda" / "device.cpp",
            root / "cpp" / "src" / "validate.cpp", root / "cpp" / "src" / "validate_blockwise.cpp",
            root / "tests" / "blockwise_cuda_emulated.cpp"]
    subprocess.run([cxx, *flags, "-x", "c++", root / "cuda" / "blockwise.cu", "-x", "none", *host,
                    "-o", exe], check=True)
    return exe, tmp


@pytest.mark.parametrize("n", SIZES)
def test_emulated_cuda_kernel_matches_the_reference(emulated_cuda, n, rng):
    import os
    import subprocess
    exe, tmp = emulated_cuda
    for pdt, gdt in _dtypes():
        p = (rng.standard_normal(n) * 3).astype(pdt)
        state = bw.zeros_state(n)
        steps = 3
        grads = [(rng.standard_normal(n) * 10.0 ** rng.integers(-5, 2, n)).astype(gdt)
                 for _ in range(steps)]
        hps = [StepHParams(1e-2, 0.9, 0.999, 1e-8, 0.05, 1e-2, t, DECOUPLED_WEIGHT_DECAY * (t != 2))
               for t in range(1, steps + 1)]
        combo = _COMBOS[(np.dtype(pdt).name, np.dtype(gdt).name)]
        blob = (np.array([n], np.int64).tobytes() + np.array([combo, steps], np.int32).tobytes()
                + np.array([list(map(float, hp)) for hp in hps], np.float64).tobytes()
                + p.tobytes() + b"".join(g.tobytes() for g in grads)
                + b"".join(state[k].tobytes() for k in bw.STATE_KEYS))
        (tmp / "in.bin").write_bytes(blob)
        run = subprocess.run([exe, tmp / "in.bin", tmp / "out.bin"], capture_output=True,
                             text=True, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
        assert run.returncode == 0 and run.stdout.strip() == "ok", run.stdout + run.stderr
        out = (tmp / "out.bin").read_bytes()
        ref_p, ref = p, state
        for g, hp in zip(grads, hps):
            o = bw.adam_update_blockwise(ref_p, g, *ref.values(), hp)
            ref_p, ref = o[0], dict(zip(bw.STATE_KEYS, o[1:]))
        nb, k = bw.blocks(n), p.itemsize * n
        got_p = np.frombuffer(out[:k], dtype=p.dtype)
        np.testing.assert_array_equal(_bits(got_p), _bits(ref_p))
        offsets = [k, k + n, k + 2 * n, k + 2 * n + 4 * nb, k + 2 * n + 8 * nb]
        for key, lo, hi in zip(bw.STATE_KEYS, offsets, offsets[1:]):
            got = np.frombuffer(out[lo:hi], dtype=bw.STATE_KEYS[key])
            np.testing.assert_array_equal(_bits(got), _bits(ref[key]), err_msg=key)
