"""Events to customers, end to end (DESIGN §13): a one-click unsubscribe and a hard bounce on a
real gateway reach the customer's real HTTP receiver on loopback, signed per Standard Webhooks
(verified with the `standardwebhooks` library itself), through failures and a restart, and never
on the submission path."""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from gateway.cli import main as cli
from gateway.core.message import header_values
from gateway.transports.feedback import feedback_ports
from tests.integration.test_feedback_e2e import (
    BOUNCE_DOMAIN,
    deliver_feedback,
    mail_id_of,
    postfix_dsn,
)
from tests.integration.test_http_support import (
    IMPRINT,
    PUBLIC,
    SENDER,
    Http,
    http_base,
    local_path,
    message,
    unsubscribe_url_of,
)
from tests.support.gateway import RunningGateway, add_customer, base_config, write_config
from tests.support.webhook_receiver import Receiver

WEBHOOKS = {
    "allow_loopback": True,
    "retry_base_seconds": 0.3,
    "retry_max_seconds": 1.0,
    "poll_interval_seconds": 0.1,
    "timeout_seconds": 5,
    "lease_seconds": 10,
}


def config_for(tmp_path, downstream_port, **overrides):
    return base_config(
        tmp_path,
        downstream_port,
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
        http={
            "public_url": PUBLIC,
            "token_key_file": str(tmp_path / "http.key"),
            "api_keys_file": str(tmp_path / "api-keys"),
        },
        policies=overrides.pop(
            "policies",
            [
                {"name": "customer-active", "mode": "enforce"},
                {"name": "suppression", "mode": "enforce"},
                {"name": "unsubscribe", "mode": "enforce"},
            ],
        ),
        webhooks={**WEBHOOKS, **overrides.pop("webhooks", {})},
        **overrides,
    )


@pytest.fixture
def receiver():
    started: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        r = Receiver(**kwargs).start()
        started.append(r)
        return r

    yield make
    for r in started:
        r.stop()


@pytest.fixture
def node(tmp_path, scripted_mta):
    """node(**config) -> a running gateway on tmp_path's config and store; start it again
    after stop() and it is the same installation (a restart)."""
    mta = scripted_mta()
    running: list[RunningGateway] = []

    def start(**overrides) -> RunningGateway:
        path = write_config(tmp_path, config_for(tmp_path, mta.port, **overrides))
        gw = RunningGateway(path)
        gw.mta = mta
        running.append(gw)
        return gw

    yield start
    for gw in running:
        try:
            gw.stop()
        except Exception:  # noqa: BLE001 - stopped by the test already
            pass


def prepare(gw, url: str) -> str:
    add_customer(gw.store)
    gw.store.set_imprint("acme", IMPRINT)
    gw.store.set_unsubscribe("acme", None, managed=True)
    code = cli(
        ["-c", str(gw.config_path), "webhook", "set", "acme", "--url", url, "--by", "jane@esp.example"]
    )
    assert code == 0
    return gw.store.get_webhook(gw.store.get_customer("acme").id).secret


def send(gw, rcpt: str) -> tuple[str, bytes]:
    with gw.client() as smtp:
        assert smtp.sendmail(SENDER, [rcpt], message(rcpt)) == {}
    mail_from, _, data = gw.mta.received[-1]
    return mail_from, data


def unsubscribe(gw, data: bytes) -> None:
    reply = Http(http_base(gw)).post_form(local_path(unsubscribe_url_of(data)), "List-Unsubscribe=One-Click")
    assert reply.status == 200


def bounce(gw, verp: str, rcpt: str, data: bytes) -> None:
    port = feedback_ports(gw.server)[0]
    assert deliver_feedback(port, "", verp, postfix_dsn(verp, rcpt, data))[0] == 250


def verified(deliveries, secret: str) -> list[dict]:
    """Every delivery's body, verified the way a customer's receiver does."""
    verifier = Verifier(secret)
    return [verifier.verify(d.body, d.headers) for d in deliveries]


