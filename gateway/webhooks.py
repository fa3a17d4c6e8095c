"""Webhook delivery (DESIGN §13): the outbox's pending events, POSTed to each customer's URL.

Signed per the Standard Webhooks spec with the `standardwebhooks` package (the one receivers
verify with): headers ``webhook-id`` (the event's stable id), ``webhook-timestamp`` and
``webhook-signature`` over ``id.timestamp.body``. A 2xx answer delivers the event; anything
else, a timeout or a refused connection is retried after ``retry_base_seconds`` doubling up to
``retry_max_seconds``, for ``retry_for_hours``; then the event is marked failed and counted.

The dispatcher is an asyncio task in each `gateway serve` process, apart from the SMTP hot
path: store work runs in a thread, HTTP is non-blocking, and a lease in the store lets only one
worker or node hold an event at a time. A restart resumes from the outbox.

What a customer may point us at is checked twice: when set (https, or http to a loopback
address when ``webhooks.allow_loopback`` is on, for tests and local receivers) and when
connecting (the resolved addresses must be public unless ``webhooks.allow_private_networks``;
no redirects), so a webhook cannot be used to reach the ESP's internal network.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Histogram
from standardwebhooks.webhooks import Webhook as Signer

from gateway.logging import get_logger
from gateway.store.events import OutboxEvent

log = get_logger()

DELIVERIES = Counter(
    "gateway_webhook_deliveries_total", "Webhook delivery attempts by outcome", ["result"]
)  # delivered | retry | failed | lost-lease
DELIVERY_SECONDS = Histogram(
    "gateway_webhook_delivery_seconds",
    "Time per webhook POST",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
USER_AGENT = "esp-policy-gateway-webhooks/1"


class WebhookUrlError(ValueError):
    """A URL the gateway will not POST to: user-facing text."""


def _loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_loopback: bool) -> str:
    """The URL as given if the gateway may POST to it, else WebhookUrlError saying why."""
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise WebhookUrlError("the URL contains spaces or control characters")
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        raise WebhookUrlError("the URL has no host")
    if parts.username or parts.password:
        raise WebhookUrlError("credentials in the URL are not allowed; use the signature")
    if parts.scheme == "https":
        return url
    if parts.scheme == "http" and _loopback_host(host):
        if allow_loopback:
            return url
        raise WebhookUrlError(
            "http is allowed only to a loopback receiver, and webhooks.allow_loopback is off"
        )
    raise WebhookUrlError("webhook URLs must be https://")


def public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


def sign(secret: str, event_id: str, at: float, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for one attempt."""
    timestamp = datetime.datetime.fromtimestamp(int(at), datetime.UTC)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at)),
        "webhook-signature": Signer(secret).sign(event_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def next_delay(attempts: int, base: float, ceiling: float) -> float:
    """Seconds before attempt number `attempts + 1`: base, 2*base, 4*base ... up to ceiling."""
    return float(min(ceiling, base * (2 ** max(0, attempts - 1))))


@dataclass
class Outcome:
    delivered: bool
    error: str | None
    status: int | None = None


class _PublicOnlyResolver:
    """aiohttp resolver that drops non-public addresses: the connection goes to what was
    checked (no second lookup a DNS rebinding could answer differently)."""

    def __init__(self, allow_private: bool, allow_loopback: bool) -> None:
        from aiohttp.resolver import DefaultResolver

        self._inner = DefaultResolver()
        self.allow_private = allow_private
        self.allow_loopback = allow_loopback

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[Any]:
        found = await self._inner.resolve(host, port, family)
        kept = [r for r in found if self._allowed(r["host"])]
        if not kept:
            raise OSError(f"{host} resolves to no public address")
        return kept

    def _allowed(self, address: str) -> bool:
        if self.allow_private or public_address(address):
            return True
        return self.allow_loopback and ipaddress.ip_address(address).is_loopback

    async def close(self) -> None:
        await self._inner.close()


class Dispatcher:
    """Delivers due events until stopped. One per `gateway serve` process."""

    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.settings = settings
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = asyncio.Event()
        self._session: Any = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        import aiohttp

        connector = aiohttp.TCPConnector(
            resolver=_PublicOnlyResolver(self.settings.allow_private_networks, self.settings.allow_loopback),  # type: ignore[arg-type]
            limit=self.settings.concurrency,
        )
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._session = session
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    handled = await self.run_once()
                except Exception as exc:  # noqa: BLE001 - a store outage must not end the loop
                    log.error("webhook", result="error", error=str(exc))
                    handled = 0
                # Paced: the dispatcher shares the process (and the GIL) with the SMTP
                # sessions, and a backlog of events must not eat their CPU. At most
                # max_per_second POSTs per process; the rest waits in the outbox.
                pause = (
                    handled / self.settings.max_per_second - (time.monotonic() - started)
                    if handled
                    else self.settings.poll_interval_seconds
                )
                if pause > 0:
                    try:
                        await asyncio.wait_for(self._wake.wait(), pause)
                    except TimeoutError:
                        pass
                    self._wake.clear()
        await asyncio.to_thread(self.store.release_events, self.owner)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run_once(self) -> int:
        """Claim a batch of due events and deliver them; returns how many were handled."""
        events = await asyncio.to_thread(
            self.store.claim_due_events,
            self.owner,
            lease=self.settings.lease_seconds,
            limit=min(self.settings.batch_size, max(1, int(self.settings.max_per_second))),
        )
        if not events:
            return 0
        await asyncio.gather(*(self._deliver(event) for event in events))
        return len(events)

    async def _deliver(self, event: OutboxEvent) -> None:
        webhook = await asyncio.to_thread(self.store.get_webhook, event.customer_id)
        now = time.time()
        if webhook is None or not webhook.wants(event.type):
            outcome = Outcome(False, "webhook removed or disabled")
            give_up = True
        else:
            outcome = await self.post(webhook.url, webhook.secret, event)
            give_up = False
        settings = self.settings
        retry_at: float | None = None
        if not outcome.delivered and not give_up:
            retry_at = time.time() + next_delay(
                event.attempts + 1, settings.retry_base_seconds, settings.retry_max_seconds
            )
            if retry_at > event.pending_since + settings.retry_for_hours * 3600:
                retry_at = None
        state = await asyncio.to_thread(
            self.store.finish_attempt,
            event,
            self.owner,
            delivered=outcome.delivered,
            error=outcome.error,
            next_attempt_at=retry_at,
        )
        result = {"delivered": "delivered", "pending": "retry", "failed": "failed", None: "lost-lease"}[state]
        DELIVERIES.labels(result).inc()
        fields: dict[str, Any] = {
            "event_id": event.event_id,
            "type": event.type,
            "customer_id": event.customer_id,
            "attempt": event.attempts + 1,
            "result": result,
            "status": outcome.status,
            "seconds": round(time.time() - now, 3),
        }
        if not outcome.delivered:
            fields["error"] = outcome.error
        if retry_at is not None:
            fields["retry_in"] = round(retry_at - time.time(), 1)
        (log.event if outcome.delivered else log.warning)("webhook", **fields)

    async def post(self, url: str, secret: str, event: OutboxEvent) -> Outcome:
        body = event.body()
        try:
            check_url(url, allow_loopback=self.settings.allow_loopback)
        except WebhookUrlError as exc:
            return Outcome(False, str(exc))
        headers = sign(secret, event.event_id, time.time(), body)
        started = time.perf_counter()
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
                await response.content.read(4096)  # the receiver's answer is not ours to keep
                status = response.status
        except Exception as exc:  # noqa: BLE001 - every transport error is a retry
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:300])
        finally:
            DELIVERY_SECONDS.observe(time.perf_counter() - started)
        if 200 <= status < 300:
            return Outcome(True, None, status)
        return Outcome(False, f"HTTP {status}", status)


