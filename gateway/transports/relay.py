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
from aiosmtplib import SMTPResponse

from gateway.core import replies
from gateway.core.verdict import Reply
from gateway.fastpaths import aiosmtplib as fast

_QUEUE_ID = re.compile(
    r"(?:queued as|queue id|id=|message id is|ok:?\s+id)\s*[:=]?\s*<?([A-Za-z0-9._@-]{4,})>?",
    re.IGNORECASE,
)
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})\s+")
# C0 controls, DEL and C1 controls: never part of a mailbox in an SMTP command (RFC 5321 4.1.2).
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# What aiosmtplib refuses in a command line (its COMMAND_INJECTION_REGEX).
_COMMAND_INJECTION = re.compile(rb"[\x00-\x1f\x7f]")


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
        enhanced, text = match.group(1), first[match.end() :]
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

    def __init__(
        self,
        host: str,
        port: int,
        *,
        starttls: str = "opportunistic",
        verify_tls: bool = False,
        username: str | None = None,
        password_file: Path | None = None,
        connect_timeout: float = 10.0,
        timeout: float = 120.0,
        local_hostname: str = "gateway.localdomain",
        pool_size: int = 32,
        reuse_limit: int = 100,
        idle_timeout: float = 30.0,
    ) -> None:
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

    async def send(
        self, mail_from: str, recipients: Sequence[str], data: bytes, mail_options: Sequence[str] = ()
    ) -> RelayResult:
        started = time.perf_counter()
        result = await self._send(mail_from, recipients, data, mail_options)
        return RelayResult(
            result.reply, result.queue_id, time.perf_counter() - started, result.detail, result.refused
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for pooled in idle:
            await self._quit(pooled.client)

    async def _send(
        self, mail_from: str, recipients: Sequence[str], data: bytes, mail_options: Sequence[str]
    ) -> RelayResult:
        pooled = self._take_idle()
        if pooled is not None:
            stage = ["connected"]
            try:
                result = await self._transaction(
                    pooled.client, mail_from, recipients, data, mail_options, stage
                )
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
            result = await self._transaction(client, mail_from, recipients, data, mail_options, ["connected"])
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
            hostname=self.host,
            port=self.port,
            local_hostname=self.local_hostname,
            timeout=self.timeout,
            start_tls=False,
            use_tls=False,
        )
        try:
            await asyncio.wait_for(client.connect(timeout=self.connect_timeout), self.connect_timeout + 1)
        except (TimeoutError, OSError, aiosmtplib.SMTPException) as exc:
            if isinstance(exc, aiosmtplib.SMTPResponseException):
                detail = f"error: greeting {exc.code} {exc.message}"
            else:
                detail = f"error: connect: {exc}"
            raise _SessionSetupError(RelayResult(replies.DOWNSTREAM_UNAVAILABLE, detail=detail)) from None
        try:
            await client.ehlo()
            if self.starttls != "none":
                if client.supports_extension("starttls"):
                    await client.starttls(tls_context=self._tls_context)
                elif self.starttls == "required":
                    raise _SessionSetupError(
                        RelayResult(
                            replies.DOWNSTREAM_TLS, detail="error: downstream does not offer STARTTLS"
                        )
                    )
            if client.is_ehlo_or_helo_needed:
                # STARTTLS discarded what EHLO said (RFC 3207 4.2); ask again now, as MAIL or
                # AUTH would, so the first message can already use PIPELINING.
                await client.ehlo()
            if self.username:
                await client.login(self.username, self._password() or "")
        except _SessionSetupError:
            await self._quit(client)
            raise
        except Exception as exc:  # noqa: BLE001 - mapped to a reply for the client
            await self._quit(client)
            raise _SessionSetupError(_failure(exc)) from None
        return client

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        mail_options: Sequence[str],
        stage: list[str],
    ) -> RelayResult:
        options = [o for o in mail_options if o.upper().startswith(("BODY=", "SMTPUTF8"))]
        if fast.can_pipeline(client):
            return await self._pipelined(client, mail_from, recipients, data, options, stage)
        # aiosmtplib's mail() and rcpt() without their quote_address: the path is sent exactly
        # as the policies saw it (`_path`).
        await _ehlo_or_helo_if_needed(client)
        response = await client.execute_command(
            b"MAIL", b"FROM:" + _path(mail_from), *(o.encode("ascii") for o in options)
        )
        if response.code != 250:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, mail_from)
        stage[0] = "mail"
        refused: dict[str, Reply] = {}
        for rcpt in recipients:
            response = await client.execute_command(b"RCPT", b"TO:" + _path(rcpt))
            if response.code not in (250, 251):
                refused[rcpt] = downstream_reply(response.code, response.message)
        if refused:
            await client.rset()
            return _refusal(refused, len(recipients))
        stage[0] = "data"
        response = await client.data(data)
        return _delivered(response)

    async def _pipelined(
        self,
        client: aiosmtplib.SMTP,
        mail_from: str,
        recipients: Sequence[str],
        data: bytes,
        options: Sequence[str],
        stage: list[str],
    ) -> RelayResult:
        """MAIL, every RCPT and DATA in one write (RFC 2920), then their replies in order.

        Same outcomes as the command-by-command path: a refusal at MAIL raises as there (so a
        pooled connection the downstream closed is retried on a fresh one: only envelope
        commands were sent), refused recipients mean no message is transferred, a DATA reply
        other than 354/250 raises SMTPDataError. Whenever the session's state is not certain
        (an error, a timeout, an answer that does not fit), the connection is closed.
        """
        batch = [_command(b"MAIL FROM:" + _path(mail_from), *(o.encode("ascii") for o in options))]
        batch.extend(_command(b"RCPT TO:" + _path(rcpt)) for rcpt in recipients)
        batch.append(b"DATA\r\n")
        answers = fast.Pipeline(client, self.timeout)
        refused: dict[str, Reply] = {}
        try:
            answers.write(b"".join(batch))
            mail = await answers.next()
            if mail.code != 250:
                client.close()  # the replies to RCPT and DATA are still to come: not reusable
                raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, mail_from)
            stage[0] = "mail"
            for rcpt in recipients:
                reply = await answers.next()
                if reply.code == 421:  # the downstream is closing the session
                    raise aiosmtplib.SMTPResponseException(reply.code, reply.message)
                if reply.code not in (250, 251):
                    refused[rcpt] = downstream_reply(reply.code, reply.message)
            start = await answers.next()
            if refused:
                if start.code == 354:
                    if len(refused) < len(recipients):
                        # The rest were accepted: a lone "." would deliver an empty message to
                        # them. Only dropping the connection abandons the transaction.
                        client.close()
                        return _refusal(refused, len(recipients))
                    # RFC 2920 3.1: DATA accepted though no RCPT was: send a single dot.
                    answers.write(b".\r\n")
                    await answers.next()
            else:
                if start.code != 354:
                    raise aiosmtplib.SMTPDataError(start.code, start.message)
                stage[0] = "data"
                answers.write(fast.data_payload(data))
                response = await answers.next()
                if response.code != 250:
                    raise aiosmtplib.SMTPDataError(response.code, response.message)
                return _delivered(response)
        except BaseException:
            client.close()
            raise
        finally:
            if not answers.finish():
                client.close()  # more than was asked for arrived: out of step with the server
        await client.rset()
        return _refusal(refused, len(recipients))


