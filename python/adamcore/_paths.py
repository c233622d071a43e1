"""Where the wheel keeps adamcore's C ABI: header, shared library and CMake package (docs/c-abi.md).

As nanobind and pybind11 do, so that a C or C++ build can find them::

    cmake -S . -B build -Dadamcore_DIR="$(python -m adamcore --cmake-dir)"
    cc fit.c -I"$(python -m adamcore --include-dir)" "$(python -m adamcore --library)"
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _existing(path: Path, what: str) -> str:
    if not path.exists():
        raise FileNotFoundError(
            f"adamcore's {what} is not at {path}: this adamcore was not installed from a wheel "
            "(pip install .), which ships the C ABI inside the package")
    return str(path)


def get_include() -> str:
    """The directory to add to the include path for ``#include <adamcore/adamcore.h>``."""
    return _existing(_PACKAGE / "include", "include directory")


def get_cmake_dir() -> str:
    """The directory of ``adamcoreConfig.cmake``: pass it as ``adamcore_DIR`` (or put it on
    ``CMAKE_PREFIX_PATH``) so that ``find_package(adamcore CONFIG REQUIRED)`` gives the target
    ``adamcore::adamcore``."""
    return _existing(_PACKAGE / "lib" / "cmake" / "adamcore", "CMake package")


def get_library() -> str:
    """The path of the shared library libadamcore, for FFI (ctypes, Julia's ccall, ...) or to link
    without CMake."""
    name = {"win32": "adamcore.dll", "darwin": "libadamcore.dylib"}.get(sys.platform,
                                                                         "libadamcore.so")
    return _existing(_PACKAGE / "lib" / name, "shared library")
