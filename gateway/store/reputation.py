"""Store methods for volume and reputation (mixed into SqlStore; tables of migration 4).

* ``audit_log``: every decision a person or the gateway takes about a customer (who, when,
  what, why, the state before and after). Append-only: this module offers no update or
  delete, and nothing else writes the table.
* ``customer_limits``: per-customer quota overrides (0 = the platform default), the probation
  dates and the circuit breaker's current warning. A customer without a row has the defaults
  and is not on probation (it was activated before probation existed).
* ``quota_counters``: units reserved per customer, period ('hour' | 'day') and period start,
  shared by every worker and node (see gateway/quota.py for how they are handed out).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.store.types import CachedRead

_LIMIT_COLS = ("per_hour", "per_day", "activated_at", "probation_until", "graduated_at", "breaker_warning")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    happened_at: float
    customer_id: int | None
    customer: str | None
    action: str
    actor: str
    reason: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def json_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.happened_at,
            "customer": self.customer,
            "action": self.action,
            "by": self.actor,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True)
class CustomerLimits:
    customer_id: int
    per_hour: int = 0  # 0: the platform default
    per_day: int = 0
    activated_at: float | None = None
    probation_until: float | None = None
    graduated_at: float | None = None
    breaker_warning: str | None = None


@dataclass(frozen=True)
class Reservation:
    granted: int
    used_hour: int  # after the grant
    used_day: int


class ReputationStoreMixin:
    execute: Callable[..., list[tuple[Any, ...]]]
    transaction: Any
    cached: CachedRead
    _cache: dict[Any, Any]

    # -- audit trail --------------------------------------------------------------------------
    def audit(
        self,
        customer: Any,
        action: str,
        actor: str,
        reason: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
        *,
        q: Callable[..., Any] | None = None,
        at: float | None = None,
    ) -> None:
        """Append one decision. `customer` is a Customer (or None for platform-wide ones);
        `q` writes inside the caller's transaction, so the change and its record commit
        together or not at all."""
        run = q or self.execute
        run(
            "INSERT INTO audit_log (happened_at, customer_id, customer, action, actor, reason, "
            "state_before, state_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                at or time.time(),
                getattr(customer, "id", None),
                getattr(customer, "name", None),
                action,
                actor,
                reason,
                json.dumps(before, sort_keys=True) if before is not None else None,
                json.dumps(after, sort_keys=True) if after is not None else None,
            ),
        )

    def list_audit(
        self, customer_id: int | None = None, since: float | None = None, limit: int | None = None
    ) -> list[AuditEntry]:
        sql = (
            "SELECT id, happened_at, customer_id, customer, action, actor, reason, "
            "state_before, state_after FROM audit_log WHERE 1 = 1"
        )
        params: list[Any] = []
        if customer_id is not None:
            sql += " AND customer_id = ?"
            params.append(customer_id)
        if since is not None:
            sql += " AND happened_at >= ?"
            params.append(since)
        sql += " ORDER BY happened_at, id"
        rows = self.execute(sql, params)
        if limit is not None:
            rows = rows[-limit:]
        return [
            AuditEntry(
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
                json.loads(r[7]) if r[7] else None,
                json.loads(r[8]) if r[8] else None,
            )
            for r in rows
        ]

    def change_status(
        self,
        customer: Any,
        status: str,
        reason: str | None,
        *,
        actor: str,
        action: str,
        q: Callable[..., Any] | None = None,
    ) -> None:
        """Set a customer's status and audit it in one transaction (the caller's, with `q`:
        the feedback intake decides inside its own)."""
        if q is None:
            with self.transaction() as q:
                self.change_status(customer, status, reason, actor=actor, action=action, q=q)
            return
        q(
            "UPDATE customers SET status = ?, status_reason = ?, updated_at = ? WHERE id = ?",
            (status, reason, time.time(), customer.id),
        )
        self.audit(
            customer,
            action,
            actor,
            reason,
            {"status": customer.status, "status_reason": customer.status_reason},
            {"status": status, "status_reason": reason},
            q=q,
        )
        self._cache.clear()

    def last_resumed(self, customer_id: int) -> float | None:
        """When support last let the customer send again (resume or activate)."""
        rows = self.execute(
            "SELECT MAX(happened_at) FROM audit_log WHERE customer_id = ? AND "
            "action IN ('resume', 'activate')",
            (customer_id,),
        )
        return rows[0][0] if rows and rows[0][0] is not None else None

    def set_breaker_warning(
        self,
        customer: Any,
        warning: str | None,
        reason: str | None,
        q: Callable[..., Any] | None = None,
        *,
        actor: str = "breaker",
    ) -> bool:
        """Record the breaker's current warning; audited when it changes. True if it did."""
        run = q or self.execute
        rows = run("SELECT breaker_warning FROM customer_limits WHERE customer_id = ?", (customer.id,))
        current = rows[0][0] if rows else None
        if current == warning:
            return False
        run(
            "INSERT INTO customer_limits (customer_id) VALUES (?) ON CONFLICT (customer_id) DO NOTHING",
            (customer.id,),
        )
        run("UPDATE customer_limits SET breaker_warning = ? WHERE customer_id = ?", (warning, customer.id))
        self.audit(
            customer,
            "warning",
            actor,
            reason,
            {"breaker_warning": current},
            {"breaker_warning": warning},
            q=run,
        )
        return True

    # -- limits, probation, breaker state -----------------------------------------------------
    def get_limits(self, customer_id: int) -> CustomerLimits:
        rows = self.execute(
            f"SELECT {', '.join(_LIMIT_COLS)} FROM customer_limits WHERE customer_id = ?", (customer_id,)
        )
        if not rows:
            return CustomerLimits(customer_id)
        return CustomerLimits(customer_id, *rows[0])

    def update_limits(
        self,
        customer: Any,
        *,
        actor: str,
        action: str,
        reason: str | None = None,
        audited: bool = True,
        **changes: Any,
    ) -> CustomerLimits:
        """Change some customer_limits columns (a row is made on first use) and audit the
        change with the values before and after."""
        unknown = set(changes) - set(_LIMIT_COLS)
        if unknown:
            raise ValueError(f"unknown limit columns: {sorted(unknown)}")
        before = self.get_limits(customer.id)
        with self.transaction() as q:
            q(
                "INSERT INTO customer_limits (customer_id) VALUES (?) ON CONFLICT (customer_id) DO NOTHING",
                (customer.id,),
            )
            assignments = ", ".join(f"{k} = ?" for k in changes)
            q(
                f"UPDATE customer_limits SET {assignments} WHERE customer_id = ?",
                (*changes.values(), customer.id),
            )
            if audited:
                self.audit(
                    customer,
                    action,
                    actor,
                    reason,
                    {k: getattr(before, k) for k in changes},
                    dict(changes),
                    q=q,
                )
        return self.get_limits(customer.id)

    def graduate(
        self, customer: Any, *, actor: str, reason: str | None = None, at: float | None = None
    ) -> bool:
        """End the customer's probation; False when it was not on probation (or another
        process graduated it first: only one of them records it)."""
        now = at or time.time()
        with self.transaction() as q:
            q(
                "INSERT INTO customer_limits (customer_id) VALUES (?) ON CONFLICT (customer_id) DO NOTHING",
                (customer.id,),
            )
            rows = q(
                "UPDATE customer_limits SET graduated_at = ? WHERE customer_id = ? AND "
                "graduated_at IS NULL AND activated_at IS NOT NULL RETURNING customer_id",
                (now, customer.id),
            )
            if rows:
                self.audit(
                    customer,
                    "graduate",
                    actor,
                    reason,
                    {"probation": True},
                    {"probation": False},
                    q=q,
                    at=now,
                )
        return bool(rows)

    def count_campaigns_sent(self, customer_id: int) -> int:
        rows = self.execute(
            "SELECT COUNT(DISTINCT campaign) FROM messages WHERE customer_id = ? AND "
            "result = 'accepted' AND campaign IS NOT NULL",
            (customer_id,),
        )
        return int(rows[0][0] or 0)

    def count_hard_bounces(self, customer_id: int, since: float) -> int:
        """Hard bounces of genuine mail IDs of this customer since `since`, one per mail ID."""
        rows = self.execute(
            "SELECT COUNT(DISTINCT mail_id) FROM feedback_events WHERE customer_id = ? AND "
            "kind = 'bounce' AND bounce_class = 'hard' AND mail_id_status = 'genuine' AND "
            "acted = 1 AND received_at >= ?",
            (customer_id, since),
        )
        return int(rows[0][0] or 0)

    def count_customers_by_status(self) -> dict[str, int]:
        return {
            r[0]: int(r[1]) for r in self.execute("SELECT status, COUNT(*) FROM customers GROUP BY status")
        }

    def count_customers_flagged(self) -> dict[str, int]:
        """Active customers on probation, and customers with a breaker warning."""
        rows = self.execute(
            "SELECT SUM(CASE WHEN l.activated_at IS NOT NULL AND l.graduated_at IS NULL "
            "THEN 1 ELSE 0 END), SUM(CASE WHEN l.breaker_warning IS NOT NULL THEN 1 ELSE 0 END) "
            "FROM customer_limits l JOIN customers c ON c.id = l.customer_id "
            "WHERE c.status = 'active'"
        )
        return {"probation": int(rows[0][0] or 0), "warning": int(rows[0][1] or 0)}

    # -- quota counters -----------------------------------------------------------------------
    def reserve_quota(
        self,
        customer_id: int,
        hour_start: int,
        hour_limit: int,
        day_start: int,
        day_limit: int,
        block_for: Callable[[int], int],
    ) -> Reservation:
        """Atomically take up to `block_for(remaining)` units from both the hour's and the
        day's counter, never more than either limit leaves. Rows are locked hour first, then
        day, in every caller, so two nodes cannot deadlock."""
        keys: Sequence[tuple[str, int]] = (("hour", hour_start), ("day", day_start))
        with self.transaction(invalidate=False) as q:
            for period, start in keys:
                # The first write takes SQLite's write lock; on PostgreSQL the UPDATE below
                # locks the row until COMMIT.
                q(
                    "INSERT INTO quota_counters (customer_id, period, period_start, used) "
                    "VALUES (?, ?, ?, 0) ON CONFLICT (customer_id, period, period_start) "
                    "DO NOTHING",
                    (customer_id, period, start),
                )
            used = []
            for period, start in keys:
                rows = q(
                    "UPDATE quota_counters SET used = used WHERE customer_id = ? AND "
                    "period = ? AND period_start = ? RETURNING used",
                    (customer_id, period, start),
                )
                used.append(int(rows[0][0]))
            remaining = min(hour_limit - used[0], day_limit - used[1])
            granted = max(0, min(remaining, block_for(remaining))) if remaining > 0 else 0
            if granted:
                for period, start in keys:
                    q(
                        "UPDATE quota_counters SET used = used + ? WHERE customer_id = ? AND "
                        "period = ? AND period_start = ?",
                        (granted, customer_id, period, start),
                    )
        return Reservation(granted, used[0] + granted, used[1] + granted)

    def release_quota(self, customer_id: int, hour_start: int, day_start: int, units: int) -> None:
        """Give back units a process reserved but did not use (on shutdown)."""
        if units <= 0:
            return
        with self.transaction(invalidate=False) as q:
            for period, start in (("hour", hour_start), ("day", day_start)):
                q(
                    "UPDATE quota_counters SET used = used - ? WHERE customer_id = ? AND "
                    "period = ? AND period_start = ? AND used >= ?",
                    (units, customer_id, period, start, units),
                )

    def add_recipient_counts(
        self, customer_id: int, day_start: int, refused: int, accepted: int
    ) -> tuple[int, int]:
        """Add a process's tallies of the day's recipients refused by the gateway's own list
        policies and accepted; returns the day's totals of all processes."""
        totals = []
        with self.transaction(invalidate=False) as q:
            for period, n in (("refused", refused), ("accepted", accepted)):
                rows = q(
                    "INSERT INTO quota_counters (customer_id, period, period_start, used) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id, period, period_start) "
                    "DO UPDATE SET used = quota_counters.used + excluded.used "
                    "RETURNING used",
                    (customer_id, period, day_start, n),
                )
                totals.append(int(rows[0][0]))
        return totals[0], totals[1]

    def quota_used(self, customer_id: int, hour_start: int, day_start: int) -> tuple[int, int]:
        rows = self.execute(
            "SELECT period, used FROM quota_counters WHERE customer_id = ? AND "
            "((period = 'hour' AND period_start = ?) OR (period = 'day' AND period_start = ?))",
            (customer_id, hour_start, day_start),
        )
        found = {r[0]: int(r[1]) for r in rows}
        return found.get("hour", 0), found.get("day", 0)
