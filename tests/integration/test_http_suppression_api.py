"""The suppression API on a real gateway: a customer's key checks, lists, adds, imports (JSON
and CSV) and lifts its own suppressions; another customer's entries stay invisible; a complaint
and a global hard bounce cannot be lifted; what is added is refused at RCPT at once."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from gateway.http.apikeys import add_key
from gateway.store.feedback import GLOBAL
from tests.integration.test_http_support import rcpt_reply, start
from tests.support.gateway import add_customer

POLICIES = [{"name": "customer-active", "mode": "enforce"}, {"name": "suppression", "mode": "enforce"}]
PATH = "/api/v1/suppressions"


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    gw, mta, http, _ = start(gateway, scripted_mta, tmp_path, policies=POLICIES)
    key, _ = add_key(tmp_path / "api-keys", "acme", "list tool")
    add_customer(gw.store, "other", domain="other.example")
    other_key, _ = add_key(tmp_path / "api-keys", "other")
    return gw, http, key, other_key


def csv_post(http, key, text: str):
    return http.request(
        "POST", PATH, text.encode(), {"Content-Type": "text/csv", "Authorization": f"Bearer {key}"}
    )


def test_add_check_and_refused_at_rcpt(setup):
    gw, http, key, _ = setup
    assert rcpt_reply(gw, "anna@example.org")[0] == 250
    reply = http.api("POST", PATH, key, {"email": "Anna@Example.org", "reason": "unsubscribe"})
    assert reply.status == 200 and reply.json() == {"added": 1, "existing": 0, "errors": []}
    code, text = rcpt_reply(gw, "anna@example.org")
    assert code == 550
    check = http.api("GET", f"{PATH}?email=anna@example.org", key).json()
    assert check["suppressed"] is True
    [entry] = check["entries"]
    assert (entry["scope"], entry["reason"], entry["can_lift"]) == ("customer", "unsubscribe", True)
    assert http.api("GET", f"{PATH}?email=ben@example.org", key).json() == {
        "email": "ben@example.org",
        "suppressed": False,
        "entries": [],
    }
    again = http.api("POST", PATH, key, {"email": "anna@example.org"}).json()
    assert (again["added"], again["existing"]) == (0, 1)
    history = gw.store.suppression_history("anna@example.org")
    assert [(h.action, h.actor) for h in history] == [("added", "api:acme")]


def test_another_customers_key_sees_and_lifts_nothing_of_ours(setup):
    gw, http, key, other_key = setup
    http.api("POST", PATH, key, {"email": "anna@example.org", "reason": "unsubscribe"})
    assert http.api("GET", f"{PATH}?email=anna@example.org", other_key).json()["suppressed"] is False
    assert http.api("GET", PATH, other_key).json()["data"] == []
    assert http.api("DELETE", f"{PATH}/anna@example.org", other_key).status == 404
    acme = gw.store.get_customer("acme")
    assert gw.store.find_suppression(acme.id, "anna@example.org") is not None
    # And what the other key adds is the other customer's only.
    http.api("POST", PATH, other_key, {"email": "carl@example.org"})
    assert rcpt_reply(gw, "carl@example.org")[0] == 250


def test_a_complaint_and_a_global_hard_bounce_cannot_be_lifted(setup):
    gw, http, key, _ = setup
    acme = gw.store.get_customer("acme")
    gw.store.add_suppression(acme.id, "dora@example.org", "complaint", by="feedback:arf")
    gw.store.add_suppression(
        GLOBAL,
        "emil@example.org",
        "hard-bounce",
        mail_id="secretid",
        detail="5.1.1 user unknown at another customer",
        by="feedback:smtp",
    )
    reply = http.api("DELETE", f"{PATH}/dora@example.org", key)
    assert reply.status == 409 and "complain" in reply.json()["error"]
    reply = http.api("DELETE", f"{PATH}/emil@example.org", key)
    assert reply.status == 409 and "global" in reply.json()["error"]
    assert gw.store.find_suppression(acme.id, "dora@example.org") is not None
    assert gw.store.find_suppression(acme.id, "emil@example.org") is not None
    # The global entry shows read-only, without another customer's mail ID or diagnostic.
    [shown] = http.api("GET", f"{PATH}?email=emil@example.org", key).json()["entries"]
    assert shown == {
        "email": "emil@example.org",
        "scope": "global",
        "reason": "hard-bounce",
        "created_at": shown["created_at"],
        "can_lift": False,
    }


def test_lift_our_unsubscribe_and_it_is_sendable_again(setup):
    gw, http, key, _ = setup
    http.api("POST", PATH, key, {"email": "fred@example.org", "reason": "unsubscribe"})
    assert rcpt_reply(gw, "fred@example.org")[0] == 550
    reply = http.api("DELETE", f"{PATH}/{quote('fred@example.org')}", key)
    assert reply.status == 200 and reply.json()["lifted"][0]["reason"] == "unsubscribe"
    assert rcpt_reply(gw, "fred@example.org")[0] == 250
    assert [(h.action, h.actor) for h in gw.store.suppression_history("fred@example.org")] == [
        ("added", "api:acme"),
        ("removed", "api:acme"),
    ]
    [audit] = [a for a in gw.store.list_audit(gw.store.get_customer("acme").id) if a.action == "unsuppress"]
    assert audit.actor == "api:acme" and "fred@example.org" in str(audit.json_dict())
    # With a global entry beside ours, ours is lifted and the answer says what still refuses.
    acme = gw.store.get_customer("acme")
    gw.store.add_suppression(acme.id, "gina@example.org", "unsubscribe", by="http:one-click")
    gw.store.add_suppression(GLOBAL, "gina@example.org", "hard-bounce", by="feedback:smtp")
    body = http.api("DELETE", f"{PATH}/gina@example.org", key).json()
    assert [e["scope"] for e in body["still_suppressed_by"]] == ["global"]
    assert rcpt_reply(gw, "gina@example.org")[0] == 550


def test_csv_import_with_bad_rows_reported(setup):
    gw, http, key, _ = setup
    text = (
        "Email,Reason\r\n"
        "h1@example.org,unsubscribe\r\n"
        "h2@example.org,\r\n"
        "not an address,manual\r\n"
        "h3@example.org,global\r\n"
        '"h4@example.org",complaint\r\n'
    )
    reply = csv_post(http, key, text)
    body = reply.json()
    assert reply.status == 200 and body["added"] == 3
    assert [(e["row"], e["field"]) for e in body["errors"]] == [(3, "email"), (4, "reason")]
    acme = gw.store.get_customer("acme")
    entries = {s.address: s.reason for s in gw.store.list_suppressions(customer_id=acme.id)}
    assert entries == {
        "h1@example.org": "unsubscribe",
        "h2@example.org": "manual",
        "h4@example.org": "complaint",
    }
    assert gw.store.list_suppressions(customer_id=GLOBAL) == []  # a customer adds no global one
    assert csv_post(http, key, "address\r\nx@example.org\r\n").status == 400


def test_list_is_paged_and_shows_our_hard_bounces_only(setup):
    gw, http, key, other_key = setup
    emails = [f"p{n:02d}@example.org" for n in range(25)]
    http.api("POST", PATH, key, {"suppressions": [{"email": e} for e in emails]})
    http.api("POST", PATH, other_key, {"email": "theirs@example.org"})
    gw.store.add_suppression(GLOBAL, "someone@example.org", "hard-bounce", by="feedback:smtp")
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = http.api("GET", f"{PATH}?limit=10&cursor={cursor}", key).json()
        seen += [e["email"] for e in page["data"]]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert seen == emails
    assert http.api("GET", f"{PATH}?cursor=czE5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OQ", key).status == 400
    assert http.api("GET", f"{PATH}?cursor=!!", key).status == 400


@pytest.mark.parametrize(
    "body, content_type",
    [
        (b"[1, 2]", "application/json"),
        (b'{"suppressions": ["a@example.org"]}', "application/json"),
        (b"{", "application/json"),
        (b"email\r\na@example.org", "text/plain"),
        (b"\xff\xfe", "text/csv"),
    ],
)
def test_bad_bodies_are_400(setup, body, content_type):
    _, http, key, _ = setup
    reply = http.request("POST", PATH, body, {"Content-Type": content_type, "Authorization": f"Bearer {key}"})
    assert reply.status == 400 and reply.json()["error"]


def test_needs_a_key(setup):
    _, http, _, _ = setup
    assert http.api("GET", f"{PATH}?email=a@example.org", None).status == 401
    assert http.api("DELETE", f"{PATH}/a@example.org", "gwk_wrong").status == 401
