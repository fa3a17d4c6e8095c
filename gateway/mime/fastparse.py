"""The compat32 parse of a well-formed message, without the line-by-line feed parser.

``email.parser.BytesParser(policy=compat32)`` reads a message one line at a time through
``FeedParser``: about a third of the event loop's CPU per 20 KB newsletter went there. Real
submissions are overwhelmingly well formed (CRLF line ends, clean header blocks, each
multipart with its boundary lines), and for those this module builds the very same tree —
the same ``Message`` objects with the same ``_headers``, ``_payload``, ``preamble``,
``epilogue`` and (empty) ``defects`` — by cutting the text at header ends and boundary
lines with C-speed string searches.

Anything else (a bare CR or LF, a header line the feed parser would flag, a multipart without
its boundary or close delimiter, doubled boundary lines, ``message/*`` parts, digests,
a multipart with a transfer encoding) returns ``None`` and the caller uses the real parser,
so odd input is judged exactly as before. ``tests/unit/test_mime_fastparse.py`` proves the
trees equal on every message of the shared corpora and on generated ones.
"""

from __future__ import annotations

import email.parser
import itertools
import re
from email import policy as email_policy
from email.message import Message

from gateway.fastpaths import stdlib_email
from gateway.lineends import crlf_only

__all__ = ["parse", "parse_fast"]

_COMPAT32 = email_policy.compat32
# A header line as the feed parser recognises one (headerRE), minus the forms it treats
# specially: "From " lines, empty names and continuation lines are handled separately.
_HEADER_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+:")
_MAX_DEPTH = 20
# More MIME entities than this (the policies' own bound) go to the feed parser at once, so a
# message of many thousand parts never pays for a fast attempt and then the full parse.
_MAX_ENTITIES = 1000


def parse(raw: bytes) -> Message:
    """``BytesParser(policy=compat32).parsebytes(raw)``, faster for well-formed mail (unless
    the fast paths are off: gateway/fastpaths/stdlib_email.py)."""
    message = parse_fast(raw) if stdlib_email.ACTIVE else None
    if message is None:
        message = email.parser.BytesParser(policy=_COMPAT32).parsebytes(raw)
    return message


def parse_fast(raw: bytes) -> Message | None:
    """The compat32 tree of `raw`, or None when the message needs the feed parser."""
    if not crlf_only(raw):
        return None
    text = raw.decode("ascii", "surrogateescape")
    return _entity(text, 0, len(text), 0, [_MAX_ENTITIES])


def _entity(text: str, start: int, end: int, depth: int, budget: list[int]) -> Message | None:
    """The entity in text[start:end]: header block, blank line, body. `budget` counts down the
    entities still allowed."""
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        return None
    blank = text.find("\r\n\r\n", start, end)
    if text.startswith("\r\n", start) and start + 2 <= end:
        header_end, body_start = start, start + 2  # no headers at all
    elif blank < 0:
        return None
    else:
        header_end, body_start = blank + 2, blank + 4
    message = Message(policy=_COMPAT32)
    if not _headers(message, text[start:header_end]):
        return None
    maintype = message.get_content_maintype()
    if maintype == "message" or message.get_content_type() == "multipart/digest":
        return None
    if maintype != "multipart":
        message._payload = text[body_start:end]  # type: ignore[attr-defined]
        return message
    if not _multipart(message, text, body_start, end, depth, budget):
        return None
    return message


def _headers(message: Message, block: str) -> bool:
    lines = block.split("\r\n")
    lines.pop()  # the block ends with CRLF
    current: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not current:
                return False  # a first line that is a continuation: a defect
            current.append(line)
            continue
        if not _HEADER_NAME.match(line) or line.startswith("From "):
            return False
        if current:
            _store(message, current)
        current = [line]
    if current:
        _store(message, current)
    return True


def _store(message: Message, lines: list[str]) -> None:
    # compat32's header_source_parse over the feed parser's lines (each with its CRLF).
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t")
    if len(lines) > 1:
        value = value + "\r\n" + "\r\n".join(lines[1:])
    message._headers.append((name, value))  # type: ignore[attr-defined]


def _multipart(message: Message, text: str, start: int, end: int, depth: int, budget: list[int]) -> bool:
    boundary = message.get_boundary()
    if boundary is None or "\r" in boundary or "\n" in boundary:
        return False  # the feed parser matches line by line: such a boundary never matches
    cte = str(message.get("content-transfer-encoding", "8bit")).lower()
    if cte not in ("7bit", "8bit", "binary"):
        return False
    lines = _delimiter_lines(text, "--" + boundary, start, end)
    if not lines or not lines[-1][2]:
        return False  # no start delimiter, or no close delimiter
    if lines[0][2] or any(close for _, _, close in lines[:-1]):
        return False  # a close delimiter before the last, or nothing but a close
    first = lines[0][0]
    if first > start:
        preamble = text[start:first]
        message.preamble = preamble[:-2] if preamble.endswith("\r\n") else preamble
    parts: list[Message] = []
    for before, after in itertools.pairwise(lines):
        part_start, part_end = before[1], after[0]
        if part_start == part_end:
            return False  # doubled boundary lines: the feed parser skips them specially
        part = _entity(text, part_start, part_end, depth + 1, budget)
        if part is None:
            return False
        _trim_trailing_newline(part)
        parts.append(part)
    message._payload = parts  # type: ignore[attr-defined]
    message.epilogue = text[lines[-1][1] : end]
    return True


def _delimiter_lines(text: str, dashed: str, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(start, end, is the close delimiter) of each line in text[start:end] that the feed
    parser takes for a delimiter: `--boundary`, optionally `--`, blanks and tabs, then CRLF
    (or the end of the region).

    A region never holds an enclosing boundary's line: each part is cut out between its
    parent's delimiter lines, and the top level has no parent.
    """
    lines = []
    at = text.find(dashed, start, end)
    while at >= 0:
        if at == start or text[at - 1] == "\n":
            after = at + len(dashed)
            close = text.startswith("--", after, end)
            if close:
                after += 2
            while after < end and text[after] in " \t":
                after += 1
            if after == end:
                lines.append((at, end, close))
            elif text.startswith("\r\n", after, end):
                lines.append((at, after + 2, close))
        at = text.find(dashed, at + 1, end)
    return lines


def _trim_trailing_newline(part: Message) -> None:
    # RFC 2046: the CRLF before a delimiter belongs to the delimiter (as the feed parser does).
    if part.get_content_maintype() == "multipart":
        epilogue = part.epilogue
        if epilogue == "":
            part.epilogue = None
        elif epilogue is not None and epilogue.endswith("\r\n"):
            part.epilogue = epilogue[:-2]
        return
    payload = part._payload  # type: ignore[attr-defined]
    if isinstance(payload, str) and payload.endswith("\r\n"):
        part._payload = payload[:-2]  # type: ignore[attr-defined]
