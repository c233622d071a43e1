"""The CUDA backend where it cannot run: no adamcore._cuda, no driver, no GPU (CI's case).

These run on every machine: importing adamcore, `info`, dispatch and the C ABI must all say
clearly that CUDA is not usable, and nothing may fail because of it. tests/test_cuda.py covers
the backend itself where there is a GPU.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adamcore
from adamcore import _cli, _cuda_backend, _dispatch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_probe():
    """Forgets the probed backend before and after the test."""
    _cuda_backend.probe.cache_clear()
    _dispatch.BACKENDS.forget("cuda")
    yield
    _cuda_backend.probe.cache_clear()
    _dispatch.BACKENDS.forget("cuda")


def test_probe_agrees_with_dispatch_and_info():
    module, reason = _cuda_backend.probe()
    backend = _dispatch.cuda_backend()
    text = "\n".join(_cli.info_lines())
    assert "cuda" in text
    if module is None or reason:
        assert backend is None
        assert reason and reason in text
    else:
        assert backend is not None and backend.name == "cuda"
        assert "cuda device 0:" in text


def test_without_the_module(fresh_probe, monkeypatch):
    """An install built without a CUDA compiler: no adamcore._cuda at all."""
    monkeypatch.setitem(sys.modules, "adamcore._cuda", None)  # import raises ImportError
    module, reason = _cuda_backend.probe()
    assert module is None and "not built" in reason
    assert _dispatch.cuda_backend() is None
    assert any(line.startswith("cuda: not built") for line in _cli.info_lines())


def test_module_without_a_gpu(fresh_probe):
    """Built, but no driver or no device here: the module loads and says why."""
    try:
        from adamcore import _cuda
    except ImportError:
        pytest.skip("this install has no adamcore._cuda")
    if _cuda.device_count() > 0:
        pytest.skip("a GPU is visible; tests/test_cuda.py covers it")
    reason = _cuda.unavailable_reason()
    assert "driver" in reason or "device" in reason, reason
    assert _cuda.devices() == []
    assert _cuda.runtime_version() >= 11000
    assert _dispatch.cuda_backend() is None
    assert f"none usable: {reason}" in "\n".join(_cli.info_lines())
    # the module refuses host arrays before anything runs, naming the array and its device
    arrays = [np.zeros(3, np.float32) for _ in range(4)]
    hp = [(1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0)]
    with pytest.raises(ValueError, match="param 0 is on cpu"):
        _cuda.adam_step(arrays[:1], arrays[1:2], arrays[2:3], arrays[3:], [], [], hp, False, 0)


def test_cli_info_runs_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-m", "adamcore", "info"], check=True,
                         capture_output=True, text=True).stdout
    assert "cuda" in out


def test_numpy_step_never_touches_cuda(fresh_probe, monkeypatch):
    """Steps of CPU arrays do not even probe for CUDA."""
    monkeypatch.setattr(_cuda_backend, "load", lambda: pytest.fail("probed CUDA"))
    p = np.ones(5, np.float32)
    adamcore.Adam([p], lr=0.1).step([np.ones(5, np.float32)])
    assert np.all(p < 1)


# ---- the C ABI's CUDA entry points in a build without CUDA -----------------------------------

_DRIVER = r"""
#include <cstdio>
#include <cstring>
#include "adamcore/adamcore.h"
#include "c_api_common.h"

