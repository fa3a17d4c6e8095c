"""The policy protocol: a small class with a name, phases, a description and `check()`."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from gateway.config import Config
from gateway.core.resolver import Resolver
from gateway.core.transaction import Phase, Transaction
from gateway.core.verdict import Verdict
from gateway.store.interface import PolicyStore


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class PolicyContext:
    """What a policy may use besides the transaction. I/O lives behind these objects so tests
    (and `gateway check`) can hand in their own."""

    phase: Phase
    store: PolicyStore
    config: Config
    resolver: Resolver | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class Policy:
    """Base class for policies. Subclasses set the class attributes and implement `check`.

    `check` may be a plain function (run in a worker thread, so store look-ups and CPU work do
    not stall the event loop, and a timeout can be enforced) or a coroutine.
    """

    name: ClassVar[str] = ""
    phases: ClassVar[tuple[Phase, ...]] = ()
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Whether check() may wait on I/O (a database query, DNS). Such checks run in a worker
    # thread so a slow database cannot stall every session. A check that only computes, or
    # only reads what the store caches (store.cached), sets False and runs on the event loop:
    # with the GIL a thread buys CPU work no parallelism, only a costly hand-over.
    blocking: bool = True
    # True when the only I/O check() does is reading the store. Such a check runs on the event
    # loop after all when the store's reads cannot wait (store.reads_block is False: the
    # embedded SQLite in WAL mode, where a read never waits for a writer and costs less than
    # the hand-over to a thread and back, which under load also queues for the GIL).
    store_reads_only: bool = False

    def blocks(self, phase: Phase) -> bool:
        """Whether check() may wait on I/O in this phase (default: `blocking`)."""
        return self.blocking

    def needs_thread(self, phase: Phase, store: Any) -> bool:
        if not self.blocks(phase):
            return False
        return not self.store_reads_only or getattr(store, "reads_block", True)

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict | Awaitable[Verdict]:
        raise NotImplementedError
