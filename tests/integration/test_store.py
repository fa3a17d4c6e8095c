"""The store interface on both engines: SQLite (embedded) and a real PostgreSQL server."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.store import MessageRecord, StoreError, StoreUnavailable, open_store
from gateway.store.passwords import hash_password, verify_password


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def test_customers_lifecycle(store):
    added = store.add_customer("acme")
    assert added.status == "pending" and added.id > 0
    with pytest.raises(StoreError, match="exists already"):
        store.add_customer("acme")
    store.set_password_hash("acme", hash_password("a long enough password"))
    assert verify_password("a long enough password", store.get_customer("acme").password_hash)
    assert not verify_password("wrong", store.get_customer("acme").password_hash)
    assert store.set_customer_status("acme", "active").status == "active"
    suspended = store.set_customer_status("acme", "suspended", "complaint rate")
    assert (suspended.status, suspended.status_reason) == ("suspended", "complaint rate")
    with pytest.raises(StoreError):
        store.set_customer_status("acme", "deleted")
    with pytest.raises(StoreError, match="no customer"):
        store.set_customer_status("ghost", "active")
    store.set_imprint("acme", {"company": "Shop GmbH", "city": "Köln"})
    assert store.get_customer_by_id(added.id).imprint == {"company": "Shop GmbH", "city": "Köln"}
    assert [c.name for c in store.list_customers()] == ["acme"]


def test_domains_and_campaigns(store):
    store.add_customer("acme")
    domain = store.add_domain("acme", "Shop.Example.", "tok")
    assert domain.domain == "shop.example" and domain.verified_at is None
    assert store.add_domain("acme", "shop.example", "other").token == "tok"  # idempotent
    assert store.verified_domains(domain.customer_id) == set()
    store.mark_domain_verified(domain.customer_id, "shop.example", by="dns")
    assert store.verified_domains(domain.customer_id) == {"shop.example"}
    first = store.confirm_campaign("acme", "autumn", by="alice")
    again = store.confirm_campaign("acme", "autumn", by="bob")
    assert first.id == again.id and again.confirmed_by == "bob"
    assert store.get_campaign(domain.customer_id, "missing") is None
    assert store.get_campaign_by_id(first.id).campaign == "autumn"


def test_message_ledger_roundtrip(store):
    store.add_customer("acme")
    record = MessageRecord(
        "abc",
        1,
        "autumn",
        "news@shop.example",
        ["anna@example.org"],
        time.time(),
        "accepted",
        "250 2.0.0 Ok",
        "Q1",
        [{"policy": "imprint", "action": "continue"}],
    )
    store.record_message(record)
    store.record_message(
        MessageRecord(
            "abc",
            1,
            "autumn",
            "news@shop.example",
            ["anna@example.org"],
            time.time(),
            "rejected",
            "550 5.7.1 no",
            None,
            [],
        )
    )
    got = store.get_message("abc")
    assert got.result == "rejected" and got.recipients == ["anna@example.org"]


def test_migrations_are_idempotent_and_safe_concurrently(store):
    errors: list[Exception] = []

    def migrate() -> None:
        try:
            store.migrate()
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.execute("SELECT version FROM schema_version") == [(store.migrate(),)]


def test_an_older_node_never_lowers_the_schema_version(store, monkeypatch):
    """Rolling upgrade: a node with fewer migrations starts against the newer schema; the
    next new node must not re-run migrations that are in place ("table exists")."""
    import gateway.store.base as base

    newest = store.migrate()
    monkeypatch.setattr(base, "MIGRATIONS", base.MIGRATIONS[:-1])
    store.migrate()  # the older node
    monkeypatch.undo()
    assert store.execute("SELECT version FROM schema_version") == [(newest,)]
    assert open_store(store.url).migrate() == newest


def test_second_store_object_sees_the_same_data(store):
    other = open_store(store.url)
    store.add_customer("acme")
    assert other.get_customer("acme") is not None


def test_postgres_down_raises_store_unavailable_then_recovers(postgres_server, postgres_url):
    if isinstance(postgres_server, str):
        pytest.skip("an external PostgreSQL (GATEWAY_TEST_POSTGRES_URL) is not ours to stop")
    store = open_store(postgres_url)
    store.add_customer("acme")
    postgres_server.stop_server()
    try:
        with pytest.raises(StoreUnavailable):
            store.get_customer("acme")
    finally:
        postgres_server.restart()
    deadline = time.monotonic() + 20
    while True:
        try:
            assert store.get_customer("acme") is not None
            break
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_connections_that_died_with_a_restarted_server_are_replaced_not_reported(
    postgres_server, postgres_url
):
    """Each thread keeps its connection. A server restarted while they sat idle must not cost
    one StoreUnavailable (a 4xx to a client) per thread: a read or a BEGIN that finds its
    connection dead runs again on a new one, and the other threads replace theirs before use."""
    if isinstance(postgres_server, str):
        pytest.skip("an external PostgreSQL (GATEWAY_TEST_POSTGRES_URL) is not ours to stop")
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(postgres_url)
    store.add_customer("acme")
    threads = [ThreadPoolExecutor(max_workers=1) for _ in range(3)]  # one thread each
    try:
        for thread in threads:  # each opens its own connection
            assert thread.submit(store.get_customer, "acme").result().name == "acme"
        postgres_server.stop_server()
        postgres_server.restart()

        def in_a_transaction():
            with store.transaction() as q:
                return q("SELECT name FROM customers WHERE name = ?", ("acme",))

        assert threads[0].submit(store.get_customer, "acme").result().name == "acme"
        assert threads[1].submit(store.add_customer, "shop").result().name == "shop"
        assert threads[2].submit(in_a_transaction).result() == [("acme",)]
    finally:
        for thread in threads:
            thread.shutdown()
        store.close()


def test_a_failed_write_is_not_run_again(postgres_server, postgres_url):
    """A write whose connection died may have been applied: it is reported, never repeated."""
    if isinstance(postgres_server, str):
        pytest.skip("an external PostgreSQL (GATEWAY_TEST_POSTGRES_URL) is not ours to stop")
    store = open_store(postgres_url)
    store.add_customer("acme")
    postgres_server.stop_server()
    postgres_server.restart()
    insert = "INSERT INTO customers (name, status, created_at, updated_at) VALUES (?, ?, 0, 0)"
    try:
        with pytest.raises(StoreUnavailable):
            store.execute(insert, ("shop", "pending"))
        assert store.get_customer("shop") is None
        store.execute(insert, ("shop", "pending"))  # on a new connection
        assert store.get_customer("shop").name == "shop"
    finally:
        store.close()


def test_unknown_store_url_is_a_clear_error():
    with pytest.raises(StoreError, match="unsupported store url"):
        open_store("mysql://x")


def test_hot_reads_are_cached_and_writes_invalidate(store):
    cached = open_store(store.url, cache_ttl=0.5)
    customer = cached.add_customer("acme")
    assert cached.get_customer_by_id(customer.id).status == "pending"
    # A write through the same object shows at once ...
    cached.set_customer_status("acme", "active")
    assert cached.get_customer_by_id(customer.id).status == "active"
    # ... another node's write after at most cache_ttl.
    store.set_customer_status("acme", "suspended")
    assert cached.get_customer_by_id(customer.id).status == "active"
    time.sleep(0.6)
    assert cached.get_customer_by_id(customer.id).status == "suspended"


def test_auth_slots_are_an_interval_apart_across_threads(store):
    now = time.time()
    slots: list[float] = []
    threads = [
        threading.Thread(target=lambda: slots.append(store.take_auth_slot("addr:192.0.2.1", now, 1.0)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(slots) == pytest.approx([now + k for k in range(8)])
    assert store.auth_next_slots(["addr:192.0.2.1", "login:x"]) == {"addr:192.0.2.1": pytest.approx(now + 8)}
    later = now + 100
    assert store.take_auth_slot("addr:192.0.2.1", later, 1.0) == pytest.approx(now + 8)
    store.clear_auth_slots("addr:192.0.2.1")
    assert store.take_auth_slot("addr:192.0.2.1", later, 1.0) == pytest.approx(later)
    store.expire_auth_slots(later + 2)
    assert store.auth_next_slots(["addr:192.0.2.1"]) == {}


def test_claims_and_writes_of_several_processes_never_fail_as_locked(store_url):
    """A lease claim reads, then writes. On SQLite a plain BEGIN took the write lock only at
    the write, which then failed at once ("database is locked", no busy wait) whenever another
    connection had written in between; the webhook dispatcher logged errors under load."""
    stores = [open_store(store_url) for _ in range(3)]
    customer = stores[0].add_customer("acme")
    stores[0].set_webhook(customer.id, "https://hooks.example/x", None, by="test")
    errors: list[Exception] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set():
            try:
                with stores[0].transaction():
                    stores[0].emit_event(customer.id, "unsubscribe", {}, recipient=f"r{n}@x.org")
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)
            n += 1

    def claimer(store, name: str) -> None:
        for _ in range(150):
            try:
                for event in store.claim_due_events(name, limit=3):
                    store.finish_attempt(event, name, delivered=True, error=None, next_attempt_at=None)
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=claimer, args=(s, f"n{i}")) for i, s in enumerate(stores[1:])
    ]
    for t in threads:
        t.start()
    for t in threads[1:]:
        t.join(120)
    stop.set()
    threads[0].join(30)
    assert errors == []
