"""The feedback store methods (suppressions, feedback events, ledger look-ups by recipient) on
both engines: SQLite and a real PostgreSQL server; and the whole intake on each."""

from __future__ import annotations

import time

import pytest

from gateway.store import MessageRecord, StoreError, open_store
from gateway.store.feedback import GLOBAL, FeedbackEvent
from tests.unit.test_intake_support import SOFT, IntakeEnv, arf, dsn


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def store(url):
    s = open_store(url)
    yield s
    s.close()


def test_suppressions_scopes_and_history(store):
    acme = store.add_customer("acme")
    other = store.add_customer("other")
    entry, added = store.add_suppression(
        acme.id, " <Anna@Example.org> ", "complaint", mail_id="m1", detail="abuse", by="test"
    )
    assert added and entry.address == "anna@example.org" and not entry.is_global
    again, added = store.add_suppression(acme.id, "anna@example.org", "unsubscribe")
    assert not added and again.reason == "complaint", "the first reason and time stay"
    assert store.find_suppression(acme.id, "ANNA@example.org").id == entry.id
    assert store.find_suppression(other.id, "anna@example.org") is None
    glob, _ = store.add_suppression(GLOBAL, "anna@example.org", "hard-bounce", mail_id="m2")
    assert store.find_suppression(other.id, "anna@example.org").id == glob.id
    assert store.find_suppression(acme.id, "anna@example.org").id == glob.id, "global first"
    assert store.find_suppression(None, "anna@example.org").id == glob.id
    assert len(store.list_suppressions()) == 2
    assert [s.id for s in store.list_suppressions(customer_id=GLOBAL)] == [glob.id]
    assert [s.id for s in store.list_suppressions(customer_id=acme.id)] == [entry.id]
    assert [s.id for s in store.list_suppressions(reason="hard-bounce")] == [glob.id]
    assert [s.id for s in store.suppressions_for_mail_id("m1")] == [entry.id]
    removed = store.remove_suppression(GLOBAL, "anna@example.org", by="ops")
    assert [r.id for r in removed] == [glob.id]
    assert store.last_suppression_removal(GLOBAL, "anna@example.org") is not None
    assert store.remove_suppression(None, "anna@example.org")[0].id == entry.id
    assert store.list_suppressions() == []
    history = store.suppression_history("anna@example.org")
    assert [(h.action, h.reason) for h in history] == [
        ("added", "complaint"),
        ("added", "hard-bounce"),
        ("removed", "hard-bounce"),
        ("removed", "complaint"),
    ]
    assert history[2].actor == "ops"
    with pytest.raises(StoreError, match="unknown suppression reason"):
        store.add_suppression(GLOBAL, "x@example.org", "because")
    with pytest.raises(StoreError, match="not an email address"):
        store.add_suppression(GLOBAL, "nobody", "manual")


def test_a_complaint_after_an_unsubscribe_takes_over_the_entry(store):
    acme = store.add_customer("acme")
    first, _ = store.add_suppression(acme.id, "anna@example.org", "unsubscribe", by="http")
    entry, added = store.add_suppression(
        acme.id, "anna@example.org", "complaint", mail_id="m9", detail="arf", at=first.created_at + 60
    )
    assert added and entry.id == first.id
    assert (entry.reason, entry.mail_id, entry.created_at) == ("complaint", "m9", first.created_at + 60)
    assert store.find_suppression(acme.id, "anna@example.org").reason == "complaint"
    # Nothing takes over a complaint, and an unsubscribe after it changes nothing.
    _, added = store.add_suppression(acme.id, "anna@example.org", "unsubscribe")
    assert not added and store.find_suppression(acme.id, "anna@example.org").reason == "complaint"
    assert [(h.action, h.reason) for h in store.suppression_history("anna@example.org")] == [
        ("added", "unsubscribe"),
        ("added", "complaint"),
    ]


def test_suppression_reads_are_cached_and_own_writes_show_at_once(url):
    gateway_view = open_store(url, cache_ttl=60)  # as `gateway serve` opens it
    other_process = open_store(url)
    try:
        acme = gateway_view.add_customer("acme")
        assert gateway_view.find_suppression(acme.id, "anna@example.org") is None
        other_process.add_suppression(acme.id, "anna@example.org", "unsubscribe")
        # Another process's write shows after at most cache_ttl ...
        assert gateway_view.find_suppression(acme.id, "anna@example.org") is None
        gateway_view.cache_ttl = 0
        assert gateway_view.find_suppression(acme.id, "anna@example.org").reason == "unsubscribe"
        # ... this process's own writes at once.
        gateway_view.cache_ttl = 60
        assert gateway_view.find_suppression(acme.id, "bert@example.org") is None
        gateway_view.add_suppression(acme.id, "Bert@Example.org", "complaint")
        assert gateway_view.find_suppression(acme.id, "bert@example.org").reason == "complaint"
        gateway_view.remove_suppression(acme.id, "bert@example.org")
        assert gateway_view.find_suppression(acme.id, "bert@example.org") is None
    finally:
        gateway_view.close()
        other_process.close()


