"""Hand-made returned mail: the cases RULES.md ("Bounces", "Complaints") names explicitly."""

from __future__ import annotations

import re

import pytest

from gateway.feedback import rules
from gateway.feedback.classify import KINDS, analyze, to_json_dict

MAIL_ID = "ehq3kz7m2xw5vyab4cdn6pr2st3uv4wx5yz6ab7cd2ef3gh4"
OTHER_ID = "fa2b3c4d5e6f7g2h3i4j5k6l7m2n3o4p5q6r7s2t3u4v5w6x"
BOUNCE_DOMAIN = "bounces.esp.example"
VERP = f"m-{MAIL_ID}@{BOUNCE_DOMAIN}"


def dsn(
    *,
    action: str = "failed",
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <alice@example.org>: Recipient address rejected: User unknown",
    to: str = VERP,
    original_headers: str = "",
    extra_groups: str = "",
) -> bytes:
    """A Postfix-style RFC 3464 report; the original comes back as text/rfc822-headers."""
    original = original_headers or (
        "From: Shop <news@shop.example>\n"
        "To: alice@example.org\n"
        "Subject: Spring sale\n"
        "Message-ID: <abc@shop.example>\n"
        "Date: Mon, 02 Mar 2026 10:00:00 +0100\n"
    )
    return f"""\
From: MAILER-DAEMON@mx.example.org (Mail Delivery System)
To: {to}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

This is the mail system at host mx.example.org.

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.org
Original-Envelope-Id: envid123

Final-Recipient: rfc822; alice@example.org
Original-Recipient: rfc822;alice@example.org
Action: {action}
Status: {status}
Remote-MTA: dns; mx.example.org
Diagnostic-Code: {diagnostic}
{extra_groups}
--B
Content-Type: text/rfc822-headers

{original}
--B--
""".encode()


# --- mail IDs -----------------------------------------------------------------------------


def test_verp_from_envelope_recipient_comes_first() -> None:
    headers = f"From: a@shop.example\nX-Mailing-ID: {OTHER_ID}\n"
    raw = dsn(to="bounce@mx.example.org", original_headers=headers)
    result = analyze(raw, envelope_recipients=[VERP], bounce_domains=[BOUNCE_DOMAIN])
    assert result.mail_ids[:2] == [MAIL_ID, OTHER_ID]


def test_verp_needs_a_bounce_domain_when_configured() -> None:
    raw = dsn(to="bounce@mx.example.org")
    result = analyze(
        raw, envelope_recipients=[f"m-{MAIL_ID}@elsewhere.example"], bounce_domains=[BOUNCE_DOMAIN]
    )
    assert MAIL_ID not in result.mail_ids


def test_verp_from_to_header_and_custom_prefix() -> None:
    raw = dsn(to=f"bnc-{MAIL_ID}@{BOUNCE_DOMAIN}")
    assert analyze(raw, verp_prefix="bnc").mail_ids[0] == MAIL_ID
    assert MAIL_ID not in analyze(raw, verp_prefix="m").mail_ids[:1]


def test_verp_survives_srs_rewriting_by_a_forwarder() -> None:
    srs = f"SRS0=HhH1=2A={BOUNCE_DOMAIN}=m-{MAIL_ID}@forwarder.example"
    result = analyze(dsn(to="x@y.example"), envelope_recipients=[srs], bounce_domains=[BOUNCE_DOMAIN])
    assert result.mail_ids[0] == MAIL_ID


def test_mailing_id_in_returned_headers() -> None:
    headers = f"From: Shop <news@shop.example>\nTo: alice@example.org\nSubject: Hi\nX-Mailing-ID: {MAIL_ID}\n"
    result = analyze(dsn(to="bounce@mx.example.org", original_headers=headers))
    assert result.mail_ids[0] == MAIL_ID
    assert result.original_headers["X-Mailing-ID"] == MAIL_ID
    assert result.original_headers["Subject"] == "Hi"


