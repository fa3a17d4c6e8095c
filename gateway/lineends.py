"""Line ends of message bytes: is every CR and LF part of a CRLF?

The end of DATA, the parse, DKIM and the relay each ask about the same bytes objects of a
message, so the last answers are kept by object (bytes are immutable, so an answer holds). Two,
because the engine renders the client's bytes twice (once to sign, once for the relay:
gateway.core.plan) and both renderings start from the checked original.
This module imports nothing of the gateway: the MIME parse (`gateway.mime.fastparse`), the
byte-level header edits (`gateway.core.message`) and the relay fast path all stand on it.
"""

from __future__ import annotations

# The last answers of crlf_only, by object, newest first.
_recent_crlf_checks: list[tuple[bytes, bool]] = []


def recent_answer(data: bytes) -> bool | None:
    for checked, answer in _recent_crlf_checks:
        if checked is data:
            return answer
    return None


def _remember(data: bytes, answer: bool) -> None:
    older = [entry for entry in _recent_crlf_checks if entry[0] is not data]
    _recent_crlf_checks[:] = [(data, answer), *older[:1]]


def crlf_only(data: bytes) -> bool:
    """No bare CR or LF: every CR and every LF is part of a CRLF exactly when the three counts
    are equal (a CR starts at most one CRLF, an LF ends at most one). Three C-speed counts,
    ~50x cheaper than a regex over a 20 KB message."""
    known = recent_answer(data)
    if known is not None:
        return known
    pairs = data.count(b"\r\n")
    answer = data.count(b"\r") == pairs and data.count(b"\n") == pairs
    if type(data) is bytes:  # a bytearray could change after the check
        _remember(data, answer)
    return answer


def remember_prepended(prefix: bytes, body: bytes, joined: bytes, start: int = 0) -> None:
    """`joined` is ``prefix + body[start:]``: when `body` was recently found CRLF-only (one of
    crlf_only's last answers), `prefix` is CRLF-terminated lines and `start` is 0 or just
    after a line break of `body`, `joined` is known to be CRLF-only without counting the whole
    message again (no CR or LF pair can span the join)."""
    if recent_answer(body) and prefix.endswith(b"\r\n") and (not start or body[start - 1 : start] == b"\n"):
        pairs = prefix.count(b"\r\n")
        if prefix.count(b"\r") == pairs and prefix.count(b"\n") == pairs:
            _remember(joined, True)
