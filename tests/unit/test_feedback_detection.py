"""Issue 13 "Detection you can trust": one test per new rule row (a minimal DSN the row must
classify), recipient extraction, forwarded bounces, and hand-written samples of what the
public documentation of common MTAs and providers says their bounces look like
(tests/fixtures/bounces, see its README)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.feedback import rules
from gateway.feedback.classify import analyze
from gateway.feedback.dsn import _recipient_from_field
from tests.unit.test_feedback_classify import dsn

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"


# --- one minimal DSN per rule row ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "diagnostic", "kind", "bounce_class", "rule"),
    [
        # challenge-response / allowlist: not a bounce at all
        ("5.7.1", "smtp; 550 5.7.1 Sender not pre-approved", "other", "none", "challenge-response"),
        ("5.0.0", "smtp; 550 Your message requires confirmation", "other", "none", "challenge-response"),
        ("4.7.0", "X-Notice; Your message has been waitlisted", "other", "none", "challenge-response"),
        # a sender-side "does not exist" stays ours, whatever else the text says
        ("5.0.0", "smtp; 550 Sender domain does not exist", "bounce", "not-recipient-fault", "bad-sender"),
        ("5.0.0", "smtp; 550 Unroutable sender address", "bounce", "not-recipient-fault", "bad-sender"),
        (
            "5.7.1",
            "smtp; 554 5.7.1 Your account has been suspended",
            "bounce",
            "not-recipient-fault",
            "bad-sender",
        ),
        # our HELO name "not found" is about us, not the recipient's domain
        (
            "5.7.1",
            "smtp; 550 5.7.1 <mta.esp.example>: Helo command rejected: Host not found",
            "bounce",
            "not-recipient-fault",
            "authentication",
        ),
        # Google Groups refusing a post; Orange's OFR_506 spam refusal
        (
            "5.0.0",
            "smtp; 550 You do not have permission to post to this group, see "
            "https://groups.google.com/support/",
            "bounce",
            "not-recipient-fault",
            "group-posting",
        ),
        (
            "5.2.0",
            "smtp; 550 5.2.0 Mail rejete. Mail rejected. OFR_506 [506]",
            "bounce",
            "not-recipient-fault",
            "spam",
        ),
        # the words beat a generic code
        ("5.0.0", "smtp; 550 5.0.0 Mailbox does not exist", "bounce", "hard", "mailbox-gone"),
        ("5.7.1", "smtp; 550 5.7.1 Mailbox does not exist", "bounce", "hard", "mailbox-gone"),
        ("5.0.0", "smtp; 550 Mailbox not active", "bounce", "hard", "mailbox-gone"),
        ("5.0.0", "smtp; 554 This account has been deactivated", "bounce", "hard", "mailbox-gone"),
        (
            "5.0.0",
            "smtp; 554 This account has been disabled or discontinued [#102]",
            "bounce",
            "hard",
            "mailbox-gone",
        ),
        ("5.7.1", "smtp; 550 5.7.1 Sorry, no mailbox here by that name", "bounce", "hard", "mailbox-gone"),
        ("5.0.0", "smtp; 550 Benutzer unbekannt", "bounce", "hard", "mailbox-gone"),
        ("5.0.0", "smtp; 550 Adresse destinataire inexistante", "bounce", "hard", "mailbox-gone"),
        ("5.0.0", "smtp; 550 El usuario no existe", "bounce", "hard", "mailbox-gone"),
        # the resolver's and qmail's words for a domain without a host
        ("5.0.0", "smtp; Name or service not known", "bounce", "hard", "unknown-domain"),
        ("5.4.0", "smtp; getaddrinfo ENOTFOUND nosuch.example", "bounce", "hard", "unknown-domain"),
        (
            "5.7.1",
            "smtp; 553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
            "bounce",
            "hard",
            "unknown-domain",
        ),
        # mailbox full worded as a size limit or "too many mails"
        ("5.0.0", "smtp; 552 Mailbox size limit exceeded", "bounce", "soft", "mailbox-full"),
        ("5.0.0", "smtp; 552 User mailbox exceeds allowed size", "bounce", "soft", "mailbox-full"),
        ("5.0.0", "smtp; 552 The user has too many mails on the server", "bounce", "soft", "mailbox-full"),
        ("5.0.0", "smtp; 554 Der Empfaenger hat zu viele Mails", "bounce", "soft", "mailbox-full"),
        ("5.0.0", "smtp; 550 Boite du destinataire pleine", "bounce", "soft", "mailbox-full"),
        ("5.0.0", "smtp; 550 Buzon lleno", "bounce", "soft", "mailbox-full"),
    ],
)
def test_rule_row_classifies_its_minimal_dsn(
    status: str, diagnostic: str, kind: str, bounce_class: str, rule: str
) -> None:
    result = analyze(dsn(status=status, diagnostic=diagnostic))
    assert (result.kind, result.bounce_class) == (kind, bounce_class), result.reason
    assert rule in result.reason


def test_sender_side_wording_is_not_the_recipients_mailbox() -> None:
    """The new mailbox-gone row must not take our own bounce address for the recipient's."""
    result = rules.classify("5.0.0", "550", "Sender address rejected: sender address does not exist")
    assert result.bounce_class == rules.NRF


