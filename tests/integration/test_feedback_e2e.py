"""Bounces and complaints end to end: mail goes out through the gateway (VERP sender, signed
mail ID), the downstream MTA accepts it, the returned mail comes back over SMTP to the feedback
listener, and the next send is refused at RCPT (or the customer at MAIL) by the policies."""

from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest

from gateway.mailid import MailIdCodec
from gateway.transports.feedback import feedback_ports
from tests.support.gateway import add_customer
from tests.unit.test_intake_support import SOFT

BOUNCE_DOMAIN = "bounces.esp.example"
FBL = "fbl@esp.example"
ABUSE = "abuse@esp.example"
SENDER = "news@customer.example"


def message(rcpt: str) -> bytes:
    return (
        "From: Shop News <news@customer.example>\r\n"
        f"To: {rcpt}\r\n"
        "Subject: Autumn offers\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        f"Message-ID: <autumn-{rcpt}>\r\n"
        "X-Campaign-ID: autumn-2026\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello,\r\n\r\nour autumn offers are here.\r\n"
    ).encode()


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    """(gateway, downstream, feedback port) with bounce domain, FBL and abuse addresses, the
    policies customer-active + suppression, and customer acme with campaign autumn-2026."""

    def start(**intake):
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
            feedback_intake={"abuse_addresses": [ABUSE], **intake},
            policies=[
                {"name": "customer-active", "mode": "enforce"},
                {"name": "suppression", "mode": "enforce"},
            ],
        )
        add_customer(gw.store)
        gw.store.confirm_campaign("acme", "autumn-2026", by="jane@customer.example")
        return gw, mta, feedback_ports(gw.server)[0]

    return start


def send(gw, mta, rcpt: str) -> tuple[str, bytes]:
    """Send one newsletter; returns (VERP envelope sender the downstream saw, relayed bytes)."""
    before = len(mta.received)
    with gw.client() as smtp:
        assert smtp.sendmail(SENDER, [rcpt], message(rcpt)) == {}
    assert len(mta.received) == before + 1
    mail_from, rcpts, data = mta.received[-1]
    assert rcpts == [rcpt]
    return mail_from, data


def mail_id_of(verp: str) -> str:
    match = re.fullmatch(rf"m-([a-z2-7]{{48}})@{re.escape(BOUNCE_DOMAIN)}", verp)
    assert match, verp
    return match.group(1)


def rcpt_reply(gw, rcpt: str) -> tuple[int, bytes]:
    with gw.client() as smtp:
        assert smtp.mail(SENDER)[0] == 250
        return smtp.rcpt(rcpt)


def deliver_feedback(port: int, mail_from: str, rcpt: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="mx.example.org", timeout=30) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        code, _ = smtp.mail(mail_from)
        assert code == 250
        code, text = smtp.rcpt(rcpt)
        assert code == 250, text
        return smtp.data(raw)