def test_mailid_header_name_is_configurable() -> None:
    headers = f"From: a@shop.example\nX-ESP-ID: {MAIL_ID}\n"
    result = analyze(dsn(to="bounce@mx.example.org", original_headers=headers), mailid_header="X-ESP-ID")
    assert result.mail_ids[0] == MAIL_ID
    assert result.original_headers["X-ESP-ID"] == MAIL_ID


def test_pattern_with_lookarounds_like_the_mailid_module() -> None:
    pattern = re.compile(r"(?<![A-Za-z0-9])[e-h][a-z2-7]{47}(?![A-Za-z0-9])")
    result = analyze(dsn(), mailid_pattern=pattern)
    assert result.mail_ids[0] == MAIL_ID


def test_inline_id_in_a_non_standard_bounce() -> None:
    raw = f"""\
From: Mail Delivery System <Mailer-Daemon@mx.example.org>
To: bounce@mx.example.org
Subject: Mail delivery failed: returning message to sender
X-Failed-Recipients: alice@example.org
Auto-Submitted: auto-replied

This message was created automatically by mail delivery software.

A message that you sent could not be delivered to one or more of its
recipients. This is a permanent error. The following address(es) failed:

  alice@example.org
    SMTP error from remote mail server after RCPT TO:<alice@example.org>:
    host mx.example.org [192.0.2.1]: 550 5.1.1 <alice@example.org>: User unknown

------ This is a copy of the message, including all the headers. ------

Return-path: <news@shop.example>
Received: from shop.example by mx.example.org
From: Shop <news@shop.example>
To: alice@example.org
Subject: Spring sale
X-Mailing-ID: {MAIL_ID}

Hello
""".encode()
    result = analyze(raw)
    assert (result.kind, result.bounce_class, result.status) == ("bounce", "hard", "5.1.1")
    assert result.recipients == ["alice@example.org"]
    assert result.mail_ids[0] == MAIL_ID
    assert result.original_headers["Subject"] == "Spring sale"


# --- bounce classes -----------------------------------------------------------------------


def test_unknown_user_is_hard() -> None:
    result = analyze(dsn())
    assert (result.kind, result.bounce_class, result.status) == ("bounce", "hard", "5.1.1")
    assert result.recipients == ["alice@example.org"]
    assert result.reason.startswith("unknown-user")


def test_delayed_dsn_is_not_a_bounce() -> None:
    result = analyze(dsn(action="delayed", status="4.4.1", diagnostic="smtp; 451 4.4.1 connection timed out"))
    assert result.kind == "delay"
    assert result.bounce_class == "none"
    assert result.recipients == ["alice@example.org"]


def test_delivered_dsn_is_other() -> None:
    result = analyze(dsn(action="delivered", status="2.0.0", diagnostic="smtp; 250 2.0.0 OK"))
    assert (result.kind, result.bounce_class) == ("other", "none")


def test_5_2_2_mailbox_full_is_soft_even_when_permanent() -> None:
    result = analyze(dsn(status="5.2.2", diagnostic="smtp; 552 5.2.2 <alice@example.org>: Mailbox full"))
    assert (result.bounce_class, result.status) == ("soft", "5.2.2")
    assert result.reason.startswith("mailbox-full")


def test_5_7_1_policy_block_is_not_recipient_fault() -> None:
    result = analyze(dsn(status="5.7.1", diagnostic="smtp; 550 5.7.1 Message rejected due to local policy"))
    assert result.bounce_class == "not-recipient-fault"


def test_blocklist_text_wins_over_a_generic_code() -> None:
    diagnostic = "smtp; 554 5.0.0 Service unavailable; Client host [192.0.2.9] blocked using zen.spamhaus.org"
    result = analyze(dsn(status="5.0.0", diagnostic=diagnostic))
    assert result.bounce_class == "not-recipient-fault"
    assert result.reason.startswith("blocklisted")


def test_gmail_5_2_1_inactive_is_hard() -> None:
    diagnostic = (
        "smtp; 550-5.2.1 The email account that you tried to reach is inactive. "
        "For more information, go to 550 5.2.1 https://support.google.com/mail/?p=DisabledUser"
    )
    result = analyze(dsn(status="5.2.1", diagnostic=diagnostic))
    assert result.bounce_class == "hard"
    assert result.reason.startswith("gmail-inactive")


