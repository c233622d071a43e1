"""What the wheel ships besides code: the licence, py.typed and the stubs of the compiled
modules, and stubs that agree with the modules and pass a type checker."""

import importlib
import inspect
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import adamcore

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(adamcore.__file__).parent


def test_installed_package_is_typed():
    for name in ("py.typed", "_core.pyi", "_cuda.pyi"):
        assert (PACKAGE / name).is_file(), name


def test_installed_metadata_carries_the_licence():
    dist = metadata.distribution("adamcore")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    licence = [f for f in dist.files if f.name == "LICENSE"]
    assert licence, "no LICENSE in the installed dist-info"
    assert "BSD 3-Clause" in licence[0].read_text()
    assert "the adamcore developers" in (ROOT / "LICENSE").read_text()


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_wheel_ships_licence_and_stubs(tmp_path):
    """A real wheel build, CPU only (the build directory is reused between runs); without
    isolation where the build backend is installed (a developer's venv), else pip fetches it."""
    import importlib.util

    local = all(importlib.util.find_spec(m) for m in ("scikit_build_core", "nanobind"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path),
         *(["--no-build-isolation"] if local else []), "-Cbuild-dir=build/test-wheel",
         "-Ccmake.define.ADAMCORE_CUDA=OFF", str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = tmp_path.glob("adamcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("adamcore/py.typed", "adamcore/_core.pyi", "adamcore/_cuda.pyi"):
        assert name in names, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names


def _stub_names(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_") or n == "_testing"} - {"_TestingModule"}


def test_core_stub_lists_exactly_the_module():
    from adamcore import _core

    public = {n for n in dir(_core) if not n.startswith("__")}
    assert _stub_names(PACKAGE / "_core.pyi") == public


def test_cuda_stub_lists_exactly_the_module():
    try:
        _cuda = importlib.import_module("adamcore._cuda")
    except ImportError:
        pytest.skip("adamcore._cuda is not built here")
    public = {n for n in dir(_cuda) if not n.startswith("__")}
    assert _stub_names(PACKAGE / "_cuda.pyi") == public


def test_stubs_type_check(tmp_path):
    pytest.importorskip("mypy")
    user = tmp_path / "user.py"
    user.write_text(
        "import numpy as np\n"
        "from adamcore import _core, _cuda\n"
        "p = np.zeros(3, np.float32)\n"
        "_core.adam_step([p], [p], [p], [p], [], [], [(1e-3, .9, .999, 1e-8, 0., 1e-3, 1, 0)])\n"
        "plan = _core.CpuPlan([p], [p], [p], [], [])\n"
        "n: int = len(plan)\n"
        "level: str = _core.simd_level()\n"
        "chunks: list[tuple[int, int]] = _core._testing.chunks(10, 2)\n"
        "reason: str = _cuda.unavailable_reason()\n"
        "_core.set_num_threads('two')  # E: wrong type\n")
    # adamcore is found as an installed, typed package (py.typed): the stubs are what mypy reads
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--strict",
                           str(user)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    # exactly the one deliberate error: the stubs are seen, and they type the calls above
    assert len(errors) == 1 and "user.py:10" in errors[0] and "set_num_threads" in errors[0], \
        done.stdout
