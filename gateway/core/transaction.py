"""A transaction as the policies see it: the session facts, the envelope and the message."""

from __future__ import annotations

import email.message
import enum
from dataclasses import dataclass, field
from typing import Any

from gateway.core.message import header_map
from gateway.mime import fastparse


class Phase(enum.StrEnum):
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


@dataclass
class SessionInfo:
    id: str
    peer: str = ""
    helo: str = ""
    tls: bool = False
    customer: Any = None  # gateway.store.Customer once authenticated
    transport: str = "smtp"  # smtp | milter | check


@dataclass
class Transaction:
    session: SessionInfo
    mail_from: str = ""
    mail_options: list[str] = field(default_factory=list)
    recipients: list[str] = field(default_factory=list)
    # The recipient the RCPT phase is checking now (not yet in `recipients`).
    current_rcpt: str | None = None
    mail_id: str = ""  # the stem before DATA, the final signed ID after
    raw: bytes = b""
    # Every policy decision so far ({phase, policy, mode, action, reason}), for the ledger.
    decisions: list[dict[str, str]] = field(default_factory=list)
    _parsed: email.message.Message | None = field(default=None, repr=False)
    _headers: dict[str, list[str]] | None = field(default=None, repr=False)

    @property
    def customer(self) -> Any:
        return self.session.customer

    @property
    def message(self) -> email.message.Message:
        """Parsed once, as compat32's parser would (gateway.mime.fastparse), shared by every
        policy."""
        if self._parsed is None:
            self._parsed = fastparse.parse(self.raw)
        return self._parsed

    def headers(self, name: str) -> list[str]:
        """All values of a header; the header block is read once per message."""
        if self._headers is None:
            self._headers = header_map(self.raw)
        return self._headers.get(name.lower(), [])

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    @property
    def campaign(self) -> str | None:
        value = self.header("X-Campaign-ID")
        return value.strip() if value else None

    def set_raw(self, raw: bytes) -> None:
        self.raw = raw
        self._parsed = None
        self._headers = None
