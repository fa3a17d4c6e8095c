"""Quota accounting (gateway/quota.py) against a real SQLite store shared by several gates, as
several worker processes share it: the limit is never passed, and the units reserved but
unused (the price of reserving blocks) stay within the documented bound."""

from __future__ import annotations

import asyncio
import random
import time
from types import SimpleNamespace

from gateway.config import Quota
from gateway.quota import QuotaGate, block_sizer, effective_limits, limit_reply, period_starts
from gateway.store import open_store
from gateway.store.reputation import CustomerLimits


def test_block_size_shrinks_to_one_near_the_limit():
    block_for = block_sizer(50)
    assert block_for(10_000) == 50
    assert block_for(200) == 20
    assert block_for(10) == 1
    assert block_for(3) == 1


def test_probation_takes_the_stricter_limit():
    settings = Quota(per_hour=1000, per_day=5000, probation_per_hour=20, probation_per_day=100)
    assert effective_limits(settings, CustomerLimits(1)).per_hour == 1000
    custom = CustomerLimits(1, per_hour=10)
    assert (effective_limits(settings, custom).per_hour, effective_limits(settings, custom).tier) == (
        10,
        "custom",
    )
    probation = CustomerLimits(1, per_hour=500, activated_at=1.0)
    limits = effective_limits(settings, probation)
    assert (limits.per_hour, limits.per_day, limits.tier) == (20, 100, "probation")
    assert (
        effective_limits(settings, CustomerLimits(1, activated_at=1.0, graduated_at=2.0)).tier == "standard"
    )


def test_reply_names_limit_and_reset():
    reply = limit_reply("day", 25, 1796428800)
    assert (reply.code, reply.enhanced) == (451, "4.7.1")
    assert "Daily sending limit of 25 recipients" in reply.text
    assert "resets at 2026-12-05 00:00 UTC" in reply.text


def test_gates_sharing_a_store_never_pass_the_limit(tmp_path):
    url = f"sqlite:///{tmp_path / 'gw.db'}"
    store = open_store(url)
    store.add_customer("acme")
    customer = store.require_customer("acme")
    limit = 1000
    store.update_limits(customer, actor="test", action="limits", per_hour=limit)
    settings = Quota(per_hour=10_000, per_day=100_000, block_size=50)
    gates = [
        QuotaGate(
            open_store(url, migrate=False),
            settings,
            log=SimpleNamespace(event=lambda *a, **k: None, error=lambda *a, **k: None),
        )
        for _ in range(4)
    ]
    accepted = 0

    async def client(gate: QuotaGate, seed: int) -> None:
        nonlocal accepted
        rnd = random.Random(seed)
        while True:
            if await gate.take(customer) is not None:
                return
            accepted += 1
            await asyncio.sleep(rnd.random() / 1000)

    async def main() -> None:
        await asyncio.gather(*(client(g, i * 10 + j) for i, g in enumerate(gates) for j in range(5)))

    asyncio.run(main())
    assert accepted <= limit
    # Every client went on until refused, so every reserved unit was used: exactly the limit.
    assert accepted == limit
    # Units reserved but unused: at most one block per process, a tenth of what was left.
    assert limit - accepted <= len(gates) * 50
    for gate in gates:
        gate.release_all()
    hour, _ = store.quota_used(customer.id, *period_starts(time.time()))
    assert hour == accepted  # the unused units went back


def test_a_block_used_up_while_its_reserver_waits_is_not_taken_twice(tmp_path):
    """Near the limit blocks are one unit. While one session waits for the store to reserve
    the next, sessions on the fast path may use that unit up; the waiting session must look
    again instead of taking a unit that is gone (found as a 1002-of-1000 overshoot)."""
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    store.add_customer("acme")
    customer = store.require_customer("acme")
    limit = 5
    store.update_limits(customer, actor="test", action="limits", per_hour=limit)
    gate = QuotaGate(
        store,
        Quota(per_hour=10_000, per_day=100_000, block_size=50),
        log=SimpleNamespace(event=lambda *a, **k: None, error=lambda *a, **k: None),
    )
    reserve = gate._reserve

    def slow_reserve(customer, now):
        over = reserve(customer, now)  # the block is there now, before the waiter resumes
        time.sleep(0.02)
        return over

    gate._reserve = slow_reserve  # type: ignore[method-assign]
    accepted = 0

    async def spinner() -> None:
        nonlocal accepted
        while await gate.take(customer) is None:
            accepted += 1
            await asyncio.sleep(0)

    async def main() -> None:
        await asyncio.gather(*(spinner() for _ in range(8)))

    asyncio.run(main())
    assert accepted == limit
