"""The CLI of the feedback work: `gateway suppression`, `gateway feedback classify | ingest`,
`gateway abuse lookup | report` (in-process against a real store, and once end to end through
the running gateway as a separate process)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.cli import main
from tests.unit.test_intake_support import (
    ABUSE,
    BOUNCE_DOMAIN,
    FBL,
    IntakeEnv,
    arf,
    dsn,
    forward,
)

ANNA = "anna@example.org"
IMPRINT = {
    "company": "Shop",
    "legal_form": "GmbH",
    "representative": "Jane Doe",
    "street": "Hauptstraße 1",
    "postcode": "50667",
    "city": "Köln",
    "email": "info@customer.example",
}


@pytest.fixture
def cli(tmp_path):
    """(env, run): an IntakeEnv and `run(*args) -> (exit code, stdout, stderr)` with -c set."""
    env = IntakeEnv(tmp_path)
    config = {
        "store": {"url": f"sqlite:///{tmp_path / 'intake.db'}"},
        "mail_id": {"key_file": str(tmp_path / "mailid.key")},
        "bounce_domain": BOUNCE_DOMAIN,
        "feedback": {"fbl_address": FBL},
        "feedback_intake": {"abuse_addresses": [ABUSE]},
        "logging": {"file": str(tmp_path / "gateway.log")},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    def run(*args: str, stdin: bytes | None = None):
        out, err = io.StringIO(), io.StringIO()
        old = sys.stdout, sys.stderr, sys.stdin
        sys.stdout, sys.stderr = out, err
        if stdin is not None:
            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            code = main([*args, "-c", str(path)])
        finally:
            sys.stdout, sys.stderr, sys.stdin = old
        return code, out.getvalue(), err.getvalue()

    yield env, run
    env.store.close()


# -- gateway suppression -----------------------------------------------------------------------


def test_suppression_add_list_remove_export(cli, tmp_path):
    env, run = cli
    env.store.add_customer("other", status="active")
    code, out, _ = run(
        "suppression", "add", "Anna@Example.org", "ben@example.org", "--global", "--note", "ticket 4711"
    )
    assert code == 0 and "anna@example.org suppressed for everyone (manual)" in out
    code, out, _ = run(
        "suppression", "add", "carl@example.org", "--customer", "acme", "--reason", "unsubscribe"
    )
    assert code == 0 and "carl@example.org suppressed for acme (unsubscribe)" in out
    code, out, _ = run("suppression", "add", "anna@example.org", "--global")
    assert "already suppressed for everyone" in out
    code, _, err = run("suppression", "add", "dora@example.org")
    assert code == 1 and "--customer NAME or --global" in err
    code, _, err = run("suppression", "add", "dora@example.org", "--customer", "ghost")
    assert code == 1 and "no customer named 'ghost'" in err

    code, out, _ = run("suppression", "list")
    assert code == 0 and "3 suppressions" in out
    assert "anna@example.org" in out and "ticket 4711" in out and "acme" in out
    code, out, _ = run("suppression", "list", "--customer", "acme", "--json")
    rows = json.loads(out)
    assert [(r["address"], r["scope"], r["customer"], r["reason"]) for r in rows] == [
        ("carl@example.org", "customer", "acme", "unsubscribe")
    ]
    assert rows[0]["created_by"].startswith("cli")
    code, out, _ = run("suppression", "list", "--global", "--address", "BEN@example.org")
    assert "ben@example.org" in out and "1 suppression" in out

    code, out, _ = run("suppression", "export")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == [
        "address",
        "scope",
        "customer",
        "reason",
        "created_at",
        "mail_id",
        "detail",
        "created_by",
    ]
    assert {(r["address"], r["scope"], r["customer"]) for r in rows} == {
        ("anna@example.org", "global", ""),
        ("ben@example.org", "global", ""),
        ("carl@example.org", "customer", "acme"),
    }
    assert all(r["created_at"].endswith("Z") for r in rows)
    target = tmp_path / "out.csv"
    code, _, err = run("suppression", "export", "--customer", "acme", "-o", str(target))
    assert code == 0 and "1 suppressions written" in err
    assert target.read_text().splitlines()[1].startswith("carl@example.org,customer,acme,")

    code, out, _ = run("suppression", "remove", "anna@example.org", "--global")
    assert code == 0 and "anna@example.org no longer suppressed (global, was manual)" in out
    code, _, err = run("suppression", "remove", "anna@example.org", "--global")
    assert code == 1 and "no such suppression" in err
    code, _, err = run("suppression", "remove", "carl@example.org")
    assert code == 1 and "--all" in err
    code, out, _ = run("suppression", "remove", "carl@example.org", "--all")
    assert code == 0 and "(acme, was unsubscribe)" in out
    code, out, _ = run("suppression", "list")
    assert "1 suppression" in out
    history = env.store.suppression_history("anna@example.org")
    assert [h.action for h in history] == ["added", "removed"]


# -- gateway feedback --------------------------------------------------------------------------


def test_classify_json_has_exactly_the_contract_keys_and_changes_nothing(cli, tmp_path):
    env, run = cli
    mail_id = env.send(ANNA)
    files = {
        "hard.eml": dsn(mail_id, ANNA),
        "forged.eml": arf(env.forged(ANNA), ANNA),
        "noid.eml": dsn(None, "x@example.org"),
    }
    for name, raw in files.items():
        (tmp_path / name).write_bytes(raw)
    code, out, _ = run("feedback", "classify", "--json", *(str(tmp_path / n) for n in files))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [set(d) for d in lines] == [
        {"file", "kind", "recipients", "class", "status", "reason", "mail_id", "mail_id_valid"}
    ] * 3
    hard, forged, noid = lines
    assert (hard["kind"], hard["class"], hard["status"], hard["recipients"]) == (
        "bounce",
        "hard",
        "5.1.1",
        [ANNA],
    )
    assert (hard["mail_id"], hard["mail_id_valid"]) == (mail_id, True)
    assert (forged["kind"], forged["class"], forged["mail_id_valid"]) == ("complaint", "none", False)
    assert (noid["mail_id"], noid["mail_id_valid"]) == (None, None)
    assert env.store.list_feedback_events() == [] and env.store.list_suppressions() == []

    code, out, _ = run("feedback", "classify", str(tmp_path / "forged.eml"))
    assert "kind:        complaint" in out and "FORGED" in out


def test_ingest_files_and_stdin(cli, tmp_path):
    env, run = cli
    mail_id = env.send(ANNA)
    (tmp_path / "bounce.eml").write_bytes(dsn(mail_id, ANNA))
    code, out, _ = run("feedback", "ingest", str(tmp_path / "bounce.eml"))
    assert code == 0 and "bounce (hard, 5.1.1)" in out and "suppressed for everyone" in out
    assert env.store.find_suppression(None, ANNA).mail_id == mail_id

    other = env.send("ben@example.org")
    code, out, _ = run(
        "feedback",
        "ingest",
        "--json",
        "--sender",
        "",
        "--recipient",
        f"m-{other}@{BOUNCE_DOMAIN}",
        "-",
        stdin=dsn(other, "ben@example.org"),
    )
    assert code == 0
    result = json.loads(out)
    assert result["mail_id"] == other and result["mail_id_valid"] is True
    assert result["customer"] == "acme" and "suppressed" in result["action"]
    event = env.store.get_feedback_event(result["event"])
    assert event.source == "ingest" and event.envelope_to == [f"m-{other}@{BOUNCE_DOMAIN}"]
    # the events are in the gateway's log, under the mail ID
    log = (tmp_path / "gateway.log").read_text()
    assert f"mail_id={other}" in log and "event=suppression" in log

    code, out, _ = run("feedback", "list")
    assert code == 0 and len(out.splitlines()) == 2 and "hard-bounce" in out
    code, out, _ = run("feedback", "show", str(event.id), "--json")
    assert json.loads(out)["details"]["customer"] == "acme"


def test_ingest_applies_the_same_verification_as_the_listener(cli, tmp_path):
    """`gateway feedback ingest` (the abuse team, a pipe from an MTA) is as open to forged
    input as the listener: a bounce without a verifying ID, or for another recipient than the
    ID's, changes nothing and says why; a decision by hand is `gateway suppression add`."""
    env, run = cli
    mail_id = env.send(ANNA)
    (tmp_path / "no-id.eml").write_bytes(dsn(None, ANNA))
    (tmp_path / "mismatch.eml").write_bytes(dsn(mail_id, "victim@example.org"))
    code, out, _ = run("feedback", "ingest", str(tmp_path / "no-id.eml"), str(tmp_path / "mismatch.eml"))
    assert code == 0
    assert "action: not acted on (unverified: no-id)" in out
    assert "action: not acted on (unverified: recipient-mismatch)" in out
    assert env.store.list_suppressions() == []
    log = (tmp_path / "gateway.log").read_text()
    assert "unverified=no-id" in log and "unverified=recipient-mismatch" in log