def test_unsubscribe_and_hard_bounce_reach_the_receiver_signed_after_two_failures(node, receiver, capsys):
    hooks = receiver(statuses=[500, 503])
    gw = node()
    secret = prepare(gw, hooks.url)
    assert secret.startswith("whsec_") and secret in capsys.readouterr().out  # printed once

    _, anna = send(gw, "anna@example.org")
    [anna_id] = header_values(anna, "X-Mailing-ID")
    unsubscribe(gw, anna)
    verp, ben = send(gw, "ben@example.org")
    bounce(gw, verp, "ben@example.org", ben)

    def complete(delivered):
        types = {(d.event["type"], d.event["data"].get("recipient")) for d in delivered}
        return {
            ("unsubscribe", "anna@example.org"),
            ("bounce", "ben@example.org"),
            ("suppression.added", "anna@example.org"),
            ("suppression.added", "ben@example.org"),
        } <= types

    delivered = hooks.wait_for(complete)
    events = {(e["type"], e["data"]["recipient"]): e for e in verified(delivered, secret)}
    unsub = events[("unsubscribe", "anna@example.org")]
    assert unsub["data"]["via"] == "one-click" and unsub["data"]["mail_id"] == anna_id
    hard = events[("bounce", "ben@example.org")]
    assert hard["data"]["class"] == "hard" and hard["data"]["status"] == "5.1.1"
    assert hard["data"]["mail_id"] == mail_id_of(verp)
    assert "User unknown" in hard["data"]["diagnostic"]
    scope = events[("suppression.added", "ben@example.org")]["data"]
    assert (scope["scope"], scope["reason"]) == ("global", "hard-bounce")
    # The first two answers were errors: those events were sent again with the same id.
    failed_ids = [d.event_id for d in hooks.deliveries if d.status >= 500]
    assert len(failed_ids) == 2
    assert set(failed_ids) <= {d.event_id for d in delivered}
    # Every id is the event's own, and the header matches the body.
    for d in delivered:
        assert d.event_id == d.event["id"] and d.event_id.startswith("evt_")
    # A tampered body does not verify.
    d = delivered[0]
    with pytest.raises(WebhookVerificationError):
        Verifier(secret).verify(d.body.replace(b"example.org", b"example.net"), d.headers)
    lines = [line for line in gw.log_lines() if line.get("event") == "webhook"]
    assert {line["result"] for line in lines} >= {"retry", "delivered"}
    assert all(line["event_id"].startswith("evt_") for line in lines)


def test_a_restart_between_retries_loses_nothing(node, receiver):
    hooks = receiver(statuses=[500] * 3)
    gw = node(webhooks={"retry_base_seconds": 2.0, "retry_max_seconds": 2.0})
    secret = prepare(gw, hooks.url)
    _, anna = send(gw, "anna@example.org")
    unsubscribe(gw, anna)
    deadline = time.monotonic() + 20
    while not any(d.status == 500 for d in hooks.deliveries) and time.monotonic() < deadline:
        time.sleep(0.05)
    gw.stop()  # with the event pending a retry: its lease is given back, the row stays
    pending = gw.store.list_events(gw.store.get_customer("acme").id, state="pending")
    assert {e.type for e in pending} >= {"unsubscribe", "suppression.added"}

    again = node(webhooks={"retry_base_seconds": 0.2, "retry_max_seconds": 0.2})
    delivered = hooks.wait_for(
        lambda ds: {d.event["type"] for d in ds} >= {"unsubscribe", "suppression.added"}
    )
    assert {e["data"]["recipient"] for e in verified(delivered, secret)} == {"anna@example.org"}
    assert again.store.list_events(again.store.get_customer("acme").id, state="pending") == []


