"""The CUDA backend's kernels and planning without a GPU: cuda/ (kernels.cu and its host code) compiled
as C++ over cuda/host_emulation.h (every thread of every block run in turn on the host), checked bit for bit
against the CPU core by tests/cuda_emulated.cpp, under AddressSanitizer where the compiler has it
(an emulated memcheck: a kernel reading or writing outside its arrays stops the run).

What it covers: the device table, tiles and their binary search, the vector, scalar and strided
paths, 64-bit offsets, hyperparameter sets by value and uploaded, the plan's grad handling
(moved, refilled, re-laid-out, misaligned), the finite check, the probes, every allocation freed,
the C ABI's CUDA entry points, and the no-device answers. What it cannot: real concurrency and the GPU's arithmetic, which
tests/test_cuda.py checks on a GPU.
"""

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA = ROOT / "cuda"
SRC = ROOT / "cpp" / "src"
SOURCES = {  # source -> optimization (the emulated kernels and the CPU kernels are the hot code)
    CUDA / "kernels.cu": "-O1",  # every kernel, compiled as C++ over the emulation
    CUDA / "blockwise.cu": "-O1",  # the 8-bit state kernel (the C ABI's CUDA entry links it)
    CUDA / "blockwise_step.cpp": "-O0",
    CUDA / "device.cpp": "-O0",
    CUDA / "memory.cpp": "-O0",
    CUDA / "table.cpp": "-O0",
    CUDA / "finite_check.cpp": "-O0",
    CUDA / "backend.cpp": "-O0",
    CUDA / "plan.cpp": "-O0",
    ROOT / "tests" / "cuda_emulated.cpp": "-O0",
    SRC / "validate.cpp": "-O0",
    SRC / "cpu_step.cpp": "-O1",
    SRC / "cpu_parallel.cpp": "-O0",
    SRC / "cpu_strided.cpp": "-O1",
    SRC / "simd_dispatch.cpp": "-O0",
    SRC / "cpu_kernels.cpp": "-O1",
    SRC / "c_api.cpp": "-O0",
    SRC / "c_api_cuda.cpp": "-O0",
    SRC / "c_api_blockwise.cpp": "-O0",
    SRC / "validate_blockwise.cpp": "-O0",
    SRC / "cpu_blockwise_step.cpp": "-O0",
    SRC / "cpu_blockwise.cpp": "-O1",
}


def _compiler():
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++") or shutil.which("clang++")


def _compiles(cxx, flags, tmp):
    probe = tmp / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    return subprocess.run([cxx, *flags, probe, "-o", tmp / "probe"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    cxx = _compiler()
    if cxx is None or not all(src.is_file() for src in SOURCES):
        pytest.skip("needs a C++ compiler and the source tree")
    tmp = tmp_path_factory.mktemp("cuda_emulated")
    flags = ["-std=c++17", "-g", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off",
             "-DADAMCORE_CUDA_EMULATION", "-DADAMCORE_WITH_CUDA", "-DADAMCORE_HAVE_BASELINE",
             "-DADAMCORE_LEVEL=baseline",
             f"-I{ROOT / 'cpp' / 'include'}", f"-I{ROOT / 'cpp' / 'src'}", f"-I{ROOT / 'cuda'}"]
    if _compiles(cxx, ["-fsanitize=address"], tmp):
        flags.append("-fsanitize=address")

    def compile_one(item):
        src, opt = item
        obj = tmp / (src.name + ".o")
        lang = ["-x", "c++"] if src.suffix == ".cu" else []
        subprocess.run([cxx, *flags, opt, *lang, "-c", src, "-o", obj], check=True)
        return obj

    with ThreadPoolExecutor(max_workers=2) as pool:
        objects = list(pool.map(compile_one, SOURCES.items()))
    exe = tmp / "cuda_emulated"
    subprocess.run([cxx, *flags, *objects, "-o", exe], check=True)
    return exe


@pytest.mark.parametrize("mode", ["", "nopools", "nodevice"],
                         ids=["memory-pools", "no-memory-pools", "no-device"])
def test_emulated_kernels_equal_cpu_core(harness, mode):
    out = subprocess.run([harness, *([mode] if mode else [])], capture_output=True, text=True,
                         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
