"""The SMTP submission listener: aiosmtpd, adapted to the engine.

aiosmtpd does the protocol; this module adds what a submission gateway needs around it:
AUTH only after TLS (or on a trusted-local listener), customers looked up in the store,
the failed-AUTH slow-down (gateway/authguard.py), a session cap, a DATA timeout, and the
before-queue relay: the client's 250 is the downstream's 250.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, NoReturn

from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from gateway import metrics
from gateway.authguard import AuthGuard
from gateway.core import replies
from gateway.core.plan import Plan, render
from gateway.core.transaction import SessionInfo, Transaction
from gateway.core.verdict import Reply
from gateway.dataread import DataAccumulator
from gateway.engine import Engine, new_session_id
from gateway.fastpaths import aiosmtpd as fast
from gateway.fastpaths.aiosmtpd import FastPathSMTP
from gateway.identity import (
    authenticate,
    network_login,
    session_customer,
    trusted_network_customer,
)
from gateway.listeners import SessionCap
from gateway.logging import get_logger
from gateway.store import StoreUnavailable

log = get_logger()

# C0 controls, DEL and C1 controls: no part of a mailbox in MAIL FROM / RCPT TO (RFC 5321 4.1.2
# allows none, not even quoted). Refused before any parser sees the argument, so the fast path
# and aiosmtpd's header parser never have to agree on what a control byte means.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def refuse_before_greeting(server: Any, transport: Any, reply: Any, **fields: Any) -> None:
    """Answer a new connection with `reply` (a 421) instead of the greeting, log it and close;
    aiosmtpd's session coroutine, already started, is cancelled."""
    transport.write(f"{reply}\r\n".encode())
    log.warning("session_refused", session=server.session_id, peer=server.peer_ip, **fields)
    server._handler_coroutine.cancel()
    transport.close()


def _hold_credentials(
    server: SubmissionSMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
) -> AuthResult:
    """aiosmtpd's authenticator, which it calls without awaiting: keeps the credentials for
    SubmissionSMTP.smtp_AUTH to check, and lets aiosmtpd answer nothing."""
    if isinstance(auth_data, LoginPassword):
        server.pending_login = (mechanism, auth_data)
        return AuthResult(success=False, handled=True)
    return AuthResult(success=False, handled=False)


@dataclass
class ListenerState:
    """Shared by the submission sessions of one process: the engine and relay (swapped on
    reload), the AUTH guard and the open sessions under their cap (gateway/listeners.py)."""

    engine: Engine
    relay: Any
    auth_guard: AuthGuard
    sessions: SessionCap[SubmissionSMTP]

    @property
    def accepting(self) -> bool:
        return self.sessions.accepting

    @property
    def in_flight(self) -> int:
        return self.sessions.in_flight


# aiosmtpd's own replies for limits it enforces, given their RFC 3463 codes and clearer texts.
_AIOSMTPD_REPLIES = {
    "552 Error: message size exceeds fixed maximum message size": str(replies.MESSAGE_TOO_BIG),
    "552 Error: Too much mail data": str(replies.MESSAGE_TOO_BIG),
    "500 Line too long (see RFC5321 4.5.3.1.6)": str(replies.LINE_TOO_LONG),
    "500 Command line too long": "500 5.5.2 Command line too long",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
}


