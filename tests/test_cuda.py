"""The CUDA backend (adamcore._cuda) on a GPU: numbers, layouts, many tensors, zero-copy, streams,
errors, the C ABI and the bench probes. The whole module skips where the backend cannot run.

Oracles: the CPU core, which shares the update's code (update.h) and floating-point contract
(no FMA contraction, correctly rounded sqrt and division), so GPU and CPU must agree bit for
bit; the float64 textbook (tests/textbook.py) within float32 rounding; and torch.optim's
fused=True CUDA kernels over 100-step trajectories.

Arrays come from torch (every dtype, CPU twins for the bit-for-bit oracle) and from CuPy where
installed, through the `lib` fixture.
"""

import ctypes
import time

import numpy as np
import pytest

import adamcore
from adamcore import _dispatch
from conftest import CONFIGS, hparam_kwargs
from textbook import adam_textbook

if _dispatch.cuda_backend() is None:
    from adamcore import _cuda_backend

    pytest.skip(f"the CUDA backend cannot run here: {_cuda_backend.probe()[1]}",
                allow_module_level=True)

from adamcore import _cuda  # noqa: E402

try:
    import torch

    HAVE_TORCH = torch.cuda.is_available()
except ImportError:
    torch = None
    HAVE_TORCH = False
try:
    import cupy

    HAVE_CUPY = cupy.cuda.runtime.getDeviceCount() > 0
except Exception:  # not installed, or no usable driver for CuPy's CUDA
    cupy = None
    HAVE_CUPY = False

needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="needs torch with CUDA")
needs_cupy = pytest.mark.skipif(not HAVE_CUPY, reason="needs CuPy")

SIZES = [1, 7, 17, 1023, 65537]
TORCH_DTYPES = ["float32", "float64", "float16", "bfloat16", "float16+f32grad",
                "bfloat16+f32grad"]


def _dtypes(name):
    """(param dtype, grad dtype) as torch dtypes."""
    param = getattr(torch, name.split("+")[0])
    return param, (torch.float32 if name.endswith("+f32grad") else param)


def _state_dtype(param):
    return torch.float64 if param == torch.float64 else torch.float32


def _bits(t):
    """A tensor's bits as integers, for exact comparison (NaN payloads included)."""
    view = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()]
    return t.detach().cpu().contiguous().view(view)


def assert_same_bits(a, b):
    assert torch.equal(_bits(a), _bits(b)), (a, b)


def _random_state(n, name, seed, amsgrad, device):
    param, grad = _dtypes(name)
    state = _state_dtype(param)
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen, dtype=torch.float64).to(param)
    g = torch.randn(n, generator=gen, dtype=torch.float64).to(grad)
    m = (0.1 * torch.randn(n, generator=gen, dtype=torch.float64)).to(state)
    v = (0.01 * torch.rand(n, generator=gen, dtype=torch.float64)).to(state)
    vmax = (v + 0.01 * torch.rand(n, generator=gen, dtype=torch.float64).to(state)) if amsgrad \
        else None
    arrays = [p, g, m, v, vmax]
    return [None if a is None else a.to(device) for a in arrays]


# ---- the low-precision modes: the CUDA kernels against the CPU core, bit for bit --------------

# (param dtype, options): torch's optimizer takes grads of the param's dtype only (the float32
# grads of 16-bit params are checked in tests/test_cuda_emulated.py)
LOWP_MODES = {
    "f32-state-bf16": ("float32", {"state_dtype": "bfloat16"}),
    "f16-state-f16": ("float16", {"state_dtype": "float16"}),
    "f16-state-bf16": ("float16", {"state_dtype": "bfloat16"}),
    "bf16-state-bf16": ("bfloat16", {"state_dtype": "bfloat16"}),
    "f16-kahan": ("float16", {"kahan_summation": True}),
    "bf16-kahan-state-bf16": ("bfloat16", {"kahan_summation": True, "state_dtype": "bfloat16"}),
    "bf16-sr": ("bfloat16", {"stochastic_rounding": True, "rounding_seed": 7}),
    "bf16-sr-state-bf16": ("bfloat16", {"stochastic_rounding": True, "state_dtype": "bfloat16"}),
}