def test_feedback_events_roundtrip_with_raw_bytes(store):
    raw = b"From: x\r\n\r\n\xff\xfe not utf-8 \x00 bytes"
    event = FeedbackEvent(
        received_at=time.time(),
        source="smtp",
        kind="bounce",
        bounce_class="hard",
        status="5.1.1",
        recipients=["a@example.org"],
        envelope_to=["m-x@bounces.example"],
        mail_id="mid",
        mail_id_status="genuine",
        details={"k": ["v"]},
        raw_size=len(raw),
    )
    event_id = store.add_feedback_event(event, raw)
    assert store.get_feedback_raw(event_id) == raw
    event.acted, event.action, event.recipient = True, "suppressed", "a@example.org"
    store.update_feedback_event(event)
    got = store.get_feedback_event(event_id)
    assert (got.kind, got.acted, got.action, got.details) == ("bounce", True, "suppressed", {"k": ["v"]})
    assert got.envelope_to == ["m-x@bounces.example"] and got.recipients == ["a@example.org"]
    assert [e.id for e in store.feedback_for_mail_id("mid")] == [event_id]
    assert [e.id for e in store.list_feedback_events(kind="bounce")] == [event_id]
    assert store.list_feedback_events(kind="complaint") == []


def test_ledger_lookups_by_recipient(store):
    acme = store.add_customer("acme")
    now = time.time()
    for mail_id, rcpt, at, result in [
        ("m1", "Anna@Example.org", now - 300, "accepted"),
        ("m2", "anna@example.org", now - 200, "accepted"),
        ("m3", "anna@example.org", now - 100, "rejected"),
        ("m4", "ben@example.org", now - 50, "accepted"),
    ]:
        store.record_message(
            MessageRecord(mail_id, acme.id, "c", "news@x", [rcpt], at, result, "250 ok", None, [])
        )
    assert store.last_message_to("ANNA@example.org", now - 1000)[0] == "m2"
    assert store.last_message_to("anna@example.org", now - 150) is None
    assert store.last_good_delivery("anna@example.org") == pytest.approx(now - 200)
    store.add_feedback_event(
        FeedbackEvent(received_at=now, source="t", kind="bounce", mail_id="m2", mail_id_status="genuine"),
        None,
    )
    assert store.last_good_delivery("anna@example.org") == pytest.approx(now - 300)
    assert store.count_accepted_messages(acme.id, now - 1000) == 3
    assert store.count_accepted_messages(acme.id, now - 250) == 2


def test_transaction_rolls_back_feedback_writes(store):
    with pytest.raises(RuntimeError), store.transaction():
        store.add_feedback_event(FeedbackEvent(received_at=time.time(), source="t", kind="other"), b"x")
        store.add_suppression(GLOBAL, "a@example.org", "manual")
        raise RuntimeError("boom")
    assert store.list_feedback_events() == [] and store.list_suppressions() == []


def test_whole_intake_on_each_engine(tmp_path, url):
    env = IntakeEnv(
        tmp_path,
        url=url,
        soft_bounce_threshold=2,
        complaint_min_messages=2,
        complaint_warning_rate=0.2,
        complaint_suspend_rate=0.4,
    )
    try:
        anna = env.send("anna@example.org")
        env.ingest(dsn(anna, "anna@example.org"))
        assert env.store.find_suppression(env.customer.id, "anna@example.org").is_global
        for _ in range(2):
            ben = env.send("ben@example.org")
            env.now += 60
            env.ingest(dsn(ben, "ben@example.org", **SOFT))
        assert env.store.find_suppression(env.customer.id, "ben@example.org").reason == "soft-bounce"
        carl = env.send("carl@example.org")
        result = env.ingest(arf(carl, None))
        assert result.event.recipient == "carl@example.org"
        assert result.rate.action == "warning"  # 1 complaint / 4 messages
        dora = env.send("dora@example.org")
        result = env.ingest(arf(dora, "dora@example.org"))
        assert result.rate.action == "suspended"  # 2 complaints / 5 messages
        assert env.store.require_customer("acme").status == "suspended"
    finally:
        env.store.close()