def test_a_temporary_code_never_makes_the_new_hard_rows_hard() -> None:
    assert rules.classify("4.0.0", "450", "Mailbox not active").bounce_class == rules.SOFT
    assert rules.classify(None, "451", "Name or service not known").bounce_class == rules.SOFT
    # "host not found, try again" is the resolver's temporary answer
    assert rules.classify("5.0.0", "550", "host not found, try again").rule == "dns-temporary"


def test_unknown_user_said_after_data_stays_soft() -> None:
    """The generic "no such user" after DATA is a filter's wording (sisimai: filtered)."""
    result = rules.classify("5.0.0", "550", "kijitora@example.org... No such user", "data")
    assert result.bounce_class == rules.SOFT


# --- recipients -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("rfc822; bob@example.com", "bob@example.com"),
        ("rfc822;smtp=bob@example.com", "bob@example.com"),
        ("rfc822; SMTP:bob@example.com", "bob@example.com"),
        ("X400; c=DE;a= ;p=Org;o=Exchange;s=Doe;g=Bob;dda:SMTP=bob@example.com;", "bob@example.com"),
        ("x400; /C=DE/ADMD= /PRMD=Org/O=X/S=Doe/RFC-822=bob(a)example.com/", "bob@example.com"),
        ("rfc822; IMCEASMTP-bob+40example+2Ecom@gw.example", "bob@example.com"),
        ("rfc822; unknown", None),
        ("rfc822; <>", None),
        ("rfc822; undisclosed-recipients:;", None),
        ("rfc822; @mx.example.org", None),
    ],
)
def test_recipient_field_is_reduced_to_the_mail_address(field: str, expected: str | None) -> None:
    assert _recipient_from_field(field) == expected


def test_x400_final_recipient_gives_the_mail_address() -> None:
    final = "Final-Recipient: X400; c=DE;a= ;p=Org;o=Exchange;s=Doe;g=Alice;dda:SMTP=alice@example.org;"
    raw = dsn().replace(b"Final-Recipient: rfc822; alice@example.org", final.encode())
    raw = raw.replace(b"Original-Recipient: rfc822;alice@example.org\n", b"")
    result = analyze(raw)
    assert result.recipients == ["alice@example.org"]


def test_delayed_report_with_a_placeholder_takes_the_recipient_from_the_text() -> None:
    raw = (FIXTURES / "exchange_delayed_placeholder.eml").read_bytes()
    result = analyze(raw)
    assert result.kind == "delay"
    assert result.recipients == ["carol@contoso.example"]


def test_text_bounce_naming_several_addresses_picks_the_failed_one() -> None:
    raw = b"""\
From: MAILER-DAEMON@mx.example.org
To: bounce@esp.example
Subject: Undeliverable mail

For help, write to helpdesk-team@example.org or see the directory at whois@example.org.

Delivery to the following recipient failed permanently:

    alice@example.org

Technical details: 550 5.1.1 user unknown
"""
    result = analyze(raw)
    assert result.recipients == ["alice@example.org"]
    assert result.bounce_class == "hard"


# --- forwarded by a person ------------------------------------------------------------------


def test_bounce_forwarded_by_a_person_with_the_word_abuse_is_not_a_complaint() -> None:
    result = analyze((FIXTURES / "forwarded_bounce_abuse.eml").read_bytes())
    assert result.kind == "bounce"  # what the forwarded report says, never a complaint
    assert result.recipients == ["gone@rcpt.example"]


def test_report_forwarded_by_a_person_keeps_its_own_feedback_type() -> None:
    result = analyze((FIXTURES / "forwarded_not_spam_report.eml").read_bytes())
    assert result.kind == "other"
    assert result.feedback_type == "not-spam"


