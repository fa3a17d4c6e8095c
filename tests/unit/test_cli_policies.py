"""`gateway policies`: configured order/phases/mode, installed-but-not-configured, errors.

The built-in policies are being written in parallel; the tests use whatever discover() finds,
and add two test policies by patching the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import gateway.core.registry as registry
from gateway.cli import main
from gateway.core.policy import Policy
from gateway.core.transaction import Phase
from gateway.core.verdict import Verdict

INSTALLED = registry.discover()


class SenderCheck(Policy):
    name = "test-sender-check"
    phases = (Phase.MAIL, Phase.DATA)
    description = "a test policy in two phases"

    def check(self, txn, ctx):  # type: ignore[no-untyped-def]
        return Verdict.ok()


class BodyCheck(Policy):
    name = "test-body-check"
    phases = (Phase.DATA,)
    description = "a test policy at DATA"

    def check(self, txn, ctx):  # type: ignore[no-untyped-def]
        return Verdict.ok()


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> dict[str, type[Policy]]:
    found = {**INSTALLED, SenderCheck.name: SenderCheck, BodyCheck.name: BodyCheck}
    monkeypatch.setattr(registry, "discover", lambda extra=None: dict(found))
    return found


def write_config(tmp_path: Path, policies: str) -> Path:
    (tmp_path / "dkim").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path}/g.db"}}\n'
        f"mail_id: {{key_file: {tmp_path}/mailid.key}}\n"
        f"dkim: {{keys_dir: {tmp_path}/dkim, missing_key: unsigned}}\n"
        f"policies:{policies}\n"
    )
    return path


def test_lists_configured_then_unconfigured(
    tmp_path: Path, patched: dict[str, type[Policy]], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(
        tmp_path,
        """
  - {name: test-body-check, mode: monitor}
  - {name: customer-active, mode: enforce}
  - {name: test-sender-check, mode: "off"}""",
    )
    assert main(["-c", str(cfg), "policies"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ORDER", "NAME", "PHASES", "MODE", "DESCRIPTION"]
    assert lines[1].split()[:4] == ["1", "test-body-check", "data", "monitor"]
    assert lines[1].endswith("a test policy at DATA")
    assert lines[2].split()[:4] == ["2", "customer-active", "mail", "enforce"]
    assert lines[3].split()[:4] == ["3", "test-sender-check", "mail+data", "off"]
    unconfigured = sorted(set(patched) - {"test-body-check", "customer-active", "test-sender-check"})
    rest = lines[4 : 4 + len(unconfigured)]
    assert [line.split()[1] for line in rest] == unconfigured
    for line in rest:
        assert line.split()[0] == "-" and "not configured" in line
        assert patched[line.split()[1]].description in line


def test_json(tmp_path: Path, patched: dict[str, type[Policy]], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path,
        """
  - {name: customer-active, mode: monitor, timeout: 2}""",
    )
    assert main(["policies", "--json", "-c", str(cfg)]) == 0
    rows = json.loads(capsys.readouterr().out)
    first = rows[0]
    assert first["name"] == "customer-active" and first["order"] == 1
    assert first["mode"] == "monitor" and first["phases"] == ["mail"]
    assert first["timeout"] == 2 and first["configured"] is True
    assert first["description"]
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == set(patched)
    assert by_name["test-sender-check"]["configured"] is False
    assert by_name["test-sender-check"]["mode"] == "not configured"
    assert by_name["test-sender-check"]["phases"] == ["mail", "data"]


@pytest.mark.parametrize("name", sorted(INSTALLED))
def test_every_installed_policy_is_listed(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, " []")
    assert main(["-c", str(cfg), "policies"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.split()[1:2] == [name])
    assert "not configured" in line
    assert "no policies configured" in out


def test_unknown_policy_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path,
        """
  - {name: customer-active}
  - {name: no-such-policy}""",
    )
    assert main(["-c", str(cfg), "policies"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "unknown policy 'no-such-policy'" in captured.err
    assert "customer-active" in captured.err  # lists what is installed
    assert str(cfg) in captured.err


def test_bad_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(
        tmp_path,
        """
  - {name: customer-active, options: {colour: blue}}""",
    )
    assert main(["-c", str(cfg), "policies"]) == 1
    assert "policies.customer-active.options: colour: unknown key" in capsys.readouterr().err


def test_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "nope.yaml"), "policies"]) == 1
    assert "config file not found" in capsys.readouterr().err
