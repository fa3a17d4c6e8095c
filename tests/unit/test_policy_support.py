"""Shared helpers for the test_policy_* modules (this module holds no tests).

The store is the real SQLite store with real store calls; the transaction is the real one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.core.message import remove_headers
from gateway.core.policy import Policy, PolicyContext
from gateway.core.transaction import Phase, SessionInfo, Transaction
from gateway.core.verdict import Action, Verdict
from gateway.store import open_store

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "policies"
CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
NEWSLETTERS = CORPORA / "newsletters"

IMPRINT = {
    "company": "Müller Gartenbedarf",
    "legal_form": "GmbH",
    "representative": "Jürgen Weiß",
    "street": "Königstraße 12",
    "postcode": "70173",
    "city": "Stuttgart",
    "country": "Deutschland",
    "email": "info@shop.example",
    "phone": "+49 711 123456",
    "register_court": "Amtsgericht Stuttgart",
    "register_number": "HRB 123456",
    "vat_id": "DE123456789",
}
UNSUBSCRIBE_PREFIX = "https://shop.example/u/"


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def fixture(name: str) -> bytes:
    return crlf((FIXTURES / name).read_bytes())


def newsletter(relpath: str) -> bytes:
    path = NEWSLETTERS / relpath
    if not path.exists():
        raise AssertionError(f"shared corpus file missing: {path}")
    return crlf(path.read_bytes())


def set_header(raw: bytes, name: str, *values: str) -> bytes:
    """Replace every `name` header by the given values (none: just remove it)."""
    raw = remove_headers(raw, [name])
    added = b"".join(f"{name}: {v}\r\n".encode() for v in values)
    return added + raw


class Env:
    """A store with one active customer `acme` (imprint, verified shop.example, prefix)."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = open_store("sqlite:///" + str(tmp_path / "t.db"))
        self.store.add_customer("acme", status="active")
        self.store.set_imprint("acme", IMPRINT)
        self.store.set_unsubscribe("acme", UNSUBSCRIBE_PREFIX)
        customer = self.store.require_customer("acme")
        for domain, verified in (("shop.example", True), ("unverified.example", False)):
            self.store.add_domain("acme", domain, token="tok-" + domain)
            if verified:
                self.store.mark_domain_verified(customer.id, domain, by="test")
        self.store.confirm_campaign("acme", "spring-2026", by="jane@shop.example")
        self.customer = self.store.require_customer("acme")

    @classmethod
    def session(cls, tmp_path: Path) -> Iterator[Env]:
        """For a module's `env` fixture: `yield from Env.session(tmp_path)`."""
        env = cls(tmp_path)
        yield env
        env.store.close()

    def txn(
        self,
        raw: bytes = b"",
        *,
        mail_from: str = "bounce@shop.example",
        rcpt: str | None = "kunde@example.org",
        customer: Any = "acme",
    ) -> Transaction:
        if customer == "acme":
            customer = self.customer
        txn = Transaction(
            session=SessionInfo(id="t", customer=customer), mail_from=mail_from, current_rcpt=rcpt
        )
        if raw:
            txn.set_raw(raw)
        return txn

    def ctx(self, phase: Phase = Phase.DATA, resolver: Any = None) -> PolicyContext:
        return PolicyContext(phase=phase, store=self.store, config=None, resolver=resolver)

    def check(
        self,
        policy: Policy,
        raw: bytes = b"",
        *,
        phase: Phase = Phase.DATA,
        resolver: Any = None,
        **txn_args: Any,
    ) -> Verdict:
        verdict = policy.check(self.txn(raw, **txn_args), self.ctx(phase, resolver))
        assert isinstance(verdict, Verdict)
        assert verdict.reason, "every verdict says what was checked"
        return verdict


def reply_of(verdict: Verdict) -> str | None:
    """What the client sees (before the engine appends the policy name), or None for a pass."""
    if verdict.action is Action.CONTINUE:
        return None
    assert verdict.reply is not None
    return str(verdict.reply)
