"""`gateway campaign confirm | list`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.store import open_store


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "dkim").mkdir()
    path = tmp_path / "config.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path}/g.db"}}\n'
        f"mail_id: {{key_file: {tmp_path}/mailid.key}}\n"
        f"dkim: {{keys_dir: {tmp_path}/dkim, missing_key: unsigned}}\n"
        "policies:\n"
        "  - {name: customer-active, mode: enforce}\n"
    )
    store = open_store(f"sqlite:///{tmp_path}/g.db")
    store.add_customer("acme", status="active")
    store.add_customer("other", status="active")
    store.close()
    return path


def test_confirm_then_list(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = time.time()
    assert main(["-c", str(cfg), "campaign", "confirm", "acme", "spring-2026", "--by", "jane"]) == 0
    out = capsys.readouterr().out
    assert "campaign spring-2026 of customer acme confirmed by jane at " in out
    assert "UTC" in out
    assert main(["campaign", "confirm", "acme", "summer-2026", "--by", "tom", "-c", str(cfg)]) == 0
    capsys.readouterr()

    assert main(["-c", str(cfg), "campaign", "list", "acme"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CAMPAIGN", "CONFIRMED", "BY"]
    assert lines[1].split()[0] == "spring-2026" and lines[1].split()[-1] == "jane"
    assert lines[2].split()[0] == "summer-2026" and lines[2].split()[-1] == "tom"
    assert "UTC" in lines[1]

    assert main(["-c", str(cfg), "campaign", "list", "acme", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["campaign"], r["confirmed_by"]) for r in rows] == [
        ("spring-2026", "jane"),
        ("summer-2026", "tom"),
    ]
    assert before <= rows[0]["confirmed_ts"] <= time.time()
    assert rows[0]["confirmed_at"].endswith("UTC")

    store = open_store(f"sqlite:///{cfg.parent}/g.db")
    found = store.get_campaign(store.require_customer("acme").id, "spring-2026")
    assert found is not None and found.confirmed_by == "jane"
    # Per customer: the other customer has no confirmation for the same id.
    assert store.get_campaign(store.require_customer("other").id, "spring-2026") is None


def test_confirm_again_records_new_who(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["-c", str(cfg), "campaign", "confirm", "acme", "spring-2026", "--by", "jane"])
    capsys.readouterr()
    assert main(["-c", str(cfg), "campaign", "confirm", "acme", " spring-2026 ", "--by", "tom"]) == 0
    out = capsys.readouterr().out
    assert "confirmed again by tom" in out and "previously by jane" in out
    main(["-c", str(cfg), "campaign", "list", "acme", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert [(r["campaign"], r["confirmed_by"]) for r in rows] == [("spring-2026", "tom")]


def test_list_empty(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(cfg), "campaign", "list", "acme"]) == 0
    assert "no confirmed campaigns for customer acme" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["campaign", "confirm", "nobody", "c1", "--by", "jane"], "no customer named 'nobody'"),
        (["campaign", "list", "nobody"], "no customer named 'nobody'"),
        (["campaign", "confirm", "acme", "  ", "--by", "jane"], "campaign id is empty"),
        (["campaign", "confirm", "acme", "a\tb", "--by", "jane"], "control characters"),
        (["campaign", "confirm", "acme", "c1", "--by", " "], "--by needs a name"),
    ],
)
def test_errors(cfg: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert main(["-c", str(cfg), *argv]) == 1
    assert message in capsys.readouterr().err


def test_by_is_required(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["-c", str(cfg), "campaign", "confirm", "acme", "c1"])
    assert exc.value.code == 2
    assert "--by" in capsys.readouterr().err
