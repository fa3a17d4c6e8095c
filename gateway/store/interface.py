"""The store as the message flow sees it: what policies read and what the engine adds.

`SqlStore` (SQLite or PostgreSQL) has about a hundred methods for the CLI, the HTTP listener and
feedback intake; a policy and the engine need a handful. These protocols name that handful, so
a policy author sees what is there to read, a test can hand in a small fake, and mypy checks
both against the real store (`SqlStore` satisfies them structurally; nothing inherits them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from gateway.store.consent import ConsentRecord
from gateway.store.events import Webhook
from gateway.store.feedback import Suppression
from gateway.store.reputation import CustomerLimits, Reservation
from gateway.store.types import Campaign, Customer, MessageRecord


class PolicyStore(Protocol):
    """What a policy may read. Reads may raise `StoreUnavailable` (the pipeline answers 4xx)."""

    # False when a read never waits (embedded SQLite in WAL mode): store-only checks then run
    # on the event loop instead of a worker thread.
    reads_block: bool

    def get_customer_by_id(self, customer_id: int) -> Customer | None: ...

    def get_campaign(self, customer_id: int, campaign: str) -> Campaign | None: ...

    def verified_domains(self, customer_id: int) -> set[str]: ...

    def find_suppression(self, customer_id: int | None, address: str) -> Suppression | None: ...

    def get_consent(self, customer_id: int, address: str) -> ConsentRecord | None: ...


class LedgerStore(Protocol):
    """What the ledger writer (gateway/ledger.py) writes."""

    def record_messages(self, records: Sequence[MessageRecord]) -> None: ...


class QuotaStore(Protocol):
    """What the sending-quota gate (gateway/quota.py) reserves, counts and reads."""

    def reserve_quota(
        self,
        customer_id: int,
        hour_start: int,
        hour_limit: int,
        day_start: int,
        day_limit: int,
        block_for: Callable[[int], int],
    ) -> Reservation: ...

    def release_quota(self, customer_id: int, hour_start: int, day_start: int, units: int) -> None: ...

    def add_recipient_counts(
        self, customer_id: int, day_start: int, refused: int, accepted: int
    ) -> tuple[int, int]: ...

    def get_limits(self, customer_id: int) -> CustomerLimits: ...

    def count_campaigns_sent(self, customer_id: int) -> int: ...

    def graduate(
        self, customer: Any, *, actor: str, reason: str | None = None, at: float | None = None
    ) -> bool: ...


class EngineStore(PolicyStore, LedgerStore, QuotaStore, Protocol):
    """What the engine uses besides the policies' reads (itself, and through the ledger writer
    and the quota gate it hands the store to), and what the transports look up through
    `engine.store` to know the client (trusted-network customers)."""

    def cached(self, key: tuple[Any, ...], load: Callable[[], Any]) -> Any: ...

    def get_customer(self, name: str) -> Customer | None: ...

    def cached_webhook(self, customer_id: int) -> Webhook | None: ...

    def emit_event(
        self,
        customer_id: int | None,
        event_type: str,
        data: dict[str, Any],
        *,
        recipient: str | None = None,
        at: float | None = None,
    ) -> str | None: ...