def test_rate_limit_is_not_recipient_fault() -> None:
    diagnostic = "smtp; 421 4.7.28 Our system has detected an unusual rate of unsolicited mail"
    result = analyze(dsn(status="4.7.28", diagnostic=diagnostic))
    assert result.bounce_class == "not-recipient-fault"


def test_per_recipient_results_for_a_mixed_report() -> None:
    second = """
Final-Recipient: rfc822; bob@example.net
Action: delayed
Status: 4.2.2
Diagnostic-Code: smtp; 452 4.2.2 Mailbox full
"""
    result = analyze(dsn(extra_groups=second))
    assert result.kind == "bounce"
    assert result.recipients == ["alice@example.org"]
    assert [(r.recipient, r.action, r.bounce_class) for r in result.per_recipient] == [
        ("alice@example.org", "failed", "hard"),
        ("bob@example.net", "delayed", "none"),
    ]


@pytest.mark.parametrize(
    ("status", "reply", "text", "phase", "expected"),
    [
        ("5.1.1", "550", "User unknown", None, "hard"),
        ("5.1.1", "550", "Mailbox full", None, "soft"),  # wrong code, right text
        ("5.1.10", "550", "", None, "hard"),  # null MX
        ("5.7.27", "550", "", None, "hard"),
        ("5.1.6", "551", "User has moved", None, "hard"),
        ("5.4.4", None, "Host or domain name not found", None, "hard"),
        ("4.4.4", None, "Host or domain name not found", None, "soft"),  # never hard on 4.x.x
        ("5.2.1", "550", "Mailbox disabled", None, "soft"),
        ("4.4.7", None, "delivery time expired", None, "soft"),
        (None, "421", "", None, "not-recipient-fault"),
        ("5.3.4", "552", "Message size exceeds fixed limit", None, "not-recipient-fault"),
        ("5.7.1", "554", "Client host rejected: cannot find your hostname", None, "not-recipient-fault"),
        ("5.0.0", "550", "Unknown user alice@example.org", "data", "soft"),  # said after DATA
        ("5.0.0", "550", "Unknown user alice@example.org", "rcpt", "hard"),
        (None, None, "no such user here", None, "hard"),  # no code at all: the text decides
        (None, None, "", None, "soft"),  # nothing understood: counted, not suppressed
    ],
)
def test_rule_table(
    status: str | None, reply: str | None, text: str, phase: str | None, expected: str
) -> None:
    assert rules.classify(status, reply, text, phase).bounce_class == expected


def test_rule_table_rows_are_well_formed() -> None:
    for rule in rules.RULES:
        assert rule.bounce_class in rules.CLASSES
        assert rule.status or rule.reply or rule.text, rule.name


# --- complaints, auto-replies ---------------------------------------------------------------


def test_inline_forward_containing_an_id() -> None:
    raw = f"""\
From: Alice <alice@example.org>
To: abuse@esp.example
Subject: Fwd: Spring sale
Content-Type: text/plain; charset=utf-8

I never subscribed to this!

---------- Forwarded message ---------
From: Shop <news@shop.example>
Date: Mon, 2 Mar 2026 at 10:00
Subject: Spring sale
To: <alice@example.org>

Unsubscribe: https://esp.example/u/{MAIL_ID}
""".encode()
    result = analyze(raw)
    assert result.kind == "complaint"
    assert result.recipients == ["alice@example.org"]
    assert MAIL_ID in result.mail_ids
    assert result.original_headers["Subject"] == "Spring sale"


def test_pasted_id_without_forward_marker_is_a_complaint() -> None:
    raw = f"""\
From: bob@example.net
To: abuse@esp.example
Subject: spam from your customer

Headers of the spam I got:
X-Mailing-ID: {MAIL_ID}
""".encode()
    result = analyze(raw)
    assert result.kind == "complaint"
    assert result.mail_ids == [MAIL_ID]


