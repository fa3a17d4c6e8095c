"""PostgreSQL engine: the shared store when several gateway nodes run."""

from __future__ import annotations

from typing import Any

import psycopg

from gateway.store.base import SqlStore


class PostgresStore(SqlStore):
    dialect = "postgresql"
    driver_errors = (psycopg.Error,)
    # A server that went away (AdminShutdown is one); not a refused or failed statement.
    connection_errors = (psycopg.OperationalError, psycopg.InterfaceError)

    def _connect(self) -> Any:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=5)

    def _sql(self, statement: str) -> str:
        # Our SQL never contains a literal '?' or '%', so a plain rewrite is safe.
        return statement.replace("?", "%s")

    def _lock_for_migration(self, q: Any) -> None:
        # Nodes starting together must not run the same migration twice.
        q("LOCK TABLE schema_version IN EXCLUSIVE MODE")
