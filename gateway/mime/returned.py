"""Returned mail (bounces, complaint reports): small, forgiving helpers over a compat32
``email.message.Message``, shared by the parsers in gateway/feedback.

Returned mail is written by every MTA ever made, often badly: every helper here swallows
decoding problems and returns something usable instead of raising.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import re
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import Message

# Parts that carry (a copy of) the original message. text/rfc822-header (singular) and
# message/rfc822-headers are seen in the wild (AOL, old Hotmail).
ORIGINAL_TYPES = frozenset({
    "message/rfc822", "message/global", "text/rfc822-headers", "text/rfc822-header",
    "message/rfc822-headers", "message/global-headers",
})
HEADER_ONLY_TYPES = frozenset({
    "text/rfc822-headers", "text/rfc822-header", "message/rfc822-headers",
    "message/global-headers",
})

ADDRESS_RE = re.compile(
    r"(?<![\w.%+=#$&^~-])"
    r"([\w.%+=#$&^~-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})"
    r"(?![\w-])",
    re.I,
)

_HEADER_LINE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60}):[ \t]?(.*)$")


def parse_bytes(raw: bytes) -> Message:
    """The one way we parse: compat32 is cheap and tolerant of broken MIME."""
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    _repair_multiparts(msg, depth=0)
    return msg


_BOUNDARY_LINE_RE = re.compile(r"^--([^\s]{1,200}?)(--)?[ \t]*$", re.M)


def _repair_multiparts(msg: Message, depth: int) -> None:
    """Old MTAs fold 'boundary=' onto an unindented line, so the parser sees a multipart
    without boundary and keeps its body as one string. Recover the boundary from the body's
    '--xyz' lines and parse again, so the report parts become visible."""
    if depth > 20:
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                _repair_multiparts(sub, depth + 1)
        return
    if msg.get_content_maintype() != "multipart" or not isinstance(payload, str):
        return
    match = _BOUNDARY_LINE_RE.search(payload)
    if match is None:
        return
    boundary = match.group(1)
    ctype = msg.get_content_type()
    report_type = re.search(r"report-type\s*=\s*\"?([\w-]+)", payload[: match.start()] or "", re.I)
    header = f'Content-Type: {ctype}; boundary="{boundary}"'
    if report_type:
        header += f"; report-type={report_type.group(1)}"
    try:
        fixed = parse_text(f"{header}\n\n{payload}")
    except Exception:  # noqa: BLE001 - keep the unrepaired message
        return
    if not isinstance(fixed.get_payload(), list):
        return
    try:
        del msg["Content-Type"]
        msg["Content-Type"] = str(fixed["Content-Type"])
    except Exception:  # noqa: BLE001 - an undecodable header: keep the body unrepaired
        return
    parts = fixed.get_payload()
    msg.set_payload(parts)
    for sub in parts:
        if isinstance(sub, Message):
            _repair_multiparts(sub, depth + 1)


def parse_headers_text(text: str) -> Message:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)


def parse_text(text: str) -> Message:
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


def header_str(msg: Message, name: str) -> str:
    """Decoded, unfolded header value ('' when absent or undecodable)."""
    value = msg.get(name)
    if value is None:
        return ""
    return decode_header_value(str(value))


def decode_header_value(value: str) -> str:
    try:
        decoded = str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - RFC 2047 garbage is common; fall back to the raw text
        decoded = value
    return " ".join(decoded.split())


def content_type(part: Message) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:  # noqa: BLE001
        return "text/plain"


def param(part: Message, name: str) -> str:
    try:
        value = part.get_param(name)
    except Exception:  # noqa: BLE001
        return ""
    if isinstance(value, tuple):  # RFC 2231 encoded value
        value = value[2]
    return str(value or "").lower()


def iter_parts(msg: Message, *, into_originals: bool = False) -> Iterator[Message]:
    """Depth-first walk that by default does not descend into returned/forwarded messages,
    so the notification text is not mixed with the original's body."""
    yield msg
    ctype = content_type(msg)
    if not into_originals and (ctype in ORIGINAL_TYPES or ctype == "message/delivery-status"):
        return
    payload = msg.get_payload()
    if isinstance(payload, list):
        for sub in payload:
            if isinstance(sub, Message):
                yield from iter_parts(sub, into_originals=into_originals)


