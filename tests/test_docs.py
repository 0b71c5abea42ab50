"""The code in README.md and docs/*.md runs, and prints what the docs show.

The ```python blocks of each file run together, in order, in a fresh interpreter
(as a script, so functions defined in the docs work in worker processes).  Blocks
that are not meant to run use another fence: ```text, ```sh.

A ```output block right after a python block is what that block prints, compared
line by line (trailing spaces and blank lines aside).  Measured numbers differ from run to run,
so in an output block every number matches any number; a line that is only
``...`` matches any lines, and ``...`` inside a line any text.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(
    r"^```python[ \t]*\n(.*?)^```[ \t]*$"
    r"(?:\s*^```output[ \t]*\n(.*?)^```[ \t]*$)?",
    re.MULTILINE | re.DOTALL,
)
CODE_PAGES = [p for p in PAGES if FENCE.search(p.read_text())]
MARK = "\x1eblock "  # printed before each block, to split what the script printed
NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:e-?\d+)?")  # 3, 0.041, 1,000, 2e-05


def python_blocks(text):
    """(line number of the block's first line, code) for every python block."""
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def shown_outputs(text):
    """{index of a python block: the output the docs show for it}."""
    return {i: m.group(2) for i, m in enumerate(FENCE.finditer(text)) if m.group(2) is not None}


def output_pattern(shown):
    """A regular expression for what an output block allows."""
    lines = []
    for line in shown.rstrip("\n").split("\n"):
        if line.strip() == "...":
            lines.append(r"(?:[^\n]*\n)*?")
        else:
            pieces = (_any_number(p) for p in line.rstrip().split("..."))
            lines.append(".*?".join(pieces) + r"[ \t]*\n")
    return re.compile("".join(lines) + r"\Z")


def _any_number(text):
    """``text`` as a pattern in which any number matches a number, and a run of
    spaces any run of spaces (columns of figures shift as their widths change)."""
    out = []
    for token in re.split(f"({NUMBER.pattern}|[ \\t]+)", text):
        if not token:
            continue
        out.append(
            r"[ \t]+"
            if token.isspace()
            else NUMBER.pattern
            if NUMBER.fullmatch(token)
            else re.escape(token)
        )
    return "".join(out)


def printed_by_block(stdout, count):
    """What each of ``count`` blocks printed, split at the marks."""
    pieces = stdout.split(MARK)[1:]
    assert len(pieces) == count, "a block's output is missing: the script stopped early"
    return [p.split("\n", 1)[1] if "\n" in p else "" for p in pieces]


def test_fence_pattern_finds_blocks_in_order():
    text = (
        "intro\n```python\na = 1\n```\n```text\nnot code\n```\n```python\nb = a\n```\n"
        "\n```output\n2\n```\n"
    )
    assert python_blocks(text) == [(3, "a = 1\n"), (9, "b = a\n")]
    assert shown_outputs(text) == {1: "2\n"}


@pytest.mark.parametrize(
    "shown, printed, same",
    [
        ("a 1\n", "a 1\n", True),
        ("a 1\n", "a 2.75   \n", True),  # numbers vary, trailing space does not count
        ("a    1 b\n", "a 1234 b\n", True),  # and so do the widths of columns
        ("a 1\n", "b 1\n", False),
        ("a 1\n", "a 1\nextra\n", False),
        ("head\n...\ntail\n", "head\nx\ny\ntail\n", True),
        ("head\n...\ntail\n", "head\ntail\n", True),
        ("x = ... s\n", "x = anything at all s\n", True),
        ("busy %  wait in s\n", "busy %\n", False),  # a missing column is noticed
    ],
)
def test_output_blocks_allow_what_varies_and_nothing_else(shown, printed, same):
    assert bool(output_pattern(shown).match(printed)) is same


def test_docs_exist():
    names = {p.name for p in PAGES}
    assert {
        "README.md",
        "guide.md",
        "explicit-api.md",
        "migrating-from-minipipe.md",
        "diagrams.md",
    } <= names


@pytest.mark.parametrize("page", CODE_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(page, tmp_path):
    text = page.read_text()
    blocks = python_blocks(text)
    script = tmp_path / f"{page.stem}_blocks.py"
    script.write_text(
        "\n".join(
            f"# {page.name}, line {line}\nprint({MARK!r} + {str(i)!r}, flush=True)\n{code}"
            for i, (line, code) in enumerate(blocks)
        )
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    env.pop("FLOWDSL_START_METHOD", None)  # the blocks run as a script, as written
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert result.returncode == 0, (
        f"the python blocks of {page.name} failed:\n{result.stdout}\n{result.stderr}"
    )
    printed = printed_by_block(result.stdout, len(blocks))
    for i, shown in shown_outputs(text).items():
        assert output_pattern(shown).match(printed[i].rstrip() + "\n"), (
            f"{page.name}, line {blocks[i][0]}: the block prints\n{printed[i]}\n"
            f"where the docs show\n{shown}"
        )
