"""Delivery status notifications: RFC 3464 and the non-standard bounces of common MTAs.

Pure parsing: bytes were already parsed into a compat32 ``Message`` by the caller; nothing here
classifies (see rules.py) or touches I/O. Every function tolerates malformed input.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from dataclasses import dataclass
from email.header import decode_header
from email.message import Message

from gateway.mime import returned

# RFC 3463 enhanced status code; the subject digit is 0-7, so software versions
# ("Exim 4.80.1") and IP addresses (the look-behind) are not taken for codes.
ENHANCED_RE = re.compile(r"(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?!\d)(?!\.\d)")
# SMTP reply code as it appears in transcripts: "550 5.1.1", "550-5.1.1", "said: 554 ...".
REPLY_RE = re.compile(r"(?<![\w.:/#=+-])([245][0-5]\d)(?=[ -]|$)(?![ -]?\d{2,})", re.M)

STATUS_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})
RECIPIENT_FIELDS = frozenset({"final-recipient", "original-recipient", "x-actual-recipient"})
GROUP_FIELDS = RECIPIENT_FIELDS | {
    "action",
    "status",
    "diagnostic-code",
    "remote-mta",
    "last-attempt-date",
    "will-retry-until",
    "final-log-id",
}
ACTIONS = frozenset({"failed", "delayed", "delivered", "relayed", "expanded"})

# Senders and subjects of bounces from MTAs that do not speak RFC 3464.
BOUNCE_FROM_RE = re.compile(
    r"mailer-daemon|mail-daemon|maildaemon|post_?master|mail delivery|mail administrator"
    r"|mail system|delivery (status|subsystem|notification)|mmdf|returned mail|nobody@.*bounce",
    re.I,
)
BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|not delivered|delivery (status )?(notification|failure|failed|report|problem|has failed)"
    r"|failure (notice|notification|delivery)|delivery failure|returned (mail|to sender|message)"
    r"|mail delivery|could not (be )?(send|deliver)|failed delivery|delivery (error|status)"
    r"|nondeliverable|non-deliverable|non remis|unzustellbar|nicht zustellbar|\bbounce"
    r"|mail system error|rejected|problem delivering|warning: message|delayed mail|message delayed"
    r"|エラー通知|不達|配信エラー|送信エラー|не доставлено|nicht zugestellt|non consegnat"
    r"|no se pudo entregar|não entregue|échec de (la )?remise|there was an error sending"
    r"|error sending|system undeliverable|delivery notification|mail failed|failure delivery",
    re.I,
)
# Lines that announce a returned copy of the original in a plain-text bounce. Either a
# decorated line ("------ This is a copy of the message, including all the headers. ------")
# or a line that is nothing but the announcement ("Message headers follow.").
_SEPARATOR_PHRASES = (
    r"(this is a |here is a )?copy of (the|your) (original )?message"
    r"|below this line is a copy"
    r"|(the )?(original|returned|undelivered|unsent|rejected|bounced|attached) (message|mail|e-?mail)"
    r"|(message )?headers? (of (the )?(original|returned) message )?follows?"
    r"|(the )?headers? of (the|your) (original|returned) message"
    r"|the header of the original message"
    r"|(start|beginning) of (the )?(original|returned) message"
    r"|content-type: message/rfc822"
    r"|(unsent|returned) message below"
)
# Possessive runs (*+) and the lazy .*? keep the match linear: with "\s*[-=...]{2,}.*" a line
# of 16 000 dashes (or two \s* around nothing) backtracked for seconds (quadratic). The runs are
# of disjoint character classes and no phrase starts with a decoration or a space, so the
# possessive forms match exactly the same lines.
SEPARATOR_RE = re.compile(
    rf"^\s*+[-=_*#>|+]{{2,}}+.*?({_SEPARATOR_PHRASES})"
    rf"|^\s*+({_SEPARATOR_PHRASES})('s)?(\s+(headers?|follows?|below|is following|(is )?attached))*"
    r"\s*+[:.]?\s*+$",
    re.I,
)
# The original's headers; a block of these lines marks where a pasted original starts.
ORIGINAL_HEADER_NAMES = frozenset(
    {
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "received",
        "return-path",
        "reply-to",
        "sender",
        "mime-version",
        "content-type",
        "x-mailing-id",
        "x-campaign-id",
        "list-unsubscribe",
        "dkim-signature",
        "delivered-to",
        "x-mailer",
        "references",
    }
)
# Headers a human-written summary ("To: ... Subject: ... Date: ...") does not have.
_TRANSPORT_HEADER_NAMES = frozenset(
    {
        "received",
        "return-path",
        "mime-version",
        "content-type",
        "dkim-signature",
        "x-mailing-id",
        "list-unsubscribe",
    }
)
# Notification wording of bounces whose sender and subject say nothing (forwarded bounces,
# vendor appliances): counts only together with an SMTP code ...
BOUNCE_BODY_RE = re.compile(
    r"could ?n[o']t be delivered|was ?n[o']t delivered|undeliverable|delivery (has )?failed"
    r"|permanent (fatal )?error|following (addresses|recipients?) (had|failed|could)"
    r"|delivery to the following recipient|wasn't able to deliver|unable to deliver"
    r"|message delivery failed|delivery errors?|returned to sender|could not deliver"
    r"|failed to deliver|invalid user address|rejected by the (remote|recipient)",
    re.I,
)
# ... unless it is unmistakable.
STRONG_BOUNCE_BODY_RE = re.compile(
    r"could ?n[o']t be delivered to|was ?n[o']t delivered to|delivery to the following recipients?"
    r" failed|following addresses had (permanent |delivery )?(fatal )?(errors|problems)"
    r"|wasn't able to deliver your message|this is a permanent error"
    r"|message could not be delivered to|did not reach the following recipient",
    re.I,
)
DELAY_SUBJECT_RE = re.compile(r"\bdelay(ed)?\b|\bwarning\b|verz[öo]ger|retard", re.I)
DELAY_TEXT_RE = re.compile(
    r"will (continue|keep) (trying|to try|attempting)|still (be )?(trying|attempting)"
    r"|will (be )?retr(y|ied)|no action is required|warning message only|not yet been delivered"
    r"|delivery (attempts )?will continue|delayed for|has been delayed",
    re.I,
)
# Lines that carry the bounce's own or the sender's addresses, never the failed recipient.
_NOT_RECIPIENT_LINE_RE = re.compile(  # possessive runs: linear on a line of blanks
    r"^\s*+[>|]*+\s*+(from|to|cc|return-path|reply-to|sender|message-id|in-reply-to|references"
    r"|received|x-[\w-]+|reporting-mta|received-from-mta|remote-mta|dkim-signature|arrival-date"
    r"|date|subject|envelope-from|errors-to)\s*+:"
    r"|message-?id|envelope-from|mail from\s*:|\bsmtp\.mailfrom|header\.(from|i)=",
    re.I,
)
_DAEMON_LOCALS = frozenset({"mailer-daemon", "mail-daemon", "maildaemon", "mdaemon", "double-bounce"})
_ROLE_LOCALS = frozenset(
    {
        "postmaster",
        "post_master",
        "root",
        "abuse",
        "nobody",
        "support",
        "help",
        "helpdesk",
        "admin",
        "noreply",
        "no-reply",
    }
)
# Bounded work on hostile input (a "bounce" listing thousands of addresses).
_MAX_CONTEXT_LINES = 5000
_MAX_GROUPS = 1000
_MAX_TEXT_RECIPIENTS = 100
_MAX_HEADER_BLOCK_TRIES = 1000
# A recipient's context is read by ~50 regexes when its diagnostic says nothing; the reason
# is in the lines right after the recipient's name, so the first few KB are enough.
_MAX_CONTEXT_CHARS = 2048


@dataclass
class DsnRecipient:
    recipient: str
    action: str  # failed | delayed | delivered | relayed | expanded
    status: str | None = None  # enhanced code, e.g. "5.1.1"
    reply_code: str | None = None  # SMTP reply code, e.g. "550"
    diagnostic: str = ""
    original_recipient: str | None = None
    remote_mta: str | None = None
    context: str = ""  # notification text around this recipient (for classification)
    phase: str | None = None  # SMTP command the failure answered: "rcpt" | "data" | "mail"


@dataclass
class BounceReport:
    source: str  # "rfc3464" | "text-fields" | "text"
    recipients: list[DsnRecipient]
    envelope_id: str | None = None
    reporting_mta: str | None = None
    text: str = ""  # the human-readable notification (original cut off)
    original: Message | None = None  # returned message or its headers


# --- codes --------------------------------------------------------------------------------


def find_status(text: str) -> str | None:
    """First 4.x.x/5.x.x code in text (2.x.x only when nothing else), so transcripts with
    earlier '250 2.1.0 OK' lines still give the failing code."""
    found = [m.group(0) for m in ENHANCED_RE.finditer(text)]
    for code in found:
        if code[0] in "45":
            return code
    return found[0] if found else None


def find_reply(text: str) -> str | None:
    found = [m.group(1) for m in REPLY_RE.finditer(text)]
    for code in found:
        if code[0] in "45":
            return code
    return None


def best_status(status_field: str | None, diagnostic: str) -> str | None:
    """The Status field, unless the diagnostic quotes the remote server's own code of the
    same class, or the field is generic (x.0.0) and the diagnostic names a specific code
    (Exchange and others write 5.0.0 + '550 5.1.1 ...')."""
    status = None
    if status_field:
        m = ENHANCED_RE.search(status_field)
        status = m.group(0) if m else None
    diag_status = find_status(diagnostic)
    remote = _REMOTE_STATUS_RE.search(diagnostic)
    # The remote server's own "550 5.7.1 ..." beats the reporting MTA's mapping
    # (SES writes "5.1.0 - Unknown address error 550-'5.7.1 ... Access denied'").
    remote_status = remote.group(1) if remote else None
    if status is None:
        return remote_status or diag_status
    if remote_status and remote_status[0] == status[0]:
        return remote_status
    if diag_status and status.endswith(".0.0") and diag_status[0] == status[0]:
        return diag_status
    return status


_REMOTE_STATUS_RE = re.compile(r"(?<![\w.])[245]\d\d[ -]'?((?:[245])\.[0-7]\.\d{1,3})(?![\d.])")


# --- original message -----------------------------------------------------------------------


def find_original_part(msg: Message) -> Message | None:
    """The returned original when it is its own MIME part (message/rfc822, text/rfc822-headers)."""
    for part in returned.iter_parts(msg):
        if part is msg:
            continue
        ctype = returned.content_type(part)
        if ctype in returned.ORIGINAL_TYPES:
            return original_from_part(part)
    return None


def original_from_part(part: Message) -> Message | None:
    ctype = returned.content_type(part)
    payload = part.get_payload()
    if ctype in returned.HEADER_ONLY_TYPES or not isinstance(payload, list):
        text = returned.part_text(part).lstrip("\r\n")
        if not text.strip():
            return None
        return returned.parse_text(_dedent_headers(text.split("\n")))
    for sub in payload:
        if isinstance(sub, Message):
            return sub
    return None


def split_inline_original(text: str, *, starts_at_separator: bool = False) -> tuple[str, Message | None]:
    """Cut a plain-text bounce into (notification, pasted original).

    The cut is at a separator line ("--- Below this line is a copy of the message.") when
    there is one, else at the first convincing block of original headers; without a
    separator the block must be larger, because bounces often quote a 'Subject:/To:' pair
    in their explanation. ``starts_at_separator``: the caller already found the separator
    (a "Forwarded message" mark) at the start of text.
    """
    lines = text.split("\n")
    if starts_at_separator:
        sep: int | None = 0
    else:
        sep = next((i for i, line in enumerate(lines) if SEPARATOR_RE.match(line)), None)
    begin = 0 if sep is None else sep + 1
    min_lines = 4 if sep is None else 2
    tries = 0
    for i in range(begin, len(lines)):
        if not returned.is_header_line(lines[i].lstrip(" \t>|")):
            continue
        # Each try reads up to 60 lines: tens of thousands of header-like lines that never
        # make a block (a mutated bounce) cost seconds. The original starts near the top.
        tries += 1
        if tries > _MAX_HEADER_BLOCK_TRIES:
            break
        if _header_block_at(lines, i, min_lines):
            cut = sep if sep is not None else i
            return "\n".join(lines[:cut]), returned.parse_text(_dedent_headers(lines[i:]))
    if sep is not None:
        return "\n".join(lines[:sep]), None
    return text, None


def _line_prefix(line: str) -> str:
    m = re.match(r"^([ \t>|]*)", line)
    return m.group(1) if m else ""


def _header_block_at(lines: list[str], i: int, min_lines: int) -> bool:
    prefix = _line_prefix(lines[i])
    first = lines[i][len(prefix) :]
    if not returned.is_header_line(first):
        return False
    names: list[str] = []
    for line in lines[i : i + 60]:
        body = line[len(prefix) :] if line.startswith(prefix) else line
        if not body.strip():
            break
        if body[0] in " \t" and names:
            continue
        if not returned.is_header_line(body):
            break
        names.append(body.split(":", 1)[0].strip().lower())
    main = sum(1 for name in names if name in ORIGINAL_HEADER_NAMES)
    if len(names) < min_lines or main < 2:
        return False
    # Without a separator, a To/Cc/Date/Subject summary inside the explanation (Notes,
    # IMail) must not be taken for the original: a real header dump has transport headers.
    return min_lines <= 2 or bool(set(names) & _TRANSPORT_HEADER_NAMES)


def _dedent_headers(lines: list[str]) -> str:
    """Remove the quoting some MTAs put in front of a pasted original ('> ', indentation)."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    if not lines:
        return ""
    if lines[0].startswith("From ") and not returned.is_header_line(lines[0]):
        lines = lines[1:]  # mbox 'From ' line
    prefix = _line_prefix(lines[0]) if lines else ""
    if prefix:
        lines = [line[len(prefix) :] if line.startswith(prefix) else line for line in lines]
    return "\n".join(lines)


