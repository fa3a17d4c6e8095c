"""Checking SMTP AUTH credentials, and slowing down failures (RULES.md "Log-ins").

The slow-down, with `interval` = limits.auth_failure_delay (1 s by default, 0 turns it off):

* Slots. Every failed AUTH takes the next answer slot of its client address and of its login
  name. The slots live in the store (gateway/store/authslots.py), so every connection, worker
  process and node counts the same failures; slots of one key are `interval` apart, and the
  535 is sent at the later of the two (the session sleeps, the event loop does not). Thirty
  wrong passwords from one address thus take at least 29 intervals, however many connections
  carry them. An IPv6 client is counted by its /64, which one host usually has to itself.
* Decay. A key owes the time until its next slot; that shrinks in real time. A first failure
  is answered at once, and a user who mistyped and tries again a second later waits for nothing.
* Allowance. Before its password is checked, an attempt from an address that owes more than
  `allowance` intervals waits until it owes no more than that: a client that does not wait for
  its 535 (it hangs up once no 235 came) cannot guess faster than one password per interval
  either. Should that wait exceed `max_wait`, the attempt gets 421 4.7.0 at once, unchecked.
  At most `_CHECKS_PER_ADDRESS` checks of one address run at once in a process, and a failure
  takes its slots before the next one starts: a burst of parallel guesses from a clean address
  gets a few checked, not one per connection, while a sending engine's parallel logins (right
  passwords, nothing owed) just queue for a few milliseconds each.
  What a login owes only delays failures, never a check: somebody guessing at account A from
  elsewhere must not lock A's owner out.
* A success never clears the address's slots (one account's success must not wipe a guesser's
  debt); it clears its own login's.
* After `per_connection` failures on one connection the last one is answered with 421 4.7.0
  and the connection closed.

Password checks run in a small thread pool (hashlib.scrypt releases the GIL), so a burst of
logins does not stall the other sessions; an unknown login is checked against a dummy hash of
the same cost, so that it takes as long as a wrong password and user names cannot be probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import ipaddress
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway import metrics
from gateway.core import replies
from gateway.core.verdict import Reply
from gateway.logging import get_logger
from gateway.store import StoreUnavailable
from gateway.store.passwords import hash_password, verify_password

log = get_logger()
T = TypeVar("T")

# Each scrypt check holds 16 MiB: a few threads keep a burst of checks from eating memory, and
# the checks queued behind them are as slow for the guesser as they are cheap for us.
_HASH_THREADS = max(2, min(8, os.cpu_count() or 2))
_LOGIN_KEY_CHARS = 256
_EXPIRE_EVERY = 60.0
_CHECKS_PER_ADDRESS = 4


@functools.cache
def _hash_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=_HASH_THREADS, thread_name_prefix="auth-hash")


@functools.cache
def _dummy_hash() -> str:
    """A hash with the same cost as the customers' (same scheme and parameters), of a password
    nobody knows: what an unknown login is checked against."""
    return hash_password(secrets.token_urlsafe(24))


def _check_unknown(password: str, stored: None) -> bool:
    """The check for a login without a password: as slow as a real one, and never a match."""
    verify_password(password, _dummy_hash())
    return False


def client_key(peer: str) -> str:
    """The store key a client address is counted under: IPv4 as is, IPv6 by its /64."""
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return f"addr:{peer}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"addr:{ip.ipv4_mapped}"
        return f"addr:{ipaddress.ip_network((ip.exploded, 64), strict=False)}"
    return f"addr:{ip}"


def login_key(login: str) -> str:
    return f"login:{login[:_LOGIN_KEY_CHARS]}"


class _PerKeyLimit:
    """At most `limit` holders per key at once (asyncio, one process); idle keys use no memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._keys: dict[str, tuple[asyncio.Semaphore, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        semaphore, users = self._keys.setdefault(key, (asyncio.Semaphore(self.limit), [0]))
        users[0] += 1
        try:
            async with semaphore:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._keys[key]


@dataclass(frozen=True)
class LoginOutcome:
    reply: Reply
    customer: Any = None  # the authenticated gateway.store.Customer when the password was right
    close: bool = False  # the session ends after the reply


class AuthGuard:
    def __init__(self, store: Any, limits: Any) -> None:
        self.store = store
        self.configure(limits)
        # Verified logins: sha256(hash, login, password) -> customer name. Spares a scrypt check
        # per connection for sending engines that reconnect for every message.
        self._verified: dict[bytes, str] = {}
        self._next_expiry = 0.0
        self._checking = _PerKeyLimit(_CHECKS_PER_ADDRESS)
        _hash_pool().submit(_dummy_hash)  # ready before the first unknown login

    def configure(self, limits: Any) -> None:
        """Take the settings from config.limits (at start and on reload)."""
        self.interval: float = limits.auth_failure_delay
        self.allowance: int = limits.auth_failure_allowance
        self.max_wait: float = limits.auth_failure_max_delay
        self.per_connection: int = limits.auth_failures_per_connection

    async def login(
        self, *, session: str, peer: str, mechanism: str, login: bytes, password: bytes, failures: int
    ) -> LoginOutcome:
        """Check one AUTH; `failures`: how many this connection has had before."""
        name = login.decode("utf-8", "replace")
        fields = {"session": session, "peer": peer, "login": name, "mechanism": mechanism}
        try:
            return await self._login(fields, name, login, password, failures)
        except StoreUnavailable as exc:
            log.error("auth", **fields, result="store-unavailable", error=str(exc))
            return LoginOutcome(replies.AUTH_TEMPFAIL)

    async def _login(
        self, fields: dict[str, Any], name: str, login: bytes, password: bytes, failures: int
    ) -> LoginOutcome:
        address, account = client_key(fields["peer"]), login_key(name)
        if await self._owes_too_long(fields, address, account) is None:
            return self._throttled()
        async with self._checking.hold(address):
            # Read again: the checks this one queued behind may have failed meanwhile.
            owed = await self._owes_too_long(fields, address, account)
            if owed is None:
                return self._throttled()
            customer = await self._store(self.store.get_customer, name, write=False)
            if await self._password_matches(customer, login, password):
                if account in owed:
                    await self._store(self.store.clear_auth_slots, account)
                log.event("auth", **fields, customer=customer.name, result="ok")
                return LoginOutcome(replies.AUTH_OK, customer=customer)
            metrics.AUTH_FAILURES.inc()
            delay = await self._failure_delay(address, account)
        close = failures + 1 >= self.per_connection
        log.warning("auth", **fields, result="failed", delay=round(delay, 2), closing=close or None)
        if delay > 0:
            await asyncio.sleep(delay)
        return LoginOutcome(replies.AUTH_TOO_MANY_FAILURES if close else replies.AUTH_FAILED, close=close)

    async def _owes_too_long(
        self, fields: dict[str, Any], address: str, account: str
    ) -> dict[str, float] | None:
        """Waits while the address owes more than the allowance; returns the next slots of the
        address and the login, or None (logged) when the wait would be longer than max_wait."""
        if self.interval <= 0:
            return {}
        owed = await self._store(self.store.auth_next_slots, (address, account), write=False)
        wait = owed.get(address, 0.0) - self.allowance * self.interval - time.time()
        if wait > self.max_wait:
            log.warning("auth", **fields, result="throttled", wait=round(wait, 1))
            return None
        if wait > 0:
            await asyncio.sleep(wait)
        return owed

    def _throttled(self) -> LoginOutcome:
        metrics.AUTH_FAILURES.inc()
        return LoginOutcome(replies.AUTH_THROTTLED, close=True)

    async def _failure_delay(self, address: str, account: str) -> float:
        """Take the failure's slots; returns how long to hold its reply back."""
        if self.interval <= 0:
            return 0.0
        now = time.time()
        if now >= self._next_expiry:
            self._next_expiry = now + _EXPIRE_EVERY
            await self._store(self.store.expire_auth_slots, now)
        slots = [
            await self._store(self.store.take_auth_slot, key, now, self.interval)
            for key in (address, account)
        ]
        return max(slots) - time.time()

    async def _password_matches(self, customer: Any, login: bytes, password: bytes) -> bool:
        stored = customer.password_hash if customer is not None else None
        key = b""
        if stored:
            key = hashlib.sha256(stored.encode() + b"\0" + login + b"\0" + password).digest()
            if self._verified.get(key) == customer.name:
                return True
        text = password.decode("utf-8", "replace")
        check = functools.partial(verify_password if stored else _check_unknown, text, stored)
        ok = await asyncio.get_running_loop().run_in_executor(_hash_pool(), check)
        if ok:
            if len(self._verified) > 10_000:
                self._verified.clear()
            self._verified[key] = customer.name
        return ok

    async def _store(self, method: Callable[..., T], *args: Any, write: bool = True) -> T:
        """A store call off the event loop when it may wait: a write may wait for another
        process's lock, a read on a networked database for the server."""
        if write or self.store.reads_block:
            return await asyncio.to_thread(method, *args)
        return method(*args)
