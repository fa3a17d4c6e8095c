"""Command lines and envelope addresses, byte for byte (issue #11, items 2 and 3).

A raw client (smtplib refuses to send bare CR/LF) talks to a real gateway; the downstream is a
raw socket server that records every command line exactly as it arrived, so these tests see
what the policies were asked about and what left the gateway:

* an address with a control character is refused (501 5.1.3) on the fast path and through
  aiosmtpd's parser, and nothing reaches the downstream;
* a legitimate unusual address (quoted local part) reaches the downstream exactly as the
  listener parsed it, on the pipelined and on the command-by-command relay path;
* a command line with a bare LF or CR is refused (500 5.5.2) and the session closed, so no part
  of it (or of what follows) runs as a command.
"""

from __future__ import annotations

import base64
import socket
import socketserver
import threading
from typing import Any

import pytest

from gateway.transports.smtp import SubmissionSMTP
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import PASSWORD, AioSMTP, add_customer


class RawMTA:
    """A downstream that records every line it receives, unparsed, and accepts everything."""

    def __init__(self, pipelining: bool = True) -> None:
        self.lines: list[bytes] = []
        self.messages: list[bytes] = []
        mta = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 raw.test ESMTP\r\n")
                while line := self.rfile.readline():
                    mta.lines.append(line)
                    verb = line[:4].upper()
                    if verb == b"EHLO":
                        self.wfile.write(
                            b"250-raw.test\r\n"
                            + (b"250-PIPELINING\r\n" if pipelining else b"")
                            + b"250 8BITMIME\r\n"
                        )
                    elif verb == b"DATA":
                        self.wfile.write(b"354 go ahead\r\n")
                        body = b""
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            body += chunk
                        mta.messages.append(body)
                        self.wfile.write(b"250 2.0.0 Ok: queued as RAW%d\r\n" % len(mta.messages))
                    elif verb == b"QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 2.0.0 Ok\r\n")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def envelope(self) -> list[bytes]:
        return [line for line in self.lines if line[:4].upper() in (b"MAIL", b"RCPT")]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.buffer = b""
        assert self.reply().startswith(b"220 ")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> bytes:
        """One whole reply (the last line of a multi-line one); b"" if the connection closed."""
        while True:
            while b"\r\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\r\n", 1)
                if line[3:4] != b"-":
                    return line
            chunk = self.sock.recv(65536)
            if not chunk:
                return b""
            self.buffer += chunk

    def command(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def closed(self) -> bool:
        """True once the gateway has closed the connection (after any pending replies)."""
        try:
            return self.reply() == b"" and not self.buffer
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_mta():
    started: list[RawMTA] = []

    def make(pipelining: bool = True) -> RawMTA:
        started.append(RawMTA(pipelining))
        return started[-1]

    yield make
    for mta in started:
        mta.stop()


def _trusted_gateway(gateway: Any, port: int) -> Any:
    # Loopback is acme's trusted network: logged in without AUTH; plaintext AUTH also allowed.
    gw = gateway(
        port,
        limits={"shutdown_grace": 1, "auth_failure_delay": 0},
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_local": True,
                "trusted_networks": {"127.0.0.1/32": "acme"},
            }
        ],
    )
    add_customer(gw.store)
    return gw


def _session(gw: Any) -> RawClient:
    client = RawClient(gw.port)
    assert client.command(b"EHLO client.test\r\n").startswith(b"250 ")
    return client


@pytest.fixture(params=["fast path", "aiosmtpd parser"])
def parser(request, monkeypatch):
    """Every address test runs with the `<local@domain>` fast path and without it."""
    if request.param == "aiosmtpd parser":
        monkeypatch.setattr(SubmissionSMTP, "_getaddr", AioSMTP._getaddr)
    return request.param


# -- item 2: the address checked is the address relayed -------------------------------------------

