"""Store methods for events to customers (mixed into SqlStore; DESIGN §13).

Tables (migration 4):

* ``webhooks``: one endpoint per customer: URL, signing secret (Standard Webhooks
  ``whsec_...``), the event types it wants (NULL: all), enabled or not.
* ``outbox_events``: every event about a customer's recipients, written by the store method
  that makes the change, in the same transaction (a crash can neither lose an event nor
  report a change that did not happen). ``state``: ``pending`` (to deliver), ``delivered``,
  ``failed`` (retried for ``webhooks.retry_for_hours``, then given up), ``skipped`` (the
  customer had no webhook for this type when it happened; `gateway webhook replay` sends it).

Delivery takes a lease on a batch of due events (``lease_owner``/``lease_until``): while the
lease holds no other worker or node takes them (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite
serialises writers), and only the lease holder may record the outcome. A worker that dies
leaves its lease to expire and the events are sent again: at least once, receivers
deduplicate by ``webhook-id``.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.types import CachedRead, StoreError

EVENT_TYPES = (
    "bounce",  # a verified bounce of one of the customer's messages (hard / soft)
    "complaint",  # a verified spam complaint (feedback loop, abuse desk)
    "unsubscribe",  # one-click (RFC 8058) or the unsubscribe page
    "suppression.added",  # a recipient is refused from now on (scope, reason)
    "suppression.lifted",  # ... and no longer
    "consent.confirmed",  # the double opt-in was confirmed
    "consent.revoked",  # ... and revoked
    "message.refused",  # opt-in: a policy refused a message (policy, reply)
)
# Not sent unless the webhook names it: it can be one event per refused message.
OPT_IN_TYPES = ("message.refused",)

_EVENT_COLS = (
    "id, event_id, customer_id, type, created_at, recipient, payload, state, "
    "attempts, pending_since, next_attempt_at, lease_owner, lease_until, last_error, "
    "delivered_at"
)
_WEBHOOK_COLS = "customer_id, url, secret, event_types, enabled, created_at, updated_at, updated_by"


@dataclass(frozen=True)
class Webhook:
    customer_id: int
    url: str
    secret: str
    event_types: tuple[str, ...] | None  # None: every type except the opt-in ones
    enabled: bool
    created_at: float
    updated_at: float
    updated_by: str | None

    def wants(self, event_type: str) -> bool:
        if not self.enabled:
            return False
        if self.event_types is None:
            return event_type not in OPT_IN_TYPES
        return event_type in self.event_types


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    event_id: str
    customer_id: int
    type: str
    created_at: float
    recipient: str | None
    payload: dict[str, Any]
    state: str
    attempts: int
    pending_since: float  # the retry period counts from here (creation, or the replay)
    next_attempt_at: float
    lease_owner: str | None
    lease_until: float | None
    last_error: str | None
    delivered_at: float | None

    def body(self) -> bytes:
        """The exact bytes POSTed (and signed): the same for every attempt."""
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":")).encode()


def _event(row: Sequence[Any]) -> OutboxEvent:
    return OutboxEvent(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        json.loads(row[6]),
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
    )


def _webhook(row: Sequence[Any]) -> Webhook:
    types = tuple(row[3].split(",")) if row[3] else None
    return Webhook(row[0], row[1], row[2], types, bool(row[4]), row[5], row[6], row[7])


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 24 random bytes."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def iso_time(ts: float) -> str:
    import datetime

    return (
        datetime.datetime.fromtimestamp(ts, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class EventStoreMixin:
    """Uses self.execute / self.transaction / self.cached of SqlStore."""

    execute: Callable[..., list[tuple[Any, ...]]]
    cached: CachedRead
    transaction: Callable[..., Any]
    dialect: str

    # -- webhooks -------------------------------------------------------------------------
    def set_webhook(
        self,
        customer_id: int,
        url: str,
        event_types: Sequence[str] | None,
        *,
        by: str | None,
        secret: str | None = None,
    ) -> tuple[Webhook, str]:
        """Create or replace the customer's endpoint. A new secret unless one is given (the
        caller prints it once). Events that were skipped before stay skipped (replay)."""

        unknown = [t for t in event_types or () if t not in EVENT_TYPES]
        if unknown:
            raise StoreError(f"unknown event type(s) {', '.join(unknown)} (known: {', '.join(EVENT_TYPES)})")
        secret = secret or new_secret()
        types = ",".join(event_types) if event_types else None
        now = time.time()
        self.execute(
            "INSERT INTO webhooks (customer_id, url, secret, event_types, enabled, created_at, "
            "updated_at, updated_by) VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (customer_id) "
            "DO UPDATE SET url = excluded.url, secret = excluded.secret, event_types = "
            "excluded.event_types, enabled = 1, updated_at = excluded.updated_at, updated_by = "
            "excluded.updated_by",
            (customer_id, url, secret, types, now, now, by),
        )
        found = self.get_webhook(customer_id)
        assert found is not None
        return found, secret

    def disable_webhook(self, customer_id: int, *, by: str | None) -> bool:
        rows = self.execute(
            "UPDATE webhooks SET enabled = 0, updated_at = ?, updated_by = ? "
            "WHERE customer_id = ? RETURNING customer_id",
            (time.time(), by, customer_id),
        )
        return bool(rows)

    def get_webhook(self, customer_id: int) -> Webhook | None:
        rows = self.execute(f"SELECT {_WEBHOOK_COLS} FROM webhooks WHERE customer_id = ?", (customer_id,))
        return _webhook(rows[0]) if rows else None

    def cached_webhook(self, customer_id: int) -> Webhook | None:
        """For the hot path (opt-in refusal events): read through the short-TTL cache."""
        return self.cached(("webhook", customer_id), lambda: self.get_webhook(customer_id))

    # -- the outbox -----------------------------------------------------------------------
    def emit_event(
        self,
        customer_id: int | None,
        event_type: str,
        data: dict[str, Any],
        *,
        recipient: str | None = None,
        at: float | None = None,
    ) -> str | None:
        """Write one event for the customer; call inside the transaction of the change. No
        customer (a global entry made by ops): no event. Returns the event id."""
        if not customer_id:
            return None
        assert event_type in EVENT_TYPES, event_type
        at = time.time() if at is None else at
        event_id = "evt_" + secrets.token_hex(12)
        webhook = self.get_webhook(customer_id)
        state = "pending" if webhook is not None and webhook.wants(event_type) else "skipped"
        body = {k: v for k, v in data.items() if v is not None}
        if recipient is not None:
            body["recipient"] = recipient
        payload = {"id": event_id, "type": event_type, "timestamp": iso_time(at), "data": body}
        self.execute(
            "INSERT INTO outbox_events (event_id, customer_id, type, created_at, recipient, "
            "payload, state, attempts, pending_since, next_attempt_at) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            (
                event_id,
                customer_id,
                event_type,
                at,
                recipient,
                json.dumps(payload, sort_keys=True),
                state,
                at,
                at,
            ),
            invalidate=False,
        )
        return event_id

    def claim_due_events(
        self, owner: str, *, now: float | None = None, lease: float = 60.0, limit: int = 50
    ) -> list[OutboxEvent]:
        """Lease up to `limit` due events to `owner`. No two owners hold one event at once."""
        now = time.time() if now is None else now
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        free = "state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
        # Two statements in one transaction, not UPDATE ... IN (SELECT ... LIMIT): PostgreSQL
        # may run such a subquery more than once and lease more than `limit` rows. The UPDATE
        # checks the lease again, so a row another node took in between is left to it.
        with self.transaction(invalidate=False) as q:
            ids = [
                r[0]
                for r in q(
                    f"SELECT id FROM outbox_events WHERE {free} ORDER BY id LIMIT {int(limit)}{lock}",
                    (now, now),
                )
            ]
            if not ids:
                return []
            marks = ", ".join("?" for _ in ids)
            rows = q(
                f"UPDATE outbox_events SET lease_owner = ?, lease_until = ? WHERE id IN "
                f"({marks}) AND {free} RETURNING {_EVENT_COLS}",
                (owner, now + lease, *ids, now, now),
            )
        return sorted((_event(r) for r in rows), key=lambda e: e.id)

    def finish_attempt(
        self,
        event: OutboxEvent,
        owner: str,
        *,
        delivered: bool,
        error: str | None,
        next_attempt_at: float | None,
        now: float | None = None,
    ) -> str | None:
        """Record one attempt's outcome, if `owner` still holds the lease. Returns the new
        state (``delivered``, ``pending`` for a retry, ``failed``), None if the lease was lost."""
        now = time.time() if now is None else now
        state = "delivered" if delivered else ("pending" if next_attempt_at is not None else "failed")
        rows = self.execute(
            "UPDATE outbox_events SET state = ?, attempts = attempts + 1, next_attempt_at = ?, "
            "last_error = ?, delivered_at = ?, lease_owner = NULL, lease_until = NULL "
            "WHERE id = ? AND lease_owner = ? AND state = 'pending' RETURNING id",
            (
                state,
                next_attempt_at if next_attempt_at is not None else now,
                None if delivered else (error or "")[:500],
                now if delivered else None,
                event.id,
                owner,
            ),
            invalidate=False,
        )
        return state if rows else None

    def release_events(self, owner: str) -> None:
        """Give back leases at shutdown so another worker need not wait for them to expire."""
        self.execute(
            "UPDATE outbox_events SET lease_owner = NULL, lease_until = NULL "
            "WHERE lease_owner = ? AND state = 'pending'",
            (owner,),
            invalidate=False,
        )

    def list_events(
        self,
        customer_id: int,
        *,
        state: str | None = None,
        since: float | None = None,
        limit: int | None = 100,
    ) -> list[OutboxEvent]:
        where: list[str] = ["customer_id = ?"]
        params: list[Any] = [customer_id]
        if state is not None:
            where.append("state = ?")
            params.append(state)
        if since is not None:
            where.append("created_at >= ?")
            params.append(since)
        sql = f"SELECT {_EVENT_COLS} FROM outbox_events WHERE {' AND '.join(where)} ORDER BY id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_event(r) for r in self.execute(sql, params)]

    def get_event(self, event_id: str) -> OutboxEvent | None:
        rows = self.execute(f"SELECT {_EVENT_COLS} FROM outbox_events WHERE event_id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def replay_events(self, customer_id: int, since: float, *, now: float | None = None) -> int:
        """Send again every event since `since` that the webhook wants: delivered, failed and
        skipped ones become pending (same id: receivers that saw one drop it)."""
        webhook = self.get_webhook(customer_id)
        if webhook is None or not webhook.enabled:
            return 0
        now = time.time() if now is None else now
        count = 0
        with self.transaction(invalidate=False):
            for event in self.list_events(customer_id, since=since, limit=None):
                if event.state == "pending" or not webhook.wants(event.type):
                    continue
                self.execute(
                    "UPDATE outbox_events SET state = 'pending', pending_since = ?, "
                    "next_attempt_at = ?, attempts = 0, last_error = NULL, "
                    "delivered_at = NULL WHERE id = ?",
                    (now, now, event.id),
                    invalidate=False,
                )
                count += 1
        return count

    def count_events_by_state(self) -> dict[str, int]:
        return {
            state: n for state, n in self.execute("SELECT state, COUNT(*) FROM outbox_events GROUP BY state")
        }
