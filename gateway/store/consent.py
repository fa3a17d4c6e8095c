"""Store methods for double-opt-in consent records (mixed into SqlStore).

Tables (migration 3):

* ``consent_records``: the current state per (customer, address): where the address came from
  (form URL or import batch), when and from which IP it was subscribed, when the confirmation
  mail went out, when, from which IP and with which browser it was confirmed, and whether and
  why it was revoked. ``generation`` counts subscriptions after a revocation: a confirmation
  link names the generation it was made for, so a link from before an unsubscribe cannot
  re-confirm a later subscription.
* ``consent_events``: every event that touched a record (subscribe, confirmation-sent,
  confirm, revoke, import), append-only: the evidence history the CSA complaints office gets.

A record "passes" (policy ``consent``) when it is confirmed and not revoked. Addresses are
stored normalised (lower-cased, no ``<>``) like the suppressions.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.types import CachedRead, StoreError, normalise_address

_COLS = (
    "id, customer_id, address, generation, source, list_name, subscribed_at, subscribed_ip, "
    "subscribed_user_agent, confirmation_sent_at, confirmed_at, confirmed_ip, "
    "confirmed_user_agent, revoked_at, revoked_reason, recorded_via, import_batch, "
    "created_at, updated_at"
)
_EVENT_COLS = "id, customer_id, address, event, happened_at, ip, user_agent, source, via, detail, recorded_at"
CONSENT_EVENTS = ("subscribe", "confirmation-sent", "confirm", "revoke", "import")


def iso(ts: float | None) -> str | None:
    """UTC ISO 8601 with a Z, to the second: how evidence shows times."""
    if ts is None:
        return None
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ConsentRecord:
    id: int
    customer_id: int
    address: str
    generation: int
    source: str
    list_name: str | None
    subscribed_at: float
    subscribed_ip: str | None
    subscribed_user_agent: str | None
    confirmation_sent_at: float | None
    confirmed_at: float | None
    confirmed_ip: str | None
    confirmed_user_agent: str | None
    revoked_at: float | None
    revoked_reason: str | None
    recorded_via: str
    import_batch: str | None
    created_at: float
    updated_at: float

    @property
    def status(self) -> str:
        """confirmed | pending (subscribed, not confirmed yet) | revoked"""
        if self.revoked_at is not None:
            return "revoked"
        return "confirmed" if self.confirmed_at is not None else "pending"

    @property
    def passes(self) -> bool:
        return self.status == "confirmed"


@dataclass(frozen=True)
class ConsentEvent:
    id: int
    customer_id: int
    address: str
    event: str
    happened_at: float
    ip: str | None
    user_agent: str | None
    source: str | None
    via: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    recorded_at: float = 0.0


@dataclass
class ConsentImportRow:
    """One validated row of an import (gateway.cli.consent checks the file)."""

    line: int
    address: str
    source: str
    subscribed_at: float
    subscribed_ip: str
    confirmed_at: float | None = None
    confirmed_ip: str | None = None
    confirmation_sent_at: float | None = None
    subscribed_user_agent: str | None = None
    confirmed_user_agent: str | None = None
    list_name: str | None = None
    original: dict[str, Any] = field(default_factory=dict)


def _record(row: Sequence[Any]) -> ConsentRecord:
    return ConsentRecord(*row)


def _event(row: Sequence[Any]) -> ConsentEvent:
    return ConsentEvent(
        id=row[0],
        customer_id=row[1],
        address=row[2],
        event=row[3],
        happened_at=row[4],
        ip=row[5],
        user_agent=row[6],
        source=row[7],
        via=row[8],
        detail=json.loads(row[9]) if row[9] else {},
        recorded_at=row[10],
    )


class ConsentStoreMixin:
    """Uses self.execute / self.transaction / self.cached of SqlStore."""

    execute: Callable[..., list[tuple[Any, ...]]]
    transaction: Callable[..., Any]
    cached: CachedRead
    emit_event: Callable[..., str | None]
    get_customer_by_id: Callable[..., Any]

    # -- reading ------------------------------------------------------------------------------
    def get_consent(self, customer_id: int, address: str) -> ConsentRecord | None:
        address = normalise_address(address)

        def load() -> ConsentRecord | None:
            rows = self.execute(
                f"SELECT {_COLS} FROM consent_records WHERE customer_id = ? AND address = ?",
                (customer_id, address),
            )
            return _record(rows[0]) if rows else None

        return self.cached(("consent", customer_id, address), load)

    def read_consent(self, customer_id: int, address: str) -> ConsentRecord | None:
        """Like get_consent, never from the cache (pages and writes)."""
        rows = self.execute(
            f"SELECT {_COLS} FROM consent_records WHERE customer_id = ? AND address = ?",
            (customer_id, normalise_address(address)),
        )
        return _record(rows[0]) if rows else None

    def consent_records_for(self, customer_id: int, addresses: Iterable[str]) -> dict[str, ConsentRecord]:
        """The records of these addresses (normalised), for duplicate checks of an import."""
        wanted = sorted({normalise_address(a) for a in addresses})
        found: dict[str, ConsentRecord] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            for row in self.execute(
                f"SELECT {_COLS} FROM consent_records WHERE customer_id = ? AND address IN ({marks})",
                (customer_id, *chunk),
            ):
                record = _record(row)
                found[record.address] = record
        return found

    def consent_history(self, customer_id: int, address: str) -> list[ConsentEvent]:
        return [
            _event(r)
            for r in self.execute(
                f"SELECT {_EVENT_COLS} FROM consent_events WHERE customer_id = ? AND address = ? "
                "ORDER BY happened_at, id",
                (customer_id, normalise_address(address)),
            )
        ]

    def count_consent(self, customer_id: int) -> dict[str, int]:
        rows = self.execute(
            "SELECT CASE WHEN revoked_at IS NOT NULL THEN 'revoked' WHEN confirmed_at IS NOT NULL "
            "THEN 'confirmed' ELSE 'pending' END AS status, COUNT(*) FROM consent_records "
            "WHERE customer_id = ? GROUP BY 1",
            (customer_id,),
        )
        return {status: int(n) for status, n in rows}

    # -- events -------------------------------------------------------------------------------
    def _consent_event(
        self,
        customer_id: int,
        address: str,
        event: str,
        at: float,
        *,
        ip: str | None = None,
        user_agent: str | None = None,
        source: str | None = None,
        via: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self.execute(
            "INSERT INTO consent_events (customer_id, address, event, happened_at, ip, user_agent, "
            "source, via, detail, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                customer_id,
                address,
                event,
                at,
                ip,
                user_agent,
                source,
                via,
                json.dumps(detail, sort_keys=True) if detail else None,
                time.time(),
            ),
        )

    def consent_subscribe(
        self,
        customer_id: int,
        address: str,
        *,
        source: str,
        at: float,
        ip: str | None,
        user_agent: str | None = None,
        list_name: str | None = None,
        via: str = "api",
        confirmation_sent_at: float | None = None,
    ) -> tuple[ConsentRecord, str]:
        """Record a subscription (the form was sent). Returns (record, what happened):
        ``new``; ``pending`` (not confirmed yet: the record now shows this latest request, the
        earlier links stay valid); ``resubscribed`` (it had been revoked: a new generation,
        earlier confirmation links die); ``already-confirmed`` (nothing changes)."""

        address = normalise_address(address)
        if not source:
            raise StoreError("a subscription needs its source (form URL or import batch)")
        if confirmation_sent_at is not None and confirmation_sent_at < at:
            raise StoreError("the confirmation mail cannot be sent before the subscription")
        now = time.time()
        with self.transaction():
            existing = self.read_consent(customer_id, address)
            if existing is None:
                inserted = self.execute(
                    "INSERT INTO consent_records (customer_id, address, generation, source, "
                    "list_name, subscribed_at, subscribed_ip, subscribed_user_agent, "
                    "confirmation_sent_at, recorded_via, created_at, updated_at) VALUES "
                    "(?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (customer_id, address) DO NOTHING RETURNING id",
                    (
                        customer_id,
                        address,
                        source,
                        list_name,
                        at,
                        ip,
                        user_agent,
                        confirmation_sent_at,
                        via,
                        now,
                        now,
                    ),
                )
                outcome = "new" if inserted else "pending"
                existing = None if inserted else self.read_consent(customer_id, address)
            if existing is not None:
                status = existing.status
                if status == "confirmed":
                    outcome = "already-confirmed"
                elif status == "revoked":
                    outcome = "resubscribed"
                    self.execute(
                        "UPDATE consent_records SET generation = generation + 1, source = ?, "
                        "list_name = ?, subscribed_at = ?, subscribed_ip = ?, "
                        "subscribed_user_agent = ?, confirmation_sent_at = ?, "
                        "confirmed_at = NULL, confirmed_ip = NULL, confirmed_user_agent = NULL, "
                        "revoked_at = NULL, revoked_reason = NULL, recorded_via = ?, "
                        "import_batch = NULL, updated_at = ? WHERE id = ?",
                        (source, list_name, at, ip, user_agent, confirmation_sent_at, via, now, existing.id),
                    )
                else:
                    outcome = "pending"
                    self.execute(
                        "UPDATE consent_records SET source = ?, list_name = ?, subscribed_at = ?, "
                        "subscribed_ip = ?, subscribed_user_agent = ?, confirmation_sent_at = "
                        "COALESCE(?, confirmation_sent_at), updated_at = ? WHERE id = ?",
                        (source, list_name, at, ip, user_agent, confirmation_sent_at, now, existing.id),
                    )
            self._consent_event(
                customer_id,
                address,
                "subscribe",
                at,
                ip=ip,
                user_agent=user_agent,
                source=source,
                via=via,
                detail={"result": outcome, "list": list_name},
            )
            if confirmation_sent_at is not None and outcome != "already-confirmed":
                self._consent_event(customer_id, address, "confirmation-sent", confirmation_sent_at, via=via)
            record = self.read_consent(customer_id, address)
        assert record is not None
        return record, outcome

    def consent_confirmation_sent(
        self, customer_id: int, address: str, *, at: float, via: str = "api"
    ) -> ConsentRecord | None:
        """The confirmation mail went out (the newest such time is kept)."""

        address = normalise_address(address)
        with self.transaction():
            record = self.read_consent(customer_id, address)
            if record is None:
                return None
            if at < record.subscribed_at:
                raise StoreError("the confirmation mail cannot be sent before the subscription")
            if record.status == "pending":
                self.execute(
                    "UPDATE consent_records SET confirmation_sent_at = ?, updated_at = ? WHERE id = ?",
                    (at, time.time(), record.id),
                )
            self._consent_event(
                customer_id, address, "confirmation-sent", at, via=via, detail={"status": record.status}
            )
            return self.read_consent(customer_id, address)

    def consent_confirm(
        self,
        customer_id: int,
        address: str,
        *,
        at: float,
        ip: str | None,
        user_agent: str | None = None,
        via: str = "api",
        generation: int | None = None,
        checks: dict[str, str] | None = None,
    ) -> tuple[ConsentRecord | None, str]:
        """Record the confirmation (the link in the confirmation mail was followed). Returns
        (record, what happened): ``confirmed``; ``already-confirmed`` (the first confirmation
        stays the evidence); ``unknown`` (no subscription); ``revoked`` (unsubscribed since:
        the person must subscribe again); ``superseded`` (a link of an earlier subscription).
        `checks`: what the caller verified about the request (the confirmation page: where
        the POST came from), kept in the event's detail."""

        address = normalise_address(address)
        with self.transaction():
            record = self.read_consent(customer_id, address)
            if record is None:
                return None, "unknown"
            if generation is not None and generation != record.generation:
                outcome = "superseded"
            elif record.status == "revoked":
                outcome = "revoked"
            elif record.status == "confirmed":
                outcome = "already-confirmed"
            else:
                if at < record.subscribed_at:
                    raise StoreError("the confirmation cannot be before the subscription")
                outcome = "confirmed"
                self.execute(
                    "UPDATE consent_records SET confirmed_at = ?, confirmed_ip = ?, "
                    "confirmed_user_agent = ?, updated_at = ? WHERE id = ?",
                    (at, ip, user_agent, time.time(), record.id),
                )
                self.emit_event(
                    customer_id,
                    "consent.confirmed",
                    {"via": via, "source": record.source, "list": record.list_name},
                    recipient=address,
                    at=at,
                )
            self._consent_event(
                customer_id,
                address,
                "confirm",
                at,
                ip=ip,
                user_agent=user_agent,
                via=via,
                detail={**(checks or {}), "result": outcome},
            )
            return self.read_consent(customer_id, address), outcome

    def consent_revoke(
        self, customer_id: int, address: str, *, at: float | None = None, reason: str, via: str
    ) -> tuple[ConsentRecord | None, bool]:
        """Revoke (unsubscribe, complaint, the customer's request). (record, newly revoked)."""
        address = normalise_address(address)
        at = time.time() if at is None else at
        with self.transaction():
            record = self.read_consent(customer_id, address)
            if record is None:
                return None, False
            changed = record.revoked_at is None
            if changed:
                self.execute(
                    "UPDATE consent_records SET revoked_at = ?, revoked_reason = ?, "
                    "updated_at = ? WHERE id = ?",
                    (at, reason, time.time(), record.id),
                )
                self.emit_event(
                    customer_id, "consent.revoked", {"via": via, "reason": reason}, recipient=address, at=at
                )
            self._consent_event(
                customer_id,
                address,
                "revoke",
                at,
                via=via,
                detail={"reason": reason, "result": "revoked" if changed else "already revoked"},
            )
            return self.read_consent(customer_id, address), changed

    def import_consent(
        self, customer_id: int, rows: Sequence[ConsentImportRow], *, batch: str, via: str = "import"
    ) -> tuple[list[ConsentImportRow], list[ConsentImportRow]]:
        """Insert the rows in one transaction. Rows whose address has a record already are not
        touched (an import never overrides a revocation or earlier evidence): returned as the
        second list."""
        imported: list[ConsentImportRow] = []
        existing: list[ConsentImportRow] = []
        now = time.time()
        with self.transaction():
            for row in rows:
                address = normalise_address(row.address)
                inserted = self.execute(
                    "INSERT INTO consent_records (customer_id, address, generation, source, "
                    "list_name, subscribed_at, subscribed_ip, subscribed_user_agent, "
                    "confirmation_sent_at, confirmed_at, confirmed_ip, confirmed_user_agent, "
                    "recorded_via, import_batch, created_at, updated_at) VALUES "
                    "(?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (customer_id, address) DO NOTHING RETURNING id",
                    (
                        customer_id,
                        address,
                        row.source,
                        row.list_name,
                        row.subscribed_at,
                        row.subscribed_ip,
                        row.subscribed_user_agent,
                        row.confirmation_sent_at,
                        row.confirmed_at,
                        row.confirmed_ip,
                        row.confirmed_user_agent,
                        via,
                        batch,
                        now,
                        now,
                    ),
                )
                if not inserted:
                    existing.append(row)
                    continue
                imported.append(row)
                self._consent_event(
                    customer_id,
                    address,
                    "import",
                    now,
                    source=row.source,
                    via=via,
                    detail={"batch": batch, "line": row.line, "row": row.original},
                )
        return imported, existing

    # -- evidence -----------------------------------------------------------------------------
    def consent_evidence(self, customer_id: int, address: str) -> dict[str, Any] | None:
        """The evidence of one address as a flat dict (``gateway abuse lookup`` prints it)."""
        record = self.read_consent(customer_id, address)
        if record is None:
            return None
        return {
            "address": record.address,
            "status": record.status,
            "source": record.source,
            "list": record.list_name,
            "subscribed_at": iso(record.subscribed_at),
            "subscribed_ip": record.subscribed_ip,
            "subscribed_user_agent": record.subscribed_user_agent,
            "confirmation_sent_at": iso(record.confirmation_sent_at),
            "confirmed_at": iso(record.confirmed_at),
            "confirmed_ip": record.confirmed_ip,
            "confirmed_user_agent": record.confirmed_user_agent,
            "revoked_at": iso(record.revoked_at),
            "revoked_reason": record.revoked_reason,
            "recorded_via": record.recorded_via,
            "import_batch": record.import_batch,
        }

    def consent_export(self, customer_id: int, address: str) -> dict[str, Any] | None:
        """Everything for the CSA complaints office: the customer, the record and its history."""
        evidence = self.consent_evidence(customer_id, address)
        if evidence is None:
            return None
        customer = self.get_customer_by_id(customer_id)
        return {
            "customer": None
            if customer is None
            else {
                "name": customer.name,
                "id": customer.id,
                "status": customer.status,
                "imprint": customer.imprint or {},
            },
            "consent": evidence,
            "history": [
                {
                    "event": e.event,
                    "at": iso(e.happened_at),
                    "ip": e.ip,
                    "user_agent": e.user_agent,
                    "source": e.source,
                    "via": e.via,
                    "detail": e.detail,
                    "recorded_at": iso(e.recorded_at),
                }
                for e in self.consent_history(customer_id, address)
            ],
            "exported_at": iso(time.time()),
        }


