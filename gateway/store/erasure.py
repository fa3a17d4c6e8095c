"""Erasure by recipient (GDPR Art. 17), mixed into SqlStore.

`erase_recipient` replaces the address, wherever the store keeps it, by a keyed hash
(``erased:`` + 24 hex digits of HMAC-SHA256 over the normalised address): ledger rows, feedback
events (their raw copy and parse are dropped), outbox events, suppressions and their history,
consent records and events. The address is then no longer readable, but:

* it stays suppressed: the erasure adds a suppression (for the customer, or for everyone) and
  every suppression look-up also asks for the hash, so mail to it is refused at RCPT;
* the double-opt-in evidence (source, times, IPs) stays under the hash, revoked: under §7 UWG
  and the CSA complaint process the sender must prove the consent it had, and whoever brings
  the address (the complaints office, a court) can still find it by its hash.

The HMAC key lives in the store (``store_keys``), so every node and the CLI hash alike; a dump
of the database alone still lets someone test a guessed address, which is why the key is not
derivable from anything else and never leaves the store.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.store.types import GLOBAL, normalise_address

ERASED_PREFIX = "erased:"


@dataclass
class ErasureReport:
    address_hash: str
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, what: str, n: int) -> None:
        if n:
            self.counts[what] = self.counts.get(what, 0) + n


def scrubber(address: str, marker: str) -> Callable[[str | None], str | None]:
    """Replaces every case-insensitive occurrence of the address (also inside <>)."""
    pattern = re.compile(re.escape(normalise_address(address)), re.IGNORECASE)

    def scrub(text: str | None) -> str | None:
        return pattern.sub(marker, text) if text else text

    return scrub


class ErasureStoreMixin:
    execute: Callable[..., list[tuple[Any, ...]]]
    transaction: Callable[..., Any]
    get_customer_by_id: Callable[[int], Any]
    audit: Callable[..., None]
    add_suppression: Callable[..., Any]
    _local: Any

    def _erasure_key(self) -> bytes:
        key = getattr(self, "_erasure_key_cache", None)
        if key is not None:
            return key  # type: ignore[no-any-return]
        self.execute(
            "INSERT INTO store_keys (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            ("erasure-hash", secrets.token_hex(32), time.time()),
            invalidate=False,
        )
        [(value,)] = self.execute("SELECT value FROM store_keys WHERE name = 'erasure-hash'")
        key = bytes.fromhex(value)
        self._erasure_key_cache = key
        return key

    def address_hash(self, address: str) -> str:
        digest = hmac.new(
            self._erasure_key(), normalise_address(address).encode(), hashlib.sha256
        ).hexdigest()
        return ERASED_PREFIX + digest[:24]

    def erase_recipient(
        self, address: str, *, customer_id: int | None, by: str, at: float | None = None
    ) -> ErasureReport:
        """Erase `address` for one customer (its rows only) or for all (None)."""
        address = normalise_address(address)
        marker = self.address_hash(address)
        scrub = scrubber(address, marker)
        report = ErasureReport(marker)
        at = time.time() if at is None else at
        like = "%" + address.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        mine = "" if customer_id is None else " AND customer_id = ?"
        scope: tuple[Any, ...] = () if customer_id is None else (customer_id,)
        with self.transaction():
            # It stays refused: a suppression under the hash (added before the rest is
            # scrubbed, so the history row below is scrubbed too).
            self.add_suppression(
                GLOBAL if customer_id is None else customer_id,
                address,
                "manual",
                detail="erased on request (GDPR Art. 17)",
                by=by,
                at=at,
            )
            for mail_id, recipients, verdicts, reply in self.execute(
                "SELECT mail_id, recipients, verdicts, reply FROM messages WHERE "
                f"lower(recipients) LIKE ? ESCAPE '\\'{mine}",
                (like, *scope),
            ):
                self.execute(
                    "UPDATE messages SET recipients = ?, verdicts = ?, reply = ? WHERE mail_id = ?",
                    (scrub(recipients), scrub(verdicts), scrub(reply), mail_id),
                    invalidate=False,
                )
                report.add("ledger rows", 1)
            for row_id, recipients, reason in self.execute(
                "SELECT id, recipients, reason FROM feedback_events WHERE (lower(recipient) "
                f"= ? OR lower(recipients) LIKE ? ESCAPE '\\'){mine}",
                (address, like, *scope),
            ):
                self.execute(
                    "UPDATE feedback_events SET recipient = ?, recipients = ?, "
                    "reason = ?, details = ?, raw = NULL WHERE id = ?",
                    (marker, scrub(recipients), scrub(reason), json.dumps({"erased": True}), row_id),
                    invalidate=False,
                )
                report.add("feedback events", 1)
            for row_id, payload in self.execute(
                f"SELECT id, payload FROM outbox_events WHERE recipient = ?{mine}", (address, *scope)
            ):
                self.execute(
                    "UPDATE outbox_events SET recipient = ?, payload = ? WHERE id = ?",
                    (marker, scrub(payload), row_id),
                    invalidate=False,
                )
                report.add("customer events", 1)
            for table in ("suppressions", "suppression_history"):
                if customer_id is None:
                    n = self.execute(
                        f"UPDATE {table} SET address = ?, detail = NULL WHERE address = ? RETURNING id",
                        (marker, address),
                    )
                else:
                    n = self.execute(
                        f"UPDATE {table} SET address = ?, detail = NULL WHERE "
                        "address = ? AND customer_id = ? RETURNING id",
                        (marker, address, customer_id),
                    )
                report.add(table.replace("_", " "), len(n))
            for row_id, before, after, reason in self.execute(
                "SELECT id, state_before, state_after, reason FROM audit_log WHERE "
                "(lower(state_before) LIKE ? ESCAPE '\\' OR lower(state_after) LIKE ? "
                f"ESCAPE '\\' OR lower(reason) LIKE ? ESCAPE '\\'){mine}",
                (like, like, like, *scope),
            ):
                self.execute(
                    "UPDATE audit_log SET state_before = ?, state_after = ?, reason = ? WHERE id = ?",
                    (scrub(before), scrub(after), scrub(reason), row_id),
                    invalidate=False,
                )
                report.add("audit entries", 1)
            # Evidence kept, revoked, under the hash (see the module's docstring).
            self.execute(
                "UPDATE consent_records SET revoked_at = COALESCE(revoked_at, ?), "
                "revoked_reason = COALESCE(revoked_reason, 'erased on request') "
                f"WHERE address = ?{mine}",
                (at, address, *scope),
            )
            for table in ("consent_records", "consent_events"):
                n = self.execute(
                    f"UPDATE {table} SET address = ? WHERE address = ?{mine} RETURNING id",
                    (marker, address, *scope),
                )
                report.add(table.replace("_", " "), len(n))
            # The erasure itself is a decision about the customer's data (issue #12's trail).
            customer = self.get_customer_by_id(customer_id) if customer_id else None
            self.audit(
                customer,
                "erase-recipient",
                by,
                "erased on request (GDPR Art. 17)",
                None,
                {"address": marker, "scope": "customer" if customer_id else "all"},
            )
        return report
