"""The milter listener: the same engine inside an existing Postfix (`smtpd_milters`).

Postfix speaks the Sendmail 8 milter protocol to us for every SMTP session of the services
that name this listener in `smtpd_milters`. This module is a thin adapter over
`gateway.engine.Engine`, like the SMTP proxy in `smtp.py`:

- MAIL: the customer is the SASL login Postfix reports in the `{auth_authen}` macro (we ask
  for it ourselves with the protocol-6 macro negotiation, so `milter_mail_macros` need not
  be touched); no login: `530 5.7.0` as on the proxy. Then `Engine.mail`.
- RCPT: `Engine.rcpt`; end of message: `Engine.data` over the message exactly as Postfix
  passes it (header values with their leading white space, SMFIP_HDR_LEADSPC; body in CRLF).
- A refusal becomes SMFIR_REPLYCODE with the engine's code, enhanced code and text, so the
  client reads the same reply as through the proxy. A pass is "continue": Postfix answers.
- Each edit of the engine's plan (gateway.core.plan) becomes milter actions of one kind: a
  removed header (a client's X-Mailing-ID, Feedback-ID, ...) SMFIR_CHGHEADER with an empty
  value, one per field of that name the client wrote; an added one (X-Mailing-ID,
  Feedback-ID, ..., DKIM-Signature last) SMFIR_INSHEADER right below Postfix's own Received:
  header, on top of those added before it, as the proxy renders it. The delivered header
  block is then laid out as in proxy mode, and the DKIM signature covers exactly what Postfix
  delivers. The VERP envelope sender (`bounce_domain`) becomes SMFIR_CHGFROM.

What Postfix shows a milter, from its milter8.c / cleanup_milter.c: its own Received: header
is hidden (header indexes for changes count without it; insert index 0 is above it, index 1
right below it); multi-line header values arrive with LF between the lines and are written
back from LF-separated values; reply texts get "%%" unescaped to "%".

Library choice: the protocol is implemented here (a few hundred lines, asyncio, no new
dependency) instead of
- pymilter (GPL-2, a C extension over Sendmail's libmilter: needs libmilter-dev and a
  compiler; libmilter runs its own threads and signal handling and one filter per process,
  so every callback would hop threads into our event loop, and SIGTERM/SIGHUP and the in-test
  start/stop of a listener would fight smfi_main; last release 2021),
- purepythonmilter (Apache-2.0 and asyncio, but a single 0.0.1 alpha release from 2023 and
  its own server loop), kilter.protocol (MPL-2.0, sans-IO, "Development Status 1 - Planning"),
  python-libmilter (thread/fork based).
We need a fixed subset (negotiation with macro lists, the SMTP events, header edits, chgfrom,
replies), the wire format is small and stable since Sendmail 8.14, and Postfix's own source is
the reference it is checked against; the integration tests run it against a real Postfix.
"""

from __future__ import annotations

import asyncio
import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway import metrics
from gateway.core import replies
from gateway.core.plan import AddHeader, ChangeSender, Edit, RemoveHeader
from gateway.core.transaction import SessionInfo, Transaction
from gateway.core.verdict import Reply
from gateway.engine import Engine, new_session_id
from gateway.identity import milter_login
from gateway.listeners import SessionCap, listen_streams, ports, wait_until
from gateway.logging import get_logger
from gateway.store import StoreUnavailable

log = get_logger()

# -- protocol constants (Sendmail 8.14 mfdef.h; Postfix milter8.c uses the same values) ----

SMFI_VERSION = 6

# MTA -> filter
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# filter -> MTA
SMFIR_ACCEPT = b"a"
SMFIR_CONTINUE = b"c"
SMFIR_CHGFROM = b"e"
SMFIR_INSHEADER = b"i"
SMFIR_CHGHEADER = b"m"
SMFIR_REPLYCODE = b"y"
SMFIR_TEMPFAIL = b"t"

# actions the filter may request (SMFIF_*)
SMFIF_ADDHDRS = 0x01
SMFIF_CHGHDRS = 0x10
SMFIF_CHGFROM = 0x40
SMFIF_SETSYMLIST = 0x100