# --- RFC 3464 -------------------------------------------------------------------------------


def status_part(msg: Message) -> Message | None:
    for part in returned.iter_parts(msg):
        if returned.content_type(part) in STATUS_TYPES:
            return part
    return None


def status_part_text(part: Message) -> str:
    """Text of a message/delivery-status part. compat32 splits it into one Message per
    block; as_string() of each keeps lines the header parser did not understand."""
    payload = part.get_payload()
    if isinstance(payload, list):
        text = "\n".join(returned.message_source(b) for b in payload if isinstance(b, Message))
    else:
        text = payload if isinstance(payload, str) else ""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            text = base64.b64decode("".join(text.split()), validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            pass
    elif cte == "quoted-printable":
        text = quopri.decodestring(text.encode("utf-8", "replace")).decode("utf-8", "replace")
    return text


def split_status_groups(text: str) -> tuple[dict[str, str], list[dict[str, str]]]:
    """(per-message fields, per-recipient groups). Tolerates missing blank lines between
    groups (a repeated Final-Recipient starts a new one) and stray blank lines inside."""
    per_message: dict[str, str] = {}
    groups: list[dict[str, str]] = []
    cur: dict[str, str] | None = None
    for name, value in returned.parse_fields(text):
        if not name:
            if cur is not None:
                groups.append(cur)
                cur = None
            continue
        if (
            name in RECIPIENT_FIELDS
            and cur is not None
            and (
                name in cur
                or (RECIPIENT_FIELDS & cur.keys() and {"action", "status", "diagnostic-code"} & cur.keys())
            )
        ):
            groups.append(cur)
            cur = None
        if cur is None:
            if name not in GROUP_FIELDS:
                per_message.setdefault(name, value)
                continue
            if name not in RECIPIENT_FIELDS and groups and name not in groups[-1]:
                cur = groups.pop()  # a blank line inside a group: keep filling it
            else:
                cur = {}
        cur.setdefault(name, value)
    if cur is not None:
        groups.append(cur)
    return per_message, [g for g in groups if RECIPIENT_FIELDS & g.keys()]


# Exchange and X.400 gateways write the mail address inside an X.400 one
# ("/RFC-822=bob(a)example.com/", "dda:SMTP=bob@example.com") or IMCEA-encode it
# ("IMCEASMTP-bob+40example+2Ecom@gw.example"); some put "smtp=" / "SMTP:" before it.
_X400_RFC822_RE = re.compile(r"(?:rfc-?822|dda[:=]smtp|smtp)\s*[=:]\s*([^/;\s]+)", re.I)
_IMCEA_RE = re.compile(r"imcea(?:smtp|x400)?-([^@\s]+)@", re.I)
_SMTP_PREFIX_RE = re.compile(r"^(?:smtp|rfc822)[=:]", re.I)
# Values that stand in for a recipient nobody named ("rfc822; unknown", "<>",
# "undisclosed-recipients:;"): never a recipient.
_PLACEHOLDER_LOCALS = frozenset(
    {
        "unknown",
        "undisclosed-recipients",
        "undisclosed",
        "recipient",
        "recipients",
        "invalid",
        "none",
        "null",
        "nobody",
    }
)


def _recipient_from_field(value: str) -> str | None:
    """The mail address of a Final-/Original-Recipient value; None for a placeholder."""
    text = returned.decode_header_value(value)
    for encoded in _IMCEA_RE.findall(text):
        decoded = re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), encoded)
        inner = _x400_address(decoded) or returned.first_address(decoded)
        if inner:
            return inner
    inner = _x400_address(text)
    if inner:
        return inner
    addr = returned.first_address(text)
    if addr is None:
        # Not an address we can parse (a quoted local part, a source route, a pipe): keep
        # what the field says, unless it is a placeholder.
        addr = value.split(";", 1)[-1].strip().strip("<>").strip().lower()
    addr = _SMTP_PREFIX_RE.sub("", addr)
    local = addr.rsplit("@", 1)[0] if "@" in addr else addr
    if not local or local.rstrip(":;").strip() in _PLACEHOLDER_LOCALS:
        return None
    return addr


