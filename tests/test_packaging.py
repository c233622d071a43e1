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


def _pip_wheel(out_dir, build_dir):
    """pip wheel of the source tree, isolated as a plain `pip install .` is, CPU only and without
    the JAX FFI module (fast), verbose so that the build tool's lines show what was compiled."""
    return subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(out_dir),
         f"-Cbuild-dir={build_dir}", "-Ccmake.define.ADAMCORE_CUDA=OFF",
         "-Ccmake.define.ADAMCORE_JAX=OFF", str(ROOT)],
        cwd=ROOT, capture_output=True, text=True, timeout=1200)


def _compiled(output: str) -> list[str]:
    # Ninja's and Make's progress lines for a compilation ("[3/36] Building CXX object ...")
    return [line.strip() for line in output.splitlines() if "Building C" in line and "object" in line]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_wheel_ships_licence_and_stubs_and_rebuilds_incrementally(tmp_path):
    """Two real isolated wheel builds into one build directory (reused between runs): the wheel
    carries the licence and the stubs, and the second build, in a new isolated environment as
    every `pip install .` is, compiles nothing (backend/adamcore_build_backend.py)."""
    first = _pip_wheel(tmp_path / "first", "build/test-wheel")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    (wheel,) = (tmp_path / "first").glob("adamcore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for name in ("adamcore/py.typed", "adamcore/_core.pyi", "adamcore/_cuda.pyi"):
        assert name in names, name
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names

    second = _pip_wheel(tmp_path / "second", "build/test-wheel")
    log = second.stdout + second.stderr  # pip -v passes the backend's output on to stderr
    assert second.returncode == 0, log[-5000:]
    assert "configured afresh, its compiled objects kept" in log, log[-3000:]
    assert _compiled(log) == [], _compiled(log)
    (again,) = (tmp_path / "second").glob("adamcore-*.whl")
    assert sorted(zipfile.ZipFile(again).namelist()) == sorted(names)


def test_backend_keeps_objects_when_the_build_environment_is_new(tmp_path, monkeypatch):
    """The backend's reset of a build directory last built from another scikit-build-core: the
    CMake cache, CMake's own state and scikit-build-core's record go, the targets' objects stay;
    a build directory of the same environment, or of another source tree, is left alone."""
    pytest.importorskip("scikit_build_core")
    monkeypatch.syspath_prepend(str(ROOT / "backend"))
    backend = importlib.import_module("adamcore_build_backend")
    import json

    import scikit_build_core

    here = str(Path(scikit_build_core.__file__).parent.resolve())
    monkeypatch.chdir(tmp_path)

    def build_dir(name, skbuild_path, source=tmp_path):
        d = tmp_path / "build" / name
        (d / "CMakeFiles" / "_core.dir" / "cpp").mkdir(parents=True)
        (d / "CMakeFiles" / "_core.dir" / "cpp" / "core_module.cpp.o").write_text("object")
        (d / "CMakeFiles" / "4.0.0").mkdir()
        (d / "CMakeFiles" / "4.0.0" / "CMakeCXXCompiler.cmake").write_text("old compiler")
        (d / "CMakeFiles" / "rules.ninja").write_text("rules")
        (d / "CMakeCache.txt").write_text("CMAKE_COMMAND=/tmp/old-env/bin/cmake")
        (d / ".ninja_log").write_text("log")
        (d / backend.INFO).write_text(json.dumps(
            {"source_dir": str(source.resolve()), "skbuild_path": skbuild_path}))
        return d

    old = build_dir("old-env", "/tmp/pip-build-env-gone/site-packages/scikit_build_core")
    same = build_dir("same-env", here)
    other = build_dir("other-tree", "/tmp/gone", source=tmp_path / "elsewhere")
    living = tmp_path / "venv" / "site-packages" / "scikit_build_core"
    living.mkdir(parents=True)
    dev = build_dir("dev", str(living))  # a --no-build-isolation directory of another venv
    # build-dir's placeholders match any name; only directories with a record are candidates
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\nversion = "1"\n[tool.scikit-build]\n'
        'build-dir = "build/{wheel_tag}"\n')
    (tmp_path / "build" / "no-record").mkdir()
    found, exact = backend._build_dirs({}, "wheel")
    assert sorted(p.name for p in found) == ["dev", "old-env", "other-tree", "same-env"]
    assert not exact
    assert backend._build_dirs({"build-dir": "build/dev"}, "wheel") == ([Path("build/dev")], True)

    for d in (old, same, other, dev):
        backend._forget_old_environment(d, exact=False)

    assert (old / "CMakeFiles" / "_core.dir" / "cpp" / "core_module.cpp.o").read_text() == "object"
    assert (old / ".ninja_log").exists()
    assert sorted(p.name for p in (old / "CMakeFiles").iterdir()) == ["_core.dir"]
    assert not (old / "CMakeCache.txt").exists() and not (old / backend.INFO).exists()
    for d in (same, other, dev):
        assert (d / "CMakeCache.txt").exists() and (d / backend.INFO).exists()
        assert (d / "CMakeFiles" / "4.0.0" / "CMakeCXXCompiler.cmake").exists()
    # named exactly (-Cbuild-dir=build/dev), the directory is this build's: reset
    backend._forget_old_environment(dev, exact=True)
    assert not (dev / "CMakeCache.txt").exists()
    assert (dev / "CMakeFiles" / "_core.dir" / "cpp" / "core_module.cpp.o").exists()


def _stub_names(path: Path) -> set[str]:
    import ast

    tree = ast.parse(path.read_text())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    # private helper classes of the stub are not in the module; its submodules (_testing,
    # _steady) are, as annotated names
    return {n for n in names if not n.startswith("_") or n in ("_testing", "_steady")}


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
