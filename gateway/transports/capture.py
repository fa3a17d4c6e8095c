"""The embedded capture MTA: a first-run downstream that writes what would leave the platform.

It is a real SMTP server on a loopback port, so the gateway relays to it with the same relay
code as to Postfix. Like a delivery agent it prepends Return-Path and Delivered-To and writes
one Maildir file per recipient (tmp/ then rename into new/, so readers never see half a file).
"""

from __future__ import annotations

import asyncio
import mailbox
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import Envelope, Session

_queue_counter = 0


class CaptureHandler:
    def __init__(self, maildir: Path) -> None:
        # mailbox.Maildir(create=True) skips tmp/new/cur when the folder exists: make them here.
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        self.maildir = mailbox.Maildir(str(maildir), create=False)

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        global _queue_counter
        content = envelope.original_content or b""
        try:
            for rcpt in envelope.rcpt_tos:
                head = (f"Return-Path: <{envelope.mail_from}>\r\nDelivered-To: {rcpt}\r\n").encode()
                await asyncio.to_thread(self.maildir.add, head + content)
        except OSError:
            return "451 4.3.0 Cannot write to the capture Maildir"
        _queue_counter += 1
        return f"250 2.0.0 Ok: queued as CAPTURE{_queue_counter:08d}"


async def start_capture(
    maildir: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    hostname: str = "capture.localdomain",
    sock: Any = None,
) -> tuple[Any, int]:
    """Start the capture server (on `sock` if given); returns (asyncio server, port)."""
    handler = CaptureHandler(maildir)
    loop = asyncio.get_running_loop()

    def factory() -> SMTPServer:
        return SMTPServer(handler, hostname=hostname, data_size_limit=None, ident="gateway capture MTA")

    if sock is not None:
        server = await loop.create_server(factory, sock=sock)
    else:
        server = await loop.create_server(factory, host=host, port=port)
    bound_port = server.sockets[0].getsockname()[1]
    return server, bound_port
