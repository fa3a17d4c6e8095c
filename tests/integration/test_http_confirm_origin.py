"""The DOI confirmation counts only when the recipient pressed the button on our page: a
sign-up page that posts /c/TOKEN itself (cross-origin, with or without a nonce it fetched)
confirms nothing. The RFC 8058 one-click POST stays cross-origin and nonce-free."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from prometheus_client import REGISTRY

from gateway.cli.consent import export_text
from gateway.http.apikeys import add_key
from gateway.urltokens import TokenSigner, signer_for
from tests.integration.test_http_support import (
    PUBLIC,
    check_page,
    local_path,
    page_form,
    start,
)

EVIL = "https://signup.evil.example"


@pytest.fixture
def doi(gateway, scripted_mta, tmp_path):
    gw, _, http, _ = start(
        gateway, scripted_mta, tmp_path, policies=[{"name": "customer-active", "mode": "enforce"}]
    )
    key, _ = add_key(tmp_path / "api-keys", "acme")

    def subscribe(email: str) -> str:
        reply = http.api(
            "POST",
            "/api/v1/consent/subscribe",
            key,
            {"email": email, "source": "https://customer.example/newsletter", "ip": "203.0.113.7"},
        )
        return local_path(reply.json()["confirm_url"])

    return gw, http, subscribe


def form_of(http, path: str) -> tuple[str, dict[str, str]]:
    return page_form(http.get(path).text, path)


def refused_total() -> float:
    return (
        REGISTRY.get_sample_value(
            "gateway_http_page_actions_total", {"page": "confirm", "result": "not-from-page"}
        )
        or 0.0
    )


def confirm_events(gw, email: str) -> list:
    customer = gw.store.get_customer("acme")
    return [h for h in gw.store.consent_history(customer.id, email) if h.event == "confirm"]


def status_of(gw, email: str) -> str:
    return gw.store.get_consent(gw.store.get_customer("acme").id, email).status


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": EVIL},  # a sign-up page's hidden form
        {"Origin": EVIL, "Referer": "http://127.0.0.1/"},
        {"Origin": "null"},  # the same page with no-referrer
        {"Origin": "null", "Referer": f"{PUBLIC}/"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Referer": f"{EVIL}/thanks"},
        {"Origin": "https://gw.esp.example.evil.example"},
        {"Origin": "http://gw.esp.example"},  # public_url is https
    ],
)
def test_cross_origin_confirmation_is_refused(doi, headers):
    gw, http, subscribe = doi
    path = subscribe("anna@example.org")
    # Even with a genuine nonce of this very page (anyone with the token can fetch it).
    action, fields = form_of(http, path)
    before = refused_total()
    reply = http.post_form(action, urlencode(fields), **headers)
    assert reply.status == 403
    check_page(reply, "en")
    assert "did not come from our confirmation page" in reply.text
    assert re.search(r'<a href="[^"]+\?lang=en">Open the confirmation page</a>', reply.text)
    assert status_of(gw, "anna@example.org") == "pending"
    assert confirm_events(gw, "anna@example.org") == []
    assert refused_total() == before + 1


def test_same_origin_needs_a_valid_nonce_of_this_page(doi, tmp_path):
    gw, http, subscribe = doi
    anna, ben = subscribe("anna@example.org"), subscribe("ben@example.org")
    action, fields = form_of(http, anna)
    _, ben_fields = form_of(http, ben)
    token = anna.removeprefix("/c/")
    signer = signer_for(tmp_path / "http.key")
    key_id, issued, mac = fields["nonce"].split(".")
    bad_nonces = [
        "",  # missing
        ben_fields["nonce"],  # another token's page
        signer.page_nonce(token, now=int(issued) - 2 * 86400),  # expired
        signer.page_nonce(token, now=int(issued) + 3600),  # from the future
        TokenSigner.from_key_file(tmp_path / "x.key").page_nonce(token),  # another key
        f"{key_id}.{int(issued) + 1}.{mac}",  # altered time
        f"{key_id}.{issued}.{mac[:-2]}AA",  # altered MAC
        "garbage",
    ]
    for nonce in bad_nonces:
        reply = http.post_form(action, urlencode({**fields, "nonce": nonce}), Origin=http.base)
        assert reply.status == 403, nonce
    assert status_of(gw, "anna@example.org") == "pending"
    assert status_of(gw, "ben@example.org") == "pending"
    # Ben's nonce works on ben's page only.
    reply = http.post_form(ben, urlencode(ben_fields), Origin=http.base)
    assert reply.status == 200 and "is confirmed" in reply.text
    assert status_of(gw, "anna@example.org") == "pending"


@pytest.mark.parametrize(
    "headers, how",
    [
        ({"Origin": "{base}"}, "origin"),  # the listener reached directly
        ({"Origin": PUBLIC}, "origin"),  # through the TLS proxy of public_url
        ({"Sec-Fetch-Site": "same-origin"}, "sec-fetch-site"),
        ({"Origin": "null", "Sec-Fetch-Site": "same-origin"}, "sec-fetch-site"),
        ({"Referer": "{base}/c/x"}, "referer"),
        # Neither header: not a browser posting another site's form (browsers always send
        # Origin on POST); accepted with the nonce, and the evidence says it was not seen.
        ({}, "unverified"),
    ],
)
def test_confirmation_from_our_page_is_recorded_with_how_it_was_seen(doi, headers, how):
    gw, http, subscribe = doi
    path = subscribe("anna@example.org")
    action, fields = form_of(http, path)
    sent = {k: v.format(base=http.base) for k, v in headers.items()}
    reply = http.post_form(action, urlencode(fields), **sent)
    assert reply.status == 200 and "is confirmed" in reply.text
    [event] = confirm_events(gw, "anna@example.org")
    assert event.detail == {"result": "confirmed", "origin_check": how, "page_nonce": "valid"}
    assert event.ip == "127.0.0.1"
    assert status_of(gw, "anna@example.org") == "confirmed"
    export = gw.store.consent_export(gw.store.get_customer("acme").id, "anna@example.org")
    assert f"result confirmed, origin check {how}, page nonce valid" in export_text(export, "gw")


def test_one_click_unsubscribe_stays_cross_origin_but_the_page_button_is_checked(doi, tmp_path):
    gw, http, _ = doi
    customer = gw.store.get_customer("acme")
    signer = signer_for(tmp_path / "http.key")
    # RFC 8058: a mail provider's server posts, from anywhere, without any nonce.
    one_click = "/u/" + signer.make("u", customer.id, "anna@example.org")
    reply = http.post_form(one_click, "List-Unsubscribe=One-Click", Origin=EVIL)
    assert reply.status == 200 and "You are unsubscribed" in reply.text
    assert gw.store.find_suppression(customer.id, "anna@example.org").created_by == "http:one-click"
    # A post that claims to be the page's button but comes from elsewhere unsubscribes as a
    # one-click (harmless), and is not recorded as the recipient using our page.
    page = "/u/" + signer.make("u", customer.id, "ben@example.org")
    action, fields = form_of(http, page)
    reply = http.post_form(action, urlencode(fields), Origin=EVIL)
    assert reply.status == 200
    assert gw.store.find_suppression(customer.id, "ben@example.org").created_by == "http:one-click"
    # The real button: same origin and the page's nonce.
    page = "/u/" + signer.make("u", customer.id, "carl@example.org")
    action, fields = form_of(http, page)
    assert http.post_form(action, urlencode(fields), Origin=http.base).status == 200
    assert gw.store.find_suppression(customer.id, "carl@example.org").created_by == "http:page"
