"""Managed one-click unsubscribe (`gateway customer set-unsubscribe NAME --managed`).

The customer has opted in to a service: the gateway writes List-Unsubscribe (an https URL of its
own http listener with a signed token for this customer, recipient, list and mail ID) and
List-Unsubscribe-Post into every message of that customer, replacing any the client sent,
before DKIM signing. It is stamped like the mail ID, whatever the `unsubscribe` policy's mode
(enforce, monitor or off) and whatever that policy finds: a policy only judges the message.

One link serves one recipient, so a managed customer sends one recipient per transaction (the
engine answers a further RCPT with 452 4.5.3, which clients handle by sending the rest in a new
transaction).
"""

from __future__ import annotations

import re
from typing import Any

from gateway.core.transaction import Transaction
from gateway.mime.unsubscribe import ONE_CLICK_VALUE
from gateway.urltokens import UNSUBSCRIBE, TokenKeyError, signer_for, unsubscribe_url

HEADERS = ("List-Unsubscribe", "List-Unsubscribe-Post")


class ManagedUnsubscribeUnavailable(Exception):
    """The headers cannot be made now (no http.public_url, unreadable token key)."""


def list_label(txn: Transaction) -> str:
    """The list a recipient leaves: the List-Id (RFC 2919) identifier, else the campaign."""
    list_id = txn.header("List-Id") or ""
    match = re.search(r"<([^<>\s]{1,200})>", list_id)
    label = match.group(1) if match else (txn.campaign or "")
    return "".join(c for c in label if c.isprintable())[:200]


def managed_headers(config: Any, txn: Transaction, customer_id: int) -> list[tuple[str, str]]:
    """List-Unsubscribe and List-Unsubscribe-Post for the one recipient of `txn`."""
    http = getattr(config, "http", None)
    public = getattr(http, "public_url", None)
    if http is None or not public:
        raise ManagedUnsubscribeUnavailable("http.public_url is not configured")
    try:
        signer = signer_for(config.path(http.token_key_file))
    except (TokenKeyError, OSError) as exc:
        raise ManagedUnsubscribeUnavailable(str(exc)) from None
    token = signer.make(
        UNSUBSCRIBE, customer_id, txn.recipients[0], list_label=list_label(txn), reference=txn.mail_id
    )
    return [
        ("List-Unsubscribe", f"<{unsubscribe_url(public, token)}>"),
        ("List-Unsubscribe-Post", ONE_CLICK_VALUE),
    ]
