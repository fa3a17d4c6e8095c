"""SQLite engine: the embedded default, a single file, zero setup."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from gateway.store.base import SqlStore


class SqliteStore(SqlStore):
    dialect = "sqlite"
    # A local file in WAL mode: a read never waits for a writer (not even another process's),
    # so the policies' few indexed reads run on the event loop instead of a thread hop.
    reads_block = False
    driver_errors = (sqlite3.Error,)
    begin_statement = "BEGIN IMMEDIATE"  # see SqlStore.begin_statement

    def __init__(self, url: str, cache_ttl: float = 0.0) -> None:
        super().__init__(url, cache_ttl)
        self.path = Path(url.removeprefix("sqlite:///")) if url != "sqlite://" else None

    def _connect(self) -> Any:
        if self.path is None:
            target = ":memory:"
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            target = str(self.path)
        # Autocommit (isolation_level=None); `transaction()` issues BEGIN/COMMIT itself.
        conn = sqlite3.connect(target, isolation_level=None, timeout=10.0, check_same_thread=False)
        # WAL lets the gateway's workers read while the CLI or the feedback listener writes.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn
