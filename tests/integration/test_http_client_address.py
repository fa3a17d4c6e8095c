"""The client address stored as consent evidence, logged for unsubscribes and used as the key
of the /report limit: the peer, or behind `http.trusted_proxies` the right-most
X-Forwarded-For entry that is not a trusted proxy. A client's own X-Forwarded-For claim is
never believed."""

from __future__ import annotations

import http.client
from urllib.parse import urlencode, urlsplit

import pytest

from gateway.http.apikeys import add_key
from gateway.urltokens import UNSUBSCRIBE, signer_for
from tests.integration.test_http_support import local_path, page_form, start

PROXIES = ["127.0.0.1/32", "10.0.0.0/8", "2001:db8:ffff::/48"]


def post(base: str, path: str, body: str, headers: list[tuple[str, str]]) -> tuple[int, str]:
    """A form POST with these header lines, repeated names kept (urllib merges them)."""
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.putrequest("POST", path)
        for name, value in [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", str(len(body.encode()))),
            ("Origin", base),
            *headers,
        ]:
            conn.putheader(name, value)
        conn.endheaders(body.encode())
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def start_with(gateway, scripted_mta, tmp_path, trusted, **http):
    gw, _, client, _ = start(
        gateway,
        scripted_mta,
        tmp_path,
        policies=[{"name": "customer-active", "mode": "enforce"}],
        http={"trusted_proxies": trusted, **http},
    )
    return gw, client


def confirmed_ip(gw, client, tmp_path, forwarded: list[str]) -> str:
    """Subscribe, open the confirmation page, press its button with these X-Forwarded-For
    lines; the IP the evidence recorded."""
    key, _ = add_key(tmp_path / "api-keys", "acme")
    answer = client.api(
        "POST",
        "/api/v1/consent/subscribe",
        key,
        {"email": "anna@example.org", "source": "https://customer.example/newsletter", "ip": "192.0.2.10"},
    ).json()
    path = local_path(answer["confirm_url"])
    action, fields = page_form(client.get(path).text, path)
    status, text = post(
        client.base, action, urlencode(fields), [("X-Forwarded-For", line) for line in forwarded]
    )
    assert status == 200, text
    evidence = gw.store.consent_evidence(gw.store.get_customer("acme").id, "anna@example.org")
    assert evidence["status"] == "confirmed"
    return evidence["confirmed_ip"]


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8", "2001:db8::/32"]])
def test_a_client_that_is_no_trusted_proxy_cannot_claim_an_address(gateway, scripted_mta, tmp_path, trusted):
    gw, client = start_with(gateway, scripted_mta, tmp_path, trusted)
    assert confirmed_ip(gw, client, tmp_path, ["203.0.113.9"]) == "127.0.0.1"


@pytest.mark.parametrize(
    "forwarded, expected",
    [
        # forged (written by the client), real (written by the outer proxy), proxy (inner proxy)
        (["198.51.100.66, 203.0.113.7, 10.1.2.3"], "203.0.113.7"),
        # several header lines are one list, in order
        (["198.51.100.66", "203.0.113.7"], "203.0.113.7"),
        (["198.51.100.66, 203.0.113.7", "10.1.2.3"], "203.0.113.7"),
        # garbage the client wrote is left of the real address and never read
        (["unknown, <script>, 203.0.113.7"], "203.0.113.7"),
        (["203.0.113.7,, ,10.1.2.3"], "203.0.113.7"),
        # garbage where the client should be (written by a trusted proxy): the walk stops there and
        # names that proxy, never the forged address further left
        (["198.51.100.66, not-an-address"], "127.0.0.1"),
        (["198.51.100.66, bogus, 10.1.2.3"], "10.1.2.3"),
        # proxies that add the port
        (["203.0.113.7:51234, 10.1.2.3:443"], "203.0.113.7"),
        (["[2001:db8::7]:443"], "2001:db8::7"),
        # IPv6 entries and an IPv6 CIDR of trusted proxies; written in any case or shape
        (["2001:db8::66, 2001:DB8:0:0::7, 2001:db8:ffff::1"], "2001:db8::7"),
        (["::ffff:203.0.113.7"], "203.0.113.7"),
        # only proxies: the left-most of them is the client
        (["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
    ],
)
def test_the_right_most_address_that_is_no_trusted_proxy_is_the_client(
    gateway, scripted_mta, tmp_path, forwarded, expected
):
    gw, client = start_with(gateway, scripted_mta, tmp_path, PROXIES)
    assert confirmed_ip(gw, client, tmp_path, forwarded) == expected


def test_the_unsubscribe_log_names_the_same_client(gateway, scripted_mta, tmp_path):
    gw, client = start_with(gateway, scripted_mta, tmp_path, PROXIES)
    token = signer_for(tmp_path / "http.key").make(
        UNSUBSCRIBE, gw.store.get_customer("acme").id, "anna@example.org"
    )
    status, _ = post(
        client.base,
        f"/u/{token}",
        "List-Unsubscribe=One-Click",
        [("X-Forwarded-For", "198.51.100.66, 203.0.113.7, 10.1.2.3")],
    )
    assert status == 200
    [line] = [entry for entry in gw.log_lines() if entry.get("event") == "unsubscribe"]
    assert line["ip"] == "203.0.113.7"


def report(client, forwarded: str | None) -> int:
    headers = [("X-Forwarded-For", forwarded)] if forwarded else []
    return post(client.base, "/report", "mail_id=no+id+here", headers)[0]


def test_report_limit_keys_on_the_same_client_address(gateway, scripted_mta, tmp_path):
    gw, client = start_with(gateway, scripted_mta, tmp_path, PROXIES, report_limit_per_hour=2)
    # Two clients behind the proxy have a budget each, not one shared by the proxy ...
    assert [report(client, "198.51.100.1, 203.0.113.1") for _ in range(3)] == [422, 422, 429]
    assert [report(client, "203.0.113.2, 10.1.2.3") for _ in range(3)] == [422, 422, 429]
    # ... and a client cannot get a fresh one by writing another address in front.
    assert report(client, "192.0.2.99, 203.0.113.1") == 429
    # An IPv6 client's budget is its /64: it cannot rotate through its 2**64 addresses.
    assert report(client, "2001:db8:1:2::1") == 422
    assert report(client, "2001:db8:1:2:ffff::2") == 422
    assert report(client, "2001:db8:1:2::3") == 429
    assert report(client, "2001:db8:1:3::1") == 422
    raw = b"".join(bytes(row[0]) for row in gw.store.execute("SELECT raw FROM feedback_events"))
    assert b"X-Report-Client-IP: 203.0.113.1\r\n" in raw
    assert b"198.51.100.1" not in raw


def test_report_limit_ignores_the_claims_of_a_client_that_is_no_proxy(gateway, scripted_mta, tmp_path):
    _, client = start_with(gateway, scripted_mta, tmp_path, ["10.0.0.0/8"], report_limit_per_hour=2)
    statuses = [report(client, f"203.0.113.{i}") for i in range(1, 5)]
    assert statuses == [422, 422, 429, 429]
