"""The policies inside the real pipeline and engine: modes, errors, timeouts, phase rules,
and discovery through the `gateway.policies` entry points."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from gateway.config import Config, PolicyEntry
from gateway.core.pipeline import Pipeline
from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.registry import discover
from gateway.core.transaction import Phase, SessionInfo, Transaction
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
    return set_header(fixture("reference_newsletter.eml"), "From", "a@shop.example", "b@shop.example")


def test_discover_finds_every_policy_through_entry_points() -> None:
    registry = discover()
    for name, target in ALL_OURS.items():
        assert name in registry, f"{name} not registered; run pip install -e ."
        module, _, cls = target.partition(":")
        assert f"{registry[name].__module__}:{registry[name].__qualname__}" == target
        assert registry[name].name == name and registry[name].description
        assert registry[name].phases


def test_monitor_logs_and_passes(env: Env) -> None:
    result = run(env, pipeline({"name": "message-format", "mode": "monitor"}), Phase.DATA, two_froms())
    assert result.passed
    [decision] = result.decisions
    assert decision.would_reject and decision.effective is Action.CONTINUE
    assert decision.verdict.reply == Reply(
        550, "5.6.0", "Message format: 2 From headers; exactly one is required"
    )


def test_crashing_policy_tempfails_without_internals(env: Env) -> None:
    result = run(env, pipeline({"name": "test-crashing"}), Phase.DATA, fixture("reference_newsletter.eml"))
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


@pytest.mark.parametrize(
    "on_error, action, reply",
    [
        (None, Action.TEMPFAIL, POLICY_ERROR),
        (
            "554 5.7.0 Content check unavailable",
            Action.REJECT,
            Reply(554, "5.7.0", "Content check unavailable"),
        ),
    ],
)
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
        {"name": "test-slow", "timeout": 0.05},  # tempfail 451
        {"name": "message-format"},  # reject 550 5.6.0 (first reject: wins)
        {"name": "campaign-confirmed"},  # reject 550 5.7.1
        {"name": "test-counting"},  # passes
    )
    result = run(env, pipe, Phase.DATA, raw)
    assert [d.policy for d in result.decisions] == [
        "test-slow",
        "message-format",
        "campaign-confirmed",
        "test-counting",
    ]
    assert [d.verdict.action for d in result.decisions] == [
        Action.TEMPFAIL,
        Action.REJECT,
        Action.REJECT,
        Action.CONTINUE,
    ]
    assert result.verdict.policy == "message-format"
    assert result.verdict.reply == Reply(
        550, "5.6.0", "Message format: 2 From headers; exactly one is required"
    )
    assert Counting.calls == 1


def test_rcpt_first_reject_wins(env: Env) -> None:
    pipe = pipeline({"name": "role-address"}, {"name": "test-counting"})
    refused = run(env, pipe, Phase.RCPT, rcpt="sales@example.org")
    assert [d.policy for d in refused.decisions] == ["role-address"] and Counting.calls == 0
    assert refused.verdict.reply == Reply(
        550, "5.7.1", "sales@example.org is a role address; role addresses may not receive campaigns"
    )
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
    config = Config(
        policies=[
            PolicyEntry(name="role-address"),
            PolicyEntry(name="message-format"),
            PolicyEntry(name="campaign-confirmed"),
        ]
    )
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
    assert rcpt == (
        "550 5.7.1 Sales+x@example.org is a role address; role addresses may not "
        "receive campaigns (role-address)"
    )
    assert data == ("550 5.6.0 Message format: no Date header; exactly one is required (message-format)")


def test_reference_newsletter_passes_every_builtin_policy(env: Env) -> None:
    config = Config(policies=[PolicyEntry(name=n) for n in ["customer-active", *ALL_OURS]])
    pipe = Pipeline.from_config(config.policies, discover())
    engine = Engine(config, env.store, pipe, codec=MailIdCodec({0: b"k" * 32}, 0))

    async def session() -> list[str]:
        txn, mail = await engine.mail(env.txn().session, "bounce@news.shop.example")
        rcpt = await engine.rcpt(txn, "jane.doe@example.org")
        data = await engine.data(txn, fixture("reference_newsletter.eml"))
        assert [d.policy for d in data.decisions] == [
            "campaign-confirmed",
            "message-format",
            "sender-identity",
            "unsubscribe",
            "imprint",
        ]
        assert all(d.verdict.reason for d in data.decisions)
        return [str(mail.reply), str(rcpt.reply), str(data.reply)]

    assert asyncio.run(session()) == ["250 2.1.0 Sender OK", "250 2.1.5 Recipient OK", "250 2.0.0 OK"]


def test_data_reports_every_refusal_and_the_customer_sees_the_strictest(env: Env) -> None:
    # HTML part without unsubscribe link; text part with another street (the HTML keeps it).
    raw = fixture("unsub_only_text.eml").replace("Königstraße 12".encode(), b"Teststr. 1")
    config = Config(policies=[PolicyEntry(name=n) for n in ALL_OURS])
    engine = Engine(
        config,
        env.store,
        Pipeline.from_config(config.policies, discover()),
        codec=MailIdCodec({0: b"k" * 32}, 0),
    )

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
        "550 5.7.1 No visible unsubscribe link found in the HTML part (unsubscribe)"
    )


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

    pipe = batch_pipeline(
        {"name": "test-counting", "timeout": 0.05}, {"name": "test-blocking", "timeout": 0.1}
    )
    raw = fixture("reference_newsletter.eml")

    async def timed():
        started = time.monotonic()
        outcome = await pipe.run(Phase.DATA, env.txn(raw), env.ctx(Phase.DATA))
        return outcome, time.monotonic() - started

    result, seconds = asyncio.run(timed())  # (asyncio.run then waits for the stuck thread)
    assert seconds < 1.0
    assert result.verdict.reply == POLICY_ERROR and not result.passed
    assert [(d.policy, d.error) for d in result.decisions] == [
        ("test-counting", False),
        ("test-blocking", True),
    ]


def test_a_sync_check_over_its_own_timeout_never_passes(env: Env) -> None:
    BlockingSync.seconds = 0.2
    try:
        pipe = batch_pipeline(
            {"name": "test-blocking", "timeout": 0.1}, {"name": "test-counting", "timeout": 5}
        )
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
    pipe = Pipeline.from_config(
        [PolicyEntry(name="test-where"), PolicyEntry(name="test-nonblocking-crash")], registry
    )
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
    env: Env, reads_block: bool, where: str
) -> None:
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


# --- Where a check runs follows from what its policy declares it touches -------------------


def _on_loop() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()  # asyncio.run's loop


@pytest.fixture
def any_store(store_url: str) -> Iterator[Any]:
    """The real store of each engine, with one active customer `acme`."""
    from gateway.store import open_store

    store = open_store(store_url)
    store.add_customer("acme", status="active")
    yield store
    store.close()


def _placement_pipeline(touches: Any, *, asynchronous: bool = False) -> tuple[Pipeline, list[bool]]:
    """A pipeline of one RCPT policy declaring `touches`; the list records where it ran."""
    ran_on_loop: list[bool] = []

    class Declared(Policy):
        name = "test-declared"
        phases = (Phase.RCPT,)
        description = "reads the store and records where it ran"

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            ctx.store.find_suppression(None, "anna@example.org")
            ran_on_loop.append(_on_loop())
            return Verdict.ok("recorded")

    Declared.touches = touches
    return Pipeline.from_config([PolicyEntry(name="test-declared")], discover(extra=[Declared])), ran_on_loop


@pytest.mark.parametrize(
    "touches, on_loop_with",
    [
        (Touches.NOTHING, {"sqlite", "postgresql"}),
        (Touches.STORE_CACHED, {"sqlite", "postgresql"}),
        (Touches.STORE, {"sqlite"}),  # a SQLite read never waits; a PostgreSQL read may
        (Touches.NETWORK, set()),
        (Touches.STORE | Touches.NETWORK, set()),
        ({Phase.RCPT: Touches.STORE}, {"sqlite"}),  # declared per phase
    ],
)
def test_a_declared_check_runs_where_the_store_allows(
    any_store: Any, touches: Any, on_loop_with: set[str]
) -> None:
    pipe, ran_on_loop = _placement_pipeline(touches)
    txn = Transaction(
        session=SessionInfo(id="t", customer=any_store.require_customer("acme")),
        mail_from="bounce@shop.example",
        current_rcpt="anna@example.org",
    )
    ctx = PolicyContext(phase=Phase.RCPT, store=any_store, config=None)
    result = asyncio.run(pipe.run(Phase.RCPT, txn, ctx))
    assert result.passed and result.decisions[0].verdict.reason == "recorded"
    assert ran_on_loop == [any_store.dialect in on_loop_with]


def test_an_undeclared_policy_runs_in_a_worker_thread(env: Env) -> None:
    pipe, ran_on_loop = _placement_pipeline(Policy.touches)
    run(env, pipe, Phase.RCPT)
    assert ran_on_loop == [False]


class _RecordingStore:
    """The real store; records for each call whether it ran on the event loop."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: list[tuple[str, bool]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._store, name)
        if not callable(attr):
            return attr

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, _on_loop()))
            return attr(*args, **kwargs)

        return recorded


