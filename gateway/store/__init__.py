"""The store: `open_store(url)` picks the engine from the URL scheme."""

from __future__ import annotations

from gateway.store.base import (
    Campaign,
    Customer,
    Domain,
    MessageRecord,
    SqlStore,
    StoreError,
    StoreUnavailable,
)

Store = SqlStore

__all__ = [
    "Campaign",
    "Customer",
    "Domain",
    "MessageRecord",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open_store",
]


def open_store(url: str, *, migrate: bool = True, cache_ttl: float = 0.0) -> SqlStore:
    store: SqlStore
    if url.startswith("sqlite://"):
        from gateway.store.sqlite import SqliteStore

        store = SqliteStore(url, cache_ttl)
    elif url.startswith(("postgresql://", "postgres://")):
        from gateway.store.postgresql import PostgresStore

        store = PostgresStore(url, cache_ttl)
    else:
        raise StoreError(f"unsupported store url {url!r}: use sqlite:///PATH or postgresql://...")
    if migrate:
        store.migrate()
    return store
