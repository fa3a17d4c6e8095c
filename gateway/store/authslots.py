"""Store methods for the failed-AUTH slow-down (mixed into SqlStore; policy in gateway/authguard.py).

Table (migration 4): ``auth_slots`` holds, per key (a client address or a login name), the
earliest time the next failed AUTH may be answered. It lives in the store, not in memory, so
that the gateway's worker processes (one SQLite file) and its nodes (one PostgreSQL) count the
same failures. Every change is one statement, atomic on both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class AuthSlotStoreMixin:
    execute: Any  # provided by SqlStore

    def take_auth_slot(self, key: str, now: float, interval: float) -> float:
        """Reserve the next answer slot for a failure of `key`: returns the slot (>= now) and
        pushes the key's next slot to one `interval` after it. Concurrent callers, in any
        process, get slots at least `interval` apart."""
        rows = self.execute(
            "INSERT INTO auth_slots (key, next_at) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
            "next_at = CASE WHEN auth_slots.next_at > ? THEN auth_slots.next_at ELSE ? END + ? "
            "RETURNING next_at",
            (key, now + interval, now, now, interval),
            invalidate=False,
        )
        return float(rows[0][0]) - interval

    def auth_next_slots(self, keys: Sequence[str]) -> dict[str, float]:
        """The next answer slot of each of `keys` that has one (the others: at once)."""
        marks = ", ".join("?" for _ in keys)
        rows = self.execute(f"SELECT key, next_at FROM auth_slots WHERE key IN ({marks})", tuple(keys))
        return {key: float(next_at) for key, next_at in rows}

    def clear_auth_slots(self, key: str) -> None:
        self.execute("DELETE FROM auth_slots WHERE key = ?", (key,), invalidate=False)

    def expire_auth_slots(self, before: float) -> None:
        """Forget keys whose next slot is past: such a row means the same as no row."""
        self.execute("DELETE FROM auth_slots WHERE next_at < ?", (before,), invalidate=False)