@needs_torch
@pytest.mark.parametrize("mode", sorted(LOWP_MODES))
@pytest.mark.parametrize("layout", ["dense", "transposed", "strided"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
def test_low_precision_modes_equal_cpu_core(mode, layout, amsgrad):
    import adamcore.torch

    pdt, options = LOWP_MODES[mode]
    gen = torch.Generator().manual_seed(5)
    sizes = [1, 7, 17, 1023, 65537] if layout == "dense" else [(33, 31), (5, 7)]

    def make(size):
        shape = size if isinstance(size, tuple) else (size,)
        big = (torch.randn((shape[0], 2 * shape[-1]) if layout == "strided" else shape,
                           generator=gen) * 2).to(getattr(torch, pdt))
        if layout == "strided":
            return big[:, ::2]
        return big.t().contiguous().t() if layout == "transposed" else big

    cpu = [make(s) for s in sizes]
    gpu = [p.cuda() for p in cpu]
    for ps in (cpu, gpu):
        for p in ps:
            p.requires_grad_(True)
    opts = [adamcore.torch.Adam(ps, lr=3e-2, weight_decay=0.05, amsgrad=amsgrad, **options)
            for ps in (cpu, gpu)]
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen).to(getattr(torch, pdt)) for p in cpu]
        for ps, opt in zip((cpu, gpu), opts):
            for p, g in zip(ps, grads):
                p.grad = g.to(p.device)
            opt.step()
    torch.cuda.synchronize()
    for a, b in zip(cpu, gpu):
        assert_same_bits(a, b)
        sa, sb = opts[0].state[a], opts[1].state[b]
        assert sorted(sa) == sorted(sb)
        for key in sa:
            if torch.is_tensor(sa[key]) and sa[key].dim() > 0:
                assert_same_bits(sa[key], sb[key])


