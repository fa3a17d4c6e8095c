"""The submission listeners (`kind: submission`) as one `gateway.listeners.Listener`.

The sessions themselves are `gateway.transports.smtp.SubmissionSMTP`; this is their opening
and their drain.
"""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.config import Config
from gateway.core import replies
from gateway.listeners import listen, ports, wait_until
from gateway.logging import get_logger
from gateway.tlsutil import ensure_self_signed, server_context
from gateway.transports.smtp import ListenerState, SubmissionHandler, SubmissionSMTP

log = get_logger()


class SubmissionListener:
    kind = "submission"

    def __init__(self, config: Config, state: ListenerState) -> None:
        self.config = config
        self.state = state
        self.servers: list[asyncio.Server] = []

    async def start(self) -> None:
        config, loop = self.config, asyncio.get_running_loop()
        for listener in config.listeners_of("submission"):
            tls_context = None
            if listener.tls is not None:
                cert, key = config.path(listener.tls.cert), config.path(listener.tls.key)
                if ensure_self_signed(cert, key, config.hostname):
                    log.warning("tls_self_signed", cert=str(cert), key=str(key))
                tls_context = server_context(cert, key)
            handler = SubmissionHandler(self.state)

            def factory(
                handler: SubmissionHandler = handler, listener: Any = listener, tls_context: Any = tls_context
            ) -> SubmissionSMTP:
                return SubmissionSMTP(
                    handler, state=self.state, listener=listener, tls_context=tls_context, loop=loop
                )

            server = await listen(
                config, listener, factory, ssl=tls_context if listener.implicit_tls else None
            )
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            log.event(
                "listening",
                kind="submission",
                address=listener.address,
                port=port,
                tls="implicit" if listener.implicit_tls else ("starttls" if tls_context else "none"),
                trusted_local=listener.trusted_local,
            )

    def ports(self) -> list[int]:
        return ports(self.servers)

    def stop_accepting(self) -> None:
        """New connections and new transactions get 421 from now on.

        The listening sockets stay open and answer 421 4.3.2: with several workers the
        listening socket is shared, and a worker that closed its copy would leave new
        connections queued in the kernel, unanswered, while another worker still drains."""
        self.state.sessions.accepting = False

    @property
    def in_flight(self) -> int:
        return self.state.in_flight

    async def drain(self, deadline: float) -> int:
        """Sessions without an open transaction are closed at once, open transactions
        finish (their message relayed and answered with the downstream's reply) until
        `deadline`; returns as soon as the last session has ended."""
        for session in self.state.sessions:
            # The others stop by themselves before reading their next command (or at MAIL).
            session.close_if_idle()
        await wait_until(lambda: not self._open_sessions(), deadline)
        abandoned = self.state.in_flight
        for session in self._open_sessions():
            try:
                session._writer.write(f"{replies.SHUTTING_DOWN}\r\n".encode())
            except Exception:  # noqa: BLE001 - the peer may be gone already
                pass
            if session.transport is not None:
                session.transport.close()
        # A closed session is gone once its last reply is written. Over TLS the transport also
        # waits for the client's close_notify (up to 30 s), which nobody needs: a second is
        # plenty for the writes.
        await wait_until(lambda: not len(self.state.sessions), asyncio.get_running_loop().time() + 1)
        return abandoned

    async def close(self) -> None:
        # Last, after every listener drained: until then a new connection hears 421.
        for server in self.servers:
            server.close()

    def _open_sessions(self) -> list[SubmissionSMTP]:
        """Sessions not yet closed by either side (one being closed has nothing left to do)."""
        return [s for s in self.state.sessions if s.transport is not None and not s.transport.is_closing()]