# -- gateway abuse -----------------------------------------------------------------------------


def test_abuse_lookup_tells_the_whole_story(cli):
    env, run = cli
    env.store.set_imprint("acme", IMPRINT)
    mail_id = env.send(ANNA)
    env.ingest(arf(mail_id, ANNA))
    code, out, _ = run("abuse", "lookup", mail_id)
    assert code == 0
    assert f"mail ID:     {mail_id}" in out and "status:      genuine" in out
    assert "customer:    acme (id 1, active)" in out
    assert "Shop GmbH" in out and "Hauptstraße 1, 50667 Köln" in out
    assert "email: info@customer.example" in out
    assert "campaign:    autumn-2026: guidelines confirmed by jane@shop.example at " in out
    assert f"recipient:   {ANNA}" in out and "does not match" not in out
    assert "relay:       accepted: 250 2.0.0 Ok: queued as Q1 (queue id Q1)" in out
    assert "suppression" in out and f"{ANNA} is not suppressed" in out  # policy decisions
    assert "consent:     no consent records" in out
    assert "complaint (abuse)" in out and "suppressed for this customer (complaint)" in out
    assert f"{ANNA} (customer, complaint)" in out

    code, out, _ = run("abuse", "lookup", mail_id.upper(), "--json")
    info = json.loads(out)
    assert info["customer"]["name"] == "acme" and info["customer"]["imprint"]["city"] == "Köln"
    assert info["campaign"]["confirmed_by"] == "jane@shop.example"
    assert info["recipients"] == [{"address": ANNA, "matches_id": True}]
    assert info["relay"]["result"] == "accepted" and info["consent"] == []
    assert [e["kind"] for e in info["feedback"]] == ["complaint"]
    assert info["policy_decisions"][0]["policy"] == "suppression"


