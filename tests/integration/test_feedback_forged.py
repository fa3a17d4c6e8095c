"""The feedback listener is reachable by anyone (it is the MX of the bounce domain): through a
real gateway's listener, a forged bounce or complaint changes nothing (RULES.md "Only what the
gateway sent can be bounced"), is recorded and counted as unverified and logged with the
reason; crafted bounces do not slow the submission sessions of the same gateway."""

from __future__ import annotations

import smtplib
import statistics
import threading
import time

from prometheus_client import REGISTRY

from gateway.mailid import MailIdCodec
from tests.integration import test_feedback_e2e
from tests.integration.test_feedback_e2e import (
    BOUNCE_DOMAIN,
    FBL,
    arf_report,
    deliver_feedback,
    events,
    mail_id_of,
    postfix_dsn,
    rcpt_reply,
    send,
)
from tests.support.crafted_feedback import many_recipients_dsn, many_recipients_text

setup = test_feedback_e2e.setup  # the fixture: a gateway with its feedback listener

ANY_BOUNCE_ADDRESS = f"bounces@{BOUNCE_DOMAIN}"


def unverified(kind: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value("gateway_feedback_unverified_total", {"kind": kind, "reason": reason})
        or 0.0
    )


def assert_unverified(gw, reason: str, *, kind: str = "bounce") -> None:
    """The last event: recorded, not acted on, with the reason in its row and its log line."""
    event = gw.store.list_feedback_events(limit=1)[0]
    assert event.kind == kind and not event.acted and event.recipient is None
    assert event.details["unverified"] == reason
    assert event.action.startswith(f"not acted on (unverified: {reason})")
    line = [e for e in events(gw, "feedback") if e.get("feedback") == str(event.id)][0]
    assert (line["verified"], line["unverified"]) == ("no", reason)
    assert line["action"] == event.action


def test_bounce_without_a_mail_id_suppresses_nobody(setup):
    """The attack of issue #11 item 9: a DSN with no mail ID naming an address the gateway
    mails, status 5.1.1, used to suppress that address for every customer."""
    gw, mta, port = setup()
    send(gw, mta, "anna@example.org")
    before = unverified("bounce", "no-id")
    forged = postfix_dsn(
        ANY_BOUNCE_ADDRESS, "anna@example.org", b"From: someone@else.example\r\nSubject: hi\r\n\r\n"
    )
    code, _ = deliver_feedback(port, "", ANY_BOUNCE_ADDRESS, forged)
    assert code == 250
    assert gw.store.list_suppressions() == []
    assert_unverified(gw, "no-id")
    assert unverified("bounce", "no-id") == before + 1
    assert rcpt_reply(gw, "anna@example.org")[0] == 250


def test_bounce_with_a_forged_mail_id_suppresses_nobody(setup):
    gw, mta, port = setup()
    verp, relayed = send(gw, mta, "ben@example.org")
    genuine = mail_id_of(verp)
    other_key = MailIdCodec({0: b"not our key, not our key, not ours"}, 0)
    forged = other_key.finalize(genuine[:16], 1, "ben@example.org")
    forged_verp = f"m-{forged}@{BOUNCE_DOMAIN}"
    before = unverified("bounce", "forged-id")
    raw = postfix_dsn(forged_verp, "ben@example.org", relayed.replace(genuine.encode(), forged.encode()))
    assert deliver_feedback(port, "", forged_verp, raw)[0] == 250
    assert gw.store.list_suppressions() == []
    assert_unverified(gw, "forged-id")
    assert unverified("bounce", "forged-id") == before + 1
    assert rcpt_reply(gw, "ben@example.org")[0] == 250


def test_bounce_with_a_genuine_id_but_another_recipient_suppresses_nobody(setup):
    """Whoever received our mail knows its VERP address and ID: a bounce they make up for
    another address must neither suppress that address nor the ID's own recipient."""
    gw, mta, port = setup()
    verp, relayed = send(gw, mta, "carl@example.org")
    send(gw, mta, "victim@example.org")
    before = unverified("bounce", "recipient-mismatch")
    raw = postfix_dsn(verp, "victim@example.org", relayed)
    assert deliver_feedback(port, "", verp, raw)[0] == 250
    assert gw.store.list_suppressions() == []
    assert_unverified(gw, "recipient-mismatch")
    event = gw.store.list_feedback_events(limit=1)[0]
    assert event.mail_id == mail_id_of(verp) and event.mail_id_status == "genuine"
    assert unverified("bounce", "recipient-mismatch") == before + 1
    line = [e for e in events(gw, "feedback") if e.get("feedback") == str(event.id)][0]
    assert line["level"] == "warning" and line["reported"] == "victim@example.org"
    assert rcpt_reply(gw, "victim@example.org")[0] == 250
    assert rcpt_reply(gw, "carl@example.org")[0] == 250