def test_events_are_written_with_the_change_and_delivery_never_blocks_submission(node, receiver):
    """A receiver that hangs does not slow sending: the POST runs off the SMTP path."""
    hooks = receiver(delay=3.0)
    gw = node(webhooks={"timeout_seconds": 2, "retry_base_seconds": 30})
    prepare(gw, hooks.url)
    _, anna = send(gw, "anna@example.org")
    unsubscribe(gw, anna)  # answered at once although the receiver will take seconds
    time.sleep(0.3)  # the dispatcher is now waiting on the hanging receiver
    started = time.monotonic()
    for rcpt in ("carl@example.org", "dora@example.org", "emil@example.org"):
        send(gw, rcpt)
    assert time.monotonic() - started < 2.0  # three sends while a POST hangs for 3 s
    customer = gw.store.get_customer("acme")
    rows = gw.store.list_events(customer.id, limit=None)
    assert {(e.type, e.recipient) for e in rows} == {
        ("unsubscribe", "anna@example.org"),
        ("suppression.added", "anna@example.org"),
    }


def test_without_a_webhook_events_are_kept_and_replay_sends_them(node, receiver, capsys):
    gw = node()
    add_customer(gw.store)
    gw.store.set_imprint("acme", IMPRINT)
    gw.store.set_unsubscribe("acme", None, managed=True)
    _, anna = send(gw, "anna@example.org")
    unsubscribe(gw, anna)
    customer = gw.store.get_customer("acme")
    assert {e.state for e in gw.store.list_events(customer.id)} == {"skipped"}

    hooks = receiver()
    config = ["-c", str(gw.config_path)]
    assert cli([*config, "webhook", "set", "acme", "--url", hooks.url, "--by", "jane"]) == 0
    time.sleep(0.5)
    assert hooks.deliveries == []  # what happened before the webhook is not sent by itself
    assert cli([*config, "webhook", "replay", "acme", "--since", "2026-01-01"]) == 0
    assert "2 event(s)" in capsys.readouterr().out
    delivered = hooks.wait_for(lambda ds: len(ds) >= 2)
    assert {d.event["type"] for d in delivered} == {"unsubscribe", "suppression.added"}


def test_failed_after_the_retry_period_and_listed(node, receiver, capsys):
    hooks = receiver(statuses=[500] * 100)
    gw = node(webhooks={"retry_for_hours": 0.0003, "retry_base_seconds": 0.2})  # ~1 s
    prepare(gw, hooks.url)
    _, anna = send(gw, "anna@example.org")
    before = REGISTRY.get_sample_value("gateway_webhook_deliveries_total", {"result": "failed"}) or 0
    unsubscribe(gw, anna)
    customer = gw.store.get_customer("acme")
    deadline = time.monotonic() + 20
    while len(gw.store.list_events(customer.id, state="failed")) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    failed = gw.store.list_events(customer.id, state="failed")
    assert len(failed) == 2 and all(e.last_error == "HTTP 500" for e in failed)
    assert REGISTRY.get_sample_value("gateway_webhook_deliveries_total", {"result": "failed"}) == before + 2
    capsys.readouterr()
    assert cli(["-c", str(gw.config_path), "webhook", "failures", "acme"]) == 0
    out = capsys.readouterr().out
    assert all(e.event_id in out for e in failed) and "HTTP 500" in out


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://hooks.customer.example/x", "https"),
        ("ftp://hooks.customer.example/x", "https"),
        ("https://user:pw@hooks.customer.example/x", "credentials"),
        ("https://hooks.customer.example/x\r\nX-Evil: 1", "control"),
    ],
)
def test_webhook_url_must_be_https(node, capsys, url, problem):
    gw = node()
    add_customer(gw.store)
    code = cli(["-c", str(gw.config_path), "webhook", "set", "acme", "--url", url, "--by", "jane"])
    assert code == 1
    assert problem in capsys.readouterr().err
    assert gw.store.get_webhook(gw.store.get_customer("acme").id) is None