def test_abuse_lookup_of_a_forged_or_mistyped_id(cli):
    env, run = cli
    forged = env.forged(ANNA)
    code, out, _ = run("abuse", "lookup", forged)
    assert code == 1 and "FORGED" in out and "(untrustworthy)" in out
    mail_id = env.send(ANNA)
    typo = mail_id[:10] + ("a" if mail_id[10] != "a" else "b") + mail_id[11:]
    code, out, _ = run("abuse", "lookup", typo)
    assert code == 1 and "ALTERED" in out
    code, out, _ = run("abuse", "lookup", "not-an-id")
    assert code == 1 and "MALFORMED" in out


def test_abuse_report_ingests_and_prints_the_lookup(cli, tmp_path):
    env, run = cli
    mail_id = env.send(ANNA)
    path = tmp_path / "complaint.eml"
    path.write_bytes(forward(mail_id, ANNA))
    code, out, _ = run("abuse", "report", str(path))
    assert code == 0
    assert "recorded as feedback #1 (complaint); suppressed for this customer" in out
    assert f"mail ID:     {mail_id}" in out and "customer:    acme" in out
    assert env.store.find_suppression(env.customer.id, ANNA).reason == "complaint"

    # A CSA complaints-office mail quoting our header in its text: the desk says complaint.
    text = (
        f"From: complaints@csa.example\r\nTo: {ABUSE}\r\nSubject: Complaint 2026-113\r\n\r\n"
        f"A recipient complained about a mail with\r\nX-Mailing-ID: "
        f"{env.send('ben@example.org')}\r\nPlease respond within 2 working days.\r\n"
    )
    path.write_text(text)
    code, out, _ = run("abuse", "report", str(path))
    assert code == 0 and "(complaint)" in out
    assert env.store.find_suppression(env.customer.id, "ben@example.org") is not None