def part_text(part: Message) -> str:
    """Decoded text of a leaf part (transfer encoding and charset), never raising."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return "\n".join(_message_as_text(p) for p in payload if isinstance(p, Message))
    try:
        data = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        data = None
    if data is None:
        return payload if isinstance(payload, str) else ""
    if not isinstance(data, bytes):
        return str(data)
    charset = part.get_content_charset() or "utf-8"
    for cs in (charset, "utf-8", "latin-1"):
        try:
            return data.decode(cs, errors="replace")
        except LookupError:
            continue
    return data.decode("latin-1")


def _message_as_text(msg: Message) -> str:
    try:
        return msg.as_string()
    except Exception:  # noqa: BLE001
        return ""


def message_source(msg: Message) -> str:
    return _message_as_text(msg)


_TAG_RE = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]+>", re.I | re.S)
_BLOCK_TAG_RE = re.compile(r"<(br|p|div|tr|li|h\d|table)\b[^>]*>", re.I)


def html_to_text(markup: str) -> str:
    markup = _BLOCK_TAG_RE.sub("\n", markup)
    text = html.unescape(_TAG_RE.sub(" ", markup))
    # Layout tables leave hundreds of blank lines; keep one so paragraphs stay apart.
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out)


def notification_text(msg: Message) -> str:
    """Human-readable text of a message outside its returned original: all text/plain parts,
    or the HTML parts rendered to text when there is no plain text at all."""
    plain: list[str] = []
    htmls: list[str] = []
    for part in iter_parts(msg):
        ctype = content_type(part)
        if part.is_multipart() or ctype in ORIGINAL_TYPES or ctype == "message/delivery-status":
            continue
        disposition = str(part.get("Content-Disposition", "")).strip().lower()
        if param(part, "name") or (disposition.startswith("attachment")
                                   and not ctype.startswith("text/plain")):
            continue
        if ctype == "text/html":
            htmls.append(html_to_text(part_text(part)))
        elif ctype.startswith("text/") or ctype == "message/feedback-report":
            plain.append(part_text(part))
        elif ctype.startswith("multipart/") and isinstance(part.get_payload(), str):
            plain.append(part_text(part))  # boundary lines missing: the body is all we have
    text = "\n".join(plain) if plain else "\n".join(htmls)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def addresses(text: str) -> list[str]:
    """All email addresses in text, in order, de-duplicated case-insensitively."""
    seen: dict[str, None] = {}
    for match in ADDRESS_RE.finditer(text):
        addr = match.group(1).strip(".").lower()
        if addr.startswith("mailto:"):
            addr = addr[7:]
        seen.setdefault(addr, None)
    return list(seen)


def first_address(value: str) -> str | None:
    found = addresses(value)
    return found[0] if found else None


def header_addresses(msg: Message, *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        for value in msg.get_all(name) or []:
            for addr in addresses(decode_header_value(str(value))):
                if addr not in out:
                    out.append(addr)
    return out


def is_header_line(line: str) -> bool:
    return bool(_HEADER_LINE_RE.match(line))


def parse_fields(text: str) -> list[tuple[str, str]]:
    """'Name: value' lines (continuations unfolded) in order; blank lines become ('', '')
    markers so callers can see group boundaries (RFC 3464 per-recipient groups)."""
    fields: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            if fields and fields[-1] != ("", ""):
                fields.append(("", ""))
            continue
        if line[0] in " \t" and fields and fields[-1][0]:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
            continue
        match = _HEADER_LINE_RE.match(line.strip())
        if match:
            fields.append((match.group(1).lower(), match.group(2).strip()))
    return fields