# -- input checks shared by the import, the API and the pages ----------------------------------


class ConsentInputError(ValueError):
    """A value of a consent record that cannot be evidence; the text says why."""


_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\u0080-\U0010ffff-]+$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
EARLIEST = 788_918_400.0  # 1995-01-01: older "evidence" is a typo
CLOCK_SKEW = 600.0


def check_email(value: Any) -> str:
    """The normalised address, or ConsentInputError (no quoted local parts, no IP literals)."""
    if not isinstance(value, str) or not value.strip():
        raise ConsentInputError("missing")
    address = value.strip()
    if len(address) > 254 or any(c.isspace() for c in address) or address.count("@") != 1:
        raise ConsentInputError(f"not an email address: {address!r}")
    local, domain = address.split("@")
    if (
        not local
        or len(local) > 64
        or local.startswith(".")
        or local.endswith(".")
        or ".." in local
        or not _ATEXT.match(local)
    ):
        raise ConsentInputError(f"not an email address: {address!r}")
    try:
        ascii_domain = domain.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ConsentInputError(f"not an email address: {address!r}") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ConsentInputError(f"not an email address: {address!r}")
    return normalise_address(address)


def parse_timestamp(value: Any, *, now: float | None = None) -> float:
    """Unix seconds from ISO 8601 (a missing offset means UTC) or a unix time."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ConsentInputError("missing")
    current = time.time() if now is None else now
    if isinstance(value, bool):
        raise ConsentInputError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        ts = float(value)
    else:
        text = str(value).strip()
        if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
            ts = float(text)
        else:
            try:
                parsed = datetime.datetime.fromisoformat(text.replace(" UTC", "Z"))
            except ValueError:
                raise ConsentInputError(f"not an ISO 8601 time: {text!r}") from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=datetime.UTC)
            ts = parsed.timestamp()
    if ts != ts or ts < EARLIEST:
        raise ConsentInputError(f"implausible time: {value!r}")
    if ts > current + CLOCK_SKEW:
        raise ConsentInputError(f"in the future: {value!r}")
    return ts


def check_ip(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConsentInputError("missing")
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ConsentInputError(f"not an IP address: {value!r}") from None
