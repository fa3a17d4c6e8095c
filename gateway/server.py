"""`gateway serve`: build the engine from the config, open the listeners, handle signals.

SIGTERM stops accepting, lets in-flight transactions finish (bounded by
`limits.shutdown_grace`), then exits 0. SIGHUP re-reads the config, policies and keys and swaps
them in for new transactions; open connections are not dropped.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway import fastpaths
from gateway.authguard import AuthGuard
from gateway.config import Config, ConfigError, load_config
from gateway.core import replies
from gateway.core.pipeline import Pipeline
from gateway.core.registry import discover
from gateway.engine import Engine
from gateway.logging import get_logger, setup_logging
from gateway.store import SqlStore, open_store
from gateway.supervisor import Supervisor, inherited_fds, listener_key
from gateway.tlsutil import ensure_self_signed, server_context
from gateway.transports.relay import Relay
from gateway.transports.smtp import ListenerState, SubmissionHandler, SubmissionSMTP

log = get_logger()


def build_engine(config: Config, store: SqlStore, *, resolver: Any = None) -> Engine:
    from gateway.mailid import MailIdCodec
    from gateway.signing import MessageSigner

    pipeline = Pipeline.from_config(config.policies, discover())
    codec = MailIdCodec.from_key_file(config.path(config.mail_id.key_file), create=True)
    signer = MessageSigner.from_config(config) if config.dkim.enabled else None
    return Engine(config, store, pipeline, codec=codec, signer=signer, resolver=resolver)


def build_relay(config: Config, capture_port: int | None = None) -> Relay:
    ds = config.downstream
    if capture_port is not None:
        return Relay("127.0.0.1", capture_port, starttls="none",
                     local_hostname=config.hostname, timeout=ds.timeout)
    return Relay(
        ds.host, ds.port, starttls=ds.starttls, verify_tls=ds.verify_tls,
        username=ds.auth.username if ds.auth else None,
        password_file=config.path(ds.auth.password_file) if ds.auth else None,
        connect_timeout=ds.connect_timeout, timeout=ds.timeout, local_hostname=config.hostname,
    )


@dataclass
class Server:
    config_path: str | None
    config: Config
    store: SqlStore
    state: ListenerState | None = None
    servers: list[asyncio.Server] = field(default_factory=list)
    capture_port: int | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # The other listeners, opened by their modules' attach_* functions.
    http_runners: list[Any] = field(default_factory=list)
    feedback_servers: list[asyncio.Server] = field(default_factory=list)
    milter: Any = None
    webhook_dispatcher: Any = None
    webhook_task: Any = None

    async def listen(self, listener: Any, factory: Callable[[], Any],
                     ssl: Any = None) -> asyncio.Server:
        """A listening server for this listener: on the socket the supervisor handed down when
        running as a worker, else bound here."""
        loop = asyncio.get_running_loop()
        fd = inherited_fds().get(listener_key(self.config, listener))
        if fd is not None:
            return await loop.create_server(factory, sock=socket.socket(fileno=fd), ssl=ssl,
                                            backlog=1024)
        return await loop.create_server(factory, host=listener.address, port=listener.port,
                                        ssl=ssl, reuse_address=True, backlog=1024)

    async def listen_streams(self, listener: Any,
                             handle: Callable[..., Awaitable[None]]) -> asyncio.Server:
        """Like `listen`, for stream handlers (asyncio.start_server callbacks)."""
        fd = inherited_fds().get(listener_key(self.config, listener))
        if fd is not None:
            return await asyncio.start_server(handle, sock=socket.socket(fileno=fd), backlog=1024)
        return await asyncio.start_server(handle, host=listener.address, port=listener.port,
                                          reuse_address=True, backlog=1024)

    async def start(self) -> None:
        config = self.config
        fastpaths.log_status()  # which library fast paths run, and why (once per process)
        if config.downstream.capture is not None:
            from gateway.transports.capture import start_capture

            # Each worker its own, on a loopback port of its own: see Supervisor.bind_all.
            capture, self.capture_port = await start_capture(config.path(config.downstream.capture))
            self.servers.append(capture)
            log.event("capture_listening", port=self.capture_port,
                      maildir=str(config.path(config.downstream.capture)))
        engine = build_engine(config, self.store)
        self.state = ListenerState(
            engine=engine, relay=build_relay(config, self.capture_port),
            max_sessions=config.limits.max_sessions,
            auth_guard=AuthGuard(self.store, config.limits),
        )
        loop = asyncio.get_running_loop()
        for listener in config.listeners_of("submission"):
            tls_context = None
            if listener.tls is not None:
                cert, key = config.path(listener.tls.cert), config.path(listener.tls.key)
                if ensure_self_signed(cert, key, config.hostname):
                    log.warning("tls_self_signed", cert=str(cert), key=str(key))
                tls_context = server_context(cert, key)
            handler = SubmissionHandler(self.state)

            def factory(handler: SubmissionHandler = handler, listener: Any = listener,
                        tls_context: Any = tls_context,
                        state: ListenerState = self.state) -> SubmissionSMTP:
                return SubmissionSMTP(handler, state=state, listener=listener,
                                      tls_context=tls_context, loop=loop)

            server = await self.listen(listener, factory,
                                       ssl=tls_context if listener.implicit_tls else None)
            self.servers.append(server)
            port = server.sockets[0].getsockname()[1]
            log.event("listening", kind="submission", address=listener.address, port=port,
                      tls="implicit" if listener.implicit_tls else (
                          "starttls" if tls_context else "none"),
                      trusted_local=listener.trusted_local)
        from gateway.http.app import attach_http

        await attach_http(self)
        from gateway.transports.feedback import attach_feedback
        from gateway.transports.milter import attach_milter

        await attach_feedback(self)
        await attach_milter(self)
        from gateway.webhooks import attach_webhooks

        await attach_webhooks(self)

    def submission_ports(self) -> list[int]:
        return [s.sockets[0].getsockname()[1] for s in self.servers[1 if self.capture_port else 0:]
                if s.sockets]

    def reload(self) -> None:
        if self.state is None:  # a SIGHUP while starting: the config being started is current
            return
        try:
            config = load_config(self.config_path)
            engine = build_engine(config, self.store)
        except Exception as exc:  # noqa: BLE001 - a bad reload keeps the running config
            log.error("reload", result="failed", error=str(exc))
            return
        assert self.state is not None
        self.config = config
        self.state.engine = engine
        old_relay, self.state.relay = self.state.relay, build_relay(config, self.capture_port)
        asyncio.ensure_future(old_relay.close())
        self.state.max_sessions = config.limits.max_sessions
        self.state.auth_guard.configure(config.limits)
        setup_logging(config.path(config.logging.file) if config.logging.file else None,
                      config.logging.level, config.logging.max_bytes,
                      config.logging.backup_count)
        log.event("reload", result="ok", policies=len(config.policies))

    async def shutdown(self) -> None:
        """Drain: new connections and new transactions get 421, sessions without an open
        transaction are closed at once, open transactions finish (their message relayed and
        answered with the downstream's reply), bounded by `limits.shutdown_grace`; returns as
        soon as the last session has ended.

        The submission listeners stay open meanwhile and answer 421 4.3.2: with several
        workers the listening socket is shared, and a worker that closed its copy would leave
        new connections queued in the kernel, unanswered, while another worker still drains.
        The capture MTA (first-run downstream) stays open until the relays are done.
        """
        assert self.state is not None
        loop = asyncio.get_running_loop()
        self.state.accepting = False
        for server in self.feedback_servers:
            server.close()
        for runner in self.http_runners:
            await runner.cleanup()
        from gateway.transports.milter import stop_milter

        milter_drained = asyncio.ensure_future(stop_milter(self))
        grace = self.config.limits.shutdown_grace
        log.event("shutdown", phase="draining", in_flight=self.state.in_flight, grace=grace)
        deadline = loop.time() + grace
        for session in list(self.state.sessions):
            # The others stop by themselves before reading their next command (or at MAIL).
            session.close_if_idle()
        while self._open_sessions() and loop.time() < deadline:
            await asyncio.sleep(0.05)
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
        flushed = loop.time() + 1
        while self.state.sessions and loop.time() < flushed:
            await asyncio.sleep(0.05)
        await milter_drained
        from gateway.webhooks import stop_webhooks

        await stop_webhooks(self)
        await self.state.relay.close()
        if self.state.engine.quota is not None:
            # Unused reserved quota goes back to the shared counters (gateway/quota.py).
            await asyncio.to_thread(self.state.engine.quota.release_all)
        for server in self.servers:
            server.close()
        log.event("shutdown", phase="done", abandoned=abandoned)

    def _open_sessions(self) -> list[SubmissionSMTP]:
        """Sessions not yet closed by either side (one being closed has nothing left to do)."""
        assert self.state is not None
        return [s for s in self.state.sessions
                if s.transport is not None and not s.transport.is_closing()]

    def handle_signals(self) -> None:
        """Before `start`: a SIGTERM that lands while the listeners open (they serve sessions
        while the rest starts) must drain them, not kill the process with its default action."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    async def run_until_stopped(self) -> None:
        await self.stopping.wait()
        await self.shutdown()


def serve(config_path: str | None, workers: int = 1) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    setup_logging(config.path(config.logging.file) if config.logging.file else None,
                  config.logging.level, config.logging.max_bytes, config.logging.backup_count)
    try:
        store = open_store(config.store_url(), cache_ttl=config.store.cache_ttl)
    except Exception as exc:  # noqa: BLE001 - any start failure is reported plainly
        print(f"gateway: cannot open the store: {exc}", file=sys.stderr)
        return 1
    if workers > 1 and config.logging.file is not None and config.logging.max_bytes > 0:
        print("gateway: logging.max_bytes > 0 (in-process rotation) works with one worker "
              "only; use 0 and logrotate (systemd/logrotate.conf), or --workers 1",
              file=sys.stderr)
        return 2
    worker = bool(inherited_fds())
    if config.downstream.capture is not None and not worker:
        from gateway.firstrun import first_run

        first_run(config, store)
    if workers > 1:
        return Supervisor(config_path, config, workers).run()

    async def main() -> None:
        server = Server(config_path, config, store)
        server.handle_signals()
        await server.start()
        # Everything loaded so far lives as long as the process: keep it out of the cyclic
        # collector's generations, and collect less often (each message makes thousands of
        # short-lived objects; full collections over the whole heap are latency spikes).
        gc.freeze()
        gc.set_threshold(20_000, 20, 20)
        await server.run_until_stopped()

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"gateway: cannot start: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0