def _x400_address(text: str) -> str | None:
    for found in _X400_RFC822_RE.findall(text):
        addr = returned.first_address(found.replace("(a)", "@").replace("(A)", "@"))
        if addr:
            return addr
    return None


def _raw_8bit(value: str) -> str:
    """A field with raw UTF-8 in a message/delivery-status part comes back from compat32 as
    '=?unknown-8bit?q?...?=' words (German, French, Spanish diagnostics): the text again."""
    if "=?unknown-8bit?" not in value:
        return value
    try:
        return "".join(
            chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else chunk
            for chunk, _ in decode_header(value)
        )
    except Exception:  # noqa: BLE001 - leave garbage as it came
        return value


def _diagnostic_text(value: str) -> str:
    # "smtp; 550 5.1.1 ..." -> "550 5.1.1 ..."; "X-Postfix; ..." likewise.
    value = _raw_8bit(value)
    kind, sep, rest = value.partition(";")
    if sep and re.fullmatch(r"\s*[\w-]{1,20}\s*", kind):
        return rest.strip()
    return value.strip()


def recipients_from_groups(groups: list[dict[str, str]]) -> list[DsnRecipient]:
    out: list[DsnRecipient] = []
    for group in groups:
        final = group.get("final-recipient") or group.get("x-actual-recipient") or ""
        original = group.get("original-recipient")
        recipient = _recipient_from_field(final) if final else None
        orig_addr = _recipient_from_field(original) if original else None
        recipient = recipient or orig_addr
        if not recipient:
            continue
        diagnostic = _diagnostic_text(group.get("diagnostic-code", ""))
        status = best_status(group.get("status"), diagnostic)
        action = group.get("action", "").strip().lower().split(" ")[0] if group.get("action") else ""
        if action not in ACTIONS:
            # Missing/odd Action: infer from the status class, as receivers of DSNs must.
            action = "delivered" if status and status.startswith("2") else "failed"
        remote = group.get("remote-mta")
        out.append(
            DsnRecipient(
                recipient=recipient,
                action=action,
                status=status,
                reply_code=find_reply(diagnostic),
                diagnostic=diagnostic,
                original_recipient=orig_addr,
                remote_mta=_diagnostic_text(remote) if remote else None,
            )
        )
    return out


