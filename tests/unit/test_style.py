"""The tree stays as `ruff format` writes it and as `ruff check` wants it (pyproject.toml), so
a change's diff is its change and not somebody's reformatting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).with_name("ruff")  # installed with the test extras beside python


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    assert RUFF.exists(), f"ruff is not installed beside {sys.executable} (.ci/setup test)"
    return subprocess.run([str(RUFF), *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_tree_is_ruff_formatted() -> None:
    done = ruff("format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_check_is_clean() -> None:
    done = ruff("check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_format_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = {  'a':1 }\n")
    done = subprocess.run(
        [str(RUFF), "format", "--check", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