CONTROLS = ["\x00", "\x01", "\t", "\x0b", "\x0c", "\x1b", "\x1f", "\x7f"]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"0x{ord(c):02x}")
@pytest.mark.parametrize(
    "form", ['<"a{c}nna"@example.org>', "<a{c}nna@example.org>", '<"{c}anna@example.org"@safe.example>']
)
def test_a_control_character_in_a_recipient_is_refused(gateway, raw_mta, parser, control, form):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    assert client.command(b"MAIL FROM:<news@customer.example>\r\n").startswith(b"250 ")
    address = form.format(c=control).encode()
    assert client.command(b"RCPT TO:" + address + b"\r\n").startswith(b"501 5.1.3 ")
    # The session goes on; a clean recipient still works, and only it is relayed.
    assert client.command(b"RCPT TO:<bob@example.org>\r\n").startswith(b"250 ")
    assert client.command(b"DATA\r\n").startswith(b"354 ")
    assert client.command(MESSAGE + b".\r\n").startswith(b"250 ")
    client.close()
    assert mta.envelope() == [b"MAIL FROM:<news@customer.example>\r\n", b"RCPT TO:<bob@example.org>\r\n"]


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: f"0x{ord(c):02x}")
@pytest.mark.parametrize("form", ['<"n{c}ews"@customer.example>', "<n{c}ews@customer.example>"])
def test_a_control_character_in_the_sender_is_refused(gateway, raw_mta, parser, control, form):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    address = form.format(c=control).encode()
    assert client.command(b"MAIL FROM:" + address + b"\r\n").startswith(b"501 5.1.3 ")
    assert client.command(b"RCPT TO:<anna@example.org>\r\n").startswith(b"503 ")  # no MAIL
    client.close()
    assert mta.lines == []


@pytest.mark.parametrize(
    "address",
    [
        b'RCPT TO:<"\ranna@example.org"@safe.example>',  # the two examples
        b'RCPT TO:<"r\rX-Inj2: yes"@example.org>',
        b'RCPT TO:<"a\nnna"@example.org>',
    ],
)
def test_a_cr_or_lf_inside_an_address_never_reaches_the_downstream(gateway, raw_mta, parser, address):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    client.send(b"MAIL FROM:<news@customer.example>\r\n" + address + b"\r\nDATA\r\n" + MESSAGE + b".\r\n")
    assert client.reply().startswith(b"250 ")
    assert client.reply().startswith(b"500 5.5.2 ")
    assert client.closed()
    assert mta.lines == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one by one"])
@pytest.mark.parametrize(
    "sender,recipient,relayed_sender,relayed_recipient",
    [
        (
            b"<news@customer.example>",
            b'<"john doe"@example.org>',
            b"<news@customer.example>",
            b'<"john doe"@example.org>',
        ),
        (
            b'<"news desk"@customer.example>',
            b'<"a\\"b(c)"@example.org>',
            b'<"news desk"@customer.example>',
            b'<"a\\"b(c)"@example.org>',
        ),
        (
            b"<news@customer.example>",
            b'<"a,b;c:d"@[192.0.2.1]>',
            b"<news@customer.example>",
            b'<"a,b;c:d"@[192.0.2.1]>',
        ),
        # Without angle brackets aiosmtpd quotes the backslash; the downstream gets that same
        # address, not parseaddr's `<\\anna@example.org>` (another address than the one checked).
        (
            b"<news@customer.example>",
            b"\\anna@example.org",
            b"<news@customer.example>",
            b'<"\\\\anna"@example.org>',
        ),
    ],
)
def test_a_quoted_local_part_is_relayed_exactly_as_checked(
    gateway, raw_mta, parser, pipelining, sender, recipient, relayed_sender, relayed_recipient
):
    mta = raw_mta(pipelining)
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    assert client.command(b"MAIL FROM:" + sender + b"\r\n").startswith(b"250 ")
    assert client.command(b"RCPT TO:" + recipient + b"\r\n").startswith(b"250 ")
    assert client.command(b"DATA\r\n").startswith(b"354 ")
    assert client.command(MESSAGE + b".\r\n").startswith(b"250 2.0.0 Ok: queued as RAW1")
    client.close()
    assert mta.envelope() == [
        b"MAIL FROM:" + relayed_sender + b"\r\n",
        b"RCPT TO:" + relayed_recipient + b"\r\n",
    ]
    # ... and it is the address the policies saw (the engine logs what it checked).
    rcpts = [line["rcpt"] for line in gw.log_lines() if line.get("event") == "rcpt"]
    assert rcpts == [relayed_recipient[1:-1].decode()]


# -- item 3: a command line ends at CRLF only ----------------------------------------------------


@pytest.mark.parametrize(
    "batch",
    [
        b"MAIL FROM:<news@customer.example>\nRCPT TO:<anna@example.org>\r\n",
        b"MAIL FROM:<news@customer.example>\rRCPT TO:<anna@example.org>\r\n",
        b"MAIL FROM:<news@customer.example>\n",
        b"MAIL FROM:<news@customer.example>\r\r\n",
        b"\rMAIL FROM:<news@customer.example>\r\n",
        b"\n",
    ],
    ids=["LF inside", "CR inside", "LF at the end", "CR before CRLF", "CR first", "lone LF"],
)
def test_a_command_line_with_a_bare_lf_or_cr_is_refused_and_the_session_closed(gateway, raw_mta, batch):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    client.send(batch + b"DATA\r\n" + MESSAGE + b".\r\n")
    assert client.reply().startswith(b"500 5.5.2 ")
    assert client.closed()  # nothing after it ran
    assert mta.lines == []
    assert any(
        line.get("event") == "session_ended" and line.get("reason") == "bare CR or LF"
        for line in gw.log_lines()
    )


