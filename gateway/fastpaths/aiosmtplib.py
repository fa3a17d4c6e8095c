"""aiosmtplib's internals, replaced where they cost the relay most.

Written for aiosmtplib 5.x (>= 5.1). Outside that range or with `GATEWAY_NO_FASTPATHS=1`,
aiosmtplib's own code runs: its DATA preparation, and one command and one reply at a time
through its public API (`execute_command`, `data`) instead of a pipelined batch.

* DATA preparation without two regex passes over every message. Before sending DATA,
  aiosmtplib rewrites every line ending with a regex (so lone CR/LF become CRLF) and
  dot-stuffs with another (`(?m)^\\.`): ~0.4 ms of CPU per 20 KB newsletter, more than the RSA
  signature. The gateway only relays messages already checked to contain CRLF line ends only
  (`crlf_only`), for which both steps reduce to C-speed byte operations. The stand-ins go into
  aiosmtplib's protocol module; any message that is not CRLF-only still takes aiosmtplib's own
  regex path.
* Pipelining (RFC 2920): `Pipeline` writes a batch through aiosmtplib's protocol object and
  reads the replies itself, since aiosmtplib's protocol reads one reply per command.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Any

import aiosmtplib
from aiosmtplib import SMTPResponse

from gateway.fastpaths.switch import Status, decide
from gateway.lineends import crlf_only

try:  # internals: another major version may not have them, and then the stock code runs
    import aiosmtplib.protocol as protocol
except ImportError:  # pragma: no cover - only on an aiosmtplib this was not written for
    protocol = None  # type: ignore[assignment]

WRITTEN_FOR = ((5, 1), (6,))
STATUS = Status("aiosmtplib", "", False, "not configured yet")
ACTIVE = False
_STOCK_NORMALIZE = getattr(protocol, "normalize_message_line_endings", None)
_STOCK_PERIOD_REGEX = getattr(protocol, "PERIOD_REGEX", None)
# aiosmtplib 5's reply limits (protocol.MAX_LINE_LENGTH, MAX_RESPONSE_LENGTH), copied so that
# this module needs nothing else of its internals.
MAX_LINE_LENGTH = 8192
MAX_RESPONSE_LENGTH = MAX_LINE_LENGTH * 4


def configure() -> Status:
    """Install the fast paths, or put aiosmtplib's own code back, as `decide` says."""
    global STATUS, ACTIVE
    STATUS = decide("aiosmtplib", WRITTEN_FOR)
    ACTIVE = STATUS.active
    if _STOCK_NORMALIZE is None or _STOCK_PERIOD_REGEX is None:
        # Imports of this module must not fail on another version, whatever the range says.
        ACTIVE = False
        STATUS = Status(STATUS.library, STATUS.version, False, "aiosmtplib.protocol differs")
        return STATUS
    if ACTIVE:
        protocol.normalize_message_line_endings = _normalize_line_endings  # type: ignore[assignment]
        protocol.PERIOD_REGEX = _DotStuffing(_STOCK_PERIOD_REGEX)  # type: ignore[assignment]
    else:
        protocol.normalize_message_line_endings = _STOCK_NORMALIZE
        protocol.PERIOD_REGEX = _STOCK_PERIOD_REGEX
    return STATUS


# --- DATA preparation -------------------------------------------------------------------------


def _normalize_line_endings(message: bytes) -> bytes:
    if not crlf_only(message):
        assert _STOCK_NORMALIZE is not None  # installed only then
        return _STOCK_NORMALIZE(message)  # type: ignore[no-any-return]
    return message if message.endswith(b"\r\n") else message + b"\r\n"


class _DotStuffing:
    """`PERIOD_REGEX.sub(b"..", message)`: a dot at the start of any line is doubled."""

    def __init__(self, regex: re.Pattern[bytes]) -> None:
        self._regex = regex

    def sub(self, repl: bytes, message: bytes) -> bytes:
        if repl != b".." or not crlf_only(message):
            return self._regex.sub(repl, message)
        stuffed = message.replace(b"\r\n.", b"\r\n..")
        return b"." + stuffed if stuffed.startswith(b".") else stuffed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._regex, name)


def data_payload(message: bytes) -> bytes:
    """The bytes aiosmtplib transmits after DATA's 354 (`execute_data_command`): line endings
    normalised, dot-stuffed, terminated by ".\\r\\n". Used by `Pipeline` only, so only while
    the fast paths (and aiosmtplib's protocol module they were written for) are in place."""
    message = protocol.normalize_message_line_endings(message)
    return protocol.PERIOD_REGEX.sub(b"..", message) + b".\r\n"