def test_loopback_http_only_when_allowed(node, capsys):
    gw = node(webhooks={"allow_loopback": False})
    add_customer(gw.store)
    assert (
        cli(
            [
                "-c",
                str(gw.config_path),
                "webhook",
                "set",
                "acme",
                "--url",
                "http://127.0.0.1:9/hooks",
                "--by",
                "jane",
            ]
        )
        == 1
    )
    assert "loopback" in capsys.readouterr().err


def test_two_nodes_on_one_postgresql_never_hold_one_event_at_once(postgres_url, receiver):
    """Two dispatchers with their own connections (two nodes) drain one outbox: every event
    is delivered, and no event is ever being POSTed by both at the same time."""
    import asyncio
    import threading

    from gateway.config import Webhooks
    from gateway.store import open_store
    from gateway.webhooks import Dispatcher

    hooks = receiver(delay=0.2)
    one, two = open_store(postgres_url), open_store(postgres_url)
    customer = add_customer(one)
    one.set_webhook(customer.id, hooks.url, None, by="test")
    for n in range(60):
        with one.transaction():
            one.emit_event(customer.id, "unsubscribe", {"via": "one-click"}, recipient=f"r{n}@example.org")
    settings = Webhooks(allow_loopback=True, poll_interval_seconds=0.05, batch_size=5)

    posted = {"a": 0, "b": 0}

    class Counting(Dispatcher):
        async def post(self, url, secret, event):
            posted[self.owner] += 1
            return await super().post(url, secret, event)

    def node(store, name: str) -> None:
        async def run() -> None:
            dispatcher = Counting(store, settings)
            dispatcher.owner = name
            task = asyncio.ensure_future(dispatcher.run())
            deadline = time.monotonic() + 60
            while store.list_events(customer.id, state="pending", limit=1) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            dispatcher.stop()
            await task

        asyncio.run(run())

    threads = [threading.Thread(target=node, args=(s, n)) for s, n in ((one, "a"), (two, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    delivered = hooks.delivered()
    by_id: dict[str, list] = {}
    for d in delivered:
        by_id.setdefault(d.event_id, []).append(d)
    assert len(by_id) == 60
    for attempts in by_id.values():
        attempts.sort(key=lambda d: d.started)
        for first, second in zip(attempts, attempts[1:], strict=False):
            assert second.started >= first.ended  # never two at once
    assert one.list_events(customer.id, state="delivered", limit=None).__len__() == 60
    # Both nodes did part of the work (a lease is per event, not a global lock).
    assert posted["a"] > 0 and posted["b"] > 0 and posted["a"] + posted["b"] == 60


def test_refusals_are_events_only_for_a_customer_that_asked(node, receiver):
    hooks = receiver()
    gw = node(
        policies=[
            {"name": "customer-active", "mode": "enforce"},
            {"name": "role-address", "mode": "enforce"},
            {"name": "unsubscribe", "mode": "enforce"},
        ]
    )
    prepare(gw, hooks.url)  # all default types: message.refused is opt-in, so not included
    customer = gw.store.get_customer("acme")
    with gw.client() as smtp:
        smtp.mail(SENDER)
        assert smtp.rcpt("sales@example.org")[0] == 550
    assert gw.store.list_events(customer.id, limit=None) == []

    assert (
        cli(
            [
                "-c",
                str(gw.config_path),
                "webhook",
                "set",
                "acme",
                "--url",
                hooks.url,
                "--events",
                "message.refused,bounce",
                "--by",
                "jane",
            ]
        )
        == 0
    )
    gw.store._cache.clear()  # the CLI is another process: its change shows after cache_ttl
    with gw.client() as smtp:
        smtp.mail(SENDER)
        assert smtp.rcpt("sales@example.org")[0] == 550
    [delivered] = hooks.wait_for(lambda ds: len(ds) >= 1)
    event = delivered.event
    assert event["type"] == "message.refused"
    assert event["data"]["policy"] == "role-address" and event["data"]["recipient"] == "sales@example.org"
    assert event["data"]["reply"].startswith("550 5.7.1") and event["data"]["phase"] == "rcpt"
