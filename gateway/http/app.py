"""The HTTP listener: /metrics (Prometheus text format) and /healthz for ops, the recipients'
pages (one-click unsubscribe, DOI confirmation, report abuse: gateway.http.pages) and the
consent API (gateway.http.api).

aiohttp rather than a hand-written HTTP parser: request parsing must be right on pages the
whole internet reaches.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)

from gateway.logging import get_logger

log = get_logger()
SERVER = web.AppKey("server", object)


def make_app(server: Any) -> web.Application:
    from gateway.http.api import ConsentApi
    from gateway.http.pages import Pages, error_middleware
    from gateway.http.suppressions import SuppressionApi
    from gateway.urltokens import signer_for

    http = server.config.http
    # The multipart upload of the report page is the largest body; the rest read their own caps.
    app = web.Application(client_max_size=http.max_upload_bytes + 64 * 1024, middlewares=[error_middleware])
    app[SERVER] = server
    # Created now (0600), as the service user, rather than on the first mail of a managed
    # customer; a key file that cannot be read stops the start with its path in the message.
    signer_for(server.config.path(http.token_key_file))
    Pages(server).mount(app)
    consent_api = ConsentApi(server)
    consent_api.mount(app)
    SuppressionApi(consent_api).mount(app)

    async def metrics(request: web.Request) -> web.Response:
        from gateway.breaker import update_customer_states

        try:
            await asyncio.to_thread(update_customer_states, server.store)
        except Exception as exc:  # noqa: BLE001 - the other metrics still matter then
            log.error("metrics", error=f"customer states: {exc}")
        body = await asyncio.to_thread(generate_latest, _registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        checks = await health_checks(server)
        ok = all(v in ("ok", "not used") for v in checks.values())
        return web.json_response(
            {"status": "ok" if ok else "fail", "checks": checks}, status=200 if ok else 503
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def _registry() -> Any:
    """With several workers, the values of all of them (prometheus-client multiprocess mode)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry


async def health_checks(server: Any) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        await asyncio.to_thread(server.store.ping)
        checks["store"] = "ok"
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        checks["store"] = f"fail: {type(exc).__name__}"
    relay = server.state.relay if server.state is not None else None
    if not server.config.listeners_of("submission"):
        # Milter-only: Postfix delivers, the gateway relays nothing itself.
        checks["downstream"] = "not used"
    elif relay is None:
        checks["downstream"] = "fail: not configured"
    else:
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(relay.host, relay.port), relay.connect_timeout
            )
            writer.close()
            checks["downstream"] = "ok"
        except (TimeoutError, OSError) as exc:
            checks["downstream"] = f"fail: {type(exc).__name__}"
    return checks


class HttpListener:
    """Every `kind: http` listener of the config, as one `gateway.listeners.Listener`."""

    kind = "http"

    def __init__(self, server: Any) -> None:
        self.server = server
        self.runners: list[web.AppRunner] = []

    async def start(self) -> None:
        from gateway.supervisor import inherited_fds, listener_key

        config = self.server.config
        for listener in config.listeners_of("http"):
            # A request under way at SIGTERM gets the grace period to finish (aiohttp closes
            # idle keep-alive connections at once); the drain starts the moment it begins.
            runner = web.AppRunner(
                make_app(self.server), access_log=None, shutdown_timeout=config.limits.shutdown_grace
            )
            await runner.setup()
            fd = inherited_fds().get(listener_key(config, listener))
            site: web.BaseSite
            if fd is not None:
                site = web.SockSite(runner, socket.socket(fileno=fd))
            else:
                site = web.TCPSite(runner, listener.address, listener.port, reuse_address=True)
            await site.start()
            self.runners.append(runner)
            log.event("listening", kind="http", address=listener.address, port=listener.port)

    def stop_accepting(self) -> None:
        """Nothing to refuse: a request is one transaction, and `drain` stops the sites."""

    @property
    def in_flight(self) -> int:
        return sum(len(r.server.connections) for r in self.runners if r.server is not None)

    async def drain(self, deadline: float) -> int:
        """Stop listening, close idle connections, let requests under way finish. aiohttp
        bounds that by the runners' shutdown_timeout (the grace period, counted from the
        start of the drain as `deadline` is) and cuts the rest itself: 0 is reported."""
        await asyncio.gather(*(runner.cleanup() for runner in self.runners))
        return 0

    async def close(self) -> None:
        """The runners are cleaned up by `drain`."""


async def attach_http(server: Any) -> None:
    """Open the HTTP listeners of `server.config` (called from Server.start)."""
    if server.config.listeners_of("http"):
        await server.add_listener(HttpListener(server))