def test_a_bare_lf_in_the_middle_of_a_pipelined_batch_stops_the_batch(gateway, raw_mta):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    client.send(
        b"MAIL FROM:<news@customer.example>\r\n"
        b"RCPT TO:<suppressed@example.org>\nRCPT TO:<bob@example.org>\r\n"
        b"DATA\r\n" + MESSAGE + b".\r\n"
    )
    assert client.reply().startswith(b"250 ")  # MAIL
    assert client.reply().startswith(b"500 5.5.2 ")
    assert client.closed()
    assert mta.lines == []


def test_the_same_batch_with_crlf_only_is_relayed(gateway, raw_mta):
    mta = raw_mta()
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    client.send(b"MAIL FROM:<news@customer.example>\r\nRCPT TO:<anna@example.org>\r\nDATA\r\n")
    assert [client.reply()[:3] for _ in range(3)] == [b"250", b"250", b"354"]
    assert client.command(MESSAGE + b".\r\n").startswith(b"250 ")
    assert client.command(b"QUIT\r\n").startswith(b"221 ")
    assert mta.envelope() == [b"MAIL FROM:<news@customer.example>\r\n", b"RCPT TO:<anna@example.org>\r\n"]


PLAIN = base64.b64encode(f"\0acme\0{PASSWORD}".encode())


@pytest.mark.parametrize(
    "exchange",
    [
        [b"AUTH PLAIN " + PLAIN + b"\n"],
        [b"AUTH PLAIN " + PLAIN + b"\rMAIL FROM:<news@customer.example>\r\n"],
        [b"AUTH PLAIN\r\n", PLAIN + b"\n"],
        [b"AUTH PLAIN\r\n", PLAIN + b"\rMAIL FROM:<news@customer.example>\r\n"],
        [b"AUTH LOGIN\r\n", base64.b64encode(b"acme") + b"\n"],
        [
            b"AUTH LOGIN\r\n",
            base64.b64encode(b"acme") + b"\r\n",
            base64.b64encode(PASSWORD.encode()) + b"\r\n",
            b"\n",
        ],
    ],
    ids=["PLAIN LF", "PLAIN CR", "PLAIN reply LF", "PLAIN reply CR", "LOGIN user LF", "LF after login"],
)
def test_a_bare_lf_or_cr_inside_auth_is_refused_and_the_session_closed(gateway, raw_mta, exchange):
    mta = raw_mta()
    gw = gateway(
        mta.port,
        limits={"shutdown_grace": 1, "auth_failure_delay": 0},
        listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}],
    )
    add_customer(gw.store)
    client = _session(gw)
    for step in exchange[:-1]:
        reply = client.command(step)
        assert reply.startswith((b"334 ", b"235 ")), reply
    client.send(exchange[-1] + b"MAIL FROM:<news@customer.example>\r\n")
    assert client.reply().startswith(b"500 5.5.2 ")
    assert client.closed()
    assert mta.lines == []


def test_auth_with_crlf_only_still_logs_in(gateway, raw_mta):
    gw = gateway(
        raw_mta().port,
        listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}],
    )
    add_customer(gw.store)
    client = _session(gw)
    assert client.command(b"AUTH LOGIN\r\n").startswith(b"334 ")
    assert client.command(base64.b64encode(b"acme") + b"\r\n").startswith(b"334 ")
    assert client.command(base64.b64encode(PASSWORD.encode()) + b"\r\n").startswith(b"235 ")
    assert client.command(b"MAIL FROM:<news@customer.example>\r\n").startswith(b"250 ")


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one by one"])
def test_the_null_sender_is_relayed_as_the_null_sender(gateway, raw_mta, pipelining):
    # aiosmtplib's quote_address refuses "<>", so such a message used to get 451 for ever.
    mta = raw_mta(pipelining)
    gw = _trusted_gateway(gateway, mta.port)
    client = _session(gw)
    assert client.command(b"MAIL FROM:<>\r\n").startswith(b"250 ")
    assert client.command(b"RCPT TO:<anna@example.org>\r\n").startswith(b"250 ")
    assert client.command(b"DATA\r\n").startswith(b"354 ")
    assert client.command(MESSAGE + b".\r\n").startswith(b"250 2.0.0 Ok: queued as RAW1")
    assert mta.envelope() == [b"MAIL FROM:<>\r\n", b"RCPT TO:<anna@example.org>\r\n"]
