"""campaign-confirmed: each campaign carries the customer's guideline confirmation (RULES.md
"Guidelines confirmed per campaign"); the mails name it in `X-Campaign-ID`."""

from __future__ import annotations

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from policies._text import shown

HEADER = "X-Campaign-ID"


class CampaignConfirmed(Policy):
    name = "campaign-confirmed"
    phases = (Phase.DATA,)
    touches = Touches.STORE_CACHED  # the customer's campaign
    description = "the campaign in X-Campaign-ID has a guideline confirmation recorded"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if txn.customer is None:
            return Verdict.reject(
                "Authentication required", "no customer: campaign not checkable", code=530, enhanced="5.7.0"
            )
        values = {v.strip() for v in txn.headers(HEADER) if v.strip()}
        if not values:
            return Verdict.reject(
                f"Header {HEADER} is missing; tag each mail with the ID of a campaign "
                "whose guideline confirmation you recorded",
                f"no {HEADER} header",
            )
        if len(values) > 1:
            return Verdict.reject(
                f"Several different {HEADER} headers; send exactly one per mail",
                f"{HEADER} values: {sorted(values)}",
            )
        campaign = values.pop()
        found = ctx.store.get_campaign(txn.customer.id, campaign)
        if found is None:
            return Verdict.reject(
                f"Campaign {shown(campaign)} has no guideline confirmation; confirm the "
                "anti-spam guidelines for this campaign before sending it",
                f"campaign {campaign!r} of customer id {txn.customer.id} not confirmed",
            )
        return Verdict.ok(f"campaign {campaign!r} confirmed by {found.confirmed_by}")
