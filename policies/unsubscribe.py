"""unsubscribe: one-click unsubscribe headers (RFC 8058, RFC 2369) plus a visible unsubscribe
link in every body alternative (RULES.md "Unsubscribe").

Customers with managed unsubscribe (`gateway customer set-unsubscribe NAME --managed`) do not
send the headers: the gateway writes them itself, whatever this policy's mode or finding
(gateway.managed_unsubscribe, stamped by the engine before DKIM signing), so they are not
checked here. The visible body link stays the customer's job and is checked as for everyone."""

from __future__ import annotations

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.mime.unsubscribe import check_list_unsubscribe_headers, find_unsubscribe_link
from policies._text import body_parts, clip, join_parts, part_name


class Unsubscribe(Policy):
    name = "unsubscribe"
    phases = (Phase.DATA,)
    touches = Touches.STORE_CACHED  # the message and the customer record
    description = (
        "List-Unsubscribe with an https URI, exact List-Unsubscribe-Post, and a visible "
        "unsubscribe link in every text and HTML body"
    )

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        problems: list[str] = []
        # The registered prefix is re-read: support may have changed it during the session.
        customer = txn.customer and ctx.store.get_customer_by_id(txn.customer.id)
        managed = bool(customer and customer.managed_unsubscribe)
        if not managed:
            lu, lup = txn.headers("List-Unsubscribe"), txn.headers("List-Unsubscribe-Post")
            if len(lu) > 1 or len(lup) > 1:
                problems.append("send List-Unsubscribe and List-Unsubscribe-Post once each")
            else:
                header_problem = check_list_unsubscribe_headers(
                    lu[0] if lu else None, lup[0] if lup else None
                )
                if header_problem:
                    problems.append(header_problem)
        prefix = customer.unsubscribe_prefix if customer else None
        parts = body_parts(txn)
        lacking = [part_name(p, parts) for p in parts if not find_unsubscribe_link(p, prefix)]
        if not parts:
            problems.append("the message has no text or HTML body to show an unsubscribe link in")
        elif lacking:
            problems.append(f"no visible unsubscribe link found in {join_parts(lacking)}")
        headers = "List-Unsubscribe headers managed by the gateway" if managed else "List-Unsubscribe headers"
        checked = f"{headers}; links in {len(parts)} body part(s), registered prefix {prefix or 'none'}"
        if problems:
            text = "; ".join(problems)
            return Verdict.reject(clip(text[0].upper() + text[1:]), f"{text} (checked {checked})")
        return Verdict.ok(checked)
