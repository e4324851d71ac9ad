"""Lint is part of the test command, so CI enforces it (ruff: pyflakes, bugbear, asyncio rules)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("ruff") is None and not any(Path(p, "ruff").exists() for p in sys.path), reason="ruff not installed")
def test_ruff_reports_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "callcentre", "tests", "bench", "tools"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
