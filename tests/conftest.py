"""Shared fixtures: every test that runs the CPU kernels runs at every SIMD level this CPU has."""

import numpy as np
import pytest

import adamcore
import array_libs

# The flag combinations of docs/update.md that every value test runs (optax-style config table).
CONFIGS = {
    "adam": dict(),
    "adam-l2": dict(weight_decay=0.1),
    "adamw": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "adamw-decouple-lr": dict(weight_decay=0.1, decouple_lr=True, max_lr=3e-3),
    "amsgrad": dict(amsgrad=True),
    "amsgrad-l2-maximize": dict(amsgrad=True, weight_decay=0.05, maximize=True),
    "adamw-amsgrad-maximize": dict(amsgrad=True, weight_decay=0.1, decoupled_weight_decay=True,
                                   maximize=True),
    "betas-eps": dict(betas=(0.5, 0.9), eps=1e-3),
}


def pytest_report_header(config):
    return (f"adamcore {adamcore.__version__}: SIMD levels compiled {adamcore.compiled_simd_levels()}"
            f", runnable here {adamcore.available_simd_levels()}")


@pytest.fixture(params=adamcore.compiled_simd_levels())
def simd_level(request):
    """Runs the test at one compiled SIMD level; levels this CPU cannot run are skipped."""
    level = request.param
    if level not in adamcore.available_simd_levels():
        pytest.skip(f"this CPU cannot run the {level} kernels")
    before = adamcore.get_simd_level()
    adamcore.set_simd_level(level)
    yield level
    adamcore.set_simd_level(before)


@pytest.fixture
def rng():
    return np.random.default_rng(20261122)


def hparam_kwargs(config: dict) -> dict:
    """A config table row as keyword arguments of adamcore.adam_step (betas split)."""
    kw = dict(config)
    if "betas" in kw:
        kw["beta1"], kw["beta2"] = kw.pop("betas")
    return kw


@pytest.fixture(params=array_libs.NAMES)
def xp(request):
    """Each array library's namespace (SciPy-style); GPU libraries run on the GPU (torch through
    its default device) and skip where there is none."""
    namespace = array_libs.namespace(request.param)
    if request.param != "torch-cuda":
        yield namespace
        return
    import torch

    before = torch.get_default_device()
    torch.set_default_device("cuda")
    try:
        yield namespace
    finally:
        torch.set_default_device(before)
