"""Feedback intake: the side-effecting half of bounce and complaint handling.

The parsers (classify.analyze) say what a returned mail is; this module decides what it means
for our lists and does it:

1. analyze the raw message (bounce / complaint / unsubscribe / auto-reply / delay / other);
2. find the original's mail ID (VERP address first, then the X-Mailing-ID of the returned or
   attached original, then IDs quoted in text) and verify its HMAC;
3. verify the recipient: only an address the ID was minted for (its keyed recipient hash) is
   ever acted on. A bounce must name that address (its Final-Recipient); a complaint whose
   feedback loop redacted or rewrote the recipient takes the ledger row of that mail ID,
   checked against the same hash;
   Only a verified report changes anything (RULES.md "Only what the gateway sent can be
   bounced": the feedback listener is reachable by anyone). Anything else - no ID, a forged,
   altered or malformed one, a recipient the ID was not minted for - is recorded, counted
   (gateway_feedback_unverified_total{kind,reason}) and logged with the reason, and changes
   nothing; the same holds for `gateway feedback ingest` (operators decide by hand with
   `gateway suppression add --note ...`, which records who did it);
4. record the event (parse + raw copy, size-bounded) and act, in one store transaction:
   * hard bounce: suppress the address for everyone;
   * soft bounce: count it; `soft_bounce_threshold` soft bounces within
     `soft_bounce_window_days`, for mails relayed after the newest delivery that did not
     bounce, suppress it for everyone (a later successful delivery resets the count);
   * not the recipient's fault (policy, reputation, rate, TLS, content): count it for the
     customer, never suppress;
   * complaint: suppress the recipient for that customer, count it once per mail ID, and check
     the customer's complaint rate (complaints / messages accepted in the window): warning at
     `complaint_warning_rate`, automatic suspension at `complaint_suspend_rate` once the
     customer sent at least `complaint_min_messages` in the window;
   * unsubscribe (ARF opt-out, Apple Mail's unsubscribe mail): suppress for that customer;
     not a complaint;
5. log (`feedback`, `suppression`, `complaint_rate`) and count (metrics) after the commit.

Parsing one report has a bounded cost (feedback_intake.max_parse_bytes, max_parts,
max_recipients, parse_time_budget): a report over the budget is recorded unparsed.

`conclude()` is the side-effect-free part (parse + mail ID check) that `gateway feedback
classify` prints.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Counter

from gateway import metrics
from gateway.breaker import BREAKER_ACTIONS, Breaker, RateCheck
from gateway.feedback.classify import FeedbackAnalysis, analyze, to_json_dict
from gateway.logging import EventLogger, get_logger
from gateway.mailid import DecodedMailId, MailIdCodec
from gateway.mime import returned
from gateway.store.feedback import GLOBAL, FeedbackEvent, Suppression, normalise_address

DAY = 86400.0
# A full mail ID (DESIGN §6): version 1 starts with e..h, 48 base32 characters.
ID_PATTERN = re.compile(r"[e-h][a-z2-7]{47}")
UNSUBSCRIBE_TYPES = frozenset({"opt-out", "unsubscribe"})
_STATUS_RANK = {"genuine": 0, "forged": 1, "altered": 2, "malformed": 3}

MAIL_ID_CHECKS = Counter(
    "gateway_feedback_mail_ids_total", "Mail IDs of returned mail by verification status", ["status"]
)  # genuine | forged | altered | malformed | none
# Reports of an actionable kind (bounce, complaint, unsubscribe) that changed nothing because
# they do not verify; reason: no-id | forged-id | altered-id | malformed-id | unverified-id |
# recipient-mismatch | no-recipient | unparsed.
UNVERIFIED = Counter(
    "gateway_feedback_unverified_total",
    "Bounces and complaints not acted on because they do not verify",
    ["kind", "reason"],
)
ACTIONABLE_KINDS = ("bounce", "complaint", "unsubscribe")
COMPLAINT_RATE_ACTIONS = Counter(
    "gateway_complaint_rate_actions_total", "Complaint-rate thresholds crossed", ["action"]
)  # warning | suspended


@dataclass
class MailIdCheck:
    """Which mail ID a returned mail names, and whether we issued it."""

    mail_id: str | None
    status: str  # genuine | forged | altered | malformed | none
    decoded: DecodedMailId | None = None
    attribution: str | None = None  # verp | header | text
    candidates: list[tuple[str, str]] = field(default_factory=list)  # (id, status)

    @property
    def genuine(self) -> bool:
        return self.status == "genuine"

    @property
    def valid(self) -> bool | None:
        """For the JSON output: None when no mail ID was found at all."""
        if self.mail_id is None or self.status == "unverified":
            return None
        return self.genuine


@dataclass
class Conclusion:
    analysis: FeedbackAnalysis
    check: MailIdCheck
    kind: str  # the analysis kind, with opt-out reports as "unsubscribe"

    def json_dict(self, file: str) -> dict[str, Any]:
        """Exactly the keys of `gateway feedback classify --json`."""
        analysis = self.analysis
        if self.check.mail_id is not None:
            rest = [m for m in analysis.mail_ids if m != self.check.mail_id]
            analysis = dataclasses.replace(analysis, mail_ids=[self.check.mail_id, *rest])
        else:
            analysis = dataclasses.replace(analysis, mail_ids=[])
        return to_json_dict(file, analysis, self.check.valid)


@dataclass
class IntakeResult:
    event: FeedbackEvent
    conclusion: Conclusion
    suppressions: list[tuple[Suppression, bool]] = field(default_factory=list)
    rate: RateCheck | None = None
    customer_name: str | None = None
    campaign: str | None = None

    @property
    def check(self) -> MailIdCheck:
        return self.conclusion.check


def bounce_domains(config: Any) -> list[str]:
    domains = [d.lower().rstrip(".") for d in config.feedback_intake.bounce_domains]
    if config.bounce_domain and config.bounce_domain.lower().rstrip(".") not in domains:
        domains.insert(0, config.bounce_domain.lower().rstrip("."))
    return domains


def report_addresses(config: Any) -> set[str]:
    """The single addresses (FBL, abuse desk) the feedback listener accepts mail for."""
    intake = config.feedback_intake
    found = {normalise_address(a) for a in [*intake.fbl_addresses, *intake.abuse_addresses]}
    if config.feedback.fbl_address:
        found.add(normalise_address(config.feedback.fbl_address))
    return found


def accepts_recipient(config: Any, address: str) -> bool:
    """Whether the feedback listener takes mail for `address` (it is never a relay)."""
    address = normalise_address(address)
    if address in report_addresses(config):
        return True
    domain = address.rpartition("@")[2].rstrip(".")
    return bool(domain) and "@" in address and domain in bounce_domains(config)


def parse_limits(config: Any) -> returned.ParseLimits:
    """The bounds of one report's parse, its time budget starting now."""
    settings = config.feedback_intake
    return returned.ParseLimits(
        max_parts=settings.max_parts,
        max_recipients=settings.max_recipients,
        deadline=time.monotonic() + settings.parse_time_budget,
    )


