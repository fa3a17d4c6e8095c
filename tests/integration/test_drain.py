"""SIGTERM drain of `gateway serve --workers 2` (issue #11, item 8).

During the drain a new connection gets 421 4.3.2 at once (or is refused), a session with no
transaction open is told 421 and closed, a session whose message finished gets 421 for its next
MAIL, the message in flight finishes with the downstream's own reply (the capture MTA included),
and the process exits as soon as that is done, not at the end of the grace period.
"""

from __future__ import annotations

import asyncio
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

from gateway.store import open_store
from tests.integration.test_operations import start_serve
from tests.integration.test_relay_core import MESSAGE
from tests.integration.test_workers import children
from tests.support.gateway import add_customer, base_config, write_config
from tests.support.postfix import free_port

GRACE = 60.0  # far longer than any drain here should take


class GatedMTA:
    """A downstream that holds every message at DATA until the test releases it."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.received: list[bytes] = []
        mta = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mta.arrived.set()
                await asyncio.to_thread(mta.release.wait, 60)
                mta.received.append(envelope.original_content)
                return f"250 2.0.0 Ok: queued as GATED{len(mta.received)}"

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, ready_timeout=5, data_size_limit=None
        )
        self.controller.start()

    def stop(self) -> None:
        self.release.set()
        self.controller.stop()


class Raw:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buffer = b""

    def reply(self) -> bytes:
        while True:
            while b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    return line
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return b""
            if not chunk:
                return b""
            self.buffer += chunk

    def command(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        return self.reply()


def served(tmp_path: Path, downstream_port: int, **overrides: Any) -> tuple[Any, int]:
    port = free_port()
    config = base_config(
        tmp_path, downstream_port, limits={"shutdown_grace": GRACE, "auth_failure_delay": 0}, **overrides
    )
    config["listeners"] = [
        {
            "kind": "submission",
            "address": "127.0.0.1",
            "port": port,
            "tls": {"cert": str(tmp_path / "tls/cert.pem"), "key": str(tmp_path / "tls/key.pem")},
            "trusted_networks": {"127.0.0.1/32": "acme"},
        }
    ]
    path = write_config(tmp_path, config)
    add_customer(open_store(config["store"]["url"]))
    proc = start_serve(path, workers=2)
    # Both workers listening (each handles SIGTERM from before it opens its listeners).
    log = tmp_path / "gateway.log"
    deadline = time.monotonic() + 30
    while log.read_text().count("event=listening kind=submission") < 2:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)
    assert len(children(proc.pid)) == 2
    return proc, port


def session(port: int) -> Raw:
    client = Raw(port)
    assert client.reply().startswith(b"220 ")
    assert client.command(b"EHLO client.test\r\n").startswith(b"250 ")
    return client


def tls_session(port: int) -> smtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
    smtp.starttls(context=context)
    smtp.ehlo()
    return smtp


def wait_for_drain(tmp_path: Path) -> None:
    """Both workers have logged the start of their drain."""
    log = tmp_path / "gateway.log"
    deadline = time.monotonic() + 20
    while log.read_text().count("event=shutdown phase=draining") < 2:
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


def new_connection_is_turned_away(port: int) -> None:
    """421 4.3.2 at once, or refused: never a connection left waiting for a greeting."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            greeting = sock.recv(200)
    except (ConnectionRefusedError, ConnectionResetError):
        return
    assert greeting.startswith(b"421 4.3.2 ")


def test_sigterm_with_two_workers_drains_and_exits_when_the_message_in_flight_is_done(tmp_path):
    mta = GatedMTA()
    proc, port = served(tmp_path, mta.port)
    try:
        idle = session(port)
        idle_tls = tls_session(port)
        busy = session(port)
        assert busy.command(b"MAIL FROM:<news@customer.example>\r\n").startswith(b"250 ")
        assert busy.command(b"RCPT TO:<anna@example.org>\r\n").startswith(b"250 ")
        assert busy.command(b"DATA\r\n").startswith(b"354 ")
        # The message, and right behind it the next transaction's MAIL (pipelined).
        busy.sock.sendall(MESSAGE + b".\r\nMAIL FROM:<news@customer.example>\r\n")
        assert mta.arrived.wait(30)  # in flight: the downstream holds it

        proc.send_signal(signal.SIGTERM)
        wait_for_drain(tmp_path)
        # Sessions with nothing open are told 421 and closed, TLS or not ...
        assert idle.reply().startswith(b"421 4.3.2 ")
        assert idle.reply() == b""
        assert idle_tls.getreply()[0] == 421
        # ... a new connection is turned away at once ...
        new_connection_is_turned_away(port)
        # ... and the message in flight gets the downstream's own answer, then 421 for the
        # MAIL that followed it.
        mta.release.set()
        released = time.monotonic()
        assert busy.reply().startswith(b"250 2.0.0 Ok: queued as GATED1")
        assert busy.reply().startswith(b"421 4.3.2 ")
        assert busy.reply() == b""
        assert proc.wait(GRACE) == 0
        drained_in = time.monotonic() - released
    finally:
        if proc.poll() is None:
            proc.kill()
        mta.stop()
    assert len(mta.received) == 1
    # Out as soon as the work was done: nowhere near the grace period.
    assert drained_in < GRACE / 4
    # All of it refused now that the gateway is gone.
    new_connection_is_turned_away(port)


def test_sigterm_lets_a_transaction_finish_through_the_capture_mta(tmp_path):
    proc, port = served(
        tmp_path,
        free_port(),
        downstream={
            "host": "127.0.0.1",
            "port": 25,
            "starttls": "none",
            "timeout": 5,
            "capture": str(tmp_path / "outbox"),
        },
    )
    try:
        idle = session(port)
        busy = session(port)
        assert busy.command(b"MAIL FROM:<news@customer.example>\r\n").startswith(b"250 ")
        assert busy.command(b"RCPT TO:<anna@example.org>\r\n").startswith(b"250 ")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        wait_for_drain(tmp_path)
        assert idle.reply().startswith(b"421 4.3.2 ")
        new_connection_is_turned_away(port)
        # The open transaction goes on: its message is written by the capture MTA.
        assert busy.command(b"DATA\r\n").startswith(b"354 ")
        assert busy.command(MESSAGE + b".\r\n").startswith(b"250 2.0.0 Ok: queued as CAPTURE")
        assert busy.reply().startswith(b"421 4.3.2 ")  # and then the session is closed
        assert proc.wait(GRACE) == 0
        drained_in = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(list((tmp_path / "outbox/new").iterdir())) == 1
    assert drained_in < GRACE / 4


SLOW_START = """
import asyncio, sys
import gateway.http.app as http_app

attach_http = http_app.attach_http

async def slow_attach_http(server):
    await asyncio.sleep(3)  # the submission listener is open and serving meanwhile
    await attach_http(server)

http_app.attach_http = slow_attach_http
from gateway.server import serve
sys.exit(serve(sys.argv[1]))
"""


def test_sigterm_while_the_process_is_still_starting_drains_its_sessions(tmp_path):
    port = free_port()
    config = base_config(tmp_path, free_port(), limits={"shutdown_grace": GRACE})
    config["listeners"] = [
        {
            "kind": "submission",
            "address": "127.0.0.1",
            "port": port,
            "trusted_networks": {"127.0.0.1/32": "acme"},
        }
    ]
    path = write_config(tmp_path, config)
    add_customer(open_store(config["store"]["url"]))
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_START, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = session(port)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # the HTTP listener is still being attached
        assert client.reply().startswith(b"421 4.3.2 ")
        assert proc.wait(GRACE) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
