"""The message as bytes: header lookups and edits without re-serialising the MIME tree.

Added headers are prepended to the original bytes, so the body (and every header the client
wrote) stays byte-identical; that is both cheaper and what DKIM and audits want.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# crlf_only stands below core, mime and the fast paths (gateway/lineends.py): all three use it.
from gateway.lineends import crlf_only, remember_prepended

_HEADER_END = re.compile(rb"\r\n\r\n|\n\n")
_FOLD = re.compile(rb"\r?\n[ \t]")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, rest); no blank line: all header."""
    match = _HEADER_END.search(raw)
    if match is None:
        return raw, b""
    cut = match.start() + (2 if match.group() == b"\r\n\r\n" else 1)
    return raw[:cut], raw[cut:]


def header_fields(header_block: bytes) -> list[tuple[str, bytes]]:
    """Unfolded header fields in order as (lower-case name, raw field bytes incl. folding)."""
    fields: list[tuple[str, bytes]] = []
    for line in header_block.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            name, raw = fields[-1]
            fields[-1] = (name, raw + line)
            continue
        raw_name, sep, _ = line.partition(b":")
        key = raw_name.strip().decode("ascii", "replace").lower() if sep else ""
        fields.append((key, line))
    return fields


def header_map(raw: bytes) -> dict[str, list[str]]:
    """Every header's values by lower-case name, unfolded and decoded leniently (no RFC 2047
    decoding), in order."""
    header_block, _ = split_message(raw)
    headers: dict[str, list[str]] = {}
    for field_name, field in header_fields(header_block):
        if not field_name:
            continue
        value = field.split(b":", 1)[1]
        headers.setdefault(field_name, []).append(_FOLD.sub(b" ", value).strip().decode("utf-8", "replace"))
    return headers


def header_values(raw: bytes, name: str) -> list[str]:
    """All values of a header, unfolded and decoded leniently (no RFC 2047 decoding)."""
    return header_map(raw).get(name.lower(), [])


def remove_headers(raw: bytes, names: Iterable[str]) -> bytes:
    keys = {n.lower() for n in names}
    header_block, body = split_message(raw)
    fields = header_fields(header_block)
    if not any(name in keys for name, _ in fields):
        return raw
    kept = b"".join(field for name, field in fields if name not in keys)
    return kept + body


def prepend_headers(raw: bytes, headers: Sequence[tuple[str, str]]) -> bytes:
    """Prepend `Name: value` lines (already folded by the caller if long) with CRLF ends."""
    if not headers:
        return raw
    added = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    return prepend(added, raw)


def prepend(prefix: bytes, body: bytes, start: int = 0) -> bytes:
    """``prefix + body[start:]`` in one copy; when `body` was recently found CRLF-only and
    `prefix` is CRLF-terminated lines, the result is remembered as CRLF-only without counting
    the whole message again (gateway.lineends)."""
    joined = prefix + body if not start else b"".join((prefix, memoryview(body)[start:]))
    remember_prepended(prefix, body, joined, start)
    return joined


def has_bare_line_ending(raw: bytes) -> bool:
    """A CR not followed by LF or an LF not preceded by CR (SMTP smuggling material)."""
    return not crlf_only(raw)


def longest_line(raw: bytes) -> int:
    return max((len(line) for line in raw.split(b"\r\n")), default=0)
