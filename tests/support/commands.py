"""The `gateway` console script installed beside the interpreter that runs the tests.

Found relative to `sys.executable` (never at a fixed path), so the tests work in a clone
anywhere: `.ci/setup test && .venv/bin/python -m pytest` puts both in the same `.venv/bin`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Not resolved: a virtualenv's python is a symlink to the system one, whose bin has no gateway.
INSTALLED_GATEWAY = str(Path(sys.executable).parent / "gateway")
