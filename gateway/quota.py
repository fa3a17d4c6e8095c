"""Sending quotas per customer per hour and per day, shared by every worker and node.

How the count stays right across processes without a store write per recipient:

* The store holds one counter per customer, period ('hour' = the clock hour, 'day' = the UTC
  day) and period start. A process *reserves* a block of units from both counters in one
  transaction that never lets either pass its limit (`SqlStore.reserve_quota`), then hands
  the units out locally, one per accepted recipient, with no I/O.
* The block is `min(quota.block_size, remaining // 10)`, at least 1: far from the limit one
  store write serves up to `block_size` recipients; near it (and always for small limits)
  units are reserved one by one, so the last ones go exactly where they are used.
* So the accepted total never exceeds a limit: there is no overshoot by construction. The
  price is the opposite error: units a process reserved but has not used yet count as used
  for the others (at most `remaining // 10` per process and period once the limit is near,
  `block_size` far from it). A stopping process gives its unused units back.

A recipient counts once it is accepted at RCPT: the engine asks `take()` after every policy
passed it; a refused recipient takes nothing. At MAIL, `admit()` refuses a customer that is
already over its limit (it takes a block if none is at hand, using none of it).
"""

from __future__ import annotations

import asyncio
import datetime
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from gateway.core.verdict import Reply
from gateway.logging import EventLogger, get_logger
from gateway.store.interface import QuotaStore

HOUR = 3600
DAY = 86400
# How long a process remembers that a customer is over its limit before asking the store
# again: a client retrying in a loop must not turn into one store transaction per MAIL.
OVER_LIMIT_MEMORY = 5.0
# The list policies' refusals of a customer are written to the store (and the breaker's
# own-refusal rate checked) after this many in a process, and at each block reservation.
REFUSALS_PER_FLUSH = 20

QUOTA_REFUSALS = Counter(
    "gateway_quota_refusals_total",
    "MAIL and RCPT refused because the customer reached a sending limit",
    ["customer_tier"],
)  # probation | standard | custom