@pytest.mark.parametrize("require_dmarc", [False, True])
def test_the_builtin_policies_run_where_they_always_ran(any_store: Any, require_dmarc: bool) -> None:
    """Every phase on the loop with SQLite; with PostgreSQL only the per-recipient reads of
    RCPT (suppression, consent) go to a thread, and DATA when DMARC is looked up in the DNS."""
    names = [
        "customer-active",
        "sender-identity",
        "role-address",
        "suppression",
        "consent",
        "campaign-confirmed",
        "message-format",
        "unsubscribe",
        "imprint",
    ]
    entries = [
        PolicyEntry(
            name=n,
            mode="monitor",  # every policy runs, whatever it finds
            options={"require_dmarc": require_dmarc} if n == "sender-identity" else {},
        )
        for n in names
    ]
    pipe = Pipeline.from_config(entries, discover())
    store = _RecordingStore(any_store)
    txn = Transaction(
        session=SessionInfo(id="t", customer=any_store.require_customer("acme")),
        mail_from="bounce@shop.example",
        current_rcpt="jane@example.org",
    )
    txn.recipients.append("jane@example.org")
    txn.set_raw(fixture("reference_newsletter.eml"))
    where: dict[Phase, set[bool]] = {}
    for phase in (Phase.MAIL, Phase.RCPT, Phase.DATA):
        store.calls.clear()
        ctx = PolicyContext(phase=phase, store=store, config=None, resolver=_NoDmarc())
        result = asyncio.run(pipe.run(phase, txn, ctx))
        assert result.decisions and not any(d.error for d in result.decisions)
        where[phase] = {on_loop for _, on_loop in store.calls}
    remote = any_store.dialect == "postgresql"
    assert where == {Phase.MAIL: {True}, Phase.RCPT: {not remote}, Phase.DATA: {not require_dmarc}}