# protocol flags (SMFIP_*)
SMFIP_NR_HDR = 1 << 7
SMFIP_NOUNKNOWN = 1 << 8
SMFIP_NR_CONN = 1 << 12
SMFIP_NR_HELO = 1 << 13
SMFIP_NR_DATA = 1 << 16
SMFIP_NR_EOH = 1 << 18
SMFIP_NR_BODY = 1 << 19
SMFIP_HDR_LEADSPC = 1 << 20

# macro stages for SMFIR_SETSYMLIST-style negotiation (SMFIM_*)
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_EOM = 5

REQUIRED_ACTIONS = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGFROM
# Events we answer without a reply when the MTA allows it (fewer round trips), events we do
# not want, and exact header bytes (leading white space of values included).
WANTED_FLAGS = (
    SMFIP_NR_HDR
    | SMFIP_NR_EOH
    | SMFIP_NR_BODY
    | SMFIP_NR_DATA
    | SMFIP_NR_CONN
    | SMFIP_NR_HELO
    | SMFIP_NOUNKNOWN
    | SMFIP_HDR_LEADSPC
)
# The macros we ask Postfix for, per stage (this overrides milter_*_macros for us only).
MACRO_LISTS = {
    SMFIM_HELO: "{tls_version}",
    SMFIM_ENVFROM: "i {auth_type} {auth_authen} {tls_version}",
    SMFIM_EOM: "i",
}

MAX_PACKET = 1 << 20  # Postfix sends body chunks of at most 64 KiB; headers are limited too.

# Postfix's own Received: header is hidden from milters; insert index 1 is right below it,
# which gives the delivered header block the same layout as proxy mode.
INSERT_BASE = 1

# Logged and written to the ledger when Postfix takes the message over (never sent: a milter
# can only refuse; Postfix itself answers the client's DATA with its queue id).
HANDED_TO_POSTFIX = Reply(250, "2.0.0", "Accepted; queued by Postfix")
UNKNOWN_ACCOUNT = Reply(550, "5.7.1", "Account unknown; please contact support")


class MilterProtocolError(Exception):
    """The peer sent something that is not the milter protocol as we negotiated it."""


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


def reply_packet(reply: Reply) -> bytes:
    """SMFIR_REPLYCODE for a 4xx/5xx reply; Postfix unescapes "%%", so "%" is doubled."""
    text = " ".join(reply.text.replace("\x00", " ").split())
    line = f"{reply.code} {reply.enhanced} {text}".replace("%", "%%")
    return packet(SMFIR_REPLYCODE, line.encode("utf-8", "replace") + b"\0")


def split_strings(data: bytes) -> list[bytes]:
    """NUL-terminated strings of a packet."""
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def unbracket(address: bytes) -> str:
    text = address.decode("utf-8", "surrogateescape").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return text


@dataclass(frozen=True)
class Negotiated:
    version: int
    actions: int
    flags: int

    @property
    def leading_space(self) -> bool:
        return bool(self.flags & SMFIP_HDR_LEADSPC)

    def replies_to(self, flag: int) -> bool:
        return not self.flags & flag


def negotiate(data: bytes) -> tuple[Negotiated, bytes]:
    """The filter's SMFIC_OPTNEG answer to the MTA's offer."""
    if len(data) < 12:
        raise MilterProtocolError("short OPTNEG")
    version, actions, flags = struct.unpack("!III", data[:12])
    if version < 2:
        raise MilterProtocolError(f"milter protocol version {version} is not supported")
    if actions & REQUIRED_ACTIONS != REQUIRED_ACTIONS:
        raise MilterProtocolError(
            "the MTA does not offer header changes and sender change (SMFIF_ADDHDRS, CHGHDRS, "
            "CHGFROM): set milter_protocol = 6"
        )
    ours = Negotiated(
        min(version, SMFI_VERSION), REQUIRED_ACTIONS | (actions & SMFIF_SETSYMLIST), flags & WANTED_FLAGS
    )
    body = struct.pack("!III", ours.version, ours.actions, ours.flags)
    if ours.actions & SMFIF_SETSYMLIST:
        for stage, names in MACRO_LISTS.items():
            body += struct.pack("!I", stage) + names.encode() + b"\0"
    return ours, packet(SMFIC_OPTNEG, body)


def rebuild_message(headers: list[tuple[bytes, bytes]], body: bytes, *, leading_space: bool) -> bytes:
    """The message as Postfix will deliver it (minus its hidden Received: header)."""
    out = bytearray()
    for name, value in headers:
        value = value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        out += name + b":" + (value if leading_space else b" " + value) + b"\r\n"
    out += b"\r\n"
    out += body
    return bytes(out)


