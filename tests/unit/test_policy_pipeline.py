"""The policies inside the real pipeline and engine: modes, errors, timeouts, phase rules,
and discovery through the `gateway.policies` entry points."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.config import Config, PolicyEntry
from gateway.core.pipeline import Pipeline
from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.registry import discover
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Action, Reply, Verdict
from gateway.engine import Engine
from gateway.mailid import MailIdCodec
from tests.unit.test_policy_support import Env, fixture, set_header

POLICY_ERROR = Reply(451, "4.3.5", "Policy check unavailable, please try again later")
ALL_OURS = {
    "role-address": "policies.role_address:RoleAddress",
    "campaign-confirmed": "policies.campaign_confirmed:CampaignConfirmed",
    "message-format": "policies.message_format:MessageFormat",
    "sender-identity": "policies.sender_identity:SenderIdentity",
    "unsubscribe": "policies.unsubscribe:Unsubscribe",
    "imprint": "policies.imprint:ImprintPolicy",
}


class Crashing(Policy):
    name = "test-crashing"
    phases = (Phase.MAIL, Phase.RCPT, Phase.DATA)
    description = "raises"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        raise RuntimeError("/srv/secret/path exploded")


class Slow(Policy):
    name = "test-slow"
    phases = (Phase.RCPT, Phase.DATA)
    description = "never answers in time"

    async def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        await asyncio.sleep(5)
        return Verdict.ok("too late")


class Counting(Policy):
    name = "test-counting"
    phases = (Phase.RCPT, Phase.DATA)
    description = "passes and counts"
    calls = 0

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        type(self).calls += 1
        return Verdict.ok("counted")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    Counting.calls = 0
    yield from Env.session(tmp_path)


def pipeline(*entries: dict[str, Any]) -> Pipeline:
    registry = discover(extra=[Crashing, Slow, Counting])
    return Pipeline.from_config([PolicyEntry(**e) for e in entries], registry)


def run(env: Env, pipe: Pipeline, phase: Phase, raw: bytes = b"", **txn_args: Any):
    return asyncio.run(pipe.run(phase, env.txn(raw, **txn_args), env.ctx(phase)))


def two_froms() -> bytes:
    return set_header(fixture("reference_newsletter.eml"), "From",
                      "a@shop.example", "b@shop.example")


def test_discover_finds_every_policy_through_entry_points() -> None:
    registry = discover()
    for name, target in ALL_OURS.items():
        assert name in registry, f"{name} not registered; run pip install -e ."
        module, _, cls = target.partition(":")
        assert f"{registry[name].__module__}:{registry[name].__qualname__}" == target
        assert registry[name].name == name and registry[name].description
        assert registry[name].phases


def test_monitor_logs_and_passes(env: Env) -> None:
    result = run(env, pipeline({"name": "message-format", "mode": "monitor"}), Phase.DATA,
                 two_froms())
    assert result.passed
    [decision] = result.decisions
    assert decision.would_reject and decision.effective is Action.CONTINUE
    assert decision.verdict.reply == Reply(
        550, "5.6.0", "Message format: 2 From headers; exactly one is required")


def test_crashing_policy_tempfails_without_internals(env: Env) -> None:
    result = run(env, pipeline({"name": "test-crashing"}), Phase.DATA,
                 fixture("reference_newsletter.eml"))
    assert not result.passed and result.verdict.action is Action.TEMPFAIL
    assert result.verdict.reply == POLICY_ERROR
    assert result.decisions[0].error and "exploded" in result.decisions[0].verdict.reason


def test_store_failure_inside_a_real_policy_is_451(env: Env) -> None:
    class Broken:
        def get_campaign(self, *args: Any) -> Any:
            from gateway.store import StoreUnavailable
            raise StoreUnavailable("connection refused")

    pipe = pipeline({"name": "campaign-confirmed"})
    txn = env.txn(fixture("reference_newsletter.eml"))
    ctx = PolicyContext(phase=Phase.DATA, store=Broken(), config=None)
    result = asyncio.run(pipe.run(Phase.DATA, txn, ctx))
    assert result.verdict.reply == POLICY_ERROR and result.decisions[0].error


@pytest.mark.parametrize("on_error, action, reply", [
    (None, Action.TEMPFAIL, POLICY_ERROR),
    ("554 5.7.0 Content check unavailable", Action.REJECT,
     Reply(554, "5.7.0", "Content check unavailable")),
])
def test_timeout_gives_on_error(env: Env, on_error: str | None, action: Action, reply: Reply) -> None:
    entry: dict[str, Any] = {"name": "test-slow", "timeout": 0.05}
    if on_error:
        entry["on_error"] = on_error
    result = run(env, pipeline(entry), Phase.DATA, fixture("reference_newsletter.eml"))
    assert result.verdict.action is action and result.verdict.reply == reply
    assert "timed out" in result.decisions[0].verdict.reason


def test_data_runs_all_and_strictest_wins(env: Env) -> None:
    raw = set_header(two_froms(), "X-Campaign-ID", "not-confirmed")
    pipe = pipeline(
        {"name": "test-slow", "timeout": 0.05},   # tempfail 451
        {"name": "message-format"},               # reject 550 5.6.0 (first reject: wins)
        {"name": "campaign-confirmed"},           # reject 550 5.7.1
        {"name": "test-counting"},                # passes
    )
    result = run(env, pipe, Phase.DATA, raw)
    assert [d.policy for d in result.decisions] == [
        "test-slow", "message-format", "campaign-confirmed", "test-counting"]
    assert [d.verdict.action for d in result.decisions] == [
        Action.TEMPFAIL, Action.REJECT, Action.REJECT, Action.CONTINUE]
    assert result.verdict.policy == "message-format"
    assert result.verdict.reply == Reply(
        550, "5.6.0", "Message format: 2 From headers; exactly one is required")
    assert Counting.calls == 1


def test_rcpt_first_reject_wins(env: Env) -> None:
    pipe = pipeline({"name": "role-address"}, {"name": "test-counting"})
    refused = run(env, pipe, Phase.RCPT, rcpt="sales@example.org")
    assert [d.policy for d in refused.decisions] == ["role-address"] and Counting.calls == 0
    assert refused.verdict.reply == Reply(
        550, "5.7.1", "sales@example.org is a role address; role addresses may not receive campaigns")
    accepted = run(env, pipe, Phase.RCPT, rcpt="jane@example.org")
    assert accepted.passed and Counting.calls == 1


def test_rcpt_monitor_does_not_stop_the_next_policy(env: Env) -> None:
    pipe = pipeline({"name": "role-address", "mode": "monitor"}, {"name": "test-counting"})
    result = run(env, pipe, Phase.RCPT, rcpt="sales@example.org")
    assert result.passed and Counting.calls == 1 and result.decisions[0].would_reject


def test_unknown_option_is_a_config_error() -> None:
    from gateway.core.pipeline import PipelineError
    with pytest.raises(PipelineError, match=r"policies.role-address.options: addd: unknown key"):
        pipeline({"name": "role-address", "options": {"addd": ["x"]}})


def test_engine_shows_the_customer_the_reply_with_the_policy_name(env: Env) -> None:
    config = Config(policies=[PolicyEntry(name="role-address"), PolicyEntry(name="message-format"),
                              PolicyEntry(name="campaign-confirmed")])
    pipe = Pipeline.from_config(config.policies, discover())
    engine = Engine(config, env.store, pipe, codec=MailIdCodec({0: b"k" * 32}, 0))

    async def session() -> tuple[str, str, str]:
        txn, mail = await engine.mail(env.txn().session, "bounce@shop.example")
        rcpt = await engine.rcpt(txn, "Sales+x@example.org")
        await engine.rcpt(txn, "jane@example.org")
        data = await engine.data(txn, set_header(fixture("reference_newsletter.eml"), "Date"))
        return str(mail.reply), str(rcpt.reply), str(data.reply)

    mail, rcpt, data = asyncio.run(session())
    assert mail == "250 2.1.0 Sender OK"
    assert rcpt == ("550 5.7.1 Sales+x@example.org is a role address; role addresses may not "
                    "receive campaigns (role-address)")
    assert data == ("550 5.6.0 Message format: no Date header; exactly one is required "
                    "(message-format)")


def test_reference_newsletter_passes_every_builtin_policy(env: Env) -> None:
    config = Config(policies=[PolicyEntry(name=n) for n in ["customer-active", *ALL_OURS]])
    pipe = Pipeline.from_config(config.policies, discover())
    engine = Engine(config, env.store, pipe, codec=MailIdCodec({0: b"k" * 32}, 0))

    async def session() -> list[str]:
        txn, mail = await engine.mail(env.txn().session, "bounce@news.shop.example")
        rcpt = await engine.rcpt(txn, "jane.doe@example.org")
        data = await engine.data(txn, fixture("reference_newsletter.eml"))
        assert [d.policy for d in data.decisions] == [
            "campaign-confirmed", "message-format", "sender-identity", "unsubscribe", "imprint"]
        assert all(d.verdict.reason for d in data.decisions)
        return [str(mail.reply), str(rcpt.reply), str(data.reply)]

    assert asyncio.run(session()) == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.0.0 OK"]


def test_data_reports_every_refusal_and_the_customer_sees_the_strictest(env: Env) -> None:
    # HTML part without unsubscribe link; text part with another street (the HTML keeps it).
    raw = fixture("unsub_only_text.eml").replace("Königstraße 12".encode(), b"Teststr. 1")
    config = Config(policies=[PolicyEntry(name=n) for n in ALL_OURS])
    engine = Engine(config, env.store, Pipeline.from_config(config.policies, discover()),
                    codec=MailIdCodec({0: b"k" * 32}, 0))

    async def session() -> Any:
        txn, _ = await engine.mail(env.txn().session, "bounce@shop.example")
        await engine.rcpt(txn, "jane.doe@example.org")
        return await engine.data(txn, raw)

    outcome = asyncio.run(session())
    refused = {d.policy: str(d.verdict.reply) for d in outcome.decisions if not d.verdict.passed}
    assert refused == {
        "unsubscribe": "550 5.7.1 No visible unsubscribe link found in the HTML part",
        "imprint": "550 5.7.1 Imprint incomplete: street not found in the text/plain part",
    }
    assert str(outcome.reply) == (
        "550 5.7.1 No visible unsubscribe link found in the HTML part (unsubscribe)")


class BlockingSync(Policy):
    """A plain (thread-run) check that hangs, like a store call that never returns."""

    name = "test-blocking"
    phases = (Phase.DATA,)
    description = "blocks its worker thread"
    seconds = 2.0

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        import time

        time.sleep(self.seconds)
        return Verdict.ok("too late")


def batch_pipeline(*entries: dict[str, Any]) -> Pipeline:
    registry = discover(extra=[BlockingSync, Counting])
    return Pipeline.from_config([PolicyEntry(**e) for e in entries], registry)


def test_a_hanging_sync_check_gives_its_on_error_within_the_phase_budget(env: Env) -> None:
    import time

    pipe = batch_pipeline({"name": "test-counting", "timeout": 0.05},
                          {"name": "test-blocking", "timeout": 0.1})
    raw = fixture("reference_newsletter.eml")

    async def timed():
        started = time.monotonic()
        outcome = await pipe.run(Phase.DATA, env.txn(raw), env.ctx(Phase.DATA))
        return outcome, time.monotonic() - started

    result, seconds = asyncio.run(timed())  # (asyncio.run then waits for the stuck thread)
    assert seconds < 1.0
    assert result.verdict.reply == POLICY_ERROR and not result.passed
    assert [(d.policy, d.error) for d in result.decisions] == [
        ("test-counting", False), ("test-blocking", True)]


def test_a_sync_check_over_its_own_timeout_never_passes(env: Env) -> None:
    BlockingSync.seconds = 0.2
    try:
        pipe = batch_pipeline({"name": "test-blocking", "timeout": 0.1},
                              {"name": "test-counting", "timeout": 5})
        result = run(env, pipe, Phase.DATA, fixture("reference_newsletter.eml"))
    finally:
        BlockingSync.seconds = 2.0
    blocking, counting = result.decisions
    assert blocking.error and "timed out" in blocking.verdict.reason
    assert not counting.error and result.verdict.reply == POLICY_ERROR


class NonBlockingCrash(Crashing):
    name = "test-nonblocking-crash"
    touches = Touches.NOTHING


def test_non_blocking_checks_run_on_the_loop_with_the_same_rules(env: Env) -> None:
    import threading

    seen: list[str] = []

    class Where(Policy):
        name = "test-where"
        phases = (Phase.DATA,)
        description = "records the thread it runs on"
        touches = Touches.NOTHING

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            seen.append(threading.current_thread().name)
            return Verdict.ok()

    registry = discover(extra=[Where, NonBlockingCrash])
    pipe = Pipeline.from_config([PolicyEntry(name="test-where"),
                                 PolicyEntry(name="test-nonblocking-crash")], registry)
    result = run(env, pipe, Phase.DATA, fixture("reference_newsletter.eml"))
    assert seen == ["MainThread"]
    assert result.verdict.reply == POLICY_ERROR and result.decisions[1].error


class StoreReader(Policy):
    """Blocks only by reading the store: a thread for a remote store, the loop for SQLite."""

    name = "test-store-reader"
    phases = (Phase.RCPT,)
    description = "records the thread its store read runs on"
    touches = Touches.STORE
    seen: ClassVar[list[str]] = []

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        import threading

        ctx.store.find_suppression(None, "anna@example.org")
        self.seen.append(threading.current_thread().name)
        return Verdict.ok()


@pytest.mark.parametrize("reads_block, where", [(False, "MainThread"), (True, "worker")])
def test_store_reads_run_on_the_loop_only_when_the_store_cannot_wait(
        env: Env, reads_block: bool, where: str) -> None:
    registry = discover(extra=[StoreReader])
    pipe = Pipeline.from_config([PolicyEntry(name="test-store-reader")], registry)
    ctx = env.ctx(Phase.RCPT)
    assert ctx.store.reads_block is False  # the embedded SQLite
    ctx.store.reads_block = reads_block  # as PostgreSQL says
    StoreReader.seen.clear()
    txn = env.txn(fixture("reference_newsletter.eml"))
    txn.current_rcpt = "anna@example.org"
    result = asyncio.run(pipe.run(Phase.RCPT, txn, ctx))
    assert result.passed
    assert (StoreReader.seen == ["MainThread"]) == (where == "MainThread")
