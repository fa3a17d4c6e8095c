"""The ledger writer: every session's row stored, shared commits, errors reach the session."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from gateway.ledger import LedgerWriter
from gateway.store import MessageRecord, StoreUnavailable, open_store


def record(n: int) -> MessageRecord:
    return MessageRecord(
        mail_id=f"m{n:04d}",
        customer_id=None,
        campaign=None,
        mail_from="news@customer.example",
        recipients=[f"r{n}@example.org"],
        created_at=time.time(),
        result="accepted",
        reply="250 2.0.0 Ok",
        queue_id=None,
    )


class CountingStore:
    """A real SQLite store that counts commits and can be made to fail."""

    def __init__(self, path: Path) -> None:
        self.store = open_store(f"sqlite:///{path}")
        self.commits = 0
        self.down = False
        self.slow = threading.Event()

    def record_messages(self, records):
        if self.down:
            raise StoreUnavailable("store error: database is locked")
        self.slow.wait(0.05)
        self.commits += 1
        self.store.record_messages(records)


def test_every_waiting_session_gets_its_row_and_they_share_commits(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "l.db")
    writer = LedgerWriter(store)

    async def sessions() -> None:
        await asyncio.gather(*(writer.record(record(n)) for n in range(200)))

    asyncio.run(sessions())
    assert all(store.store.get_message(f"m{n:04d}") is not None for n in range(200))
    assert store.commits < 200


def test_a_store_error_reaches_each_waiting_session_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "l.db")
    writer = LedgerWriter(store)
    store.down = True

    async def failing() -> list[object]:
        return await asyncio.gather(*(writer.record(record(n)) for n in range(5)), return_exceptions=True)

    results = asyncio.run(failing())
    assert all(isinstance(r, StoreUnavailable) for r in results)
    store.down = False
    asyncio.run(writer.record(record(7)))
    assert store.store.get_message("m0007") is not None


def test_a_cancelled_session_does_not_stop_the_others(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "l.db")
    writer = LedgerWriter(store)

    async def scenario() -> None:
        doomed = asyncio.ensure_future(writer.record(record(1)))
        await asyncio.sleep(0)
        doomed.cancel()
        await writer.record(record(2))
        with pytest.raises(asyncio.CancelledError):
            await doomed

    asyncio.run(scenario())
    assert store.store.get_message("m0002") is not None
    assert store.store.get_message("m0001") is not None  # queued before the cancel: stored


def test_one_writer_per_store_across_engines_and_loops(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'l.db'}")
    assert LedgerWriter.for_store(store) is LedgerWriter.for_store(store)
    for n in range(3):  # a new event loop each time, as asyncio.run makes
        asyncio.run(LedgerWriter.for_store(store).record(record(n)))
    assert [store.get_message(f"m{n:04d}") is not None for n in range(3)] == [True] * 3
