"""Smoke tests: each example of examples/ runs to the end (as a user runs it) and says so."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(script, *args, cwd, block=(), pythonpath=None):
    """Runs examples/<script> in a fresh interpreter; ``block`` names modules made unimportable."""
    path = str(EXAMPLES / script)
    if block:  # as if those optional libraries were not installed
        code = (f"import runpy, sys; sys.modules.update(dict.fromkeys({list(block)!r})); "
                f"sys.argv = {[path, *args]!r}; sys.path.insert(0, {str(EXAMPLES)!r}); "
                f"runpy.run_path(sys.argv[0], run_name='__main__')")
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, path, *args]
    env = None
    if pythonpath is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def has(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def test_rosenbrock(tmp_path):
    out = run_example("rosenbrock.py", cwd=tmp_path)
    first = out.splitlines()[1]
    assert first.startswith("adamcore.minimize ") and first.rstrip().endswith("True")
    assert "[0.99" in first or "[1." in first
    if has("scipy"):
        assert "scipy.optimize.minimize(scipy_adam)" in out


def test_rosenbrock_without_scipy(tmp_path):
    out = run_example("rosenbrock.py", cwd=tmp_path, block=["scipy"])
    assert "SciPy is not installed" in out and "adamcore.minimize, float32" in out


def test_logistic_regression(tmp_path):
    png = tmp_path / "curve.png"
    out = run_example("logistic_regression.py", "--epochs", "5", "--plot", str(png),
                      cwd=tmp_path)
    test_accuracy = float(re.search(r"test (\d\.\d+)", out).group(1))
    assert test_accuracy > 0.9, out
    if has("matplotlib"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"loss curve saved to {png}" in out
    if has("scipy"):
        assert "full-batch L-BFGS-B" in out


def test_logistic_regression_without_matplotlib_or_scipy(tmp_path):
    out = run_example("logistic_regression.py", "--epochs", "2", cwd=tmp_path,
                      block=["matplotlib", "scipy"])
    assert "matplotlib is not installed" in out and "SciPy is not installed" in out
    assert "accuracy" in out
    assert not list(tmp_path.glob("*.png"))


def _gpu_with_cupy() -> bool:
    if not has("cupy"):
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # CuPy without a usable CUDA driver
        return False


@pytest.mark.skipif(not _gpu_with_cupy(), reason="needs CuPy and an NVIDIA GPU")
def test_logistic_regression_cupy(tmp_path):
    out = run_example("logistic_regression_cupy.py", "--epochs", "5", cwd=tmp_path)
    assert float(re.search(r"test (\d\.\d+)", out).group(1)) > 0.9, out


# The script's logic (data, param groups, schedule, loop) on machines without a GPU: a module
# named cupy that is NumPy underneath. adamcore then steps NumPy arrays, so this says nothing
# about the CUDA backend, which the test above covers where there is a GPU.
_NUMPY_AS_CUPY = '''
from numpy import *
import numpy as _np

class _Stream:
    def synchronize(self):
        pass

class cuda:
    class runtime:
        class CUDARuntimeError(RuntimeError):
            pass
        getDeviceCount = staticmethod(lambda: 1)
        getDeviceProperties = staticmethod(lambda i: {"name": b"NumPy standing in for CuPy"})
    class Device:
        id = 0
    get_current_stream = staticmethod(lambda: _Stream())
'''


@pytest.mark.skipif(_gpu_with_cupy(), reason="the real CuPy example runs on this machine")
def test_logistic_regression_cupy_logic_with_numpy_standing_in(tmp_path):
    shim = tmp_path / "shim" / "cupy"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(_NUMPY_AS_CUPY)
    out = run_example("logistic_regression_cupy.py", "--epochs", "3", cwd=tmp_path,
                      pythonpath=shim.parent)
    assert "NumPy standing in for CuPy" in out
    assert float(re.search(r"test (\d\.\d+)", out).group(1)) > 0.9, out


def test_logistic_regression_cupy_says_what_is_missing(tmp_path):
    if _gpu_with_cupy():
        pytest.skip("CuPy and a GPU are present")
    done = subprocess.run([sys.executable, str(EXAMPLES / "logistic_regression_cupy.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and "needs CuPy and an NVIDIA GPU" in done.stderr


def _adamcore_torch_missing():
    if not has("torch"):
        return "torch is not installed"
    try:
        import adamcore.torch  # noqa: F401
    except ImportError as e:
        return f"adamcore.torch is not importable yet ({e}); run this test once it is merged"
    return None


@pytest.mark.skipif(_adamcore_torch_missing() is not None,
                    reason=_adamcore_torch_missing() or "")
def test_torch_training(tmp_path):
    out = run_example("torch_training.py", "--epochs", "3", cwd=tmp_path)
    accuracies = [float(a) for a in re.findall(r"test loss \S+ accuracy (\d\.\d+)", out)]
    assert len(accuracies) == 2 and min(accuracies) > 0.9, out
    gap = float(re.search(r"parameters: (\S+)", out).group(1))
    assert gap < 1e-3, out  # adamcore.torch.AdamW follows torch.optim.AdamW's trajectory


def test_torch_training_without_torch_says_what_to_install(tmp_path):
    path = str(EXAMPLES / "torch_training.py")
    code = (f"import runpy, sys; sys.modules['torch'] = None; sys.argv = [{path!r}]; "
            f"sys.path.insert(0, {str(EXAMPLES)!r}); runpy.run_path({path!r}, run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "needs PyTorch: pip install torch" in done.stderr


def test_cupy_hint_names_the_cuda_of_the_build():
    text = (EXAMPLES / "logistic_regression_cupy.py").read_text()
    assert "cupy-cuda13x" in text and "cupy-cuda12x" not in text
