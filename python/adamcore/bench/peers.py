"""The implementations a case times: the roofline (probe, copy), adamcore, and its peers.

Each peer says why it cannot run a case (library missing, dtype unsupported), or sets one up on
the case's shared parameters and gradients and returns a step callable. Optional libraries (torch,
DeepSpeed, torch-optimi, CuPy) are imported only here and only when used; a missing one makes its
rows "skipped", never an error.

Bytes: every implementation is charged the bytes its own step must move (read p, g and each state
buffer; write p and the state buffers). torch keeps the state of 16-bit params in 16 bits and
adamcore in float32, so their bytes differ; peers built on torch.optim are measured from the
state they actually hold after the warm-up step.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .cases import ITEMSIZE, Case, step_bytes

LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8

ROOFLINE, ADAMCORE, PEER = "roofline", "adamcore", "peer"


class Skip(Exception):
    """Raised by a setup that cannot run this case here; the message says why."""


@dataclass
class Impl:
    step: Callable[[], object]
    nbytes: Callable[[], int]  # bytes one step moves; called after the warm-up


@dataclass
class Work:
    """The shared inputs of a case: params and grads in one array library on the case's device."""

    case: Case
    lib: str           # "numpy", "torch" or "cupy"
    params: list
    grads: list
    shared: dict = field(default_factory=dict)  # what one peer's setup leaves for another's


# -------------------------------------------------------------------------------------------------
# Arrays

def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def make_work(case: Case, seed: int = 0) -> Work:
    """Random params and grads for the case (N(0,1); grads scaled so that v stays moderate)."""
    rng = np.random.default_rng(seed)

    def host(n, dtype):
        return rng.standard_normal(n, dtype=np.float32).astype(dtype, copy=False)

    if case.device == "jax":
        from . import jax_peers

        return jax_peers.make_work(case)
    if case.device == "cpu":
        if case.dtype == "bfloat16" or case.grad_dtype == "bfloat16":
            if not have("torch"):
                raise Skip("bfloat16 arrays need torch (pip install torch)")
            import torch

            def tensor(n, dtype):
                return torch.from_numpy(host(n, np.float32)).to(getattr(torch, dtype))

            return Work(case, "torch", [tensor(n, case.dtype) for n in case.sizes],
                        [tensor(n, case.grad_dtype) for n in case.sizes])
        return Work(case, "numpy", [host(n, case.dtype) for n in case.sizes],
                    [host(n, case.grad_dtype) for n in case.sizes])
    if have("cupy") and case.dtype != "bfloat16" and case.grad_dtype != "bfloat16":
        import cupy

        def cuda(n, dtype):
            return cupy.random.standard_normal(n, dtype=cupy.float32).astype(dtype, copy=False)

        return Work(case, "cupy", [cuda(n, case.dtype) for n in case.sizes],
                    [cuda(n, case.grad_dtype) for n in case.sizes])
    if have("torch"):
        import torch

        if torch.cuda.is_available():
            def cuda(n, dtype):
                return torch.randn(n, device="cuda").to(getattr(torch, dtype))

            return Work(case, "torch", [cuda(n, case.dtype) for n in case.sizes],
                        [cuda(n, case.grad_dtype) for n in case.sizes])
    raise Skip("a CUDA case needs CuPy (pip install cupy-cuda13x) or torch with CUDA")


def to_torch(x):
    import torch

    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        return torch.from_numpy(x)
    return torch.from_dlpack(x)  # CuPy: the same device memory


def to_numpy(x):
    if isinstance(x, np.ndarray):
        return x
    raise Skip("NumPy has no bfloat16")


def _zeros_like(work: Work, dtype: str, n: int | None = None):
    """A zero 1-d array of n elements in the work's library and on its device."""
    if work.lib == "numpy":
        return np.zeros(n, dtype=dtype)
    if work.lib == "cupy":
        import cupy

        return cupy.zeros(n, dtype=dtype)
    import torch

    return torch.zeros(n, dtype=getattr(torch, dtype), device=work.params[0].device)


def _state(work: Work):
    """Per-param float32 (or the param's) m and v, in the work's library."""
    s = work.case.state_dtype
    return ([_zeros_like(work, s, p.shape[0]) for p in work.params],
            [_zeros_like(work, s, p.shape[0]) for p in work.params])


def _case_bytes(case: Case) -> Callable[[], int]:
    per = step_bytes(case.dtype, case.grad_dtype, case.state_dtype,
                     compensation=bool(case.options.get("kahan_summation")))
    return lambda: per * case.elements


