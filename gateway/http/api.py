"""The consent API: the ESP's application records subscribe and confirm events.

Authentication: ``Authorization: Bearer <key>``; the key names the customer (keys file
`http.api_keys_file`, made by `gateway consent api-key add NAME`). A key acts only on its own
customer's records: there is no customer parameter to get wrong. Bodies are JSON objects;
times are ISO 8601 (no offset: UTC) or unix seconds and default to now; `ip` is the IP of the
subscriber's browser as the application saw it.

| method | path                                 | body / query                                   |
|--------|--------------------------------------|------------------------------------------------|
| POST   | /api/v1/consent/subscribe            | email, source, ip, [user_agent, subscribed_at, |
|        |                                      | list, confirmation_sent_at] -> record +        |
|        |                                      | confirm_url for the confirmation mail          |
| POST   | /api/v1/consent/confirmation-sent    | email, [sent_at]                               |
| POST   | /api/v1/consent/confirm              | email, ip, [user_agent, confirmed_at] (for     |
|        |                                      | applications that host their own confirm page) |
| POST   | /api/v1/consent/revoke               | email, [reason, revoked_at]                    |
| GET    | /api/v1/consent?email=               | the evidence with its history                  |
| GET    | /api/v1/unsubscribe-url?email=[&list=] | a one-click URL for the visible body link    |

Answers are JSON: 200/201 with the record, 400 with {"error", "field"} for bad input, 401
without a valid key, 404 for an unknown address, 409 when a revoked record is confirmed.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import Counter

from gateway.http.apikeys import ApiKeyError, ApiKeyRing
from gateway.logging import get_logger
from gateway.store.consent import ConsentInputError, check_email, check_ip, parse_timestamp
from gateway.urltokens import CONFIRM, UNSUBSCRIBE, confirm_url, signer_for, unsubscribe_url

log = get_logger()
MAX_BODY = 64 * 1024
API_REQUESTS = Counter("gateway_consent_api_requests_total", "Consent API requests", ["endpoint", "status"])

Handler = Callable[[web.Request, Any], Awaitable[web.Response]]


class BadInput(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="gateway consent API"'
    return web.json_response(body, status=status, headers=headers)


def _ok(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(
        body,
        status=status,
        headers={"Cache-Control": "no-store"},
        dumps=lambda o: json.dumps(o, sort_keys=True),
    )


def _field(
    body: dict[str, Any],
    name: str,
    check: Callable[[Any], Any],
    *,
    required: bool = True,
    default: Any = None,
) -> Any:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadInput(name, "missing")
        return default
    try:
        return check(value)
    except ConsentInputError as exc:
        raise BadInput(name, str(exc)) from None


def _text(limit: int) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ConsentInputError("must be a string")
        clean = "".join(c for c in value.strip() if c.isprintable())
        if len(clean) > limit:
            raise ConsentInputError(f"longer than {limit} characters")
        return clean

    return check


class ConsentApi:
    def __init__(self, server: Any) -> None:
        self.server = server
        self._rings: dict[Any, ApiKeyRing] = {}

    @property
    def config(self) -> Any:
        return self.server.config

    @property
    def store(self) -> Any:
        return self.server.store

    def ring(self) -> ApiKeyRing:
        path = self.config.path(self.config.http.api_keys_file)
        ring = self._rings.get(path)
        if ring is None:
            ring = self._rings[path] = ApiKeyRing(path)
        return ring

    def mount(self, app: web.Application) -> None:
        routes = [
            ("POST", "/api/v1/consent/subscribe", "subscribe", self.subscribe),
            ("POST", "/api/v1/consent/confirmation-sent", "confirmation-sent", self.confirmation_sent),
            ("POST", "/api/v1/consent/confirm", "confirm", self.confirm),
            ("POST", "/api/v1/consent/revoke", "revoke", self.revoke),
            ("GET", "/api/v1/consent", "show", self.show),
            ("GET", "/api/v1/unsubscribe-url", "unsubscribe-url", self.unsubscribe_link),
        ]
        for method, path, name, handler in routes:
            app.router.add_route(method, path, self._wrap(name, handler))

    def _wrap(self, name: str, handler: Handler) -> Callable[[web.Request], Awaitable[Any]]:
        async def run(request: web.Request) -> web.Response:
            response = await self._run(request, handler)
            API_REQUESTS.labels(name, str(response.status)).inc()
            return response

        return run

    async def _run(self, request: web.Request, handler: Handler) -> web.Response:
        auth = request.headers.get("Authorization", "")
        scheme, _, key = auth.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(401, "send the API key as 'Authorization: Bearer <key>'")
        try:
            name = self.ring().customer_for(key.strip())
        except ApiKeyError as exc:
            log.error("consent_api", error=str(exc))
            return _error(503, "the API is not available right now")
        customer = (await asyncio.to_thread(self.store.get_customer, name)) if name else None
        if customer is None:
            return _error(401, "unknown API key")
        try:
            return await handler(request, customer)
        except BadInput as exc:
            return _error(400, f"{exc.field}: {exc.problem}", exc.field)

    async def _body(self, request: web.Request) -> dict[str, Any]:
        if request.content_type != "application/json":
            raise BadInput("body", "send a JSON object (Content-Type: application/json)")
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise BadInput("body", "too large")
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadInput("body", "not valid JSON") from None
        if not isinstance(body, dict):
            raise BadInput("body", "must be a JSON object")
        return body

    def _confirm_url(self, record: Any) -> str | None:
        public = self.config.http.public_url
        if not public or record.status != "pending":
            return None
        signer = signer_for(self.config.path(self.config.http.token_key_file))
        token = signer.make(
            CONFIRM,
            record.customer_id,
            record.address,
            list_label=record.list_name or "",
            reference=str(record.generation),
        )
        return confirm_url(public, token)

    def _evidence(self, customer: Any, address: str) -> dict[str, Any] | None:
        return self.store.consent_evidence(customer.id, address)

    # -- endpoints ----------------------------------------------------------------------------
    async def subscribe(self, request: web.Request, customer: Any) -> web.Response:
        body = await self._body(request)
        now = time.time()
        email = _field(body, "email", check_email)
        source = _field(body, "source", _text(1000))
        ip = _field(body, "ip", check_ip)
        agent = _field(body, "user_agent", _text(500), required=False)
        at = _field(body, "subscribed_at", parse_timestamp, required=False, default=now)
        sent = _field(body, "confirmation_sent_at", parse_timestamp, required=False)
        list_name = _field(body, "list", _text(200), required=False)
        if sent is not None and sent < at:
            raise BadInput("confirmation_sent_at", "before subscribed_at")

        def work() -> tuple[Any, str, dict[str, Any] | None, str | None]:
            record, outcome = self.store.consent_subscribe(
                customer.id,
                email,
                source=source,
                at=at,
                ip=ip,
                user_agent=agent,
                list_name=list_name,
                via="api",
                confirmation_sent_at=sent,
            )
            return record, outcome, self._evidence(customer, email), self._confirm_url(record)

        record, outcome, evidence, url = await asyncio.to_thread(work)
        log.event(
            "consent",
            customer=customer.name,
            rcpt=email,
            action="subscribe",
            result=outcome,
            ip=ip,
            via="api",
        )
        answer = {"result": outcome, "consent": evidence, "confirm_url": url}
        return _ok(answer, status=201 if outcome == "new" else 200)

    async def confirmation_sent(self, request: web.Request, customer: Any) -> web.Response:
        body = await self._body(request)
        email = _field(body, "email", check_email)
        at = _field(body, "sent_at", parse_timestamp, required=False, default=time.time())

        def work() -> dict[str, Any] | None:
            from gateway.store import StoreError

            try:
                record = self.store.consent_confirmation_sent(customer.id, email, at=at, via="api")
            except StoreError as exc:
                raise BadInput("sent_at", str(exc)) from None
            return None if record is None else self._evidence(customer, email)

        evidence = await asyncio.to_thread(work)
        if evidence is None:
            return _error(404, "no subscription recorded for this address", "email")
        return _ok({"result": "recorded", "consent": evidence})

    async def confirm(self, request: web.Request, customer: Any) -> web.Response:
        body = await self._body(request)
        email = _field(body, "email", check_email)
        ip = _field(body, "ip", check_ip)
        agent = _field(body, "user_agent", _text(500), required=False)
        at = _field(body, "confirmed_at", parse_timestamp, required=False, default=time.time())

        def work() -> tuple[str, dict[str, Any] | None]:
            from gateway.store import StoreError

            try:
                _, outcome = self.store.consent_confirm(
                    customer.id, email, at=at, ip=ip, user_agent=agent, via="api"
                )
            except StoreError as exc:
                raise BadInput("confirmed_at", str(exc)) from None
            return outcome, self._evidence(customer, email)

        outcome, evidence = await asyncio.to_thread(work)
        log.event(
            "consent", customer=customer.name, rcpt=email, action="confirm", result=outcome, ip=ip, via="api"
        )
        if outcome == "unknown":
            return _error(404, "no subscription recorded for this address", "email")
        if outcome == "revoked":
            return _error(409, "the consent was revoked; a new subscription is needed", "email")
        return _ok({"result": outcome, "consent": evidence})

    async def revoke(self, request: web.Request, customer: Any) -> web.Response:
        body = await self._body(request)
        email = _field(body, "email", check_email)
        reason = _field(
            body, "reason", _text(500), required=False, default="revoked by the customer's application"
        )
        at = _field(body, "revoked_at", parse_timestamp, required=False, default=time.time())

        def work() -> tuple[Any, bool, dict[str, Any] | None]:
            record, changed = self.store.consent_revoke(customer.id, email, at=at, reason=reason, via="api")
            return record, changed, self._evidence(customer, email)

        record, changed, evidence = await asyncio.to_thread(work)
        if record is None:
            return _error(404, "no consent recorded for this address", "email")
        log.event(
            "consent",
            customer=customer.name,
            rcpt=email,
            action="revoke",
            result="revoked" if changed else "already-revoked",
            via="api",
        )
        return _ok({"result": "revoked" if changed else "already-revoked", "consent": evidence})

    async def show(self, request: web.Request, customer: Any) -> web.Response:
        email = _field(dict(request.query), "email", check_email)
        export = await asyncio.to_thread(self.store.consent_export, customer.id, email)
        if export is None:
            return _error(404, "no consent recorded for this address", "email")
        export.pop("customer", None)
        return _ok(export)

    async def unsubscribe_link(self, request: web.Request, customer: Any) -> web.Response:
        email = _field(dict(request.query), "email", check_email)
        list_name = _field(dict(request.query), "list", _text(200), required=False, default="")
        public = self.config.http.public_url
        if not public:
            return _error(503, "http.public_url is not configured")
        signer = signer_for(self.config.path(self.config.http.token_key_file))
        token = signer.make(UNSUBSCRIBE, customer.id, email, list_label=list_name)
        return _ok({"url": unsubscribe_url(public, token)})
