"""The inbound feedback listener: bounces (to the VERP bounce domain), FBL reports and abuse
forwards arrive here over SMTP and go to the feedback intake.

It is a final destination, never a relay: RCPT is accepted only for an address at a bounce
domain (`bounce_domain`, `feedback_intake.bounce_domains`) or one of the configured FBL and
abuse addresses; everything else gets `550 5.7.1` at RCPT and nothing is stored. There is no
AUTH here (nobody sends through it). The 250 after DATA means "stored in the gateway's store";
if the store is unavailable the sender gets a 451 and retries later, so nothing is lost.

Taking a report in is CPU work (MIME, ~50 classification regexes) in a worker that also serves
submission sessions. It runs on a small thread pool of its own (`feedback_intake.parse_workers`,
default 1), never on the event loop and never on the loop's default executor: a flood of
reports waits for that thread (its senders wait for their 250) instead of taking the CPU from
the customers; each report's parse is bounded besides (gateway.feedback.intake).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiosmtpd.smtp import SMTP as AioSMTP
from aiosmtpd.smtp import Envelope, Session

from gateway import metrics
from gateway.core import replies
from gateway.engine import new_session_id
from gateway.feedback.intake import Intake, accepts_recipient
from gateway.listeners import SessionCap, listen, ports, wait_until
from gateway.logging import get_logger
from gateway.store import StoreUnavailable
from gateway.transports.smtp import _AIOSMTPD_REPLIES, refuse_before_greeting

log = get_logger()

RELAY_DENIED = (
    "550 5.7.1 {rcpt}: relay access denied; this server accepts only bounces and "
    "feedback reports for its own addresses"
)
STORED = "250 2.0.0 Ok: feedback recorded as #{id}"
TEMPFAIL = "451 4.3.0 Temporary local problem, please try again later"


class FeedbackSMTP(AioSMTP):
    # Returned mail comes from every MTA ever written; some exceed RFC 5321's 1000-octet lines.
    # A bounce refused for that would be lost, so this listener is lenient (the size limit holds).
    line_length_limit = 16384

    def __init__(
        self,
        handler: FeedbackHandler,
        *,
        listener: Any,
        hostname: str,
        max_size: int,
        timeout: float,
        **kwargs: Any,
    ) -> None:
        self.session_id = new_session_id()
        self.listener = listener
        self.busy = False  # a transaction is open: from an accepted MAIL to its end
        super().__init__(
            handler,
            hostname=hostname,
            ident="ESMTP feedback intake",
            data_size_limit=max_size,
            timeout=timeout,
            **kwargs,
        )

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if not first:
            return
        peer = transport.get_extra_info("peername")
        self.peer_ip = peer[0] if peer else ""
        open_sessions = self.event_handler.sessions
        refusal = open_sessions.refusal()
        if refusal is not None:
            # Refused before the greeting: the sending MTA keeps its bounce and retries.
            reply, reason = refusal
            refuse_before_greeting(
                self, transport, reply, kind="feedback", reason=reason, sessions=len(open_sessions)
            )
            return
        open_sessions.add(self)
        metrics.SESSIONS.labels("feedback").inc()

    def connection_lost(self, error: Exception | None) -> None:
        self.event_handler.sessions.discard(self)
        super().connection_lost(error)

    def close_for_shutdown(self) -> None:
        """For the drain: 421 and close (the sending MTA keeps its mail and retries)."""
        if self.transport is None or self.transport.is_closing():
            return
        log.event(
            "session_ended",
            session=self.session_id,
            peer=self.peer_ip,
            reply=421,
            reason="shutting down",
            kind="feedback",
        )
        try:
            self._writer.write(f"{replies.SHUTTING_DOWN}\r\n".encode())
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass
        self.transport.close()

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not self.event_handler.sessions.accepting:
            self.close_for_shutdown()
            return
        assert self.envelope is not None
        await super().smtp_MAIL(arg)
        self.busy = self.envelope.mail_from is not None

    async def smtp_RSET(self, arg: str) -> None:
        self.busy = False
        await super().smtp_RSET(arg)

    def _set_post_data_state(self) -> None:
        super()._set_post_data_state()
        self.busy = False

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            status = _AIOSMTPD_REPLIES.get(status, status)
        await super().push(status)

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH is not offered here: this server only receives feedback")


class FeedbackHandler:
    """aiosmtpd handler; `server` is the gateway.server.Server (config and store, live)."""

    def __init__(self, server: Any, intake: Intake | None = None) -> None:
        self.server = server
        self.sessions: SessionCap[FeedbackSMTP] = SessionCap(
            lambda: server.config.feedback_intake.max_sessions
        )
        self._intake = intake
        self._intake_config: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    def pool(self) -> ThreadPoolExecutor:
        """The intake's own threads (resized when a reload changed parse_workers)."""
        size = self.server.config.feedback_intake.parse_workers
        if self._pool is None or self._pool_size != size:
            if self._pool is not None:
                self._pool.shutdown(wait=False)  # running reports finish on their thread
            self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="feedback")
            self._pool_size = size
        return self._pool

    def intake(self) -> Intake:
        """One Intake per config (rebuilt after a SIGHUP reload swapped the config)."""
        config = self.server.config
        if self._intake is None or self._intake_config is not config:
            engine = self.server.state.engine if self.server.state is not None else None
            codec = engine.codec if engine is not None else None
            if codec is None:
                from gateway.mailid import MailIdCodec

                codec = MailIdCodec.from_key_file(config.path(config.mail_id.key_file))
            self._intake = Intake(config, self.server.store, codec)
            self._intake_config = config
        return self._intake

    async def handle_RCPT(
        self,
        server: FeedbackSMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if not accepts_recipient(self.server.config, address):
            log.warning(
                "feedback_rcpt",
                session=server.session_id,
                peer=server.peer_ip,
                rcpt=address,
                mail_from=envelope.mail_from,
                result="refused",
                reason="not a feedback address (no relaying)",
            )
            return RELAY_DENIED.format(rcpt=address)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: FeedbackSMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        mail_from = (envelope.mail_from or "").strip()
        mail_from = "" if mail_from == "<>" else mail_from  # bounces come from the null sender
        try:
            intake = self.intake()
            result = await asyncio.get_running_loop().run_in_executor(
                self.pool(),
                functools.partial(
                    intake.ingest,
                    raw,
                    source="smtp",
                    envelope_from=mail_from,
                    envelope_to=list(envelope.rcpt_tos),
                ),
            )
        except StoreUnavailable as exc:
            log.error(
                "feedback_intake",
                session=server.session_id,
                peer=server.peer_ip,
                result="tempfailed",
                error=str(exc),
            )
            return TEMPFAIL
        except Exception as exc:  # noqa: BLE001 - the sender retries; we keep the details
            log.error(
                "feedback_intake",
                session=server.session_id,
                peer=server.peer_ip,
                result="tempfailed",
                error=f"{type(exc).__name__}: {exc}",
            )
            return TEMPFAIL
        log.event(
            "feedback_received",
            session=server.session_id,
            peer=server.peer_ip,
            mail_from=mail_from or "<>",
            rcpt=",".join(envelope.rcpt_tos),
            feedback=result.event.id,
            mail_id=result.event.mail_id,
            size=len(raw),
        )
        return STORED.format(id=result.event.id)

    async def handle_exception(self, error: Exception) -> str:
        log.error("feedback_session_error", error=f"{type(error).__name__}: {error}")
        return TEMPFAIL


class FeedbackListener:
    """Every `kind: feedback` listener of the config, as one `gateway.listeners.Listener`.

    `server` is the gateway.server.Server: config, store and engine, live across reloads."""

    kind = "feedback"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.handler = FeedbackHandler(server)
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        config, loop, handler = self.server.config, asyncio.get_running_loop(), self.handler
        for listener in config.listeners_of("feedback"):

            def factory(listener: Any = listener) -> FeedbackSMTP:
                cfg = self.server.config
                return FeedbackSMTP(
                    handler,
                    listener=listener,
                    hostname=cfg.hostname,
                    max_size=cfg.limits.max_message_size,
                    timeout=cfg.limits.command_timeout,
                    loop=loop,
                )

            # The socket the supervisor handed down to this worker, else bound here.
            srv = await listen(config, listener, factory)
            self.servers.append(srv)
            log.event(
                "listening",
                kind="feedback",
                address=listener.address,
                port=srv.sockets[0].getsockname()[1],
                bounce_domains=",".join(_domains(config)) or None,
            )

    def ports(self) -> list[int]:
        return ports(self.servers)

    def stop_accepting(self) -> None:
        # The sockets stay open and answer 421, as on submission (a shared socket closed by
        # one worker would leave connections queued unanswered while another drains).
        self.handler.sessions.accepting = False

    @property
    def in_flight(self) -> int:
        return self.handler.sessions.in_flight

    async def drain(self, deadline: float) -> int:
        """Sessions between transactions get 421 and are closed; a report being received or
        stored finishes (the sender hears 250 with its feedback id), then gets 421."""
        sessions = self.handler.sessions

        def idle_closed() -> bool:
            for session in sessions:
                if not session.busy:
                    session.close_for_shutdown()
            return not len(sessions)

        await wait_until(idle_closed, deadline)
        abandoned = sessions.in_flight
        for session in sessions:
            session.close_for_shutdown()
        await wait_until(lambda: not len(sessions), asyncio.get_running_loop().time() + 1)
        return abandoned

    async def close(self) -> None:
        for server in self.servers:
            server.close()


def _domains(config: Any) -> list[str]:
    from gateway.feedback.intake import bounce_domains

    return bounce_domains(config)


def feedback_ports(server: Any) -> list[int]:
    return next((listener.ports() for listener in server.listeners if listener.kind == "feedback"), [])
