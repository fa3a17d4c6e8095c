"""Every listener drains through the one protocol (gateway/listeners.py, issue #15 item 2).

`Server.shutdown` stops all listeners at once and drains them side by side: the feedback
listener now drains like submission (421 to new and idle sessions, a report being received
finishes and is stored), and an HTTP request under way no longer holds up the SMTP drain.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

import gateway.http.app as http_app
from gateway.listeners import Listener
from gateway.transports.feedback import feedback_ports
from tests.integration.test_drain import Raw
from tests.support.gateway import RunningGateway, base_config, write_config
from tests.support.postfix import free_port

ABUSE = "abuse@esp.example"
REPORT = (
    f"From: Fred <fred@example.org>\r\nTo: {ABUSE}\r\nSubject: spam!\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nI never signed up.\r\n"
).encode()


def running(
    tmp_path: Path, downstream_port: int, listeners: list[dict[str, Any]], **overrides: Any
) -> RunningGateway:
    config = base_config(tmp_path, downstream_port, **overrides)
    config["listeners"] = listeners
    return RunningGateway(write_config(tmp_path, config))


def end(gw: RunningGateway, shutdown: Any) -> None:
    """Finish the test's own shutdown (or run one if the test failed before it)."""
    try:
        if shutdown is None:
            gw.call(gw.server.shutdown())
        else:
            shutdown.result(30)
    finally:
        gw.loop.call_soon_threadsafe(gw.loop.stop)
        gw.thread.join(5)


def greeted(port: int) -> Raw:
    client = Raw(port)
    assert client.reply().startswith(b"220 ")
    assert client.command(b"EHLO mx.example.org\r\n").startswith(b"250 ")
    return client


def test_every_listener_kind_is_on_the_servers_list_and_follows_the_protocol(tmp_path, scripted_mta):
    gw = running(
        tmp_path,
        scripted_mta().port,
        [
            {"kind": "submission", "address": "127.0.0.1", "port": 0},
            {"kind": "feedback", "address": "127.0.0.1", "port": 0},
            {"kind": "milter", "address": "127.0.0.1", "port": free_port()},
            {"kind": "http", "address": "127.0.0.1", "port": 0},
        ],
        feedback_intake={"abuse_addresses": [ABUSE]},
        http={"token_key_file": str(tmp_path / "http.key")},
        webhooks={"deliver": True},
    )
    try:
        kinds = [listener.kind for listener in gw.server.listeners]
        assert kinds == ["submission", "http", "feedback", "milter"]
        assert [service.kind for service in gw.server.services] == ["webhooks"]
        for listener in [*gw.server.listeners, *gw.server.services]:
            assert isinstance(listener, Listener)
            assert listener.in_flight == 0 or listener.kind == "webhooks"
    finally:
        end(gw, None)
    lines = gw.log_lines()
    done = [e for e in lines if e.get("event") == "shutdown" and e.get("phase") == "done"]
    assert done and done[0]["abandoned"] == "0"


def test_feedback_sessions_drain_like_submission_ones(tmp_path, scripted_mta):
    gw = running(
        tmp_path,
        scripted_mta().port,
        [
            {"kind": "submission", "address": "127.0.0.1", "port": 0},
            {"kind": "feedback", "address": "127.0.0.1", "port": 0},
        ],
        feedback_intake={"abuse_addresses": [ABUSE]},
    )
    shutdown = None
    try:
        port = feedback_ports(gw.server)[0]
        idle = greeted(port)
        busy = greeted(port)
        assert busy.command(b"MAIL FROM:<fred@example.org>\r\n").startswith(b"250 ")
        assert busy.command(f"RCPT TO:<{ABUSE}>\r\n".encode()).startswith(b"250 ")
        assert busy.command(b"DATA\r\n").startswith(b"354 ")

        shutdown = asyncio.run_coroutine_threadsafe(gw.server.shutdown(), gw.loop)
        # A session between transactions is told 421 and closed ...
        assert idle.reply().startswith(b"421 4.3.2 ")
        assert idle.reply() == b""
        # ... a new connection hears 421 instead of the greeting (the sending MTA retries) ...
        with socket.create_connection(("127.0.0.1", port), timeout=10) as new:
            assert new.recv(200).startswith(b"421 4.3.2 ")
        assert not shutdown.done()
        # ... and the report being sent is received and stored, then the session ends.
        assert busy.command(REPORT + b".\r\n").startswith(b"250 2.0.0 Ok: feedback recorded")
        assert busy.reply().startswith(b"421 4.3.2 ")
        assert busy.reply() == b""
    finally:
        end(gw, shutdown)
    assert any(e.get("event") == "feedback_received" for e in gw.log_lines())


def test_an_http_request_under_way_does_not_hold_up_the_smtp_drain(tmp_path, scripted_mta, monkeypatch):
    entered, release = threading.Event(), threading.Event()

    async def slow_health_checks(server: Any) -> dict[str, str]:
        entered.set()
        await asyncio.to_thread(release.wait, 60)
        return {"store": "ok"}

    monkeypatch.setattr(http_app, "health_checks", slow_health_checks)
    http_port = free_port()
    gw = running(
        tmp_path,
        scripted_mta().port,
        [
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_networks": {"127.0.0.1/32": "acme"},
            },
            {"kind": "http", "address": "127.0.0.1", "port": http_port},
        ],
        http={"token_key_file": str(tmp_path / "http.key")},
    )
    shutdown = None
    answers: list[int] = []
    try:

        def health() -> None:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=60) as response:
                answers.append(response.status)

        request = threading.Thread(target=health)
        request.start()
        assert entered.wait(30)
        idle = greeted(gw.port)
        shutdown = asyncio.run_coroutine_threadsafe(gw.server.shutdown(), gw.loop)
        # The SMTP session is drained while the HTTP request is still being answered
        # (before, the HTTP runners were shut down first, waiting for that request).
        try:
            assert idle.reply().startswith(b"421 4.3.2 ")
        except TimeoutError:
            pytest.fail("the idle SMTP session was not drained while an HTTP request ran")
        finally:
            release.set()
        request.join(30)
        assert answers == [200]  # drained, not cut off
    finally:
        release.set()
        end(gw, shutdown)
