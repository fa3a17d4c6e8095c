"""Counters ops alert on, read from /metrics the way Prometheus does: each moves by exactly the
number of actions that should move it (policy crashes and timeouts, feedback taken in, consent
API requests), and not on the actions that should not."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import server as gateway_server
from gateway.core.policy import Policy
from gateway.core.registry import discover
from gateway.core.transaction import Phase
from gateway.core.verdict import Verdict
from gateway.http.apikeys import add_key
from gateway.transports.feedback import feedback_ports
from tests.integration.test_feedback_e2e import (
    BOUNCE_DOMAIN,
    FBL,
    SENDER,
    arf_report,
    deliver_feedback,
    mail_id_of,
    message,
    postfix_dsn,
)
from tests.integration.test_http_support import Http, http_base
from tests.support.gateway import add_customer


class CrashesOnRequest(Policy):
    name = "test-crashes"
    phases = (Phase.DATA,)
    description = "crashes on a message whose body says CRASH-ME"

    def check(self, txn, ctx):  # type: ignore[no-untyped-def]
        if b"CRASH-ME" in txn.raw:
            raise RuntimeError("boom")
        return Verdict.ok()


class SlowOnRequest(Policy):
    name = "test-slow"
    phases = (Phase.DATA,)
    description = "overruns its 0.05 s timeout on a message whose body says SLOW-ME"

    def check(self, txn, ctx):  # type: ignore[no-untyped-def]
        if b"SLOW-ME" in txn.raw:
            time.sleep(0.3)  # six times its timeout, however idle the machine
        return Verdict.ok()


@pytest.fixture
def running(gateway, scripted_mta, tmp_path, monkeypatch):
    """(gateway, downstream, Http of the http listener, feedback port, API key of acme)."""
    found = {**discover(), CrashesOnRequest.name: CrashesOnRequest, SlowOnRequest.name: SlowOnRequest}
    monkeypatch.setattr(gateway_server, "discover", lambda extra=None: dict(found))
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "tls/cert.pem"), "key": str(tmp_path / "tls/key.pem")},
            },
            {"kind": "http", "address": "127.0.0.1", "port": 0},
            {"kind": "feedback", "address": "127.0.0.1", "port": 0},
        ],
        bounce_domain=BOUNCE_DOMAIN,
        feedback={"fbl_address": FBL},
        http={
            "public_url": "https://gw.esp.example",
            "token_key_file": str(tmp_path / "http.key"),
            "api_keys_file": str(tmp_path / "api-keys"),
        },
        policies=[
            {"name": "customer-active", "mode": "enforce"},
            {"name": "suppression", "mode": "enforce"},
            {"name": "test-crashes", "mode": "enforce"},
            {"name": "test-slow", "mode": "enforce", "timeout": 0.05},
        ],
    )
    add_customer(gw.store)
    gw.store.confirm_campaign("acme", "autumn-2026", by="jane@customer.example")
    key, _ = add_key(tmp_path / "api-keys", "acme", "signup form")
    return gw, mta, Http(http_base(gw)), feedback_ports(gw.server)[0], key


def scrape(http: Http) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    reply = http.get("/metrics")
    assert reply.status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: dict, after: dict, name: str) -> dict[frozenset, float]:
    """Every label set of `name` whose value changed, with the change."""
    keys = {k for k in (*before, *after) if k[0] == name}
    return {
        k[1]: after.get(k, 0.0) - before.get(k, 0.0) for k in keys if after.get(k, 0.0) != before.get(k, 0.0)
    }


def labels(**pairs: str) -> frozenset:
    return frozenset(pairs.items())


def submit(gw, body: str) -> tuple[int, bytes]:
    raw = message("anna@example.org").replace(b"our autumn offers are here.", body.encode())
    with gw.client() as smtp:
        assert smtp.mail(SENDER)[0] == 250
        assert smtp.rcpt("anna@example.org")[0] == 250
        return smtp.data(raw)


def test_policy_errors_count_each_crash_and_timeout_of_that_policy(running):
    gw, mta, http, _, _ = running
    start = scrape(http)
    assert submit(gw, "our autumn offers are here.")[0] == 250
    assert moved(start, scrape(http), "gateway_policy_errors_total") == {}

    before = scrape(http)
    for _ in range(2):
        code, text = submit(gw, "CRASH-ME")
        assert (code, text[:5]) == (451, b"4.3.5")
    after = scrape(http)
    assert moved(before, after, "gateway_policy_errors_total") == {labels(policy="test-crashes"): 2}

    code, text = submit(gw, "SLOW-ME")
    assert (code, text[:5]) == (451, b"4.3.5")
    assert moved(after, scrape(http), "gateway_policy_errors_total") == {labels(policy="test-slow"): 1}
    assert len(mta.received) == 1  # the crashed and the slow ones were never relayed


def test_feedback_events_count_each_bounce_and_complaint_by_kind_and_class(running):
    gw, mta, http, port, _ = running
    with gw.client() as smtp:
        for rcpt in ("anna@example.org", "ben@example.org"):
            assert smtp.sendmail(SENDER, [rcpt], message(rcpt)) == {}
    (anna_verp, _, anna_data), (_, _, ben_data) = mta.received
    mail_id_of(anna_verp)  # a genuine VERP address of a message the gateway sent

    before = scrape(http)
    code, _ = deliver_feedback(port, "", anna_verp, postfix_dsn(anna_verp, "anna@example.org", anna_data))
    assert code == 250
    bounced = scrape(http)
    assert moved(before, bounced, "gateway_feedback_events_total") == {
        labels(kind="bounce", **{"class": "hard"}): 1
    }

    code, _ = deliver_feedback(port, "fbl@isp.example", FBL, arf_report(ben_data, "ben@example.org"))
    assert code == 250
    assert moved(bounced, scrape(http), "gateway_feedback_events_total") == {
        labels(kind="complaint", **{"class": "none"}): 1
    }


def test_consent_api_requests_count_by_endpoint_and_status(running):
    gw, _, http, _, key = running
    body = {"email": "anna@example.org", "source": "https://customer.example/newsletter", "ip": "203.0.113.7"}
    before = scrape(http)
    assert http.api("POST", "/api/v1/consent/subscribe", key, body).status == 201
    assert http.api("POST", "/api/v1/consent/subscribe", None, body).status == 401
    assert http.api("POST", "/api/v1/consent/subscribe", "gwk_wrong", body).status == 401
    assert http.api("GET", "/api/v1/consent?email=anna@example.org", key).status == 200
    assert http.api("GET", "/api/v1/consent?email=nobody@example.org", key).status == 404
    after = scrape(http)
    assert moved(before, after, "gateway_consent_api_requests_total") == {
        labels(endpoint="subscribe", status="201"): 1,
        labels(endpoint="subscribe", status="401"): 2,
        labels(endpoint="show", status="200"): 1,
        labels(endpoint="show", status="404"): 1,
    }
    # Pages and /metrics are not API requests.
    assert http.get("/healthz").status == 200
    assert moved(after, scrape(http), "gateway_consent_api_requests_total") == {}