def edit_packets(
    edits: Sequence[Edit], headers: Sequence[tuple[bytes, bytes]], *, leading_space: bool
) -> list[bytes]:
    """The milter actions for the engine's edits, in their order, over the header fields
    Postfix passed us (`headers`, as (name, value) in message order)."""
    out = []
    for edit in edits:
        if isinstance(edit, RemoveHeader):
            out += _remove_packets(edit, headers)
        elif isinstance(edit, AddHeader):
            value = edit.value.encode().replace(b"\r\n", b"\n")  # Postfix splits at LF
            if leading_space:
                value = b" " + value  # as the proxy writes it: one space after the colon
            out.append(
                packet(
                    SMFIR_INSHEADER,
                    struct.pack("!I", INSERT_BASE) + edit.name.encode() + b"\0" + value + b"\0",
                )
            )
        elif isinstance(edit, ChangeSender):
            out.append(packet(SMFIR_CHGFROM, f"<{edit.address}>".encode() + b"\0"))
    return out


def _remove_packets(edit: RemoveHeader, headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
    """SMFIR_CHGHEADER with an empty value for each field of the name: Postfix counts the
    occurrence index per name, case-insensitively; the last goes first, so deleting one never
    shifts the index of the next."""
    key = edit.key.encode()
    names = [name for name, _ in headers if name.strip().lower() == key]
    return [
        packet(SMFIR_CHGHEADER, struct.pack("!I", index) + names[index - 1] + b"\0\0")
        for index in range(len(names), 0, -1)
    ]


# -- one Postfix milter connection (one SMTP session) -----------------------------------------


class MilterSession:
    def __init__(
        self,
        listener: MilterListener,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        config: Any = None,
    ) -> None:
        self.listener = listener
        self.config = config  # this listener's config.Listener (trusted_networks)
        self.reader = reader
        self.writer = writer
        self.id = new_session_id()
        self.peer = ""
        self.helo = ""
        self.negotiated: Negotiated | None = None
        self.macros: dict[bytes, dict[str, str]] = {}
        self.logged_in: str | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the transaction (SMFIC_ABORT, end of message, refused MAIL)."""
        self.engine: Engine | None = None
        self.txn: Transaction | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.size = 0
        self.too_big = False

    @property
    def busy(self) -> bool:
        return self.txn is not None

    # -- the read loop -----------------------------------------------------------------------
    async def run(self) -> None:
        limits = self.listener.engine().config.limits
        # Postfix keeps the milter connection for its whole SMTP session and sends nothing
        # while the client thinks; its own timeouts end a stuck session first.
        idle = limits.command_timeout + limits.data_timeout
        handlers: dict[bytes, Callable[[bytes], Any]] = {
            SMFIC_OPTNEG: self.on_optneg,
            SMFIC_MACRO: self.on_macro,
            SMFIC_CONNECT: self.on_connect,
            SMFIC_HELO: self.on_helo,
            SMFIC_MAIL: self.on_mail,
            SMFIC_RCPT: self.on_rcpt,
            SMFIC_DATA: self.on_data,
            SMFIC_HEADER: self.on_header,
            SMFIC_EOH: self.on_eoh,
            SMFIC_BODY: self.on_body,
            SMFIC_BODYEOB: self.on_eob,
            SMFIC_ABORT: self.on_abort,
            SMFIC_UNKNOWN: self.on_unknown,
        }
        error = None
        try:
            while True:
                try:
                    head = await asyncio.wait_for(self.reader.readexactly(4), idle)
                except asyncio.IncompleteReadError:
                    break  # Postfix closed the connection
                (length,) = struct.unpack("!I", head)
                if not 1 <= length <= MAX_PACKET:
                    raise MilterProtocolError(f"bad packet length {length}")
                data = await asyncio.wait_for(self.reader.readexactly(length), idle)
                cmd, data = data[:1], data[1:]
                if cmd == SMFIC_QUIT:
                    break
                if cmd == SMFIC_QUIT_NC:  # the MTA reuses this connection for a new session
                    self.reset()
                    self.macros.clear()
                    continue
                handler = handlers.get(cmd)
                if handler is None:
                    raise MilterProtocolError(f"unexpected command {cmd!r}")
                if cmd != SMFIC_OPTNEG and self.negotiated is None:
                    raise MilterProtocolError(f"command {cmd!r} before OPTNEG")
                try:
                    out = await handler(data)
                except MilterProtocolError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the client hears a retryable 451
                    if cmd not in (SMFIC_MAIL, SMFIC_RCPT, SMFIC_BODYEOB):
                        raise
                    log.error(
                        "session_error",
                        session=self.id,
                        transport="milter",
                        mail_id=self.txn.mail_id if self.txn else None,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    if cmd != SMFIC_RCPT:  # one failed RCPT leaves the transaction open
                        self.reset()
                    out = [reply_packet(replies.INTERNAL_ERROR)]
                if out:
                    self.writer.write(b"".join(out))
                    await self.writer.drain()
        except MilterProtocolError as exc:
            error = str(exc)
            log.error("milter_error", session=self.id, peer=self.peer, error=error)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as exc:
            error = type(exc).__name__
        finally:
            if self.txn is not None:
                log.warning(
                    "milter_abandoned",
                    session=self.id,
                    mail_id=self.txn.mail_id,
                    reason=error or "connection closed mid-transaction",
                )
            self.reset()
            self.writer.close()

    # -- events ------------------------------------------------------------------------------
    def _continue(self, flag: int = 0) -> list[bytes]:
        assert self.negotiated is not None
        return [packet(SMFIR_CONTINUE)] if not flag or self.negotiated.replies_to(flag) else []

    async def on_optneg(self, data: bytes) -> list[bytes]:
        self.negotiated, answer = negotiate(data)
        return [answer]

    async def on_macro(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        parts = split_strings(data[1:])
        values = {}
        for k in range(0, len(parts) - 1, 2):
            name = parts[k].decode("utf-8", "replace").strip("{}")
            values[name] = parts[k + 1].decode("utf-8", "replace")
        self.macros[data[:1]] = values
        return []  # macros never get a reply

    def macro(self, name: str, *stages: bytes) -> str:
        for stage in stages:
            value = self.macros.get(stage, {}).get(name)
            if value:
                return value
        return ""

    async def on_connect(self, data: bytes) -> list[bytes]:
        parts = data.split(b"\0", 1)
        rest = parts[1] if len(parts) > 1 else b""
        if rest[:1] in (b"4", b"6") and len(rest) >= 3:
            self.peer = rest[3:].split(b"\0", 1)[0].decode("ascii", "replace")
        else:
            self.peer = parts[0].decode("ascii", "replace")
        sockname = self.writer.get_extra_info("sockname")
        log.event(
            "session_open",
            session=self.id,
            peer=self.peer,
            transport="milter",
            client_name=parts[0].decode("ascii", "replace") or None,
            port=sockname[1] if sockname else None,
        )
        return self._continue(SMFIP_NR_CONN)

    async def on_helo(self, data: bytes) -> list[bytes]:
        self.helo = (split_strings(data) or [b""])[0].decode("utf-8", "replace")
        return self._continue(SMFIP_NR_HELO)

    def _session_info(self, customer: Any) -> SessionInfo:
        return SessionInfo(
            id=self.id,
            peer=self.peer,
            helo=self.helo,
            tls=bool(self.macro("tls_version", b"M", b"H")),
            customer=customer,
            transport="milter",
        )

    async def on_mail(self, data: bytes) -> list[bytes]:
        self.reset()
        args = split_strings(data)
        mail_from = unbracket(args[0]) if args else ""
        options = [a.decode("utf-8", "replace") for a in args[1:]]
        if not self.listener.accepting:
            return [reply_packet(replies.SHUTTING_DOWN)]
        # The SASL login Postfix reports, else a sending engine on the ESP's network, known by
        # the client address Postfix reports (`trusted_networks` of this listener); without
        # either, never pass mail without a customer, whatever Postfix itself would allow.
        claimed = milter_login(lambda name: self.macro(name, b"M"), self.config, self.peer)
        if claimed is None:
            log.warning(
                "auth",
                session=self.id,
                peer=self.peer,
                transport="milter",
                mail_from=mail_from,
                result="unauthenticated",
            )
            return [reply_packet(replies.AUTH_REQUIRED)]
        login, how = claimed.name, claimed.how
        engine = self.listener.engine()
        try:
            customer = engine.store.get_customer(login)
        except StoreUnavailable as exc:
            log.error(
                "auth",
                session=self.id,
                peer=self.peer,
                login=login,
                transport="milter",
                result="store-unavailable",
                error=str(exc),
            )
            return [reply_packet(replies.STORE_UNAVAILABLE)]
        if customer is None:
            log.warning(
                "auth",
                session=self.id,
                peer=self.peer,
                login=login,
                transport="milter",
                result="unknown-customer",
            )
            return [reply_packet(UNKNOWN_ACCOUNT)]
        if self.logged_in != customer.name:
            self.logged_in = customer.name
            log.event(
                "auth",
                session=self.id,
                peer=self.peer,
                customer=customer.name,
                mechanism=self.macro("auth_type", b"M") or None,
                transport="milter",
                result=how,
            )
        try:
            txn, outcome = await engine.mail(self._session_info(customer), mail_from, options)
        except StoreUnavailable:
            return [reply_packet(replies.STORE_UNAVAILABLE)]
        if not outcome.ok:
            return [reply_packet(outcome.reply)]
        self.engine, self.txn = engine, txn
        return [packet(SMFIR_CONTINUE)]

    async def on_rcpt(self, data: bytes) -> list[bytes]:
        if self.txn is None or self.engine is None:
            return [reply_packet(replies.AUTH_REQUIRED)]
        args = split_strings(data)
        outcome = await self.engine.rcpt(self.txn, unbracket(args[0]) if args else "")
        if not outcome.ok:
            return [reply_packet(outcome.reply)]
        return [packet(SMFIR_CONTINUE)]

    async def on_data(self, data: bytes) -> list[bytes]:
        return self._continue(SMFIP_NR_DATA)

    async def on_header(self, data: bytes) -> list[bytes]:
        parts = data.split(b"\0")
        if len(parts) < 2:
            raise MilterProtocolError("malformed HEADER")
        self._collect(len(parts[0]) + len(parts[1]) + 3)
        if not self.too_big:
            self.headers.append((parts[0], parts[1]))
        return self._continue(SMFIP_NR_HDR)

    async def on_eoh(self, data: bytes) -> list[bytes]:
        return self._continue(SMFIP_NR_EOH)

    async def on_body(self, data: bytes) -> list[bytes]:
        self._collect(len(data))
        if not self.too_big:
            self.body += data
        return self._continue(SMFIP_NR_BODY)

    def _collect(self, size: int) -> None:
        self.size += size
        limit = self.listener.engine().config.limits.max_message_size
        if self.size > limit and not self.too_big:
            # Keep reading (Postfix sends the rest) but stop buffering; refuse at the end.
            self.too_big = True
            self.headers, self.body = [], bytearray()

    async def on_eob(self, data: bytes) -> list[bytes]:
        if data:
            await self.on_body(data)
        txn, engine = self.txn, self.engine
        if txn is None or engine is None:
            return [reply_packet(replies.INTERNAL_ERROR)]
        try:
            return await self._end_of_message(engine, txn)
        finally:
            self.reset()

    async def _end_of_message(self, engine: Engine, txn: Transaction) -> list[bytes]:
        assert self.negotiated is not None
        if self.too_big:
            # As on the proxy, where aiosmtpd refuses it before the engine sees the message.
            log.warning(
                "message_too_big", session=self.id, mail_id=txn.mail_id, size=self.size, transport="milter"
            )
            return [reply_packet(replies.MESSAGE_TOO_BIG)]
        raw = rebuild_message(self.headers, bytes(self.body), leading_space=self.negotiated.leading_space)
        plan = await engine.data(txn, raw)
        if not plan.ok:
            return [reply_packet(plan.reply)]
        out = edit_packets(plan.edits, self.headers, leading_space=self.negotiated.leading_space)
        out.append(packet(SMFIR_CONTINUE))
        await engine.relayed(
            txn, HANDED_TO_POSTFIX, queue_id=self.macro("i", b"E") or None, detail="postfix-milter"
        )
        return out

    async def on_abort(self, data: bytes) -> list[bytes]:
        self.reset()
        return []  # ABORT gets no reply

    async def on_unknown(self, data: bytes) -> list[bytes]:
        return [packet(SMFIR_CONTINUE)]


# -- the listener ---------------------------------------------------------------------------


class MilterListener:
    """The milter listeners of one server (a `gateway.listeners.Listener`), their sessions.

    `server` is the gateway.server.Server: its config and its current engine (swapped on
    SIGHUP). There is no session cap of ours: each session is one of Postfix's smtpd
    processes, which Postfix caps."""

    kind = "milter"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.servers: list[asyncio.Server] = []
        self.sessions: SessionCap[MilterSession] = SessionCap(lambda: None)

    def engine(self) -> Engine:
        engine: Engine = self.server.state.engine
        return engine

    @property
    def accepting(self) -> bool:
        return self.sessions.accepting

    @property
    def in_flight(self) -> int:
        return self.sessions.in_flight

    async def start(self) -> None:
        config = self.server.config
        try:
            for listener in config.listeners_of("milter"):
                ignored = [
                    name for name in ("tls", "implicit_tls", "trusted_local") if getattr(listener, name)
                ]
                if ignored:
                    # Postfix does TLS and AUTH; the customer is the SASL login Postfix reports.
                    log.warning(
                        "listener_option_ignored",
                        kind="milter",
                        port=listener.port,
                        options=",".join(ignored),
                    )
                srv = await listen_streams(config, listener, functools.partial(self.handle, config=listener))
                self.servers.append(srv)
                log.event(
                    "listening", kind="milter", address=listener.address, port=srv.sockets[0].getsockname()[1]
                )
        except BaseException:
            for opened in self.servers:
                opened.close()
            raise

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, config: Any = None
    ) -> None:
        session = MilterSession(self, reader, writer, config)
        if self.sessions.refusal() is not None:
            writer.close()
            return
        self.sessions.add(session)
        metrics.SESSIONS_ACTIVE.inc()
        metrics.SESSIONS.labels("milter").inc()
        try:
            await session.run()
        except Exception as exc:  # noqa: BLE001 - one broken session must not end the listener
            log.error(
                "session_error", session=session.id, transport="milter", error=f"{type(exc).__name__}: {exc}"
            )
            writer.close()
        finally:
            self.sessions.discard(session)
            metrics.SESSIONS_ACTIVE.dec()
            log.event("session_close", session=session.id, peer=session.peer or None, transport="milter")

    def ports(self) -> list[int]:
        return ports(self.servers)

    def stop_accepting(self) -> None:
        """New transactions are refused with 421; the listening sockets close now, so Postfix
        applies `milter_default_action` to new sessions (tempfail: the client retries)."""
        self.sessions.accepting = False
        for server in self.servers:
            server.close()

    async def drain(self, deadline: float) -> int:
        """Open transactions finish until `deadline`; then every session is closed (Postfix
        applies `milter_default_action` to whatever arrives afterwards)."""
        await wait_until(lambda: not self.in_flight, deadline)
        abandoned = self.in_flight
        for session in self.sessions:
            session.writer.close()
        for server in self.servers:
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except TimeoutError:
                pass
        self.servers.clear()
        log.event("milter_stopped", abandoned=abandoned)
        return abandoned

    async def close(self) -> None:
        for server in self.servers:
            server.close()

    async def stop(self, grace: float) -> None:
        """Stop accepting, drain for `grace` seconds at most, close."""
        self.stop_accepting()
        await self.drain(asyncio.get_running_loop().time() + grace)
        await self.close()


def _milter_of(server: Any) -> MilterListener | None:
    return next((listener for listener in server.listeners if isinstance(listener, MilterListener)), None)


async def attach_milter(server: Any) -> None:
    """Open the `kind: milter` listeners of `server.config` over the server's engine (at
    start, and again after `stop_milter`)."""
    if not server.config.listeners_of("milter"):
        return
    if _milter_of(server) is not None:
        raise RuntimeError("the milter listeners are already open")
    await server.add_listener(MilterListener(server))


async def stop_milter(server: Any, grace: float | None = None) -> None:
    """Drain, then close the milter listeners alone (tests, and a milter taken out of a
    running server); `Server.shutdown` drains them with the others."""
    milter = _milter_of(server)
    if milter is None:
        return
    server.listeners.remove(milter)
    await milter.stop(server.config.limits.shutdown_grace if grace is None else grace)


def milter_ports(server: Any) -> list[int]:
    milter = _milter_of(server)
    return milter.ports() if milter is not None else []
