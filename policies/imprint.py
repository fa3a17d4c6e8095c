"""imprint: the customer's registered imprint (§5 DDG, CSA) is in every body alternative's
visible text (RULES.md "Imprint"): name, postal address and one contact."""

from __future__ import annotations

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.mime.html import visible_text
from gateway.mime.imprint import Imprint, incomplete_imprint, missing_imprint_fields
from policies._text import body_parts, clip, join_parts, part_name


class ImprintPolicy(Policy):
    name = "imprint"
    phases = (Phase.DATA,)
    touches = Touches.STORE_CACHED  # the message and the customer record
    description = "the registered imprint (name, postal address, contact) is in every visible body"

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if txn.customer is None:
            return Verdict.reject(
                "Authentication required", "no customer: imprint not checkable", code=530, enhanced="5.7.0"
            )
        # Re-read: support records and corrects imprints while sessions are open.
        customer = ctx.store.get_customer_by_id(txn.customer.id)
        if customer is None or not customer.imprint:
            return Verdict.reject(
                "No imprint is registered for your account; ask support to record it",
                f"customer id {txn.customer.id} has no imprint record",
            )
        try:
            imprint = Imprint.from_mapping(customer.imprint)
            gaps = incomplete_imprint(imprint)
        except ValueError as exc:
            imprint, gaps = None, [f"unusable record: {exc}"]
        if imprint is None or gaps:
            return Verdict.reject(
                "The imprint registered for your account is incomplete; ask support to complete it",
                f"imprint record of {customer.name}: {gaps}",
            )
        parts = body_parts(txn)
        if not parts:
            return Verdict.reject(
                "Message has no text or HTML body; the imprint must be in the visible body",
                "no body alternatives",
            )
        by_gap: dict[tuple[str, ...], list[str]] = {}  # same fields missing: name the parts once
        for part in parts:
            text = visible_text(part.text) if part.content_type == "text/html" else part.text
            missing = tuple(missing_imprint_fields(text, imprint))
            if missing:
                by_gap.setdefault(missing, []).append(part_name(part, parts))
        if by_gap:
            problems = "; ".join(
                f"{', '.join(gap)} not found in {join_parts(names)}" for gap, names in by_gap.items()
            )
            return Verdict.reject(
                clip("Imprint incomplete: " + problems),
                f"imprint of {customer.name} checked in {len(parts)} part(s): {problems}",
            )
        return Verdict.ok(f"imprint of {customer.name} found in {len(parts)} body part(s)")
