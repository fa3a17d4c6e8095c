"""Line ends of message bytes: is every CR and LF part of a CRLF?

The end of DATA, the parse, DKIM and the relay each ask about the same bytes object of a
message, so the last answer is kept by object (bytes are immutable, so the answer holds).
This module imports nothing of the gateway: the MIME parse (`gateway.mime.fastparse`) and the
byte-level header edits (`gateway.core.message`) both stand on it.
"""

from __future__ import annotations

# The last answer of crlf_only, by object.
_last_crlf_check: tuple[bytes | None, bool] = (None, False)


def crlf_only(data: bytes) -> bool:
    """No bare CR or LF: every CR and every LF is part of a CRLF exactly when the three counts
    are equal (a CR starts at most one CRLF, an LF ends at most one). Three C-speed counts,
    ~50x cheaper than a regex over a 20 KB message."""
    global _last_crlf_check
    last, answer = _last_crlf_check
    if last is data:
        return answer
    pairs = data.count(b"\r\n")
    answer = data.count(b"\r") == pairs and data.count(b"\n") == pairs
    if type(data) is bytes:  # a bytearray could change after the check
        _last_crlf_check = (data, answer)
    return answer


def remember_prepended(prefix: bytes, body: bytes, joined: bytes) -> None:
    """`joined` is ``prefix + body``: when `body` was just found CRLF-only (crlf_only's last
    answer) and `prefix` is CRLF-terminated lines, `joined` is known to be CRLF-only without
    counting the whole message again (no CR or LF pair can span the join)."""
    global _last_crlf_check
    last, answer = _last_crlf_check
    if last is body and answer and prefix.endswith(b"\r\n"):
        pairs = prefix.count(b"\r\n")
        if prefix.count(b"\r") == pairs and prefix.count(b"\n") == pairs:
            _last_crlf_check = (joined, True)
