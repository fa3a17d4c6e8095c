"""suppression: suppressed recipients refused at RCPT, globally or per customer, with a text
naming why and since when."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.transaction import Phase
from gateway.store.feedback import GLOBAL
from policies.suppression import Suppression
from tests.unit.test_policy_support import Env, reply_of

WHEN = datetime.datetime(2026, 11, 2, 14, 30, tzinfo=datetime.UTC).timestamp()


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


@pytest.mark.parametrize(
    "reason, text",
    [
        ("hard-bounce", "550 5.7.1 anna@example.org previously hard-bounced on 2026-11-02; it is suppressed"),
        (
            "soft-bounce",
            "550 5.7.1 anna@example.org soft-bounced repeatedly (suppressed on 2026-11-02); it is suppressed",
        ),
        (
            "complaint",
            "550 5.7.1 anna@example.org complained about mail from this sender on "
            "2026-11-02; it is suppressed",
        ),
        ("unsubscribe", "550 5.7.1 anna@example.org unsubscribed on 2026-11-02; it is suppressed"),
        (
            "manual",
            "550 5.7.1 anna@example.org was put on the suppression list on 2026-11-02; it is suppressed",
        ),
    ],
)
def test_reply_names_the_reason_and_the_date(env: Env, reason: str, text: str) -> None:
    scope = GLOBAL if reason in ("hard-bounce", "soft-bounce") else env.customer.id
    env.store.add_suppression(scope, "Anna@Example.org", reason, mail_id="emailid", at=WHEN)
    verdict = env.check(Suppression(), phase=Phase.RCPT, rcpt="anna@example.org")
    assert reply_of(verdict) == text
    assert "emailid" in verdict.reason and reason in verdict.reason


def test_address_case_and_brackets_do_not_matter(env: Env) -> None:
    env.store.add_suppression(GLOBAL, "anna@example.org", "hard-bounce", at=WHEN)
    verdict = env.check(Suppression(), phase=Phase.RCPT, rcpt="<ANNA@example.ORG>")
    assert reply_of(verdict).startswith("550 5.7.1 ANNA@example.ORG previously hard-bounced")


def test_customer_suppression_does_not_touch_other_customers(env: Env) -> None:
    env.store.add_suppression(env.customer.id, "anna@example.org", "complaint", at=WHEN)
    other = env.store.add_customer("other", status="active")
    assert (
        reply_of(env.check(Suppression(), phase=Phase.RCPT, rcpt="anna@example.org", customer=other)) is None
    )
    assert reply_of(env.check(Suppression(), phase=Phase.RCPT, rcpt="anna@example.org")) is not None


def test_global_entry_wins_over_a_customer_entry(env: Env) -> None:
    env.store.add_suppression(env.customer.id, "anna@example.org", "complaint", at=WHEN)
    env.store.add_suppression(GLOBAL, "anna@example.org", "hard-bounce", at=WHEN + 86400)
    verdict = env.check(Suppression(), phase=Phase.RCPT, rcpt="anna@example.org")
    assert "hard-bounced on 2026-11-03" in reply_of(verdict)


def test_not_suppressed_passes_with_a_reason(env: Env) -> None:
    verdict = env.check(Suppression(), phase=Phase.RCPT, rcpt="ben@example.org")
    assert reply_of(verdict) is None and "not suppressed" in verdict.reason


def test_lifted_suppression_passes_again(env: Env) -> None:
    env.store.add_suppression(GLOBAL, "anna@example.org", "hard-bounce", at=WHEN)
    env.store.remove_suppression(GLOBAL, "anna@example.org", by="test")
    assert reply_of(env.check(Suppression(), phase=Phase.RCPT, rcpt="anna@example.org")) is None
    actions = [c.action for c in env.store.suppression_history("anna@example.org")]
    assert actions == ["added", "removed"]


def test_registered_as_an_rcpt_policy() -> None:
    from gateway.core.registry import discover

    assert discover()["suppression"] is Suppression
    assert Suppression.phases == (Phase.RCPT,)
