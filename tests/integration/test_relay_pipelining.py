"""The relay pipelines MAIL/RCPT/DATA (RFC 2920) when the downstream offers PIPELINING.

A small scripted downstream on a real loopback socket records every read it made, so the
tests see what arrived in one batch, and answers as each test says, down to replies dribbled
out a line at a time. Outcomes must be those of the command-by-command path.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiosmtplib import protocol as aiosmtplib_protocol
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import replies
from gateway.fastpaths import aiosmtplib as fast
from gateway.tlsutil import ensure_self_signed, server_context
from gateway.transports.relay import Relay, _path

BODY = (
    b"From: news@customer.example\r\nTo: anna@example.org\r\nSubject: Hi\r\n\r\n"
    b"Hello\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"
)
A, B = "anna@example.org", "bert@example.org"


@dataclass
class Downstream:
    """Speaks just enough SMTP; records reads, transactions and completed messages."""

    pipelining: bool = True
    mail_reply: str = "250 2.1.0 Ok"
    mail_replies: list[str] = field(default_factory=list)  # used up first, one per MAIL
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None  # None: 354 if a recipient was accepted, else 554 like Postfix
    final_reply: str | None = "250 2.0.0 Ok: queued as 4ZQ1xY2abc"  # None: never answered
    close_after: str | None = None  # close the connection after sending a reply starting so
    dribble: bool = False  # every reply line in its own write, with a pause before it
    silent_after: str | None = None  # stop answering (keep the connection) at this command
    close_after_batch: bool = False  # close as soon as a MAIL arrives (stale pooled connection)
    reads: list[bytes] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    delivered: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)  # every DATA content, delivered or not
    aborted: int = 0  # connections lost in the middle of DATA content
    connections: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # offer STARTTLS with this context
    tls_sessions: int = 0
    port: int = 0

    async def _reply(self, writer: asyncio.StreamWriter, text: str | None) -> None:
        if text is None:
            return
        data = text.encode() + b"\r\n"
        if not self.dribble:
            writer.write(data)
        else:
            for line in data.splitlines(keepends=True):
                await asyncio.sleep(0.01)
                writer.write(line)
                await writer.drain()
        if self.close_after and text.startswith(self.close_after):
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        mail_from: str | None = None
        rcpts: list[str] = []
        buffer = b""
        in_data = False
        silent = False
        secure = False
        writer.write(b"220 downstream.test ESMTP\r\n")
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    if in_data:
                        self.aborted += 1
                    return
                self.reads.append(chunk)
                buffer += chunk
                while True:
                    if in_data:
                        end = b"\r\n.\r\n" if not buffer.startswith(b".\r\n") else b".\r\n"
                        at = buffer.find(end)
                        if at == -1:
                            break
                        content = buffer[: at + 2] if end != b".\r\n" else b""
                        buffer = buffer[at + len(end) :]
                        in_data = False
                        body = content.replace(b"\r\n..", b"\r\n.")
                        body = body[1:] if body.startswith(b"..") else body
                        self.bodies.append(body)
                        if (self.final_reply or "").startswith("2") and rcpts:
                            self.delivered.append((mail_from or "", list(rcpts), body))
                        mail_from, rcpts = None, []
                        await self._reply(writer, self.final_reply)
                        continue
                    line, sep, rest = buffer.partition(b"\r\n")
                    if not sep:
                        break
                    buffer = rest
                    command = line.decode()
                    self.commands.append(command)
                    verb = command[:4].upper()
                    if self.close_after_batch and verb == "MAIL":
                        writer.close()
                        return
                    if self.silent_after and command.upper().startswith(self.silent_after):
                        silent = True
                    if silent:
                        continue
                    if verb == "EHLO":
                        extensions = ["PIPELINING"] if self.pipelining else []
                        if self.tls is not None and not secure:
                            extensions.append("STARTTLS")
                        lines = ["downstream.test", *extensions, "8BITMIME", "SIZE 10240000"]
                        await self._reply(
                            writer,
                            "\r\n".join(
                                f"250{' ' if i == len(lines) - 1 else '-'}{text}"
                                for i, text in enumerate(lines)
                            ),
                        )
                    elif verb == "MAIL":
                        reply = self.mail_replies.pop(0) if self.mail_replies else self.mail_reply
                        if reply.startswith("250"):
                            mail_from = command.split(":", 1)[1].split()[0].strip("<>")
                        await self._reply(writer, reply)
                    elif verb == "RCPT":
                        address = command.split(":", 1)[1].strip().strip("<>")
                        reply = self.rcpt_replies.get(address, "250 2.1.5 Ok")
                        if mail_from is None:
                            reply = "503 5.5.1 Error: need MAIL command"
                        elif reply.startswith("25"):
                            rcpts.append(address)
                        await self._reply(writer, reply)
                    elif verb == "DATA":
                        reply = self.data_reply or (
                            "354 End data with <CR><LF>.<CR><LF>"
                            if rcpts
                            else "554 5.5.1 Error: no valid recipients"
                        )
                        in_data = reply.startswith("354")
                        await self._reply(writer, reply)
                    elif verb == "STAR" and self.tls is not None and not secure:
                        await self._reply(writer, "220 2.0.0 Ready to start TLS")
                        await writer.drain()
                        await writer.start_tls(self.tls)
                        secure, buffer = True, b""
                        self.tls_sessions += 1
                    elif verb == "RSET":
                        mail_from, rcpts = None, []
                        await self._reply(writer, "250 2.0.0 Ok")
                    elif verb == "QUIT":
                        await self._reply(writer, "221 2.0.0 Bye")
                        writer.close()
                        return
                    else:
                        await self._reply(writer, "502 5.5.2 Error: command not recognized")
        except ConnectionError:
            return

    def drop_connections(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    def batch_read(self) -> bytes:
        """The read that brought the MAIL command."""
        return next(read for read in self.reads if read.startswith(b"MAIL"))


# These assert the pipelined batch itself (one write, the connection dropped rather than RSET):
# with the fast paths off the relay sends one command at a time, as aiosmtplib does.
batch_only = pytest.mark.skipif(not fast.ACTIVE, reason="pipelining is an aiosmtplib fast path, off")


@pytest.fixture
async def downstream() -> AsyncIterator[Callable[..., Any]]:
    servers: list[asyncio.Server] = []
    relays: list[Relay] = []

    async def start(
        relay_timeout: float = 5.0, starttls: str = "none", **script: Any
    ) -> tuple[Downstream, Relay]:
        mta = Downstream(**script)
        server = await asyncio.start_server(mta.handle, "127.0.0.1", 0)
        servers.append(server)
        mta.port = server.sockets[0].getsockname()[1]
        relay = Relay("127.0.0.1", mta.port, starttls=starttls, connect_timeout=2, timeout=relay_timeout)
        relays.append(relay)
        return mta, relay

    yield start
    for relay in relays:
        await relay.close()
    for server in servers:
        server.close()


async def settle() -> None:
    await asyncio.sleep(0.05)


@batch_only
async def test_envelope_and_data_go_in_one_write_and_the_message_arrives(downstream):
    mta, relay = await downstream()
    result = await relay.send("news@customer.example", [A, B], BODY)
    assert result.accepted and result.reply.code == 250
    assert result.queue_id == "4ZQ1xY2abc"
    assert mta.batch_read() == (
        b"MAIL FROM:<news@customer.example>\r\n"
        b"RCPT TO:<anna@example.org>\r\nRCPT TO:<bert@example.org>\r\n"
        b"DATA\r\n"
    )
    assert mta.delivered == [("news@customer.example", [A, B], BODY)]  # dot-stuffing undone


@batch_only
async def test_pipelining_over_starttls(downstream, tmp_path):
    ensure_self_signed(tmp_path / "cert.pem", tmp_path / "key.pem", "downstream.test")
    tls = server_context(tmp_path / "cert.pem", tmp_path / "key.pem")
    mta, relay = await downstream(starttls="required", tls=tls, dribble=True)
    for _ in range(2):
        assert (await relay.send("news@customer.example", [A, B], BODY)).accepted
    assert mta.tls_sessions == 1 and mta.connections == 1
    # The EHLO after STARTTLS is what offers PIPELINING: the first message already uses it.
    assert mta.commands.count("EHLO gateway.localdomain") == 2
    assert [read for read in mta.reads if read.startswith(b"MAIL")] == [
        b"MAIL FROM:<news@customer.example>\r\nRCPT TO:<anna@example.org>\r\n"
        b"RCPT TO:<bert@example.org>\r\nDATA\r\n"
    ] * 2
    assert [body for _, _, body in mta.delivered] == [BODY, BODY]


async def test_pipelined_through_real_postfix(postfix_clean):
    relay = Relay("127.0.0.1", postfix_clean.port, starttls="none", timeout=10)
    try:
        result = await relay.send("news@customer.example", [A, B], BODY)
        assert result.accepted and result.queue_id
        assert (await relay.send("news@customer.example", [A], BODY)).accepted
    finally:
        await relay.close()
    delivered = await asyncio.to_thread(postfix_clean.wait_for_messages, 3)
    assert sorted(m.count(b"Delivered-To: bert@example.org") for m in delivered) == [0, 0, 1]
    # Postfix adds Date and Message-ID to the header; the body arrives unchanged, dots and all.
    body = BODY.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    assert all(m.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1] == body for m in delivered)
    assert result.queue_id in postfix_clean.read_log()


async def test_connection_is_reused_across_pipelined_messages(downstream):
    mta, relay = await downstream()
    for _ in range(3):
        assert (await relay.send("news@customer.example", [A], BODY)).accepted
    assert len(mta.delivered) == 3 and mta.connections == 1


async def test_mail_options_travel_in_the_batch(downstream):
    mta, relay = await downstream()
    result = await relay.send("news@customer.example", [A], BODY, mail_options=["BODY=8BITMIME", "SIZE=123"])
    assert result.accepted
    assert mta.batch_read().startswith(b"MAIL FROM:<news@customer.example> BODY=8BITMIME\r\n")


async def test_replies_dribbled_out_line_by_line_are_all_read(downstream):
    mta, relay = await downstream(
        dribble=True,
        mail_reply="250-2.1.0 Sender\r\n250 2.1.0 Ok",
        rcpt_replies={B: "550 5.1.1 <bert@example.org>: User unknown"},
    )
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.accepted and len(mta.delivered) == 1
    result = await relay.send("news@customer.example", [B], BODY)
    assert result.reply.code == 550 and list(result.refused) == [B]
    assert mta.connections == 1  # still in step with the downstream


@batch_only
async def test_one_recipient_refused_gives_the_refused_map_and_delivers_nothing(downstream):
    mta, relay = await downstream(
        rcpt_replies={B: "550 5.1.1 <bert@example.org>: Recipient address rejected"}
    )
    result = await relay.send("news@customer.example", [A, B], BODY)
    # As without pipelining: the client retries the rest, so none is delivered now.
    assert result.reply == replies.PARTIAL_RECIPIENTS
    assert set(result.refused) == {B}
    assert (result.refused[B].code, result.refused[B].enhanced) == (550, "5.1.1")
    assert "Recipient address rejected" in result.refused[B].text
    await settle()
    assert mta.delivered == [] and mta.bodies == []
    assert mta.aborted == 1  # DATA had been accepted for anna: the transaction was abandoned
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    assert [rcpts for _, rcpts, _ in mta.delivered] == [[A]]


@batch_only
async def test_all_recipients_refused_transfers_nothing_and_passes_the_5xx(downstream):
    mta, relay = await downstream(
        rcpt_replies={A: "550 5.1.1 <anna@example.org>: unknown", B: "550 5.1.1 <bert@example.org>: unknown"}
    )
    result = await relay.send("news@customer.example", [A, B], BODY)
    assert (result.reply.code, result.reply.enhanced) == (550, "5.1.1")
    assert set(result.refused) == {A, B}
    assert mta.bodies == [] and mta.delivered == []
    assert mta.commands[-2:] == ["DATA", "RSET"]
    mta.rcpt_replies.clear()
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    assert mta.connections == 1


@batch_only
async def test_data_accepted_without_recipients_gets_a_lone_dot(downstream):
    # RFC 2920 3.1: if DATA is accepted although no RCPT was, the client sends a single dot.
    mta, relay = await downstream(rcpt_replies={A: "550 5.1.1 unknown"}, data_reply="354 go ahead")
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.reply.code == 550 and list(result.refused) == [A]
    await settle()
    assert mta.bodies == [b""] and mta.delivered == []
    assert BODY[:20] not in b"".join(mta.reads)


@pytest.mark.parametrize(
    "script, code, enhanced",
    [
        ({"data_reply": "451 4.3.0 Try again"}, 451, "4.3.0"),
        ({"data_reply": "554 5.5.1 No"}, 554, "5.5.1"),
        ({"final_reply": "452 4.3.1 Insufficient system storage"}, 452, "4.3.1"),
        ({"final_reply": "554 5.7.1 Message rejected: content policy"}, 554, "5.7.1"),
    ],
    ids=["DATA-4xx", "DATA-5xx", "final-4xx", "final-5xx"],
)
async def test_data_refusals_pass_back_with_their_class(downstream, script, code, enhanced):
    mta, relay = await downstream(**script)
    result = await relay.send("news@customer.example", [A], BODY)
    assert (result.reply.code, result.reply.enhanced) == (code, enhanced)
    assert not result.accepted and mta.delivered == []


async def test_a_downstream_without_pipelining_gets_one_command_at_a_time(downstream):
    mta, relay = await downstream(pipelining=False)
    result = await relay.send("news@customer.example", [A, B], BODY)
    assert result.accepted and result.queue_id == "4ZQ1xY2abc"
    assert mta.delivered == [("news@customer.example", [A, B], BODY)]
    envelope = [read for read in mta.reads if read[:4] in (b"MAIL", b"RCPT", b"DATA")]
    assert envelope == [
        b"MAIL FROM:<news@customer.example>\r\n",
        b"RCPT TO:<anna@example.org>\r\n",
        b"RCPT TO:<bert@example.org>\r\n",
        b"DATA\r\n",
    ]
    mta.rcpt_replies[B] = "550 5.1.1 unknown"
    result = await relay.send("news@customer.example", [A, B], BODY)
    assert result.reply == replies.PARTIAL_RECIPIENTS and list(result.refused) == [B]
    assert len(mta.delivered) == 1


async def test_a_silent_downstream_times_out_as_4xx_and_is_not_reused(downstream):
    mta, relay = await downstream(relay_timeout=0.5, silent_after="DATA")
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.reply == replies.DOWNSTREAM_TIMEOUT
    mta.silent_after = None
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    assert mta.connections == 2


async def test_a_final_reply_that_never_comes_times_out_as_4xx(downstream):
    mta, relay = await downstream(relay_timeout=0.5, final_reply=None)
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.reply == replies.DOWNSTREAM_TIMEOUT and not result.accepted
    assert len(mta.bodies) == 1  # the message went; only its reply is missing


async def test_a_pooled_connection_closed_by_the_downstream_is_retried_fresh(downstream):
    mta, relay = await downstream()
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    mta.drop_connections()
    await settle()
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    assert len(mta.delivered) == 2 and mta.connections == 2


async def test_a_pooled_connection_dropped_at_the_batch_is_retried_fresh(downstream):
    # Closed only when the batch arrives: noticed while waiting for the MAIL reply.
    mta, relay = await downstream()
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    mta.close_after_batch = True
    result = await relay.send("news@customer.example", [A], BODY)
    # The fresh connection meets the same downstream behaviour: 4xx, and never twice delivered.
    assert 400 <= result.reply.code < 500
    assert mta.connections == 2 and len(mta.delivered) == 1


async def test_421_at_mail_on_a_pooled_connection_is_retried_fresh(downstream):
    mta, relay = await downstream()
    assert (await relay.send("news@customer.example", [A], BODY)).accepted
    mta.mail_replies = ["421 4.3.2 Service shutting down"]
    mta.close_after = "421"
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.accepted and len(mta.delivered) == 2 and mta.connections == 2


async def test_drop_after_the_envelope_was_accepted_is_4xx_without_retry(downstream):
    mta, relay = await downstream(final_reply="250 never", close_after="354")
    result = await relay.send("news@customer.example", [A], BODY)
    assert result.reply == replies.DOWNSTREAM_ERROR
    assert mta.connections == 1 and mta.delivered == []


async def test_mail_refused_passes_back_and_nothing_is_transferred(downstream):
    mta, relay = await downstream(mail_reply="553 5.7.1 Sender address rejected")
    result = await relay.send("news@customer.example", [A], BODY)
    assert (result.reply.code, result.reply.enhanced) == (553, "5.7.1")
    await settle()
    assert mta.bodies == [] and mta.delivered == []


# -- the bytes on the wire -----------------------------------------------------------------------


@given(st.text(alphabet=st.sampled_from("aZ09._+=-@!#'\"<> \t\x00\x7f\r\n\u00e9()[]:,;\\"), max_size=24))
def test_a_path_is_the_checked_address_verbatim_and_never_carries_a_control_character(address):
    # Not aiosmtplib's quote_address: its parseaddr may read an address otherwise than the
    # listener did, so the downstream would get an address the policies never checked.
    if any(ord(c) < 32 or ord(c) == 127 for c in address):
        with pytest.raises(ValueError):
            _path(address)
    elif address in ("", "<>"):
        assert _path(address) == b"<>"
    else:
        assert _path(address) == b"<" + address.encode() + b">"


@given(st.lists(st.sampled_from([b"", b".", b"..", b"a.b", b".x", b"x", b"\r", b"\n", b"\r\n"]), max_size=12))
def test_data_payload_is_what_aiosmtplib_transmits(parts):
    message = b"".join(parts)
    reference = aiosmtplib_protocol.LINE_ENDINGS_REGEX.sub(b"\r\n", message)
    if not reference.endswith(b"\r\n"):
        reference += b"\r\n"
    reference = re.sub(rb"(?m)^\.", b"..", reference) + b".\r\n"
    assert fast.data_payload(message) == reference
