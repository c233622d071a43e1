"""python -m adamcore info."""

import subprocess
import sys

import adamcore


def test_info_reports_version_levels_and_threads():
    out = subprocess.run([sys.executable, "-m", "adamcore", "info"], check=True,
                         capture_output=True, text=True).stdout
    assert f"adamcore {adamcore.__version__}" in out
    assert f"simd: {adamcore.get_simd_level()} in use" in out
    for level in adamcore.compiled_simd_levels():
        assert level in out
    assert "threads:" in out


def test_simd_environment_variable_picks_the_level():
    code = "import adamcore; print(adamcore.get_simd_level())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, env={"ADAMCORE_SIMD": "baseline", "PATH": ""}).stdout
    assert out.strip() == "baseline"


def test_version_flag():
    done = subprocess.run([sys.executable, "-m", "adamcore", "--version"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"adamcore {adamcore.__version__}"