# --- detection ------------------------------------------------------------------------------


def is_delivery_report(msg: Message) -> bool:
    ctype = returned.content_type(msg)
    if ctype == "multipart/report" and returned.param(msg, "report-type") in (
        "delivery-status",
        "global-delivery-status",
    ):
        return True
    return status_part(msg) is not None


def looks_like_bounce(msg: Message) -> bool:
    """Heuristic for non-standard bounces: who sent it, what the subject says, or a
    notification text that reads like one (and quotes an SMTP reply, unless the wording is
    unmistakable)."""
    if is_delivery_report(msg) or msg.get("X-Failed-Recipients"):
        return True
    sender = returned.header_str(msg, "From")
    subject = returned.header_str(msg, "Subject")
    if BOUNCE_FROM_RE.search(sender) or BOUNCE_SUBJECT_RE.search(subject):
        return True
    text = returned.notification_text(msg)[:20000]
    if STRONG_BOUNCE_BODY_RE.search(text):
        return True
    return bool(BOUNCE_BODY_RE.search(text) and (REPLY_RE.search(text) or ENHANCED_RE.search(text)))


# --- the parser -------------------------------------------------------------------------------


# Blanks of the line only: "^\s*" ran across lines, and a text of blank lines cost seconds.
_PASTED_FIELDS_RE = re.compile(r"^[ \t]*+(final|original)-recipient[ \t]*+:", re.I | re.M)


