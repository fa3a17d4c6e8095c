"""Windowed counters shared by every worker process and every node (mixed into SqlStore).

A limit like "30 reports per hour per client address" must hold for the whole service, not
per worker: a counter in process memory lets N workers (or nodes) accept N times the limit.
``window_hit`` is the one primitive for such limits: it counts a hit for (scope, key) and
answers, atomically, whether the hit still fits the limit of the last `window` seconds.

Table ``window_counters`` (migration 4): a window is counted in ``BUCKETS`` buckets of
``window / BUCKETS`` seconds; one row per (scope, key, bucket width, bucket) holds the hits of
that bucket. A hit, in one transaction:

1. upserts the key's lock row (bucket ``-1``): every hit of one key waits here for the one
   before it to commit, on SQLite (whose writers are serialised anyway) and on PostgreSQL
   (row lock), so two workers or nodes never both take the last place;
2. adds 1 to the current bucket and reads the sum of the buckets inside the window;
3. takes the hit back when the sum is over the limit: refused hits do not use up the budget.

Precision: the window slides by whole buckets (a spent budget comes back up to one bucket,
1/60 of the window, early). Each node uses its own clock for the bucket number; skew between
nodes shifts hits by at most the skew, and a hit that a node ahead of us put in a later bucket
counts for us too. Rows expire one window after their bucket ends and are
pruned by whichever process counts next, at most once a minute per process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUCKETS = 60
PRUNE_EVERY = 60.0
_LOCK_ROW = -1


@dataclass(frozen=True)
class WindowHit:
    allowed: bool
    # Hits in the window after this one: counting it when allowed, without it when refused.
    count: int


class WindowCounterStoreMixin:
    """Uses self.execute / self.transaction of SqlStore. Counters are never cached, so none of
    these writes clears the hot-path read cache."""

    execute: Callable[..., list[tuple[Any, ...]]]
    transaction: Callable[..., Any]

    def window_hit(
        self, scope: str, key: str, *, window: float, limit: int | None = None, now: float | None = None
    ) -> WindowHit:
        """Count a hit of `key` in `scope` (e.g. "http-report", a client network) and say
        whether it fits `limit` hits per `window` seconds (no limit: always allowed)."""
        if window <= 0:
            raise ValueError("window must be positive")
        now = time.time() if now is None else now
        width = window / BUCKETS
        bucket = int(now // width)
        expires = (bucket + 1) * width + window
        where = "scope = ? AND key = ? AND width = ?"
        with self.transaction(invalidate=False) as q:
            for row in (_LOCK_ROW, bucket):
                q(
                    "INSERT INTO window_counters (scope, key, width, bucket, hits, expires_at) "
                    "VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT (scope, key, width, bucket) DO UPDATE "
                    "SET hits = window_counters.hits + 1, expires_at = excluded.expires_at",
                    (scope, key, width, row, expires),
                )
            # No upper bound: hits a node with a clock a little ahead put in a later bucket
            # count too.
            rows = q(
                f"SELECT COALESCE(SUM(hits), 0) FROM window_counters WHERE {where} AND bucket > ?",
                (scope, key, width, bucket - BUCKETS),
            )
            count = int(rows[0][0])
            allowed = limit is None or count <= limit
            if not allowed:
                q(
                    f"UPDATE window_counters SET hits = hits - 1 WHERE {where} AND bucket = ?",
                    (scope, key, width, bucket),
                )
                count -= 1
        self._prune_now_and_then(now)
        return WindowHit(allowed, count)

    def window_count(self, scope: str, key: str, *, window: float, now: float | None = None) -> int:
        """The hits of `key` in the window, without counting one."""
        now = time.time() if now is None else now
        width = window / BUCKETS
        bucket = int(now // width)
        rows = self.execute(
            "SELECT COALESCE(SUM(hits), 0) FROM window_counters WHERE scope = ? AND key = ? "
            "AND width = ? AND bucket > ?",
            (scope, key, width, bucket - BUCKETS),
        )
        return int(rows[0][0])

    def prune_window_counters(self, now: float | None = None) -> int:
        """Delete the rows no window can reach any more; returns how many."""
        now = time.time() if now is None else now
        rows = self.execute(
            "DELETE FROM window_counters WHERE expires_at < ? RETURNING 1", (now,), invalidate=False
        )
        return len(rows)

    def _prune_now_and_then(self, now: float) -> None:
        if now - getattr(self, "_window_pruned_at", float("-inf")) < PRUNE_EVERY:
            return
        self._window_pruned_at = now
        self.prune_window_counters(now)
