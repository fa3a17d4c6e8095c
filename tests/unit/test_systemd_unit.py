"""systemd/*.service as `systemd-analyze verify` sees it (Debian package systemd, installed by
`.ci/setup test`): no unknown key, no value it would ignore, an ExecStart that exists.

verify exits 0 even when it ignores a misspelt key or a bad value (it only warns), so the test
wants it silent. The unit's ExecStart names the README's install path (/opt/gateway); the copy
that is verified names the gateway installed beside the running interpreter instead, the one
line that differs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.config import Limits
from tests.support.commands import INSTALLED_GATEWAY

UNITS = sorted((Path(__file__).resolve().parents[2] / "systemd").glob("*.service"))
INSTALL_PATH = "/opt/gateway/.venv/bin/gateway"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze not found: install Debian's systemd package (.ci/setup test)"
    return found


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), "verify", str(unit)], capture_output=True, text=True, timeout=120
    )


def installed_copy(unit: Path, directory: Path) -> Path:
    text = unit.read_text()
    assert f"ExecStart={INSTALL_PATH} " in text
    copy = directory / unit.name
    copy.write_text(text.replace(f"ExecStart={INSTALL_PATH} ", f"ExecStart={INSTALLED_GATEWAY} "))
    return copy


def test_there_are_units_to_verify() -> None:
    assert [u.name for u in UNITS] == ["gateway.service"]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_without_a_warning(unit: Path, tmp_path: Path) -> None:
    done = verify(installed_copy(unit, tmp_path))
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize(
    "damage, warning",
    [
        (("Type=exec", "Type=execc"), "Failed to parse service type"),
        (("UMask=0027", "UMsk=0027"), "Unknown key 'UMsk'"),
        (("ProtectHome=true", "ProtectHome=maybe"), "Failed to parse protect home value"),
    ],
)
def test_verify_catches_a_damaged_unit(tmp_path: Path, damage: tuple[str, str], warning: str) -> None:
    # What the check above relies on: this systemd-analyze reports such slips at all.
    [unit] = [u for u in UNITS if u.name == "gateway.service"]
    copy = installed_copy(unit, tmp_path)
    assert damage[0] in copy.read_text()
    copy.write_text(copy.read_text().replace(damage[0], damage[1]))
    done = verify(copy)
    assert warning in done.stdout + done.stderr


def test_stop_timeout_leaves_room_for_the_shutdown_grace() -> None:
    # SIGTERM lets in-flight mail finish for limits.shutdown_grace; systemd must not SIGKILL first.
    text = (Path(__file__).resolve().parents[2] / "systemd" / "gateway.service").read_text()
    timeout = re.search(r"^TimeoutStopSec=(\d+)$", text, re.M)
    assert timeout and int(timeout.group(1)) > Limits().shutdown_grace
    assert re.search(r"^ExecReload=/bin/kill -HUP \$MAINPID$", text, re.M)
    assert re.search(r"^KillSignal=SIGTERM$", text, re.M)
