"""Traceability end to end: mail ID, DKIM on the relayed bytes, grep-able logs, metrics, CLIs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client import REGISTRY

from gateway.core.message import header_values
from gateway.dkim import keygen, static_dnsfunc, verify
from gateway.mailid import MailIdCodec
from tests.integration.test_relay_core import MESSAGE
from tests.support.dnsstub import DnsStub
from tests.support.gateway import add_customer
from tests.support.postfix import free_port


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def signed_setup(tmp_path, gateway, scripted_mta):
    path, txt = keygen("customer.example", "s1", "rsa-sha256", tmp_path / "dkim")
    ed_path, ed_txt = keygen("customer.example", "s2", "ed25519-sha256", tmp_path / "dkim")
    mta = scripted_mta()
    http_port = free_port()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")},
            },
            {"kind": "http", "address": "127.0.0.1", "port": http_port},
        ],
        dkim={"algorithms": ["rsa-sha256", "ed25519-sha256"], "missing_key": "tempfail"},
        feedback={"fbl_address": "fbl@esp.example", "csa_complaints": "csa-complaints@eco.de"},
        bounce_domain="bounces.esp.example",
    )
    add_customer(gw.store)
    gw.store.confirm_campaign("acme", "autumn-2026", by="alice")
    records = {"s1._domainkey.customer.example": txt, "s2._domainkey.customer.example": ed_txt}
    return gw, mta, records, http_port


def relayed(gw, mta):
    with gw.client() as smtp:
        assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    mail_from, rcpts, data = mta.received[-1]
    return mail_from, data


def test_relayed_message_carries_genuine_id_and_signatures_that_verify(signed_setup, tmp_path):
    gw, mta, records, _ = signed_setup
    mail_from, data = relayed(gw, mta)
    [mail_id] = header_values(data, "X-Mailing-ID")
    codec = MailIdCodec.from_key_file(tmp_path / "mailid.key", create=False)
    decoded = codec.decode(mail_id)
    assert decoded.status == "genuine"
    assert decoded.customer_id == gw.store.get_customer("acme").id
    assert decoded.campaign_ref == gw.store.get_campaign(decoded.customer_id, "autumn-2026").id
    assert codec.recipient_matches(decoded, "anna@example.org")
    assert not codec.recipient_matches(decoded, "ben@example.org")
    # VERP envelope sender, Feedback-ID, CFBL and CSA headers.
    assert mail_from == f"m-{mail_id}@bounces.esp.example"
    assert header_values(data, "Feedback-ID") == ["autumn-2026:acme:newsletter:espgw"]
    assert header_values(data, "CFBL-Address") == ["fbl@esp.example; report=arf"]
    assert header_values(data, "CFBL-Feedback-ID") == [mail_id]
    assert header_values(data, "X-CSA-Complaints") == ["csa-complaints@eco.de"]
    assert b"forged-by-client" not in data

    sigs = header_values(data, "DKIM-Signature")
    results = verify(data, static_dnsfunc(records))
    assert [(r.algorithm, r.result) for r in results] == [("rsa-sha256", "pass"), ("ed25519-sha256", "pass")]
    # Every compliance header is inside the signature.
    signed = re.search(r"h=([^;]+);", "".join(sigs).replace(" ", "")).group(1).split(":")
    for name in (
        "from",
        "subject",
        "x-mailing-id",
        "feedback-id",
        "cfbl-address",
        "cfbl-feedback-id",
        "x-csa-complaints",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ):
        assert name in signed


@pytest.mark.parametrize(
    "change",
    [
        (b"Subject: Autumn offers", b"Subject: Winter offers"),
        (b"From: Shop News", b"From: Other News"),
        (b"X-Mailing-ID: e", b"X-Mailing-ID: f"),
    ],
)
def test_changing_a_signed_header_breaks_verification(signed_setup, change):
    gw, mta, records, _ = signed_setup
    _, data = relayed(gw, mta)
    tampered = (
        data.replace(*change) if change[0] in data else data.replace(b"X-Mailing-ID: ", b"X-Mailing-ID: x")
    )

    assert tampered != data
    assert [r.result for r in verify(tampered, static_dnsfunc(records))] == ["fail", "fail"]


def test_a_second_from_breaks_verification(signed_setup):
    gw, mta, records, _ = signed_setup
    _, data = relayed(gw, mta)

    assert [r.result for r in verify(data, static_dnsfunc(records))] == ["pass", "pass"]
    head, body = data.split(b"\r\n\r\n", 1)
    tampered = head + b"\r\nFrom: attacker@evil.example\r\n\r\n" + body
    assert [r.result for r in verify(tampered, static_dnsfunc(records))] == ["fail", "fail"]


def test_grep_of_the_mail_id_tells_the_whole_story(signed_setup, tmp_path):
    gw, mta, _, _ = signed_setup
    _, data = relayed(gw, mta)
    [mail_id] = header_values(data, "X-Mailing-ID")
    log = (tmp_path / "gateway.log").read_text().splitlines()
    full = [line for line in log if mail_id in line]
    events = [re.search(r"event=(\S+)", line).group(1) for line in full]
    assert {"dkim", "relay", "message"} <= set(events)
    message_line = next(line for line in full if "event=message" in line)
    assert "policies=customer-active=continue" in message_line
    relay_line = next(line for line in full if "event=relay" in line)
    assert "queue_id=Q000001" in relay_line and "result=accepted" in relay_line
    # The stem finds the lines from before DATA too (MAIL, RCPT, the MAIL-phase policy).
    stem_lines = [line for line in log if mail_id[:16] in line]
    assert any("event=mail " in line for line in stem_lines)
    assert any("event=rcpt " in line for line in stem_lines)
    # Passing decisions are summed up on the message line; refusals get a line each.
    assert not any("event=policy " in line for line in stem_lines)
    assert all("session=" in line for line in stem_lines)
    # gateway trace prints the decoded ID and the same lines.
    result = cli("trace", mail_id, "-c", str(tmp_path / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert "genuine" in result.stdout and "customer acme" in result.stdout
    assert len(result.stdout.strip().splitlines()) == len(stem_lines) + 1
    assert "password" not in "\n".join(log).lower()


def test_mailid_decode_cli_tells_genuine_altered_and_forged(signed_setup, tmp_path):
    gw, mta, _, _ = signed_setup
    _, data = relayed(gw, mta)
    [mail_id] = header_values(data, "X-Mailing-ID")
    config = str(tmp_path / "config.yaml")
    genuine = cli("mailid", "decode", mail_id, "-c", config, "--json")
    info = json.loads(genuine.stdout)
    assert genuine.returncode == 0 and info["status"] == "genuine"
    assert info["customer"] == "acme" and info["campaign"] == "autumn-2026"
    altered = mail_id[:20] + ("a" if mail_id[20] != "a" else "b") + mail_id[21:]
    out = cli("mailid", "decode", altered, "-c", config)
    assert out.returncode == 1 and "ALTERED" in out.stdout
    other_key = tmp_path / "other.key"
    forged = MailIdCodec.from_key_file(other_key).finalize(
        MailIdCodec.from_key_file(other_key).new_stem(1), 0, "anna@example.org"
    )
    out = cli("mailid", "decode", forged, "-c", config)
    assert out.returncode == 1 and "FORGED" in out.stdout
    out = cli("mailid", "decode", "not-an-id", "-c", config)
    assert out.returncode == 1 and "MALFORMED" in out.stdout


def test_metrics_move_with_accepted_refused_and_tempfailed_mail(signed_setup, scripted_mta):
    gw, mta, _, http_port = signed_setup
    before = {r: metric("gateway_messages_total", result=r) for r in ("accepted", "rejected", "tempfailed")}
    relayed(gw, mta)
    gw.store.set_customer_status("acme", "suspended")
    with gw.client() as smtp:
        assert smtp.mail("news@customer.example")[0] == 550
    gw.store.set_customer_status("acme", "active")
    mta.stop()  # downstream down: the next message tempfails
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        assert smtp.data(MESSAGE)[0] == 451
    after = {r: metric("gateway_messages_total", result=r) for r in ("accepted", "rejected", "tempfailed")}
    assert {r: after[r] - before[r] for r in after} == {"accepted": 1, "rejected": 1, "tempfailed": 1}
    body = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
    for name in (
        "gateway_messages_total",
        "gateway_policy_decisions_total",
        "gateway_policy_duration_seconds",
        "gateway_relay_duration_seconds",
        "gateway_relay_replies_total",
        "gateway_dkim_sign_seconds",
        "gateway_sessions_active",
        "gateway_auth_failures_total",
    ):
        assert name in body
    assert 'gateway_policy_decisions_total{action="reject",mode="enforce",policy="customer-active"}' in body
    assert "acme" not in body  # no customer names in labels
    # The downstream is down: /healthz says so with 503.
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz")
        raise AssertionError("healthz should fail")
    except urllib.error.HTTPError as exc:
        assert exc.code == 503
        report = json.loads(exc.read())
        assert report["checks"]["store"] == "ok"
        assert report["checks"]["downstream"].startswith("fail")


def test_missing_dkim_key_tempfails_by_default(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port, dkim={"missing_key": "tempfail"})
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE)
    assert (code, text[:5]) == (451, b"4.3.5")
    assert mta.received == []


def test_missing_dkim_key_can_relay_unsigned_and_is_counted(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port, dkim={"missing_key": "unsigned"})
    add_customer(gw.store)
    before = metric("gateway_dkim_unsigned_total")
    with gw.client() as smtp:
        assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    assert b"DKIM-Signature" not in mta.received[0][2]
    assert metric("gateway_dkim_unsigned_total") == before + 1


def test_dkim_keygen_and_check_cli_against_a_dns_server(tmp_path):
    from tests.support.gateway import base_config, write_config

    config = str(write_config(tmp_path, base_config(tmp_path, 25)))
    out = cli("dkim", "keygen", "--domain", "shop.example", "--selector", "nov", "-c", config)
    assert out.returncode == 0, out.stderr
    record = re.search(r'IN TXT "([^"]+)"', out.stdout).group(1)
    assert record.startswith("v=DKIM1; k=rsa; p=")
    key_file = tmp_path / "dkim/shop.example/nov.rsa.pem"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    again = cli("dkim", "keygen", "--domain", "shop.example", "--selector", "nov", "-c", config)
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr
    with DnsStub({"nov._domainkey.shop.example": record}) as dns_ok:
        ok = cli(
            "dkim", "check", "shop.example", "nov", "-c", config, env={"GATEWAY_DNS_SERVER": dns_ok.address}
        )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = record[:-8] + "AAAAAAAA"
    with DnsStub({"nov._domainkey.shop.example": wrong}) as dns_bad:
        bad = cli(
            "dkim", "check", "shop.example", "nov", "-c", config, env={"GATEWAY_DNS_SERVER": dns_bad.address}
        )
    assert bad.returncode == 1
    with DnsStub({}) as dns_none:
        missing = cli(
            "dkim", "check", "shop.example", "nov", "-c", config, env={"GATEWAY_DNS_SERVER": dns_none.address}
        )
    assert missing.returncode == 1 and "NXDOMAIN" in missing.stdout