def test_forward_as_nested_attachment() -> None:
    raw = f"""\
From: helpdesk@example.org
To: abuse@esp.example
Subject: Fwd: Fwd: spam
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="O"

--O
Content-Type: text/plain

see attached

--O
Content-Type: message/rfc822

From: carol@example.org
To: helpdesk@example.org
Subject: Fwd: spam
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="I"

--I
Content-Type: text/plain

please block

--I
Content-Type: message/rfc822

From: Shop <news@shop.example>
To: carol@example.org
Subject: Spring sale
X-Mailing-ID: {MAIL_ID}

Buy now
--I--
--O--
""".encode()
    result = analyze(raw)
    assert result.kind == "complaint"
    assert result.recipients == ["carol@example.org"]
    assert result.mail_ids[0] == MAIL_ID
    assert result.original_headers["Subject"] == "Spring sale"


def _arf(feedback_type: str) -> bytes:
    return f"""\
From: fbl@isp.example
To: fbl@esp.example
Subject: FW: complaint
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="R"

--R
Content-Type: text/plain

This is an email abuse report.

--R
Content-Type: message/feedback-report

Feedback-Type: {feedback_type}
User-Agent: SomeFBL/1.0
Version: 1
Original-Mail-From: <{VERP}>
Original-Rcpt-To: <alice@example.org>
Arrival-Date: Mon, 02 Mar 2026 10:00:00 +0000
Source-IP: 192.0.2.1
Reported-Domain: shop.example

--R
Content-Type: text/rfc822-headers

From: Shop <news@shop.example>
To: alice@example.org
Subject: Spring sale
X-Mailing-ID: {MAIL_ID}
X-Campaign-ID: spring-2026

--R--
""".encode()


def test_arf_abuse_is_a_complaint_with_verp_and_header_ids() -> None:
    result = analyze(_arf("abuse"), bounce_domains=[BOUNCE_DOMAIN])
    assert (result.kind, result.feedback_type) == ("complaint", "abuse")
    assert result.recipients == ["alice@example.org"]
    assert result.mail_ids == [MAIL_ID]
    assert result.original_headers["X-Campaign-ID"] == "spring-2026"


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_not_spam_and_auth_failure_are_not_complaints(feedback_type: str) -> None:
    result = analyze(_arf(feedback_type))
    assert result.kind == "other"
    assert result.feedback_type == feedback_type


def test_auto_reply() -> None:
    raw = f"""\
From: Alice <alice@example.org>
To: {VERP}
Subject: Abwesenheitsnotiz: Spring sale
Auto-Submitted: auto-replied

Ich bin bis 10. März nicht im Büro.
""".encode()
    result = analyze(raw)
    assert (result.kind, result.bounce_class) == ("auto-reply", "none")
    assert result.recipients == ["alice@example.org"]
    assert result.mail_ids[0] == MAIL_ID


def test_out_of_office_subject_alone_is_an_auto_reply() -> None:
    raw = b"From: bob@example.net\nTo: news@shop.example\nSubject: Out of Office: Spring sale\n\nAway.\n"
    assert analyze(raw).kind == "auto-reply"


# --- robustness ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage \x80\x81",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n"
        b"Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n\n!!!!\n",
        b"From: =?utf-8?b?////?= <\xff@\xfe>\nSubject: =?bogus?q?x?=\n\n" + b"A" * 100_000,
        b"Content-Type: multipart/mixed; boundary=a\n\n" + b"--a\nContent-Type: message/rfc822\n\n" * 300,
        b"From: MAILER-DAEMON\nSubject: failure notice\n\n<" + b"x" * 5000 + b"@" + b"y." * 2000 + b">:\n550",
    ],
)
def test_malformed_bytes_do_not_raise(raw: bytes) -> None:
    result = analyze(raw)
    assert result.kind in KINDS
    assert result.bounce_class in rules.CLASSES


def test_to_json_dict_has_exactly_the_documented_keys() -> None:
    result = analyze(dsn())
    out = to_json_dict("bounce.eml", result, mail_id_valid=True)
    assert set(out) == {"file", "kind", "recipients", "class", "status", "reason", "mail_id", "mail_id_valid"}
    assert out["class"] == "hard" and out["mail_id"] == MAIL_ID and out["mail_id_valid"] is True