def conclude(
    raw: bytes,
    config: Any,
    codec: MailIdCodec | None,
    *,
    envelope_to: Sequence[str] = (),
    force_complaint: bool = False,
) -> Conclusion:
    """Parse and check the mail ID; no store, no side effects. Only the first
    `max_parse_bytes` are parsed: the report, its status fields and the returned headers
    come first, a returned original's body is of no use."""
    with returned.parse_limits(parse_limits(config)):
        analysis = analyze(
            raw[: config.feedback_intake.max_parse_bytes],
            mailid_header=config.mail_id.header,
            verp_prefix=config.mail_id.verp_prefix,
            bounce_domains=bounce_domains(config),
            mailid_pattern=ID_PATTERN,
            envelope_recipients=list(envelope_to),
        )
    kind = analysis.kind
    if kind == "complaint" and (analysis.feedback_type or "") in UNSUBSCRIBE_TYPES:
        kind = "unsubscribe"
    if force_complaint and kind == "other" and not analysis.feedback_type and analysis.mail_ids:
        # The abuse desk says it is a complaint (a forward without the usual marks).
        kind = "complaint"
        analysis = dataclasses.replace(
            analysis, kind="complaint", feedback_type="abuse", reason="complaint: reported to the abuse desk"
        )
    return Conclusion(analysis, check_mail_ids(analysis, raw, config, codec, envelope_to), kind)


