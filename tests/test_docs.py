"""The runnable examples of the extension pages: every ```python block, run as a user would.

A block whose first line is ``# <name>.py`` is saved as that file (the plugin); the other blocks
of the page run in order, in one fresh interpreter, in a temporary folder.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = ["extend-datasets.md", "extend-families.md", "extend-metrics.md"]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


@pytest.mark.parametrize("page", PAGES)
def test_extension_page_examples_run(page: str, tmp_path: Path) -> None:
    blocks = BLOCK.findall((DOCS / page).read_text())
    assert blocks, f"{page} has no python example"
    script = []
    for block in blocks:
        first = block.splitlines()[0].strip()
        if re.fullmatch(r"# [\w.-]+\.py", first):
            (tmp_path / first[2:]).write_text(block)
        else:
            script.append(block)
    (tmp_path / "example.py").write_text("\n".join(script))
    result = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
