"""consent: every recipient needs a confirmed, unrevoked double-opt-in record for this customer
(RULES.md "Double opt-in evidence"). The records come from the consent API, the confirmation
page and `gateway consent import`.

One exception keeps double opt-in possible at all: the confirmation mail itself goes to an
address that has not confirmed yet. A recipient whose subscription is pending (not confirmed,
not revoked) and younger than `confirmation_window_hours` passes RCPT, and at end of DATA the
message must then carry a genuine confirmation link of this gateway for exactly this customer
and recipient (``<http.public_url>/c/<token>``); any other mail to a pending address is refused.
"""

from __future__ import annotations

import datetime
import html
import re
import time

from pydantic import BaseModel, ConfigDict, Field

from gateway.core.policy import Policy, PolicyContext, Touches
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.mime.parts import scan_text_parts
from gateway.store.consent import ConsentRecord
from gateway.urltokens import CONFIRM, TokenError, TokenKeyError, normalise, signer_for
from policies._text import shown

HOUR = 3600.0
_TOKEN_CHARS = r"[A-Za-z0-9_-]{20,1024}"


class ConsentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # A pending subscription may receive its confirmation mail for this long (0: never; then
    # confirmation mails must be sent around the gateway).
    confirmation_window_hours: float = Field(default=48.0, ge=0)


def _date(ts: float | None) -> str:
    # The record's status implies its time is set (confirmed: confirmed_at...); a row that
    # breaks that still gets a readable reply instead of a policy error.
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d")


def _rcpt(value: str | None) -> str:
    return (value or "").strip().strip("<>").strip()


class Consent(Policy):
    name = "consent"
    phases = (Phase.RCPT, Phase.DATA)
    description = "no confirmed double-opt-in record for this customer + recipient"
    Options = ConsentOptions
    options: ConsentOptions
    # RCPT queries the store for a new recipient; DATA reads what RCPT put in the cache.
    touches = {Phase.RCPT: Touches.STORE, Phase.DATA: Touches.STORE_CACHED}

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if ctx.phase is Phase.RCPT:
            return self._rcpt(txn, ctx)
        return self._data(txn, ctx)

    def _pending_in_window(self, record: ConsentRecord, now: float) -> bool:
        window = self.options.confirmation_window_hours * HOUR
        return record.status == "pending" and window > 0 and now - record.subscribed_at <= window

    def _rcpt(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        rcpt = _rcpt(txn.current_rcpt)
        if not rcpt:
            return Verdict.ok("no recipient to check")
        if txn.customer is None:
            return Verdict.reject(
                f"No confirmed double opt-in is recorded for {shown(rcpt)}; "
                "the sender is not a known customer",
                "no authenticated customer",
            )
        record = ctx.store.get_consent(txn.customer.id, rcpt)
        if record is not None and record.passes:
            return Verdict.ok(
                f"{rcpt}: confirmed {_date(record.confirmed_at)} "
                f"from {record.confirmed_ip or '-'} (source {record.source})"
            )
        if record is not None and self._pending_in_window(record, time.time()):
            return Verdict.ok(
                f"{rcpt}: subscription of {_date(record.subscribed_at)} pending; "
                "only its confirmation mail may pass (checked at DATA)"
            )
        head = f"No confirmed double opt-in is recorded for {shown(rcpt)}; "
        if record is None:
            return Verdict.reject(
                head + "record the subscription and its confirmation before sending",
                f"{rcpt}: no consent record for customer {txn.customer.name}",
            )
        if record.status == "revoked":
            return Verdict.reject(
                head + f"the consent was revoked on {_date(record.revoked_at)}",
                f"{rcpt}: consent revoked {_date(record.revoked_at)}: {record.revoked_reason}",
            )
        return Verdict.reject(
            head + f"the subscription of {_date(record.subscribed_at)} was never confirmed",
            f"{rcpt}: subscribed {_date(record.subscribed_at)} (source {record.source}), "
            "not confirmed; outside the confirmation window",
        )

    def _data(self, txn: Transaction, ctx: PolicyContext) -> Verdict:
        if txn.customer is None:
            return Verdict.ok("no customer")
        now = time.time()
        pending = []
        for rcpt in txn.recipients:
            record = ctx.store.get_consent(txn.customer.id, _rcpt(rcpt))
            if record is not None and not record.passes and self._pending_in_window(record, now):
                pending.append((_rcpt(rcpt), record))
        if not pending:
            return Verdict.ok("no pending recipients")
        found = _confirmation_links(txn, ctx)
        for rcpt, record in pending:
            if not _link_for(found, ctx, txn.customer.id, rcpt):
                return Verdict.reject(
                    f"No confirmed double opt-in is recorded for {shown(rcpt)}; until it is "
                    "confirmed, only the confirmation mail with its confirmation link may be "
                    "sent to it",
                    f"{rcpt}: pending since {_date(record.subscribed_at)}; the message carries "
                    f"no confirmation link of this gateway for this recipient "
                    f"({len(found)} link(s) found)",
                )
        return Verdict.ok(f"confirmation mail to {', '.join(r for r, _ in pending)}")


def _confirmation_links(txn: Transaction, ctx: PolicyContext) -> list[str]:
    """Tokens of `<public_url>/c/<token>` links in any text part of the message."""
    public = getattr(getattr(ctx.config, "http", None), "public_url", None)
    if not public:
        return []
    pattern = re.compile(re.escape(public.rstrip("/")) + r"/c/(" + _TOKEN_CHARS + ")")
    tokens: list[str] = []
    for part in scan_text_parts(txn.message).parts:
        text = html.unescape(part.text) if part.content_type == "text/html" else part.text
        tokens.extend(pattern.findall(text))
    return tokens


def _link_for(tokens: list[str], ctx: PolicyContext, customer_id: int, rcpt: str) -> bool:
    if not tokens:
        return False
    try:
        signer = signer_for(ctx.config.path(ctx.config.http.token_key_file), create=False)
    except TokenKeyError:
        return False
    for token in tokens:
        try:
            claims = signer.verify(token, CONFIRM)
        except TokenError:
            continue
        if claims.customer_id == customer_id and claims.recipient == normalise(rcpt):
            return True
    return False
