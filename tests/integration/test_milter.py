"""Milter mode end to end: a real Postfix (SASL via a real Dovecot) with the gateway as milter.

Every decision is compared with the SMTP proxy where it can be: the same message, the same
customer, the same policies must give the same reply, whichever way the gateway is deployed.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.core import replies
from gateway.core.message import header_values, split_message
from gateway.core.plan import AddHeader, RemoveHeader
from gateway.core.registry import discover
from gateway.core.verdict import Reply
from gateway.dkim import keygen, static_dnsfunc, verify
from gateway.transports.milter import (
    SMFIR_CHGHEADER,
    SMFIR_INSHEADER,
    attach_milter,
    edit_packets,
    milter_ports,
    packet,
    reply_packet,
    stop_milter,
)
from tests.support.gateway import PASSWORD, RunningGateway, add_customer
from tests.support.milter_postfix import MilterPostfix
from tests.support.postfix import free_port

CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

MESSAGE = (
    b"X-Mailing-ID: forged-by-client\r\n"
    b"From: Shop News <news@customer.example>\r\n"
    b"To: anna@example.org\r\n"
    b"Subject: Autumn offers with a long subject line that Postfix passes to the milter\r\n"
    b" folded onto a second line\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <autumn-1@customer.example>\r\n"
    b"X-Campaign-ID: autumn-2026\r\n"
    b"X-Tab-Header:\tvalue after a tab\r\n"
    b"X-Mailing-ID: second-forged-one\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Anna,\r\n"
    b".leading dot line must survive dot-stuffing\r\n"
    b"trailing spaces   \r\n"
    b"\r\n"
    b"-- \r\nShop GmbH\r\n"
)
USERS = {"acme": PASSWORD, "ghost": "ghost password"}
POLICIES = [
    {"name": "customer-active", "mode": "enforce"},
    {"name": "role-address", "mode": "enforce"},
    {"name": "message-format", "mode": "enforce"},
]


@pytest.fixture(scope="module")
def milter_postfix() -> Iterator[MilterPostfix]:
    instance = MilterPostfix(free_port(), USERS)
    instance.start()
    yield instance
    instance.cleanup()


@pytest.fixture
def mpf(milter_postfix: MilterPostfix) -> MilterPostfix:
    milter_postfix.clear()
    return milter_postfix


@pytest.fixture
def milter_gateway(
    gateway: Callable[..., RunningGateway],
    scripted_mta: Callable[..., Any],
    milter_postfix: MilterPostfix,
    tmp_path: Path,
) -> Iterator[Callable[..., RunningGateway]]:
    """milter_gateway(**config_overrides): the gateway with its submission listener (relaying
    to a scripted MTA, for the proxy side of comparisons) and the milter listener Postfix uses."""
    started: list[RunningGateway] = []

    def start(**overrides: Any) -> RunningGateway:
        mta = scripted_mta()
        listeners = [
            {"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True},
            {"kind": "milter", "address": "127.0.0.1", "port": milter_postfix.milter_port},
        ]
        overrides.setdefault("policies", POLICIES)
        overrides.setdefault("dkim", {"keys_dir": str(tmp_path / "dkim"), "missing_key": "unsigned"})
        gw = gateway(mta.port, listeners=listeners, **overrides)
        gw.mta = mta  # type: ignore[attr-defined]
        # Server.start opened the milter listener, as `gateway serve` does.
        assert milter_ports(gw.server) == [milter_postfix.milter_port]
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.call(stop_milter(gw.server, grace=0))


def postfix_client(
    postfix: MilterPostfix, login: tuple[str, str] | None = ("acme", PASSWORD)
) -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", postfix.port, local_hostname="client.test", timeout=60)
    smtp.ehlo()
    if login is not None:
        smtp.login(*login)
    return smtp


Result = tuple[str, int, bytes]


def attempt(
    smtp: smtplib.SMTP, message: bytes, rcpts: list[str], sender: str = "news@customer.example"
) -> Result:
    """One transaction, step by step: ("mail"|"rcpt"|"data", code, text) of the first
    refusal, or ("accepted", 250, b"")."""
    try:
        code, text = smtp.mail(sender)
        if code != 250:
            return ("mail", code, text)
        accepted = 0
        last: Result = ("rcpt", 0, b"")
        for rcpt in rcpts:
            code, text = smtp.rcpt(rcpt)
            if code == 250:
                accepted += 1
            else:
                last = ("rcpt", code, text)
        if not accepted:
            return last
        code, text = smtp.data(message)
        return ("accepted", 250, b"") if code == 250 else ("data", code, text)
    finally:
        try:
            smtp.rset()
        except smtplib.SMTPException:
            pass


def via_postfix(postfix: MilterPostfix, message: bytes, rcpts: list[str] | None = None, **kw: Any) -> Result:
    with postfix_client(postfix) as smtp:
        return attempt(smtp, message, rcpts or ["anna@example.org"], **kw)


def via_proxy(gw: RunningGateway, message: bytes, rcpts: list[str] | None = None, **kw: Any) -> Result:
    with gw.client(tls=False) as smtp:
        return attempt(smtp, message, rcpts or ["anna@example.org"], **kw)


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def header_names(message: bytes) -> list[bytes]:
    head, _ = split_message(message)
    return [line.split(b":")[0] for line in head.split(b"\r\n") if line and line[:1] not in b" \t"]


# -- a compliant message --------------------------------------------------------------------


def test_compliant_mail_is_delivered_with_mail_id_verp_and_a_dkim_signature_that_verifies(
    milter_gateway, mpf, tmp_path
):
    _, txt = keygen("customer.example", "s2026", "rsa-sha256", tmp_path / "dkim")
    gw = milter_gateway(
        bounce_domain="bounces.esp.example",
        dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"},
    )
    add_customer(gw.store)
    assert via_postfix(mpf, MESSAGE) == ("accepted", 250, b"")
    [delivered] = mpf.wait_for_messages(1)
    delivered = crlf(delivered)

    # The mail ID: one, the gateway's, none of the client's.
    [mail_id] = header_values(delivered, "X-Mailing-ID")
    assert b"forged" not in delivered
    record = gw.store.get_message(mail_id)
    assert record is not None and record.result == "accepted"
    assert record.customer_id == gw.store.get_customer("acme").id
    assert record.recipients == ["anna@example.org"]
    # The ledger carries Postfix's queue id (from the milter's {i} macro), and the customer is
    # the one Postfix's SASL (Dovecot) authenticated.
    assert re.search(rf"{record.queue_id}: client=\S+, sasl_method=\w+, sasl_username=acme", mpf.read_log())
    # VERP: the envelope sender was changed to the bounce address of this mail ID.
    assert header_values(delivered, "Return-Path") == [f"<m-{mail_id}@bounces.esp.example>"]

    # DKIM: the signature verifies on the message as delivered.
    results = verify(delivered, static_dnsfunc({"s2026._domainkey.customer.example": txt}))
    assert [(r.domain, r.ok) for r in results] == [("customer.example", True)], results

    # Layout as in proxy mode: Postfix's trace headers, then the gateway's, then the client's.
    names = header_names(delivered)
    received = names.index(b"Received")
    assert names[:received] == [b"Return-Path", b"X-Original-To", b"Delivered-To"]
    assert names[received + 1 : received + 4] == [b"DKIM-Signature", b"X-Mailing-ID", b"Feedback-ID"]
    # The client's bytes are untouched, but for the removed X-Mailing-ID fields.
    client_part = re.sub(rb"X-Mailing-ID: [^\r]*\r\n", b"", MESSAGE)
    assert delivered.endswith(client_part)

    # grep by the mail ID (its 16-character stem for the lines from before DATA) tells the story.
    events = [line for line in gw.log_lines() if line.get("mail_id", "")[:16] == mail_id[:16]]
    assert {"mail", "rcpt", "dkim", "relay", "message"} <= {e["event"] for e in events}
    assert all(e["session"] == events[0]["session"] for e in events)
    dkim_line = next(e for e in events if e["event"] == "dkim")
    assert dkim_line["result"] == "signed"
    assert any(
        e.get("event") == "auth" and e.get("customer") == "acme" and e.get("transport") == "milter"
        for e in gw.log_lines()
    )


def test_the_same_message_through_the_proxy_gets_the_same_headers(milter_gateway, mpf, tmp_path):
    _, txt = keygen("customer.example", "s2026", "rsa-sha256", tmp_path / "dkim")
    gw = milter_gateway(dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"})
    add_customer(gw.store)
    assert via_proxy(gw, MESSAGE) == ("accepted", 250, b"")
    assert via_postfix(mpf, MESSAGE) == ("accepted", 250, b"")
    [(_, _, proxied)] = gw.mta.received
    [delivered] = mpf.wait_for_messages(1)
    delivered = crlf(delivered)
    dns = static_dnsfunc({"s2026._domainkey.customer.example": txt})
    for message in (proxied, delivered):
        assert [r.ok for r in verify(message, dns)] == [True]
    # Beyond Postfix's trace headers, the two differ only in the per-message values.
    start = header_names(delivered).index(b"DKIM-Signature")
    assert header_names(delivered)[start:] == header_names(proxied)
    assert split_message(delivered)[1] == split_message(proxied)[1]


# -- refusals: the same replies as through the proxy ------------------------------------------


def test_unauthenticated_mail_is_refused_at_mail_with_530(milter_gateway, mpf, tmp_path):
    gw = milter_gateway()
    add_customer(gw.store)
    with postfix_client(mpf, login=None) as smtp:
        result = attempt(smtp, MESSAGE, ["anna@example.org"])
    assert result == ("mail", 530, b"5.7.0 Authentication required")
    assert str(replies.AUTH_REQUIRED) == "530 5.7.0 Authentication required"
    with gw.client(tls=False, login=None) as smtp:  # the proxy says the same
        assert attempt(smtp, MESSAGE, ["anna@example.org"]) == result
    time.sleep(0.5)
    assert mpf.messages() == []


def test_a_sasl_login_that_is_no_customer_is_refused(milter_gateway, mpf, tmp_path):
    gw = milter_gateway()
    add_customer(gw.store)
    with postfix_client(mpf, login=("ghost", USERS["ghost"])) as smtp:
        code, text = smtp.mail("news@customer.example")
    assert (code, text) == (550, b"5.7.1 Account unknown; please contact support")


@pytest.mark.parametrize("status", ["suspended", "pending"])
def test_inactive_customer_is_refused_at_mail_as_through_the_proxy(milter_gateway, mpf, tmp_path, status):
    gw = milter_gateway()
    add_customer(gw.store, status=status)
    milter = via_postfix(mpf, MESSAGE)
    assert milter[:2] == ("mail", 550)
    assert milter[2].startswith(b"5.7.1 Account acme is ") and b"(customer-active)" in milter[2]
    assert via_proxy(gw, MESSAGE) == milter
    time.sleep(0.5)
    assert mpf.messages() == []


def test_role_address_is_refused_at_rcpt_as_through_the_proxy(milter_gateway, mpf, tmp_path):
    assert "role-address" in discover()
    gw = milter_gateway()
    add_customer(gw.store)
    milter = via_postfix(mpf, MESSAGE, ["info@example.org"])
    assert milter == (
        "rcpt",
        550,
        b"5.7.1 info@example.org is a role address; role addresses may not receive campaigns (role-address)",
    )
    assert via_proxy(gw, MESSAGE, ["info@example.org"]) == milter


def test_second_recipient_gets_452_and_the_first_is_delivered(milter_gateway, mpf, tmp_path):
    gw = milter_gateway()
    add_customer(gw.store)
    with postfix_client(mpf) as smtp:
        assert smtp.mail("news@customer.example")[0] == 250
        assert smtp.rcpt("anna@example.org")[0] == 250
        code, text = smtp.rcpt("ben@example.org")
        assert (code, text) == (452, str(replies.TOO_MANY_RECIPIENTS)[4:].encode())
        assert smtp.data(MESSAGE)[0] == 250
    [delivered] = mpf.wait_for_messages(1)
    assert b"Delivered-To: anna@example.org" in delivered


def test_message_format_refusal_at_end_of_data_as_through_the_proxy(milter_gateway, mpf, tmp_path):
    gw = milter_gateway()
    add_customer(gw.store)
    no_date = MESSAGE.replace(b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n", b"")
    milter = via_postfix(mpf, no_date)
    assert milter == (
        "data",
        550,
        b"5.6.0 Message format: no Date header; exactly one is required (message-format)",
    )
    assert via_proxy(gw, no_date) == milter
    time.sleep(0.5)
    assert mpf.messages() == []
    [record] = [
        line for line in gw.log_lines() if line.get("event") == "message" and line.get("result") == "rejected"
    ][:1]
    assert "message-format=reject" in record["policies"]


def test_missing_imprint_is_refused_at_end_of_data_as_through_the_proxy(milter_gateway, mpf, tmp_path):
    gw = milter_gateway(policies=[*POLICIES, {"name": "imprint", "mode": "enforce"}])
    add_customer(gw.store)
    gw.store.set_imprint(
        "acme",
        {
            "company": "Shop GmbH",
            "street": "Hauptstrasse 1",
            "postcode": "10115",
            "city": "Berlin",
            "country": "DE",
            "email": "info@customer.example",
            "legal_form": "GmbH",
            "representative": "Erika Muster",
        },
    )
    milter = via_postfix(mpf, MESSAGE)
    assert milter[:2] == ("data", 550) and b"(imprint)" in milter[2]
    assert via_proxy(gw, MESSAGE) == milter


# -- the gateway down: Postfix tempfails, nothing is lost ---------------------------------------


def test_milter_down_tempfails_and_the_retry_is_delivered_exactly_once(milter_gateway, mpf, tmp_path):
    gw = milter_gateway()
    add_customer(gw.store)
    gw.call(stop_milter(gw.server, grace=0))
    # Postfix finds no milter when the client connects: with milter_default_action = tempfail
    # it answers the session's commands with 4xx from then on (AUTH included).
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        postfix_client(mpf)
    assert 400 <= refused.value.smtp_code < 500
    with postfix_client(mpf, login=None) as smtp:
        result = attempt(smtp, MESSAGE, ["anna@example.org"])
    assert result[0] == "mail" and 400 <= result[1] < 500, result
    assert f"connect to Milter service inet:127.0.0.1:{mpf.milter_port}" in mpf.read_log()
    assert "milter-reject: MAIL from" in mpf.read_log()
    time.sleep(0.5)
    assert mpf.messages() == []
    gw.call(attach_milter(gw.server))
    assert via_postfix(mpf, MESSAGE) == ("accepted", 250, b"")  # the client's retry
    time.sleep(1.0)
    assert len(mpf.wait_for_messages(1)) == 1


def test_milter_stopping_mid_transaction_tempfails_and_the_retry_is_delivered_once(
    milter_gateway, mpf, tmp_path
):
    gw = milter_gateway()
    add_customer(gw.store)
    with postfix_client(mpf) as smtp:
        assert smtp.mail("news@customer.example")[0] == 250
        assert smtp.rcpt("anna@example.org")[0] == 250
        # Nothing in flight on the gateway's side between commands: the drain is immediate.
        gw.call(stop_milter(gw.server, grace=0))
        code, _ = smtp.data(MESSAGE)
    assert 400 <= code < 500
    time.sleep(0.5)
    assert mpf.messages() == []
    gw.call(attach_milter(gw.server))
    assert via_postfix(mpf, MESSAGE) == ("accepted", 250, b"")
    time.sleep(1.0)
    assert len(mpf.wait_for_messages(1)) == 1


def test_stopping_lets_the_open_transaction_finish_then_postfix_tempfails(milter_gateway, mpf):
    gw = milter_gateway()
    add_customer(gw.store)
    with postfix_client(mpf) as smtp:
        assert smtp.mail("news@customer.example")[0] == 250
        assert smtp.rcpt("anna@example.org")[0] == 250
        stopping = asyncio.run_coroutine_threadsafe(stop_milter(gw.server, grace=20), gw.loop)
        time.sleep(0.3)
        assert not stopping.done()  # draining: this transaction is still open
        assert smtp.data(MESSAGE)[0] == 250
        stopping.result(10)
        # The next transaction of the same session finds no milter: Postfix tempfails it.
        code, _ = smtp.mail("news@customer.example")
        assert 400 <= code < 500
    assert len(mpf.wait_for_messages(1)) == 1
    time.sleep(0.5)
    assert len(mpf.messages()) == 1


# -- the same .eml, the same decision ---------------------------------------------------------


def _corpus() -> list[Path]:
    files = sorted((FIXTURES / "policies").glob("*.eml")) + sorted((FIXTURES / "cli").glob("*.eml"))
    lists = CORPORA / "newsletters" / "mailing_list_misc"
    if lists.is_dir():
        files += sorted(lists.glob("*.eml"))
    return files


# Every built-in policy that is registered, in the order of DESIGN.md's example config.
ALL_POLICIES = [
    "customer-active",
    "role-address",
    "suppression",
    "consent",
    "sender-identity",
    "campaign-confirmed",
    "unsubscribe",
    "imprint",
    "message-format",
]


def test_the_same_eml_gets_the_same_decision_through_proxy_and_milter(milter_gateway, mpf, tmp_path):
    from tests.unit.test_policy_support import IMPRINT, UNSUBSCRIBE_PREFIX

    _, txt = keygen("shop.example", "s1", "rsa-sha256", tmp_path / "dkim")
    registered = discover()
    gw = milter_gateway(
        policies=[{"name": name, "mode": "enforce"} for name in ALL_POLICIES if name in registered],
        dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"},
    )
    # The customer the policy fixtures are written for (tests/unit/test_policy_support.py).
    add_customer(gw.store, domain="shop.example")
    gw.store.set_imprint("acme", IMPRINT)
    gw.store.set_unsubscribe("acme", UNSUBSCRIBE_PREFIX)
    gw.store.confirm_campaign("acme", "spring-2026", by="test")
    acme = gw.store.get_customer("acme")
    gw.store.consent_subscribe(
        acme.id, "kunde@example.org", source="https://shop.example/form", at=time.time() - 60, ip="192.0.2.1"
    )
    gw.store.consent_confirm(acme.id, "kunde@example.org", at=time.time() - 30, ip="192.0.2.2")
    decisions = {}
    for path in _corpus():
        message = crlf(path.read_bytes())
        proxy = via_proxy(gw, message, ["kunde@example.org"], sender="bounce@shop.example")
        milter = via_postfix(mpf, message, ["kunde@example.org"], sender="bounce@shop.example")
        assert milter == proxy, path.name
        decisions[path.name] = proxy
    # The corpus gives both outcomes, else the comparison would say little.
    outcomes = [d[0] for d in decisions.values()]
    assert "accepted" in outcomes and "data" in outcomes, decisions
    accepted = outcomes.count("accepted")
    delivered = [crlf(m) for m in mpf.wait_for_messages(accepted)]
    assert len(delivered) == len(gw.mta.received) == accepted
    # Multipart, base64, quoted-printable, 8-bit Latin-1: the signature verifies on every one
    # as delivered, and the bodies are the client's, byte for byte, as through the proxy.
    dns = static_dnsfunc({"s1._domainkey.shop.example": txt})
    for message in delivered:
        assert [r.ok for r in verify(message, dns)] == [True]
    assert sorted(split_message(m)[1] for m in delivered) == sorted(
        split_message(data)[1] for _, _, data in gw.mta.received
    )


@pytest.mark.parametrize(
    "lines",
    [
        4000,  # ~300 KB: more than one 256 KB read of the proxy
        80,  # ~6 KB: the chunk that crosses the limit also holds the end of DATA
    ],
)
def test_size_limit_refusal_as_through_the_proxy(milter_gateway, mpf, lines):
    gw = milter_gateway(limits={"max_message_size": 4096, "auth_failure_delay": 0.0})
    add_customer(gw.store)
    big = MESSAGE + (b"x" * 78 + b"\r\n") * lines
    milter = via_postfix(mpf, big)
    assert milter == ("data", 552, str(replies.MESSAGE_TOO_BIG)[4:].encode())
    assert via_proxy(gw, big) == milter


def test_reload_swaps_the_policies_the_milter_runs(milter_gateway, mpf, tmp_path):
    gw = milter_gateway(policies=[{"name": "customer-active", "mode": "enforce"}])
    add_customer(gw.store)
    assert via_postfix(mpf, MESSAGE, ["info@example.org"]) == ("accepted", 250, b"")
    config = yaml.safe_load(gw.config_path.read_text())
    config["policies"] = POLICIES
    gw.config_path.write_text(yaml.safe_dump(config))
    gw.loop.call_soon_threadsafe(gw.server.reload)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(gw.server.config.policies) != len(POLICIES):
        time.sleep(0.05)
    assert via_postfix(mpf, MESSAGE, ["info@example.org"])[:2] == ("rcpt", 550)


# -- protocol details that Postfix's reply parsing and header editing depend on --------------


def test_reply_text_percent_signs_survive_postfix_unescaping():
    packet = reply_packet(Reply(550, "5.7.1", "100% sure\r\nno second line"))
    assert packet[5:] == b"550 5.7.1 100%% sure no second line\0"


def test_header_edits_remove_by_occurrence_last_first_and_insert_in_order():
    headers = [
        (b"X-Mailing-ID", b" a"),
        (b"From", b" x@y"),
        (b"x-mailing-id", b" b"),
        (b"Subject", b" s\n folded"),
    ]
    edits = [
        RemoveHeader("X-Mailing-ID"),
        AddHeader("X-Mailing-ID", "new"),
        AddHeader("DKIM-Signature", "v=1;\r\n b=abc"),
    ]
    assert edit_packets(edits, headers, leading_space=True) == [
        packet(SMFIR_CHGHEADER, b"\0\0\0\x02x-mailing-id\0\0"),
        packet(SMFIR_CHGHEADER, b"\0\0\0\x01X-Mailing-ID\0\0"),
        # each right below Postfix's Received:, on top of the one before: DKIM ends up first
        packet(SMFIR_INSHEADER, b"\0\0\0\x01X-Mailing-ID\0 new\0"),
        packet(SMFIR_INSHEADER, b"\0\0\0\x01DKIM-Signature\0 v=1;\n b=abc\0"),
    ]


def test_a_trusted_network_sends_without_sasl_as_its_customer(gateway, scripted_mta, mpf, tmp_path):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True},
            {
                "kind": "milter",
                "address": "127.0.0.1",
                "port": mpf.milter_port,
                "trusted_networks": {"127.0.0.0/8": "acme"},
            },
        ],
        policies=POLICIES,
        dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "unsigned"},
    )
    try:
        add_customer(gw.store)
        with postfix_client(mpf, login=None) as smtp:
            result = attempt(smtp, MESSAGE, ["anna@example.org"])
        assert result == ("accepted", 250, b""), result
        delivered = mpf.wait_for_messages(1)
        assert b"X-Mailing-ID: " in delivered[0]
        auth = [line for line in gw.log_lines() if line.get("event") == "auth"]
        assert auth[-1]["customer"] == "acme" and auth[-1]["result"] == "trusted-network"
    finally:
        gw.call(stop_milter(gw.server, grace=0))


def test_headers_only_the_gateway_or_receiver_may_write_are_removed_as_through_the_proxy(
    milter_gateway, mpf, tmp_path
):
    _, txt = keygen("customer.example", "s2026", "rsa-sha256", tmp_path / "dkim")
    gw = milter_gateway(dkim={"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"})
    add_customer(gw.store)
    forged = (
        b"Return-Path: <forged-rp@attacker.example>\r\n"
        b"Delivered-To: forged-dt@example.org\r\n"
        b"x-csa-complaints:\r\n forged-csa-folded@attacker.example\r\n"
        b"DELIVERED-TO :\r\n\tforged-dt-folded@example.org\r\n"
    )
    message = forged + MESSAGE.replace(
        b"MIME-Version",
        b"RETURN-PATH: <forged-2@a.example>\r\nX-CSA-Complaints: forged-csa@attacker.example\r\nMIME-Version",
    )

    assert via_postfix(mpf, message) == ("accepted", 250, b"")

    [delivered] = mpf.wait_for_messages(1)
    delivered = crlf(delivered)
    assert b"forged" not in delivered
    assert header_values(delivered, "X-CSA-Complaints") == []
    dns = static_dnsfunc({"s2026._domainkey.customer.example": txt})
    assert [r.ok for r in verify(delivered, dns)] == [True]


@pytest.mark.parametrize(
    "parts, depth, reply",
    [
        (21, 1, b"5.3.4 Message has more than 20 MIME parts, the most accepted"),
        (2, 6, b"5.3.4 Message has MIME parts nested more than 5 deep, the most accepted"),
    ],
)
def test_mime_limit_refusal_names_the_limit_as_through_the_proxy(milter_gateway, mpf, parts, depth, reply):
    gw = milter_gateway(limits={"max_mime_parts": 20, "max_mime_depth": 5, "auth_failure_delay": 0.0})
    add_customer(gw.store)
    body = (
        b"".join(b"--leaf\r\nContent-Type: text/plain\r\n\r\nhello\r\n" for _ in range(parts))
        + b"--leaf--\r\n"
    )
    content_type = b'multipart/mixed; boundary="leaf"'
    for level in range(depth - 1):
        body = b"--l%d\r\nContent-Type: %s\r\n\r\n%s--l%d--\r\n" % (level, content_type, body, level)
        content_type = b'multipart/mixed; boundary="l%d"' % level
    message = MESSAGE.replace(b"text/plain; charset=utf-8", content_type).split(b"\r\n\r\n")[0]
    message += b"\r\n\r\n" + body

    milter = via_postfix(mpf, message)
    assert milter == ("data", 552, reply)
    assert via_proxy(gw, message) == milter
    assert gw.mta.received == []
