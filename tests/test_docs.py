"""The code in README.md and docs/*.md runs.

The ```python blocks of each file run together, in order, in a fresh interpreter
(as a script, so functions defined in the docs work in worker processes).  Blocks
that are not meant to run use another fence: ```text, ```sh.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_PAGES = [p for p in PAGES if FENCE.search(p.read_text())]


def python_blocks(text):
    """(line number of the block's first line, code) for every python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_fence_pattern_finds_blocks_in_order():
    text = "intro\n```python\na = 1\n```\n```text\nnot code\n```\n```python\nb = a\n```\n"
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a\n")]


def test_docs_exist():
    names = {p.name for p in PAGES}
    assert {"README.md", "guide.md", "explicit-api.md", "migrating-from-minipipe.md",
            "diagrams.md"} <= names


@pytest.mark.parametrize("page", CODE_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(page, tmp_path):
    blocks = python_blocks(page.read_text())
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text("\n".join(f"# {page.name}, line {line}\n{code}" for line, code in blocks))
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("FLOWDSL_START_METHOD", None)  # the blocks run as a script, as written
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=55)
    assert result.returncode == 0, (
        f"the python blocks of {page.name} failed:\n{result.stdout}\n{result.stderr}")
