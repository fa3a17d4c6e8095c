"""customer-active: only an activated customer sends (RULES.md "Customer activated")."""

from __future__ import annotations

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict

_TEXTS = {
    "pending": "Account {name} is not yet activated; sending is possible after account review",
    "suspended": "Account {name} is suspended; please contact support",
    "paused": "Sending for account {name} is paused for review of its bounce rate; "
    "please try again later or contact support",
}


class CustomerActive(Policy):
    name = "customer-active"
    phases = (Phase.MAIL,)
    description = "the authenticated customer is activated and not suspended"
    touches = Touches.STORE_CACHED  # the customer record

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        session_customer = txn.customer
        if session_customer is None:
            return Verdict.reject(
                "Authentication required", "no customer on the session", code=530, enhanced="5.7.0"
            )
        # Re-read: support may have suspended the account after this session logged in.
        customer = ctx.store.get_customer_by_id(session_customer.id)
        if customer is None:
            return Verdict.reject(
                "Account unknown; please contact support",
                f"customer id {session_customer.id} no longer exists",
            )
        if customer.status == "active":
            return Verdict.ok()
        text = _TEXTS.get(customer.status, "Account {name} may not send").format(name=customer.name)
        reason = f"customer {customer.name} is {customer.status}"
        if customer.status_reason:
            reason += f" ({customer.status_reason})"
        if customer.status == "paused":
            # Temporary: the sending engine keeps the mail and retries after support resumed.
            return Verdict.tempfail(text, reason, enhanced="4.7.1")
        return Verdict.reject(text, reason)
