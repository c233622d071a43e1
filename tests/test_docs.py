"""The project's documentation (docs/): no citation of a document the repository lacks, no link
to a docs/ page (or a repository file) that does not exist, and every Python block marked
``<!-- runnable -->`` runs as written with NumPy only."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
RUNNABLE = "<!-- runnable -->"
# The old citation form of an outside contract; built from parts so this file does not cite it.
OLD_CITATION = "SPEC " + "\u00a7"
OUTSIDE_CONTRACT = "SPEC" + ".md"


def _repository_files() -> list[Path]:
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.split()
        return [ROOT / name for name in listed if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist)
        return [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]


def _text_files() -> list[Path]:
    files = []
    for path in _repository_files():
        try:
            files.append((path, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue  # binary files (the bench's PNG)
    return files


def test_the_docs_exist():
    for page in ("index", "update", "python-api", "errors", "performance", "c-abi",
                 "architecture"):
        assert (DOCS / f"{page}.md").is_file(), page


def test_no_citation_of_a_missing_document():
    bad = [f"{path.relative_to(ROOT)}:{n}" for path, text in _text_files()
           for n, line in enumerate(text.splitlines(), 1) if OLD_CITATION in line or OUTSIDE_CONTRACT in line]
    assert not bad, "cite docs/ pages instead: " + ", ".join(bad)


_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")
_DOCS_MENTION = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def test_markdown_links_resolve():
    bad = []
    for path, text in _text_files():
        if path.suffix != ".md":
            continue
        for target in _MD_LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses and anchors of the same page
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve()
            if not resolved.exists():
                bad.append(f"{path.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                bad.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, bad


def test_every_mentioned_docs_page_exists():
    bad = [f"{path.relative_to(ROOT)}: docs/{page}" for path, text in _text_files()
           for page in _DOCS_MENTION.findall(text) if not (DOCS / page).is_file()]
    assert not bad, bad


def _runnable_blocks():
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(re.escape(RUNNABLE) + r"\s*\n```python\n(.*?)```", text, re.S):
            line = text[:m.start()].count("\n") + 1
            blocks.append(pytest.param(m.group(1), id=f"{page.name}:{line}"))
    return blocks


def test_there_are_runnable_blocks():
    assert len(_runnable_blocks()) >= 5


@pytest.mark.parametrize("code", _runnable_blocks())
def test_runnable_block(code):
    # A fresh interpreter in which torch, jax and cupy cannot be imported: NumPy only.
    guard = ("import sys\n"
             "for name in ('torch', 'jax', 'cupy'):\n"
             "    sys.modules[name] = None\n")
    done = subprocess.run([sys.executable, "-c", guard + code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
