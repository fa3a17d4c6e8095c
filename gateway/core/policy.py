"""The policy protocol: a small class with a name, phases, a description, what it touches and
`check()`. Where a check runs (on the event loop or in a worker thread) is the pipeline's
decision, made from `touches`; see README "Writing a policy"."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Mapping
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


class Touches(enum.Flag):
    """What a check waits on besides the CPU. Combine with `|`."""

    NOTHING = 0
    # Store reads of values the store caches for a few seconds per customer (store.cached:
    # the customer, its verified domains, its campaigns): nearly always a hit, so the check
    # runs on the loop with every store; a miss costs one read there, once per cache TTL.
    STORE_CACHED = enum.auto()
    # Store reads that often miss the cache (one per recipient): on the loop only when the
    # store says its reads never wait (store.reads_block is False: the embedded SQLite in WAL
    # mode), else in a worker thread.
    STORE = enum.auto()
    # Anything else that may wait: DNS, HTTP, a remote service. Always a worker thread (an
    # `async def check` is awaited on the loop instead).
    NETWORK = enum.auto()


# Per phase when a policy touches different things in different phases.
Declaration = Touches | Mapping[Phase, Touches]


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

    `check` is a plain function or a coroutine. A plain one runs on the event loop or in a
    worker thread, as `touches` allows; a coroutine is awaited on the loop.
    """

    name: ClassVar[str] = ""
    phases: ClassVar[tuple[Phase, ...]] = ()
    description: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    # Undeclared means "may wait on anything": a worker thread, the safe and slower choice.
    # An instance may set its own (from its options) in __init__.
    touches: Declaration = Touches.NETWORK

    def __init__(self, options: BaseModel | None = None) -> None:
        self.options = options if options is not None else self.Options()

    def check(self, txn: Transaction, ctx: PolicyContext) -> Verdict | Awaitable[Verdict]:
        raise NotImplementedError


def touches_in(policy: Policy, phase: Phase) -> Touches:
    """What `policy` declares it touches in `phase`."""
    declared = policy.touches
    if isinstance(declared, Touches):
        return declared
    return declared[phase]


# The run-placement API before `touches`. A third-party policy that still sets one of these
# keeps working (undeclared: worker thread); the pipeline logs that they are ignored.
RETIRED = ("blocking", "store_reads_only", "blocks", "needs_thread")