def parse_bounce(msg: Message, _depth: int = 0) -> BounceReport | None:
    """Parse a bounce (standard or not). None when no recipient could be found at all."""
    original = find_original_part(msg)
    text = returned.notification_text(msg)
    if original is None:
        text, original = split_inline_original(text)
    else:
        text, _ = split_inline_original(text)

    part = status_part(msg)
    per_message: dict[str, str] = {}
    recipients: list[DsnRecipient] = []
    source = "text"
    if part is not None:
        per_message, groups = split_status_groups(status_part_text(part))
        recipients = recipients_from_groups(groups[:_MAX_GROUPS])
        source = "rfc3464"
    if not recipients and _PASTED_FIELDS_RE.search(text):
        # DSN fields pasted into a text/plain part (Exchange 2003, some appliances).
        fields_msg, groups = split_status_groups(_field_lines(text))
        per_message = per_message or fields_msg
        recipients = recipients_from_groups(groups[:_MAX_GROUPS])
        source = "text-fields"
    if (
        not recipients
        and original is not None
        and _depth < 3
        and (is_delivery_report(original) or looks_like_bounce(original))
    ):
        # A bounce of a bounce (or a gateway wrapping the real DSN): the inner one knows.
        inner = parse_bounce(original, _depth=_depth + 1)
        if inner is not None:
            return inner
    if not recipients:
        recipients = _recipients_from_text(msg, text, original)
        source = "text"
    if not recipients:
        return None
    # Bounded work: a report naming more recipients is cut (ours name one, or a few).
    recipients = recipients[: returned.current_limits().max_recipients]
    _attach_context(recipients, text)
    envelope_id = per_message.get("original-envelope-id")
    reporting = per_message.get("reporting-mta")
    return BounceReport(
        source=source,
        recipients=recipients,
        envelope_id=envelope_id.strip() if envelope_id else None,
        reporting_mta=_diagnostic_text(reporting) if reporting else None,
        text=text,
        original=original,
    )


