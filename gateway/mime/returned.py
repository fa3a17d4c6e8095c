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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message

# Parts that carry (a copy of) the original message. text/rfc822-header (singular) and
# message/rfc822-headers are seen in the wild (AOL, old Hotmail).
ORIGINAL_TYPES = frozenset(
    {
        "message/rfc822",
        "message/global",
        "text/rfc822-headers",
        "text/rfc822-header",
        "message/rfc822-headers",
        "message/global-headers",
    }
)
HEADER_ONLY_TYPES = frozenset(
    {
        "text/rfc822-headers",
        "text/rfc822-header",
        "message/rfc822-headers",
        "message/global-headers",
    }
)

ADDRESS_RE = re.compile(
    r"(?<![\w.%+=#$&^~-])"
    r"([\w.%+=#$&^~-]{1,64}@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})"
    r"(?![\w-])",
    re.I,
)

_HEADER_LINE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]{0,60}):[ \t]?(.*)$")


# -- bounded work ---------------------------------------------------------------------------------
# Anyone can send the feedback listener a report (RULES.md "Only what the gateway sent can be
# bounced"), so one report's parse has a bounded cost. The caller (the intake) sets the limits
# for the parse it runs on this thread; the parsers read them here instead of threading them
# through every helper.


class ParseBudgetExceeded(Exception):
    """The report took longer than its time budget; the caller records it unparsed."""


@dataclass(frozen=True)
class ParseLimits:
    max_parts: int = 100  # MIME parts a walk visits (originals included)
    max_recipients: int = 10  # recipients of one report that are classified
    deadline: float | None = None  # time.monotonic() after which the parse gives up


_DEFAULT_LIMITS = ParseLimits()
_local = threading.local()


def current_limits() -> ParseLimits:
    return getattr(_local, "limits", _DEFAULT_LIMITS)


@contextmanager
def parse_limits(limits: ParseLimits) -> Iterator[ParseLimits]:
    """Apply `limits` to the parses this thread runs inside the block."""
    previous = current_limits()
    _local.limits = limits
    try:
        yield limits
    finally:
        _local.limits = previous


def check_budget() -> None:
    """Raise ParseBudgetExceeded once the current parse is past its deadline. Called between
    units of work (a part, a recipient, a classification), so the overrun is one unit."""
    deadline = current_limits().deadline
    if deadline is not None and time.monotonic() > deadline:
        raise ParseBudgetExceeded("the report took longer than its time budget to parse")


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
    so the notification text is not mixed with the original's body. Visits at most
    `max_parts` parts (a report of thousands of tiny parts is not a bounce of ours)."""
    limits = current_limits()
    stack = [msg]
    visited = 0
    while stack and visited < limits.max_parts:
        part = stack.pop()
        visited += 1
        check_budget()
        yield part
        ctype = content_type(part)
        if not into_originals and (ctype in ORIGINAL_TYPES or ctype == "message/delivery-status"):
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            stack.extend(reversed([sub for sub in payload if isinstance(sub, Message)]))


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


class _AsReceived(email.policy.Compat32):
    """compat32 that writes each header as it was received: the default re-folds it through
    email.header.Header, which is quadratic in a header's length (a 500 KB header of 8-bit
    text took seconds)."""

    def fold(self, name: str, value: object) -> str:
        text = str(value)
        # 8-bit bytes of the raw header arrive as surrogates: as UTF-8 where they are, else
        # U+FFFD (never surrogates: they cannot be stored or logged).
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return f"{name}: {text}{self.linesep}"


_AS_RECEIVED = _AsReceived()


def _message_as_text(msg: Message) -> str:
    try:
        return msg.as_string(policy=_AS_RECEIVED)
    except Exception:  # noqa: BLE001
        return ""


def message_source(msg: Message) -> str:
    return _message_as_text(msg)


# Linear on hostile markup: a tag ends at the next '<' as well as at '>' (with "<[^>]+>" a part
# of 40 000 '<' took seconds, each one scanning to the end), and script/style bodies are cut
# by a scan over their tags instead of "<script.*?</script>" from every unclosed "<script".
_TAG_RE = re.compile(r"<[^<>]+>")
_BLOCK_TAG_RE = re.compile(r"<(br|p|div|tr|li|h\d|table)\b[^<>]*>", re.I)
_SCRIPT_TAG_RE = re.compile(r"<(script|style)\b[^<>]*>|</(script|style)\s*>", re.I)


def _drop_scripts(markup: str) -> str:
    """Markup without <script>/<style> elements (an unclosed one keeps what follows it)."""
    out: list[str] = []
    pos = 0
    opened: tuple[str, int] | None = None  # (element, where its tag starts)
    for tag in _SCRIPT_TAG_RE.finditer(markup):
        if opened is None and tag.group(1):
            out.append(markup[pos : tag.start()])
            opened = (tag.group(1).lower(), tag.start())
        elif opened is not None and (tag.group(2) or "").lower() == opened[0]:
            pos = tag.end()
            opened = None
    out.append(markup[pos:] if opened is None else markup[opened[1] :])
    return "".join(out)


def html_to_text(markup: str) -> str:
    markup = _BLOCK_TAG_RE.sub("\n", _drop_scripts(markup))
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
        if param(part, "name") or (
            disposition.startswith("attachment") and not ctype.startswith("text/plain")
        ):
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
    """Addresses of these headers, in order, de-duplicated (a dict: a To of 20 000 addresses
    made the list's "not in" checks take seconds)."""
    out: dict[str, None] = {}
    for name in names:
        for value in msg.get_all(name) or []:
            for addr in addresses(decode_header_value(str(value))):
                out.setdefault(addr, None)
    return list(out)


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
