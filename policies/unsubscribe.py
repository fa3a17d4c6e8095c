"""unsubscribe: one-click unsubscribe headers (RFC 8058, RFC 2369) plus a visible unsubscribe
link in every body alternative (RULES.md "Unsubscribe").

Customers with managed unsubscribe (`gateway customer set-unsubscribe NAME --managed`) do not
send the headers: the gateway writes List-Unsubscribe (an https URL of its own http listener
with a signed token for this customer, recipient, list and mail ID) and List-Unsubscribe-Post
itself, as header mutations applied before DKIM signing, replacing any the client sent. The
visible body link stays the customer's job and is checked as for everyone."""

from __future__ import annotations

import dataclasses
import re

from gateway.core.policy import Policy, PolicyContext
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import HeaderMutation, Verdict
from gateway.mime.unsubscribe import (
    ONE_CLICK_VALUE,
    check_list_unsubscribe_headers,
    find_unsubscribe_link,
)
from policies._text import body_parts, clip, join_parts, part_name


class Unsubscribe(Policy):
    name = "unsubscribe"
    phases = (Phase.DATA,)
    blocking = False  # the message, one cached store read, the (cached) token key
    description = ("List-Unsubscribe with an https URI, exact List-Unsubscribe-Post, and a visible "
                   "unsubscribe link in every text and HTML body")

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        problems: list[str] = []
        # The registered prefix is re-read: support may have changed it during the session.
        customer = txn.customer and ctx.store.get_customer_by_id(txn.customer.id)
        mutations: tuple[HeaderMutation, ...] = ()
        if customer and customer.managed_unsubscribe:
            # Managed: the gateway writes both headers itself (replacing the client's), with a
            # one-click URL of its own http listener for exactly this recipient.
            managed = _managed_headers(txn, ctx, customer.id)
            if isinstance(managed, Verdict):
                return managed
            mutations = managed
        else:
            lu, lup = txn.headers("List-Unsubscribe"), txn.headers("List-Unsubscribe-Post")
            if len(lu) > 1 or len(lup) > 1:
                problems.append("send List-Unsubscribe and List-Unsubscribe-Post once each")
            else:
                header_problem = check_list_unsubscribe_headers(lu[0] if lu else None,
                                                                lup[0] if lup else None)
                if header_problem:
                    problems.append(header_problem)
        prefix = customer.unsubscribe_prefix if customer else None
        parts = body_parts(txn)
        lacking = [part_name(p, parts) for p in parts if not find_unsubscribe_link(p, prefix)]
        if not parts:
            problems.append("the message has no text or HTML body to show an unsubscribe link in")
        elif lacking:
            problems.append(f"no visible unsubscribe link found in {join_parts(lacking)}")
        headers = ("List-Unsubscribe headers managed by the gateway" if mutations
                   else "List-Unsubscribe headers")
        checked = (f"{headers}; links in {len(parts)} body part(s), "
                   f"registered prefix {prefix or 'none'}")
        if problems:
            text = "; ".join(problems)
            refused = Verdict.reject(clip(text[0].upper() + text[1:]), f"{text} (checked {checked})")
            # Carried along for `mode: monitor`, where the message still leaves (the pipeline
            # applies mutations of passing verdicts only, today).
            return dataclasses.replace(refused, mutations=mutations)
        return Verdict.ok(checked, mutations=mutations)


def _list_label(txn: Transaction) -> str:
    """The list a recipient leaves: the List-Id (RFC 2919) identifier, else the campaign."""
    list_id = txn.header("List-Id") or ""
    match = re.search(r"<([^<>\s]{1,200})>", list_id)
    label = match.group(1) if match else (txn.campaign or "")
    return "".join(c for c in label if c.isprintable())[:200]


def _managed_headers(txn: Transaction, ctx: PolicyContext,
                     customer_id: int) -> tuple[HeaderMutation, ...] | Verdict:
    """The header mutations of a managed customer's message, or the verdict why none."""
    from gateway.http.tokens import UNSUBSCRIBE, TokenKeyError, signer_for, unsubscribe_url

    if len(txn.recipients) != 1:
        return Verdict.reject(
            "Managed one-click unsubscribe needs one recipient per message; send each "
            "recipient in its own transaction",
            f"managed unsubscribe: {len(txn.recipients)} recipients, one link cannot serve them")
    http = getattr(ctx.config, "http", None)
    public = getattr(http, "public_url", None)
    if http is None or not public:
        return Verdict.tempfail("Unsubscribe links cannot be made right now, try again later",
                                "managed unsubscribe: http.public_url is not configured")
    try:
        signer = signer_for(ctx.config.path(http.token_key_file))
    except (TokenKeyError, OSError) as exc:
        return Verdict.tempfail("Unsubscribe links cannot be made right now, try again later",
                                f"managed unsubscribe: {exc}")
    token = signer.make(UNSUBSCRIBE, customer_id, txn.recipients[0],
                        list_label=_list_label(txn), reference=txn.mail_id)
    return (
        HeaderMutation("List-Unsubscribe", op="remove"),
        HeaderMutation("List-Unsubscribe-Post", op="remove"),
        HeaderMutation("List-Unsubscribe", f"<{unsubscribe_url(public, token)}>"),
        HeaderMutation("List-Unsubscribe-Post", ONE_CLICK_VALUE),
    )
