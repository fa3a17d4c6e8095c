"""How many MIME parts a message has and how deep they nest, bounded from above without a parse.

The parse is the expensive step: the stdlib's feed parser reads a message line by line, and a
message of 240,000 tiny parts (8.6 MB) takes seconds of CPU. The gateway refuses a message over
its part and depth limits *before* that parse, so the count here must be cheap (C-speed byte
searches, Python work per boundary line only up to the limit) and never below the parse's real
count, whatever the sender does: an estimate that a crafted message could undercut would let
the bomb through.

Parts: every MIME entity but the top one begins after a boundary line (``--`` + a boundary of
an enclosing multipart), and a ``message/*`` entity adds one more (its own headers). So

    parts <= 1 + lines starting with "--" + a declared boundary + message/* Content-Types.

Close delimiters are counted too: the bound over-counts by one per multipart, which real mail
(a handful of multiparts) never notices. "Declared" means every ``boundary=`` parameter anywhere
in the message, a superset of what the parser uses. Each is taken as a prefix of the boundary
the parser will see (quoted-pairs, RFC 2231 continuations and encodings, white space are cut
off where they start), so a line the parser takes for a delimiter always starts with one; when
nothing usable is left of a value, or the values are too many to search for one by one, every
line starting with "--" counts.

Depth: the boundary lines are walked in order with a stack of open boundaries, as the feed
parser matches them (a delimiter of an enclosing multipart ends every part inside it), plus one
level per ``message/*`` entity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MimeShape", "coarse_bound", "mime_shape"]

_DASHES = b"\r\n--"
# On the lower-cased message (bytes.lower is one byte for one byte, so positions carry over).
_BOUNDARY_PARAM = re.compile(rb"boundary(\*[0-9]*\*?)?\s*=\s*")
_MESSAGE_TYPE = re.compile(rb"content-type\s*:\s*message/(delivery-status)?")
# More distinct boundaries than this and the count falls back to every "--" line: searching
# for each one would cost a pass over the message per boundary.
_MAX_BOUNDARIES = 64
# ...and more boundary parameters than this (however few distinct) are not read one by one.
_MAX_BOUNDARY_PARAMS = 10_000
_VALUE_END = re.compile(rb'["\\\s;]')


@dataclass(frozen=True)
class MimeShape:
    parts: int  # an upper bound of the MIME entities the parse will find, the message included
    depth: int  # an upper bound of their nesting (1: a message that is not multipart)


def coarse_bound(raw: bytes) -> int:
    """One number over both parts and depth, from three C-speed counts: every delimiter line
    starts a line with "--", every message/* entity names "message/" somewhere, and the
    nesting cannot be deeper than the delimiter lines and message/* entities together. Most
    mail is far below the limits by this count alone, and the finer count is not needed.
    A message/delivery-status body counts its header blocks as entities: not bounded here."""
    lowered = raw.lower()
    if b"delivery-status" in lowered:
        return len(raw)  # "unknown": the finer count decides
    return 1 + raw.count(_DASHES) + raw.startswith(b"--") + lowered.count(b"message/")


def mime_shape(raw: bytes, max_parts: int) -> MimeShape:
    """Bounds for `raw` (CRLF line ends). Counting stops past `max_parts`: a larger `parts`
    only says "over the limit"."""
    lowered = raw.lower()
    message_types = _MESSAGE_TYPE.findall(lowered)
    # A message/* entity adds one entity (its own header block) and one level under it...
    levels = entities = len(message_types)
    if any(message_types):
        # ...but the parser reads each header block of a message/delivery-status body as an
        # entity of its own; each ends at a blank line.
        entities += lowered.count(b"\r\n\r\n")
    prefixes = _boundary_prefixes(raw, lowered)
    if prefixes is None:  # every line starting with "--" may be a boundary line
        dash_lines = raw.count(_DASHES)
        return MimeShape(dash_lines + entities, 1 + dash_lines + levels)
    # A close delimiter follows an opening one of its boundary, so past 2 * max_parts + 1
    # lines more than max_parts of them open a part.
    lines = _delimiter_lines(raw, prefixes, 2 * max_parts + 1)
    if len(lines) > 2 * max_parts + 1:
        return MimeShape(len(lines), len(lines))
    closes, deepest = _walk(raw, lines, prefixes)
    parts = len(lines) - closes + entities
    return MimeShape(parts, 1 + deepest + levels)


def _boundary_prefixes(raw: bytes, lowered: bytes) -> list[bytes] | None:
    """Every declared boundary, cut to a part that every reading of it starts with; None when
    that is an empty string or when there are too many to search for."""
    found: set[bytes] = set()
    for seen, match in enumerate(_BOUNDARY_PARAM.finditer(lowered)):
        if seen > _MAX_BOUNDARY_PARAMS:
            return None
        start = match.end()
        quoted = raw.startswith(b'"', start)
        if quoted:
            start += 1
        end = _VALUE_END.search(raw, start, start + 1000)
        value = raw[start : end.start() if end else min(len(raw), start + 1000)]
        if match.group(1) and match.group(1).endswith(b"*"):
            # RFC 2231 charset'language'%XX: the text before the first %-escape.
            value = value.split(b"'")[-1].split(b"%")[0]
        value = value.rstrip()  # the parser strips the boundary's trailing white space
        if not value:
            return None
        found.add(value)
        if quoted:
            found.add(b'"' + value)  # `"abc"def` is read as the boundary `"abc"def`
        if len(found) > 2 * _MAX_BOUNDARIES:
            return None
    return sorted(found)


def _delimiter_lines(raw: bytes, prefixes: list[bytes], stop_after: int) -> list[int]:
    """Positions (after the CRLF) of lines starting with "--" + one of `prefixes`, in order,
    at most `stop_after` + 1 of them."""
    minimal: list[bytes] = []
    for prefix in prefixes:  # sorted: a prefix comes right before the values it starts
        if not minimal or not prefix.startswith(minimal[-1]):
            minimal.append(prefix)
    if len(minimal) > _MAX_BOUNDARIES:
        minimal = [b""]
    found: list[int] = []
    for prefix in minimal:  # minimal prefixes: no line starts with two of them
        needle = _DASHES + prefix
        at = raw.find(needle)
        while at >= 0:
            found.append(at + 2)
            if len(found) > stop_after:
                return found
            at = raw.find(needle, at + 1)
    return sorted(found)


def _walk(raw: bytes, lines: list[int], prefixes: list[bytes]) -> tuple[int, int]:
    """(close delimiters, deepest stack of multiparts) of the boundary lines, matched as the
    feed parser does: a line of a boundary already open ends the parts inside it (a close
    delimiter that multipart too), a line of any other boundary opens a nested multipart."""
    by_length = sorted(prefixes, key=len, reverse=True)
    stack: list[bytes] = []
    closes = deepest = 0
    for at in lines:
        line_end = raw.find(b"\r\n", at)
        line = raw[at + 2 : line_end if line_end >= 0 else len(raw)]
        boundary = next((p for p in by_length if line.startswith(p)), line)
        if boundary in stack:
            del stack[stack.index(boundary) + 1 :]
            if line[len(boundary) :].rstrip(b" \t") == b"--":
                stack.pop()
                closes += 1
            continue
        stack.append(boundary)
        deepest = max(deepest, len(stack))
    return closes, deepest