def _field_lines(text: str) -> str:
    """Only the DSN-looking lines of a text part (plus blank lines as group separators)."""
    keep: list[str] = []
    names = GROUP_FIELDS | {"reporting-mta", "original-envelope-id", "arrival-date", "received-from-mta"}
    in_field = False
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            keep.append("")
            in_field = False
            continue
        name = stripped.split(":", 1)[0].lower() if ":" in stripped else ""
        if name in names:
            keep.append(stripped)
            in_field = True
        elif in_field and line[:1] in (" ", "\t"):
            keep.append(line)
        else:
            in_field = False
    return "\n".join(keep)


def _excluded_addresses(msg: Message, original: Message | None) -> set[str]:
    """Addresses that are never the failed recipient: the bounce's own sender and
    addressee (= the original envelope sender) and the original's sender fields."""
    out = set(returned.header_addresses(msg, "From", "To", "Reply-To", "Sender", "Return-Path"))
    if original is not None:
        out |= set(
            returned.header_addresses(original, "From", "Sender", "Reply-To", "Return-Path", "Errors-To")
        )
    return out


def _recipients_from_text(msg: Message, text: str, original: Message | None) -> list[DsnRecipient]:
    excluded = _excluded_addresses(msg, original)
    # Only the first `cap` are kept: stop collecting there (the "in found" checks below are
    # linear, and a header of 20 000 addresses took seconds).
    cap = min(_MAX_TEXT_RECIPIENTS, returned.current_limits().max_recipients)
    found: list[str] = []
    failed_header = msg.get_all("X-Failed-Recipients") or []
    for value in failed_header:  # Exim names them for us
        for addr in returned.addresses(str(value)):
            if addr not in found and len(found) < cap:
                found.append(addr)
    if not found:
        found = _named_recipients(text, excluded)[:cap]
    if not found:
        # Last resort: an address we excluded as "the sender" may still be the one named
        # as failed (tests and self-sent mail); never the bounce's own From, though.
        own = set(returned.header_addresses(msg, "From"))
        for line in text.split("\n"):
            if _NOT_RECIPIENT_LINE_RE.search(line):
                continue
            if len(found) >= cap:
                break
            found += [
                a
                for a in returned.addresses(line)[:cap]
                if a not in own and a not in found and a.split("@", 1)[0] not in _DAEMON_LOCALS
            ]
    if not found and original is not None:
        # Nothing named in the text: the returned original's To is the best guess
        # (single-recipient mails are what an ESP sends).
        found = [a for a in returned.header_addresses(original, "To") if a not in excluded][:1]
    action = _fallback_action(msg, text)
    return [DsnRecipient(recipient=addr, action=action) for addr in found[:_MAX_TEXT_RECIPIENTS]]


