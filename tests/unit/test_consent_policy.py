"""Policy `consent` (RCPT + DATA), the managed path of policy `unsubscribe` and the managed
List-Unsubscribe headers, on the real SQLite store and the real transaction."""

from __future__ import annotations

import time

import pytest

from gateway.config import parse_config
from gateway.core.policy import PolicyContext
from gateway.core.transaction import Phase, SessionInfo, Transaction
from gateway.core.verdict import Action
from gateway.managed_unsubscribe import ManagedUnsubscribeUnavailable, managed_headers
from gateway.urltokens import CONFIRM, UNSUBSCRIBE, confirm_url, signer_for
from policies.consent import Consent
from policies.unsubscribe import Unsubscribe
from tests.unit.test_policy_support import Env, fixture, reply_of, set_header


@pytest.fixture
def env(tmp_path):
    yield from Env.session(tmp_path)


@pytest.fixture
def config(tmp_path):
    return parse_config(
        {"http": {"public_url": "https://gw.esp.example", "token_key_file": str(tmp_path / "http.key")}},
        base_dir=tmp_path,
        source=tmp_path / "config.yaml",
    )


def ctx(env, config, phase):
    return PolicyContext(phase=phase, store=env.store, config=config)


def rcpt(env, config, address, policy=None):
    txn = Transaction(
        session=SessionInfo(id="t", customer=env.customer), mail_from="b@shop.example", current_rcpt=address
    )
    return (policy or Consent()).check(txn, ctx(env, config, Phase.RCPT))


def data(env, config, address, raw, policy=None):
    txn = Transaction(
        session=SessionInfo(id="t", customer=env.customer), mail_from="b@shop.example", recipients=[address]
    )
    txn.mail_id = "e" * 48
    txn.set_raw(raw)
    return (policy or Consent()).check(txn, ctx(env, config, Phase.DATA))


def subscribe(env, address, *, at=None, confirm=False):
    at = time.time() - 60 if at is None else at
    env.store.consent_subscribe(
        env.customer.id, address, source="https://shop.example/form", at=at, ip="203.0.113.7"
    )
    if confirm:
        env.store.consent_confirm(env.customer.id, address, at=at + 30, ip="198.51.100.3")


def test_no_record_is_refused_with_the_rule_text(env, config):
    verdict = rcpt(env, config, "anna@example.org")
    assert reply_of(verdict) == (
        "550 5.7.1 No confirmed double opt-in is recorded for "
        "anna@example.org; record the subscription and its "
        "confirmation before sending"
    )


def test_confirmed_record_passes(env, config):
    subscribe(env, "anna@example.org", confirm=True)
    verdict = rcpt(env, config, "<Anna@Example.org>")
    assert verdict.action is Action.CONTINUE and "confirmed" in verdict.reason


def test_revoked_record_is_refused(env, config):
    subscribe(env, "anna@example.org", confirm=True)
    env.store.consent_revoke(env.customer.id, "anna@example.org", reason="unsubscribed", via="test")
    assert "the consent was revoked on" in reply_of(rcpt(env, config, "anna@example.org"))


def test_consent_is_per_customer(env, config):
    env.store.add_customer("other", status="active")
    other = env.store.require_customer("other")
    env.store.consent_subscribe(other.id, "anna@example.org", source="x", at=time.time() - 60, ip="192.0.2.1")
    env.store.consent_confirm(other.id, "anna@example.org", at=time.time() - 30, ip="192.0.2.1")
    assert reply_of(rcpt(env, config, "anna@example.org")) is not None


def test_stale_pending_subscription_is_refused(env, config):
    subscribe(env, "anna@example.org", at=time.time() - 3 * 86400)
    assert "was never confirmed" in reply_of(rcpt(env, config, "anna@example.org"))


