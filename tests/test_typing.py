"""The static types of flows (tests/typing/flows.py) under mypy --strict and
basedpyright's strict mode: what must hold holds, what must be an error is one
(an ignore with no error under it fails both runs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASES = "tests/typing/flows.py"

pytestmark = pytest.mark.timeout(300)


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)


def test_mypy_strict_agrees_with_the_typing_cases():
    done = _run(
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--warn-unused-ignores",
        "--follow-imports=silent",
        "--no-incremental",
        CASES,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_pyright_strict_agrees_with_the_typing_cases():
    pyright = Path(sys.executable).with_name("basedpyright")
    done = _run(str(pyright), "--project", "pyproject.toml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 errors" in done.stdout
