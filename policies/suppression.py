"""suppression: a recipient that hard-bounced, soft-bounced too often, complained or unsubscribed
is refused at RCPT, for everyone (bounces) or for that customer (complaints, unsubscribes)
(RULES.md "Suppression"). The entries are written by the feedback intake and by
`gateway suppression add`."""

from __future__ import annotations

import datetime

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict

_TEXTS = {
    "hard-bounce": "{rcpt} previously hard-bounced on {date}; it is suppressed",
    "soft-bounce": "{rcpt} soft-bounced repeatedly (suppressed on {date}); it is suppressed",
    "complaint": "{rcpt} complained about mail from this sender on {date}; it is suppressed",
    "unsubscribe": "{rcpt} unsubscribed on {date}; it is suppressed",
    "manual": "{rcpt} was put on the suppression list on {date}; it is suppressed",
}


def _date(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


class Suppression(Policy):
    name = "suppression"
    phases = (Phase.RCPT,)
    description = "the recipient is suppressed for this customer or globally (bounce, complaint, unsubscribe)"
    touches = Touches.STORE  # one indexed store read per recipient

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        rcpt = (txn.current_rcpt or "").strip().strip("<>").strip()
        if not rcpt:
            return Verdict.ok("no recipient to check")
        customer_id = txn.customer.id if txn.customer is not None else None
        entry = ctx.store.find_suppression(customer_id, rcpt)
        if entry is None:
            return Verdict.ok(f"{rcpt} is not suppressed")
        text = _TEXTS.get(entry.reason, _TEXTS["manual"]).format(rcpt=rcpt, date=_date(entry.created_at))
        scope = "globally" if entry.is_global else f"for customer id {entry.customer_id}"
        reason = (
            f"{rcpt} suppressed {scope} since {_date(entry.created_at)}: {entry.reason}"
            + (f" (mail_id {entry.mail_id})" if entry.mail_id else "")
            + (f": {entry.detail}" if entry.detail else "")
        )
        return Verdict.reject(text, reason)