class _NoDmarc:
    def resolve(self, name: str, rdtype: str) -> Any:
        import dns.resolver

        raise dns.resolver.NXDOMAIN()


class _Sleeper(Policy):
    """A check declared as touching nothing that nonetheless takes its time."""

    name = "test-sleeper"
    phases = (Phase.DATA,)
    description = "sleeps on whatever thread runs it"
    touches = Touches.NOTHING
    seconds = 0.05
    ran_on_loop: ClassVar[list[bool]] = []

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        import time

        self.ran_on_loop.append(_on_loop())
        time.sleep(self.seconds)
        return Verdict.ok("slept")


@pytest.mark.parametrize(
    "on_error, reply",
    [
        (None, POLICY_ERROR),
        ("554 5.7.0 Content check unavailable", Reply(554, "5.7.0", "Content check unavailable")),
    ],
)
def test_an_inline_check_over_its_timeout_yields_on_error(
    env: Env, on_error: str | None, reply: Reply
) -> None:
    _Sleeper.ran_on_loop.clear()
    entry: dict[str, Any] = {"name": "test-sleeper", "timeout": 0.01}
    if on_error:
        entry["on_error"] = on_error
    pipe = Pipeline.from_config(
        [PolicyEntry(**entry), PolicyEntry(name="message-format")], discover(extra=[_Sleeper])
    )
    result = run(env, pipe, Phase.DATA, fixture("reference_newsletter.eml"))
    assert _Sleeper.ran_on_loop == [True]
    assert not result.passed and result.verdict.reply == reply
    sleeper, message_format = result.decisions  # DATA still runs every policy
    assert sleeper.error and "timed out after 0.01s" in sleeper.verdict.reason
    assert message_format.verdict.passed


