"""The pipeline: policies in configured order and mode, one run per SMTP phase.

MAIL and RCPT: the first enforced refusal wins (at RCPT for that recipient only).
DATA: every policy runs, the strictest enforced verdict wins, and all reasons are reported.
`monitor` turns a refusal into "would reject" (logged and counted, then passed): detection
stays separate from consequence. A policy that crashes or overruns its timeout yields its
`on_error` reply (451 4.3.5 by default); it never passes.

Where a check runs follows from what its policy declares it touches (`Policy.touches`): on the
event loop when it waits on nothing (or on a store whose reads never wait), else in a worker
thread. Python cannot stop a plain function from outside, so a check on the loop that overruns
its timeout is judged when it returns (on_error, as for any overrun), and after
`move_after` such overruns its policy runs in a worker thread for that phase, where the phase
budget gives up on a check that never returns.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.core.policy import RETIRED, Policy, PolicyContext, Touches, touches_in
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Action, HeaderMutation, Reply, Verdict

log = logging.getLogger(__name__)

# Inline overruns of one policy in one phase before the pipeline moves it to a worker thread:
# more than one, so a single stall (a page fault, a GC pause, a loaded machine) does not count.
INLINE_OVERRUNS_BEFORE_THREAD = 3


class PipelineError(Exception):
    """The configured pipeline cannot be built (unknown policy, bad options)."""


@dataclass(frozen=True)
class Step:
    policy: Policy
    mode: str  # enforce | monitor | off
    timeout: float
    on_error: Reply


@dataclass(frozen=True)
class Decision:
    policy: str
    mode: str
    verdict: Verdict  # what the policy found
    effective: Action  # what happens because of it, after the mode
    seconds: float
    error: bool = False

    @property
    def would_reject(self) -> bool:
        return self.mode == "monitor" and self.verdict.action is not Action.CONTINUE


@dataclass
class PhaseResult:
    verdict: Verdict
    decisions: list[Decision] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def mutations(self) -> list[HeaderMutation]:
        if not self.passed:
            return []
        # Effective, not found: a monitored policy that would reject still gets its headers in.
        return [
            m
            for d in self.decisions
            if d.effective is Action.CONTINUE and not d.error
            for m in d.verdict.mutations
        ]


class Pipeline:
    def __init__(self, steps: Sequence[Step], *, move_after: int = INLINE_OVERRUNS_BEFORE_THREAD) -> None:
        self.steps = list(steps)
        self._by_phase = {
            phase: [s for s in self.steps if phase in s.policy.phases and s.mode != "off"] for phase in Phase
        }
        # Per phase, what its checks touch together and whether one is a coroutine, so the
        # per-message decision is a few lookups (Flag arithmetic costs microseconds).
        self._touches: dict[Phase, Touches] = {}
        for phase, phase_steps in self._by_phase.items():
            union = Touches.NOTHING
            for step in phase_steps:
                try:
                    union |= touches_in(step.policy, phase)
                except (KeyError, TypeError):
                    raise PipelineError(
                        f"policy {step.policy.name}: touches names no Touches for phase {phase.name}"
                    ) from None
            self._touches[phase] = union
        self._any_async = {
            phase: any(_is_async(s.policy) for s in phase_steps)
            for phase, phase_steps in self._by_phase.items()
        }
        self._waits_on_network = {phase: bool(t & Touches.NETWORK) for phase, t in self._touches.items()}
        self._reads_store = {phase: bool(t & Touches.STORE) for phase, t in self._touches.items()}
        self._move_after = move_after
        self._inline_overruns: dict[tuple[int, Phase], int] = {}
        self._moved: dict[Phase, set[int]] = {phase: set() for phase in Phase}  # id(step)
        for step in self.steps:
            retired = [a for a in RETIRED if hasattr(step.policy, a)]
            if retired:
                log.warning(
                    "policy %s sets %s, which the pipeline no longer reads; declare "
                    "`touches` (until then it runs in a worker thread)",
                    step.policy.name,
                    ", ".join(retired),
                )

    @classmethod
    def from_config(cls, entries: Sequence[Any], registry: dict[str, type[Policy]]) -> Pipeline:
        """entries: config PolicyEntry objects (name, mode, timeout, on_error, options); Any,
        so that core does not import the config model."""
        steps: list[Step] = []
        for entry in entries:
            name = entry.name
            policy_cls = registry.get(name)
            if policy_cls is None:
                known = ", ".join(sorted(registry)) or "none"
                raise PipelineError(f"policies: unknown policy {name!r} (known: {known})")
            try:
                options = policy_cls.Options.model_validate(entry.options)  # type: ignore[attr-defined]
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: "
                    f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}"
                    for e in exc.errors()
                )
                raise PipelineError(f"policies.{name}.options: {problems}") from None
            try:
                on_error = Reply.parse(entry.on_error)
            except (ValueError, IndexError):
                raise PipelineError(f"policies.{name}.on_error: not an SMTP reply") from None
            if on_error.code < 400:
                raise PipelineError(f"policies.{name}.on_error: must be a 4xx or 5xx reply")
            steps.append(Step(policy_cls(options), entry.mode, entry.timeout, on_error))
        return cls(steps)

    def names(self, phase: Phase) -> list[str]:
        return [s.policy.name for s in self._by_phase[phase]]

    async def run(
        self, phase: Phase, txn: Transaction, ctx: PolicyContext, *, in_thread: bool = False
    ) -> PhaseResult:
        """`in_thread`: run even checks that never block in a worker thread (a large message,
        whose parse alone would hold the event loop)."""
        ctx.phase = phase
        steps = self._by_phase[phase]
        stop_at_first = phase is not Phase.DATA
        if steps and not self._any_async[phase]:
            if (
                in_thread
                or self._waits_on_network[phase]
                or self._moved[phase]
                or (self._reads_store[phase] and getattr(ctx.store, "reads_block", True))
            ):
                # One hop to a worker thread for the whole phase, not one per policy: the hop
                # (and the loop wake-up after it) costs more than most checks.
                decisions = await self._run_batch(steps, txn, ctx, stop_at_first)
            else:
                decisions = self._run_inline(steps, txn, ctx, stop_at_first, phase)
        else:
            decisions = []
            for step in steps:
                if (
                    in_thread
                    or _is_async(step.policy)
                    or id(step) in self._moved[phase]
                    or _needs_thread(touches_in(step.policy, phase), ctx.store)
                ):
                    decisions.append(await self._run_step(step, txn, ctx))
                else:
                    decisions.extend(self._run_inline([step], txn, ctx, stop_at_first, phase))
                if stop_at_first and decisions[-1].effective is not Action.CONTINUE:
                    break
        final: Verdict = Verdict.ok()
        for decision in decisions:
            if decision.effective is Action.CONTINUE:
                continue
            if stop_at_first:
                final = decision.verdict
                break
            if decision.effective > final.action:
                final = decision.verdict
        return PhaseResult(final, decisions)

    def _run_inline(
        self, steps: list[Step], txn: Transaction, ctx: PolicyContext, stop_at_first: bool, phase: Phase
    ) -> list[Decision]:
        """Run sync checks on the event loop. Nothing can interrupt them there: an overrun is
        judged when the check returns, and a policy that keeps overrunning is moved."""
        decisions = list(_checks(steps, txn, ctx, stop_at_first))
        for step, decision in zip(steps, decisions, strict=False):  # decisions: a prefix
            if decision.seconds > step.timeout:
                self._overran_inline(step, phase, decision.seconds)
        return decisions

    def _overran_inline(self, step: Step, phase: Phase, seconds: float) -> None:
        key = (id(step), phase)
        count = self._inline_overruns[key] = self._inline_overruns.get(key, 0) + 1
        log.warning(
            "policy %s overran its %gs timeout on the event loop at %s (%.3fs; every session waited)",
            step.policy.name,
            step.timeout,
            phase.name,
            seconds,
        )
        if count >= self._move_after and id(step) not in self._moved[phase]:
            self._moved[phase].add(id(step))
            log.warning(
                "policy %s overran %d times on the event loop at %s; it runs in a "
                "worker thread from now on (until the configuration is reloaded)",
                step.policy.name,
                count,
                phase.name,
            )

    async def _run_batch(
        self, steps: list[Step], txn: Transaction, ctx: PolicyContext, stop_at_first: bool
    ) -> list[Decision]:
        """Run sync checks one after the other in one worker thread. A check that overruns its
        own timeout yields its on_error once it returns; one that never returns is given up
        when the phase's total budget is spent (the thread is left to finish on its own)."""
        done: list[Decision] = []
        abandoned = threading.Event()

        def work() -> None:
            for decision in _checks(steps, txn, ctx, stop_at_first, abandoned):
                done.append(decision)

        budget = sum(step.timeout for step in steps)
        try:
            await asyncio.wait_for(asyncio.to_thread(work), budget)
        except TimeoutError:
            abandoned.set()
            hung = steps[len(done)]
            done.append(_decision(hung, None, f"timed out after {hung.timeout:g}s", hung.timeout))
        return done

    async def _run_step(self, step: Step, txn: Transaction, ctx: PolicyContext) -> Decision:
        name = step.policy.name
        started = time.perf_counter()
        error = None
        verdict: Verdict | None = None
        try:
            verdict = await asyncio.wait_for(_call(step.policy, txn, ctx), step.timeout)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"policy {name} returned {type(verdict).__name__}, not Verdict")
        except TimeoutError:
            error = f"timed out after {step.timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a crashing policy must not take the session
            error = f"crashed: {type(exc).__name__}: {exc}"
        return _decision(step, verdict, error, time.perf_counter() - started)