def period_starts(now: float) -> tuple[int, int]:
    """Start of the clock hour and of the UTC day containing `now`."""
    return int(now // HOUR) * HOUR, int(now // DAY) * DAY


@dataclass(frozen=True)
class EffectiveLimits:
    per_hour: int
    per_day: int
    tier: str  # probation | standard | custom


def probation_due(settings: Any, limits: Any, now: float, campaigns_sent: int) -> bool:
    """Whether a customer on probation has served it: the date has passed (activation +
    `probation_days`, or the date support set) and it sent `probation_campaigns` campaigns."""
    until = limits.probation_until
    if until is None and limits.activated_at is not None:
        until = limits.activated_at + settings.probation_days * DAY
    return (until is None or now >= until) and campaigns_sent >= settings.probation_campaigns


def on_probation(limits: Any) -> bool:
    """Activated under probation and not graduated yet (customers activated before probation
    existed have no activation date and never were on it)."""
    return limits.activated_at is not None and limits.graduated_at is None


def effective_limits(settings: Any, limits: Any) -> EffectiveLimits:
    per_hour = limits.per_hour or settings.per_hour
    per_day = limits.per_day or settings.per_day
    tier = "custom" if (limits.per_hour or limits.per_day) else "standard"
    if on_probation(limits):
        # The stricter of the two: a limit support set does not lift probation by itself.
        per_hour = min(per_hour, settings.probation_per_hour)
        per_day = min(per_day, settings.probation_per_day)
        tier = "probation"
    return EffectiveLimits(per_hour, per_day, tier)


def block_sizer(block_size: int) -> Callable[[int], int]:
    def block_for(remaining: int) -> int:
        return max(1, min(block_size, remaining // 10))

    return block_for


def limit_reply(period: str, limit: int, resets_at: float) -> Reply:
    when = datetime.datetime.fromtimestamp(resets_at, datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    word = "Hourly" if period == "hour" else "Daily"
    return Reply(
        451,
        "4.7.1",
        f"{word} sending limit of {limit} recipients reached for this "
        f"account; it resets at {when}, please try again then",
    )


@dataclass
class _Allowance:
    hour_start: int
    day_start: int
    units: int
    tier: str


@dataclass
class _Over:
    until: float  # time.monotonic() after which the store is asked again
    reply: Reply
    tier: str
    hour_start: int


class QuotaGate:
    """One per process and store: the blocks this process reserved, handed out locally."""

    _instances: weakref.WeakKeyDictionary[Any, QuotaGate] = weakref.WeakKeyDictionary()

    def __init__(
        self,
        store: QuotaStore,
        settings: Any,
        log: EventLogger | None = None,
        clock: Callable[[], float] = time.time,
        config: Any = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.config = config  # the whole config, for the breaker's refusal-rate check
        # Recipients refused by the list policies / accepted since the last flush to the store.
        self._refused: dict[int, int] = {}
        self._accepted: dict[int, int] = {}
        self._flushing: set[int] = set()
        self.log = log or get_logger()
        self.clock = clock
        self._allowances: dict[int, _Allowance] = {}
        self._over: dict[int, _Over] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    @classmethod
    def for_store(cls, store: QuotaStore, settings: Any, config: Any = None) -> QuotaGate:
        """The process's gate for this store; a config reload keeps the reserved units."""
        gate = cls._instances.get(store)
        if gate is None:
            gate = cls._instances[store] = cls(store, settings)
        gate.settings = settings
        gate.config = config
        return gate

    # -- the hot path -------------------------------------------------------------------------
    async def admit(self, customer: Any) -> Reply | None:
        """MAIL: None, or the 451 when the customer is already over a limit."""
        return await self._units(customer, take=False)

    async def take(self, customer: Any) -> Reply | None:
        """RCPT: use one unit for an accepted recipient, or the 451 when none is left."""
        over = await self._units(customer, take=True)
        if over is None and customer is not None:
            self._accepted[customer.id] = self._accepted.get(customer.id, 0) + 1
        return over

    def refused(self, customer: Any, policy: str) -> None:
        """RCPT refused by a policy: tally the list policies' refusals for the breaker's
        own-refusal rate; written to the store every REFUSALS_PER_FLUSH refusals."""
        breaker = getattr(self.config, "breaker", None)
        if customer is None or breaker is None or policy not in breaker.refusal_policies:
            return
        count = self._refused[customer.id] = self._refused.get(customer.id, 0) + 1
        if count >= REFUSALS_PER_FLUSH and customer.id not in self._flushing:
            self._flushing.add(customer.id)
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self._flush_counts, customer))
            task.add_done_callback(lambda _: self._flushing.discard(customer.id))

    def _flush_counts(self, customer: Any) -> None:
        from gateway.breaker import Breaker

        refused = self._refused.pop(customer.id, 0)
        accepted = self._accepted.pop(customer.id, 0)
        if not refused and not accepted:
            return
        try:
            refused_today, accepted_today = self.store.add_recipient_counts(
                customer.id, period_starts(self.clock())[1], refused, accepted
            )
            logs: list[Any] = []
            Breaker(self.config, self.store).refusal_check(customer, refused_today, accepted_today, logs)
            for name, level, fields in logs:
                self.log.event(name, level, **fields)
        except Exception as exc:  # noqa: BLE001 - a tally lost is a warning late, not mail
            self.log.error("breaker", customer=customer.name, error=str(exc))

    async def _units(self, customer: Any, *, take: bool) -> Reply | None:
        if customer is None:
            return None
        now = self.clock()
        hour_start, day_start = period_starts(now)
        allowance = self._allowances.get(customer.id)
        if (
            allowance is not None
            and allowance.units > 0
            and allowance.hour_start == hour_start
            and allowance.day_start == day_start
        ):
            if take:
                allowance.units -= 1
            return None
        over = self._over.get(customer.id)
        if over is not None and over.until > time.monotonic() and over.hour_start == hour_start:
            return self._refuse(customer, over, take)
        lock = self._locks.setdefault(customer.id, asyncio.Lock())
        async with lock:
            while True:
                allowance = self._allowances.get(customer.id)
                if (
                    allowance is not None
                    and allowance.units > 0
                    and allowance.hour_start == hour_start
                    and allowance.day_start == day_start
                ):
                    if take:
                        allowance.units -= 1
                    return None
                # While this waits for the store, sessions on the fast path above may use up
                # the new block (a block of 1 near the limit): look again before taking one.
                refused = await asyncio.to_thread(self._reserve, customer, now)
                if refused is not None:
                    return self._refuse(customer, refused, take)

    def _refuse(self, customer: Any, over: _Over, take: bool) -> Reply:
        QUOTA_REFUSALS.labels(over.tier).inc()
        self.log.event(
            "quota",
            customer=customer.name,
            phase="rcpt" if take else "mail",
            tier=over.tier,
            result="refused",
            reply=str(over.reply),
        )
        return over.reply

    # -- the store side (a worker thread) -----------------------------------------------------
    def _reserve(self, customer: Any, now: float) -> _Over | None:
        if self._refused.get(customer.id) and customer.id not in self._flushing:
            self._flush_counts(customer)
        hour_start, day_start = period_starts(now)
        limits = self.limits_of(customer, now)
        eff = effective_limits(self.settings, limits)
        reservation = self.store.reserve_quota(
            customer.id,
            hour_start,
            eff.per_hour,
            day_start,
            eff.per_day,
            block_sizer(self.settings.block_size),
        )
        if reservation.granted:
            old = self._allowances.get(customer.id)
            carried = old.units if old is not None and old.hour_start == hour_start else 0
            self._allowances[customer.id] = _Allowance(
                hour_start, day_start, reservation.granted + carried, eff.tier
            )
            self._over.pop(customer.id, None)
            return None
        if reservation.used_hour >= eff.per_hour:
            reply = limit_reply("hour", eff.per_hour, hour_start + HOUR)
        else:
            reply = limit_reply("day", eff.per_day, day_start + DAY)
        over = _Over(time.monotonic() + OVER_LIMIT_MEMORY, reply, eff.tier, hour_start)
        self._over[customer.id] = over
        return over

    def limits_of(self, customer: Any, now: float) -> Any:
        """The customer's limits row, graduating it first when its probation is served."""
        limits = self.store.get_limits(customer.id)
        if on_probation(limits) and probation_due(
            self.settings, limits, now, self.store.count_campaigns_sent(customer.id)
        ):
            if self.store.graduate(
                customer, actor="probation", at=now, reason="probation served (days and campaigns)"
            ):
                self.log.event("probation", customer=customer.name, result="graduated", by="probation")
            limits = self.store.get_limits(customer.id)
        return limits

    def release_all(self) -> None:
        """Give the unused units back (on shutdown), so a restart strands nothing."""
        allowances, self._allowances = self._allowances, {}
        for customer_id, allowance in allowances.items():
            try:
                self.store.release_quota(
                    customer_id, allowance.hour_start, allowance.day_start, allowance.units
                )
            except Exception as exc:  # noqa: BLE001 - best effort; the units stay counted
                self.log.error("quota", customer_id=customer_id, error=str(exc))