def _torch_bytes(opt, params, grads) -> Callable[[], int]:
    """Bytes from what a torch.optim-style optimizer holds: p and g, plus each state tensor
    of the param's size, read and written."""
    def count():
        total = 0
        for p, g in zip(params, grads):
            total += 2 * p.numel() * p.element_size() + g.numel() * g.element_size()
            for value in opt.state[p].values():
                if hasattr(value, "numel") and value.numel() == p.numel():
                    total += 2 * value.numel() * value.element_size()
        return total

    return count


# -------------------------------------------------------------------------------------------------
# Peers

class Peer:
    name = "?"
    kind = PEER
    devices = ("cpu",)
    quick = True  # runs in --quick

    def setup(self, work: Work) -> Impl:
        raise NotImplementedError


class CpuProbe(Peer):
    name, kind = "probe (roofline)", ROOFLINE

    def setup(self, work):
        from adamcore import _core

        n = work.case.elements  # one call over all elements: the memory system's limit
        p, g, m, v = (np.ones(n, np.float32) for _ in range(4))
        return Impl(lambda: _core.stream_probe(p, g, m, v), lambda: 28 * n)


class CpuCopy(Peer):
    """A plain copy moving the bytes of an fp32 step (3.5 floats read and written per element)."""

    name, kind = "copy", ROOFLINE

    def setup(self, work):
        from adamcore import _core

        n = (28 * work.case.elements) // 8
        src, dst = np.ones(n, np.float32), np.zeros(n, np.float32)
        return Impl(lambda: _core.copy(dst, src), lambda: 8 * n)


class AdamcoreClass(Peer):
    """What a user writes: opt.step(grads), Python included."""

    name, kind, devices = "adamcore", ADAMCORE, ("cpu", "cuda")

    def setup(self, work):
        import adamcore
        from adamcore import _dispatch

        if work.case.device == "cuda" and _dispatch.cuda_backend() is None:
            raise Skip("adamcore's CUDA backend is not built or sees no GPU")
        opt = adamcore.Adam(work.params, lr=LR, betas=(BETA1, BETA2), eps=EPS,
                            **work.case.options)
        grads = work.grads
        work.shared["adamcore"] = opt  # its state, once made, is the raw core's (_class_state)
        return Impl(lambda: opt.step(grads), _case_bytes(work.case))


class AdamcoreInt8(Peer):
    """adamcore.Adam with 8-bit block-quantized state (docs/int8-state.md): p and g as the case
    has them, m and v as 1-byte codes plus one float32 absmax per 256 elements and state."""

    name, kind, devices = "adamcore int8 state", ADAMCORE, ("cpu", "cuda")

    def setup(self, work):
        import adamcore
        from adamcore import _dispatch

        if work.case.device == "cuda" and _dispatch.cuda_backend() is None:
            raise Skip("adamcore's CUDA backend is not built or sees no GPU")
        opt = adamcore.Adam([{"params": work.params, "state_dtype": "int8_blockwise"}], lr=LR,
                            betas=(BETA1, BETA2), eps=EPS)
        grads, case = work.grads, work.case
        return Impl(lambda: opt.step(grads), lambda: int8_step_bytes(case))


