"""The pipeline: policies in configured order and mode, one run per SMTP phase.

MAIL and RCPT: the first enforced refusal wins (at RCPT for that recipient only).
DATA: every policy runs, the strictest enforced verdict wins, and all reasons are reported.
`monitor` turns a refusal into "would reject" (logged and counted, then passed): detection
stays separate from consequence. A policy that crashes or overruns its timeout yields its
`on_error` reply (451 4.3.5 by default); it never passes.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from gateway.core.policy import Policy, PolicyContext
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Action, HeaderMutation, Reply, Verdict


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
        return [m for d in self.decisions if d.verdict.passed for m in d.verdict.mutations]


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = list(steps)
        self._by_phase = {
            phase: [s for s in self.steps if phase in s.policy.phases and s.mode != "off"]
            for phase in Phase
        }

    @classmethod
    def from_config(cls, entries: Sequence[object], registry: dict[str, type[Policy]]) -> Pipeline:
        """entries: config PolicyEntry objects (name, mode, timeout, on_error, options)."""
        steps: list[Step] = []
        for entry in entries:
            name = entry.name  # type: ignore[attr-defined]
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
                on_error = Reply.parse(entry.on_error)  # type: ignore[attr-defined]
            except (ValueError, IndexError):
                raise PipelineError(f"policies.{name}.on_error: not an SMTP reply") from None
            if on_error.code < 400:
                raise PipelineError(f"policies.{name}.on_error: must be a 4xx or 5xx reply")
            steps.append(Step(policy_cls(options), entry.mode,  # type: ignore[attr-defined]
                              entry.timeout, on_error))  # type: ignore[attr-defined]
        return cls(steps)

    def names(self, phase: Phase) -> list[str]:
        return [s.policy.name for s in self._by_phase[phase]]

    async def run(self, phase: Phase, txn: Transaction, ctx: PolicyContext) -> PhaseResult:
        ctx.phase = phase
        decisions: list[Decision] = []
        final: Verdict = Verdict.ok()
        for step in self._by_phase[phase]:
            decision = await self._run_step(step, txn, ctx)
            decisions.append(decision)
            if decision.effective is Action.CONTINUE:
                continue
            if phase is not Phase.DATA:
                final = decision.verdict
                break
            if decision.effective > final.action:
                final = decision.verdict
        return PhaseResult(final, decisions)

    async def _run_step(self, step: Step, txn: Transaction, ctx: PolicyContext) -> Decision:
        name = step.policy.name
        started = time.perf_counter()
        error = False
        try:
            verdict = await asyncio.wait_for(_call(step.policy, txn, ctx), step.timeout)
            if not isinstance(verdict, Verdict):
                raise TypeError(f"policy {name} returned {type(verdict).__name__}, not Verdict")
        except TimeoutError:
            error = True
            verdict = _error_verdict(step, f"timed out after {step.timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - a crashing policy must not take the session
            error = True
            verdict = _error_verdict(step, f"crashed: {type(exc).__name__}: {exc}")
        seconds = time.perf_counter() - started
        verdict = Verdict(verdict.action, verdict.reply, verdict.reason, name, verdict.mutations)
        effective = verdict.action if step.mode == "enforce" else Action.CONTINUE
        return Decision(name, step.mode, verdict, effective, seconds, error)


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