def test_bounce_naming_the_mail_id_in_the_returned_header_and_its_recipient_suppresses(setup):
    """No VERP (sent to the bounce domain's plain address), the X-Mailing-ID of the returned
    headers verifies and the Final-Recipient is the one it was minted for: acted on."""
    gw, mta, port = setup()
    verp, relayed = send(gw, mta, "dora@example.org")
    raw = postfix_dsn(
        ANY_BOUNCE_ADDRESS, "dora@example.org", relayed.replace(f"Return-Path: <{verp}>".encode(), b"")
    )
    assert deliver_feedback(port, "", ANY_BOUNCE_ADDRESS, raw)[0] == 250
    entry = gw.store.find_suppression(None, "dora@example.org")
    assert entry is not None and entry.is_global and entry.mail_id == mail_id_of(verp)
    event = gw.store.list_feedback_events(limit=1)[0]
    assert event.acted and event.attribution == "header" and "unverified" not in event.details
    line = [e for e in events(gw, "feedback") if e.get("feedback") == str(event.id)][0]
    assert line["verified"] == "yes" and "unverified" not in line
    assert rcpt_reply(gw, "dora@example.org")[0] == 550


def test_complaint_without_a_mail_id_changes_nothing(setup):
    gw, mta, port = setup(complaint_min_messages=1)
    send(gw, mta, "erik@example.org")
    before = unverified("complaint", "no-id")
    original = (
        b"From: Shop News <news@customer.example>\r\nTo: erik@example.org\r\n"
        b"Subject: Autumn offers\r\n\r\nHello\r\n"
    )
    assert deliver_feedback(port, "fbl@isp.example", FBL, arf_report(original, "erik@example.org"))[0] == 250
    assert gw.store.list_suppressions() == []
    assert_unverified(gw, "no-id", kind="complaint")
    assert unverified("complaint", "no-id") == before + 1
    assert gw.store.count_complaints(gw.store.require_customer("acme").id, 0) == 0


def _noop_latencies(gw, stop: threading.Event, out: list[float]) -> None:
    with gw.client() as smtp:
        while not stop.is_set():
            start = time.perf_counter()
            assert smtp.noop()[0] == 250
            out.append(time.perf_counter() - start)
            time.sleep(0.01)


def test_crafted_bounces_do_not_slow_a_submission_session(setup):
    """Six crafted bounces (100 recipients, ~75 KB: seconds of CPU each before the fix) taken
    in at once: a customer's session on the same gateway keeps answering NOOP about as fast
    as before (relative to its own baseline; generous margin for a shared machine)."""
    gw, mta, port = setup()
    baseline: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_noop_latencies, args=(gw, stop, baseline))
    probe.start()
    time.sleep(1.0)
    stop.set()
    probe.join()

    crafted = [many_recipients_dsn(seed) if seed % 2 else many_recipients_text(seed) for seed in range(6)]
    replies: list[int] = []

    def bounce(raw: bytes) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as smtp:
            replies.append(smtp.sendmail("", [ANY_BOUNCE_ADDRESS], raw) and 0 or 250)

    under_load: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_noop_latencies, args=(gw, stop, under_load))
    senders = [threading.Thread(target=bounce, args=(raw,)) for raw in crafted]
    probe.start()
    started = time.perf_counter()
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(300)
    took = time.perf_counter() - started
    stop.set()
    probe.join()

    assert replies == [250] * 6
    assert len(gw.store.list_feedback_events()) == 6
    assert gw.store.list_suppressions() == []
    assert len(under_load) >= 5, (took, under_load)
    quiet, loaded = statistics.median(baseline), statistics.median(under_load)
    assert loaded < 10 * quiet + 0.05, (quiet, loaded, max(under_load), took)
