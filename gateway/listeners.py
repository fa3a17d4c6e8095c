"""What every listener of `gateway serve` shares: one small protocol and the session cap.

`Server` holds a list of `Listener`s (submission, feedback, milter, http, and the webhook
dispatcher as a background service) and treats them alike: `start()` them in order, and on
SIGTERM `stop_accepting()` on all at once, then `drain(deadline)` them side by side, then
`close()` them (a listener that still answers 421 during the drain closes its sockets last). A new
transport implements these four members and nothing on `Server` (README, "A new transport").

`SessionCap` is the one place for "may this connection have a session": the drain refusal and
the per-listener cap (`limits.max_sessions` for submission, `feedback_intake.max_sessions` for
feedback), with the set of open sessions the drain walks.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from gateway.core import replies
from gateway.core.verdict import Reply
from gateway.supervisor import inherited_fds, listener_key


@runtime_checkable
class Listener(Protocol):
    """One kind of listener (all its sockets), or a background service that drains alike."""

    kind: str

    async def start(self) -> None:
        """Open the sockets (or start the task); sessions are served from here on."""

    def stop_accepting(self) -> None:
        """No new sessions or transactions from now on; never waits."""

    @property
    def in_flight(self) -> int:
        """Transactions (requests, deliveries) under way that the drain lets finish."""

    async def drain(self, deadline: float) -> int:
        """Let the work in flight finish until `deadline` (the loop's clock), end the rest;
        returns how many transactions were cut short."""

    async def close(self) -> None:
        """After every listener drained: release what is left (listening sockets)."""


class Session(Protocol):
    @property
    def busy(self) -> bool:
        """A transaction is open (the drain lets it finish)."""


S = TypeVar("S", bound=Session)


class SessionCap(Generic[S]):
    """The open sessions of one listener kind, and who may open another."""

    def __init__(self, max_sessions: Callable[[], int | None]) -> None:
        # Read at each connection: a SIGHUP reload changes the cap for the next one.
        # None: no cap of ours (the milter's sessions are Postfix's, which caps them).
        self.max_sessions = max_sessions
        self.sessions: set[S] = set()
        self.accepting = True

    def refusal(self) -> tuple[Reply, str] | None:
        """The reply (and the reason logged) for a connection that may not have a session
        now, or None; the caller adds the session with `add` when None."""
        if not self.accepting:
            return replies.SHUTTING_DOWN, "shutting down"
        cap = self.max_sessions()
        if cap is not None and len(self.sessions) >= cap:
            return replies.TOO_MANY_SESSIONS, "session cap"
        return None

    def add(self, session: S) -> None:
        self.sessions.add(session)

    def discard(self, session: S) -> bool:
        """True if `session` was open (so its close is counted once)."""
        if session in self.sessions:
            self.sessions.discard(session)
            return True
        return False

    @property
    def in_flight(self) -> int:
        return sum(1 for s in self.sessions if s.busy)

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator[S]:
        return iter(list(self.sessions))  # a copy: sessions end while the drain walks them

    def __contains__(self, session: object) -> bool:
        return session in self.sessions


async def wait_until(done: Callable[[], bool], deadline: float, step: float = 0.05) -> bool:
    """Poll `done` until it holds or the loop's clock passes `deadline`; whether it held."""
    loop = asyncio.get_running_loop()
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(step)
    return True


async def listen(config: Any, listener: Any, factory: Callable[[], Any], ssl: Any = None) -> asyncio.Server:
    """A listening server for a config listener: on the socket the supervisor handed down
    when running as a worker, else bound here."""
    loop = asyncio.get_running_loop()
    fd = inherited_fds().get(listener_key(config, listener))
    if fd is not None:
        return await loop.create_server(factory, sock=socket.socket(fileno=fd), ssl=ssl, backlog=1024)
    return await loop.create_server(
        factory, host=listener.address, port=listener.port, ssl=ssl, reuse_address=True, backlog=1024
    )


async def listen_streams(
    config: Any, listener: Any, handle: Callable[..., Awaitable[None]]
) -> asyncio.Server:
    """Like `listen`, for stream handlers (asyncio.start_server callbacks)."""
    fd = inherited_fds().get(listener_key(config, listener))
    if fd is not None:
        return await asyncio.start_server(handle, sock=socket.socket(fileno=fd), backlog=1024)
    return await asyncio.start_server(
        handle, host=listener.address, port=listener.port, reuse_address=True, backlog=1024
    )


def ports(servers: list[asyncio.Server]) -> list[int]:
    return [s.sockets[0].getsockname()[1] for s in servers if s.sockets]
