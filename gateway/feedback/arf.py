"""Complaints: ARF (RFC 5965), Microsoft JMRP, forwards as attachment or inline, and Apple
Mail's one-click unsubscribe mails.

Pure parsing; whether a report is acted on is decided in classify.py (not-spam and
auth-failure reports are not complaints).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import Message

from gateway.mime import returned

from .dsn import original_from_part, split_inline_original

# Feedback types that are not a recipient complaining about our mail.
NOT_COMPLAINT_TYPES = frozenset({"not-spam", "auth-failure", "dmarc"})

# Marks of a forwarded message in the text of a mail written by a person.
# Blanks within the line only ([ \t], possessive): "^[\s>]*" ran across lines, and a body of
# blank lines cost seconds (quadratic); the match now starts at the mark's own line.
FORWARD_MARK_RE = re.compile(
    r"^[ \t>]*+(-{2,}+|_{2,}+|={2,}+)?[ \t]*+("
    r"forwarded message|original message|begin forwarded message|weitergeleitete nachricht"
    r"|urspr[üu]ngliche nachricht|message transf[ée]r[ée]|message d'origine|mensaje original"
    r"|mensaje reenviado|messaggio originale|messaggio inoltrato|doorgestuurd bericht"
    r"|oorspronkelijk bericht|forwarded by"
    r")",
    re.I | re.M,
)
JMRP_HEADER = "X-HmXmrOriginalRecipient"


@dataclass
class FeedbackReport:
    source: str  # "arf" | "jmrp" | "forward" | "inline" | "apple-unsubscribe"
    feedback_type: str  # lower-case RFC 5965 type (abuse, fraud, opt-out, not-spam, ...)
    recipients: list[str] = field(default_factory=list)
    original: Message | None = None
    user_agent: str | None = None
    original_mail_from: str | None = None
    arrival_date: str | None = None
    source_ip: str | None = None
    reported_domains: list[str] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    text: str = ""

    def __post_init__(self) -> None:
        # Bounded work: a report about our mail names one recipient (or a few).
        self.recipients = self.recipients[: returned.current_limits().max_recipients]

    @property
    def is_complaint(self) -> bool:
        return self.feedback_type not in NOT_COMPLAINT_TYPES


# --- ARF --------------------------------------------------------------------------------------


def feedback_part(msg: Message) -> Message | None:
    for part in returned.iter_parts(msg):
        if returned.content_type(part) == "message/feedback-report":
            return part
    return None


def is_arf(msg: Message) -> bool:
    if (
        returned.content_type(msg) == "multipart/report"
        and returned.param(msg, "report-type") == "feedback-report"
    ):
        return True
    return feedback_part(msg) is not None


def _report_fields(part: Message | None) -> dict[str, list[str]]:
    if part is None:
        return {}
    payload = part.get_payload()
    if isinstance(payload, list):
        # compat32 parses message/* as a nested message: the fields are its headers (and,
        # when the reporter wrote extra part headers first, e.g. AOL, its body).
        text = "\n".join(returned.message_source(p) for p in payload if isinstance(p, Message))
    else:
        text = returned.part_text(part)
    out: dict[str, list[str]] = {}
    for name, value in returned.parse_fields(text):
        if name:
            out.setdefault(name, []).append(value)
    return out


def _first(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name)
    return values[0].strip() if values else None


def parse_arf(msg: Message) -> FeedbackReport | None:
    part = feedback_part(msg)
    fields = _report_fields(part)
    feedback_type = (_first(fields, "feedback-type") or "").lower().split(" ")[0]
    if not feedback_type:
        if not is_arf(msg):
            return None
        feedback_type = "abuse"  # a feedback-report without its type: treat like the default
    original = _original(msg)
    recipients: list[str] = []
    for name in ("original-rcpt-to", "removal-recipient"):
        for value in fields.get(name, []):
            for addr in returned.addresses(value):
                if addr not in recipients:
                    recipients.append(addr)
    if not recipients and original is not None:
        recipients = _original_recipients(original)
    mail_from = _first(fields, "original-mail-from")
    return FeedbackReport(
        source="arf",
        feedback_type=feedback_type,
        recipients=recipients,
        original=original,
        user_agent=_first(fields, "user-agent"),
        original_mail_from=returned.first_address(mail_from) if mail_from else None,
        arrival_date=_first(fields, "arrival-date") or _first(fields, "received-date"),
        source_ip=_first(fields, "source-ip"),
        reported_domains=[v.strip() for v in fields.get("reported-domain", [])],
        fields=fields,
        text=returned.notification_text(msg),
    )


def _original(msg: Message) -> Message | None:
    for part in returned.iter_parts(msg):
        if part is not msg and returned.content_type(part) in returned.ORIGINAL_TYPES:
            return original_from_part(part)
    return None


def _original_recipients(original: Message) -> list[str]:
    jmrp = returned.header_addresses(original, JMRP_HEADER)
    if jmrp:
        return jmrp
    to = returned.header_addresses(original, "To")
    # "To: <Undisclosed Recipients>" and lists: only a single address names the complainer.
    return to[:1] if len(to) == 1 else []


# --- JMRP and forwards ----------------------------------------------------------------------


def attached_messages(msg: Message) -> list[Message]:
    """Every message/rfc822 attachment at any depth, outermost first."""
    found: list[Message] = []
    for part in returned.iter_parts(msg, into_originals=True):
        if part is msg:
            continue
        if returned.content_type(part) in ("message/rfc822", "message/global"):
            inner = original_from_part(part)
            if inner is not None:
                found.append(inner)
    return found


def parse_jmrp(msg: Message) -> FeedbackReport | None:
    """Microsoft JMRP: not ARF, the complained-about mail attached as message/rfc822 with
    the complaining recipient in X-HmXmrOriginalRecipient."""
    for inner in attached_messages(msg):
        if inner.get(JMRP_HEADER):
            return FeedbackReport(
                source="jmrp",
                feedback_type="abuse",
                recipients=returned.header_addresses(inner, JMRP_HEADER),
                original=inner,
                text=returned.notification_text(msg),
            )
    return None


def parse_forward(msg: Message, mailid_header: str) -> FeedbackReport | None:
    """A person forwarded our mail as an attachment (possibly nested several levels)."""
    attached = attached_messages(msg)
    if not attached:
        return None
    # The one carrying our header is the original; else the innermost (each forward wraps
    # the previous one).
    original = next((m for m in attached if m.get(mailid_header)), attached[-1])
    recipients = _original_recipients(original)
    if not recipients:
        recipients = returned.header_addresses(msg, "From")[:1]  # the forwarder complains
    return FeedbackReport(
        source="forward",
        feedback_type="abuse",
        recipients=recipients,
        original=original,
        text=returned.notification_text(msg),
    )


def parse_inline_forward(msg: Message) -> FeedbackReport | None:
    """A forward pasted into the body ('---------- Forwarded message ---------')."""
    text = returned.notification_text(msg)
    mark = FORWARD_MARK_RE.search(text)
    if mark is None:
        return None
    _, original = split_inline_original(text[mark.start() :], starts_at_separator=True)
    recipients = _original_recipients(original) if original is not None else []
    if not recipients:
        recipients = returned.header_addresses(msg, "From")[:1]
    return FeedbackReport(
        source="inline", feedback_type="abuse", recipients=recipients, original=original, text=text
    )


def parse_apple_unsubscribe(msg: Message) -> FeedbackReport | None:
    """Apple Mail's unsubscribe button sends a mail to the List-Unsubscribe mailto address,
    marked X-Apple-Unsubscribe: true. The sender is the recipient of our mail."""
    if str(msg.get("X-Apple-Unsubscribe", "")).strip().lower() != "true":
        return None
    return FeedbackReport(
        source="apple-unsubscribe",
        feedback_type="opt-out",
        recipients=returned.header_addresses(msg, "From")[:1],
        text=returned.notification_text(msg),
    )