class SubmissionSMTP(FastPathSMTP):
    def __init__(
        self,
        handler: SubmissionHandler,
        *,
        state: ListenerState,
        listener: Any,
        tls_context: Any,
        **kwargs: Any,
    ) -> None:
        limits = state.engine.config.limits
        # aiosmtpd sizes its line reader from this attribute inside __init__.
        self.line_length_limit = limits.max_line_length
        self.state = state
        self.listener = listener
        self.data_timeout = limits.data_timeout
        self.session_id = new_session_id()
        self.busy = False  # a transaction is open: from an accepted MAIL to its end
        self.awaiting_command = False  # blocked reading the client's next line
        self.pending_login: tuple[str, LoginPassword] | None = None
        # Not "auth_...": aiosmtpd takes every auth_* member for an AUTH mechanism.
        self.failed_auths = 0  # on this connection
        super().__init__(
            handler,
            hostname=state.engine.config.hostname,
            ident="ESMTP policy gateway",
            data_size_limit=limits.max_message_size,
            tls_context=None if listener.implicit_tls else tls_context,
            timeout=limits.command_timeout,
            # Implicit TLS encrypts the whole connection, so AUTH is safe from the first byte.
            auth_require_tls=not (listener.trusted_local or listener.implicit_tls),
            authenticator=_hold_credentials,  # type: ignore[arg-type]
            auth_exclude_mechanism=[],
            **kwargs,
        )

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            # Every command line (and AUTH response) aiosmtpd reads goes through readuntil;
            # the reader survives STARTTLS, so this is done once.
            self._readuntil = self._reader.readuntil
            self._reader.readuntil = self._read_command_line  # type: ignore[method-assign,assignment]
        if not first:
            # STARTTLS re-enters here with the TLS transport and a fresh, unauthenticated
            # session: a sending engine known by its network stays known.
            self._trusted_network_login()
            return
        assert self.session is not None and self._handler_coroutine is not None
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        if self.listener.implicit_tls:
            ssl_object = transport.get_extra_info("ssl_object")
            self.session.ssl = {"ssl_object": ssl_object} if ssl_object is not None else None
        refusal = self.state.sessions.refusal()
        if refusal is not None:
            reply, reason = refusal
            refuse_before_greeting(self, transport, reply, reason=reason)
            return
        self.state.sessions.add(self)
        metrics.SESSIONS_ACTIVE.inc()
        metrics.child(metrics.SESSIONS, "submission").inc()
        log.event(
            "session_open",
            session=self.session_id,
            peer=self.peer_ip,
            port=self.listener.port,
            tls=self.listener.implicit_tls,
        )
        self._trusted_network_login()

    def connection_lost(self, error: Exception | None) -> None:
        if self.state.sessions.discard(self):
            metrics.SESSIONS_ACTIVE.dec()
            log.event(
                "session_close",
                session=self.session_id,
                peer=self.peer_ip,
                error=str(error) if error else None,
            )
        super().connection_lost(error)

    async def _read_command_line(self, separator: bytes = b"\n") -> bytes:
        """The reader's readuntil, as aiosmtpd's command loop and AUTH use it.

        A command line ends at CRLF and holds no other CR or LF (RFC 5321 2.3.8). aiosmtpd
        splits at any LF, so `MAIL FROM:<a@b>\\nRCPT TO:<c@d>` would run as two commands where
        a server in front may have seen one: a line with a bare LF or CR is refused and the
        session closed, so nothing after it runs either (like Postfix's
        smtpd_forbid_bare_newline = reject, and sendmail, which drop the session).

        While draining for shutdown this is also where a session without an open transaction
        stops: instead of reading its next command it is told 421 and closed.
        """
        if not self.state.accepting and not self.busy:
            await self._end_session(replies.SHUTTING_DOWN, "shutting down")
        self.awaiting_command = True
        try:
            line: bytes = await self._readuntil(separator)
        finally:
            self.awaiting_command = False
        # Well-formed: ends in CRLF, and its first CR is that one (no slicing copies).
        if separator == b"\n" and (not line.endswith(b"\r\n") or line.find(b"\r") != len(line) - 2):
            await self._end_session(replies.BARE_NEWLINE_IN_COMMAND, "bare CR or LF")
        return line

    async def _end_session(self, reply: Reply, reason: str) -> NoReturn:
        """Answer `reply`, close the connection and end the command loop, as a lost connection
        ends it (aiosmtpd's loop closes its writer on CancelledError and stops)."""
        (log.event if reply is replies.SHUTTING_DOWN else log.warning)(
            "session_ended", session=self.session_id, peer=self.peer_ip, reply=reply.code, reason=reason
        )
        await self.push(str(reply))
        if self.transport is not None:
            self.transport.close()
        raise asyncio.CancelledError

    def close_if_idle(self) -> bool:
        """For shutdown: a session waiting for a command with no transaction open is told 421
        and closed now; False for any other, which stops by itself once its work is done."""
        if self.busy or not self.awaiting_command or self.transport is None:
            return False
        log.event(
            "session_ended", session=self.session_id, peer=self.peer_ip, reply=421, reason="shutting down"
        )
        try:
            self._writer.write(f"{replies.SHUTTING_DOWN}\r\n".encode())
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass
        self.transport.close()
        return True

    def _trusted_network_login(self) -> None:
        login = network_login(self.listener, self.peer_ip)
        if login is None:
            return
        assert self.session is not None
        customer = trusted_network_customer(self.state.engine.store, login.name)
        if customer is not None:
            authenticate(self.session, customer)
            log.event(
                "auth", session=self.session_id, peer=self.peer_ip, customer=customer.name, result=login.how
            )

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _AIOSMTPD_REPLIES.get(status, status)
        await super().push(status)

    async def smtp_AUTH(self, arg: str) -> None:
        # aiosmtpd runs the exchange (challenges, base64) and hands the credentials to
        # _hold_credentials; the check, which waits (slow-down, hashing in a thread), is here.
        self.pending_login = None
        await super().smtp_AUTH(arg)
        if self.pending_login is None:
            return
        (mechanism, credentials), self.pending_login = self.pending_login, None
        outcome = await self.state.auth_guard.login(
            session=self.session_id,
            peer=self.peer_ip,
            mechanism=mechanism,
            login=credentials.login,
            password=credentials.password,
            failures=self.failed_auths,
        )
        if self.transport is None or self.transport.is_closing():
            return  # the client left (or timed out) while its answer was held back
        assert self.session is not None
        if outcome.customer is not None:
            authenticate(self.session, outcome.customer)
        else:
            self.failed_auths += 1
        await self.push(str(outcome.reply))
        if outcome.close:
            self.transport.close()

    async def smtp_DATA(self, arg: str) -> None:
        # Same checks and replies as aiosmtpd's smtp_DATA; the message is read in chunks.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None and self.transport is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        self._reset_timeout(self.data_timeout)
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        acc = DataAccumulator(self.data_size_limit, self.line_length_limit)
        if not await fast.read_data(self._reader, self._readuntil, acc):
            # The client went away mid-DATA: nothing to answer.
            if self.transport is not None:
                self.transport.close()
            return
        if acc.too_big or acc.too_long:
            self._set_post_data_state()
            await self.push(str(replies.MESSAGE_TOO_BIG if acc.too_big else replies.LINE_TOO_LONG))
            return
        content = acc.content()
        self.envelope.content = content
        self.envelope.original_content = content
        # The message is in: from here the policies and the downstream set the pace (each with
        # its own timeouts). The DATA timer must not cut the client off while the downstream
        # may still accept the message, which the client would then send again.
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        try:
            status = await self._call_handler_hook("DATA")
        finally:
            # Whatever happened, the transaction is over and the session waits for a command.
            self._set_post_data_state()
            self._reset_timeout()
        await self.push(status)

    async def smtp_RSET(self, arg: str) -> None:
        self.busy = False
        await super().smtp_RSET(arg)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not self.state.accepting:
            await self._end_session(replies.SHUTTING_DOWN, "shutting down")
        if arg and _CONTROL_CHARACTER.search(arg):
            await self.push(str(replies.ADDRESS_CONTROL_CHARACTER))
            return
        await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if arg and _CONTROL_CHARACTER.search(arg):
            await self.push(str(replies.ADDRESS_CONTROL_CHARACTER))
            return
        await super().smtp_RCPT(arg)

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self.busy = False
        self.txn: Transaction | None = None


