"""Store methods for bounces, complaints and suppressions (mixed into SqlStore).

Tables (migration 2):

* ``feedback_events``: one row per returned mail (bounce, complaint, unsubscribe, auto-reply,
  delay, other) with the parse, the mail ID and its verification status, what intake did, and
  the raw message (cut at ``feedback_intake.max_raw_bytes``).
* ``suppressions``: one row per (scope, address); scope ``customer_id`` 0 is global (hard
  bounces, repeated soft bounces), a customer's id is that customer only (complaints,
  unsubscribes). Each carries reason, time and the mail ID that caused it.
* ``suppression_history``: every add and remove, with who did it (audit; a removal also resets
  the soft-bounce count of the address).

Addresses are stored normalised (stripped of ``<>``, lower-cased), the way the mail ID hashes
them. The soft-bounce rule and the Final-Recipient fallback read the message ledger by recipient
through the ``messages_recipients`` index on ``lower(recipients)``: the ledger's JSON list of a
one-recipient message (``limits.max_recipients: 1``, the default) is ``["address"]``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.store.types import GLOBAL, CachedRead, StoreError, normalise_address

SUPPRESSION_REASONS = ("hard-bounce", "soft-bounce", "complaint", "unsubscribe", "manual")
# Reasons that take over an existing entry of the same scope with one of the weaker reasons
# (otherwise the first entry stays as it is).
_REPLACES = {"complaint": ("unsubscribe",)}


def ledger_key(address: str) -> str:
    """The ledger's `recipients` text of a one-recipient message to `address`, lower-cased."""
    return json.dumps([normalise_address(address)]).lower()


@dataclass(frozen=True)
class Suppression:
    id: int
    customer_id: int  # 0: global
    address: str
    reason: str
    detail: str | None
    mail_id: str | None
    feedback_id: int | None
    created_at: float
    created_by: str | None

    @property
    def is_global(self) -> bool:
        return self.customer_id == GLOBAL


@dataclass(frozen=True)
class SuppressionChange:
    id: int
    customer_id: int
    address: str
    action: str  # added | removed
    reason: str | None
    detail: str | None
    mail_id: str | None
    happened_at: float
    actor: str | None


@dataclass
class FeedbackEvent:
    received_at: float
    source: str  # smtp | ingest | abuse-report
    kind: str  # bounce | complaint | unsubscribe | auto-reply | delay | other
    bounce_class: str = "none"
    status: str | None = None
    reason: str | None = None
    feedback_type: str | None = None
    recipients: list[str] = field(default_factory=list)
    envelope_from: str | None = None
    envelope_to: list[str] = field(default_factory=list)
    mail_id: str | None = None
    mail_id_status: str = "none"  # genuine | altered | forged | malformed | none
    attribution: str | None = None  # verp | header | text
    customer_id: int | None = None
    campaign_id: int | None = None
    sent_at: float | None = None  # when the original was relayed (ledger, else the mail ID)
    recipient: str | None = None  # the recipient intake acted on
    acted: bool = False
    action: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    raw_size: int = 0
    raw_truncated: bool = False
    id: int | None = None


_SUPPRESSION_COLS = "id, customer_id, address, reason, detail, mail_id, feedback_id, created_at, created_by"
_EVENT_COLS = (
    "id, received_at, source, envelope_from, envelope_to, kind, bounce_class, status, "
    "reason, feedback_type, recipients, mail_id, mail_id_status, attribution, "
    "customer_id, campaign_id, sent_at, recipient, acted, action, details, raw_size, "
    "raw_truncated"
)


def _source(by: str | None) -> str | None:
    """What made a change, for the customer's event: the kind of actor, never an OS user."""
    if by is None:
        return None
    kind = by.split(":", 1)[0]
    return by if kind in ("feedback", "http", "api") else "support"


def _suppression(row: Sequence[Any]) -> Suppression:
    return Suppression(*row)


def _event(row: Sequence[Any]) -> FeedbackEvent:
    return FeedbackEvent(
        id=row[0],
        received_at=row[1],
        source=row[2],
        envelope_from=row[3],
        envelope_to=json.loads(row[4]) if row[4] else [],
        kind=row[5],
        bounce_class=row[6],
        status=row[7],
        reason=row[8],
        feedback_type=row[9],
        recipients=json.loads(row[10]),
        mail_id=row[11],
        mail_id_status=row[12],
        attribution=row[13],
        customer_id=row[14],
        campaign_id=row[15],
        sent_at=row[16],
        recipient=row[17],
        acted=bool(row[18]),
        action=row[19],
        details=json.loads(row[20]) if row[20] else {},
        raw_size=row[21],
        raw_truncated=bool(row[22]),
    )


