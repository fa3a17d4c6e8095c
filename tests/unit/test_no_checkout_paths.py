"""No tracked file may name an absolute path of a development checkout: a test that runs
`<checkout>/.venv/bin/gateway` passes on the machine that wrote it and fails in every other
clone (CI's included). Scans `git ls-files` of the checkout these tests run from."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Spelled in two pieces so that this file does not match itself.
_WORK = "/" + "work/"
# An absolute path under the developers' work directory (its main checkout, each worktree):
# not preceded by a word character, a dot or a slash, so `../work/x` and URLs do not count.
WORK_PATH = re.compile(r"(?<![\w./-])" + re.escape(_WORK) + r"[\w.-]+")


def tracked_files(root: Path) -> list[Path]:
    done = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z"], capture_output=True, timeout=60, check=True
    )
    return [root / name for name in done.stdout.decode().split("\0") if name]


def absolute(path: str) -> re.Pattern[str]:
    """`path` where it starts an absolute path (not inside a longer path or a URL: a checkout
    at /src must not flag /usr/src)."""
    return re.compile(r"(?<![\w./-])" + re.escape(path) + r"(?![\w.-])")


def offending_lines(path: Path, checkout: str) -> list[str]:
    """`path:line: text` for each line naming `checkout` or a path under the work directory."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError):  # deleted in the work tree, or a submodule
        return []
    checkout_path = absolute(checkout)
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if checkout_path.search(line) or WORK_PATH.search(line):
            found.append(f"{path}:{number}: {line.strip()[:160]}")
    return found


def test_the_scan_sees_the_whole_checkout() -> None:
    files = tracked_files(ROOT)
    names = {str(f.relative_to(ROOT)) for f in files}
    # Not vacuous: the scan covers this file, the tests, the package and the CI scripts.
    assert {
        "pyproject.toml",
        ".ci/run",
        "tests/unit/test_no_checkout_paths.py",
        "tests/unit/test_cli_check.py",
        "gateway/cli/__init__.py",
    } <= names
    assert len(files) > 100


@pytest.mark.parametrize(
    "line, found",
    [
        ('GATEWAY = "{root}/.venv/bin/gateway"', True),
        ('GATEWAY = "{work}main/.venv/bin/gateway"', True),
        ("cd {work}wt/fresh && pytest", True),
        ("see ../shared/DESIGN.md", False),
        ("https://example.org/work/items", False),
        ("GATEWAY = str(Path(sys.executable).parent / 'gateway')", False),
    ],
)
def test_the_scan_finds_a_planted_path(tmp_path: Path, line: str, found: bool) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("x = 1\n" + line.format(root=ROOT, work=_WORK) + "\n")
    assert bool(offending_lines(planted, str(ROOT))) is found


@pytest.mark.parametrize(
    "line, found",
    [
        ('cmd = "/src/.venv/bin/gateway"', True),
        ("cd /src && pytest", True),
        ("see /usr/src/linux, https://example.org/src/x and /src-old/x", False),
    ],
)
def test_a_short_checkout_path_matches_only_itself(tmp_path: Path, line: str, found: bool) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(line + "\n")
    assert bool(offending_lines(planted, "/src")) is found


def test_no_tracked_file_names_a_checkout_path() -> None:
    offending = [hit for path in tracked_files(ROOT) for hit in offending_lines(path, str(ROOT))]
    assert not offending, "absolute checkout paths in tracked files:\n" + "\n".join(offending)