class SubmissionHandler:
    def __init__(self, state: ListenerState) -> None:
        self.state = state

    def _session_info(self, server: SubmissionSMTP, session: Session) -> SessionInfo:
        return SessionInfo(
            id=server.session_id,
            peer=server.peer_ip,
            helo=session.host_name or "",
            tls=bool(session.ssl),
            customer=session_customer(session),
        )

    async def handle_MAIL(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if not session.authenticated:
            # Never relay for an unauthenticated session, whatever else is configured.
            return str(replies.AUTH_REQUIRED)
        server.busy = True
        try:
            txn, outcome = await self.state.engine.mail(
                self._session_info(server, session), address, mail_options
            )
        except StoreUnavailable:
            server.busy = False
            return str(replies.STORE_UNAVAILABLE)
        if not outcome.ok:
            server.busy = False
            return str(outcome.reply)
        server.txn = txn
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return str(outcome.reply)

    async def handle_RCPT(
        self,
        server: SubmissionSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        txn = getattr(server, "txn", None)
        if txn is None or not session.authenticated:
            return str(replies.AUTH_REQUIRED)
        outcome = await self.state.engine.rcpt(txn, address)
        if outcome.ok:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return str(outcome.reply)

    async def handle_DATA(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        txn = getattr(server, "txn", None)
        if txn is None or not session.authenticated:
            return str(replies.AUTH_REQUIRED)
        engine = self.state.engine
        plan = await engine.data(txn, envelope.original_content or b"")
        if not plan.ok:
            return str(plan.reply)
        # Shielded: a client that hangs up while we relay must not cancel a relay the
        # downstream may already have accepted; it finishes and is recorded in the ledger.
        relay = asyncio.ensure_future(self._relay_and_record(engine, txn, plan))
        result = await asyncio.shield(relay)
        return str(result.reply)

    async def _relay_and_record(self, engine: Engine, txn: Transaction, plan: Plan) -> Any:
        # txn.raw is the client's message as the engine checked it (the same bytes object).
        result = await self.state.relay.send(
            plan.envelope_sender, txn.recipients, render(txn.raw, plan.edits), txn.mail_options
        )
        await engine.relayed(
            txn, result.reply, queue_id=result.queue_id, seconds=result.seconds, detail=result.detail
        )
        return result

    async def handle_RSET(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        server.txn = None
        return "250 2.0.0 OK"

    async def handle_exception(self, error: Exception) -> str:
        # Whatever went wrong stays in our log; the client hears a retryable 451.
        log.error("session_error", error=f"{type(error).__name__}: {error}")
        return str(replies.INTERNAL_ERROR)
