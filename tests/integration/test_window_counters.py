"""Windowed counters in the store (gateway/store/windows.py) on both engines: a limit holds
across processes sharing one SQLite file and across connections to one PostgreSQL, refused hits
do not use up the budget, the window slides, and old buckets are pruned."""

from __future__ import annotations

import multiprocessing

import pytest

from gateway.store import open_store
from gateway.store.windows import BUCKETS, PRUNE_EVERY

HOUR = 3600.0
T0 = 1_800_000_000.0


@pytest.fixture
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


def rows(store) -> int:
    return store.execute("SELECT COUNT(*) FROM window_counters")[0][0]


def test_limit_per_key_and_refused_hits_do_not_count(store):
    results = [store.window_hit("report", "192.0.2.1", window=HOUR, limit=3, now=T0 + i) for i in range(5)]
    assert [(r.allowed, r.count) for r in results] == [
        (True, 1),
        (True, 2),
        (True, 3),
        (False, 3),
        (False, 3),
    ]
    assert store.window_count("report", "192.0.2.1", window=HOUR, now=T0 + 5) == 3
    # Other keys and other scopes have their own budget.
    assert store.window_hit("report", "192.0.2.2", window=HOUR, limit=3, now=T0).count == 1
    assert store.window_hit("other", "192.0.2.1", window=HOUR, limit=3, now=T0).allowed
    # Without a limit it only counts.
    assert store.window_hit("seen", "k", window=HOUR, now=T0).count == 1
    assert store.window_hit("seen", "k", window=HOUR, now=T0).count == 2


def test_the_window_slides(store):
    for i in range(3):
        assert store.window_hit("report", "a", window=HOUR, limit=3, now=T0 + i * 600).allowed
    # The first hit (T0) still counts 59 minutes later; a bucket after its hour it does not.
    assert not store.window_hit("report", "a", window=HOUR, limit=3, now=T0 + HOUR - 60).allowed
    step = HOUR / BUCKETS
    freed = store.window_hit("report", "a", window=HOUR, limit=3, now=T0 + HOUR + step)
    assert (freed.allowed, freed.count) == (True, 3)
    assert not store.window_hit("report", "a", window=HOUR, limit=3, now=T0 + HOUR + step + 1).allowed


def test_old_buckets_are_pruned(store):
    for i in range(5):
        store.window_hit("report", f"k{i}", window=HOUR, limit=3, now=T0 + i)
    assert rows(store) == 10  # each key: its lock row and one bucket
    assert store.prune_window_counters(now=T0 + HOUR) == 0  # still inside the window
    assert store.prune_window_counters(now=T0 + 2 * HOUR + 120) == 10
    assert store.window_count("report", "k0", window=HOUR, now=T0 + 5) == 0
    # Counting prunes by itself, at most once per PRUNE_EVERY seconds per store object.
    store.window_hit("report", "old", window=HOUR, now=T0)
    later = T0 + 3 * HOUR
    store.window_hit("report", "new", window=HOUR, now=later)
    assert store.window_count("report", "old", window=HOUR, now=T0) == 0
    assert rows(store) == 2
    store.window_hit("report", "newer", window=HOUR, now=later + PRUNE_EVERY / 2)
    assert rows(store) == 4


KEYS = [f"198.51.100.{i}" for i in range(5)]


def _hammer(url: str, start, hits: int, out, times: list[float | None]) -> None:
    store = open_store(url, migrate=False)
    start.wait(30)
    allowed = [
        sum(
            store.window_hit("report", key, window=HOUR, limit=30, now=times[i % len(times)]).allowed
            for i in range(hits)
        )
        for key in KEYS
    ]
    out.put(allowed)
    store.close()


# Now; and hits on both sides of a bucket boundary (clocks of nodes a little apart): the
# current buckets differ, and still no two hits both take the last place.
BOUNDARY = T0 - T0 % (HOUR / BUCKETS) + HOUR / BUCKETS


@pytest.mark.parametrize("times", [[None], [BOUNDARY - 0.01, BOUNDARY + 0.01]])
def test_the_limit_holds_across_processes(store, times):
    """Four processes take 20 hits each of five keys at the same time: exactly 30 of each key
    are allowed."""
    context = multiprocessing.get_context("fork")
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_hammer, args=(store.url, start, 20, out, times)) for _ in range(4)]
    for worker in workers:
        worker.start()
    start.set()
    allowed = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert [sum(per_key) for per_key in zip(*allowed, strict=True)] == [30] * len(KEYS), allowed
    now = None if times == [None] else BOUNDARY + 1
    for key in KEYS:
        assert store.window_count("report", key, window=HOUR, now=now) == 30