def int8_step_bytes(case: Case) -> int:
    """p and g as in step_bytes; each state's code (1 byte) and its block's absmax (4 bytes per
    256 elements) read and written."""
    p, g = ITEMSIZE[case.dtype], ITEMSIZE[case.grad_dtype]
    blocks = sum((n + 255) // 256 for n in case.sizes)
    return (2 * p + g + 2 * 2) * case.elements + 2 * 2 * 4 * blocks


class AdamcoreRaw(Peer):
    """The core's own entry point, without the front end: arrays imported once, then steps (over
    the adamcore row's own state where that row ran: _class_state)."""

    name, kind = "adamcore raw core", ADAMCORE

    def setup(self, work):
        from adamcore import _core

        options = work.case.options
        flags = (_core.KAHAN_SUMMATION if options.get("kahan_summation") else 0) | (
            _core.STOCHASTIC_ROUNDING if options.get("stochastic_rounding") else 0)
        shared = _class_state(work)
        if shared is not None:
            m, v, comps = shared
        else:
            m, v = _state(work)
            comps = [_zeros_like(work, work.case.dtype, p.shape[0]) for p in work.params] \
                if options.get("kahan_summation") else []
        plan = _core.CpuPlan(work.params, m, v, [], [], comps, list(range(len(work.params))))
        grads, t = work.grads, [0]

        def step():
            t[0] += 1
            plan.step(grads, [(LR, BETA1, BETA2, EPS, 0.0, LR, t[0], flags)])

        return Impl(step, _case_bytes(work.case))


def _class_state(work: Work):
    """The ``adamcore`` row's m, v (and Kahan buffers), once its warm-up has made them; None
    where it did not run. The raw core steps that very memory, so that the two rows differ by
    the front end alone: arrays allocated apart differ by up to 13 % on the same work at 1M in
    100, either way, from their placement in the caches (bench/NOTES.md, CPU section 10)."""
    from adamcore import _arrays

    opt = work.shared.get("adamcore")
    if opt is None or len(opt.state) != len(work.params):
        return None
    states = [opt.state[i] for i in range(len(work.params))]
    kahan = bool(work.case.options.get("kahan_summation"))
    for s in states:
        if _arrays.dtype_name(s["exp_avg"].dtype) != work.case.state_dtype or (
                kahan and "kahan_comp" not in s):
            return None
    return ([s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
            [s["kahan_comp"] for s in states] if kahan else [])


class NumpyNaive(Peer):
    """The textbook expressions; every operation allocates a temporary."""

    name = "numpy naive"

    def setup(self, work):
        params = [to_numpy(p) for p in work.params]
        grads = [to_numpy(g) for g in work.grads]
        state = [list(mv) for mv in zip(*_state(work))]
        t = [0]

        def step():
            t[0] += 1
            for p, g, s in zip(params, grads, state):
                s[0] = BETA1 * s[0] + (1 - BETA1) * g
                s[1] = BETA2 * s[1] + (1 - BETA2) * g * g
                m_hat = s[0] / (1 - BETA1 ** t[0])
                v_hat = s[1] / (1 - BETA2 ** t[0])
                p -= LR * m_hat / (np.sqrt(v_hat) + EPS)

        return Impl(step, _case_bytes(work.case))


class NumpyOut(Peer):
    """In-place ufuncs with out=: no allocation, but a dozen passes over memory."""

    name = "numpy out="

    def setup(self, work):
        params = [to_numpy(p) for p in work.params]
        grads = [to_numpy(g) for g in work.grads]
        ms, vs = _state(work)
        dtype = work.case.state_dtype
        state = [(m, v, np.empty_like(m)) for m, v in zip(ms, vs)]
        t = [0]

        def step():
            t[0] += 1
            step_size = LR / (1 - BETA1 ** t[0])
            inv_bc2 = 1 / np.sqrt(1 - BETA2 ** t[0])
            for p, g, (m, v, tmp) in zip(params, grads, state):
                m *= BETA1
                np.multiply(g, 1 - BETA1, out=tmp, dtype=dtype)
                m += tmp
                v *= BETA2
                np.multiply(g, g, out=tmp, dtype=dtype)
                tmp *= 1 - BETA2
                v += tmp
                np.sqrt(v, out=tmp)
                tmp *= inv_bc2
                tmp += EPS
                np.divide(m, tmp, out=tmp)
                tmp *= step_size
                np.subtract(p, tmp, out=p, casting="same_kind")

        return Impl(step, _case_bytes(work.case))


class _TorchOptim(Peer):
    """A torch.optim-style optimizer over zero-copy torch views of the shared arrays."""

    devices = ("cpu", "cuda")
    module = "torch"
    package = "torch"  # what pip installs as module

    def make(self, params):
        raise NotImplementedError

    def setup(self, work):
        if not have(self.module):
            raise Skip(f"{self.module} is not installed (pip install {self.package})")
        params = [to_torch(p) for p in work.params]
        grads = [to_torch(g) for g in work.grads]
        for p, g in zip(params, grads):
            if g.dtype != p.dtype:
                raise Skip("torch.optim needs grads of the param's dtype")
            p.grad = g
        opt = self.make(params)
        return Impl(opt.step, _torch_bytes(opt, params, grads))


class TorchFused(_TorchOptim):
    name = "torch fused"

    def make(self, params):
        import torch

        return torch.optim.Adam(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, fused=True)


class TorchForeach(_TorchOptim):
    name = "torch foreach"

    def make(self, params):
        import torch

        return torch.optim.Adam(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, foreach=True)


class DeepSpeedCpuAdam(_TorchOptim):
    name, devices, module = "DeepSpeed CPU Adam", ("cpu",), "deepspeed"
    package = "deepspeed"
    quick = False  # builds its C++ op on first use (a minute or more on two cores)

    def make(self, params):
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(params, lr=LR, betas=(BETA1, BETA2), eps=EPS, weight_decay=0.0,
                                adamw_mode=False)


class TorchOptimi(_TorchOptim):
    name, module, package = "torch-optimi", "optimi", "torch-optimi"

    def make(self, params):
        import optimi

        return optimi.Adam(params, lr=LR, betas=(BETA1, BETA2), eps=EPS)


# ---- GPU ---------------------------------------------------------------------------------------

def _cuda_module():
    try:
        from adamcore import _cuda
    except ImportError:
        raise Skip("adamcore._cuda is not built") from None
    return _cuda


def _stream_handle(work: Work) -> int:
    if work.lib == "cupy":
        import cupy

        return cupy.cuda.get_current_stream().ptr
    import torch

    return torch.cuda.current_stream().cuda_stream


class CudaProbe(Peer):
    name, kind, devices = "probe (roofline)", ROOFLINE, ("cuda",)

    def setup(self, work):
        probe = getattr(_cuda_module(), "stream_probe", None)
        if probe is None:
            raise Skip("adamcore._cuda has no stream_probe")
        n = work.case.elements
        p, g, m, v = (_zeros_like(work, "float32", n) for _ in range(4))
        stream = _stream_handle(work)
        return Impl(lambda: probe(p, g, m, v, stream), lambda: 28 * n)


class CudaCopy(Peer):
    """Device-to-device copy of the bytes of an fp32 step: adamcore._cuda.copy where built,
    else the array library's own copy."""

    name, kind, devices = "copy", ROOFLINE, ("cuda",)

    def setup(self, work):
        n = (28 * work.case.elements) // 8
        src, dst = _zeros_like(work, "float32", n), _zeros_like(work, "float32", n)
        try:
            copy = getattr(_cuda_module(), "copy", None)
        except Skip:
            copy = None
        if copy is not None:
            stream = _stream_handle(work)
            return Impl(lambda: copy(dst, src, stream), lambda: 8 * n)
        return Impl(lambda: dst.__setitem__(slice(None), src), lambda: 8 * n)


_CUPY_ADAM = r"""
    float gf = (float)g;
    float mf = beta1 * m + (1.0f - beta1) * gf;
    float vf = beta2 * v + (1.0f - beta2) * gf * gf;
    float denom = sqrtf(vf) * inv_bc2 + eps;
    p = (P)((float)p - step_size * (mf / denom));
    m = mf;
    v = vf;
"""


class CupyKernel(Peer):
    """A hand-written fused CuPy ElementwiseKernel, one launch per tensor."""

    name, devices = "CuPy ElementwiseKernel", ("cuda",)

    def setup(self, work):
        if work.lib != "cupy":
            raise Skip("CuPy is not installed (pip install cupy-cuda13x)" if not have("cupy")
                       else "CuPy has no bfloat16")
        import cupy

        kernel = cupy.ElementwiseKernel(
            "G g, float32 beta1, float32 beta2, float32 eps, float32 step_size, float32 inv_bc2",
            "P p, float32 m, float32 v", _CUPY_ADAM, "adamcore_bench_adam")
        m, v = _state(work)
        params, grads, t = work.params, work.grads, [0]

        def step():
            t[0] += 1
            step_size = LR / (1 - BETA1 ** t[0])
            inv_bc2 = 1 / (1 - BETA2 ** t[0]) ** 0.5
            for p, g, mi, vi in zip(params, grads, m, v):
                kernel(g, BETA1, BETA2, EPS, step_size, inv_bc2, p, mi, vi)

        return Impl(step, _case_bytes(work.case))


CPU_PEERS = [CpuProbe(), CpuCopy(), AdamcoreClass(), AdamcoreRaw(), AdamcoreInt8(), NumpyNaive(),
             NumpyOut(),
             TorchFused(), TorchForeach(), DeepSpeedCpuAdam(), TorchOptimi()]
CUDA_PEERS = [CudaProbe(), CudaCopy(), AdamcoreClass(), AdamcoreInt8(), TorchFused(),
              TorchForeach(), CupyKernel()]


def peers_for(device: str) -> list[Peer]:
    if device == "jax":
        from .jax_peers import JAX_PEERS

        return JAX_PEERS
    return CPU_PEERS if device == "cpu" else CUDA_PEERS
