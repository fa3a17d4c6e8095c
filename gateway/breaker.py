"""The circuit breaker per customer (RULES.md "Volume and reputation").

Called by the feedback intake when it records a *verified* hard bounce or complaint (a genuine
mail ID of a message we sent, the recipient matching it), inside the intake's transaction, so
the event, the decision and its audit entry commit together. Rates are over a sliding window
that starts no earlier than the customer's last resume (support's decision to let it send
again is not undone by the bounces that caused the pause), and act only once the customer
sent a minimum number of messages in it:

* hard bounces / messages accepted: `breaker.bounce_warning_rate` warns (2 %),
  `breaker.bounce_pause_rate` pauses (5 %): MAIL gets 451 4.7.1 until
  `gateway customer resume`; transactions already past MAIL go on;
* complaints / messages accepted (window, minimum and rates `feedback_intake.complaint_*`):
  warning at 0.1 %, suspension at 0.3 % (550 until support activates it again);
* the gateway's own refusals at RCPT (role, consent, suppressed) / recipients tried:
  `breaker.refusal_warning_rate` warns: the list is bad (`refusal_check`).

Every state change and every new warning goes to the audit trail by "breaker".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge

DAY = 86400.0
HOUR = 3600.0

BREAKER_ACTIONS = Counter(
    "gateway_breaker_actions_total", "Circuit-breaker thresholds crossed", ["rate", "action"]
)  # bounce|complaint|refusal, warning|paused|suspended


# States are bounded (statuses, plus "probation" and "warning" for active customers on
# probation or with a breaker warning): never a customer name as a label.
CUSTOMER_STATE = Gauge(
    "gateway_customer_state", "Customers by state", ["state"], multiprocess_mode="mostrecent"
)
CUSTOMER_STATES = ("pending", "active", "paused", "suspended", "probation", "warning")


def update_customer_states(store: Any) -> None:
    """Set gateway_customer_state from the store (at each /metrics scrape: the states are
    the whole platform's, whichever node or worker answers)."""
    counts = dict.fromkeys(CUSTOMER_STATES, 0)
    counts.update(store.count_customers_by_status())
    counts.update(store.count_customers_flagged())
    for state in CUSTOMER_STATES:
        CUSTOMER_STATE.labels(state).set(counts.get(state, 0))


@dataclass
class RateCheck:
    customer: str
    complaints: int
    messages: int
    rate: float
    action: str  # ok | warning | suspended | over-limit-few-messages | over-limit-not-active


@dataclass
class BounceCheck:
    customer: str
    bounces: int
    messages: int
    rate: float
    action: str  # ok | warning | paused | few-messages | not-active


class Breaker:
    def __init__(self, config: Any, store: Any) -> None:
        self.config = config
        self.store = store

    @property
    def settings(self) -> Any:
        return self.config.breaker

    def _since(self, customer: Any, now: float, window: float) -> float:
        since = now - window
        resumed = self.store.last_resumed(customer.id)
        return max(since, resumed) if resumed is not None else since

    def _warn(self, customer: Any, kind: str, reason: str) -> bool:
        """Add `kind` to the customer's warnings; True when it is new (audited then)."""
        current = self.store.get_limits(customer.id).breaker_warning
        kinds = set(filter(None, (current or "").split(",")))
        if kind in kinds:
            return False
        return bool(
            self.store.set_breaker_warning(
                customer, ",".join(sorted(kinds | {kind})), reason, q=self.store.execute
            )
        )

    # -- the gateway's own refusals -----------------------------------------------------------
    def refusal_check(self, customer: Any, refused: int, accepted: int, logs: list[Any]) -> str:
        """Today's recipients refused by the list policies (role, consent, suppression) of
        all recipients tried: a high rate means a bad list. Warns once (until a resume)."""
        settings = self.settings
        tried = refused + accepted
        if not settings.enabled or tried < settings.min_messages or tried == 0:
            return "ok"
        rate = refused / tried
        if settings.refusal_warning_rate <= 0 or rate < settings.refusal_warning_rate:
            return "ok"
        what = (
            f"own-refusal rate {rate:.2%} today ({refused} of {tried} recipients refused "
            f"by {', '.join(settings.refusal_policies)})"
        )
        if not self._warn(customer, "refusal", f"{what} above {settings.refusal_warning_rate:.2%}"):
            return "warned-before"
        logs.append(
            (
                "breaker",
                logging.WARNING,
                {
                    "customer": customer.name,
                    "rate_kind": "refusal",
                    "refused": refused,
                    "recipients": tried,
                    "rate": round(rate, 6),
                    "action": "warning",
                    "warning_rate": settings.refusal_warning_rate,
                },
            )
        )
        BREAKER_ACTIONS.labels("refusal", "warning").inc()
        return "warning"

    # -- hard bounces -------------------------------------------------------------------------
    def hard_bounce(self, customer: Any, now: float, logs: list[Any]) -> BounceCheck | None:
        settings = self.settings
        if not settings.enabled or customer is None:
            return None
        since = self._since(customer, now, settings.window_hours * HOUR)
        bounces = self.store.count_hard_bounces(customer.id, since)
        messages = self.store.count_accepted_messages(customer.id, since)
        rate = bounces / max(messages, bounces, 1)
        action = "ok"
        what = (
            f"hard-bounce rate {rate:.2%} over {settings.window_hours:g} h "
            f"({bounces} hard bounces / {messages} messages)"
        )
        if rate >= settings.bounce_warning_rate and settings.bounce_warning_rate > 0:
            if messages < settings.min_messages:
                action = "few-messages"
            elif rate >= settings.bounce_pause_rate > 0 and customer.status == "active":
                action = "paused"
                self.store.change_status(
                    customer,
                    "paused",
                    f"automatic: {what} reached the pause limit of {settings.bounce_pause_rate:.2%}",
                    actor="breaker",
                    action="pause",
                    q=self.store.execute,
                )
            elif customer.status != "active":
                action = "not-active"
            else:
                action = "warning"
                self._warn(customer, "bounce", f"{what} above {settings.bounce_warning_rate:.2%}")
        if action != "ok":
            logs.append(
                (
                    "breaker",
                    logging.WARNING,
                    {
                        "customer": customer.name,
                        "rate_kind": "bounce",
                        "bounces": bounces,
                        "messages": messages,
                        "rate": round(rate, 6),
                        "action": action,
                        "warning_rate": settings.bounce_warning_rate,
                        "pause_rate": settings.bounce_pause_rate,
                    },
                )
            )
        return BounceCheck(customer.name, bounces, messages, rate, action)

    # -- complaints (moved here from the feedback intake) -------------------------------------
    def complaint(self, customer: Any, now: float, mail_id: str | None, logs: list[Any]) -> RateCheck:
        settings = self.config.feedback_intake
        since = now - settings.complaint_window_days * DAY
        complaints = self.store.count_complaints(customer.id, since)
        messages = self.store.count_accepted_messages(customer.id, since)
        rate = complaints / max(messages, complaints, 1)
        action = "ok"
        # A paused customer can still be suspended: suspension is the stronger stop.
        sending = customer.status in ("active", "paused")
        what = (
            f"complaint rate {rate:.2%} over {settings.complaint_window_days:g} days "
            f"({complaints} complaints / {messages} messages)"
        )
        if rate >= settings.complaint_suspend_rate and settings.complaint_suspend_rate > 0:
            if messages < settings.complaint_min_messages:
                action = "over-limit-few-messages"
            elif not settings.auto_suspend or not sending:
                action = "over-limit-not-active" if not sending else "warning"
            else:
                action = "suspended"
                self.store.change_status(
                    customer,
                    "suspended",
                    f"automatic: {what} reached the limit of {settings.complaint_suspend_rate:.2%}",
                    actor="breaker",
                    action="suspend",
                    q=self.store.execute,
                )
        elif rate >= settings.complaint_warning_rate and settings.complaint_warning_rate > 0:
            action = "warning"
        if action == "warning":
            self._warn(customer, "complaint", f"{what} above {settings.complaint_warning_rate:.2%}")
        logs.append(
            (
                "complaint_rate",
                logging.WARNING if action != "ok" else logging.INFO,
                {
                    "mail_id": mail_id,
                    "customer": customer.name,
                    "complaints": complaints,
                    "messages": messages,
                    "rate": round(rate, 6),
                    "window_days": settings.complaint_window_days,
                    "warning_rate": settings.complaint_warning_rate,
                    "suspend_rate": settings.complaint_suspend_rate,
                    "action": "warning" if action == "over-limit-few-messages" else action,
                    "note": (
                        f"above the suspension rate, but fewer than "
                        f"{settings.complaint_min_messages} messages in the window"
                        if action == "over-limit-few-messages"
                        else "customer is not active"
                        if action == "over-limit-not-active"
                        else None
                    ),
                },
            )
        )
        return RateCheck(customer.name, complaints, messages, rate, action)
