"""Feedback intake: attribution by mail ID, verification, suppression, soft-bounce counting,
complaint rate and suspension, against a real store (SQLite here; PostgreSQL in
tests/integration/test_feedback_store.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.feedback.intake import Intake, accepts_recipient, conclude
from gateway.logging import EventLogger, LogfmtFormatter, parse_logfmt
from gateway.store.feedback import GLOBAL
from tests.unit.test_intake_support import (
    ABUSE,
    BOUNCE_DOMAIN,
    FBL,
    POLICY_BLOCK,
    SOFT,
    IntakeEnv,
    arf,
    dsn,
    forward,
)

ANNA = "anna@example.org"


@pytest.fixture
def ienv(tmp_path: Path) -> Iterator[IntakeEnv]:
    yield from IntakeEnv.session(tmp_path)


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, str]] = []
        self.setFormatter(LogfmtFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(parse_logfmt(self.format(record)))

    def events(self, name: str) -> list[dict[str, str]]:
        return [line for line in self.lines if line.get("event") == name]


@pytest.fixture
def logs(ienv: IntakeEnv) -> Captured:
    logger = logging.getLogger("test.intake")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = Captured()
    logger.addHandler(handler)
    ienv.intake.log = EventLogger(logger)
    yield handler
    logger.removeHandler(handler)


# -- bounces -----------------------------------------------------------------------------------


def test_hard_bounce_by_verp_suppresses_globally_with_the_mail_id(ienv, logs):
    mail_id = ienv.send(ANNA)
    raw = dsn(mail_id, ANNA)
    result = ienv.ingest(raw, envelope_from="", envelope_to=[f"m-{mail_id}@{BOUNCE_DOMAIN}"])
    event = ienv.store.get_feedback_event(result.event.id)
    assert (event.kind, event.bounce_class, event.status) == ("bounce", "hard", "5.1.1")
    assert (event.mail_id, event.mail_id_status, event.attribution) == (mail_id, "genuine", "verp")
    assert event.customer_id == ienv.customer.id and event.campaign_id == ienv.campaign.id
    assert event.recipient == ANNA and event.acted
    assert ienv.store.get_feedback_raw(event.id) == raw
    entry = ienv.store.find_suppression(ienv.customer.id, ANNA)
    assert entry.is_global and entry.reason == "hard-bounce" and entry.mail_id == mail_id
    assert entry.feedback_id == event.id and "5.1.1" in entry.detail
    # global: another customer is refused too
    other = ienv.store.add_customer("other", status="active")
    assert ienv.store.find_suppression(other.id, "Anna@Example.org") is not None
    feedback = logs.events("feedback")[0]
    assert feedback["mail_id"] == mail_id and feedback["class"] == "hard"
    assert feedback["customer"] == "acme" and feedback["campaign"] == "autumn-2026"
    suppression = logs.events("suppression")[0]
    assert (suppression["scope"], suppression["reason"], suppression["result"]) == (
        "global",
        "hard-bounce",
        "added",
    )


def test_bounce_found_by_the_returned_header_when_there_is_no_verp(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(dsn(mail_id, ANNA, verp=False))
    assert result.event.attribution == "header"
    assert result.event.mail_id == mail_id and result.event.acted


def test_bounce_without_any_id_is_not_acted_on_even_when_we_mailed_that_address(ienv, logs):
    """RULES.md "Only what the gateway sent can be bounced": anyone can send the feedback
    listener a DSN naming an address we mail; without a verifying ID it changes nothing. The
    newest message to that address is noted for the abuse team, never acted on."""
    ienv.send(ANNA, at=ienv.now - 3600)
    newest = ienv.send(ANNA, at=ienv.now - 60)
    result = ienv.ingest(dsn(None, ANNA))
    event = ienv.store.get_feedback_event(result.event.id)
    assert (event.kind, event.bounce_class, event.mail_id) == ("bounce", "hard", None)
    assert not event.acted and event.recipient is None
    assert event.details["unverified"] == "no-id"
    assert event.details["probable_mail_id"] == newest
    assert ienv.store.list_suppressions() == []
    line = logs.events("feedback")[0]
    assert (line["verified"], line["unverified"]) == ("no", "no-id")
    assert "not acted on" in line["action"]


def test_final_recipient_fallback_off_does_not_look_up_the_ledger(tmp_path):
    env = IntakeEnv(tmp_path, final_recipient_fallback=False)
    env.send(ANNA)
    result = env.ingest(dsn(None, ANNA))
    assert result.event.mail_id is None and not result.event.acted
    assert "probable_mail_id" not in result.event.details
    assert env.store.list_suppressions() == []


def test_bounce_without_id_or_ledger_row_is_stored_but_not_acted_on(ienv, logs):
    result = ienv.ingest(dsn(None, "stranger@example.org"))
    event = ienv.store.get_feedback_event(result.event.id)
    assert event.kind == "bounce" and event.mail_id is None and event.mail_id_status == "none"
    assert not event.acted and "no mail ID" in event.action
    assert ienv.store.list_suppressions() == []


def test_bounce_naming_another_address_than_the_id_was_minted_for_changes_nothing(ienv, logs):
    """Whoever got our mail knows its VERP address; a bounce they make up naming another
    address must not suppress that address, nor (RULES.md: "recipient not the one the ID was
    minted for ... changes nothing") the recipient of the ID."""
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(dsn(mail_id, "victim@example.org"))
    event = ienv.store.get_feedback_event(result.event.id)
    assert event.mail_id_status == "genuine" and not event.acted and event.recipient is None
    assert event.details["unverified"] == "recipient-mismatch"
    assert ienv.store.list_suppressions() == []
    line = logs.events("feedback")[0]
    assert (line["unverified"], line["level"]) == ("recipient-mismatch", "warning")


def test_not_recipient_fault_is_counted_for_the_customer_never_suppressed(ienv, logs):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(dsn(mail_id, ANNA, **POLICY_BLOCK))
    assert result.event.bounce_class == "not-recipient-fault"
    assert result.event.acted and result.event.customer_id == ienv.customer.id
    assert "not suppressed" in result.event.action
    assert ienv.store.list_suppressions() == []
    assert logs.events("feedback")[0]["class"] == "not-recipient-fault"


def test_delay_notification_is_information_only(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(
        dsn(mail_id, ANNA, action="delayed", status="4.2.2", diagnostic="452 4.2.2 <{rcpt}>: Mailbox full")
    )
    assert result.event.kind == "delay" and not result.event.acted
    assert ienv.store.list_suppressions() == []


# -- soft bounces ------------------------------------------------------------------------------


def _soft(ienv: IntakeEnv, rcpt: str = ANNA):
    mail_id = ienv.send(rcpt)
    ienv.now += 60
    return ienv.ingest(dsn(mail_id, rcpt, **SOFT))


def test_three_soft_bounces_within_the_window_suppress_globally(ienv):
    first = _soft(ienv)
    assert first.event.bounce_class == "soft" and "soft bounce 1 of 3" in first.event.action
    ienv.days(10)
    assert "soft bounce 2 of 3" in _soft(ienv).event.action
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is None
    ienv.days(10)
    third = _soft(ienv)
    entry = ienv.store.find_suppression(ienv.customer.id, ANNA)
    assert entry is not None and entry.is_global and entry.reason == "soft-bounce"
    assert entry.mail_id == third.event.mail_id and "3 soft bounces" in entry.detail


def test_soft_bounces_outside_the_window_do_not_add_up(ienv):
    _soft(ienv)
    ienv.days(20)
    _soft(ienv)
    ienv.days(20)  # the first is now 40 days old
    result = _soft(ienv)
    assert "soft bounce 2 of 3" in result.event.action
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is None


def test_a_successful_delivery_in_between_resets_the_count(ienv):
    _soft(ienv)
    ienv.days(1)
    _soft(ienv)
    ienv.days(1)
    ienv.send(ANNA)  # relayed, and it never bounces: delivered
    ienv.days(1)
    assert "soft bounce 1 of 3" in _soft(ienv).event.action
    ienv.days(1)
    assert "soft bounce 2 of 3" in _soft(ienv).event.action
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is None
    ienv.days(1)
    _soft(ienv)
    assert ienv.store.find_suppression(ienv.customer.id, ANNA).reason == "soft-bounce"


def test_late_bounces_of_mails_sent_before_a_good_delivery_do_not_count(ienv):
    """Bounces arrive after the fact: what counts is whether a delivery was relayed after the
    bounced mail, not when the bounce arrived."""
    ids = [ienv.send(ANNA, at=ienv.now + i) for i in range(3)]
    ienv.send(ANNA, at=ienv.now + 10)  # relayed after them, never bounces
    ienv.now += 3600
    for mail_id in ids:
        result = ienv.ingest(dsn(mail_id, ANNA, **SOFT))
    assert "soft bounce 0 of 3" in result.event.action
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is None


def test_a_second_copy_of_the_same_bounce_counts_once(ienv):
    mail_id = ienv.send(ANNA)
    for _ in range(3):
        result = ienv.ingest(dsn(mail_id, ANNA, **SOFT))
    assert "soft bounce 1 of 3" in result.event.action


def test_removing_a_soft_bounce_suppression_resets_the_count(ienv):
    for _ in range(3):
        _soft(ienv)
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is not None
    ienv.now += 60
    ienv.store.remove_suppression(GLOBAL, ANNA, by="test", at=ienv.now)
    ienv.now += 60
    assert "soft bounce 1 of 3" in _soft(ienv).event.action
    assert ienv.store.find_suppression(ienv.customer.id, ANNA) is None


def test_soft_bounce_threshold_is_configurable(tmp_path):
    env = IntakeEnv(tmp_path, soft_bounce_threshold=1)
    _soft(env)
    assert env.store.find_suppression(env.customer.id, ANNA).reason == "soft-bounce"


# -- complaints --------------------------------------------------------------------------------


def test_arf_complaint_suppresses_for_that_customer_only(ienv, logs):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(arf(mail_id, ANNA), envelope_to=[FBL])
    event = ienv.store.get_feedback_event(result.event.id)
    assert (event.kind, event.feedback_type, event.mail_id_status) == ("complaint", "abuse", "genuine")
    assert event.acted and event.customer_id == ienv.customer.id
    assert event.campaign_id == ienv.campaign.id and event.attribution == "verp"
    entry = ienv.store.find_suppression(ienv.customer.id, ANNA)
    assert entry.customer_id == ienv.customer.id and entry.reason == "complaint"
    assert entry.mail_id == mail_id
    other = ienv.store.add_customer("other", status="active")
    assert ienv.store.find_suppression(other.id, ANNA) is None
    assert [e["action"] for e in logs.events("complaint_rate")] == ["warning"]


def test_redacted_arf_recipient_is_taken_from_the_ledger(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(arf(mail_id, None))  # To: redacted@example.org in the original
    assert result.event.recipient == ANNA
    assert result.event.details["recipient_from"] == "ledger"


def test_complaint_found_by_the_verp_original_mail_from(ienv):
    mail_id = ienv.send(ANNA)
    raw = arf(mail_id, ANNA, with_verp=True, return_path=False).replace(
        f"X-Mailing-ID: {mail_id}\r\n".encode(), b""
    )
    result = ienv.ingest(raw)
    assert result.event.mail_id == mail_id and result.event.attribution == "verp"


def test_complaint_found_by_the_header_of_the_attached_original(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(arf(mail_id, ANNA, return_path=False))
    assert result.event.mail_id == mail_id and result.event.attribution == "header"


def test_forward_as_attachment_to_abuse_is_a_complaint(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(forward(mail_id, ANNA), envelope_to=[ABUSE])
    assert result.event.kind == "complaint" and result.event.acted
    assert ienv.store.find_suppression(ienv.customer.id, ANNA).reason == "complaint"


def test_the_same_complaint_twice_counts_once(ienv):
    mail_id = ienv.send(ANNA)
    ienv.ingest(arf(mail_id, ANNA))
    again = ienv.ingest(forward(mail_id, ANNA))
    assert not again.event.acted and "duplicate" in again.event.action
    assert ienv.store.count_complaints(ienv.customer.id, ienv.now - 86400) == 1


def test_opt_out_report_is_an_unsubscribe_not_a_complaint(ienv):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(arf(mail_id, ANNA, feedback_type="opt-out"))
    assert result.event.kind == "unsubscribe" and result.rate is None
    assert ienv.store.find_suppression(ienv.customer.id, ANNA).reason == "unsubscribe"
    assert ienv.store.count_complaints(ienv.customer.id, 0) == 0


@pytest.mark.parametrize("feedback_type", ["not-spam", "auth-failure"])
def test_not_spam_and_auth_failure_reports_are_not_complaints(ienv, feedback_type):
    mail_id = ienv.send(ANNA)
    result = ienv.ingest(arf(mail_id, ANNA, feedback_type=feedback_type))
    assert result.event.kind == "other" and not result.event.acted
    assert ienv.store.list_suppressions() == []
    assert ienv.store.count_complaints(ienv.customer.id, 0) == 0


def test_forged_mail_id_is_reported_and_not_acted_on(ienv, logs):
    forged = ienv.forged(ANNA)
    result = ienv.ingest(arf(forged, ANNA))
    event = ienv.store.get_feedback_event(result.event.id)
    assert (event.mail_id, event.mail_id_status) == (forged, "forged")
    assert not event.acted and "forged" in event.action and event.customer_id is None
    assert ienv.store.list_suppressions() == []
    assert ienv.store.count_complaints(ienv.customer.id, 0) == 0
    line = logs.events("feedback")[0]
    assert line["level"] == "warning" and line["mail_id_status"] == "forged"
    assert not logs.events("complaint_rate")


def test_altered_mail_id_is_reported_as_altered(ienv):
    mail_id = ienv.send(ANNA)
    altered = mail_id[:20] + ("a" if mail_id[20] != "a" else "b") + mail_id[21:]
    result = ienv.ingest(arf(altered, ANNA))
    assert result.event.mail_id_status == "altered" and not result.event.acted
    assert ienv.store.list_suppressions() == []


def test_a_genuine_id_wins_over_a_forged_one_quoted_in_the_same_report(ienv):
    mail_id = ienv.send(ANNA)
    raw = arf(mail_id, ANNA).replace(
        b"This is an email abuse report",
        f"See also {ienv.forged(ANNA)}. This is an email abuse report".encode(),
    )
    result = ienv.ingest(raw)
    assert result.event.mail_id == mail_id and result.event.acted


# -- complaint rate ----------------------------------------------------------------------------


def _rate_env(tmp_path, **overrides):
    settings = {"complaint_warning_rate": 0.1, "complaint_suspend_rate": 0.3, "complaint_min_messages": 5}
    settings.update(overrides)
    return IntakeEnv(tmp_path, **settings)


def test_complaint_rate_warns_then_suspends_the_customer(tmp_path):
    env = _rate_env(tmp_path)
    ids = [env.send(f"r{i}@example.org") for i in range(10)]
    first = env.ingest(arf(ids[0], "r0@example.org"))
    assert (first.rate.complaints, first.rate.messages, first.rate.action) == (1, 10, "warning")
    env.ingest(arf(ids[1], "r1@example.org"))
    assert env.store.require_customer("acme").status == "active"
    third = env.ingest(arf(ids[2], "r2@example.org"))
    assert third.rate.action == "suspended" and "customer suspended" in third.event.action
    customer = env.store.require_customer("acme")
    assert customer.status == "suspended"
    assert "complaint rate 30.00%" in customer.status_reason
    assert "3 complaints / 10 messages" in customer.status_reason


def test_few_messages_do_not_suspend(tmp_path):
    env = _rate_env(tmp_path, complaint_min_messages=1000)
    mail_id = env.send(ANNA)
    result = env.ingest(arf(mail_id, ANNA))
    assert result.rate.rate == 1.0 and result.rate.action == "over-limit-few-messages"
    assert env.store.require_customer("acme").status == "active"


def test_complaints_older_than_the_window_do_not_count(tmp_path):
    env = _rate_env(tmp_path)
    ids = [env.send(f"r{i}@example.org") for i in range(10)]
    env.ingest(arf(ids[0], "r0@example.org"))
    env.ingest(arf(ids[1], "r1@example.org"))
    env.days(8)
    fresh = [env.send(f"s{i}@example.org") for i in range(10)]
    result = env.ingest(arf(fresh[0], "s0@example.org"))
    assert (result.rate.complaints, result.rate.messages) == (1, 10)
    assert env.store.require_customer("acme").status == "active"


def test_a_pending_customer_is_not_suspended_over_it(tmp_path):
    env = _rate_env(tmp_path, complaint_min_messages=1)
    mail_id = env.send(ANNA)
    env.store.set_customer_status("acme", "pending")
    result = env.ingest(arf(mail_id, ANNA))
    assert result.rate.action == "over-limit-not-active"
    assert env.store.require_customer("acme").status == "pending"


def test_auto_suspend_off_only_warns(tmp_path):
    env = _rate_env(tmp_path, complaint_min_messages=1, auto_suspend=False)
    mail_id = env.send(ANNA)
    assert env.ingest(arf(mail_id, ANNA)).rate.action == "warning"
    assert env.store.require_customer("acme").status == "active"


# -- storage and the listener's recipient rule --------------------------------------------------


def test_raw_copy_is_size_bounded(tmp_path):
    env = IntakeEnv(tmp_path, max_raw_bytes=1024)
    mail_id = env.send(ANNA)
    raw = dsn(mail_id, ANNA) + b"x" * 5000
    result = env.ingest(raw)
    event = env.store.get_feedback_event(result.event.id)
    assert event.raw_size == len(raw) and event.raw_truncated
    assert env.store.get_feedback_raw(event.id) == raw[:1024]
    assert event.acted  # the parse saw the whole message


def test_listener_accepts_only_feedback_addresses(ienv):
    config = ienv.config
    assert accepts_recipient(config, f"m-abc@{BOUNCE_DOMAIN}")
    assert accepts_recipient(config, f"<M-ABC@{BOUNCE_DOMAIN.upper()}>")
    assert accepts_recipient(config, FBL) and accepts_recipient(config, ABUSE.upper())
    assert not accepts_recipient(config, "anna@example.org")
    assert not accepts_recipient(config, f"m-abc@sub.{BOUNCE_DOMAIN}")
    assert not accepts_recipient(config, f"m-abc@{BOUNCE_DOMAIN}.evil.example")
    assert not accepts_recipient(config, "postmaster")


def test_conclude_changes_nothing(ienv):
    mail_id = ienv.send(ANNA)
    conclusion = conclude(dsn(mail_id, ANNA), ienv.config, ienv.codec)
    assert conclusion.json_dict("x.eml") == {
        "file": "x.eml",
        "kind": "bounce",
        "recipients": [ANNA],
        "class": "hard",
        "status": "5.1.1",
        "reason": conclusion.analysis.reason,
        "mail_id": mail_id,
        "mail_id_valid": True,
    }
    assert ienv.store.list_feedback_events() == [] and ienv.store.list_suppressions() == []


def test_store_failure_leaves_nothing_half_done(ienv):
    mail_id = ienv.send(ANNA)

    class Boom(Exception):
        pass

    def broken(*args, **kwargs):
        raise Boom()

    ienv.store.add_suppression = broken  # type: ignore[method-assign]
    with pytest.raises(Boom):
        ienv.ingest(dsn(mail_id, ANNA))
    assert ienv.store.list_feedback_events() == []


def test_intake_uses_the_configured_header_and_prefix(tmp_path):
    env = IntakeEnv(tmp_path)
    config = env.config.model_copy(
        update={"mail_id": env.config.mail_id.model_copy(update={"header": "X-ESP-ID", "verp_prefix": "b"})}
    )
    intake = Intake(config, env.store, env.codec, clock=lambda: env.now)
    mail_id = env.send(ANNA)
    raw = (
        dsn(mail_id, ANNA)
        .replace(b"X-Mailing-ID", b"X-ESP-ID")
        .replace(f"m-{mail_id}".encode(), f"b-{mail_id}".encode())
    )
    result = intake.ingest(raw, source="test")
    assert result.event.mail_id == mail_id and result.event.attribution == "verp"