int main() {
    float x[4] = {0};
    float* ptrs[1] = {x};
    const float* cptrs[1] = {x};
    int64_t n[1] = {4};
    adamcore_hparams hp = {1e-3, 0.9, 0.999, 1e-8, 0.0, 1e-3, 1, 0};
    if (adamcore_cuda_available() != 0) return 1;
    int rc = adamcore_cuda_adam_step_f32(x, x, x, x, nullptr, 4, &hp, nullptr);
    std::printf("%d %s\n", rc, adamcore::capi::last_error.c_str());
    double d[4] = {0};
    rc = adamcore_cuda_adam_step_f64(d, d, d, d, nullptr, 4, &hp, nullptr);
    std::printf("%d\n", rc);
    rc = adamcore_cuda_adam_step_multi_f32(ptrs, cptrs, ptrs, ptrs, nullptr, n, 1, &hp, nullptr);
    std::printf("%d\n", rc);
    adamcore_tensor t = {x, x, x, x, nullptr, nullptr, 4, 0, ADAMCORE_FLOAT32, ADAMCORE_FLOAT32,
                         ADAMCORE_FLOAT32, 0};
    rc = adamcore_cuda_adam_step_tensors(&t, 1, &hp, nullptr);
    std::printf("%d\n", rc);
    return 0;
}
"""


def test_c_abi_entry_points_without_the_cuda_backend(tmp_path):
    """c_api_cuda.cpp compiled without ADAMCORE_WITH_CUDA (a build with no CUDA compiler): the
    same symbols, each returning ADAMCORE_ERROR_UNAVAILABLE with a message saying why."""
    cxx = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")
    if cxx is None or not (ROOT / "cpp" / "src" / "c_api_cuda.cpp").is_file():
        pytest.skip("needs a C++ compiler and the source tree")
    driver = tmp_path / "driver.cpp"
    driver.write_text(_DRIVER)
    exe = tmp_path / "driver"
    subprocess.run([cxx, "-std=c++17", "-I", ROOT / "cpp" / "include", "-I", ROOT / "cpp" / "src",
                    driver, ROOT / "cpp" / "src" / "c_api_cuda.cpp", "-o", exe], check=True)
    lines = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines()
    unavailable = "-5"  # ADAMCORE_ERROR_UNAVAILABLE
    assert lines[0].startswith(unavailable + " ") and "without the CUDA backend" in lines[0]
    assert lines[1:] == [unavailable, unavailable, unavailable]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_cmake_rejects_an_unknown_cuda_mode(tmp_path):
    out = subprocess.run(["cmake", "-S", ROOT, "-B", tmp_path / "build", "-DADAMCORE_CUDA=maybe"],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "ADAMCORE_CUDA must be AUTO, ON or OFF" in out.stdout + out.stderr


# ---- the Python side of the backend, over a stand-in for adamcore._cuda -------------------------


class _FakeCuda:
    """Records what the backend hands adamcore._cuda; CudaPlan refuses params marked strided."""

    def __init__(self):
        self.calls = []
        fake = self

        class CudaPlan:
            def __init__(self, params, exp_avgs, exp_avg_sqs, max_sqs, index):
                if any(getattr(p, "_fake_strided", False) or not p.is_contiguous() for p in params):
                    raise ValueError("not dense")
                self.params = params
                fake.calls.append(("plan", [p.data_ptr() for p in params], list(index)))

            def step(self, grads, hparams, check_finite, stream):
                fake.calls.append(("plan.step", [g.data_ptr() for g in grads], len(hparams),
                                   check_finite, stream))

        self.CudaPlan = CudaPlan

    def adam_step(self, params, grads, m, v, vmax, index, hparams, check_finite, stream, **lowp):
        assert not any(getattr(p, "requires_grad", False) for p in params)  # exported detached
        self.calls.append(("adam_step", [p.data_ptr() for p in params], list(index), len(vmax),
                           stream))
        self.lowp = lowp

    def first_nonfinite(self, arrays, stream):
        torch = pytest.importorskip("torch")
        return next((i for i, a in enumerate(arrays) if not torch.isfinite(a).all()), -1)


@pytest.fixture
def fake_backend(monkeypatch):
    pytest.importorskip("torch")
    fake = _FakeCuda()
    monkeypatch.setattr(_cuda_backend, "_current_stream", lambda lib, device: 1234)
    return _cuda_backend.CudaNative(fake), fake


def test_backend_run_hands_over_detached_params_and_the_stream(fake_backend):
    import torch

    backend, fake = fake_backend
    p = torch.nn.Parameter(torch.ones(3))
    q = torch.ones(4)
    tensors = [_dispatch.StepTensor(p, torch.ones(3), torch.zeros(3), torch.zeros(3), None, 0),
               _dispatch.StepTensor(q, torch.ones(4), torch.zeros(4), torch.zeros(4),
                                    torch.zeros(4), 1)]
    backend.run(tensors, [None, None])
    (name, pointers, index, n_max, stream), = fake.calls
    assert name == "adam_step" and stream == 1234
    assert pointers == [p.data_ptr(), q.data_ptr()] and index == [0, 1] and n_max == 2
    assert fake.lowp == {}  # the default modes pass no compensations or seeds

    # the low-precision modes: each tensor's compensation and seed reach adamcore._cuda
    comp = torch.zeros(3, dtype=torch.bfloat16)
    tensors = [_dispatch.StepTensor(p, torch.ones(3), torch.zeros(3), torch.zeros(3), None, 0,
                                    comp, 7),
               _dispatch.StepTensor(q, torch.ones(4), torch.zeros(4), torch.zeros(4), None, 0,
                                    None, 8)]
    backend.run(tensors, [None])
    assert fake.lowp["compensations"][0] is comp and fake.lowp["compensations"][1] is None
    assert fake.lowp["seeds"] == [7, 8]
    # and the general step sends such tensors to the CUDA backend, not the reference path
    from adamcore import _lowp

    assert _lowp.backend_for(backend, tensors[0]) is backend


def test_steady_plan_rebuilds_when_a_torch_param_swaps_its_storage(fake_backend, monkeypatch):
    """The steady plan compares the torch params' data pointers before each step: a param
    given new storage under the same object sends the step to the general path, which steps
    one-shot and builds a new native plan over the new storage; storage no plan takes (strided)
    keeps every step on the general path, check_finite included."""
    import torch
    import adamcore.torch as at
    from adamcore import _engine, _steady

    backend, fake = fake_backend
    monkeypatch.setattr(_cuda_backend, "_device_key", lambda x: ("torch", 0))
    monkeypatch.setattr(_steady, "backend_for", lambda x: backend)
    monkeypatch.setattr(_engine, "backend_for", lambda x: backend)
    p = torch.nn.Parameter(torch.ones(3))
    opt = at.Adam([p], lr=1e-3, check_finite=True)

    def step(grad):
        p.grad = grad
        opt.step()

    step(torch.ones(3))
    step(torch.ones(3))
    p.data = torch.full((3,), 2.0)  # same object, new storage
    step(torch.ones(3))
    step(torch.ones(3))
    kinds = [c[0] for c in fake.calls]
    assert kinds == ["adam_step", "plan", "plan.step", "adam_step", "plan", "plan.step"], kinds
    assert fake.calls[3][1] == fake.calls[4][1] == [p.data_ptr()]
    assert fake.calls[5][3:] == (True, 1234)  # check_finite and the caller's stream

    p.data = torch.zeros(6)[::2]  # swapped for a storage no plan takes: general steps
    with pytest.raises(FloatingPointError, match="grad 0"):
        step(torch.tensor([1.0, float("nan"), 1.0]))
    step(torch.ones(3))
    step(torch.ones(3))
    assert [c[0] for c in fake.calls[6:]] == ["adam_step", "adam_step"]
    assert fake.calls[-1][1] == [p.data_ptr()] and opt._plan is None


def test_make_plan_refuses_strided_params_and_two_devices(fake_backend, monkeypatch):
    import torch

    backend, fake = fake_backend
    strided = torch.zeros(6)[::2]
    tensors = [_dispatch.StepTensor(strided, None, torch.zeros(3), torch.zeros(3), None, 0)]
    assert backend.make_plan(tensors) is None
    keys = iter([("torch", 0), ("torch", 1)])
    monkeypatch.setattr(_cuda_backend, "_device_key", lambda x: next(keys))
    two = [_dispatch.StepTensor(torch.ones(2), None, torch.zeros(2), torch.zeros(2), None, 0)] * 2
    assert backend.make_plan(two) is None