class FeedbackStoreMixin:
    """Uses self.execute / self.transaction of SqlStore."""

    execute: Callable[..., list[tuple[Any, ...]]]
    cached: CachedRead
    transaction: Callable[..., Any]
    emit_event: Callable[..., str | None]
    address_hash: Callable[[str], str]

    # -- suppressions -------------------------------------------------------------------------
    def add_suppression(
        self,
        customer_id: int,
        address: str,
        reason: str,
        *,
        detail: str | None = None,
        mail_id: str | None = None,
        feedback_id: int | None = None,
        by: str | None = None,
        at: float | None = None,
        notify: int | None = None,
    ) -> tuple[Suppression, bool]:
        """Suppress `address` for `customer_id` (0: everyone). Returns (row, newly added); an
        existing entry of the same scope is kept as it is (its reason and time stay the
        first ones), except that a complaint takes over an unsubscribe. A new entry is a
        ``suppression.added`` event for the customer it concerns (`notify` for a global entry:
        the customer whose message caused it), in the same transaction."""

        if reason not in SUPPRESSION_REASONS:
            raise StoreError(
                f"unknown suppression reason {reason!r} (one of {', '.join(SUPPRESSION_REASONS)})"
            )
        address = normalise_address(address)
        if "@" not in address or address.startswith("@") or address.endswith("@"):
            raise StoreError(f"not an email address: {address!r}")
        now = time.time() if at is None else at
        with self.transaction():
            return self._add_suppression(
                customer_id, address, reason, detail, mail_id, feedback_id, by, now, notify
            )

    def _add_suppression(
        self,
        customer_id: int,
        address: str,
        reason: str,
        detail: str | None,
        mail_id: str | None,
        feedback_id: int | None,
        by: str | None,
        now: float,
        notify: int | None,
    ) -> tuple[Suppression, bool]:
        inserted = self.execute(
            "INSERT INTO suppressions (customer_id, address, reason, detail, mail_id, feedback_id, "
            "created_at, created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (customer_id, address) DO NOTHING RETURNING id",
            (customer_id, address, reason, detail, mail_id, feedback_id, now, by),
        )
        if not inserted and reason in _REPLACES:
            # A complaint after an unsubscribe must not vanish behind it: the abuse desk reads
            # the reason, and only an unsubscribe can ever be lifted by a new confirmation.
            weaker = _REPLACES[reason]
            inserted = self.execute(
                "UPDATE suppressions SET reason = ?, detail = ?, mail_id = ?, feedback_id = ?, "
                "created_at = ?, created_by = ? WHERE customer_id = ? AND address = ? AND "
                f"reason IN ({', '.join('?' for _ in weaker)}) RETURNING id",
                (reason, detail, mail_id, feedback_id, now, by, customer_id, address, *weaker),
            )
        if inserted:
            self._suppression_change(customer_id, address, "added", reason, detail, mail_id, now, by)
            self.emit_event(
                customer_id or notify,
                "suppression.added",
                {
                    "scope": "global" if customer_id == GLOBAL else "customer",
                    "reason": reason,
                    "mail_id": mail_id,
                    "detail": detail,
                    "source": _source(by),
                },
                recipient=address,
                at=now,
            )
        found = self.get_suppression(customer_id, address)
        assert found is not None
        return found, bool(inserted)

    def _suppression_change(
        self,
        customer_id: int,
        address: str,
        action: str,
        reason: str | None,
        detail: str | None,
        mail_id: str | None,
        at: float,
        by: str | None,
    ) -> None:
        self.execute(
            "INSERT INTO suppression_history (customer_id, address, action, reason, detail, "
            "mail_id, happened_at, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (customer_id, address, action, reason, detail, mail_id, at, by),
        )

    def remove_suppression(
        self, customer_id: int | None, address: str, *, by: str | None = None, at: float | None = None
    ) -> list[Suppression]:
        """Remove the entry of one scope (customer_id; 0 global), or of every scope (None).
        Returns what was removed."""
        address = normalise_address(address)
        if customer_id is None:
            found = self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE address = ?", (address,)
            )
        else:
            found = self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE address = ? AND customer_id = ?",
                (address, customer_id),
            )
        removed = [_suppression(r) for r in found]
        now = time.time() if at is None else at
        with self.transaction():
            for entry in removed:
                self.execute("DELETE FROM suppressions WHERE id = ?", (entry.id,))
                self._suppression_change(
                    entry.customer_id, address, "removed", entry.reason, entry.detail, entry.mail_id, now, by
                )
                self.emit_event(
                    entry.customer_id,
                    "suppression.lifted",
                    {"scope": "customer", "reason": entry.reason, "source": _source(by)},
                    recipient=address,
                    at=now,
                )
        return removed

    def get_suppression(self, customer_id: int, address: str) -> Suppression | None:
        rows = self.execute(
            f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE customer_id = ? AND address = ?",
            (customer_id, normalise_address(address)),
        )
        return _suppression(rows[0]) if rows else None

    def find_suppression(self, customer_id: int | None, address: str) -> Suppression | None:
        """What refuses `address` for this customer: a global entry first, else the customer's.
        Read through the hot-path cache (DESIGN §10): this process's own writes clear it at
        once, other processes' show after at most `store.cache_ttl`."""
        address = normalise_address(address)
        scope = customer_id if customer_id is not None else GLOBAL

        def load() -> Suppression | None:
            # An erased address is kept only as its keyed hash: it must still be refused.
            rows = self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE address IN (?, ?) AND "
                "customer_id IN (?, ?) ORDER BY customer_id, created_at LIMIT 1",
                (address, self.address_hash(address), GLOBAL, scope),
            )
            return _suppression(rows[0]) if rows else None

        return self.cached(("suppression", scope, address), load)

    def list_suppressions(
        self,
        *,
        customer_id: int | None = None,
        address: str | None = None,
        reason: str | None = None,
        limit: int | None = None,
    ) -> list[Suppression]:
        """customer_id None: every scope; 0: global only; else that customer's only."""
        where: list[str] = []
        params: list[Any] = []
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        if address is not None:
            where.append("address = ?")
            params.append(normalise_address(address))
        if reason is not None:
            where.append("reason = ?")
            params.append(reason)
        sql = f"SELECT {_SUPPRESSION_COLS} FROM suppressions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_suppression(r) for r in self.execute(sql, params)]

    def suppressions_for_mail_id(self, mail_id: str) -> list[Suppression]:
        return [
            _suppression(r)
            for r in self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE mail_id = ? ORDER BY created_at",
                (mail_id,),
            )
        ]

    def suppression_history(self, address: str) -> list[SuppressionChange]:
        return [
            SuppressionChange(*r)
            for r in self.execute(
                "SELECT id, customer_id, address, action, reason, detail, mail_id, happened_at, actor "
                "FROM suppression_history WHERE address = ? ORDER BY happened_at, id",
                (normalise_address(address),),
            )
        ]

    def last_suppression_removal(self, customer_id: int, address: str) -> float | None:
        rows = self.execute(
            "SELECT MAX(happened_at) FROM suppression_history WHERE address = ? AND "
            "customer_id = ? AND action = 'removed'",
            (normalise_address(address), customer_id),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    # -- feedback events ----------------------------------------------------------------------
    def add_feedback_event(self, event: FeedbackEvent, raw: bytes | None) -> int:
        rows = self.execute(
            "INSERT INTO feedback_events (received_at, source, envelope_from, envelope_to, kind, "
            "bounce_class, status, reason, feedback_type, recipients, mail_id, mail_id_status, "
            "attribution, customer_id, campaign_id, sent_at, recipient, acted, action, details, "
            "raw, raw_size, raw_truncated) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                event.received_at,
                event.source,
                event.envelope_from,
                json.dumps(event.envelope_to),
                event.kind,
                event.bounce_class,
                event.status,
                event.reason,
                event.feedback_type,
                json.dumps(event.recipients),
                event.mail_id,
                event.mail_id_status,
                event.attribution,
                event.customer_id,
                event.campaign_id,
                event.sent_at,
                event.recipient,
                int(event.acted),
                event.action,
                json.dumps(event.details, sort_keys=True, default=str),
                raw,
                event.raw_size,
                int(event.raw_truncated),
            ),
        )
        event.id = rows[0][0]
        return event.id

    def update_feedback_event(self, event: FeedbackEvent) -> None:
        """Write back what intake decided (recipient, acted, action, details)."""
        self.execute(
            "UPDATE feedback_events SET recipient = ?, acted = ?, action = ?, details = ?, "
            "customer_id = ?, campaign_id = ?, sent_at = ? WHERE id = ?",
            (
                event.recipient,
                int(event.acted),
                event.action,
                json.dumps(event.details, sort_keys=True, default=str),
                event.customer_id,
                event.campaign_id,
                event.sent_at,
                event.id,
            ),
        )

    def get_feedback_event(self, event_id: int) -> FeedbackEvent | None:
        rows = self.execute(f"SELECT {_EVENT_COLS} FROM feedback_events WHERE id = ?", (event_id,))
        return _event(rows[0]) if rows else None

    def get_feedback_raw(self, event_id: int) -> bytes | None:
        rows = self.execute("SELECT raw FROM feedback_events WHERE id = ?", (event_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    def feedback_for_mail_id(self, mail_id: str) -> list[FeedbackEvent]:
        return [
            _event(r)
            for r in self.execute(
                f"SELECT {_EVENT_COLS} FROM feedback_events WHERE mail_id = ? ORDER BY received_at, id",
                (mail_id,),
            )
        ]

    def list_feedback_events(
        self, *, customer_id: int | None = None, kind: str | None = None, limit: int = 50
    ) -> list[FeedbackEvent]:
        where: list[str] = []
        params: list[Any] = []
        if customer_id is not None:
            where.append("customer_id = ?")
            params.append(customer_id)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"SELECT {_EVENT_COLS} FROM feedback_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY received_at DESC, id DESC LIMIT {int(limit)}"
        return [_event(r) for r in self.execute(sql, params)]

    def complaint_already_counted(self, mail_id: str, exclude_event: int | None = None) -> bool:
        rows = self.execute(
            "SELECT COUNT(*) FROM feedback_events WHERE mail_id = ? AND kind = 'complaint' "
            "AND acted = 1 AND id <> ?",
            (mail_id, exclude_event if exclude_event else -1),
        )
        return bool(rows[0][0])

    def count_complaints(self, customer_id: int, since: float) -> int:
        """Complaints acted on for this customer since `since`, one per mail ID."""
        rows = self.execute(
            "SELECT COUNT(DISTINCT mail_id) FROM feedback_events WHERE customer_id = ? AND "
            "kind = 'complaint' AND acted = 1 AND received_at >= ?",
            (customer_id, since),
        )
        return int(rows[0][0] or 0)

    def count_soft_bounces(self, address: str, since: float, sent_after: float | None) -> int:
        """Soft bounces of `address` received since `since` for mails relayed after
        `sent_after` (the last delivery that did not bounce), one per mail ID."""
        rows = self.execute(
            "SELECT COUNT(DISTINCT mail_id) FROM feedback_events WHERE recipient = ? AND "
            "kind = 'bounce' AND bounce_class = 'soft' AND acted = 1 AND received_at >= ? AND "
            "sent_at > ?",
            (normalise_address(address), since, sent_after or 0.0),
        )
        return int(rows[0][0] or 0)

    # -- the message ledger, read by recipient -------------------------------------------------
    def count_accepted_messages(self, customer_id: int, since: float) -> int:
        rows = self.execute(
            "SELECT COUNT(*) FROM messages WHERE customer_id = ? AND created_at >= ? AND result = 'accepted'",
            (customer_id, since),
        )
        return int(rows[0][0] or 0)

    def last_message_to(self, address: str, since: float) -> tuple[str, int | None, float] | None:
        """(mail_id, customer_id, created_at) of the newest relayed message to `address`."""
        rows = self.execute(
            "SELECT mail_id, customer_id, created_at FROM messages WHERE lower(recipients) = ? "
            "AND result = 'accepted' AND created_at >= ? ORDER BY created_at DESC LIMIT 1",
            (ledger_key(address), since),
        )
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    def last_good_delivery(self, address: str) -> float | None:
        """When the newest relayed message to `address` that has not bounced was relayed: a
        successful delivery, which resets the soft-bounce count."""
        rows = self.execute(
            "SELECT MAX(m.created_at) FROM messages m WHERE lower(m.recipients) = ? AND "
            "m.result = 'accepted' AND NOT EXISTS (SELECT 1 FROM feedback_events f WHERE "
            "f.mail_id = m.mail_id AND f.kind = 'bounce')",
            (ledger_key(address),),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    # -- the customer's view (suppression API) ------------------------------------------------
    def suppressions_affecting(self, customer_id: int, address: str) -> list[Suppression]:
        """The entries that refuse `address` for this customer: its own and the global one."""
        return [
            _suppression(r)
            for r in self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE address IN (?, ?) AND "
                "customer_id IN (?, ?) ORDER BY customer_id, id",
                (normalise_address(address), self.address_hash(address), GLOBAL, customer_id),
            )
        ]

    def customer_suppressions_page(self, customer_id: int, after_id: int, limit: int) -> list[Suppression]:
        """The customer's own entries, and the global ones its own messages caused (its hard
        bounces), by id: never another customer's entries or the rest of the global list."""
        return [
            _suppression(r)
            for r in self.execute(
                f"SELECT {_SUPPRESSION_COLS} FROM suppressions WHERE id > ? AND (customer_id = ? OR "
                "(customer_id = ? AND mail_id IN (SELECT mail_id FROM messages WHERE "
                f"customer_id = ?))) ORDER BY id LIMIT {int(limit)}",
                (after_id, customer_id, GLOBAL, customer_id),
            )
        ]