class _PipelineLog(logging.Handler):
    """The pipeline's log lines, whether or not the "gateway" logger propagates."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> list[str]:
        logging.getLogger("gateway.core.pipeline").addHandler(self)
        return self.lines

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("gateway.core.pipeline").removeHandler(self)


def test_a_check_that_keeps_overrunning_on_the_loop_is_moved_to_a_thread(env: Env) -> None:
    from gateway.core.pipeline import INLINE_OVERRUNS_BEFORE_THREAD

    _Sleeper.ran_on_loop.clear()
    with _PipelineLog() as lines:
        pipe = Pipeline.from_config(
            [PolicyEntry(name="test-sleeper", timeout=0.01)], discover(extra=[_Sleeper])
        )
        raw = fixture("reference_newsletter.eml")
        results = [run(env, pipe, Phase.DATA, raw) for _ in range(INLINE_OVERRUNS_BEFORE_THREAD + 1)]
    assert _Sleeper.ran_on_loop == [True] * INLINE_OVERRUNS_BEFORE_THREAD + [False]
    assert all(r.verdict.reply == POLICY_ERROR for r in results)  # in the thread too
    assert (
        len([line for line in lines if "overran its 0.01s timeout on the event loop at DATA" in line])
        == INLINE_OVERRUNS_BEFORE_THREAD
    )
    moved = [line for line in lines if "from now on" in line]
    assert moved == [
        f"policy test-sleeper overran {INLINE_OVERRUNS_BEFORE_THREAD} times on the "
        "event loop at DATA; it runs in a worker thread from now on (until the "
        "configuration is reloaded)"
    ]


def test_a_check_within_its_timeout_stays_on_the_loop(env: Env) -> None:
    _Sleeper.ran_on_loop.clear()
    pipe = Pipeline.from_config([PolicyEntry(name="test-sleeper", timeout=30)], discover(extra=[_Sleeper]))
    for _ in range(INLINE_RUNS):
        assert run(env, pipe, Phase.DATA, fixture("reference_newsletter.eml")).passed
    assert _Sleeper.ran_on_loop == [True] * INLINE_RUNS


INLINE_RUNS = 5


class _AsyncPasses(Policy):
    name = "test-async-passes"
    phases = (Phase.DATA,)
    description = "a coroutine check"

    async def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        return Verdict.ok("awaited")


def test_beside_a_coroutine_check_a_check_touching_nothing_still_runs_on_the_loop(env: Env) -> None:
    _Sleeper.ran_on_loop.clear()
    pipe = Pipeline.from_config(
        [PolicyEntry(name="test-async-passes"), PolicyEntry(name="test-sleeper", timeout=30)],
        discover(extra=[_AsyncPasses, _Sleeper]),
    )
    assert run(env, pipe, Phase.DATA, fixture("reference_newsletter.eml")).passed
    assert _Sleeper.ran_on_loop == [True]


@pytest.mark.parametrize("touches", [Touches.NOTHING, Touches.STORE, Touches.NETWORK, "async"])
def test_a_crashing_check_never_passes_wherever_it_runs(env: Env, touches: Any) -> None:
    class Crash(Policy):
        name = "test-crash-anywhere"
        phases = (Phase.RCPT,)
        description = "raises, or returns no verdict"

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            raise RuntimeError("boom")

    class AsyncCrash(Crash):
        async def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:  # type: ignore[override]
            raise RuntimeError("boom")

    class NoVerdict(Crash):
        name = "test-no-verdict"

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            return None  # type: ignore[return-value]

    crash = AsyncCrash if touches == "async" else Crash
    for cls in (crash, NoVerdict):
        if touches != "async":
            cls.touches = touches
        pipe = Pipeline.from_config(
            [PolicyEntry(name=cls.name), PolicyEntry(name="test-counting")], discover(extra=[cls, Counting])
        )
        result = run(env, pipe, Phase.RCPT)
        assert result.verdict.action is Action.TEMPFAIL and result.verdict.reply == POLICY_ERROR
        assert [d.policy for d in result.decisions] == [cls.name]  # RCPT stops at the refusal
    assert Counting.calls == 0


def test_a_policy_still_setting_the_retired_attributes_runs_in_a_thread_and_is_logged(env: Env) -> None:
    ran_on_loop: list[bool] = []

    class OldStyle(Policy):
        name = "test-old-style"
        phases = (Phase.RCPT,)
        description = "written for the blocking flag"
        blocking = False

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            ran_on_loop.append(_on_loop())
            return Verdict.ok()

    with _PipelineLog() as lines:
        pipe = Pipeline.from_config([PolicyEntry(name="test-old-style")], discover(extra=[OldStyle]))
    assert run(env, pipe, Phase.RCPT).passed and ran_on_loop == [False]
    assert lines == [
        "policy test-old-style sets blocking, which the pipeline no longer reads; declare "
        "`touches` (until then it runs in a worker thread)"
    ]


def test_a_per_phase_declaration_must_cover_every_phase_of_the_policy() -> None:
    from gateway.core.pipeline import PipelineError

    class Partial(Policy):
        name = "test-partial"
        phases = (Phase.RCPT, Phase.DATA)
        description = "declares RCPT only"
        touches = {Phase.RCPT: Touches.STORE}

        def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
            return Verdict.ok()

    with pytest.raises(PipelineError, match="test-partial: touches names no Touches for phase DATA"):
        Pipeline.from_config([PolicyEntry(name="test-partial")], discover(extra=[Partial]))
