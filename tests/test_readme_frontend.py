"""The README's snippets for the torch drop-in, JAX, schedules and clipping run as written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTIONS = {"## torch.optim drop-in": "torch", "## JAX and other immutable arrays": "jax",
            # needs the XLA FFI module, built only where jax was installed before adamcore
            "## JAX inside jit: adamcore.optax": "adamcore._jax_ffi",
            "## Schedules and gradient clipping": None}


def _snippet(heading):
    text = README.read_text()
    body = text[text.index(heading) + len(heading):]
    body = body[:body.find("\n## ")] if "\n## " in body else body
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


@pytest.mark.parametrize("heading", SECTIONS)
def test_snippet_runs(heading):
    needs = SECTIONS[heading]
    if needs:
        pytest.importorskip(needs)
        if needs == "adamcore._jax_ffi":
            pytest.importorskip("optax")
    done = subprocess.run([sys.executable, "-c", _snippet(heading)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