@needs_torch
@pytest.mark.parametrize("name", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("flags", ["adamw", "adam-l2-maximize"])
def test_int8_blockwise_state_equals_cpu_core(name, flags):
    """state_dtype='int8_blockwise' on torch CUDA tensors: the CUDA kernel (one 256-thread block
    per quantization block) against the CPU core, bit for bit, params and codes and absmaxes,
    each param updated in its own storage."""
    import adamcore.torch

    pdt, gdt = _dtypes(name)
    gen = torch.Generator().manual_seed(11)
    cpu = [(torch.randn(n, generator=gen) * 3).to(pdt) for n in (1, 255, 256, 257, 65537)]
    cpu.append((torch.randn(3, 300, generator=gen)).to(pdt))
    gpu = [p.cuda() for p in cpu]
    pointers = [p.data_ptr() for p in gpu]
    cls, kw = ((adamcore.torch.AdamW, dict(weight_decay=0.1)) if flags == "adamw"
               else (adamcore.torch.Adam, dict(weight_decay=0.05, maximize=True)))
    opts = [cls([{"params": ps, "state_dtype": "int8_blockwise"}], lr=1e-2, **kw)
            for ps in (cpu, gpu)]
    for _ in range(3):
        # gradients over six decades, so blocks mix large and tiny moments
        grads = [(torch.randn(p.shape, generator=gen)
                  * 10.0 ** torch.randint(-5, 2, p.shape, generator=gen)).to(gdt) for p in cpu]
        for ps, opt in zip((cpu, gpu), opts):
            for p, g in zip(ps, grads):
                p.grad = g.to(p.device)
            opt.step()
    torch.cuda.synchronize()
    assert [p.data_ptr() for p in gpu] == pointers
    for a, b in zip(cpu, gpu):
        assert_same_bits(a, b)
        sa, sb = opts[0].state[a], opts[1].state[b]
        for key in ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax"):
            assert sb[key].device == b.device and sb[key].dtype == sa[key].dtype
            assert torch.equal(sa[key], sb[key].cpu()), key


@needs_cupy
@pytest.mark.parametrize("pdt, gdt", [("float32", "float32"), ("float16", "float16"),
                                      ("float16", "float32")])
def test_int8_blockwise_state_on_cupy_equals_cpu_core(pdt, gdt):
    """The same on CuPy arrays through adamcore.AdamW (float32 grads for float16 params too)."""
    rng = np.random.default_rng(3)
    p = (rng.standard_normal(1000) * 3).astype(pdt)
    gp = cupy.asarray(p)
    pointer = gp.data.ptr
    opts = [adamcore.AdamW([{"params": [x], "state_dtype": "int8_blockwise"}], lr=1e-2)
            for x in (p, gp)]
    for _ in range(3):
        g = (rng.standard_normal(1000) * 10.0 ** rng.integers(-5, 2, 1000)).astype(gdt)
        opts[0].step([g])
        opts[1].step([cupy.asarray(g)])
    cupy.cuda.get_current_stream().synchronize()
    assert gp.data.ptr == pointer
    bits = np.uint32 if pdt == "float32" else np.uint16
    np.testing.assert_array_equal(p.view(bits), cupy.asnumpy(gp).view(bits))
    for key in ("exp_avg", "exp_avg_sq", "exp_avg_absmax", "exp_avg_sq_absmax"):
        np.testing.assert_array_equal(opts[0].state[0][key], cupy.asnumpy(opts[1].state[0][key]))


# ---- every flag and dtype: bit for bit against the CPU core, close to the textbook ------------


@needs_torch
@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("name", TORCH_DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_adam_step_equals_cpu_core_and_textbook(config, name, n):
    kw = dict(hparam_kwargs(config), lr=1e-2)
    amsgrad = kw.get("amsgrad", False)
    gpu = _random_state(n, name, n, amsgrad, "cuda")
    cpu = [None if a is None else a.cpu() for a in gpu]
    for step in (1, 2, 3):
        out = adamcore.adam_step(*gpu[:4], step=step, max_exp_avg_sq=gpu[4], **kw)
        assert out[0] is gpu[0] and out[1] is gpu[2]
        adamcore.adam_step(*cpu[:4], step=step, max_exp_avg_sq=cpu[4], **kw)
    torch.cuda.synchronize()
    for a, b in zip(gpu, cpu):
        if a is not None:
            assert_same_bits(a, b)

    # the textbook, one step from the same start, in float64
    gpu = _random_state(n, name, n, amsgrad, "cuda")
    start = [None if a is None else a.double().cpu().numpy() for a in gpu]
    adamcore.adam_step(*gpu[:4], step=4, max_exp_avg_sq=gpu[4], **kw)
    expected = adam_textbook(*start[:4], start[4], step=4, **kw)
    param = _dtypes(name)[0]
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(param, 1e-2)
    for got, want in zip([gpu[0], gpu[2], gpu[3], gpu[4]], expected):
        if want is not None:
            np.testing.assert_allclose(got.double().cpu().numpy(), want, rtol=tol, atol=tol)


@needs_torch
def test_sixteen_million_and_three_equals_cpu_core():
    n = 2**24 + 3
    kw = dict(lr=1e-3, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True)
    gpu = _random_state(n, "float32", 7, True, "cuda")
    cpu = [a.cpu() for a in gpu]
    for step in (1, 2):
        adamcore.adam_step(*gpu[:4], step=step, max_exp_avg_sq=gpu[4], **kw)
        adamcore.adam_step(*cpu[:4], step=step, max_exp_avg_sq=cpu[4], **kw)
    for a, b in zip(gpu, cpu):
        assert_same_bits(a, b)


# ---- layouts: unaligned, strided, permuted, negative strides ---------------------------------


def _views(base, kind, n):
    """A view of base (1-D, enough room) with n elements in the named layout."""
    if kind == "unaligned":
        return base[1:n + 1]
    if kind == "strided":
        return base[: 2 * n : 2]
    if kind == "transposed":
        return base[: n * 3].reshape(3, n).T
    if kind == "strided-2d":
        return base[: n * 6].reshape(n, 6)[:, 1:4:2]
    raise ValueError(kind)


@needs_torch
@pytest.mark.parametrize("kind", ["unaligned", "strided", "transposed", "strided-2d"])
@pytest.mark.parametrize("name", ["float32", "float64", "bfloat16+f32grad"])
@pytest.mark.parametrize("config", ["adam", "amsgrad-l2-maximize"])
def test_views_equal_cpu_core(kind, name, config):
    kw = dict(hparam_kwargs(CONFIGS[config]), lr=1e-2)
    amsgrad = kw.get("amsgrad", False)
    n = 1023
    flat = _random_state(8 * n, name, 3, amsgrad, "cuda")
    gpu_base = [None if a is None else a.clone() for a in flat]
    cpu_base = [None if a is None else a.cpu() for a in flat]
    gpu = [None if a is None else _views(a, kind, n) for a in gpu_base]
    cpu = [None if a is None else _views(a, kind, n) for a in cpu_base]
    gpu[1] = gpu[1].contiguous()  # a contiguous grad for a strided param: the strided path
    cpu[1] = cpu[1].contiguous()
    ptr = gpu[0].data_ptr()
    for step in (1, 2):
        adamcore.adam_step(*gpu[:4], step=step, max_exp_avg_sq=gpu[4], **kw)
        adamcore.adam_step(*cpu[:4], step=step, max_exp_avg_sq=cpu[4], **kw)
    assert gpu[0].data_ptr() == ptr
    # whole buffers: the views were updated in place and nothing between them was touched
    for a, b in zip(gpu_base, cpu_base):
        if a is not None:
            assert_same_bits(a, b)


@needs_cupy
@pytest.mark.parametrize("kind", ["negative", "fortran", "unaligned"])
def test_cupy_views_equal_cpu_core(kind):
    rng = np.random.default_rng(5)
    host = [rng.standard_normal(4 * 1023).astype(np.float32) for _ in range(4)]
    host[3] = np.abs(host[3])
    dev = [cupy.asarray(h) for h in host]

    def view(a):
        if kind == "negative":
            return a[::-1]
        if kind == "fortran":
            return a[: 3 * 1023].reshape(1023, 3, order="F")
        return a[1:1024]

    cpu_views = [view(h) for h in host]
    gpu_views = [view(d) for d in dev]
    for step in (1, 2):
        adamcore.adam_step(*gpu_views, step=step, lr=1e-2)
        adamcore.adam_step(*cpu_views, step=step, lr=1e-2)
    for d, h in zip(dev, host):
        np.testing.assert_array_equal(d.get().view(np.uint32), h.view(np.uint32))


# ---- many tensors of mixed sizes and dtypes in one step; param groups; the plan ---------------


@needs_torch
def test_many_tensors_and_groups_equal_cpu_optimizer():
    gen = torch.Generator().manual_seed(11)
    sizes = [1, 3, 7, 17, 64, 1023, 4096, 4097, 65537, 5, 0, 100_003]
    dtypes = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
    start = [torch.randn(n, generator=gen).to(dtypes[i % 4]) for i, n in enumerate(sizes * 3)]
    # 20 groups: more hyperparameter sets than a launch takes by value
    def groups(params):
        return [{"params": params[k::20], "lr": 1e-3 * (k + 1), "weight_decay": 0.01 * (k % 3),
                 "amsgrad": k % 2 == 0, "maximize": k % 5 == 0} for k in range(20)]

    gpu = [x.cuda() for x in start]
    cpu = [x.clone() for x in start]
    gopt, copt = adamcore.AdamW(groups(gpu)), adamcore.AdamW(groups(cpu))
    order = lambda ps: [p for k in range(20) for p in ps[k::20]]  # noqa: E731
    for step in range(5):  # the first is the general step, the rest go through the plan
        grads = [torch.randn(x.shape, generator=gen).to(x.dtype) for x in order(start)]
        gopt.step([g.cuda() for g in grads])
        copt.step(grads)
    assert gopt._steady is not None
    for a, b in zip(gpu, cpu):
        assert_same_bits(a, b)


@needs_torch
def test_plan_follows_grads_that_move_and_change_layout():
    gen = torch.Generator().manual_seed(2)
    start = [torch.randn(33, 17, generator=gen) for _ in range(3)]
    gpu = [x.cuda() for x in start]
    cpu = [x.clone() for x in start]
    gopt, copt = adamcore.Adam(gpu, lr=1e-2), adamcore.Adam(cpu, lr=1e-2)
    for step in range(6):
        grads = [torch.randn(33, 17, generator=gen) for _ in range(3)]
        dev = [g.cuda() for g in grads]
        if step == 3:  # Fortran-ordered grads for C-ordered params: the one-shot path
            dev = [g.t().contiguous().t() for g in dev]
        if step == 4:  # an unaligned grad
            dev[1] = torch.empty(33 * 17 + 1, device="cuda")[1:].view(33, 17).copy_(dev[1])
        gopt.step(dev)
        copt.step(grads)
    for a, b in zip(gpu, cpu):
        assert_same_bits(a, b)


@needs_torch
def test_plan_sees_a_swapped_torch_storage():
    p = torch.nn.Parameter(torch.ones(100, device="cuda"))
    opt = adamcore.Adam([p], lr=0.1)
    for _ in range(2):
        opt.step([torch.ones(100, device="cuda")])
    assert opt._steady is not None
    p.data = torch.zeros(100, device="cuda")  # same object, new storage
    opt.step([torch.ones(100, device="cuda")])
    assert torch.all(p.detach() < 0)  # the new storage was stepped, not the old one
    base = torch.zeros(200, device="cuda")
    p.data = base[::2]  # a strided storage, which no plan takes: stepped one-shot
    opt.step([torch.ones(100, device="cuda")])
    assert torch.all(base[::2] < 0) and not base[1::2].any()


# ---- torch fused=True trajectories ------------------------------------------------------------

FUSED_CONFIGS = {
    "adam": ("Adam", dict()),
    "adam-l2": ("Adam", dict(weight_decay=0.1)),
    "adam-amsgrad-maximize": ("Adam", dict(amsgrad=True, maximize=True)),
    "adamw": ("AdamW", dict()),
    "adamw-amsgrad": ("AdamW", dict(amsgrad=True, weight_decay=0.1)),
    "adamw-maximize-betas": ("AdamW", dict(maximize=True, betas=(0.8, 0.99), eps=1e-6)),
}


# (16-bit parameters are checked bit for bit against the CPU core above: torch's fused kernel
# keeps their state in 16 bits, adamcore in float32, so their trajectories differ by design.)
@needs_torch
@pytest.mark.parametrize("name", FUSED_CONFIGS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_100_steps_match_torch_fused(name, dtype):
    cls, kw = FUSED_CONFIGS[name]
    dt = getattr(torch, dtype)
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = [(7,), (33, 17), (1023,), (), (65537,)]
    start = [torch.randn(s, generator=gen, device="cuda", dtype=dt) for s in shapes]
    theirs = [torch.nn.Parameter(x.clone()) for x in start]
    ours = [torch.nn.Parameter(x.clone()) for x in start]
    topt = getattr(torch.optim, cls)(theirs, lr=1e-2, fused=True, **kw)
    opt = getattr(adamcore, cls)(ours, lr=1e-2, **kw)
    for _ in range(100):
        grads = [torch.randn(s, generator=gen, device="cuda", dtype=dt) for s in shapes]
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        topt.step()
        opt.step(grads)
    # float32 (float64) rounding accumulated over 100 steps of size ~lr
    tol = 1e-5 if dt == torch.float32 else 1e-9
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=tol, atol=tol)


# ---- zero-copy --------------------------------------------------------------------------------


@needs_torch
def test_torch_nn_parameter_updated_in_its_own_storage():
    model = torch.nn.Linear(64, 32).cuda()
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    before = [p.detach().clone() for p in params]
    opt = adamcore.AdamW(params, lr=0.1)
    for _ in range(3):  # general step, then the plan
        out = opt.step([torch.ones_like(p) for p in params])
    for p, q, ptr, b in zip(params, out, pointers, before):
        assert q is p and p.requires_grad and isinstance(p, torch.nn.Parameter)
        assert p.data_ptr() == ptr and p.is_cuda
        assert not torch.equal(p.detach(), b)
    for s in opt.state.values():
        assert s["exp_avg"].is_cuda and s["exp_avg"].device == params[0].device


@needs_cupy
def test_cupy_array_updated_in_place():
    p = cupy.ones(1000, dtype=cupy.float32)
    ptr = p.data.ptr
    opt = adamcore.Adam([p], lr=0.1)
    for _ in range(3):
        out = opt.step([cupy.ones(1000, dtype=cupy.float32)])
    assert out[0] is p and p.data.ptr == ptr
    assert float(p.max()) < 1.0
    state = opt.state[0]["exp_avg"]
    assert isinstance(state, cupy.ndarray) and state.device == p.device


# ---- streams: the caller's current stream, no device synchronization ------------------------


@needs_torch
def test_torch_current_stream_orders_the_step_and_nothing_waits():
    side = torch.cuda.Stream()
    adamcore.adam_step(*(torch.ones(4, device="cuda") for _ in range(4)), step=1, lr=0.1)  # warm
    torch.cuda.synchronize()
    p = torch.zeros(1 << 20, device="cuda")
    opt = adamcore.Adam([p], lr=0.5)
    with torch.cuda.stream(side):
        for step in range(3):  # the general step, then the plan
            # a long kernel on the side stream, then the grad from it: the step must wait for it
            torch.cuda._sleep(200_000_000)  # about 0.1 s
            g = torch.full_like(p, -1.0)
            t0 = time.perf_counter()
            opt.step([g])
            elapsed = time.perf_counter() - t0
            # returned while the side stream is still busy: no device or stream synchronization
            assert not side.query(), "the step waited for the GPU"
            assert elapsed < 0.05, elapsed
        result = p.clone()  # enqueued after the step, on the same stream
    side.synchronize()
    assert torch.all(result > 1.0)  # three steps of about lr each, upward (g < 0)


@needs_cupy
def test_cupy_current_stream_orders_the_step():
    stream = cupy.cuda.Stream(non_blocking=True)
    p = cupy.zeros(1 << 20, dtype=cupy.float32)
    opt = adamcore.Adam([p], lr=0.5)
    with stream:
        for _ in range(3):
            g = cupy.full(p.shape, -1.0, dtype=cupy.float32)
            big = cupy.ones((2048, 2048), dtype=cupy.float32)
            g += (big @ big)[0, 0] * 0  # some work on the stream before the grad is final
            opt.step([g])
        result = p.copy()
    stream.synchronize()
    assert bool(cupy.all(result > 1.0))


# ---- errors, before anything runs -------------------------------------------------------------


@needs_torch
def test_host_grad_for_device_param_is_a_value_error():
    p = torch.ones(4, device="cuda")
    before = p.clone()
    opt = adamcore.Adam([p])
    with pytest.raises(ValueError, match="device"):
        opt.step([torch.ones(4)])
    # the native module itself, bypassing the front end's checks
    m, v = torch.zeros(4, device="cuda"), torch.zeros(4, device="cuda")
    hp = [(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)]
    with pytest.raises(ValueError, match="grad 0 is on cpu"):
        _cuda.adam_step([p], [torch.ones(4)], [m], [v], [], [], hp, False, 0)
    assert torch.equal(p, before) and not m.any()


@needs_torch
@pytest.mark.skipif(not HAVE_TORCH or torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_two_gpus_is_a_value_error():
    p = torch.ones(4, device="cuda:0")
    m, v = torch.zeros(4, device="cuda:0"), torch.zeros(4, device="cuda:0")
    hp = [(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)]
    with pytest.raises(ValueError, match="cuda:1"):
        _cuda.adam_step([p], [torch.ones(4, device="cuda:1")], [m], [v], [], [], hp, False, 0)
    # params on two GPUs in one optimizer are fine: one launch per device
    q = torch.ones(4, device="cuda:1")
    adamcore.Adam([p, q], lr=0.1).step([torch.ones(4, device="cuda:0"),
                                        torch.ones(4, device="cuda:1")])
    assert p.max() < 1 and q.max() < 1


@needs_torch
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_check_finite(dtype):
    params = [torch.ones(1000, device="cuda", dtype=dtype) for _ in range(3)]
    opt = adamcore.Adam(params, lr=0.1, check_finite=True)
    good = [torch.ones(1000, device="cuda", dtype=dtype) for _ in range(3)]
    opt.step(good)
    opt.step(good)  # the plan's finite check
    snapshot = [p.clone() for p in params]
    bad = [g.clone() for g in good]
    bad[1][::7][-1] = float("nan")
    with pytest.raises(FloatingPointError, match="grad 1"):
        opt.step(bad)
    for p, s in zip(params, snapshot):
        assert torch.equal(p, s)
    assert _cuda.first_nonfinite([good[0][::3], bad[1][::7]], 0) == 1  # strided views
    if dtype == torch.float64:  # huge but finite in float64 (inf once rounded to float32)
        assert _cuda.first_nonfinite([torch.full((5,), 1e300, device="cuda", dtype=dtype)], 0) == -1


# ---- 64-bit indexing --------------------------------------------------------------------------


@needs_torch
def test_more_than_two_to_the_31_elements():
    n = 2**31 + 5
    need = n * (2 + 2 + 4 + 4) + (1 << 30)  # bf16 param and grad, fp32 m and v
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} free")
    p = torch.ones(n, device="cuda", dtype=torch.bfloat16)
    g = torch.ones(n, device="cuda", dtype=torch.bfloat16)
    g[-3:] = -1
    m = torch.zeros(n, device="cuda")
    v = torch.zeros(n, device="cuda")
    adamcore.adam_step(p, g, m, v, step=1, lr=0.25)
    # the first step moves every element by lr (times the sign of its grad)
    assert p[0].item() == 0.75 and p[2**31 - 1].item() == 0.75 and p[2**31 + 1].item() == 0.75
    assert p[-1].item() == 1.25 and p[-4].item() == 0.75
    assert m[-1].item() == pytest.approx(-0.1) and v[2**31 + 4].item() == pytest.approx(1e-3)


# ---- the C ABI with device pointers -----------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("config", ["adam", "amsgrad-l2-maximize", "adamw-decouple-lr"])
def test_c_abi_cuda_entry_points_equal_cpu_entry_points(config):
    import c_abi

    lib = c_abi.load()
    assert lib.adamcore_cuda_available() == 1
    kw = dict(hparam_kwargs(CONFIGS[config]), lr=1e-2)
    amsgrad = kw.get("amsgrad", False)
    hp = ctypes.byref(c_abi.hparams(step=1, **kw))
    stream = torch.cuda.current_stream().cuda_stream
    gpu = _random_state(4099, "float32", 1, amsgrad, "cuda")
    cpu = [None if a is None else a.cpu() for a in gpu]
    ptr = lambda a: None if a is None else a.data_ptr()  # noqa: E731
    assert lib.adamcore_cuda_adam_step_f32(*map(ptr, gpu), 4099, hp, stream) == 0
    assert lib.adamcore_adam_step_f32(*map(ptr, cpu), 4099, hp) == 0
    torch.cuda.synchronize()
    for a, b in zip(gpu, cpu):
        if a is not None:
            assert_same_bits(a, b)

    # multi-tensor: three tensors in one launch
    sizes = [5, 4096, 70001]
    tensors = [_random_state(n, "float32", n, amsgrad, "cuda") for n in sizes]
    twins = [[None if a is None else a.cpu() for a in t] for t in tensors]

    def tables(ts):
        return [(ctypes.c_void_p * len(ts))(*[ptr(t[k]) for t in ts])
                if ts[0][k] is not None else None for k in range(5)]

    lengths = c_abi.length_table(sizes)
    rc = lib.adamcore_cuda_adam_step_multi_f32(*tables(tensors), lengths, 3, hp, stream)
    assert rc == 0, lib.adamcore_last_error()
    assert lib.adamcore_adam_step_multi_f32(*tables(twins), lengths, 3, hp) == 0
    torch.cuda.synchronize()
    for t, c in zip(tensors, twins):
        for a, b in zip(t, c):
            if a is not None:
                assert_same_bits(a, b)

    # a host pointer is refused before anything runs
    before = gpu[0].clone()
    args = [ptr(gpu[0]), ptr(cpu[1]), ptr(gpu[2]), ptr(gpu[3]), ptr(gpu[4])]
    assert lib.adamcore_cuda_adam_step_f32(*args, 4099, hp, stream) == c_abi.constants()["ERROR_INVALID_VALUE"]
    assert b"grad is not CUDA device memory" in lib.adamcore_last_error()
    assert torch.equal(gpu[0], before)


@needs_torch
def test_c_abi_cuda_blockwise_entry_equals_cpu_entry():
    """adamcore_cuda_adam_step_blockwise_tensors against adamcore_adam_step_blockwise_tensors:
    float32, bfloat16 with float32 grads, and an empty tensor, in one call; host memory refused."""
    import c_abi

    lib = c_abi.load()
    k = c_abi.constants()
    code = {torch.float32: k["FLOAT32"], torch.bfloat16: k["BFLOAT16"]}
    gen = torch.Generator().manual_seed(2)
    specs = [(70001, torch.float32, torch.float32), (300, torch.bfloat16, torch.float32),
             (0, torch.float32, torch.float32)]

    def tensors(device):
        out = []
        for n, pdt, gdt in specs:
            g = torch.Generator().manual_seed(n)
            out.append([(torch.randn(n, generator=g) * 3).to(pdt), torch.randn(n, generator=g).to(gdt),
                        torch.zeros(n, dtype=torch.int8), torch.zeros(n, dtype=torch.uint8),
                        torch.zeros((n + 255) // 256), torch.zeros((n + 255) // 256)])
        return [[a.to(device) for a in t] for t in out]

    gpu, cpu = tensors("cuda"), tensors("cpu")

    def table(ts):
        return (c_abi.BlockwiseTensor * len(ts))(*[
            c_abi.BlockwiseTensor(*[a.data_ptr() or None for a in t], t[0].numel(),
                                  code[t[0].dtype], code[t[1].dtype]) for t in ts])

    stream = torch.cuda.current_stream().cuda_stream
    for step in (1, 2):
        hp = ctypes.byref(c_abi.hparams(step=step, lr=1e-2, weight_decay=0.1,
                                        decoupled_weight_decay=True))
        rc = lib.adamcore_cuda_adam_step_blockwise_tensors(table(gpu), 3, hp, stream)
        assert rc == 0, lib.adamcore_last_error()
        assert lib.adamcore_adam_step_blockwise_tensors(table(cpu), 3, hp) == 0
    torch.cuda.synchronize()
    for t, c in zip(gpu, cpu):
        for a, b in zip(t, c):
            assert_same_bits(a, b)
    before = gpu[0][0].clone()
    mixed = [[gpu[0][0], cpu[0][1], *gpu[0][2:]]]
    rc = lib.adamcore_cuda_adam_step_blockwise_tensors(table(mixed), 1, hp, stream)
    assert rc == k["ERROR_INVALID_VALUE"]
    assert b"tensors[0].grad is not CUDA device memory" in lib.adamcore_last_error()
    assert torch.equal(gpu[0][0], before)


# ---- the bench's probes -----------------------------------------------------------------------


@needs_torch
@pytest.mark.parametrize("n", [1, 1023, 1 << 20])
def test_stream_probe_and_copy(n):
    p, g, m, v = (torch.rand(n, device="cuda") for _ in range(4))
    want = [p + g, m + g, v + g]
    stream = torch.cuda.current_stream().cuda_stream
    _cuda.stream_probe(p, g, m, v, stream)
    for got, w in zip((p, m, v), want):
        assert torch.equal(got, w)
    dst = torch.empty_like(g)
    _cuda.copy(dst, g, stream)
    assert torch.equal(dst, g)
    with pytest.raises(ValueError, match="differ in size"):
        _cuda.copy(dst[1:], g, stream)