def check_mail_ids(
    analysis: FeedbackAnalysis,
    raw: bytes,
    config: Any,
    codec: MailIdCodec | None,
    envelope_to: Sequence[str] = (),
) -> MailIdCheck:
    """The first genuine candidate (they come best first), else the most telling failure."""
    if not analysis.mail_ids:
        return MailIdCheck(None, "none")
    if codec is None:
        return MailIdCheck(
            analysis.mail_ids[0], "unverified", candidates=[(m, "unverified") for m in analysis.mail_ids]
        )
    decoded = [codec.decode(m) for m in analysis.mail_ids]
    candidates: list[tuple[str, str]] = [(d.mail_id, str(d.status)) for d in decoded]
    best = min(decoded, key=lambda d: _STATUS_RANK.get(d.status, 9))
    return MailIdCheck(
        best.mail_id,
        best.status,
        best,
        _attribution(best.mail_id, analysis, raw, config, envelope_to),
        candidates,
    )


def _attribution(
    mail_id: str, analysis: FeedbackAnalysis, raw: bytes, config: Any, envelope_to: Sequence[str]
) -> str:
    verp = f"{config.mail_id.verp_prefix}-{mail_id}@".lower()
    if any(verp in a.lower() for a in envelope_to) or verp.encode() in raw.lower():
        return "verp"
    if mail_id in (analysis.original_headers.get(config.mail_id.header) or "").lower():
        return "header"
    return "text"


