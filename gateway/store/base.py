"""The store: one interface over SQLite (embedded default) and PostgreSQL (multi-node).

The SQL is written once with `?` placeholders; the PostgreSQL engine rewrites them. Each thread
gets its own connection, because policies and CLI commands call the store from worker threads.
Every engine error becomes `StoreUnavailable`, which the transports turn into a 4xx: a database
that is down must make clients retry, never lose or wrongly accept mail.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from gateway.store.authslots import AuthSlotStoreMixin
from gateway.store.consent import ConsentStoreMixin
from gateway.store.erasure import ErasureStoreMixin
from gateway.store.events import EventStoreMixin
from gateway.store.feedback import FeedbackStoreMixin
from gateway.store.migrations import MIGRATIONS, render
from gateway.store.reputation import ReputationStoreMixin
from gateway.store.types import (
    CUSTOMER_STATUSES,
    Campaign,
    Customer,
    Domain,
    MessageRecord,
    StoreError,
    StoreUnavailable,
)
from gateway.store.windows import WindowCounterStoreMixin

T = TypeVar("T")

_CUSTOMER_COLS = (
    "id, name, status, status_reason, password_hash, imprint, unsubscribe_prefix, "
    "managed_unsubscribe, created_at, updated_at"
)


def _customer(row: Sequence[Any]) -> Customer:
    return Customer(
        id=row[0],
        name=row[1],
        status=row[2],
        status_reason=row[3],
        password_hash=row[4],
        imprint=json.loads(row[5]) if row[5] else None,
        unsubscribe_prefix=row[6],
        managed_unsubscribe=bool(row[7]),
        created_at=row[8],
        updated_at=row[9],
    )


class SqlStore(
    FeedbackStoreMixin,
    ConsentStoreMixin,
    EventStoreMixin,
    ErasureStoreMixin,
    WindowCounterStoreMixin,
    AuthSlotStoreMixin,
    ReputationStoreMixin,
):
    dialect = "sqlite"
    # Whether a read may wait (network, a server under load): policies then read in a worker
    # thread. The embedded SQLite says False (see SqliteStore).
    reads_block = True
    # How a transaction starts. SQLite's plain BEGIN takes the write lock only at the first
    # write: a transaction that reads and then writes (a lease claim, a consent update) then
    # fails at once with "database is locked" when another process wrote in between, without
    # the busy wait. Every transaction here writes, so SQLite takes the lock at BEGIN.
    begin_statement = "BEGIN"
    # Exceptions of the driver that mean "database unavailable".
    driver_errors: tuple[type[BaseException], ...] = ()
    # Those of them that may mean the connection itself is dead (a server restart, a failover).
    connection_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, cache_ttl: float = 0.0) -> None:
        self.url = url
        self._local = threading.local()
        self._migrate_lock = threading.Lock()
        # Hot-path reads (per MAIL/RCPT) are cached for a few seconds. Any write through this
        # object clears the cache at once; other nodes' writes show after at most cache_ttl.
        self.cache_ttl = cache_ttl
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        # Store failures seen by any thread; a connection opened before the latest one is
        # presumed dead. (An increment lost to a race still changes the value.)
        self._failures = 0

    # -- engine hooks -------------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _sql(self, statement: str) -> str:
        return statement

    # -- plumbing -----------------------------------------------------------------------------
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._failures:
            # Another thread saw the store fail since this connection was opened: it most likely
            # died with the same server (restart, failover). Replace it now rather than answer
            # one more 4xx per thread that still holds such a connection.
            self._drop_conn()
            conn = None
        if conn is None:
            generation = self._failures
            try:
                conn = self._connect()
            except self.driver_errors as exc:
                self._failures += 1
                raise StoreUnavailable(f"cannot connect to store: {exc}") from exc
            self._local.conn = conn
            self._local.generation = generation
        return conn

    def _has_conn(self) -> bool:
        """Whether this thread would reuse a connection it opened earlier."""
        return getattr(self._local, "conn", None) is not None and self._local.generation == self._failures

    def _drop_conn(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass

    def _failed(self, exc: BaseException) -> StoreUnavailable:
        # The next call reconnects: a restarted database heals without restarting us. Counting
        # a lost connection tells the other threads to reconnect before their next use as well.
        self._drop_conn()
        if isinstance(exc, self.connection_errors):
            self._failures += 1
        return StoreUnavailable(f"store error: {exc}")

    @contextmanager
    def _cursor(self, first: str, params: Sequence[Any] = (), *, retry: bool = False) -> Iterator[Any]:
        """A cursor on this thread's connection that has run `first` already.

        `retry`: `first` is safe to run twice (a read, a BEGIN). When it fails on a connection
        this thread opened earlier, that connection may simply have died since (the server was
        restarted while it sat idle): `first` is tried once more on a new connection.
        """
        for attempt in (1, 2):
            reused = self._has_conn()
            conn = self._conn()
            try:
                cur = conn.cursor()
                try:
                    cur.execute(self._sql(first), tuple(params))
                except BaseException:
                    cur.close()
                    raise
                break
            except self.driver_errors as exc:
                failure = self._failed(exc)
                lost = isinstance(exc, self.connection_errors)
                if not (retry and reused and lost and attempt == 1):
                    raise failure from exc
        try:
            try:
                yield cur
            finally:
                cur.close()  # before a failure drops the connection under it
        except self.driver_errors as exc:
            raise self._failed(exc) from exc

    def cached(self, key: tuple[Any, ...], load: Callable[[], T]) -> T:
        if self.cache_ttl <= 0:
            return load()
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (now + self.cache_ttl, value)
        return value

    def execute(
        self, statement: str, params: Sequence[Any] = (), *, invalidate: bool = True
    ) -> list[tuple[Any, ...]]:
        """Run one statement. Writes clear the read cache unless the caller knows they touch
        nothing cached (the message ledger, written for every message)."""
        read = statement.lstrip()[:6].upper() == "SELECT"
        if invalidate and not read:
            self._cache.clear()
        # Inside a transaction a read is never re-run on a new connection: it would leave the
        # transaction it belongs to (which then fails at COMMIT, as it must).
        retry = read and not getattr(self._local, "in_transaction", False)
        with self._cursor(statement, params, retry=retry) as cur:
            if cur.description is None:
                return []
            return [tuple(row) for row in cur.fetchall()]

    @contextmanager
    def transaction(self, *, invalidate: bool = True) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
        """Several statements atomically: `with store.transaction() as q: q(sql, params)`.
        `invalidate=False` as for `execute`: the caller writes nothing that is cached."""
        if invalidate:
            self._cache.clear()
        if getattr(self._local, "in_transaction", False):
            # Already inside one on this thread (same connection): the outer one commits, so
            # a store method that is atomic on its own also joins a caller's transaction (an
            # event is written together with the change it reports).
            def joined(statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                return self.execute(statement, params, invalidate=invalidate)

            yield joined
            return
        with self._cursor(self.begin_statement, retry=True) as cur:
            self._local.in_transaction = True

            def q(statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
                cur.execute(self._sql(statement), tuple(params))
                return [tuple(r) for r in cur.fetchall()] if cur.description else []

            try:
                yield q
            except BaseException:
                self._local.in_transaction = False
                cur.execute("ROLLBACK")
                raise
            self._local.in_transaction = False
            cur.execute("COMMIT")

    def close(self) -> None:
        self._drop_conn()

    def migrate(self) -> int:
        """Bring the schema up to date; returns the schema version."""
        with self._migrate_lock:
            self.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            with self.transaction() as q:
                self._lock_for_migration(q)
                rows = q("SELECT version FROM schema_version")
                current = rows[0][0] if rows else 0
                for version, statements in enumerate(MIGRATIONS, start=1):
                    if version <= current:
                        continue
                    for statement in statements:
                        q(render(statement, self.dialect))
                if not rows:
                    q("INSERT INTO schema_version (version) VALUES (?)", (len(MIGRATIONS),))
                elif current < len(MIGRATIONS):
                    # Never lowered: during a rolling upgrade an older node starts against the
                    # newer (additive) schema, and must not make the next new node re-run
                    # migrations that are already in place.
                    q("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
            # Made here, at start, so the hot path's first suppression look-up only reads it.
            self._erasure_key()
            return len(MIGRATIONS)

    def _lock_for_migration(self, q: Callable[..., Any]) -> None:
        """Engines with several nodes serialise concurrent migrations here."""

    def ping(self) -> None:
        self.execute("SELECT 1")

    # -- customers ----------------------------------------------------------------------------
    def add_customer(self, name: str, status: str = "pending") -> Customer:
        if status not in CUSTOMER_STATUSES:
            raise StoreError(f"unknown status {status!r}")
        if self.get_customer(name) is not None:
            raise StoreError(f"customer {name!r} exists already")
        now = time.time()
        self.execute(
            "INSERT INTO customers (name, status, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (name, status, now, now),
        )
        customer = self.get_customer(name)
        assert customer is not None
        return customer

    def get_customer(self, name: str) -> Customer | None:
        rows = self.execute(f"SELECT {_CUSTOMER_COLS} FROM customers WHERE name = ?", (name,))
        return _customer(rows[0]) if rows else None

    def get_customer_by_id(self, customer_id: int) -> Customer | None:
        def load() -> Customer | None:
            rows = self.execute(f"SELECT {_CUSTOMER_COLS} FROM customers WHERE id = ?", (customer_id,))
            return _customer(rows[0]) if rows else None

        return self.cached(("customer", customer_id), load)

    def require_customer(self, name: str) -> Customer:
        customer = self.get_customer(name)
        if customer is None:
            raise StoreError(f"no customer named {name!r}")
        return customer

    def list_customers(self) -> list[Customer]:
        return [_customer(r) for r in self.execute(f"SELECT {_CUSTOMER_COLS} FROM customers ORDER BY name")]

    def _update_customer(self, name: str, assignments: str, params: Sequence[Any]) -> Customer:
        self.require_customer(name)
        self.execute(
            f"UPDATE customers SET {assignments}, updated_at = ? WHERE name = ?",
            (*params, time.time(), name),
        )
        return self.require_customer(name)

    def set_customer_status(self, name: str, status: str, reason: str | None = None) -> Customer:
        if status not in CUSTOMER_STATUSES:
            raise StoreError(f"unknown status {status!r}")
        return self._update_customer(name, "status = ?, status_reason = ?", (status, reason))

    def set_password_hash(self, name: str, password_hash: str) -> Customer:
        return self._update_customer(name, "password_hash = ?", (password_hash,))

    def set_imprint(self, name: str, imprint: dict[str, str]) -> Customer:
        return self._update_customer(name, "imprint = ?", (json.dumps(imprint, sort_keys=True),))

    def set_unsubscribe(self, name: str, prefix: str | None, managed: bool | None = None) -> Customer:
        customer = self.require_customer(name)
        managed_value = customer.managed_unsubscribe if managed is None else managed
        return self._update_customer(
            name, "unsubscribe_prefix = ?, managed_unsubscribe = ?", (prefix, int(managed_value))
        )

    # -- sending domains ----------------------------------------------------------------------
    def add_domain(self, customer_name: str, domain: str, token: str) -> Domain:
        customer = self.require_customer(customer_name)
        domain = domain.lower().rstrip(".")
        existing = self.get_domain(customer.id, domain)
        if existing is not None:
            return existing
        self.execute(
            "INSERT INTO domains (customer_id, domain, token, created_at) VALUES (?, ?, ?, ?)",
            (customer.id, domain, token, time.time()),
        )
        added = self.get_domain(customer.id, domain)
        assert added is not None
        return added

    def get_domain(self, customer_id: int, domain: str) -> Domain | None:
        rows = self.execute(
            "SELECT id, customer_id, domain, token, verified_at, verified_by FROM domains "
            "WHERE customer_id = ? AND domain = ?",
            (customer_id, domain.lower().rstrip(".")),
        )
        return Domain(*rows[0]) if rows else None

    def list_domains(self, customer_id: int | None = None) -> list[Domain]:
        sql = "SELECT id, customer_id, domain, token, verified_at, verified_by FROM domains"
        if customer_id is None:
            return [Domain(*r) for r in self.execute(sql + " ORDER BY domain")]
        return [
            Domain(*r) for r in self.execute(sql + " WHERE customer_id = ? ORDER BY domain", (customer_id,))
        ]

    def mark_domain_verified(self, customer_id: int, domain: str, by: str) -> None:
        self.execute(
            "UPDATE domains SET verified_at = ?, verified_by = ? WHERE customer_id = ? AND domain = ?",
            (time.time(), by, customer_id, domain.lower().rstrip(".")),
        )

    def verified_domains(self, customer_id: int) -> set[str]:
        def load() -> set[str]:
            rows = self.execute(
                "SELECT domain FROM domains WHERE customer_id = ? AND verified_at IS NOT NULL", (customer_id,)
            )
            return {r[0] for r in rows}

        return set(self.cached(("domains", customer_id), load))

    # -- campaigns ----------------------------------------------------------------------------
    def confirm_campaign(self, customer_name: str, campaign: str, by: str) -> Campaign:
        customer = self.require_customer(customer_name)
        self.execute(
            "INSERT INTO campaigns (customer_id, campaign, confirmed_by, confirmed_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id, campaign) DO UPDATE SET "
            "confirmed_by = excluded.confirmed_by, confirmed_at = excluded.confirmed_at",
            (customer.id, campaign, by, time.time()),
        )
        found = self.get_campaign(customer.id, campaign)
        assert found is not None
        return found

    def get_campaign(self, customer_id: int, campaign: str) -> Campaign | None:
        def load() -> Campaign | None:
            rows = self.execute(
                "SELECT id, customer_id, campaign, confirmed_by, confirmed_at FROM campaigns "
                "WHERE customer_id = ? AND campaign = ?",
                (customer_id, campaign),
            )
            return Campaign(*rows[0]) if rows else None

        return self.cached(("campaign", customer_id, campaign), load)

    def get_campaign_by_id(self, campaign_id: int) -> Campaign | None:
        rows = self.execute(
            "SELECT id, customer_id, campaign, confirmed_by, confirmed_at FROM campaigns WHERE id = ?",
            (campaign_id,),
        )
        return Campaign(*rows[0]) if rows else None

    def list_campaigns(self, customer_id: int) -> list[Campaign]:
        return [
            Campaign(*r)
            for r in self.execute(
                "SELECT id, customer_id, campaign, confirmed_by, confirmed_at FROM campaigns "
                "WHERE customer_id = ? ORDER BY confirmed_at",
                (customer_id,),
            )
        ]

    # -- message ledger -----------------------------------------------------------------------
    def record_message(self, record: MessageRecord) -> None:
        self.record_messages([record])

    def record_messages(self, records: Sequence[MessageRecord]) -> None:
        """Ledger rows, in one transaction (see gateway/ledger.py)."""
        with self.transaction(invalidate=False) as q:
            for record in records:
                q(
                    "INSERT INTO messages (mail_id, customer_id, campaign, mail_from, recipients, "
                    "created_at, result, reply, queue_id, verdicts) VALUES "
                    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (mail_id) DO UPDATE SET result = excluded.result, "
                    "reply = excluded.reply, queue_id = excluded.queue_id, "
                    "verdicts = excluded.verdicts, campaign = excluded.campaign, "
                    "recipients = excluded.recipients",
                    (
                        record.mail_id,
                        record.customer_id,
                        record.campaign,
                        record.mail_from,
                        json.dumps(record.recipients),
                        record.created_at,
                        record.result,
                        record.reply,
                        record.queue_id,
                        json.dumps(record.verdicts),
                    ),
                )

    def get_message(self, mail_id: str) -> MessageRecord | None:
        rows = self.execute(
            "SELECT mail_id, customer_id, campaign, mail_from, recipients, created_at, result, "
            "reply, queue_id, verdicts FROM messages WHERE mail_id = ?",
            (mail_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return MessageRecord(
            mail_id=r[0],
            customer_id=r[1],
            campaign=r[2],
            mail_from=r[3],
            recipients=json.loads(r[4]),
            created_at=r[5],
            result=r[6],
            reply=r[7],
            queue_id=r[8],
            verdicts=json.loads(r[9]) if r[9] else [],
        )
