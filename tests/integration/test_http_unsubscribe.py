"""Managed List-Unsubscribe and the RFC 8058 endpoint, end to end: the gateway adds the
headers before DKIM, the signature covers them, the one-click POST of that URL suppresses at
once (200, no redirect, no cookie, idempotent), GET does not, and the next send is refused."""

from __future__ import annotations

import re
from urllib.parse import urlencode, urljoin

import pytest
from prometheus_client import REGISTRY

from gateway.core.message import header_values
from gateway.dkim import static_dnsfunc, verify
from tests.integration.test_http_support import (
    check_page,
    local_path,
    message,
    page_form,
    rcpt_reply,
    send,
    start,
    unsubscribe_url_of,
)

POLICIES = [
    {"name": "customer-active", "mode": "enforce"},
    {"name": "suppression", "mode": "enforce"},
    {"name": "unsubscribe", "mode": "enforce"},
]


@pytest.fixture
def managed(gateway, scripted_mta, tmp_path):
    return start(gateway, scripted_mta, tmp_path, policies=POLICIES, managed=True)


def test_headers_are_added_replacing_the_clients_and_signed(managed):
    gw, mta, _, records = managed
    raw = message(
        "anna@example.org",
        extra_headers="List-Unsubscribe: <https://evil.example/u>\r\n"
        "List-Id: Shop news <news.customer.example>\r\n",
    )
    data = send(gw, mta, "anna@example.org", raw)
    url = unsubscribe_url_of(data)
    assert url.startswith("https://gw.esp.example/u/")
    assert b"evil.example" not in data
    assert header_values(data, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    [result] = verify(data, static_dnsfunc(records))
    assert result.result == "pass"
    sig = "".join(header_values(data, "DKIM-Signature")).replace(" ", "").replace("\t", "")
    signed = re.search(r"h=([^;]+);", sig.replace("\r\n", "")).group(1).split(":")
    # Present once and oversigned: a second, forged List-Unsubscribe breaks the signature.
    assert signed.count("list-unsubscribe") == 2 and signed.count("list-unsubscribe-post") == 2
    head, body = data.split(b"\r\n\r\n", 1)
    tampered = head + b"\r\nList-Unsubscribe: <https://evil.example/x>\r\n\r\n" + body
    assert [r.result for r in verify(tampered, static_dnsfunc(records))] == ["fail"]


def test_without_managed_the_missing_headers_are_refused(gateway, scripted_mta, tmp_path):
    gw, mta, _, _ = start(gateway, scripted_mta, tmp_path, policies=POLICIES, managed=False)
    with gw.client() as smtp, pytest.raises(Exception) as err:
        smtp.sendmail("news@customer.example", ["anna@example.org"], message("anna@example.org"))
    assert "List-Unsubscribe" in str(err.value)
    assert mta.received == []


def test_one_click_post_suppresses_and_the_next_send_is_refused(managed):
    gw, mta, http, _ = managed
    data = send(gw, mta, "anna@example.org")
    [mail_id] = header_values(data, "X-Mailing-ID")
    path = local_path(unsubscribe_url_of(data))
    customer = gw.store.get_customer("acme")

    # GET (a link scanner, a preview) shows the page and changes nothing.
    page = http.get(path, **{"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
    assert page.status == 200
    check_page(page, "de")
    assert "anna@example.org" in page.text and "Abmelden" in page.text
    assert "Müller &amp; &lt;Söhne&gt; GmbH" in page.text and "<Söhne>" not in page.text
    assert gw.store.find_suppression(customer.id, "anna@example.org") is None

    before = REGISTRY.get_sample_value("gateway_suppressions_total", {"reason": "unsubscribe"}) or 0
    reply = http.post_form(path, "List-Unsubscribe=One-Click")
    assert reply.status == 200
    assert "Location" not in reply.headers and "Set-Cookie" not in reply.headers
    check_page(reply, "en")
    entry = gw.store.find_suppression(customer.id, "anna@example.org")
    assert (entry.reason, entry.customer_id, entry.mail_id) == ("unsubscribe", customer.id, mail_id)
    assert entry.created_by == "http:one-click" and "RFC 8058" in entry.detail
    assert REGISTRY.get_sample_value("gateway_suppressions_total", {"reason": "unsubscribe"}) == before + 1

    # Idempotent: again 200, still one entry, one history line.
    again = http.post_form(path, "List-Unsubscribe=One-Click")
    assert again.status == 200
    assert len(gw.store.list_suppressions(address="anna@example.org")) == 1
    assert [h.action for h in gw.store.suppression_history("anna@example.org")] == ["added"]

    code, text = rcpt_reply(gw, "anna@example.org")
    assert code == 550 and b"unsubscribed on" in text
    # Other recipients of the customer are untouched; the suppression is per customer.
    assert rcpt_reply(gw, "ben@example.org")[0] == 250
    gw.store.add_customer("other")
    assert gw.store.find_suppression(gw.store.get_customer("other").id, "anna@example.org") is None
    log = [line for line in gw.log_lines() if line.get("event") == "unsubscribe"]
    assert log[0]["mail_id"] == mail_id and log[0]["result"] == "added"
    assert log[1]["result"] == "exists"


def test_multipart_one_click_body_is_accepted(managed):
    """RFC 8058 allows multipart/form-data too."""
    gw, mta, http, _ = managed
    path = local_path(unsubscribe_url_of(send(gw, mta, "anna@example.org")))
    body = b'--b\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--b--\r\n'
    reply = http.request("POST", path, body, {"Content-Type": "multipart/form-data; boundary=b"})
    assert reply.status == 200
    assert gw.store.find_suppression(gw.store.get_customer("acme").id, "anna@example.org")


def test_post_without_the_one_click_body_does_nothing(managed):
    gw, mta, http, _ = managed
    path = local_path(unsubscribe_url_of(send(gw, mta, "anna@example.org")))
    assert http.post_form(path, "").status == 400
    assert http.post_form(path, "List-Unsubscribe=Yes").status == 400
    assert gw.store.list_suppressions() == []


def test_forged_altered_and_replayed_tokens_do_nothing(managed, tmp_path):
    from gateway.urltokens import UNSUBSCRIBE, TokenSigner

    gw, mta, http, _ = managed
    path = local_path(unsubscribe_url_of(send(gw, mta, "anna@example.org")))
    token = path.removeprefix("/u/")
    customer = gw.store.get_customer("acme")
    # Altered: every position once.
    for i in range(0, len(token), 7):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        reply = http.post_form("/u/" + changed, "List-Unsubscribe=One-Click")
        assert reply.status == 404, i
        check_page(reply, "en")
    # Forged with another key, for ben@.
    forged = TokenSigner.from_key_file(tmp_path / "other.key").make(
        UNSUBSCRIBE, customer.id, "ben@example.org"
    )
    assert http.post_form("/u/" + forged, "List-Unsubscribe=One-Click").status == 404
    # Replayed for another recipient: the address is inside the token; a query does not count.
    reply = http.post_form(path + "?email=ben@example.org", "List-Unsubscribe=One-Click")
    assert reply.status == 200
    assert gw.store.find_suppression(customer.id, "ben@example.org") is None
    assert gw.store.find_suppression(customer.id, "anna@example.org") is not None
    assert http.get("/u/").status == 404
    assert http.get("/u/" + "A" * 5000).status in (404, 414)


def test_the_page_button_posts_the_same_one_click_body(managed):
    gw, mta, http, _ = managed
    path = local_path(unsubscribe_url_of(send(gw, mta, "anna@example.org")))
    page = http.get(path + "?lang=en")
    form = re.search(r'<form method="post" action="([^"]+)">(.*?)</form>', page.text, re.S)
    # Relative, so that the pages also work under a path prefix of public_url.
    assert form and urljoin(path, form.group(1)) == path + "?lang=en"
    action, fields = page_form(page.text, path)
    assert fields.keys() == {"List-Unsubscribe", "via", "nonce"}
    assert (fields["List-Unsubscribe"], fields["via"]) == ("One-Click", "page")
    reply = http.post_form(action, urlencode(fields), Origin=http.base)
    assert reply.status == 200 and "You are unsubscribed" in reply.text
    entry = gw.store.find_suppression(gw.store.get_customer("acme").id, "anna@example.org")
    assert entry.created_by == "http:page"
    # Once unsubscribed, the GET page says so and offers no button.
    page = http.get(path + "?lang=de")
    assert "bereits abgemeldet" in page.text and "<form" not in page.text