def test_pending_recipient_gets_only_its_confirmation_mail(env, config, tmp_path):
    subscribe(env, "anna@example.org")
    assert rcpt(env, config, "anna@example.org").action is Action.CONTINUE
    record = env.store.get_consent(env.customer.id, "anna@example.org")
    signer = signer_for(tmp_path / "http.key")
    link = confirm_url(
        "https://gw.esp.example",
        signer.make(CONFIRM, env.customer.id, "anna@example.org", reference=str(record.generation)),
    )
    newsletter = fixture("plain_text.eml")
    refused = data(env, config, "anna@example.org", newsletter)
    assert "only the confirmation mail" in reply_of(refused)
    confirmation = newsletter.replace(b"\r\n\r\n", f"\r\n\r\nPlease confirm: {link}\r\n".encode(), 1)
    assert data(env, config, "anna@example.org", confirmation).action is Action.CONTINUE
    # A link for somebody else, or of another customer, does not open the door.
    other = confirm_url("https://gw.esp.example", signer.make(CONFIRM, env.customer.id, "ben@example.org"))
    wrong = newsletter.replace(b"\r\n\r\n", f"\r\n\r\nConfirm: {other}\r\n".encode(), 1)
    assert reply_of(data(env, config, "anna@example.org", wrong)) is not None
    forged = confirmation.replace(link.encode(), link[:-3].encode() + b"AAA")
    assert reply_of(data(env, config, "anna@example.org", forged)) is not None


def test_pending_window_can_be_closed(env, config):
    subscribe(env, "anna@example.org")
    policy = Consent(Consent.Options(confirmation_window_hours=0))
    assert reply_of(rcpt(env, config, "anna@example.org", policy)) is not None


# -- managed unsubscribe ------------------------------------------------------------------------


def test_unmanaged_customer_without_headers_is_still_refused(env, config):
    raw = set_header(fixture("plain_text.eml"), "List-Unsubscribe")
    raw = set_header(raw, "List-Unsubscribe-Post")
    assert "List-Unsubscribe" in reply_of(data(env, config, "anna@example.org", raw, Unsubscribe()))


def test_managed_customer_is_not_judged_on_the_headers_the_gateway_writes(env, config):
    env.store.set_unsubscribe("acme", env.customer.unsubscribe_prefix, managed=True)
    raw = set_header(fixture("plain_text.eml"), "List-Unsubscribe")
    raw = set_header(raw, "List-Unsubscribe-Post")
    verdict = data(env, config, "anna@example.org", raw, Unsubscribe())
    assert verdict.action is Action.CONTINUE, verdict.reason
    assert verdict.mutations == ()  # the engine stamps them, whatever this policy's mode


def test_managed_headers_carry_a_signed_link_for_this_recipient_list_and_mail(env, config, tmp_path):
    raw = set_header(fixture("plain_text.eml"), "List-Id", "Shop news <news.shop.example>")
    txn = Transaction(
        session=SessionInfo(id="t", customer=env.customer),
        mail_from="b@shop.example",
        recipients=["anna@example.org"],
    )
    txn.mail_id = "e" * 48
    txn.set_raw(raw)
    [(lu, value), post] = managed_headers(config, txn, env.customer.id)
    assert lu == "List-Unsubscribe"
    assert post == ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
    assert value.startswith("<https://gw.esp.example/u/") and value.endswith(">")
    token = value[len("<https://gw.esp.example/u/") : -1]
    claims = signer_for(tmp_path / "http.key").verify(token, UNSUBSCRIBE)
    assert (claims.customer_id, claims.recipient, claims.list_label, claims.reference) == (
        env.customer.id,
        "anna@example.org",
        "news.shop.example",
        "e" * 48,
    )


def test_managed_customer_still_needs_the_visible_link(env, config):
    env.store.set_unsubscribe("acme", None, managed=True)
    verdict = data(env, config, "anna@example.org", fixture("unsub_only_html.eml"), Unsubscribe())
    assert "No visible unsubscribe link" in reply_of(verdict)


def test_managed_headers_without_public_url_are_unavailable(env, tmp_path):
    bare = parse_config({}, base_dir=tmp_path, source=tmp_path / "c.yaml")
    txn = Transaction(
        session=SessionInfo(id="t", customer=env.customer),
        mail_from="b@shop.example",
        recipients=["anna@example.org"],
    )
    with pytest.raises(ManagedUnsubscribeUnavailable, match="public_url"):
        managed_headers(bare, txn, env.customer.id)