class Intake:
    """Records returned mail and acts on it. Thread-safe as the store is (a connection per
    thread); the feedback listener calls `ingest` from worker threads."""

    def __init__(
        self,
        config: Any,
        store: Any,
        codec: MailIdCodec,
        *,
        log: EventLogger | None = None,
        clock: Any = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.codec = codec
        self.log = log or get_logger()
        self.clock = clock
        self.breaker = Breaker(config, store)

    @property
    def settings(self) -> Any:
        return self.config.feedback_intake

    # -- the whole step -----------------------------------------------------------------------
    def ingest(
        self,
        raw: bytes,
        *,
        source: str,
        envelope_from: str | None = None,
        envelope_to: Sequence[str] = (),
        force_complaint: bool = False,
    ) -> IntakeResult:
        now = self.clock()
        conclusion = conclude(
            raw, self.config, self.codec, envelope_to=envelope_to, force_complaint=force_complaint
        )
        analysis, kind = conclusion.analysis, conclusion.kind
        check = conclusion.check
        limit = self.settings.max_raw_bytes
        event = FeedbackEvent(
            received_at=now,
            source=source,
            kind=kind,
            bounce_class=analysis.bounce_class,
            status=analysis.status,
            reason=analysis.reason,
            feedback_type=analysis.feedback_type,
            recipients=list(analysis.recipients),
            envelope_from=envelope_from,
            envelope_to=[normalise_address(a) for a in envelope_to],
            mail_id=check.mail_id,
            mail_id_status=check.status,
            attribution=check.attribution,
            raw_size=len(raw),
            raw_truncated=len(raw) > limit,
            details={
                "parser": analysis.source,
                "mail_id_candidates": [{"mail_id": m, "status": s} for m, s in check.candidates],
                "original_headers": analysis.original_headers,
                "per_recipient": [dataclasses.asdict(r) for r in analysis.per_recipient],
            },
        )
        result = IntakeResult(event, conclusion)
        plan = self._plan(result)
        pending_logs: list[tuple[str, int, dict[str, Any]]] = []
        with self.store.transaction():
            self.store.add_feedback_event(event, raw[:limit])
            plan(pending_logs)
            self.store.update_feedback_event(event)
            emit_customer_event(self.store, result)
        self._revoke_consent(result, pending_logs)
        self._report(result, pending_logs)
        return result

    def _revoke_consent(self, result: IntakeResult, logs: list[Any]) -> None:
        """A complaint or an unsubscribe also ends the recipient's double opt-in with that
        customer: its consent evidence must not keep saying "confirmed" (RULES.md: "and no
        revocation"). After the commit: the consent store runs its own transaction."""
        for entry, added in result.suppressions:
            if not added or entry.is_global or entry.reason not in ("complaint", "unsubscribe"):
                continue
            record, changed = self.store.consent_revoke(
                entry.customer_id,
                entry.address,
                at=entry.created_at,
                reason=f"{entry.reason} ({result.event.source})",
                via="feedback",
            )
            if changed:
                logs.append(
                    (
                        "consent",
                        logging.INFO,
                        {
                            "mail_id": result.event.mail_id,
                            "rcpt": entry.address,
                            "result": "revoked",
                            "reason": entry.reason,
                        },
                    )
                )

    # -- verification -------------------------------------------------------------------------
    def _verified_recipient(
        self, result: IntakeResult, ledger: Any, reported: Sequence[str], *, strict: bool
    ) -> tuple[str | None, str | None, str | None]:
        """(address, where from, why not): the reported recipient the genuine ID was minted
        for (its keyed recipient hash), else the ledger's recipient of that mail ID, checked
        against the same hash. Whatever happens, only an address the ID was minted for is
        acted on.

        strict (bounces): a report that names recipients must name that one. MTAs write the
        Final-Recipient as it is, so a genuine ID next to another address is somebody reusing
        our mail to get a third party suppressed. Complaints are not strict: feedback loops
        redact the complainer ("redacted@", a made-up To), and the ID's own recipient is the
        only one a complaint can suppress."""
        decoded = result.check.decoded
        assert decoded is not None
        for address in reported:
            if self.codec.recipient_matches(decoded, address):
                return normalise_address(address), "report", None
        if reported and strict:
            return None, None, "recipient-mismatch"
        if ledger is not None:
            for address in ledger.recipients:
                if self.codec.recipient_matches(decoded, address):
                    return normalise_address(address), "ledger", None
        return None, None, "no-recipient"

    def _probable_original(self, result: IntakeResult) -> None:
        """For the abuse team only (never acted on): the newest message the ledger relayed to
        an address the unverified bounce names (`feedback_intake.final_recipient_fallback`)."""
        if not self.settings.final_recipient_fallback or result.conclusion.kind != "bounce":
            return
        since = result.event.received_at - self.settings.soft_bounce_window_days * DAY
        for rcpt in result.conclusion.analysis.recipients[:3]:
            found = self.store.last_message_to(rcpt, since)
            if found is not None:
                result.event.details["probable_mail_id"] = found[0]
                return

    # -- deciding -----------------------------------------------------------------------------
    def _unverified(self, result: IntakeResult, reason: str, action: str) -> Any:
        event = result.event
        event.details["unverified"] = reason
        event.action = f"not acted on (unverified: {reason}): {action}"
        return lambda logs: None

    def _plan(self, result: IntakeResult) -> Any:
        """Read what the decision needs (outside the write transaction) and return the writer."""
        event, check, kind = result.event, result.check, result.conclusion.kind
        analysis = result.conclusion.analysis
        if analysis.reason == f"unparseable: {returned.ParseBudgetExceeded.__name__}":
            return self._unverified(
                result, "unparsed", "the report took longer than its time budget to parse"
            )
        if not check.genuine:
            if kind not in ACTIONABLE_KINDS:
                event.action = "recorded"
                return lambda logs: None
            self._probable_original(result)
            if check.status in ("forged", "altered", "malformed"):
                return self._unverified(result, f"{check.status}-id", f"the mail ID is {check.status}")
            if check.status == "unverified":
                return self._unverified(result, "unverified-id", "no mail ID key to verify the mail ID with")
            return self._unverified(result, "no-id", "no mail ID of ours found")
        decoded = check.decoded
        assert decoded is not None and check.mail_id is not None
        ledger = self.store.get_message(check.mail_id)
        customer = self.store.get_customer_by_id(decoded.customer_id)
        campaign = self.store.get_campaign_by_id(decoded.campaign_ref) if decoded.campaign_ref else None
        event.customer_id = decoded.customer_id
        event.campaign_id = decoded.campaign_ref or None
        event.sent_at = (
            ledger.created_at
            if ledger is not None
            else decoded.timestamp.timestamp()
            if decoded.timestamp
            else None
        )
        result.customer_name = customer.name if customer is not None else None
        result.campaign = (
            campaign.campaign if campaign is not None else ledger.campaign if ledger is not None else None
        )
        event.details["customer"] = result.customer_name
        event.details["campaign"] = result.campaign

        if kind == "bounce":
            failed = [r for r in analysis.per_recipient if r.action == "failed"]
            address, origin, why_not = self._verified_recipient(
                result, ledger, [r.recipient for r in failed] or analysis.recipients, strict=True
            )
            bounce_class = analysis.bounce_class
            for r in failed:
                if address and normalise_address(r.recipient) == address:
                    bounce_class = r.bounce_class
                    event.status = r.status or event.status
                    event.reason = r.reason or event.reason
            event.bounce_class = bounce_class
        elif kind in ("complaint", "unsubscribe"):
            address, origin, why_not = self._verified_recipient(
                result, ledger, analysis.recipients, strict=False
            )
        else:
            event.action = f"recorded ({kind})"
            if kind in ("delay", "auto-reply") and analysis.recipients:
                event.recipient = normalise_address(analysis.recipients[0])
            return lambda logs: None
        if why_not == "recipient-mismatch":
            return self._unverified(
                result, why_not, "the reported recipient is not the one the mail ID was minted for"
            )
        event.recipient = address
        event.details["recipient_from"] = origin
        if address is None:
            event.details["note"] = "the report names no recipient, and the ledger has no row for the mail ID"

        if kind == "bounce":
            return lambda logs: self._bounce(result, logs)
        if kind == "complaint":
            duplicate = self.store.complaint_already_counted(check.mail_id)
            return lambda logs: self._complaint(result, customer, duplicate, logs)
        return lambda logs: self._unsubscribe(result, logs)

    # -- acting (inside the transaction) ------------------------------------------------------
    def _bounce(self, result: IntakeResult, logs: list[Any]) -> None:
        event = result.event
        address = event.recipient
        cls = event.bounce_class
        if cls == "none":
            event.action = "recorded (not a failure)"
            return
        if cls == "not-recipient-fault":
            event.acted = True
            event.action = "counted for the customer (not the recipient's fault); not suppressed"
            return
        if address is None:
            self._unverified(
                result,
                "no-recipient",
                "the bounced recipient is unknown (the "
                "report names none, the ledger has no row for the mail ID)",
            )
            return
        event.acted = True
        if cls == "hard":
            self._suppress(
                result,
                GLOBAL,
                address,
                "hard-bounce",
                f"{event.status or '-'} {event.reason or ''}".strip(),
                logs,
            )
            customer = self.store.get_customer_by_id(event.customer_id) if event.customer_id else None
            if customer is not None:
                self.store.update_feedback_event(event)  # this bounce counts too
                check = self.breaker.hard_bounce(customer, event.received_at, logs)
                if check is not None:
                    event.details["bounce_rate"] = {
                        "bounces": check.bounces,
                        "messages": check.messages,
                        "rate": check.rate,
                        "action": check.action,
                    }
                    if check.action == "paused":
                        event.action = (event.action or "") + "; customer paused"
            return
        # soft
        settings = self.settings
        window = settings.soft_bounce_window_days * DAY
        since = event.received_at - window
        self.store.update_feedback_event(event)  # this bounce counts too
        removed = self.store.last_suppression_removal(GLOBAL, address)
        if removed is not None:
            since = max(since, removed)
        good = self.store.last_good_delivery(address)
        count = self.store.count_soft_bounces(address, since, good)
        event.details["soft_bounces"] = count
        if count >= settings.soft_bounce_threshold:
            self._suppress(
                result,
                GLOBAL,
                address,
                "soft-bounce",
                f"{count} soft bounces within {settings.soft_bounce_window_days:g} "
                f"days, last {event.status or '-'} {event.reason or ''}".strip(),
                logs,
            )
        else:
            event.action = (
                f"soft bounce {count} of {settings.soft_bounce_threshold} within "
                f"{settings.soft_bounce_window_days:g} days; not suppressed yet"
            )

    def _complaint(self, result: IntakeResult, customer: Any, duplicate: bool, logs: list[Any]) -> None:
        event = result.event
        if duplicate:
            # The same complaint again (FBL and abuse desk, or a resend): its suppression was
            # made the first time, and if ops removed it since, that stands.
            event.action = "duplicate complaint for this mail ID: not counted again"
            return
        event.acted = True
        if event.recipient is not None:
            self._suppress(
                result, event.customer_id or GLOBAL, event.recipient, "complaint", event.reason, logs
            )
        else:
            event.action = "complaint counted; recipient unknown, nothing suppressed"
        if customer is not None:
            self.store.update_feedback_event(event)  # this complaint counts too
            result.rate = self._complaint_rate(result, customer, logs)

    def _unsubscribe(self, result: IntakeResult, logs: list[Any]) -> None:
        event = result.event
        if event.recipient is None:
            self._unverified(
                result,
                "no-recipient",
                "the unsubscribing address is unknown "
                "(the report names none, the ledger has no row for the mail ID)",
            )
            return
        event.acted = True
        self._suppress(
            result, event.customer_id or GLOBAL, event.recipient, "unsubscribe", event.reason, logs
        )

    def _suppress(
        self,
        result: IntakeResult,
        customer_id: int,
        address: str,
        reason: str,
        detail: str | None,
        logs: list[Any],
    ) -> None:
        event = result.event
        entry, added = self.store.add_suppression(
            customer_id,
            address,
            reason,
            detail=detail,
            mail_id=event.mail_id,
            feedback_id=event.id,
            by=f"feedback:{event.source}",
            at=event.received_at,
            notify=event.customer_id,
        )
        result.suppressions.append((entry, added))
        scope = "global" if customer_id == GLOBAL else (result.customer_name or str(customer_id))
        where = "for everyone" if customer_id == GLOBAL else "for this customer"
        if added:
            event.action = f"suppressed {where} ({reason})"
        else:
            event.action = f"already suppressed {where} ({entry.reason})"
        logs.append(
            (
                "suppression",
                logging.INFO,
                {
                    "mail_id": event.mail_id,
                    "rcpt": address,
                    "scope": scope,
                    "reason": reason,
                    "result": "added" if added else "exists",
                    "feedback": event.id,
                    "detail": detail,
                },
            )
        )

    def _complaint_rate(self, result: IntakeResult, customer: Any, logs: list[Any]) -> RateCheck:
        # The decision is the circuit breaker's (gateway/breaker.py).
        check = self.breaker.complaint(customer, result.event.received_at, result.event.mail_id, logs)
        if check.action == "suspended":
            result.event.action = (result.event.action or "") + "; customer suspended"
        result.event.details["complaint_rate"] = {
            "complaints": check.complaints,
            "messages": check.messages,
            "rate": check.rate,
            "action": check.action,
        }
        return check

    # -- after the commit ---------------------------------------------------------------------
    def _report(self, result: IntakeResult, pending: list[tuple[str, int, dict[str, Any]]]) -> None:
        event = result.event
        MAIL_ID_CHECKS.labels(event.mail_id_status).inc()
        metrics.FEEDBACK_EVENTS.labels(event.kind, event.bounce_class).inc()
        unverified = event.details.get("unverified")
        if unverified:
            UNVERIFIED.labels(event.kind, unverified).inc()
        level = (
            logging.WARNING
            if event.mail_id_status in ("forged", "altered") or unverified == "recipient-mismatch"
            else logging.INFO
        )
        self.log.event(
            "feedback",
            level,
            feedback=event.id,
            source=event.source,
            kind=event.kind,
            **{"class": event.bounce_class},
            status=event.status,
            feedback_type=event.feedback_type,
            mail_id=event.mail_id,
            mail_id_status=event.mail_id_status,
            attribution=event.attribution,
            verified="no"
            if unverified
            else "yes"
            if (event.kind in ACTIONABLE_KINDS and event.mail_id_status == "genuine")
            else None,
            unverified=unverified,
            customer=result.customer_name,
            campaign=result.campaign,
            rcpt=event.recipient,
            reported=",".join(event.recipients[:3]) or None,
            action=event.action,
            reason=event.reason,
            size=event.raw_size,
        )
        for name, lvl, fields in pending:
            if name == "suppression" and fields.get("result") == "added":
                metrics.SUPPRESSIONS.labels(fields["reason"]).inc()
            if name == "complaint_rate" and fields["action"] in ("warning", "suspended"):
                COMPLAINT_RATE_ACTIONS.labels(fields["action"]).inc()
                BREAKER_ACTIONS.labels("complaint", fields["action"]).inc()
            if name == "breaker" and fields["action"] in ("warning", "paused"):
                BREAKER_ACTIONS.labels(fields["rate_kind"], fields["action"]).inc()
            self.log.event(name, lvl, **fields)


def emit_customer_event(store: Any, result: IntakeResult) -> None:
    """A bounce or complaint the intake acted on is an event for the customer whose message it
    was (DESIGN §13), written in the intake's transaction. Reports that changed nothing
    (unverified, duplicates, auto-replies) tell the customer nothing."""
    event = result.event
    if not event.acted or not event.customer_id or event.kind not in ("bounce", "complaint"):
        return
    data: dict[str, Any] = {"mail_id": event.mail_id, "campaign": result.campaign}
    if event.kind == "bounce":
        data.update(
            {
                "class": event.bounce_class,
                "status": event.status,
                "diagnostic": (event.reason or "")[:500] or None,
            }
        )
    else:
        data.update({"source": event.source, "feedback_type": event.feedback_type})
    store.emit_event(event.customer_id, event.kind, data, recipient=event.recipient, at=event.received_at)