def postfix_dsn(
    verp: str,
    rcpt: str,
    relayed: bytes,
    *,
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
) -> bytes:
    """The bounce Postfix writes (RFC 3464 multipart/report), returning the relayed headers."""
    diag = diagnostic.format(rcpt=rcpt)
    headers = relayed.split(b"\r\n\r\n", 1)[0].decode()
    return (
        "Return-Path: <>\r\n"
        "Date: Sat, 28 Nov 2026 09:00:01 +0000 (UTC)\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        f"To: {verp}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="B0UND.1764320401/mx.example.org"\r\n'
        "Message-Id: <20261128090001.B0UND@mx.example.org>\r\n"
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        "--B0UND.1764320401/mx.example.org\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is the mail system at host mx.example.org.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        f"<{rcpt}>: host mx.example.org[192.0.2.10] said: {diag} (in reply to RCPT TO\r\n"
        "    command)\r\n"
        "\r\n"
        "--B0UND.1764320401/mx.example.org\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "X-Postfix-Queue-ID: B0UND\r\n"
        f"X-Postfix-Sender: rfc822; {verp}\r\n"
        "Arrival-Date: Sat, 28 Nov 2026 09:00:00 +0000 (UTC)\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        f"Original-Recipient: rfc822;{rcpt}\r\n"
        "Action: failed\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.example.org\r\n"
        f"Diagnostic-Code: smtp; {diag}\r\n"
        "\r\n"
        "--B0UND.1764320401/mx.example.org\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"Return-Path: <{verp}>\r\n"
        f"{headers}\r\n"
        "\r\n"
        "--B0UND.1764320401/mx.example.org--\r\n"
    ).encode()


def arf_report(relayed: bytes, rcpt: str | None, *, feedback_type: str = "abuse") -> bytes:
    """An ARF report (RFC 5965) as a mailbox provider's FBL sends it, with the whole relayed
    message attached (its X-Mailing-ID included)."""
    return (
        (
            "From: Feedback Loop <fbl@isp.example>\r\n"
            f"To: {FBL}\r\n"
            "Subject: Abuse report\r\n"
            "Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
            "Message-ID: <report-1@isp.example>\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="fbl"\r\n'
            "\r\n"
            "--fbl\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n"
            "\r\n"
            "This is an email abuse report for an email message received from IP 203.0.113.5.\r\n"
            "\r\n"
            "--fbl\r\n"
            "Content-Type: message/feedback-report\r\n"
            "\r\n"
            f"Feedback-Type: {feedback_type}\r\n"
            "User-Agent: ISP-FBL/1.0\r\n"
            "Version: 1\r\n"
            + (f"Original-Rcpt-To: {rcpt}\r\n" if rcpt else "")
            + "Source-IP: 203.0.113.5\r\n"
            "\r\n"
            "--fbl\r\n"
            "Content-Type: message/rfc822\r\n"
            "\r\n"
        ).encode()
        + relayed
        + b"\r\n--fbl--\r\n"
    )


def events(gw, name: str) -> list[dict[str, str]]:
    return [line for line in gw.log_lines() if line.get("event") == name]


# -- bounces -----------------------------------------------------------------------------------


def test_hard_bounce_to_the_verp_address_suppresses_the_next_send(setup):
    gw, mta, port = setup()
    verp, relayed = send(gw, mta, "anna@example.org")
    mail_id = mail_id_of(verp)
    code, text = deliver_feedback(port, "", verp, postfix_dsn(verp, "anna@example.org", relayed))
    assert code == 250 and text.startswith(b"2.0.0 Ok: feedback recorded as #")

    code, text = rcpt_reply(gw, "anna@example.org")
    assert code == 550
    assert re.fullmatch(
        rb"5\.7\.1 anna@example\.org previously hard-bounced on "
        rb"\d{4}-\d\d-\d\d; it is suppressed \(suppression\)",
        text,
    ), text
    # global: another customer is refused too; other recipients are not
    assert rcpt_reply(gw, "ben@example.org")[0] == 250
    entry = gw.store.find_suppression(None, "anna@example.org")
    assert entry.is_global and entry.reason == "hard-bounce" and entry.mail_id == mail_id
    [event] = gw.store.feedback_for_mail_id(mail_id)
    assert (event.kind, event.bounce_class, event.attribution, event.source) == (
        "bounce",
        "hard",
        "verp",
        "smtp",
    )
    assert event.envelope_to == [verp] and event.envelope_from == ""
    # The whole story is in the log under the mail ID.
    story = [line["event"] for line in gw.log_lines() if line.get("mail_id") == mail_id]
    assert {"relay", "feedback", "suppression"} <= set(story)
    refused = [line for line in events(gw, "rcpt") if line.get("result") == "refused"]
    assert "hard-bounced" in refused[-1]["reply"]


def test_soft_bounces_suppress_after_three_and_a_delivery_in_between_resets(setup):
    gw, mta, port = setup()
    rcpt = "carl@example.org"

    def soft_bounce() -> None:
        verp, relayed = send(gw, mta, rcpt)
        raw = postfix_dsn(verp, rcpt, relayed, **SOFT)
        assert deliver_feedback(port, "", verp, raw)[0] == 250

    soft_bounce()
    soft_bounce()
    send(gw, mta, rcpt)  # delivered: no bounce comes back
    soft_bounce()
    soft_bounce()
    assert rcpt_reply(gw, rcpt)[0] == 250, "the delivery reset the count: 2 of 3"
    soft_bounce()
    code, text = rcpt_reply(gw, rcpt)
    assert code == 550 and b"soft-bounced repeatedly" in text and text.endswith(b"(suppression)")
    assert gw.store.find_suppression(None, rcpt).reason == "soft-bounce"


# -- complaints --------------------------------------------------------------------------------


def test_arf_complaint_suppresses_the_recipient_for_that_customer(setup):
    gw, mta, port = setup(complaint_min_messages=1000)
    acme = gw.store.require_customer("acme")
    gw.store.consent_subscribe(
        acme.id, "dora@example.org", source="https://shop.example/form", at=time.time() - 60, ip="192.0.2.1"
    )
    gw.store.consent_confirm(acme.id, "dora@example.org", at=time.time() - 30, ip="192.0.2.2")
    verp, relayed = send(gw, mta, "dora@example.org")
    mail_id = mail_id_of(verp)
    assert f"X-Mailing-ID: {mail_id}".encode() in relayed
    code, _ = deliver_feedback(port, "fbl@isp.example", FBL, arf_report(relayed, "dora@example.org"))
    assert code == 250
    code, text = rcpt_reply(gw, "dora@example.org")
    assert code == 550 and b"dora@example.org complained about mail from this sender" in text
    entry = gw.store.find_suppression(gw.store.require_customer("acme").id, "dora@example.org")
    assert not entry.is_global and entry.reason == "complaint" and entry.mail_id == mail_id
    [event] = gw.store.feedback_for_mail_id(mail_id)
    assert (event.kind, event.feedback_type, event.acted) == ("complaint", "abuse", True)
    assert event.campaign_id == gw.store.get_campaign(entry.customer_id, "autumn-2026").id
    # another customer may still write to dora
    assert gw.store.find_suppression(0, "dora@example.org") is None
    # ... and the consent evidence now says the consent was revoked, and by what.
    record = gw.store.get_consent(acme.id, "dora@example.org")
    assert record.revoked_at is not None and "complaint" in record.revoked_reason


def test_complaint_rate_over_the_limit_suspends_the_customer(setup):
    gw, mta, port = setup(complaint_warning_rate=0.2, complaint_suspend_rate=0.5, complaint_min_messages=4)
    sent = {
        rcpt: send(gw, mta, rcpt)
        for rcpt in ("r1@example.org", "r2@example.org", "r3@example.org", "r4@example.org")
    }
    deliver_feedback(port, "fbl@isp.example", FBL, arf_report(sent["r1@example.org"][1], None))
    rate = events(gw, "complaint_rate")
    assert rate[-1]["action"] == "warning" and rate[-1]["rate"] == "0.25"
    assert gw.store.require_customer("acme").status == "active"

    deliver_feedback(port, "fbl@isp.example", FBL, arf_report(sent["r2@example.org"][1], None))
    assert events(gw, "complaint_rate")[-1]["action"] == "suspended"
    customer = gw.store.require_customer("acme")
    assert customer.status == "suspended" and "complaint rate 50.00%" in customer.status_reason
    with gw.client() as smtp:
        code, text = smtp.mail(SENDER)
    assert code == 550 and b"suspended" in text and text.startswith(b"5.7.1")


def test_forged_mail_id_in_a_complaint_is_reported_and_not_acted_on(setup):
    gw, mta, port = setup(complaint_min_messages=1)
    verp, relayed = send(gw, mta, "erik@example.org")
    genuine = mail_id_of(verp)
    other = MailIdCodec({0: b"not our key, not our key, not ours"}, 0)
    forged = other.finalize(genuine[:16], 1, "erik@example.org")
    assert forged != genuine
    tampered = relayed.replace(genuine.encode(), forged.encode())
    code, _ = deliver_feedback(port, "fbl@isp.example", FBL, arf_report(tampered, "erik@example.org"))
    assert code == 250, "stored (for the abuse desk), but nothing else"
    [event] = gw.store.feedback_for_mail_id(forged)
    assert event.mail_id_status == "forged" and not event.acted and "forged" in event.action
    line = [e for e in events(gw, "feedback") if e.get("mail_id") == forged][0]
    assert line["level"] == "warning" and line["mail_id_status"] == "forged"
    assert gw.store.list_suppressions() == []
    assert gw.store.require_customer("acme").status == "active"
    assert rcpt_reply(gw, "erik@example.org")[0] == 250


def test_abuse_forward_as_attachment(setup):
    gw, mta, port = setup(complaint_min_messages=1000)
    verp, relayed = send(gw, mta, "fred@example.org")
    forward = (
        (
            "From: Fred <fred@example.org>\r\n"
            f"To: {ABUSE}\r\n"
            "Subject: Fwd: Autumn offers (spam!)\r\n"
            "MIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="f"\r\n'
            "\r\n--f\r\nContent-Type: text/plain\r\n\r\nI never signed up.\r\n"
            "--f\r\nContent-Type: message/rfc822\r\n\r\n"
        ).encode()
        + relayed
        + b"\r\n--f--\r\n"
    )
    assert deliver_feedback(port, "fred@example.org", ABUSE, forward)[0] == 250
    assert rcpt_reply(gw, "fred@example.org")[0] == 550


# -- the listener is not a relay ---------------------------------------------------------------


@pytest.mark.parametrize(
    "rcpt",
    [
        "someone@outside.example",
        f"m-x@other.{BOUNCE_DOMAIN}",
        "anna@example.org",
        f"fbl@{BOUNCE_DOMAIN}.evil.example",
    ],
)
def test_feedback_listener_refuses_to_relay(setup, rcpt):
    gw, mta, port = setup()
    with smtplib.SMTP("127.0.0.1", port, local_hostname="spammer.example", timeout=30) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        assert smtp.docmd("AUTH", "PLAIN AGFjbWUAcGFzcw==")[0] == 502
        assert smtp.mail("spammer@outside.example")[0] == 250
        code, text = smtp.rcpt(rcpt)
        assert code == 550 and text.startswith(b"5.7.1") and b"relay access denied" in text
        code, _ = smtp.docmd("DATA")
        assert code == 503
    assert gw.store.list_feedback_events() == []
    assert mta.received == []


def test_unrecognised_mail_to_a_made_up_verp_address_is_stored_not_acted_on(setup):
    gw, mta, port = setup()
    verp = f"m-{'e' * 48}@{BOUNCE_DOMAIN}"
    code, text = deliver_feedback(port, "", verp, b"Subject: hello\r\n\r\njust some mail\r\n")
    assert code == 250
    [event] = gw.store.list_feedback_events()
    assert event.kind == "other" and not event.acted
    assert event.mail_id == "e" * 48 and event.mail_id_status == "altered"


def test_feedback_listener_refuses_oversized_mail(setup):
    gw, mta, port = setup()
    verp = f"m-{'e' * 48}@{BOUNCE_DOMAIN}"
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * (11 * 1024)
    code, text = deliver_feedback(port, "", verp, big)
    assert (code, text[:5]) == (552, b"5.3.4")
    assert gw.store.list_feedback_events() == []


def test_feedback_listener_answers_4xx_when_the_store_is_down(setup):
    gw, mta, port = setup()
    verp, relayed = send(gw, mta, "gus@example.org")
    gw.store.execute("DROP TABLE feedback_events")
    code, text = deliver_feedback(port, "", verp, postfix_dsn(verp, "gus@example.org", relayed))
    assert code == 451 and b"sqlite" not in text.lower()


def test_feedback_listener_port_is_its_own(setup):
    gw, mta, port = setup()
    assert port != gw.port
    with socket.create_connection(("127.0.0.1", port)) as s:
        banner = s.recv(200)
    assert banner.startswith(b"220 gateway.test ") and b"feedback intake" in banner


def test_feedback_listener_caps_its_sessions_apart_from_the_submission_cap(setup):
    gw, mta, port = setup(max_sessions=2)
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
    try:
        for conn in held:
            assert conn.recv(200).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            refused = third.recv(200)
            assert refused.startswith(b"421 4.3.2 ")
            assert third.recv(200) == b""  # and closed
        # The customers' listener is not affected by a full feedback listener.
        verp, _ = send(gw, mta, "hal@example.org")
        assert verp
        assert any(
            e.get("reason") == "session cap" and e.get("kind") == "feedback"
            for e in events(gw, "session_refused")
        )
    finally:
        for conn in held:
            conn.close()
    # A freed slot is usable again.
    deadline = time.monotonic() + 5
    while True:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as again:
            banner = again.recv(200)
        if banner.startswith(b"220 ") or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert banner.startswith(b"220 ")
