"""`gateway consent import`: row checks (pure) and the command against a real SQLite store."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli.consent import check_rows, read_rows
from gateway.store import open_store

NOW = 1_800_000_000.0  # 2027-01-15

GOOD = (
    "anna@example.org,https://shop.example/newsletter,2026-03-01T10:00:00Z,203.0.113.7,"
    "2026-03-01T10:05:00Z,198.51.100.3"
)
HEADER = "email,source,subscribed_at,subscribed_ip,confirmed_at,confirmed_ip"


def rows_of(text: str) -> list:
    rows, _ = read_rows(text.encode(), "csv")
    return rows


def test_good_row():
    good, rejected = check_rows(rows_of(HEADER + "\n" + GOOD + "\n"), now=NOW)
    assert rejected == []
    [row] = good
    assert (row.address, row.subscribed_ip, row.confirmed_ip, row.line) == (
        "anna@example.org",
        "203.0.113.7",
        "198.51.100.3",
        2,
    )
    assert row.subscribed_at == 1772359200.0 and row.confirmed_at == 1772359500.0


@pytest.mark.parametrize(
    "line, expected",
    [
        ("anna@@example.org,s,2026-03-01T10:00:00Z,203.0.113.7,,", "bad email (email)"),
        ("anna example.org,s,2026-03-01T10:00:00Z,203.0.113.7,,", "bad email (email)"),
        ("anna@localhost,s,2026-03-01T10:00:00Z,203.0.113.7,,", "bad email (email)"),
        (",s,2026-03-01T10:00:00Z,203.0.113.7,,", "bad email (email): missing"),
        ("anna@example.org,s,yesterday,203.0.113.7,,", "bad timestamp (subscribed_at)"),
        (
            "anna@example.org,s,2031-01-01T00:00:00Z,203.0.113.7,,",
            "bad timestamp (subscribed_at): in the future",
        ),
        (
            "anna@example.org,s,2026-03-01T10:00:00Z,203.0.113.7,2026-02-30T10:00:00Z,198.51.100.3",
            "bad timestamp (confirmed_at)",
        ),
        (
            "anna@example.org,s,2026-03-01T10:00:00Z,203.0.113.7,2026-03-01T09:00:00Z,198.51.100.3",
            "confirmed before subscribed",
        ),
        ("anna@example.org,s,2026-03-01T10:00:00Z,203.0.113.999,,", "bad IP (subscribed_ip)"),
        (
            "anna@example.org,s,2026-03-01T10:00:00Z,203.0.113.7,2026-03-01T10:05:00Z,",
            "bad IP (confirmed_ip): missing",
        ),
        (
            "anna@example.org,s,2026-03-01T10:00:00Z,203.0.113.7,2026-03-01T10:05:00Z,nope",
            "bad IP (confirmed_ip)",
        ),
        ("anna@example.org,,2026-03-01T10:00:00Z,203.0.113.7,,", "missing source"),
    ],
)
def test_bad_rows_say_why(line, expected):
    good, rejected = check_rows(rows_of(HEADER + "\n" + line + "\n"), now=NOW)
    assert good == []
    [r] = rejected
    assert r.where == "line 2"
    assert any(p.startswith(expected) for p in r.problems), r.problems


def test_duplicates_in_the_file_and_in_the_store():
    text = (
        HEADER
        + "\n"
        + GOOD
        + "\n"
        + GOOD.replace("anna@", "ANNA@")
        + "\n"
        + GOOD.replace("anna@", "ben@")
        + "\n"
    )

    class Existing:
        status = "revoked"
        subscribed_at = NOW - 1000

    good, rejected = check_rows(rows_of(text), existing={"ben@example.org": Existing()}, now=NOW)
    assert [g.address for g in good] == ["anna@example.org"]
    assert [(r.where, r.problems) for r in rejected] == [
        ("line 3", ["duplicate: the same address as line 2"]),
        (
            "line 4",
            ["duplicate: already recorded for this customer (revoked, subscribed 2027-01-15T07:43:20Z)"],
        ),
    ]


def test_semicolons_bom_unix_times_and_pending_rows():
    text = (
        "\ufeffE-Mail;Source;Subscribed At;Subscribed IP;Confirmed At;Confirmed IP\n"
        "anna@example.org;form;1772359200;2001:db8::1;;\n"
    )
    good, rejected = check_rows(rows_of(text), now=NOW)
    assert rejected == []
    assert (good[0].subscribed_ip, good[0].confirmed_at) == ("2001:db8::1", None)


def test_default_source():
    text = "email,subscribed_at,subscribed_ip\nanna@example.org,2026-03-01 10:00:00,192.0.2.1\n"
    good, rejected = check_rows(rows_of(text), default_source="batch-7", now=NOW)
    assert rejected == [] and good[0].source == "batch-7"


def test_json_rows():
    data = json.dumps(
        {
            "records": [
                {
                    "email": "anna@example.org",
                    "source": "form",
                    "subscribed_at": 1772359200,
                    "subscribed_ip": "192.0.2.1",
                    "confirmed_at": "2026-03-01T11:05:00+01:00",
                    "confirmed_ip": "192.0.2.2",
                },
                "not an object",
            ]
        }
    ).encode()
    rows, _ = read_rows(data, "json")
    good, rejected = check_rows(rows, now=NOW)
    assert [g.address for g in good] == ["anna@example.org"]
    assert good[0].confirmed_at - good[0].subscribed_at == 300  # 11:05+01:00 is 10:05Z
    assert [r.where for r in rejected] == ["record 2"]


def test_json_offset_is_respected():
    data = json.dumps(
        [
            {
                "email": "anna@example.org",
                "source": "form",
                "subscribed_at": "2026-03-01T10:00:00+01:00",
                "subscribed_ip": "192.0.2.1",
                "confirmed_at": "2026-03-01T09:30:00Z",
                "confirmed_ip": "192.0.2.2",
            }
        ]
    )
    rows, _ = read_rows(data.encode(), "json")
    good, rejected = check_rows(rows, now=NOW)
    assert rejected == [] and good[0].confirmed_at - good[0].subscribed_at == 1800


# -- the command --------------------------------------------------------------------------------


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args, "-c", str(cfg)], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": f"sqlite:///{tmp_path / 'gw.db'}"}}))
    store = open_store(f"sqlite:///{tmp_path / 'gw.db'}")
    store.add_customer("acme")
    store.close()
    return path


def test_import_command_reports_bad_rows_and_imports_the_good(cfg, tmp_path):
    data = tmp_path / "subscribers.csv"
    data.write_text(
        "\n".join(
            [
                HEADER,
                GOOD,
                "bad-address,form,2026-03-01T10:00:00Z,203.0.113.7,2026-03-01T10:05:00Z,198.51.100.3",
                "ben@example.org,form,2026-03-01T10:00:00Z,203.0.113.7,2026-03-01T09:05:00Z,198.51.100.3",
                "cleo@example.org,form,2026-03-01T10:00:00Z,999.1.1.1,,",
                "dora@example.org,form,01/03/2026,203.0.113.7,,",
                GOOD,
                "emil@example.org,form,2026-03-01T10:00:00Z,203.0.113.7,,",
            ]
        )
        + "\n"
    )
    rejects = tmp_path / "rejects.csv"
    result = _cli(cfg, "consent", "import", str(data), "--customer", "acme", "--rejects", str(rejects))
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "8 rows" not in out and "7 rows for acme: imported 2, rejected 5" in out
    assert "line 3 (bad-address): bad email (email): not an email address" in out
    assert "line 4 (ben@example.org): confirmed before subscribed" in out
    assert "line 5 (cleo@example.org): bad IP (subscribed_ip)" in out
    assert "line 6 (dora@example.org): bad timestamp (subscribed_at)" in out
    assert "line 7 (anna@example.org): duplicate: the same address as line 2" in out
    with rejects.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["where"] for r in rows] == ["line 3", "line 4", "line 5", "line 6", "line 7"]
    assert all(r["problem"] for r in rows)

    show = _cli(cfg, "consent", "show", "Anna@Example.org", "--customer", "acme")
    assert show.returncode == 0, show.stderr
    assert "confirmed:" in show.stdout and "198.51.100.3" in show.stdout
    assert "policy consent:        passes" in show.stdout
    pending = _cli(cfg, "consent", "show", "emil@example.org", "--customer", "acme", "--json")
    assert json.loads(pending.stdout)["consent"]["status"] == "pending"

    # The same file again: everything is a duplicate now, nothing changes.
    again = _cli(cfg, "consent", "import", str(data), "--customer", "acme", "--json")
    report = json.loads(again.stdout)
    assert report["imported"] == 0 and len(report["rejected"]) == 7
    assert "already recorded for this customer (confirmed" in report["rejected"][0]["problems"][0]


def test_import_dry_run_and_missing_columns(cfg, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text(HEADER + "\n" + GOOD + "\n")
    dry = _cli(cfg, "consent", "import", str(data), "--customer", "acme", "--dry-run")
    assert dry.returncode == 0 and "would import 1, rejected 0" in dry.stdout
    assert _cli(cfg, "consent", "show", "anna@example.org", "--customer", "acme").returncode == 1
    data.write_text("email,source\nanna@example.org,form\n")
    bad = _cli(cfg, "consent", "import", str(data), "--customer", "acme")
    assert bad.returncode == 1 and "missing columns: subscribed_at, subscribed_ip" in bad.stderr


def test_export_for_the_complaints_office(cfg, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text(HEADER + "\n" + GOOD + "\n")
    assert _cli(cfg, "consent", "import", str(data), "--customer", "acme").returncode == 0
    text = _cli(cfg, "consent", "export", "anna@example.org", "--customer", "acme")
    assert text.returncode == 0, text.stderr
    for expected in (
        "Double opt-in evidence",
        "address:               anna@example.org",
        "subscribed:            2026-03-01T10:00:00Z",
        "from IP:             203.0.113.7",
        "confirmed:             2026-03-01T10:05:00Z",
        "revoked:               no",
        "source https://shop.example/newsletter",
        "import",
    ):
        assert expected in text.stdout, (expected, text.stdout)
    as_json = json.loads(
        _cli(cfg, "consent", "export", "anna@example.org", "--customer", "acme", "--json").stdout
    )
    assert as_json["consent"]["confirmed_ip"] == "198.51.100.3"
    assert as_json["history"][0]["event"] == "import"
    missing = _cli(cfg, "consent", "export", "zoe@example.org", "--customer", "acme")
    assert missing.returncode == 1 and "no consent record" in missing.stderr
