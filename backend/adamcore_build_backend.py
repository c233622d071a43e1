"""adamcore's build backend: scikit-build-core's, keeping the compiled objects from one isolated
`pip install .` to the next.

scikit-build-core reuses its build directory (tool.scikit-build.build-dir), but when the build
runs from a different scikit-build-core installation than last time, which pip's isolated build
environment is at every plain `pip install .` (a new temporary directory each time), it deletes
the CMake cache and the whole CMakeFiles/ folder, and the object files live in CMakeFiles/: every
install recompiles everything. The cached paths into the old, deleted environment must go; the
objects need not, since the build tool (Ninja, Make) recompiles exactly the sources whose command
line, headers or text changed. So before scikit-build-core looks, this backend does the part of
the reset that is needed: it deletes the CMake cache and every CMakeFiles/ entry except the
targets' object folders (*.dir), and the record that would make scikit-build-core delete the rest.
CMake then configures from scratch (compilers and packages found anew) and the build compiles
what changed. `-Ccmake.fresh=true` still rebuilds everything.

Every other hook is scikit-build-core's own.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from pathlib import Path

import scikit_build_core
from scikit_build_core import build as _skbuild
from scikit_build_core.build import *  # noqa: F401,F403 - the hooks not wrapped below

INFO = ".skbuild-info.json"  # scikit-build-core's record of the build directory's last build


def _build_dirs(config_settings, state: str) -> tuple[list[Path], bool]:
    """The build directories this build may use: build-dir from the config settings or from
    pyproject.toml, with its {placeholders} (e.g. {wheel_tag}) matched by any name; and whether
    that is exactly one directory (no placeholders)."""
    try:
        from scikit_build_core.settings.skbuild_read_settings import SettingsReader

        reader = SettingsReader.from_file("pyproject.toml", config_settings or {}, state=state)
        pattern = reader.settings.build_dir
    except Exception:  # noqa: BLE001 - a settings error is scikit-build-core's to report
        return [], True
    if not pattern:
        return [], True  # a temporary build directory: nothing to keep
    parts = _split_placeholders(pattern)
    for_glob = "".join("*" if part.startswith("{") else part for part in parts)
    found = [Path(p) for p in glob.glob(for_glob) if os.path.isfile(os.path.join(p, INFO))]
    return found, for_glob == pattern


def _split_placeholders(pattern: str) -> list[str]:
    parts, rest = [], pattern
    while "{" in rest and "}" in rest[rest.index("{"):]:
        start = rest.index("{")
        end = rest.index("}", start)
        parts += [rest[:start], rest[start:end + 1]]
        rest = rest[end + 1:]
    return parts + [rest]


def _forget_old_environment(build_dir: Path, exact: bool = True) -> None:
    """Resets build_dir's CMake state if its last build ran from another scikit-build-core
    installation, keeping the targets' object folders. When build_dir is only one of the
    directories a build-dir pattern matches (exact false), only if that installation is gone
    (a finished isolated environment): a directory another environment still builds in, e.g. a
    developer's --no-build-isolation one next to the wheel tag's, is left alone."""
    try:
        info = json.loads((build_dir / INFO).read_text(encoding="utf-8"))
        old = info["skbuild_path"]
        source = info["source_dir"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable or unknown: scikit-build-core decides
    here = Path(scikit_build_core.__file__).parent.resolve()
    if Path(old) == here or Path(source) != Path.cwd().resolve():
        return  # same environment (scikit-build-core keeps everything), or another source tree
    if not exact and Path(old).exists():
        return
    (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
    cmake_files = build_dir / "CMakeFiles"
    if cmake_files.is_dir():
        for entry in cmake_files.iterdir():
            if entry.is_dir() and entry.name.endswith(".dir"):
                continue  # a target's objects and their dependency files
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    (build_dir / INFO).unlink(missing_ok=True)
    print(f"adamcore: new build environment; {build_dir} configured afresh, its compiled objects "
          "kept (-Ccmake.fresh=true rebuilds everything)")


def _keep_objects(config_settings, state: str) -> None:
    build_dirs, exact = _build_dirs(config_settings, state)
    for build_dir in build_dirs:
        _forget_old_environment(build_dir, exact)


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _keep_objects(config_settings, "wheel")
    return _skbuild.build_wheel(wheel_directory, config_settings, metadata_directory)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    _keep_objects(config_settings, "editable")
    return _skbuild.build_editable(wheel_directory, config_settings, metadata_directory)
