"""The message flow every transport shares: MAIL, RCPT, end of DATA.

The SMTP proxy, the milter and `gateway check` are thin adapters over this class: they turn
their protocol's events into these calls and the returned replies into their protocol's
answers. Logs, metrics and the ledger are written here, once, the same way for all of them.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from gateway import metrics
from gateway.config import Config
from gateway.core import replies
from gateway.core.message import has_bare_line_ending
from gateway.core.pipeline import PhaseResult, Pipeline
from gateway.core.plan import (
    AddHeader,
    ChangeSender,
    Edit,
    EditRefused,
    Plan,
    fields_to_add,
    present,
    render,
)
from gateway.core.policy import PolicyContext
from gateway.core.resolver import Resolver
from gateway.core.signer import MessageSigning, SigningUnavailable
from gateway.core.transaction import Phase, SessionInfo, Transaction
from gateway.core.verdict import Action, Reply
from gateway.ledger import LedgerWriter
from gateway.logging import EventLogger, get_logger
from gateway.mailid import MailIdCodec
from gateway.managed_unsubscribe import HEADERS as MANAGED_HEADERS
from gateway.managed_unsubscribe import ManagedUnsubscribeUnavailable, managed_headers
from gateway.mime.shape import coarse_bound, mime_shape
from gateway.quota import QuotaGate
from gateway.store import MessageRecord, StoreUnavailable
from gateway.store.interface import EngineStore

# Headers only the gateway or the receiving side may write (RULES.md "Headers the gateway
# adds"): every copy the customer sent is removed, whatever its case or folding, before the
# gateway adds its own. Return-Path and Delivered-To are written at final delivery (RFC 5321
# 4.4); a customer's copy would pose as the receiving side's. X-CSA-Complaints is the gateway's
# to set for CSA-certified pools, and nobody else's where it does not.
GATEWAY_ONLY_HEADERS = (
    "Feedback-ID",
    "CFBL-Address",
    "CFBL-Feedback-ID",
    "X-CSA-Complaints",
    "Return-Path",
    "Delivered-To",
)


# From this size on (bytes), the end-of-DATA work runs in a worker thread (see Engine.data); below
# it the thread hop would cost more than the check (a 20 KB newsletter takes about a millisecond).
LARGE_MESSAGE = 256 * 1024


def new_session_id() -> str:
    return secrets.token_hex(5)


@dataclass
class Outcome:
    """What the transport answers to MAIL and RCPT (the end of DATA gets a Plan)."""

    reply: Reply
    decisions: list[Any] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return 200 <= self.reply.code < 300


class Engine:
    def __init__(
        self,
        config: Config,
        store: EngineStore,
        pipeline: Pipeline,
        *,
        codec: MailIdCodec,
        signer: MessageSigning | None = None,
        resolver: Resolver | None = None,
        log: EventLogger | None = None,
        ledger: bool = True,
    ) -> None:
        self.config = config
        self.store = store
        self.pipeline = pipeline
        self.codec = codec
        self.signer = signer
        self.resolver = resolver
        self.log = log or get_logger()
        # `gateway check` runs the same flow but is not a send: it writes no ledger rows.
        self.ledger = ledger
        # Sending quotas (gateway/quota.py): only for real sends.
        settings = getattr(config, "quota", None)
        self.quota = (
            QuotaGate.for_store(store, settings, config)
            if ledger and settings is not None and settings.enabled
            else None
        )

    def context(self, phase: Phase) -> PolicyContext:
        return PolicyContext(phase=phase, store=self.store, config=self.config, resolver=self.resolver)

    # -- MAIL ---------------------------------------------------------------------------------
    async def mail(
        self, session: SessionInfo, mail_from: str, options: list[str] | None = None
    ) -> tuple[Transaction, Outcome]:
        txn = Transaction(session=session, mail_from=mail_from, mail_options=list(options or []))
        customer_id = session.customer.id if session.customer is not None else 0
        txn.mail_id = self.codec.new_stem(customer_id)
        self.log.event(
            "mail", session=session.id, mail_id=txn.mail_id, customer=_name(session), mail_from=mail_from
        )
        result = await self._run(Phase.MAIL, txn)
        if not result.passed:
            return txn, await self._refused(txn, Phase.MAIL, result)
        if self.quota is not None:
            over = await self.quota.admit(session.customer)
            if over is not None:
                await self._finish(txn, "tempfailed", over, reason="sending limit reached")
                return txn, Outcome(over, decisions=result.decisions)
        return txn, Outcome(replies.SENDER_OK, decisions=result.decisions)

    # -- RCPT ---------------------------------------------------------------------------------
    async def rcpt(self, txn: Transaction, rcpt: str) -> Outcome:
        deferred = None
        if len(txn.recipients) >= self.config.limits.max_recipients:
            deferred = "max_recipients reached"
        elif txn.recipients and self._managed_unsubscribe(txn):
            deferred = "managed unsubscribe: one recipient per message"
        if deferred is not None:
            # 452 4.5.3: the client sends this recipient in a new transaction (RFC 5321).
            self.log.event(
                "rcpt",
                session=txn.session.id,
                mail_id=txn.mail_id,
                rcpt=rcpt,
                result="deferred",
                reason=deferred,
            )
            return Outcome(replies.TOO_MANY_RECIPIENTS)
        txn.current_rcpt = rcpt
        try:
            result = await self._run(Phase.RCPT, txn)
        finally:
            txn.current_rcpt = None
        if not result.passed:
            outcome = await self._refused(txn, Phase.RCPT, result, rcpt=rcpt)
            if self.quota is not None:
                self.quota.refused(txn.session.customer, result.verdict.policy)
            return outcome
        if self.quota is not None:
            # Counted only now, once every policy accepted the recipient.
            over = await self.quota.take(txn.session.customer)
            if over is not None:
                self.log.event(
                    "rcpt",
                    session=txn.session.id,
                    mail_id=txn.mail_id,
                    rcpt=rcpt,
                    customer=_name(txn.session),
                    result="refused",
                    reply=str(over),
                )
                return Outcome(over, decisions=result.decisions)
        txn.recipients.append(rcpt)
        self.log.event("rcpt", session=txn.session.id, mail_id=txn.mail_id, rcpt=rcpt, result="accepted")
        return Outcome(replies.RECIPIENT_OK, decisions=result.decisions)

    # -- end of DATA --------------------------------------------------------------------------
    async def data(self, txn: Transaction, raw: bytes) -> Plan:
        """Check the message and plan its edits; the transport applies them and relays on
        `ok` (gateway.core.plan)."""
        if has_bare_line_ending(raw):
            # Refuse, never repair: a bare LF is how SMTP smuggling hides a second message.
            txn.set_raw(b"")
            await self._finish(txn, "rejected", replies.BARE_LINE_ENDING, reason="bare CR or LF")
            return Plan(replies.BARE_LINE_ENDING, mail_from=txn.mail_from)
        txn.set_raw(raw)
        txn.mail_id = self._final_mail_id(txn)
        # A large message is counted, parsed and checked in a worker thread: the GIL's switch
        # interval lets this loop serve its other sessions meanwhile instead of freezing them.
        large = len(raw) >= LARGE_MESSAGE
        if large:
            too_complex = await asyncio.to_thread(self._too_complex, raw)
        else:
            too_complex = self._too_complex(raw)
        if too_complex is not None:
            reply, reason = too_complex
            await self._finish(txn, "rejected", reply, reason=reason)
            return Plan(reply, mail_from=txn.mail_from)
        result = await self._run(Phase.DATA, txn, in_thread=large)
        if not result.passed:
            refused = await self._refused(txn, Phase.DATA, result)
            return Plan(refused.reply, mail_from=txn.mail_from, decisions=result.decisions)
        try:
            edits = await self._stamp(txn, result)
            sender = self._envelope_sender(txn)
            if sender != txn.mail_from:
                edits.append(ChangeSender(sender))
        except SigningUnavailable as exc:
            await self._finish(txn, "tempfailed", replies.POLICY_ERROR, reason=str(exc))
            return Plan(replies.POLICY_ERROR, mail_from=txn.mail_from, decisions=result.decisions)
        except ManagedUnsubscribeUnavailable as exc:
            await self._finish(
                txn, "tempfailed", replies.UNSUBSCRIBE_UNAVAILABLE, reason=f"managed unsubscribe: {exc}"
            )
            return Plan(replies.UNSUBSCRIBE_UNAVAILABLE, mail_from=txn.mail_from, decisions=result.decisions)
        except EditRefused as exc:
            # A policy's header mutation that would inject a field (or worse): never relayed.
            await self._finish(txn, "tempfailed", replies.POLICY_ERROR, reason=f"header edit refused: {exc}")
            return Plan(replies.POLICY_ERROR, mail_from=txn.mail_from, decisions=result.decisions)
        return Plan(replies.OK, tuple(edits), mail_from=txn.mail_from, decisions=result.decisions)

    async def relayed(
        self,
        txn: Transaction,
        reply: Reply,
        *,
        queue_id: str | None = None,
        seconds: float = 0.0,
        detail: str = "",
    ) -> None:
        """Record what the downstream answered for this message."""
        result = "accepted" if 200 <= reply.code < 300 else "rejected" if reply.code >= 500 else "tempfailed"
        reply_class = "error" if detail.startswith("error") else f"{reply.code // 100}xx"
        metrics.child(metrics.RELAY_REPLIES, reply_class).inc()
        metrics.RELAY_DURATION.observe(seconds)
        self.log.event(
            "relay",
            session=txn.session.id,
            mail_id=txn.mail_id,
            result=result,
            reply=str(reply),
            queue_id=queue_id,
            downstream=detail or None,
            seconds=round(seconds, 6),
        )
        await self._finish(txn, result, reply, queue_id=queue_id)

    # -- internals ----------------------------------------------------------------------------
    async def _run(self, phase: Phase, txn: Transaction, *, in_thread: bool = False) -> PhaseResult:
        result = await self.pipeline.run(phase, txn, self.context(phase), in_thread=in_thread)
        for d in result.decisions:
            action = d.verdict.action.name.lower()
            metrics.child(metrics.POLICY_DECISIONS, d.policy, action, d.mode).inc()
            metrics.child(metrics.POLICY_DURATION, d.policy).observe(d.seconds)
            if d.error:
                metrics.child(metrics.POLICY_ERRORS, d.policy).inc()
            refused = d.verdict.action is not Action.CONTINUE
            if not refused and not d.error:
                continue  # passes are summed up on the message line (policies=...)
            self.log.event(
                "policy",
                session=txn.session.id,
                mail_id=txn.mail_id,
                phase=phase.value,
                policy=d.policy,
                mode=d.mode,
                action=("would-" + action) if d.mode == "monitor" and refused else action,
                reply=str(d.verdict.reply) if refused and d.verdict.reply else None,
                reason=d.verdict.reason or None,
                rcpt=txn.current_rcpt,
                error=d.error or None,
                seconds=round(d.seconds, 6),
            )
        txn.decisions.extend(
            {
                "phase": phase.value,
                "policy": d.policy,
                "mode": d.mode,
                "action": d.verdict.action.name.lower(),
                "reason": d.verdict.reason,
            }
            for d in result.decisions
        )
        return result

    async def _refused(
        self, txn: Transaction, phase: Phase, result: PhaseResult, rcpt: str | None = None
    ) -> Outcome:
        verdict = result.verdict
        reply = verdict.reply or replies.POLICY_ERROR
        if verdict.policy and not reply.text.endswith(f"({verdict.policy})"):
            reply = Reply(reply.code, reply.enhanced, f"{reply.text} ({verdict.policy})")
        if txn.customer is not None:
            await self._tell_customer(txn, phase, verdict.policy, reply, rcpt)
        if phase is Phase.RCPT:
            # One refused recipient does not end the transaction; the ledger is per message.
            self.log.event(
                "rcpt",
                session=txn.session.id,
                mail_id=txn.mail_id,
                rcpt=rcpt,
                result="refused",
                reply=str(reply),
            )
            return Outcome(reply, decisions=result.decisions)
        outcome = "rejected" if verdict.action is Action.REJECT else "tempfailed"
        await self._finish(txn, outcome, reply, reason=verdict.reason)
        return Outcome(reply, decisions=result.decisions)

    async def _tell_customer(
        self, txn: Transaction, phase: Phase, policy: str | None, reply: Reply, rcpt: str | None
    ) -> None:
        """A `message.refused` event, for customers whose webhook asked for them (DESIGN §13).
        In a thread: the webhook look-up may read the store."""
        assert txn.customer is not None
        customer_id = txn.customer.id
        data = {
            "mail_id": txn.mail_id,
            "phase": phase.value,
            "policy": policy,
            "reply": str(reply),
            "campaign": txn.campaign if txn.raw else None,
            "mail_from": txn.mail_from,
        }
        recipient = rcpt if rcpt is not None else (txn.recipients[0] if txn.recipients else None)

        def emit() -> None:
            webhook = self.store.cached_webhook(customer_id)
            if webhook is not None and webhook.wants("message.refused"):
                self.store.emit_event(customer_id, "message.refused", data, recipient=recipient)

        try:
            await asyncio.to_thread(emit)
        except StoreUnavailable as exc:
            self.log.error("webhook", mail_id=txn.mail_id, error=str(exc))

    async def _finish(
        self,
        txn: Transaction,
        result: str,
        reply: Reply,
        *,
        queue_id: str | None = None,
        reason: str | None = None,
    ) -> None:
        metrics.child(metrics.MESSAGES, result).inc()
        self.log.event(
            "message",
            session=txn.session.id,
            mail_id=txn.mail_id,
            customer=_name(txn.session),
            campaign=txn.campaign if txn.raw else None,
            mail_from=txn.mail_from,
            rcpt=",".join(txn.recipients) or None,
            result=result,
            reply=str(reply),
            reason=reason,
            policies=",".join(f"{d['policy']}={d['action']}" for d in txn.decisions) or None,
        )
        record = MessageRecord(
            mail_id=txn.mail_id,
            customer_id=txn.customer.id if txn.customer is not None else None,
            campaign=txn.campaign if txn.raw else None,
            mail_from=txn.mail_from,
            recipients=list(txn.recipients),
            created_at=time.time(),
            result=result,
            reply=str(reply),
            queue_id=queue_id,
            verdicts=list(txn.decisions),
        )
        await self._record(record)

    async def _record(self, record: MessageRecord) -> None:
        if not self.ledger:
            return
        try:
            # In the ledger's writer thread: a database write (and now and then a WAL
            # checkpoint with its fsync) must not stall every other session on this loop.
            await LedgerWriter.for_store(self.store).record(record)
        except StoreUnavailable as exc:
            # The message outcome stands; the ledger row is lost, and ops must hear about it.
            self.log.error("ledger", mail_id=record.mail_id, error=str(exc))

    def _too_complex(self, raw: bytes) -> tuple[Reply, str] | None:
        """The refusal of a message over the MIME part or depth limit, counted without a parse
        (gateway.mime.shape), else None."""
        limits = self.config.limits
        if coarse_bound(raw) <= min(limits.max_mime_parts, limits.max_mime_depth):
            return None  # surely within both limits (most mail): no finer count needed
        shape = mime_shape(raw, limits.max_mime_parts)
        if shape.parts > limits.max_mime_parts:
            return (
                replies.too_many_mime_parts(limits.max_mime_parts),
                f"more than {limits.max_mime_parts} MIME parts (limits.max_mime_parts)",
            )
        if shape.depth > limits.max_mime_depth:
            return (
                replies.mime_nested_too_deep(limits.max_mime_depth),
                f"MIME nesting deeper than {limits.max_mime_depth} (limits.max_mime_depth)",
            )
        return None

    def _final_mail_id(self, txn: Transaction) -> str:
        campaign_ref = 0
        campaign = txn.campaign
        if campaign and txn.customer is not None:
            try:
                found = self.store.get_campaign(txn.customer.id, campaign)
            except StoreUnavailable:
                found = None
            campaign_ref = found.id if found is not None else 0
        recipient = txn.recipients[0] if txn.recipients else ""
        return self.codec.finalize(txn.mail_id, campaign_ref, recipient)

    def _envelope_sender(self, txn: Transaction) -> str:
        domain = self.config.bounce_domain
        if not domain or not txn.mail_from:
            return txn.mail_from
        return f"{self.config.mail_id.verp_prefix}-{txn.mail_id}@{domain}"

    def added_headers(self, txn: Transaction) -> list[tuple[str, str]]:
        cfg = self.config
        customer = _name(txn.session) or "unknown"
        campaign = txn.campaign or "none"
        headers = [
            (cfg.mail_id.header, txn.mail_id),
            (
                "Feedback-ID",
                f"{_fid(campaign)}:{_fid(customer)}:{_fid(cfg.feedback.type)}:{cfg.feedback.sender_id}",
            ),
        ]
        if cfg.feedback.fbl_address:
            headers.append(("CFBL-Address", f"{cfg.feedback.fbl_address}; report=arf"))
            headers.append(("CFBL-Feedback-ID", txn.mail_id))
        if cfg.feedback.csa_complaints:
            headers.append(("X-CSA-Complaints", cfg.feedback.csa_complaints))
        return headers

    def _managed_unsubscribe(self, txn: Transaction) -> bool:
        """Whether the gateway writes this customer's List-Unsubscribe (re-read from the
        cached store: support may have switched it during the session)."""
        customer = txn.customer
        if customer is None:
            return False
        try:
            customer = self.store.get_customer_by_id(customer.id) or customer
        except StoreUnavailable:
            pass  # the flag as it was at AUTH
        return bool(customer.managed_unsubscribe)

    async def _stamp(self, txn: Transaction, result: PhaseResult) -> list[Edit]:
        """The header edits, removals first, then the gateway's headers, then DKIM last: signed
        over the exact bytes the earlier edits make of the message."""
        removed = {self.config.mail_id.header, *GATEWAY_ONLY_HEADERS}
        added = self.added_headers(txn)
        if self._managed_unsubscribe(txn):
            if len(txn.recipients) != 1:
                # Switched to managed after RCPT: the retry gets one recipient per transaction.
                raise ManagedUnsubscribeUnavailable(
                    f"{len(txn.recipients)} recipients, one link cannot serve them"
                )
            removed.update(MANAGED_HEADERS)
            added += managed_headers(self.config, txn, txn.customer.id)
        for mutation in result.mutations:
            if mutation.op == "remove" or mutation.value is None:
                removed.add(mutation.name)
            else:
                added.append((mutation.name, mutation.value))
        # `added` is in the order the fields stand in the message; each AddHeader goes on top.
        edits: list[Edit] = [
            *present(txn.raw, removed),
            *(AddHeader(name, value) for name, value in reversed(added)),
        ]
        if self.signer is not None:
            unsigned = render(txn.raw, edits)
            started = time.perf_counter()
            if len(unsigned) < LARGE_MESSAGE:
                # On the loop: pure CPU (the keys are in memory), and a thread would only add
                # the hand-over; the GIL gives it no parallelism.
                signature, outcome = self.signer.signature(unsigned)
            else:
                # Hashing megabytes would hold the loop for tens of milliseconds.
                signature, outcome = await asyncio.to_thread(self.signer.signature, unsigned)
            edits += fields_to_add(signature)
            self.log.event("dkim", session=txn.session.id, mail_id=txn.mail_id, **outcome)
            seconds = time.perf_counter() - started
            metrics.DKIM_SIGN.observe(seconds)
        return edits


def _name(session: SessionInfo) -> str | None:
    return session.customer.name if session.customer is not None else None


def _fid(value: str) -> str:
    # Feedback-ID fields are colon-separated; keep each field free of colons and spaces.
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in value)[:64] or "none"