class WebhookService:
    """The dispatcher as a background service of `gateway serve` (a `gateway.listeners.
    Listener` with no sockets): drained after the listeners, so the events of the last
    transactions are still taken while those finish."""

    kind = "webhooks"

    def __init__(self, store: Any, settings: Any) -> None:
        self.store = store
        self.dispatcher = Dispatcher(store, settings)
        self.task: asyncio.Future[Any] | None = None

    async def start(self) -> None:
        self.task = asyncio.ensure_future(self.dispatcher.run())

    def stop_accepting(self) -> None:
        self.dispatcher.stop()

    @property
    def in_flight(self) -> int:
        return int(self.task is not None and not self.task.done())

    async def drain(self, deadline: float) -> int:
        """A POST in progress gets a moment (at most a second, whatever `deadline` says): the
        drain must not wait on a slow receiver. One cut short is sent again by whoever takes
        the event next (at least once)."""
        task = self.task
        if task is None:
            return 0
        self.dispatcher.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 1.0)
        except TimeoutError:
            task.cancel()
            try:
                await asyncio.to_thread(self.store.release_events, self.dispatcher.owner)
            except Exception as exc:  # noqa: BLE001 - the leases then expire by themselves
                log.error("webhook", result="release-failed", error=str(exc))
            return 1
        except Exception as exc:  # noqa: BLE001 - shutting down regardless
            log.error("webhook", result="stop-failed", error=str(exc))
        return 0

    async def close(self) -> None:
        """Nothing left once drained."""


async def attach_webhooks(server: Any) -> None:
    """Start the dispatcher in this process (`gateway serve`), unless switched off."""
    settings = server.config.webhooks
    if settings.deliver:
        await server.add_service(WebhookService(server.store, settings))