# A line that reports a failed address: the address alone or leading the line ("<a@b>:",
# "a@b ... (reason)"), an SMTP code, or failure words.
_FAILED_LINE_RE = re.compile(
    r"^[\s>|]*<?[^\s<>@]+@[^\s<>]+>?\s*([:(\[]|$)|(?<![\d.])[245]\d\d(?![\d.])|[245]\.\d\.\d"
    r"|unknown|fail|reject|not (be )?delivered|undeliver|does ?n[o']t exist|invalid|no such"
    r"|not found|could ?n[o']t|unable to|delay|to the following|delivery to",
    re.I,
)
# A line pointing somewhere else for help: the postmaster, a directory, a help desk.
_HINT_LINE_RE = re.compile(
    r"contact|directory|look (it |them )?up|help ?desk|support|did you mean|assistance"
    r"|further (help|information)|(send|write|forward|reply) (an? )?(e-?mail |mail |message )?to"
    r"|questions|please (ask|e-?mail|mail|call|visit)|administrator|postmaster",
    re.I,
)


def _named_recipients(text: str, excluded: set[str]) -> list[str]:
    """Addresses a plain-text bounce names as failed. Bounces also name the postmaster, a
    directory or a help desk to ask: an address on a line that reports a failure beats a
    plain mention, which beats one on a "contact ..." line; role addresses come last."""
    ranked: dict[str, int] = {}
    for line in text.split("\n"):
        if _NOT_RECIPIENT_LINE_RE.search(line):
            continue
        named = returned.addresses(line)
        if not named:
            continue
        if _FAILED_LINE_RE.search(line) and not (
            _HINT_LINE_RE.search(line) and not returned.ADDRESS_RE.match(line.strip(" \t>|<"))
        ):
            rank = 0
        elif _HINT_LINE_RE.search(line):
            rank = 2
        else:
            rank = 1
        for addr in named:
            local = addr.split("@", 1)[0]
            if addr in excluded or local in _DAEMON_LOCALS:
                continue
            # "contact postmaster@..." lines are common; a role address is only taken
            # when nothing else is named.
            score = rank + (3 if local in _ROLE_LOCALS else 0)
            ranked[addr] = min(score, ranked.get(addr, score))
    if not ranked:
        return []
    best = min(ranked.values())
    return [addr for addr, score in ranked.items() if score == best]


def _fallback_action(msg: Message, text: str) -> str:
    subject = returned.header_str(msg, "Subject")
    if DELAY_SUBJECT_RE.search(subject) and not re.search(r"fail|undeliver|returned", subject, re.I):
        return "delayed"
    if DELAY_TEXT_RE.search(text):
        return "delayed"
    return "failed"