def _checks(
    steps: list[Step],
    txn: Transaction,
    ctx: PolicyContext,
    stop_at_first: bool,
    abandoned: threading.Event | None = None,
) -> Iterator[Decision]:
    """The sync checks of a phase in order, each timed; a crash or an overrun is an error
    decision (on_error), never a pass."""
    for step in steps:
        if abandoned is not None and abandoned.is_set():
            return
        started = time.perf_counter()
        verdict: Verdict | None = None
        try:
            verdict = step.policy.check(txn, ctx)  # type: ignore[assignment]
            if not isinstance(verdict, Verdict):
                raise TypeError(f"policy {step.policy.name} returned {type(verdict).__name__}, not Verdict")
            error = None
        except Exception as exc:  # noqa: BLE001 - a crashing policy must not pass
            verdict, error = None, f"crashed: {type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - started
        if error is None and seconds > step.timeout:
            verdict, error = None, f"timed out after {step.timeout:g}s"
        decision = _decision(step, verdict, error, seconds)
        if abandoned is not None and abandoned.is_set():
            return
        yield decision
        if stop_at_first and decision.effective is not Action.CONTINUE:
            return


def _needs_thread(touches: Touches, store: object) -> bool:
    """Whether checks touching `touches` may wait on I/O with this store."""
    if touches & Touches.NETWORK:
        return True
    # A store that does not say is taken to wait (a thread: slower, never stalls the loop).
    return bool(touches & Touches.STORE) and getattr(store, "reads_block", True)


def _decision(step: Step, verdict: Verdict | None, error: str | None, seconds: float) -> Decision:
    if error is not None or verdict is None:
        verdict = _error_verdict(step, error or "no verdict")
    verdict = Verdict(verdict.action, verdict.reply, verdict.reason, step.policy.name, verdict.mutations)
    effective = verdict.action if step.mode == "enforce" else Action.CONTINUE
    return Decision(step.policy.name, step.mode, verdict, effective, seconds, error is not None)


def _is_async(policy: Policy) -> bool:
    return inspect.iscoroutinefunction(policy.check)


async def _call(policy: Policy, txn: Transaction, ctx: PolicyContext) -> Verdict:
    if inspect.iscoroutinefunction(policy.check):
        return await policy.check(txn, ctx)  # type: ignore[misc]
    result = await asyncio.to_thread(policy.check, txn, ctx)
    if inspect.isawaitable(result):
        return await result
    return result


def _error_verdict(step: Step, reason: str) -> Verdict:
    action = Action.REJECT if step.on_error.code >= 500 else Action.TEMPFAIL
    return Verdict(action, step.on_error, f"policy error: {reason}")
