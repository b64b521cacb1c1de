"""The packages stay clean under ruff and mypy (convention 10 of the design card)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_clean() -> None:
    res = _run(
        sys.executable, "-m", "ruff", "check", "stream", "model", "translate_bridge", "tests", "benchmarks", "scripts"
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_clean() -> None:
    res = _run(sys.executable, "-m", "mypy")
    assert res.returncode == 0, res.stdout + res.stderr
