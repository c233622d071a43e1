"""examples/c built with CMake against the package (docs/c-abi.md) and run: their numbers must
equal the Python API's on the same problem, bit for bit (the same kernels run). Also the header
on its own, and a plain CMake build and install of the repository (no Python).

Skips when cmake, a C compiler or a build tool is missing, or without the source tree.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adamcore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "c"


def _find(*names):
    for name in names:
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CMAKE = _find("cmake")
CC = _find(os.environ.get("CC"), "cc", "gcc", "clang")
CXX = _find(os.environ.get("CXX"), "c++", "g++", "clang++")
GENERATOR = [] if _find("make") else (["-G", "Ninja"] if _find("ninja") else None)

needs_toolchain = pytest.mark.skipif(
    CMAKE is None or CC is None or GENERATOR is None,
    reason="needs cmake, a C compiler and make or ninja on PATH")
needs_sources = pytest.mark.skipif(not EXAMPLES.is_dir(),
                                   reason="examples/c is not here (tests run outside the repo)")


def run(*args, **kw):
    """Runs a command; on failure, shows its output in the test report."""
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, **kw)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def build_examples(build_dir, adamcore_dir):
    run(CMAKE, "-S", EXAMPLES, "-B", build_dir, *GENERATOR, "-DCMAKE_BUILD_TYPE=Release",
        f"-Dadamcore_DIR={adamcore_dir}")
    run(CMAKE, "--build", build_dir, env=dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2"))
    return build_dir


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """examples/c built against the installed wheel, found as a user would find it."""
    cmake_dir = run(sys.executable, "-m", "adamcore", "--cmake-dir").strip()
    assert cmake_dir == adamcore.get_cmake_dir()
    return build_examples(tmp_path_factory.mktemp("examples"), cmake_dir)


# ---- the examples' problem, repeated in Python --------------------------------------------------
# The same operations in the same order as cubic_data.h (Python floats are IEEE doubles and
# the examples are compiled without FMA contraction), so the gradients are the same bits.

N_SAMPLES, N_COEFS, STEPS = 64, 4, 500


def cubic_data():
    truth = [0.5, -1.0, 2.0, 0.25]
    state = 12345
    features, targets = [], []
    for i in range(N_SAMPLES):
        x = -1.0 + 2.0 * i / (N_SAMPLES - 1)
        row, power, target = [], 1.0, 0.0
        for j in range(N_COEFS):
            row.append(power)
            target += truth[j] * power
            power *= x
        state = (state * 1664525 + 1013904223) % 2**32
        features.append(row)
        targets.append(target + (state / 4294967296.0 - 0.5) * 0.1)
    return features, targets


def loss_and_grad(features, targets, w):
    loss, grad = 0.0, [0.0] * N_COEFS
    for row, target in zip(features, targets):
        residual = 0.0
        for j in range(N_COEFS):
            residual += row[j] * w[j]
        residual -= target
        loss += residual * residual
        for j in range(N_COEFS):
            grad[j] += row[j] * residual
    return loss / N_SAMPLES, [g * (2.0 / N_SAMPLES) for g in grad]


def python_fit():
    """fit_least_squares.c with adamcore.Adam: the fitted coefficients."""
    features, targets = cubic_data()
    w = np.zeros(N_COEFS)
    opt = adamcore.Adam([w], lr=0.05)
    for _ in range(STEPS):
        opt.step([np.array(loss_and_grad(features, targets, w)[1])])
    return w


def parse(output, pattern):
    return [float(x) for x in re.findall(pattern, output)]


@needs_toolchain
@needs_sources
def test_c_example_equals_python_api(examples):
    out = run(examples / "fit_least_squares")
    assert f"adamcore {adamcore.__version__}" in out
    coefs = parse(out, r"c\d = (\S+)")
    (final_loss,) = parse(out, r"final loss = (\S+)")

    w = python_fit()
    features, targets = cubic_data()
    assert coefs == w.tolist()  # %.17g round-trips: bit for bit
    assert final_loss == loss_and_grad(features, targets, w)[0]
    exact = np.linalg.lstsq(np.array(features), np.array(targets), rcond=None)[0]
    np.testing.assert_allclose(w, exact, atol=1e-8)  # and Adam did solve the problem


@needs_toolchain
@needs_sources
def test_cpp_multi_tensor_example_equals_python_api(examples):
    if not (examples / "multi_tensor").exists():
        pytest.skip("no C++ compiler: the C++ example was not built")
    out = run(examples / "multi_tensor")
    bias = parse(out, r"bias = (\S+)")
    slopes = parse(out, r"slope\d = (\S+)")
    (final_loss,) = parse(out, r"final loss = (\S+)")

    features, targets = cubic_data()
    b, s = np.zeros(1, np.float32), np.zeros(N_COEFS - 1, np.float32)
    opt = adamcore.AdamW([b, s], lr=0.05, weight_decay=0.01)
    for _ in range(STEPS):
        grad = np.array(loss_and_grad(features, targets, b.tolist() + s.tolist())[1], np.float32)
        opt.step([grad[:1], grad[1:]])
    assert np.float32(bias).tolist() == b.tolist()  # %.9g round-trips float32
    assert np.float32(slopes).tolist() == s.tolist()
    assert final_loss == loss_and_grad(features, targets, b.tolist() + s.tolist())[0]
    assert final_loss < 1e-3


@pytest.mark.skipif(CC is None, reason="needs a C compiler")
@pytest.mark.parametrize("language", ["c99", "c11", "c++11", "c++17"])
def test_header_compiles_alone_without_warnings(language, tmp_path):
    compiler = CXX if language.startswith("c++") else CC
    if compiler is None:
        pytest.skip("needs a C++ compiler")
    source = tmp_path / ("use.cpp" if language.startswith("c++") else "use.c")
    source.write_text(
        "#include <adamcore/adamcore.h>\n"
        "int main(void) {\n"
        "    adamcore_hparams hp = adamcore_hparams_default();\n"
        "    hp.flags = ADAMCORE_DECOUPLED_WEIGHT_DECAY | ADAMCORE_AMSGRAD;\n"
        "    return adamcore_adam_step_f32(NULL, NULL, NULL, NULL, NULL, 0, &hp) != ADAMCORE_OK;\n"
        "}\n")
    run(compiler, f"-std={language}", "-Wall", "-Wextra", "-pedantic", "-Werror", "-fsyntax-only",
        f"-I{adamcore.get_include()}", source)


def test_cli_and_functions_print_the_installed_locations():
    out = run(sys.executable, "-m", "adamcore", "--include-dir", "--cmake-dir", "--library")
    assert out.splitlines() == [adamcore.get_include(), adamcore.get_cmake_dir(),
                                adamcore.get_library()]
    assert (Path(adamcore.get_include()) / "adamcore" / "adamcore.h").is_file()
    assert (Path(adamcore.get_cmake_dir()) / "adamcoreConfig.cmake").is_file()
    assert (Path(adamcore.get_cmake_dir()) / "adamcoreConfigVersion.cmake").is_file()
    assert Path(adamcore.get_library()).is_file()


def test_installed_cmake_files_hold_no_absolute_paths():
    """Relocatable: the package locates itself from its own directory."""
    package = str(Path(adamcore.__file__).resolve().parent)
    for path in Path(adamcore.get_cmake_dir()).glob("*.cmake"):
        text = path.read_text()
        assert package not in text and str(ROOT) not in text, path


@needs_toolchain
@needs_sources
def test_plain_cmake_install_is_relocatable_and_runs_the_examples(tmp_path):
    """`cmake -S . -B build && cmake --build build && cmake --install build --prefix X`, no
    Python; then the prefix is moved elsewhere and the examples build against it."""
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    # the CPU library only: this checks the install, and CUDA code would take minutes to compile
    run(CMAKE, "-S", ROOT, "-B", build, *GENERATOR, "-DCMAKE_BUILD_TYPE=Release",
        "-DADAMCORE_CUDA=OFF", "--no-warn-unused-cli")
    run(CMAKE, "--build", build, env=dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2"))
    run(CMAKE, "--install", build, "--prefix", prefix)
    libdirs = [d for d in ("lib", "lib64") if (prefix / d / "cmake" / "adamcore").is_dir()]
    assert len(libdirs) == 1, sorted(p.name for p in prefix.iterdir())
    assert (prefix / "include" / "adamcore" / "adamcore.h").is_file()
    assert not (prefix / "include" / "adamcore" / "core.hpp").exists()  # C++ internals stay in
    if sys.platform.startswith("linux"):
        major, minor, patch = adamcore.__version__.split(".")[:3]
        assert (prefix / libdirs[0] / f"libadamcore.so.{major}.{minor}.{patch}").is_file()
        assert (prefix / libdirs[0] / "libadamcore.so").is_symlink()

    moved = tmp_path / "elsewhere"
    prefix.rename(moved)
    examples = build_examples(tmp_path / "examples", moved / libdirs[0] / "cmake" / "adamcore")
    out = run(examples / "fit_least_squares")
    assert parse(out, r"c\d = (\S+)") == python_fit().tolist()


@needs_toolchain
@needs_sources
def test_plain_cmake_route_with_the_default_generator(tmp_path):
    """The route examples/c/README.md gives, word for word: `cmake -S . -B build && cmake --build
    build && cmake --install build --prefix X` with CMake's default generator and no options, so
    the CUDA backend is built wherever nvcc is (it once failed to configure with Unix Makefiles:
    "CUDA_ARCHITECTURES is empty for target adamcore"). Then the C examples against X."""
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    env = {k: v for k, v in os.environ.items() if k not in ("CMAKE_GENERATOR", "CUDAARCHS")}
    configured = run(CMAKE, "-S", ROOT, "-B", build, env=env)
    nvcc = shutil.which("nvcc") or (Path("/usr/local/cuda/bin/nvcc") if Path("/usr/local/cuda/bin/nvcc").exists() else None)
    cuda_on = "adamcore: CUDA backend ON" in configured
    if nvcc is not None and "static CUDA runtime" not in configured:
        assert cuda_on, configured  # nvcc is here: the default builds the backend
    run(CMAKE, "--build", build, env=dict(env, CMAKE_BUILD_PARALLEL_LEVEL="2"))
    run(CMAKE, "--install", build, "--prefix", prefix, env=env)
    (cmake_dir,) = [p.parent for p in prefix.glob("lib*/cmake/adamcore/adamcoreConfig.cmake")]
    examples = build_examples(tmp_path / "examples", cmake_dir)
    out = run(examples / "fit_least_squares")
    assert parse(out, r"c\d = (\S+)") == python_fit().tolist()
    if cuda_on:
        # the CUDA entry points are there, and say why they cannot run without a GPU
        import ctypes
        (library,) = [p for p in prefix.glob("lib*/libadamcore.so*") if not p.is_symlink()]
        lib = ctypes.CDLL(str(library))
        assert lib.adamcore_cuda_available() in (0, 1)
