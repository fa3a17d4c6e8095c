"""Double opt-in end to end: the ESP's app records the subscription over the API, sends the
confirmation mail through the gateway (the only mail a pending address may get), the recipient
confirms on the page (time, IP, user agent recorded), and policy `consent` passes from then on."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from gateway.core.message import header_values
from gateway.http.apikeys import add_key
from tests.integration.test_http_support import (
    check_page,
    local_path,
    message,
    page_form,
    press_button,
    rcpt_reply,
    send,
    start,
)

POLICIES = [{"name": "customer-active", "mode": "enforce"}, {"name": "consent", "mode": "enforce"}]


@pytest.fixture
def setup(gateway, scripted_mta, tmp_path):
    gw, mta, http, records = start(gateway, scripted_mta, tmp_path, policies=POLICIES)
    key, _ = add_key(tmp_path / "api-keys", "acme", "signup form")
    return gw, mta, http, key


def subscribe(http, key, email="anna@example.org", **extra):
    body = {
        "email": email,
        "source": "https://customer.example/newsletter",
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (signup)",
        **extra,
    }
    return http.api("POST", "/api/v1/consent/subscribe", key, body)


def test_api_needs_a_valid_key(setup, tmp_path):
    gw, _, http, key = setup
    assert http.api("POST", "/api/v1/consent/subscribe", None, {}).status == 401
    reply = http.api("POST", "/api/v1/consent/subscribe", "gwk_wrong", {})
    assert reply.status == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer")
    assert (
        http.request(
            "GET", "/api/v1/consent?email=a@example.org", headers={"Authorization": f"Basic {key}"}
        ).status
        == 401
    )
    # A key of another customer sees only that customer's records.
    gw.store.add_customer("other")
    other_key, _ = add_key(tmp_path / "api-keys", "other")
    assert subscribe(http, key).status == 201
    assert http.api("GET", "/api/v1/consent?email=anna@example.org", other_key).status == 404
    assert http.api("GET", "/api/v1/consent?email=anna@example.org", key).status == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"email": "not-an-address", "source": "s", "ip": "192.0.2.1"}, "email"),
        ({"email": "anna@example.org", "ip": "192.0.2.1"}, "source"),
        ({"email": "anna@example.org", "source": "s", "ip": "300.1.1.1"}, "ip"),
        (
            {"email": "anna@example.org", "source": "s", "ip": "192.0.2.1", "subscribed_at": "last tuesday"},
            "subscribed_at",
        ),
        (
            {
                "email": "anna@example.org",
                "source": "s",
                "ip": "192.0.2.1",
                "subscribed_at": "2026-03-01T10:00:00Z",
                "confirmation_sent_at": "2026-03-01T09:00:00Z",
            },
            "confirmation_sent_at",
        ),
    ],
)
def test_bad_input_names_the_field(setup, body, field):
    _, _, http, key = setup
    reply = http.api("POST", "/api/v1/consent/subscribe", key, body)
    assert reply.status == 400 and reply.json()["field"] == field


def test_not_json_is_refused(setup):
    _, _, http, key = setup
    reply = http.request(
        "POST",
        "/api/v1/consent/subscribe",
        b"email=a",
        {"Authorization": f"Bearer {key}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert reply.status == 400 and reply.json()["field"] == "body"


def test_double_opt_in_end_to_end(setup):
    gw, mta, http, key = setup
    customer = gw.store.get_customer("acme")
    # Without any record: refused at RCPT with the rule's text.
    code, text = rcpt_reply(gw, "anna@example.org")
    assert code == 550 and text.startswith(
        b"5.7.1 No confirmed double opt-in is recorded for anna@example.org;"
    )

    reply = subscribe(http, key)
    assert reply.status == 201
    answer = reply.json()
    assert answer["result"] == "new" and answer["consent"]["status"] == "pending"
    confirm = answer["confirm_url"]
    assert confirm.startswith("https://gw.esp.example/c/")

    # Pending: a newsletter is refused, the confirmation mail with its link goes out.
    with gw.client() as smtp, pytest.raises(Exception) as err:
        smtp.sendmail("news@customer.example", ["anna@example.org"], message("anna@example.org"))
    assert "only the confirmation mail" in str(err.value)
    body = (
        f"Please confirm your subscription: {confirm}\r\n\r\n"
        "To unsubscribe, click https://customer.example/unsubscribe?u=1\r\n"
    )
    data = send(gw, mta, "anna@example.org", message("anna@example.org", body=body))
    assert confirm.encode() in data
    sent = http.api("POST", "/api/v1/consent/confirmation-sent", key, {"email": "anna@example.org"})
    assert sent.status == 200 and sent.json()["consent"]["confirmation_sent_at"]

    # GET shows the page and confirms nothing (scanners follow links).
    path = local_path(confirm)
    page = http.get(path, **{"User-Agent": "LinkScanner/1.0"})
    assert page.status == 200
    check_page(page, "en")
    assert "Confirm subscription" in page.text and "anna@example.org" in page.text
    assert gw.store.get_consent(customer.id, "anna@example.org").status == "pending"

    action, fields = page_form(page.text, path)
    done = http.post_form(
        action, urlencode(fields), Origin=http.base, **{"User-Agent": "Mozilla/5.0 (Recipient)"}
    )
    assert done.status == 200 and "is confirmed" in done.text
    evidence = gw.store.consent_evidence(customer.id, "anna@example.org")
    assert evidence["status"] == "confirmed"
    assert evidence["confirmed_ip"] == "127.0.0.1"
    assert evidence["confirmed_user_agent"] == "Mozilla/5.0 (Recipient)"
    assert evidence["subscribed_ip"] == "203.0.113.7"
    assert evidence["source"] == "https://customer.example/newsletter"

    # Now the newsletter passes the consent policy.
    relayed = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(relayed, "X-Mailing-ID")
    verdicts = gw.store.get_message(mail_id).verdicts
    assert [(v["phase"], v["action"]) for v in verdicts if v["policy"] == "consent"] == [
        ("rcpt", "continue"),
        ("data", "continue"),
    ]
    # The RCPT verdict names the evidence that let it pass: the confirmation just recorded.
    confirmed_on = evidence["confirmed_at"][:10]  # 2026-12-04T10:00:00Z
    assert [v["reason"] for v in verdicts if v["policy"] == "consent"][0] == (
        f"anna@example.org: confirmed {confirmed_on} from 127.0.0.1 "
        "(source https://customer.example/newsletter)"
    )

    # Confirming again keeps the first evidence.
    again = http.post_form(action, urlencode(fields), Origin=http.base, **{"User-Agent": "Other"})
    assert again.status == 200 and "already confirmed" in again.text
    assert (
        gw.store.consent_evidence(customer.id, "anna@example.org")["confirmed_user_agent"]
        == "Mozilla/5.0 (Recipient)"
    )

    shown = http.api("GET", "/api/v1/consent?email=ANNA@example.org", key).json()
    events = [h["event"] for h in shown["history"]]
    assert events == ["subscribe", "confirmation-sent", "confirm", "confirm"]


def test_confirm_link_tokens_cannot_be_bent(setup, tmp_path):
    from gateway.urltokens import CONFIRM, UNSUBSCRIBE, TokenSigner, signer_for

    gw, _, http, key = setup
    confirm = subscribe(http, key).json()["confirm_url"]
    subscribe(http, key, email="ben@example.org")
    customer = gw.store.get_customer("acme")
    token = local_path(confirm).removeprefix("/c/")
    altered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert http.post_form("/c/" + altered, "confirm=yes").status == 404
    forged = TokenSigner.from_key_file(tmp_path / "x.key").make(
        CONFIRM, customer.id, "ben@example.org", reference="1"
    )
    assert http.post_form("/c/" + forged, "confirm=yes").status == 404
    # An unsubscribe token is no confirmation token.
    unsub = signer_for(tmp_path / "http.key").make(UNSUBSCRIBE, customer.id, "ben@example.org")
    assert http.post_form("/c/" + unsub, "confirm=yes").status == 404
    assert gw.store.get_consent(customer.id, "ben@example.org").status == "pending"
    # Anna's link confirms anna only.
    assert press_button(http, "/c/" + token).status == 200
    assert gw.store.get_consent(customer.id, "ben@example.org").status == "pending"
    assert gw.store.get_consent(customer.id, "anna@example.org").status == "confirmed"


def test_expired_and_revoked_links(setup, tmp_path):
    from gateway.urltokens import CONFIRM, signer_for

    gw, _, http, key = setup
    customer = gw.store.get_customer("acme")
    subscribe(http, key)
    old = signer_for(tmp_path / "http.key").make(
        CONFIRM, customer.id, "anna@example.org", reference="1", now=1_700_000_000
    )
    reply = http.get("/c/" + old + "?lang=de")
    assert reply.status == 410 and "abgelaufen" in reply.text
    assert http.post_form("/c/" + old, "confirm=yes").status == 410
    confirm = subscribe(http, key).json()["confirm_url"]
    # The page was opened (its form and nonce are in the browser) before the revocation.
    action, fields = page_form(http.get(local_path(confirm)).text, local_path(confirm))
    revoked = http.api(
        "POST", "/api/v1/consent/revoke", key, {"email": "anna@example.org", "reason": "asked by phone"}
    )
    assert revoked.status == 200 and revoked.json()["consent"]["status"] == "revoked"
    reply = http.post_form(action, urlencode(fields), Origin=http.base)
    assert reply.status == 409 and "cancelled" in reply.text
    page = http.get(local_path(confirm))
    assert page.status == 409 and "cancelled" in page.text and "<form" not in page.text
    assert gw.store.get_consent(customer.id, "anna@example.org").status == "revoked"
    # A new subscription makes a new generation; the old link stays dead.
    fresh = subscribe(http, key).json()
    assert fresh["result"] == "resubscribed"
    assert http.post_form(action, urlencode(fields), Origin=http.base).status == 409
    assert press_button(http, local_path(fresh["confirm_url"])).status == 200


def test_api_confirm_and_unsubscribe_url(setup):
    gw, mta, http, key = setup
    assert (
        http.api(
            "POST", "/api/v1/consent/confirm", key, {"email": "zoe@example.org", "ip": "192.0.2.1"}
        ).status
        == 404
    )
    subscribe(http, key, subscribed_at="2026-03-01T10:00:00Z")
    early = http.api(
        "POST",
        "/api/v1/consent/confirm",
        key,
        {"email": "anna@example.org", "ip": "192.0.2.1", "confirmed_at": "2026-03-01T09:00:00Z"},
    )
    assert early.status == 400 and early.json()["field"] == "confirmed_at"
    ok = http.api(
        "POST",
        "/api/v1/consent/confirm",
        key,
        {"email": "anna@example.org", "ip": "192.0.2.1", "user_agent": "App"},
    )
    assert ok.status == 200 and ok.json()["result"] == "confirmed"
    assert rcpt_reply(gw, "anna@example.org")[0] == 250
    url = http.api("GET", "/api/v1/unsubscribe-url?email=anna@example.org&list=news", key)
    assert url.status == 200
    path = local_path(url.json()["url"])
    assert http.post_form(path, "List-Unsubscribe=One-Click").status == 200
    code, text = rcpt_reply(gw, "anna@example.org")
    assert code == 550
    assert gw.store.get_consent(gw.store.get_customer("acme").id, "anna@example.org").status == "revoked"


def test_confirmed_resubscription_on_the_page_lifts_the_old_unsubscribe(setup):
    gw, _, http, key = setup
    customer = gw.store.get_customer("acme")
    subscribe(http, key)
    assert (
        http.api(
            "POST", "/api/v1/consent/confirm", key, {"email": "anna@example.org", "ip": "192.0.2.1"}
        ).status
        == 200
    )
    url = http.api("GET", "/api/v1/unsubscribe-url?email=anna@example.org", key).json()["url"]
    assert http.post_form(local_path(url), "List-Unsubscribe=One-Click").status == 200
    assert gw.store.find_suppression(customer.id, "anna@example.org").reason == "unsubscribe"
    # Re-subscribed and confirmed over the API only: the suppression stays.
    again = subscribe(http, key).json()
    assert again["result"] == "resubscribed"
    assert (
        http.api(
            "POST", "/api/v1/consent/confirm", key, {"email": "anna@example.org", "ip": "192.0.2.1"}
        ).status
        == 200
    )
    assert gw.store.find_suppression(customer.id, "anna@example.org") is not None
    # Revoked and re-subscribed once more, now confirmed by the recipient on our page.
    http.api("POST", "/api/v1/consent/revoke", key, {"email": "anna@example.org"})
    fresh = subscribe(http, key).json()
    assert press_button(http, local_path(fresh["confirm_url"])).status == 200
    assert gw.store.find_suppression(customer.id, "anna@example.org") is None
    assert [h.action for h in gw.store.suppression_history("anna@example.org")] == ["added", "removed"]
    assert rcpt_reply(gw, "anna@example.org")[0] == 250
