"""The text/plain and text/html parts of a parsed message, decoded.

The caller parses each message once with the cheap ``compat32`` policy and
hands the ``email.message.Message`` to us; we never re-parse or re-serialise
it. Everything is bounded so that a 10 MB message or a MIME bomb costs at most
``max_parts`` node visits and ``max_decoded_bytes`` per part.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from email.message import Message

from gateway.mime.charset import decode_bytes

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_PARTS",
    "DEFAULT_MAX_TOTAL_BYTES",
    "TEXT_TYPES",
    "TextPart",
    "TextScan",
    "body_alternatives",
    "decode_payload",
    "is_attachment",
    "iter_text_parts",
    "scan_text_parts",
]

TEXT_TYPES = frozenset({"text/plain", "text/html"})

DEFAULT_MAX_PARTS = 1000
DEFAULT_MAX_DEPTH = 20
# Real newsletters are 20-200 KB of HTML (Gmail clips at 102 KB); 1 MiB per
# part leaves lots of headroom while keeping html.parser (~1 MB/s on dense
# markup) well inside a policy timeout.
DEFAULT_MAX_DECODED_BYTES = 1024 * 1024
# Bounds the sum over all parts, so 1000 parts x 1 MiB cannot happen.
DEFAULT_MAX_TOTAL_BYTES = 16 * 1024 * 1024

# Transfer-encoded input is at most ~3x its decoded size (quoted-printable
# "=XX"), so this much raw payload always suffices for the decoded budget.
_RAW_PER_DECODED = 3
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]+")
_B64_PAD_RUN = re.compile(rb"=+")


@dataclass(frozen=True)
class TextPart:
    """One decoded text/plain or text/html leaf of the MIME tree."""

    content_type: str  # "text/plain" | "text/html"
    text: str  # decoded text; for HTML the raw decoded markup
    path: str  # IMAP-style position, e.g. "1.2"
    is_attachment: bool
    # True when the decoded text was cut to the size budget (head and tail
    # are kept, the middle is dropped) or the total budget was exhausted.
    truncated: bool = False


@dataclass
class TextScan:
    """Result of :func:`scan_text_parts`, with the limits that were hit."""

    parts: list[TextPart] = field(default_factory=list)
    nodes_seen: int = 0
    hit_part_limit: bool = False
    hit_depth_limit: bool = False

    @property
    def complete(self) -> bool:
        """False when some of the tree was not looked at."""
        return not (self.hit_part_limit or self.hit_depth_limit)


def is_attachment(part: Message) -> bool:
    """Whether ``part`` is marked ``Content-Disposition: attachment``.

    Only the explicit disposition counts: guessing from a name= parameter would
    let a sender take a displayed body out of the checks.
    """
    return _disposition(part) == "attachment"


def _disposition(part: Message) -> str | None:
    value = part.get("Content-Disposition")
    if value is None:
        return None
    head = str(value).split(";", 1)[0].strip().lower()
    return head or None


def _to_bytes(payload: str) -> bytes:
    # compat32 BytesParser stores 8-bit bytes as lone surrogates; this is the
    # exact inverse. Real non-ASCII characters (from a str-built message)
    # become UTF-8.
    return payload.encode("utf-8", errors="surrogateescape")


def _b64decode(data: bytes) -> bytes:
    # Tolerates missing/garbled padding, line noise and concatenated
    # base64 blocks (each with its own "=" padding), like mail clients do.
    out = []
    for chunk in _B64_PAD_RUN.split(_B64_JUNK.sub(b"", data)):
        usable = len(chunk) - len(chunk) % 4
        remainder = chunk[usable:]
        if len(remainder) >= 2:
            remainder += b"=" * (4 - len(remainder))
            chunk = chunk[:usable] + remainder
        else:
            chunk = chunk[:usable]
        try:
            out.append(base64.b64decode(chunk))
        except (binascii.Error, ValueError):
            continue
    return b"".join(out)


def _transfer_decode(raw: bytes, cte: str) -> bytes:
    if cte == "base64":
        return _b64decode(raw)
    if cte == "quoted-printable":
        # a2b_qp handles "=\r\n" and "=\n" soft breaks and leaves broken
        # escapes as they are, which is what clients display.
        return binascii.a2b_qp(raw)
    # 7bit, 8bit, binary, and unknown encodings are shown as-is by clients.
    return raw


def _head_and_tail(data: bytes, limit: int) -> bytes:
    # Unsubscribe links and the imprint live in the footer: keep both ends.
    half = limit // 2
    return data[:half] + b"\n" + data[len(data) - (limit - half) :]


def _realign_base64(payload: str, start: int) -> str:
    # A base64 tail can only be decoded from a 4-character quantum boundary
    # of the whole stream; count the alphabet characters before ``start``.
    prefix = payload[:start]
    junk = sum(prefix.count(c) for c in " \t\r\n")
    skip = (4 - (start - junk) % 4) % 4
    index = start
    while skip and index < len(payload):
        if payload[index] not in " \t\r\n":
            skip -= 1
        index += 1
    return payload[index:]


def decode_payload(part: Message, max_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> tuple[bytes, bool]:
    """Transfer-decoded body of a leaf part, capped to ``max_bytes``.

    Returns ``(data, truncated)``. Only ``max_bytes * 3`` characters of the raw
    payload are ever looked at, from its start and its end.
    """
    # Not get_payload(): without decode=True it "helpfully" decodes 8-bit
    # bytes with the declared charset (lossy, and wrong when the label lies),
    # and with decode=True it is unbounded. compat32 keeps the raw text here.
    payload = getattr(part, "_payload", None)
    if not isinstance(payload, str):
        return b"", False
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    raw_budget = max_bytes * _RAW_PER_DECODED + 4096
    if len(payload) <= raw_budget:
        data = _transfer_decode(_to_bytes(payload), cte)
        if len(data) <= max_bytes:
            return data, False
        return _head_and_tail(data, max_bytes), True
    half = raw_budget // 2
    head = _transfer_decode(_to_bytes(payload[:half]), cte)[: max_bytes // 2]
    start = len(payload) - half
    tail_raw = payload[start:]
    if cte == "base64":
        tail_raw = _realign_base64(payload, start)
    tail = _transfer_decode(_to_bytes(tail_raw), cte)
    tail = tail[len(tail) - (max_bytes - max_bytes // 2) :]
    return head + b"\n" + tail, True


def _charset(part: Message) -> str | None:
    try:
        value = part.get_param("charset")
    except Exception:  # malformed headers must not stop the scan
        return None
    if isinstance(value, tuple):  # RFC 2231 (charset, language, value)
        value = value[2]
    return str(value) if value else None


def _decode_text(part: Message, max_bytes: int) -> tuple[str, bool]:
    data, truncated = decode_payload(part, max_bytes)
    return decode_bytes(data, _charset(part)), truncated


def _child_path(parent: str, index: int) -> str:
    return f"{parent}.{index}" if parent else str(index)


def scan_text_parts(
    msg: Message,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    decode_attachments: bool = True,
) -> TextScan:
    """Walk the tree once (iteratively) and decode its text/plain and text/html leaves.

    message/* parts are never entered: an attached or forwarded message is
    someone else's mail, not the body this sender is accountable for.
    """
    scan = TextScan()
    budget = max_total_bytes
    # (part, path, depth, inside an attachment)
    stack: list[tuple[Message, str, int, bool]] = [(msg, "", 0, False)]
    while stack:
        part, path, depth, in_attachment = stack.pop()
        if scan.nodes_seen >= max_parts:
            scan.hit_part_limit = True
            break
        scan.nodes_seen += 1
        attached = in_attachment or is_attachment(part)
        # Header lookups are most of this loop's cost: read the type once
        # (get_content_maintype() is the part of get_content_type() before "/").
        ctype = part.get_content_type()
        if ctype.split("/")[0] == "message":
            continue
        if part.is_multipart():
            if depth >= max_depth:
                scan.hit_depth_limit = True
                continue
            children = part.get_payload()
            if not isinstance(children, list):
                continue
            # Reversed so that pops come out in document order.
            for index in range(len(children), 0, -1):
                child = children[index - 1]
                if isinstance(child, Message):
                    stack.append((child, _child_path(path, index), depth + 1, attached))
            continue
        if ctype not in TEXT_TYPES:
            continue
        leaf_path = path or "1"
        if attached and not decode_attachments:
            continue
        limit = min(max_decoded_bytes, budget)
        if limit <= 0:
            scan.parts.append(TextPart(ctype, "", leaf_path, attached, truncated=True))
            continue
        text, truncated = _decode_text(part, limit)
        budget -= len(text)
        scan.parts.append(TextPart(ctype, text, leaf_path, attached, truncated))
    return scan


def iter_text_parts(
    msg: Message,
    *,
    max_parts: int = DEFAULT_MAX_PARTS,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
) -> list[TextPart]:
    """Every text/plain and text/html part at any depth, in document order.

    Attachments are included but flagged ``is_attachment=True``; message/rfc822
    parts are not entered. Never raises on malformed MIME.
    """
    return scan_text_parts(
        msg, max_parts=max_parts, max_depth=max_depth, max_decoded_bytes=max_decoded_bytes
    ).parts


def body_alternatives(msg: Message) -> list[TextPart]:
    """The text/plain and text/html parts the recipient reads as the body.

    Each element is one thing a client may display, so each must carry the
    unsubscribe link and the imprint on its own. An empty list means the
    message has no readable body (policies should treat that as failing).
    Attachments are not even decoded.
    """
    return [p for p in scan_text_parts(msg, decode_attachments=False).parts if not p.is_attachment]
