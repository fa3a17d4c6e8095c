"""suppression: a recipient that hard-bounced, soft-bounced too often, complained or unsubscribed
is refused at RCPT, for everyone (bounces) or for that customer (complaints, unsubscribes)
(RULES.md "Suppression"). The entries are written by the feedback intake and by
`gateway suppression add`.

One exception lets a person who unsubscribed sign up again: when, after the unsubscribe, a new
subscription to the same customer is pending (the consent API or page recorded it less than
`resubscribe_window_hours` ago), RCPT passes and at end of DATA the message must carry a genuine
confirmation link of this gateway for exactly this customer and recipient — only the
confirmation mail gets through. Confirming on the gateway's page then lifts the suppression.
Complaints, bounces and manual entries have no such exception.
"""

from __future__ import annotations

import datetime
import time

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.policy import Policy, PolicyContext
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.store.feedback import Suppression as Entry
from policies.consent import carries_confirmation_link

_TEXTS = {
    "hard-bounce": "{rcpt} previously hard-bounced on {date}; it is suppressed",
    "soft-bounce": "{rcpt} soft-bounced repeatedly (suppressed on {date}); it is suppressed",
    "complaint": "{rcpt} complained about mail from this sender on {date}; it is suppressed",
    "unsubscribe": "{rcpt} unsubscribed on {date}; it is suppressed",
    "manual": "{rcpt} was put on the suppression list on {date}; it is suppressed",
}


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


class SuppressionOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # How long after signing up again an unsubscribed address may receive its confirmation
    # mail (0: never).
    resubscribe_window_hours: float = Field(default=48.0, ge=0)


def _rcpt(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


class Suppression(Policy):
    name = "suppression"
    phases = (Phase.RCPT, Phase.DATA)
    description = ("the recipient is suppressed for this customer or globally (bounce, "
                   "complaint, unsubscribe)")
    Options = SuppressionOptions
    store_reads_only = True  # one indexed store read per recipient

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if ctx.phase is Phase.DATA:
            return self._data(txn, ctx)
        rcpt = _rcpt(txn.current_rcpt)
        if not rcpt:
            return Verdict.ok("no recipient to check")
        customer_id = txn.customer.id if txn.customer is not None else None
        entry = ctx.store.find_suppression(customer_id, rcpt)
        if entry is None:
            return Verdict.ok(f"{rcpt} is not suppressed")
        if self._signing_up_again(entry, txn, ctx):
            return Verdict.ok(f"{rcpt} unsubscribed on {_date(entry.created_at)} and signed up "
                              "again since; only the confirmation mail may pass (checked at DATA)")
        return _refusal(entry, rcpt)

    def _signing_up_again(self, entry: Entry, txn: Transaction,
                          ctx: PolicyContext) -> bool:
        """A customer's unsubscribe entry, and a newer subscription pending in the window."""
        window = self.options.resubscribe_window_hours * 3600  # type: ignore[attr-defined]
        if (window <= 0 or txn.customer is None or entry.reason != "unsubscribe"
                or entry.is_global):
            return False
        record = ctx.store.get_consent(txn.customer.id, entry.address)
        return (record is not None and record.status == "pending"
                and record.subscribed_at > entry.created_at
                and time.time() - record.subscribed_at <= window)

    def _data(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        # A recipient still suppressed here passed RCPT as signing up again (or in monitor
        # mode, or was suppressed meanwhile): only the confirmation mail may go to it.
        customer_id = txn.customer.id if txn.customer is not None else None
        for rcpt in map(_rcpt, txn.recipients):
            entry = ctx.store.find_suppression(customer_id, rcpt)
            if entry is None:
                continue
            if not self._signing_up_again(entry, txn, ctx):
                return _refusal(entry, rcpt)
            assert customer_id is not None
            if not carries_confirmation_link(txn, ctx, customer_id, rcpt):
                return Verdict.reject(
                    f"{rcpt} unsubscribed on {_date(entry.created_at)}; until the new "
                    "subscription is confirmed, only the confirmation mail with its "
                    "confirmation link may be sent to it",
                    f"{rcpt} unsubscribed and signing up again; the message carries no "
                    "confirmation link of this gateway for this recipient")
        return Verdict.ok("no suppressed recipient")


def _refusal(entry: Entry, rcpt: str) -> Verdict:
    text = _TEXTS.get(entry.reason, _TEXTS["manual"]).format(rcpt=rcpt,
                                                            date=_date(entry.created_at))
    scope = "globally" if entry.is_global else f"for customer id {entry.customer_id}"
    reason = (f"{rcpt} suppressed {scope} since {_date(entry.created_at)}: {entry.reason}"
              + (f" (mail_id {entry.mail_id})" if entry.mail_id else "")
              + (f": {entry.detail}" if entry.detail else ""))
    return Verdict.reject(text, reason)