# --- pipelining -------------------------------------------------------------------------------


def can_pipeline(client: aiosmtplib.SMTP) -> bool:
    """A batch may be sent: fast paths on, the server offers PIPELINING, connected."""
    return ACTIVE and client.supports_extension("pipelining") and client.protocol is not None


class Pipeline:
    """One pipelined batch: writes through aiosmtplib's protocol, replies read in order."""

    def __init__(self, client: aiosmtplib.SMTP, timeout: float | None) -> None:
        if client.protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._protocol = client.protocol
        self._replies = _Replies(client.protocol, timeout)

    def write(self, data: bytes) -> None:
        self._protocol.write(data)

    async def next(self) -> SMTPResponse:
        return await self._replies.next()

    def finish(self) -> bool:
        """Hand the transport back to aiosmtplib; False if unasked-for data had arrived."""
        return self._replies.finish()


class _Replies(asyncio.Protocol):
    """Reads a run of pipelined replies, standing in for aiosmtplib's protocol meanwhile.

    aiosmtplib's SMTPProtocol parses one reply per command and drops bytes that arrive while a
    parsed reply awaits pickup, so it cannot read the answers to a pipelined batch. While a
    batch is answered this protocol receives the transport's data instead (asyncio's
    `set_protocol`); writes still go through aiosmtplib's protocol, and losing the connection
    is passed on to it, so the aiosmtplib client knows as usual. Each reply is awaited with
    `timeout`, the per-command timeout aiosmtplib uses.
    """

    def __init__(self, owner: protocol.SMTPProtocol, timeout: float | None) -> None:
        if owner.transport is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        self._owner = owner
        self._transport = owner.transport
        self._timeout = timeout
        self._buffer = bytearray()
        self._replies: deque[SMTPResponse] = deque()
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._transport.set_protocol(self)

    def finish(self) -> bool:
        """Hand the transport back to aiosmtplib; False if unasked-for data had arrived."""
        self._transport.set_protocol(self._owner)
        return not (self._buffer or self._replies or self._error)

    async def next(self) -> SMTPResponse:
        if not self._replies and self._error is None:
            loop = asyncio.get_running_loop()
            self._waiter = waiter = loop.create_future()
            timer = (
                loop.call_later(self._timeout, self._expire, waiter) if self._timeout is not None else None
            )
            try:
                await waiter
            finally:
                self._waiter = None
                if timer is not None:
                    timer.cancel()
        if self._replies:
            return self._replies.popleft()
        assert self._error is not None
        raise self._error

    def _expire(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))

    def _fail(self, exc: Exception) -> None:
        if self._error is None:
            self._error = exc
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._error is not None:
            return
        buffer = self._buffer
        buffer += data
        try:
            while (reply := _parse_reply(buffer)) is not None:
                self._replies.append(reply)
        except aiosmtplib.SMTPResponseException as exc:
            self._fail(exc)
            return
        if len(buffer) > MAX_RESPONSE_LENGTH:
            self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
        elif self._replies and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False  # closes the transport

    def connection_lost(self, exc: Exception | None) -> None:
        lost = aiosmtplib.SMTPServerDisconnected("Connection lost")
        lost.__cause__ = exc
        self._fail(lost)
        self._owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()


def _parse_reply(buffer: bytearray) -> SMTPResponse | None:
    """Take one complete (possibly multiline) reply off the buffer, as aiosmtplib parses it."""
    offset = 0
    lines: list[bytes] = []
    while (end := buffer.find(b"\n", offset)) != -1:
        line = bytes(buffer[offset : end + 1])
        if len(line) > MAX_LINE_LENGTH:
            raise aiosmtplib.SMTPResponseException(-1, "Response too long")
        try:
            code = int(line[:3])
        except ValueError:
            raise aiosmtplib.SMTPResponseException(
                -1, "Malformed SMTP response line: " + line.decode("utf-8", "ignore")
            ) from None
        offset = end + 1
        lines.append(line[4:].strip(b" \t\r\n"))
        if line[3:4] != b"-":
            del buffer[:offset]
            return SMTPResponse(code, b"\n".join(lines).decode("utf-8", "surrogateescape"))
    return None


configure()  # at import: decided before the first session or relay
