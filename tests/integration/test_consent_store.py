"""The consent store on both engines: subscribe, confirmation sent, confirm, revoke, import,
evidence and history."""

from __future__ import annotations

import pytest

from gateway.store import StoreError, open_store
from gateway.store.consent import ConsentImportRow

T0 = 1_772_359_200.0  # 2026-03-01T10:00:00Z


@pytest.fixture
def store(store_url):
    s = open_store(store_url, cache_ttl=60)
    s.add_customer("acme")
    yield s
    s.close()


def cid(store):
    return store.require_customer("acme").id


def test_double_opt_in_lifecycle(store):
    c = cid(store)
    record, outcome = store.consent_subscribe(
        c,
        "Anna@Example.org",
        source="https://shop/form",
        at=T0,
        ip="203.0.113.7",
        user_agent="Firefox",
        list_name="news",
    )
    assert (outcome, record.status, record.address, record.generation) == (
        "new",
        "pending",
        "anna@example.org",
        1,
    )
    assert store.get_consent(c, "anna@example.org").status == "pending"
    store.consent_confirmation_sent(c, "anna@example.org", at=T0 + 5)
    with pytest.raises(StoreError):
        store.consent_confirm(c, "anna@example.org", at=T0 - 1, ip="198.51.100.3")
    record, outcome = store.consent_confirm(
        c, "anna@example.org", at=T0 + 300, ip="198.51.100.3", user_agent="Safari", generation=1
    )
    assert outcome == "confirmed" and record.passes
    # The cache is cleared by the write: the hot path sees it at once.
    assert store.get_consent(c, "anna@example.org").passes
    # The first confirmation stays the evidence.
    again, outcome = store.consent_confirm(c, "anna@example.org", at=T0 + 900, ip="192.0.2.9")
    assert outcome == "already-confirmed" and again.confirmed_ip == "198.51.100.3"
    evidence = store.consent_evidence(c, "ANNA@example.org")
    assert evidence == {
        "address": "anna@example.org",
        "status": "confirmed",
        "source": "https://shop/form",
        "list": "news",
        "subscribed_at": "2026-03-01T10:00:00Z",
        "subscribed_ip": "203.0.113.7",
        "subscribed_user_agent": "Firefox",
        "confirmation_sent_at": "2026-03-01T10:00:05Z",
        "confirmed_at": "2026-03-01T10:05:00Z",
        "confirmed_ip": "198.51.100.3",
        "confirmed_user_agent": "Safari",
        "revoked_at": None,
        "revoked_reason": None,
        "recorded_via": "api",
        "import_batch": None,
    }
    record, changed = store.consent_revoke(
        c, "anna@example.org", at=T0 + 1000, reason="one-click", via="http"
    )
    assert changed and record.status == "revoked" and not record.passes
    assert store.consent_revoke(c, "anna@example.org", at=T0 + 1050, reason="x", via="y")[1] is False
    # A confirmation link of before the revocation cannot confirm again ...
    assert (
        store.consent_confirm(c, "anna@example.org", at=T0 + 1100, ip="192.0.2.9", generation=1)[1]
        == "revoked"
    )
    # ... nor one of the earlier generation after a new subscription.
    record, outcome = store.consent_subscribe(
        c, "anna@example.org", source="https://shop/form", at=T0 + 2000, ip="203.0.113.8"
    )
    assert (outcome, record.generation, record.status, record.confirmed_at) == (
        "resubscribed",
        2,
        "pending",
        None,
    )
    assert (
        store.consent_confirm(c, "anna@example.org", at=T0 + 2100, ip="192.0.2.9", generation=1)[1]
        == "superseded"
    )
    assert (
        store.consent_confirm(c, "anna@example.org", at=T0 + 2100, ip="192.0.2.9", generation=2)[1]
        == "confirmed"
    )
    history = [(h.event, h.detail.get("result")) for h in store.consent_history(c, "anna@example.org")]
    assert history == [
        ("subscribe", "new"),
        ("confirmation-sent", None),
        ("confirm", "confirmed"),
        ("confirm", "already-confirmed"),
        ("revoke", "revoked"),
        ("revoke", "already revoked"),
        ("confirm", "revoked"),
        ("subscribe", "resubscribed"),
        ("confirm", "superseded"),
        ("confirm", "confirmed"),
    ]
    export = store.consent_export(c, "anna@example.org")
    assert export["customer"]["name"] == "acme" and len(export["history"]) == 10


def test_subscribe_of_a_confirmed_address_changes_nothing(store):
    c = cid(store)
    store.consent_subscribe(c, "anna@example.org", source="a", at=T0, ip="192.0.2.1")
    store.consent_confirm(c, "anna@example.org", at=T0 + 10, ip="192.0.2.2")
    record, outcome = store.consent_subscribe(c, "anna@example.org", source="b", at=T0 + 20, ip="192.0.2.3")
    assert outcome == "already-confirmed" and record.source == "a" and record.passes


def test_unknown_address(store):
    c = cid(store)
    assert store.get_consent(c, "nobody@example.org") is None
    assert store.consent_confirm(c, "nobody@example.org", at=T0, ip="192.0.2.1") == (None, "unknown")
    assert store.consent_evidence(c, "nobody@example.org") is None
    assert store.consent_revoke(c, "nobody@example.org", reason="x", via="y") == (None, False)


def test_import_never_overrides_an_existing_record(store):
    c = cid(store)
    store.consent_subscribe(c, "ben@example.org", source="form", at=T0, ip="192.0.2.1")
    store.consent_revoke(c, "ben@example.org", reason="complaint", via="test")
    rows = [
        ConsentImportRow(
            line=2,
            address="anna@example.org",
            source="batch",
            subscribed_at=T0,
            subscribed_ip="192.0.2.1",
            confirmed_at=T0 + 60,
            confirmed_ip="192.0.2.2",
        ),
        ConsentImportRow(
            line=3,
            address="ben@example.org",
            source="batch",
            subscribed_at=T0,
            subscribed_ip="192.0.2.1",
            confirmed_at=T0 + 60,
            confirmed_ip="192.0.2.2",
        ),
    ]
    imported, existing = store.import_consent(c, rows, batch="import:x.csv")
    assert [r.address for r in imported] == ["anna@example.org"]
    assert [r.address for r in existing] == ["ben@example.org"]
    assert store.get_consent(c, "ben@example.org").status == "revoked"
    anna = store.consent_evidence(c, "anna@example.org")
    assert (anna["status"], anna["import_batch"], anna["recorded_via"]) == (
        "confirmed",
        "import:x.csv",
        "import",
    )
    assert store.count_consent(c) == {"confirmed": 1, "revoked": 1}
    found = store.consent_records_for(c, ["ANNA@example.org", "zoe@example.org"])
    assert list(found) == ["anna@example.org"]
