"""Run the real gateway in a test: real sockets on 127.0.0.1, a real config file and store.

`RunningGateway` starts `gateway.server.Server` on its own event loop in a thread, so tests
can talk to it with the stdlib's blocking smtplib, the way a customer's app would.
`ScriptedMTA` is a downstream whose answers a test chooses (accept, 4xx, 5xx, drop mid-DATA).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP

from gateway.config import load_config
from gateway.logging import parse_logfmt, setup_logging
from gateway.server import Server
from gateway.store import open_store
from gateway.store.passwords import hash_password
from tests.support.postfix import free_port

PASSWORD = "correct horse battery staple"


def base_config(tmp: Path, downstream_port: int, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "hostname": "gateway.test",
        "listeners": [
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp / "tls/cert.pem"), "key": str(tmp / "tls/key.pem")},
            },
        ],
        "downstream": {
            "host": "127.0.0.1",
            "port": downstream_port,
            "starttls": "none",
            "connect_timeout": 3,
            "timeout": 10,
        },
        "store": {"url": f"sqlite:///{tmp / 'gateway.db'}"},
        "mail_id": {"key_file": str(tmp / "mailid.key")},
        "dkim": {"keys_dir": str(tmp / "dkim"), "missing_key": "unsigned"},
        "logging": {"file": str(tmp / "gateway.log")},
        "limits": {"auth_failure_delay": 0.0},
        "policies": [{"name": "customer-active", "mode": "enforce"}],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


def write_config(tmp: Path, config: dict[str, Any]) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def add_customer(
    store: Any,
    name: str = "acme",
    status: str = "active",
    domain: str = "customer.example",
    password: str = PASSWORD,
) -> Any:
    store.add_customer(name)
    store.set_password_hash(name, hash_password(password))
    added = store.add_domain(name, domain, "token")
    store.mark_domain_verified(added.customer_id, domain, by="test")
    return store.set_customer_status(name, status)


class RunningGateway:
    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        setup_logging(self.config.path(self.config.logging.file) if self.config.logging.file else None)
        self.store = open_store(self.config.store_url(), cache_ttl=self.config.store.cache_ttl)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = Server(str(config_path), self.config, self.store)
        self.call(self.server.start())
        ports = self.server.submission_ports()
        self.port = ports[0] if ports else 0  # 0: no submission listener (milter only)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.server.shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)

    def client(
        self, *, tls: bool = True, login: tuple[str, str] | None = ("acme", PASSWORD), port: int | None = None
    ) -> smtplib.SMTP:
        smtp = smtplib.SMTP("127.0.0.1", port or self.port, local_hostname="client.test", timeout=30)
        smtp.ehlo()
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            smtp.starttls(context=context)
            smtp.ehlo()
        if login is not None:
            smtp.login(*login)
        return smtp

    def log_lines(self) -> list[dict[str, str]]:
        path = self.config.path(self.config.logging.file)  # type: ignore[arg-type]
        if not path.exists():
            return []
        return [parse_logfmt(line) for line in path.read_text().splitlines() if line]


@dataclass
class ScriptedMTA:
    """A downstream that records what it accepted and answers as the test says.

    behaviour: "accept" | "rcpt-5xx" | "data-5xx" | "data-4xx" | "drop-in-data" | "slow-data"
    (accepts after 1.5 s)
    """

    behaviour: str = "accept"
    port: int = field(default_factory=free_port)
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    connections: int = 0
    sessions: list[Any] = field(default_factory=list)

    def drop_connections(self) -> None:
        """Close every open session, as an MTA does with idle clients."""
        for server in self.sessions:
            if server.transport is not None:
                self.controller.loop.call_soon_threadsafe(server.transport.close)
        self.sessions.clear()

    def __post_init__(self) -> None:
        mta = self

        class Handler:
            async def handle_EHLO(
                self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
            ) -> list[str]:
                mta.connections += 1
                mta.sessions.append(server)
                session.host_name = hostname
                return responses

            async def handle_RCPT(
                self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
            ) -> str:
                if mta.behaviour == "rcpt-5xx":
                    return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 Ok"

            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                if mta.behaviour == "data-5xx":
                    return "554 5.7.1 Message rejected: content policy"
                if mta.behaviour == "data-4xx":
                    return "452 4.3.1 Insufficient system storage"
                if mta.behaviour == "slow-data":
                    await asyncio.sleep(1.5)
                if mta.behaviour == "drop-in-data":
                    server.transport.close()
                    return "250 never sent"
                mta.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
                return f"250 2.0.0 Ok: queued as Q{len(mta.received):06d}"

        self.controller = Controller(
            Handler(),
            hostname="127.0.0.1",
            port=self.port,
            server_hostname="downstream.test",
            ready_timeout=5,
            data_size_limit=None,
        )

    def start(self) -> ScriptedMTA:
        self.stopped = False
        self.controller.start()
        return self

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.controller.stop()


__all__ = [
    "AioSMTP",
    "PASSWORD",
    "RunningGateway",
    "ScriptedMTA",
    "add_customer",
    "base_config",
    "write_config",
]
