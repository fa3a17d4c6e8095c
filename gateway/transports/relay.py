"""Relay to the real MTA: the client hears exactly what the downstream answered.

250 only after the downstream's 250 for that message; a downstream 5xx comes back as 5xx; every
other failure (refused connection, timeout, dropped connection, TLS trouble, 4xx) becomes a 4xx
so the client keeps the message and retries. Texts from us never carry internals; the
downstream's own reply text is passed on (it is addressed to SMTP clients anyway), cleaned.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

from gateway.core import replies
from gateway.core.verdict import Reply
from gateway.transports import fastdata

_QUEUE_ID = re.compile(
    r"(?:queued as|queue id|id=|message id is|ok:?\s+id)\s*[:=]?\s*<?([A-Za-z0-9._@-]{4,})>?",
    re.IGNORECASE,
)
fastdata.install()
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")


@dataclass(frozen=True)
class RelayResult:
    reply: Reply
    queue_id: str | None = None
    seconds: float = 0.0
    # For logs only; never shown to the client.
    detail: str = ""
    refused: dict[str, Reply] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return 200 <= self.reply.code < 300

    @property
    def reply_class(self) -> str:
        return f"{self.reply.code // 100}xx" if not self.detail.startswith("error") else "error"


def downstream_reply(code: int, message: str) -> Reply:
    """A downstream reply as we pass it on: first line, printable ASCII, bounded length."""
    first = message.splitlines()[0] if message else ""
    first = "".join(c if 32 <= ord(c) < 127 else "?" for c in first)[:300].strip()
    match = _ENHANCED.match(first)
    if match:
        enhanced, text = match.group(1), first[match.end():]
    else:
        enhanced, text = f"{code // 100}.0.0", first
    if not enhanced.startswith(str(code // 100)):
        enhanced = f"{code // 100}.0.0"
    return Reply(code, enhanced, text or "Downstream reply")


def queue_id_of(message: str) -> str | None:
    match = _QUEUE_ID.search(message)
    return match.group(1) if match else None


class _SessionSetupError(Exception):
    def __init__(self, result: RelayResult) -> None:
        self.result = result


@dataclass
class _Pooled:
    client: aiosmtplib.SMTP
    uses: int = 0
    idle_since: float = 0.0


class Relay:
    """Relays one message per call, over pooled downstream connections.

    A connection is reused for up to `reuse_limit` messages and kept idle for at most
    `idle_timeout` seconds (like Postfix's smtp connection cache). A pooled connection the
    downstream has meanwhile closed is noticed at MAIL at the latest; the message is then sent
    on a fresh connection, which is safe because nothing was transferred yet.
    """

    def __init__(self, host: str, port: int, *, starttls: str = "opportunistic",
                 verify_tls: bool = False, username: str | None = None,
                 password_file: Path | None = None, connect_timeout: float = 10.0,
                 timeout: float = 120.0, local_hostname: str = "gateway.localdomain",
                 pool_size: int = 32, reuse_limit: int = 100, idle_timeout: float = 30.0) -> None:
        self.host, self.port = host, port
        self.starttls = starttls
        self.username = username
        self.password_file = password_file
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self.local_hostname = local_hostname
        self.pool_size, self.reuse_limit, self.idle_timeout = pool_size, reuse_limit, idle_timeout
        self._idle: list[_Pooled] = []
        self._tls_context = ssl.create_default_context()
        if not verify_tls:
            self._tls_context.check_hostname = False
            self._tls_context.verify_mode = ssl.CERT_NONE

    def _password(self) -> str | None:
        if self.password_file is None:
            return None
        return self.password_file.read_text(encoding="utf-8").strip()

    async def send(self, mail_from: str, recipients: Sequence[str], data: bytes,
                   mail_options: Sequence[str] = ()) -> RelayResult:
        started = time.perf_counter()
        result = await self._send(mail_from, recipients, data, mail_options)
        return RelayResult(result.reply, result.queue_id, time.perf_counter() - started,
                           result.detail, result.refused)

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            await self._quit(pooled.client)

    async def _send(self, mail_from: str, recipients: Sequence[str], data: bytes,
                    mail_options: Sequence[str]) -> RelayResult:
        pooled = self._take_idle()
        if pooled is not None:
            stage = ["connected"]
            try:
                result = await self._transaction(pooled.client, mail_from, recipients, data,
                                                 mail_options, stage)
            except asyncio.CancelledError:
                pooled.client.close()  # mid-transaction: unusable for anybody else
                raise
            except Exception as exc:  # noqa: BLE001 - judged below
                if stage[0] == "connected" and _is_disconnect(exc):
                    # The downstream closed the idle connection: start afresh.
                    pooled.client.close()
                    pooled = None
                else:
                    await self._quit(pooled.client)
                    return _failure(exc)
            else:
                self._give_back(pooled, result)
                return result
        try:
            client = await self._open()
        except _SessionSetupError as exc:
            return exc.result
        pooled = _Pooled(client)
        try:
            result = await self._transaction(client, mail_from, recipients, data, mail_options,
                                             ["connected"])
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a reply for the client
            await self._quit(client)
            return _failure(exc)
        self._give_back(pooled, result)
        return result

    def _take_idle(self) -> _Pooled | None:
        now = time.monotonic()
        while self._idle:
            pooled = self._idle.pop()
            if pooled.client.is_connected and now - pooled.idle_since < self.idle_timeout:
                return pooled
            pooled.client.close()
        return None

    def _give_back(self, pooled: _Pooled, result: RelayResult) -> None:
        pooled.uses += 1
        # After any complete reply (2xx, 4xx or 5xx) the SMTP session is clean for the next MAIL.
        reusable = not result.detail.startswith("error") and pooled.client.is_connected
        if reusable and pooled.uses < self.reuse_limit and len(self._idle) < self.pool_size:
            pooled.idle_since = time.monotonic()
            self._idle.append(pooled)
        else:
            asyncio.ensure_future(self._quit(pooled.client))

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        try:
            await asyncio.wait_for(client.quit(), 2)
        except Exception:  # noqa: BLE001 - the message outcome is already decided
            client.close()

    async def _open(self) -> aiosmtplib.SMTP:
        client = aiosmtplib.SMTP(
            hostname=self.host, port=self.port, local_hostname=self.local_hostname,
            timeout=self.timeout, start_tls=False, use_tls=False,
        )
        try:
            await asyncio.wait_for(client.connect(timeout=self.connect_timeout),
                                   self.connect_timeout + 1)
        except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                detail = f"error: greeting {exc.code} {exc.message}"
            else:
                detail = f"error: connect: {exc}"
            raise _SessionSetupError(RelayResult(replies.DOWNSTREAM_UNAVAILABLE,
                                                 detail=detail)) from None
        try:
            await client.ehlo()
            if self.starttls != "none":
                if client.supports_extension("starttls"):
                    await client.starttls(tls_context=self._tls_context)
                elif self.starttls == "required":
                    raise _SessionSetupError(RelayResult(
                        replies.DOWNSTREAM_TLS, detail="error: downstream does not offer STARTTLS"))
            if self.username:
                await client.login(self.username, self._password() or "")
        except _SessionSetupError:
            await self._quit(client)
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a reply for the client
            await self._quit(client)
            raise _SessionSetupError(_failure(exc)) from None
        return client

    async def _transaction(self, client: aiosmtplib.SMTP, mail_from: str,
                           recipients: Sequence[str], data: bytes,
                           mail_options: Sequence[str], stage: list[str]) -> RelayResult:
        options = [o for o in mail_options if o.upper().startswith(("BODY=", "SMTPUTF8"))]
        await client.mail(mail_from, options=options)
        stage[0] = "mail"
        refused: dict[str, Reply] = {}
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt)
            except aiosmtplib.SMTPRecipientRefused as exc:
                refused[rcpt] = downstream_reply(exc.code, exc.message)
        if refused:
            await client.rset()
            first = next(iter(refused.values()))
            if len(refused) == len(recipients):
                return RelayResult(first, detail="downstream refused recipients",
                                   refused=refused)
            # Accepting the rest would silently drop the refused ones for the client.
            return RelayResult(replies.PARTIAL_RECIPIENTS,
                               detail="downstream refused some recipients", refused=refused)
        stage[0] = "data"
        response = await client.data(data)
        reply = downstream_reply(response.code, response.message)
        return RelayResult(reply, queue_id_of(response.message),
                           detail=f"downstream {response.code} {response.message}")


def _is_disconnect(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError):
        return True
    # A downstream that closes an idle connection may first say 421 (RFC 5321 3.8).
    return isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code == 421


def _failure(exc: BaseException) -> RelayResult:
    """Any failure during a transaction, as the reply the client gets."""
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | TimeoutError):
        return RelayResult(replies.DOWNSTREAM_TIMEOUT, detail=f"error: timeout: {exc}")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | ConnectionError | OSError):
        if isinstance(exc, ssl.SSLError):
            return RelayResult(replies.DOWNSTREAM_TLS, detail=f"error: tls: {exc}")
        return RelayResult(replies.DOWNSTREAM_ERROR, detail=f"error: disconnected: {exc}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        if exc.code < 400:  # an unexpected 2xx/3xx at the wrong moment: protocol trouble
            return RelayResult(replies.DOWNSTREAM_ERROR,
                               detail=f"error: unexpected {exc.code} {exc.message}")
        return RelayResult(downstream_reply(exc.code, exc.message),
                           detail=f"downstream {exc.code} {exc.message}")
    if isinstance(exc, aiosmtplib.SMTPException):
        return RelayResult(replies.DOWNSTREAM_ERROR, detail=f"error: {exc}")
    raise exc