@pytest.mark.parametrize("subject", ["Spring sale", "Delivery failed? Order again - rejected offers"])
def test_a_forwarded_newsletter_is_still_a_complaint(subject: str) -> None:
    """The forward path keeps working for our own mail forwarded to abuse@, whatever its
    subject says."""
    raw = f"""\
From: Petra <petra@customer.example>
To: abuse@esp.example
Subject: Fwd: {subject}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="F"

--F
Content-Type: text/plain

Spam! abuse!

--F
Content-Type: message/rfc822

From: Shop <news@shop.example>
To: petra@customer.example
Subject: {subject}

Buy now. Questions? 550 5.1.1 is our shop's street number.

--F--
""".encode()
    result = analyze(raw)
    assert result.kind == "complaint"
    assert result.recipients == ["petra@customer.example"]


# --- hand-written samples per MTA / provider / language --------------------------------------

SAMPLES = [
    # file, kind, class, recipients
    ("exchange_recipient_not_found.eml", "bounce", "hard", ["bob@contoso.example"]),
    ("exchange_x400_recipient.eml", "bounce", "hard", ["jane.doe@fabrikam.example"]),
    ("exchange_imcea_smtp_prefix.eml", "bounce", "soft", ["max.muster@fabrikam.example"]),
    ("exchange_delayed_placeholder.eml", "delay", "none", ["carol@contoso.example"]),
    ("qmail_5_7_1_mailbox_does_not_exist.eml", "bounce", "hard", ["anna@qmail.example"]),
    ("qmail_rcpthosts.eml", "bounce", "hard", ["anna@gone-domain.example"]),
    ("qmail_no_mailbox_text_only.eml", "bounce", "hard", ["otto@qmail.example"]),
    ("exim_mailbox_not_active.eml", "bounce", "hard", ["paul@exim-rcpt.example"]),
    ("exim_name_or_service_not_known.eml", "bounce", "hard", ["eva@typo-domain.example"]),
    ("postfix_mailbox_size_limit.eml", "bounce", "soft", ["lena@postfix-rcpt.example"]),
    ("postfix_challenge_response.eml", "other", "none", ["tom@cr-rcpt.example"]),
    ("postfix_yandex_no_such_user.eml", "bounce", "hard", ["ivan@yandex-rcpt.example"]),
    ("sendmail_account_deactivated.eml", "bounce", "hard", ["karl@sendmail-rcpt.example"]),
    ("yahoo_disabled_or_discontinued.eml", "bounce", "hard", ["jim@yahoo-rcpt.example"]),
    ("gmail_over_quota.eml", "bounce", "soft", ["sue@gmail-rcpt.example"]),
    ("gmail_does_not_exist.eml", "bounce", "hard", ["ray@gmail-rcpt.example"]),
    ("outlook_com_mailbox_unavailable.eml", "bounce", "hard", ["ann@outlook-rcpt.example"]),
    ("gmx_zu_viele_mails.eml", "bounce", "soft", ["jonas@web-rcpt.example"]),
    ("gmx_postfach_existiert_nicht.eml", "bounce", "hard", ["mia@web-rcpt.example"]),
    ("orange_boite_pleine.eml", "bounce", "soft", ["luc@orange-rcpt.example"]),
    ("orange_adresse_inexistante.eml", "bounce", "hard", ["zoe@orange-rcpt.example"]),
    ("spanish_buzon_lleno.eml", "bounce", "soft", ["pablo@correo-rcpt.example"]),
    ("spanish_cuenta_no_existe.eml", "bounce", "hard", ["lucia@correo-rcpt.example"]),
    ("challenge_response_notice.eml", "other", "none", ["hans@cr-rcpt.example"]),
    ("text_bounce_several_addresses.eml", "bounce", "hard", ["fritz.meier@uni.example"]),
    ("forwarded_bounce_abuse.eml", "bounce", "hard", ["gone@rcpt.example"]),
    ("forwarded_not_spam_report.eml", "other", "none", ["reader@isp.example"]),
]


def test_every_sample_is_listed() -> None:
    assert {p.name for p in FIXTURES.glob("*.eml")} == {s[0] for s in SAMPLES}


@pytest.mark.parametrize(("name", "kind", "bounce_class", "recipients"), SAMPLES)
@pytest.mark.parametrize("crlf", [False, True])
def test_sample(name: str, kind: str, bounce_class: str, recipients: list[str], crlf: bool) -> None:
    raw = (FIXTURES / name).read_bytes()
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    result = analyze(raw)
    assert (result.kind, result.bounce_class, result.recipients) == (kind, bounce_class, recipients), (
        result.reason
    )