def test_abuse_report_without_or_with_a_forged_id_says_so_plainly(cli, tmp_path):
    env, run = cli
    path = tmp_path / "none.eml"
    path.write_bytes(b"From: angry@example.org\r\nSubject: spam!!\r\n\r\nStop sending me mail.\r\n")
    code, out, _ = run("abuse", "report", str(path))
    assert code == 1 and "no mail ID of this gateway found" in out
    path.write_bytes(forward(env.forged(ANNA), ANNA))
    code, out, _ = run("abuse", "report", str(path))
    assert code == 1 and "is FORGED; recorded as feedback" in out and "not acted on" in out
    assert env.store.list_suppressions() == []


# -- end to end: the CLI as a process next to the running gateway ------------------------------


def test_abuse_lookup_of_a_mail_sent_through_the_gateway(gateway, scripted_mta, tmp_path):
    from gateway.transports.feedback import feedback_ports
    from tests.integration.test_feedback_e2e import (
        SENDER,
        arf_report,
        deliver_feedback,
        mail_id_of,
        message,
    )
    from tests.support.gateway import add_customer

    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "tls/cert.pem"), "key": str(tmp_path / "tls/key.pem")},
            },
            {"kind": "feedback", "address": "127.0.0.1", "port": 0},
        ],
        bounce_domain=BOUNCE_DOMAIN,
        feedback={"fbl_address": FBL},
        policies=[{"name": "customer-active"}, {"name": "suppression"}],
    )
    add_customer(gw.store)
    gw.store.set_imprint("acme", IMPRINT)
    gw.store.confirm_campaign("acme", "autumn-2026", by="jane@customer.example")
    with gw.client() as smtp:
        smtp.sendmail(SENDER, [ANNA], message(ANNA))
    verp, _, relayed = mta.received[-1]
    mail_id = mail_id_of(verp)
    deliver_feedback(feedback_ports(gw.server)[0], "fbl@isp.example", FBL, arf_report(relayed, ANNA))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "abuse", "lookup", mail_id, "-c", str(gw.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "customer:    acme" in out and "guidelines confirmed by jane@customer.example" in out
    assert f"recipient:   {ANNA}" in out and "relay:       accepted: 250 2.0.0 Ok: queued" in out
    assert "customer-active" in out and "suppression" in out
    assert "complaint (abuse)" in out
    assert Path(gw.config.path(gw.config.logging.file)).read_text().count(mail_id) >= 3


def test_ingest_exits_75_when_the_store_is_down_so_the_mta_retries(tmp_path):
    from tests.support.postfix import free_port

    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "store": {"url": f"postgresql://gateway@127.0.0.1:{free_port()}/gateway"},
                "mail_id": {"key_file": str(tmp_path / "mailid.key")},
            }
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "feedback", "ingest", "-c", str(path), "-"],
        input=dsn(None, ANNA),
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 75, proc.stderr
    assert b"try again later" in proc.stderr
