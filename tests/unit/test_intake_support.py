"""Shared helpers for the intake, suppression and feedback tests (this module holds no tests).

Builders of realistic returned mail: an RFC 3464 bounce as Postfix writes it, an RFC 5965 ARF
report as the big mailbox providers send it, a person's forward, a Microsoft JMRP report.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.config import parse_config
from gateway.feedback.intake import Intake
from gateway.mailid import MailIdCodec
from gateway.store import MessageRecord, open_store

BOUNCE_DOMAIN = "bounces.esp.example"
FBL = "fbl@esp.example"
ABUSE = "abuse@esp.example"


def original_headers(mail_id: str, rcpt: str, *, verp: bool = True, campaign: str = "autumn-2026") -> str:
    return_path = f"m-{mail_id}@{BOUNCE_DOMAIN}" if verp else "news@customer.example"
    return (
        f"Return-Path: <{return_path}>\r\n"
        f"X-Mailing-ID: {mail_id}\r\n"
        "Feedback-ID: autumn-2026:acme:newsletter:espgw\r\n"
        "From: Shop News <news@customer.example>\r\n"
        f"To: {rcpt}\r\n"
        "Subject: Autumn offers\r\n"
        "Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <autumn-1@customer.example>\r\n"
        f"X-Campaign-ID: {campaign}\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
    )


def dsn(
    mail_id: str | None,
    rcpt: str,
    *,
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown in virtual mailbox table",
    action: str = "failed",
    verp: bool = True,
    header_id: str | None = None,
) -> bytes:
    """A Postfix bounce (RFC 3464 multipart/report) for a mail we relayed with VERP sender
    m-<mail_id>@bounces.esp.example. `header_id` puts another ID into the returned headers."""
    diag = diagnostic.format(rcpt=rcpt)
    to = f"m-{mail_id}@{BOUNCE_DOMAIN}" if (mail_id and verp) else f"bounces@{BOUNCE_DOMAIN}"
    returned = original_headers(header_id or mail_id or "", rcpt, verp=verp)
    if not (header_id or mail_id):
        returned = returned.replace("X-Mailing-ID: \r\n", "")
    text = (
        "This is the mail system at host mx.example.org.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients. It's attached below.\r\n\r\n"
        "For further assistance, please send mail to postmaster.\r\n\r\n"
        "                   The mail system\r\n\r\n"
        f"<{rcpt}>: host mx.example.org[192.0.2.10] said: {diag} (in reply to RCPT TO\r\n"
        "    command)\r\n"
    )
    subject = "Undelivered Mail Returned to Sender"
    if action == "delayed":
        text = text.replace("could not\r\nbe delivered", "has not yet\r\nbeen delivered")
        subject = "Delayed Mail (still being retried)"
    return (
        "Return-Path: <>\r\n"
        f"Delivered-To: {to}\r\n"
        "Received: by mx.example.org (Postfix) id 3F2A1C0123; Sat, 28 Nov 2026 09:00:01 +0000\r\n"
        "Date: Sat, 28 Nov 2026 09:00:01 +0000 (UTC)\r\n"
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"Subject: {subject}\r\n"
        f"To: {to}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status;\r\n"
        '\tboundary="3F2A1C0123.1764320401/mx.example.org"\r\n'
        "Message-Id: <20261128090001.3F2A1C0123@mx.example.org>\r\n"
        "\r\n"
        "This is a MIME-encapsulated message.\r\n"
        "\r\n"
        "--3F2A1C0123.1764320401/mx.example.org\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        f"{text}"
        "\r\n"
        "--3F2A1C0123.1764320401/mx.example.org\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n"
        "\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "X-Postfix-Queue-ID: 3F2A1C0123\r\n"
        f"X-Postfix-Sender: rfc822; {to}\r\n"
        "Arrival-Date: Sat, 28 Nov 2026 09:00:00 +0000 (UTC)\r\n"
        "\r\n"
        f"Final-Recipient: rfc822; {rcpt}\r\n"
        f"Original-Recipient: rfc822;{rcpt}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Remote-MTA: dns; mx.example.org\r\n"
        f"Diagnostic-Code: smtp; {diag}\r\n"
        "\r\n"
        "--3F2A1C0123.1764320401/mx.example.org\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n"
        "\r\n"
        f"{returned}"
        "\r\n"
        "--3F2A1C0123.1764320401/mx.example.org--\r\n"
    ).encode()


SOFT = {"status": "5.2.2", "diagnostic": "552 5.2.2 <{rcpt}>: Mailbox full, quota exceeded"}
POLICY_BLOCK = {
    "status": "5.7.1",
    "diagnostic": "554 5.7.1 Service unavailable; Client host [198.51.100.7] blocked using zen.spamhaus.org",
}


def arf(
    mail_id: str,
    rcpt: str | None,
    *,
    feedback_type: str = "abuse",
    with_verp: bool = False,
    return_path: bool = True,
) -> bytes:
    """An RFC 5965 feedback report (as AOL/Yahoo/Comcast FBLs send them) about our mail."""
    rcpt_line = f"Original-Rcpt-To: {rcpt}\r\n" if rcpt else ""
    mail_from = f"Original-Mail-From: <m-{mail_id}@{BOUNCE_DOMAIN}>\r\n" if with_verp else ""
    shown_to = rcpt or "redacted@example.org"
    return (
        "From: Feedback Loop <fbl@isp.example>\r\n"
        f"To: {FBL}\r\n"
        "Subject: FW: Autumn offers\r\n"
        "Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
        "Message-ID: <report-1@isp.example>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="fbl-part"\r\n'
        "\r\n"
        "--fbl-part\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "This is an email abuse report for an email message received from IP 203.0.113.5 on "
        "Mon, 30 Nov 2026 07:59:00 +0000.\r\n"
        "\r\n"
        "--fbl-part\r\n"
        "Content-Type: message/feedback-report\r\n"
        "\r\n"
        f"Feedback-Type: {feedback_type}\r\n"
        "User-Agent: ISP-FBL/1.0\r\n"
        "Version: 1\r\n"
        f"{mail_from}"
        f"{rcpt_line}"
        "Arrival-Date: Fri, 27 Nov 2026 10:00:05 +0000\r\n"
        "Source-IP: 203.0.113.5\r\n"
        "Reported-Domain: customer.example\r\n"
        "\r\n"
        "--fbl-part\r\n"
        "Content-Type: message/rfc822\r\n"
        "Content-Disposition: inline\r\n"
        "\r\n"
        f"{original_headers(mail_id, shown_to, verp=return_path)}"
        "\r\n"
        "Hello,\r\n\r\nour autumn offers are here.\r\n"
        "\r\n"
        "--fbl-part--\r\n"
    ).encode()


def forward(mail_id: str, rcpt: str) -> bytes:
    """A person forwards our mail as an attachment to abuse@."""
    return (
        f"From: Anna Example <{rcpt}>\r\n"
        f"To: {ABUSE}\r\n"
        "Subject: Fwd: Autumn offers - SPAM, I never subscribed\r\n"
        "Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n"
        "Message-ID: <fwd-1@example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="fwd"\r\n'
        "\r\n"
        "--fwd\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "I never subscribed to this. Stop it.\r\n"
        "\r\n"
        "--fwd\r\n"
        "Content-Type: message/rfc822\r\n"
        "\r\n"
        f"{original_headers(mail_id, rcpt)}"
        "\r\n"
        "Hello Anna,\r\n"
        "\r\n"
        "--fwd--\r\n"
    ).encode()


class IntakeEnv:
    """A real SQLite (or PostgreSQL) store with customer acme (active) and campaign
    autumn-2026, a codec, and an Intake with a clock the test moves."""

    def __init__(self, tmp_path: Path, url: str | None = None, **intake: Any) -> None:
        self.store = open_store(url or "sqlite:///" + str(tmp_path / "intake.db"))
        self.codec = MailIdCodec.from_key_file(tmp_path / "mailid.key")
        self.config = parse_config(
            {
                "bounce_domain": BOUNCE_DOMAIN,
                "mail_id": {"key_file": str(tmp_path / "mailid.key")},
                "feedback": {"fbl_address": FBL},
                "feedback_intake": {"abuse_addresses": [ABUSE], **intake},
            },
            base_dir=tmp_path,
            source=tmp_path / "config.yaml",
        )
        self.now = time.time()
        self.store.add_customer("acme", status="active")
        self.customer = self.store.require_customer("acme")
        self.campaign = self.store.confirm_campaign("acme", "autumn-2026", by="jane@shop.example")
        self.intake = Intake(self.config, self.store, self.codec, clock=lambda: self.now)

    def send(
        self, rcpt: str, *, result: str = "accepted", customer: Any = None, at: float | None = None
    ) -> str:
        """A relayed message as the engine records it: a final mail ID and a ledger row."""
        customer = customer or self.customer
        at = self.now if at is None else at
        stem = self.codec.new_stem(customer.id, now=at)
        campaign = self.store.get_campaign(customer.id, "autumn-2026")
        mail_id = self.codec.finalize(stem, campaign.id if campaign else 0, rcpt)
        self.store.record_message(
            MessageRecord(
                mail_id,
                customer.id,
                "autumn-2026",
                f"news@{customer.name}.example",
                [rcpt],
                at,
                result,
                "250 2.0.0 Ok: queued as Q1" if result == "accepted" else "550 5.7.1 no",
                "Q1",
                [
                    {
                        "phase": "rcpt",
                        "policy": "suppression",
                        "mode": "enforce",
                        "action": "continue",
                        "reason": f"{rcpt} is not suppressed",
                    }
                ],
            )
        )
        return mail_id

    def forged(self, rcpt: str) -> str:
        """An ID with a valid checksum but a MAC made with another key: "forged"."""
        other = MailIdCodec({0: b"k" * 32}, 0)
        return other.finalize(other.new_stem(self.customer.id), self.campaign.id, rcpt)

    @classmethod
    def session(cls, tmp_path: Path, **intake: Any) -> Iterator[IntakeEnv]:
        """For a module's fixture: `yield from IntakeEnv.session(tmp_path)`."""
        env = cls(tmp_path, **intake)
        yield env
        env.store.close()

    def ingest(self, raw: bytes, **kwargs: Any) -> Any:
        kwargs.setdefault("source", "test")
        return self.intake.ingest(raw, **kwargs)

    def days(self, n: float) -> None:
        self.now += n * 86400
