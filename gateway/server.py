"""`gateway serve`: build the engine from the config, open the listeners, handle signals.

SIGTERM stops accepting, lets in-flight transactions finish (bounded by
`limits.shutdown_grace`), then exits 0. SIGHUP re-reads the config, policies and keys and swaps
them in for new transactions; open connections are not dropped.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from dataclasses import dataclass, field
from typing import Any

from gateway import fastpaths
from gateway.authguard import AuthGuard
from gateway.config import Config, ConfigError, load_config
from gateway.core.pipeline import Pipeline
from gateway.core.registry import discover
from gateway.engine import Engine
from gateway.listeners import Listener, SessionCap
from gateway.logging import get_logger, setup_logging
from gateway.store import SqlStore, open_store
from gateway.supervisor import Supervisor, inherited_fds
from gateway.transports.relay import Relay
from gateway.transports.smtp import ListenerState
from gateway.transports.submission import SubmissionListener

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
        return Relay(
            "127.0.0.1", capture_port, starttls="none", local_hostname=config.hostname, timeout=ds.timeout
        )
    return Relay(
        ds.host,
        ds.port,
        starttls=ds.starttls,
        verify_tls=ds.verify_tls,
        username=ds.auth.username if ds.auth else None,
        password_file=config.path(ds.auth.password_file) if ds.auth else None,
        connect_timeout=ds.connect_timeout,
        timeout=ds.timeout,
        local_hostname=config.hostname,
    )


@dataclass
class Server:
    """`gateway serve` in one process: the engine and relay every transport shares (`state`),
    the listeners (gateway/listeners.py) and background services, reload and the drain."""

    config_path: str | None
    config: Config
    store: SqlStore
    state: ListenerState | None = None
    # The capture MTA (first-run downstream), closed after everything drained.
    servers: list[asyncio.Server] = field(default_factory=list)
    capture_port: int | None = None
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    listeners: list[Listener] = field(default_factory=list)
    # Drained after the listeners (the webhook dispatcher).
    services: list[Listener] = field(default_factory=list)

    async def add_listener(self, listener: Listener) -> None:
        """Start `listener` and drain it with the others at shutdown."""
        await listener.start()
        self.listeners.append(listener)

    async def add_service(self, service: Listener) -> None:
        await service.start()
        self.services.append(service)

    async def start(self) -> None:
        config = self.config
        fastpaths.log_status()  # which library fast paths run, and why (once per process)
        if config.downstream.capture is not None:
            from gateway.transports.capture import start_capture

            # Each worker its own, on a loopback port of its own: see Supervisor.bind_all.
            capture, self.capture_port = await start_capture(config.path(config.downstream.capture))
            self.servers.append(capture)
            log.event(
                "capture_listening",
                port=self.capture_port,
                maildir=str(config.path(config.downstream.capture)),
            )
        engine = build_engine(config, self.store)
        self.state = ListenerState(
            engine=engine,
            relay=build_relay(config, self.capture_port),
            auth_guard=AuthGuard(self.store, config.limits),
            sessions=SessionCap(lambda: self.config.limits.max_sessions),
        )
        await self.add_listener(SubmissionListener(config, self.state))
        # Looked up on the module at call time (a test slows the HTTP start down this way).
        from gateway.http import app as http_app

        await http_app.attach_http(self)
        from gateway.transports.feedback import FeedbackListener
        from gateway.transports.milter import attach_milter

        if config.listeners_of("feedback"):
            await self.add_listener(FeedbackListener(self))
        await attach_milter(self)
        from gateway.webhooks import attach_webhooks

        await attach_webhooks(self)

    def submission_ports(self) -> list[int]:
        return next(
            (listener.ports() for listener in self.listeners if isinstance(listener, SubmissionListener)), []
        )

    @property
    def http_runners(self) -> list[Any]:
        from gateway.http.app import HttpListener

        return [
            runner
            for listener in self.listeners
            if isinstance(listener, HttpListener)
            for runner in listener.runners
        ]

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
        self.config = config  # the session caps read it at each connection
        self.state.engine = engine
        old_relay, self.state.relay = self.state.relay, build_relay(config, self.capture_port)
        asyncio.ensure_future(old_relay.close())
        self.state.auth_guard.configure(config.limits)
        setup_logging(
            config.path(config.logging.file) if config.logging.file else None,
            config.logging.level,
            config.logging.max_bytes,
            config.logging.backup_count,
        )
        log.event("reload", result="ok", policies=len(config.policies))

    async def shutdown(self) -> None:
        """Drain: every listener stops accepting (new connections and new transactions get
        421), sessions without an open transaction are closed at once, open transactions
        finish (a message relayed and answered with the downstream's reply), all bounded by
        `limits.shutdown_grace`; returns as soon as the last one has ended. Then the
        background services, the relay, the quota reservations; the listening sockets and
        the capture MTA close last (until then a new connection hears 421, see
        SubmissionListener.stop_accepting)."""
        assert self.state is not None
        loop = asyncio.get_running_loop()
        for listener in self.listeners:
            listener.stop_accepting()
        grace = self.config.limits.shutdown_grace
        log.event(
            "shutdown",
            phase="draining",
            in_flight=sum(listener.in_flight for listener in self.listeners),
            grace=grace,
        )
        deadline = loop.time() + grace
        drained = await asyncio.gather(*(listener.drain(deadline) for listener in self.listeners))
        # As before the listeners shared this protocol: the SMTP transactions cut short.
        abandoned = next(
            (
                n
                for listener, n in zip(self.listeners, drained, strict=True)
                if isinstance(listener, SubmissionListener)
            ),
            0,
        )
        for service in self.services:
            service.stop_accepting()
        await asyncio.gather(*(service.drain(deadline) for service in self.services))
        await self.state.relay.close()
        if self.state.engine.quota is not None:
            # Unused reserved quota goes back to the shared counters (gateway/quota.py).
            await asyncio.to_thread(self.state.engine.quota.release_all)
        for listener in [*self.listeners, *self.services]:
            await listener.close()
        for server in self.servers:
            server.close()
        log.event("shutdown", phase="done", abandoned=abandoned)

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
    setup_logging(
        config.path(config.logging.file) if config.logging.file else None,
        config.logging.level,
        config.logging.max_bytes,
        config.logging.backup_count,
    )
    try:
        store = open_store(config.store_url(), cache_ttl=config.store.cache_ttl)
    except Exception as exc:  # noqa: BLE001 - any start failure is reported plainly
        print(f"gateway: cannot open the store: {exc}", file=sys.stderr)
        return 1
    if workers > 1 and config.logging.file is not None and config.logging.max_bytes > 0:
        print(
            "gateway: logging.max_bytes > 0 (in-process rotation) works with one worker "
            "only; use 0 and logrotate (systemd/logrotate.conf), or --workers 1",
            file=sys.stderr,
        )
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