def _path(address: str) -> bytes:
    """The reverse- or forward-path for `address`: exactly the address the policies checked,
    in angle brackets. Never re-parsed: aiosmtplib's quote_address goes through
    email.utils.parseaddr, whose reading of an unusual address can differ from the one that
    was checked (a quoted CR once turned `"\\ranna@example.org"@safe.example` into
    `""anna@example.org`). The listener refuses control characters in addresses; one that got
    here anyway is not sent."""
    if _CONTROL_CHARACTER.search(address):
        raise ValueError("Address contains a control character")
    if address in ("", "<>"):  # the null reverse-path
        return b"<>"
    return b"<" + address.encode("utf-8", "surrogateescape") + b">"


def _command(*args: bytes) -> bytes:
    line = b" ".join(args)
    if _COMMAND_INJECTION.search(line):
        raise ValueError("Command arg contains a prohibited control character")
    return line + b"\r\n"


async def _ehlo_or_helo_if_needed(client: aiosmtplib.SMTP) -> None:
    """EHLO (HELO if EHLO is refused) unless the session already greeted, as aiosmtplib's
    mail() does first; through its public API."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()


def _refusal(refused: dict[str, Reply], recipients: int) -> RelayResult:
    if len(refused) == recipients:
        return RelayResult(
            next(iter(refused.values())), detail="downstream refused recipients", refused=refused
        )
    # Accepting the rest would silently drop the refused ones for the client.
    return RelayResult(
        replies.PARTIAL_RECIPIENTS, detail="downstream refused some recipients", refused=refused
    )


def _delivered(response: SMTPResponse) -> RelayResult:
    return RelayResult(
        downstream_reply(response.code, response.message),
        queue_id_of(response.message),
        detail=f"downstream {response.code} {response.message}",
    )


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
            return RelayResult(replies.DOWNSTREAM_ERROR, detail=f"error: unexpected {exc.code} {exc.message}")
        return RelayResult(
            downstream_reply(exc.code, exc.message), detail=f"downstream {exc.code} {exc.message}"
        )
    if isinstance(exc, aiosmtplib.SMTPException):
        return RelayResult(replies.DOWNSTREAM_ERROR, detail=f"error: {exc}")
    raise exc
