"""The relay's DATA preparation gives the bytes aiosmtplib's own regexes give."""

from __future__ import annotations

from aiosmtplib import protocol
from hypothesis import given
from hypothesis import strategies as st

from gateway.fastpaths import aiosmtplib as fast

LINE_ENDINGS = protocol.LINE_ENDINGS_REGEX
REFERENCE_DOTS = fast._STOCK_PERIOD_REGEX


def reference(message: bytes) -> bytes:
    message = LINE_ENDINGS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return REFERENCE_DOTS.sub(b"..", message)


lines = st.lists(st.sampled_from([b"", b".", b"..", b"a.b", b".x", b"x", b"\r", b"\n"]), max_size=12)


@given(lines, st.sampled_from([b"\r\n", b"\n", b"\r"]))
def test_same_bytes_as_aiosmtplib(parts, ending):
    message = ending.join(parts)
    prepared = protocol.PERIOD_REGEX.sub(b"..", protocol.normalize_message_line_endings(message))
    assert prepared == reference(message)