def _attach_context(recipients: list[DsnRecipient], text: str) -> None:
    """Give each recipient the notification lines about it: each line naming it and up to
    11 lines after it, across blank lines (Mimecast and Exchange put the reason in a
    paragraph of its own) but never into a line naming another recipient. Also fill in the
    codes and the SMTP phase the structured fields did not give."""
    lines = text.split("\n")[:_MAX_CONTEXT_LINES]
    names = {r.recipient.lower() for r in recipients}
    # Which recipients each line names, computed once: bounces listing hundreds of
    # recipients must not cost recipients x lines x recipients.
    mentions: list[frozenset[str]] = []
    for line in lines:
        lowered = line.lower()
        mentions.append(frozenset(n for n in names if n in lowered) if "@" in lowered else frozenset())
    for rcpt in recipients:
        returned.check_budget()
        name = rcpt.recipient.lower()
        chunks: list[str] = []
        i = 0
        while i < len(lines):
            if name not in mentions[i]:
                i += 1
                continue
            j = i + 1
            while j < len(lines) and j < i + 12 and not (mentions[j] - {name}):
                j += 1
            chunks.append("\n".join(lines[i:j]))
            i = j
        rcpt.context = "\n".join(chunks)[:_MAX_CONTEXT_CHARS]
        source = rcpt.diagnostic or rcpt.context
        found = find_status(source) or (find_status(rcpt.context) if rcpt.diagnostic else None)
        if rcpt.status is None or (
            # a generic Status field (5.0.0) next to a specific code in the text
            found and rcpt.status.endswith(".0.0") and found[0] == rcpt.status[0]
        ):
            rcpt.status = found or rcpt.status
        if rcpt.reply_code is None:
            rcpt.reply_code = find_reply(source) or (find_reply(rcpt.context) if rcpt.diagnostic else None)
        if not rcpt.diagnostic:
            rcpt.diagnostic = _diagnostic_line(rcpt.context)
        rcpt.phase = smtp_phase(f"{rcpt.diagnostic}\n{rcpt.context}")
        if rcpt.phase is None and len(recipients) == 1:
            rcpt.phase = smtp_phase(text)


# Where transcripts say which command a reply answered: Postfix "(in reply to RCPT TO
# command)", Exim "after RCPT TO:<x>", Sendmail ">>> DATA", qmail "does not like recipient".
_PHASE_RE = re.compile(
    r"(?P<rcpt>in reply to rcpt to|after rcpt to|>>> ?rcpt to|rcpt to command|does not like recipient"
    r"|after rcpt\b|smtp:rcpt|progress was rcpt|smtp command[\s-]*rcpt|\brcpt[_ ]to\b)"
    r"|(?P<data>in reply to (end of )?data|after (end of )?data|>>> ?data|(end of )?data command"
    r"|failed after i sent the message|after message(body| body| text)|during data|at data"
    r"|smtp command[\s-]*data\b)"
    r"|(?P<mail>in reply to mail from|after mail from|>>> ?mail from|mail from command)",
    re.I,
)
_MAX_PHASE_TEXT = 64 * 1024
_PIPELINED_RCPT_RE = re.compile(r"need rcpt|no valid recipients|rcpt first", re.I)
_ERROR_REPLY_RE = re.compile(r"(?<![\w.:/#=+-])[45][0-5]\d(?=[ -])")


def smtp_phase(text: str) -> str | None:
    """The SMTP command the failure answered: the last marker before the first error
    reply (transcripts), else the first marker after it (Postfix's trailing remark)."""
    text = text[:_MAX_PHASE_TEXT]
    markers = [(m.start(), m.lastgroup) for m in _PHASE_RE.finditer(text)]
    if not markers:
        return None
    if _PIPELINED_RCPT_RE.search(text):
        # PIPELINING: the transcript shows DATA last, but the server's "503 need RCPT"
        # proves the error answered the RCPT TO sent before it.
        return "rcpt"
    first_error = _ERROR_REPLY_RE.search(text)
    if first_error is None:
        return markers[-1][1]
    before = [kind for pos, kind in markers if pos < first_error.start()]
    after = [kind for pos, kind in markers if pos >= first_error.start()]
    return before[-1] if before else after[0]


def _diagnostic_line(context: str) -> str:
    """The most informative line of a recipient's context: the one with an SMTP code."""
    for line in context.split("\n"):
        if REPLY_RE.search(line) or ENHANCED_RE.search(line):
            return " ".join(line.split())
    return " ".join(context.split())[:300]
