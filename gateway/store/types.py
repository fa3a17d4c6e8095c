"""What every part of the store shares: its errors, the rows it hands out, address normalisation.

This module imports nothing of the store, so the engine modules (base, sqlite, postgresql) and
the table mixins (feedback, consent, events, erasure...) all stand on it without importing each
other: `SqlStore` is made of the mixins, so a mixin that imported `base` would close a circle.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

GLOBAL = 0  # customer_id of a global suppression


def normalise_address(address: str) -> str:
    """An address as the store keeps it: without ``<>`` and surrounding space, lower-cased."""
    return address.strip().strip("<>").strip().lower()


class CachedRead(Protocol):
    """`SqlStore.cached` as the table mixins declare it: what `load` returns, read through the
    short-TTL cache (so the mixins' typed getters need no cast)."""

    def __call__(self, key: tuple[Any, ...], load: Callable[[], T]) -> T: ...


# paused: the circuit breaker stopped the customer for now (451, the engine keeps its mail)
# until support resumes it; suspended refuses for good (550).
CUSTOMER_STATUSES = ("pending", "active", "paused", "suspended")


class StoreError(Exception):
    """A request the store refuses (unknown customer, duplicate name...): user-facing text."""


class StoreUnavailable(Exception):
    """The database cannot be reached or failed; callers answer 4xx and retry later."""


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    status: str
    status_reason: str | None
    password_hash: str | None
    imprint: dict[str, str] | None
    unsubscribe_prefix: str | None
    managed_unsubscribe: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Domain:
    id: int
    customer_id: int
    domain: str
    token: str
    verified_at: float | None
    verified_by: str | None


@dataclass(frozen=True)
class Campaign:
    id: int
    customer_id: int
    campaign: str
    confirmed_by: str
    confirmed_at: float


@dataclass(frozen=True)
class MessageRecord:
    mail_id: str
    customer_id: int | None
    campaign: str | None
    mail_from: str | None
    recipients: list[str]
    created_at: float
    result: str
    reply: str | None
    queue_id: str | None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
