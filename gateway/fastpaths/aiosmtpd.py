"""aiosmtpd's internals, replaced where they cost the submission listener most.

Written for aiosmtpd 1.4.x (>= 1.4.6, which the gateway requires anyway). Each fast path gives
exactly what aiosmtpd's own code gives, faster; outside that version range or with
`GATEWAY_NO_FASTPATHS=1`, aiosmtpd's own code runs:

* per-connection set-up without introspection: aiosmtpd's `SMTP.__init__` runs
  `inspect.getmembers` and `dir()` over the protocol and the handler, and `inspect.signature`
  over the EHLO hook, for every connection (~100-200 µs of CPU) to find the same methods of the
  same classes again. It only keeps the members whose names start with "auth_", "handle_" or
  "smtp_". The stand-ins below give it exactly those members from a per-class cache, put into
  aiosmtpd's module namespace, where its `__init__` looks the names up (a module global
  shadows the builtin `dir` there);
* `FastPathSMTP._getaddr`: the plain `<local@domain>` path without aiosmtpd's header parser;
* `FastPathSMTP.push`: a multi-line reply in one write instead of one per line;
* `read_data`: the DATA phase read in large chunks instead of one `readuntil` per line, the
  bytes after the end-of-data marker (pipelined commands) written back into the reader's
  buffer for aiosmtpd's command loop.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
from typing import Any

import aiosmtpd.smtp as aiosmtpd_smtp

from gateway.dataread import DataAccumulator
from gateway.fastpaths.switch import Status, decide

WRITTEN_FOR = ((1, 4, 6), (1, 5))
STATUS = Status("aiosmtpd", "", False, "not configured yet")
ACTIVE = False
_DATA_CHUNK = 256 * 1024
_aiosmtpd_log = logging.getLogger("mail.log")  # aiosmtpd's own logger (push logs to it)
_STOCK_INSPECT = aiosmtpd_smtp.inspect


def configure() -> Status:
    """Install the fast paths, or put aiosmtpd's own code back, as `decide` says."""
    global STATUS, ACTIVE
    STATUS = decide("aiosmtpd", WRITTEN_FOR)
    ACTIVE = STATUS.active
    if ACTIVE:
        aiosmtpd_smtp.inspect = _CachedInspect()  # type: ignore[assignment]
        aiosmtpd_smtp.dir = _cached_dir  # type: ignore[attr-defined]
    else:
        aiosmtpd_smtp.inspect = _STOCK_INSPECT
        aiosmtpd_smtp.__dict__.pop("dir", None)  # the builtin again
    return STATUS


# --- per-connection set-up --------------------------------------------------------------------

# The only members aiosmtpd's __init__ looks for (smtp.py: auth_*, handle_*, smtp_*).
_PREFIXES = ("auth_", "handle_", "smtp_")
_names_by_type: dict[type, tuple[str, ...]] = {}


def _member_names(obj: Any) -> tuple[str, ...]:
    cls = type(obj)
    names = _names_by_type.get(cls)
    if names is None:
        names = tuple(name for name in dir(cls) if name.startswith(_PREFIXES))
        _names_by_type[cls] = names
    return names


@functools.lru_cache(maxsize=256)
def _signature(func: Any) -> inspect.Signature:
    return inspect.signature(func)


class _CachedInspect:
    """The slice of `inspect` aiosmtpd uses: getmembers and signature, from caches."""

    @staticmethod
    def getmembers(obj: Any) -> list[tuple[str, Any]]:
        return [(name, getattr(obj, name)) for name in _member_names(obj)]

    @staticmethod
    def signature(obj: Any) -> inspect.Signature:
        func = getattr(obj, "__func__", None)
        if func is None:
            return inspect.signature(obj)
        # A bound method: the function's signature without its first parameter.
        params = list(_signature(func).parameters.values())[1:]
        return _signature(func).replace(parameters=params)

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


def _cached_dir(obj: Any) -> list[str]:
    return list(_member_names(obj))


# --- the session ------------------------------------------------------------------------------

# The path of nearly every MAIL FROM / RCPT TO: `<local@domain>`, ASCII, the local part a
# dot-atom (not starting with "=?", which the header parser would try as an encoded word), the
# domain a dot-atom of letters, digits and hyphens. For such an argument aiosmtpd's parser
# (email._header_value_parser.get_angle_addr, ~40 µs) returns exactly `local@domain` and, after
# the ">", the rest of the argument less the one space before the parameters.
_PLAIN_PATH = re.compile(
    r"<((?!=\?)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>"
)


class FastPathSMTP(aiosmtpd_smtp.SMTP):
    """aiosmtpd's SMTP with the session-level fast paths; aiosmtpd's own methods when off."""

    _pending_reply = b""  # continuation lines of a multi-line reply not yet written

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        match = _PLAIN_PATH.match(arg) if arg and ACTIVE else None
        if match is not None:
            rest = arg[match.end() :]
            if rest and (rest[0] != " " or len(rest) < 2 or rest[1].isspace() or rest[1] == "("):
                match = None  # other text, comments or runs of white space after ">"
            elif rest:
                rest = rest[1:]
        if match is None:
            return super()._getaddr(arg)  # type: ignore[no-any-return]
        address = match.group(1)
        if self.local_part_limit and address.rindex("@") > self.local_part_limit:
            return None, None
        return address, rest

    async def push(self, status: Any) -> None:
        if not ACTIVE and not self._pending_reply:
            await super().push(status)
            return
        if isinstance(status, str):
            line = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        else:
            line = status
        if line[3:4] == b"-":
            # A continuation line ("250-SIZE ...") is always followed by more: send the whole
            # multi-line reply in one write instead of one system call per line.
            self._pending_reply += line + b"\r\n"
            return
        if self._pending_reply:
            line, self._pending_reply = self._pending_reply + line, b""
        # aiosmtpd's push for bytes, inlined.
        self._writer.write(line + b"\r\n")
        if _aiosmtpd_log.isEnabledFor(logging.DEBUG):
            assert self.session is not None
            _aiosmtpd_log.debug("%r << %r", self.session.peer, line)
        await self._writer.drain()


async def read_data(reader: asyncio.StreamReader, readuntil: Any, acc: DataAccumulator) -> bool:
    """Read the message after DATA's 354 into `acc`; False if the client went away first.

    Fast: large chunks, the bytes after the marker put back at the front of the reader's
    buffer. Stock: one `readuntil(b"\\r\\n")` per line, as aiosmtpd reads DATA, which never
    reads past the marker (`readuntil` is the reader's own, not a wrapper)."""
    if ACTIVE:
        while not acc.done:
            chunk = await reader.read(_DATA_CHUNK)
            if not chunk:
                return False
            acc.feed(chunk)
        if acc.leftover:
            # Pipelined commands after the message belong to the command reader.
            reader._buffer[0:0] = acc.leftover  # type: ignore[attr-defined]
            acc.leftover = b""
        return True
    while not acc.done:
        try:
            line = await readuntil(b"\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError as exc:
            # A line longer than the reader's limit: take what is buffered, as a piece of it.
            line = await reader.read(max(exc.consumed, 1))
            if not line:
                return False
        acc.feed(line)
    return True


configure()  # at import: decided before the first session or relay
