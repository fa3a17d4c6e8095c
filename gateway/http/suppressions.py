"""The suppression API: a customer's application checks, lists, adds, imports and lifts the
addresses the gateway refuses for it (DESIGN §13). Same bearer keys as the consent API; a key
acts on its own customer only.

| method | path                               | what                                                |
|--------|------------------------------------|-----------------------------------------------------|
| GET    | /api/v1/suppressions?email=        | is it suppressed for us, and why (ours + global)    |
| GET    | /api/v1/suppressions[?cursor=&limit=] | our entries and our hard bounces, paged by cursor |
| POST   | /api/v1/suppressions               | add: JSON {"email", "reason"} or {"suppressions":   |
|        |                                    | [...]}, or text/csv with an `email` column          |
|        |                                    | (optional `reason`); entries are ours only          |
| DELETE | /api/v1/suppressions/{email}       | lift our unsubscribe / soft-bounce / manual entry   |

A complaint is never lifted by the customer (the recipient said "spam"; CSA), nor a global
entry (a hard bounce of a mailbox that does not exist, for every customer): 409 with the reason.
Global entries are shown read-only, without the mail ID or diagnostic of another customer's
message. Every add and lift is in the suppression history with the actor ``api:<customer>``.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from gateway import metrics
from gateway.http.api import BadInput, ConsentApi, _error, _ok
from gateway.logging import get_logger
from gateway.store.consent import ConsentInputError, check_email
from gateway.store.events import iso_time
from gateway.store.feedback import GLOBAL, Suppression

log = get_logger()
# What a customer may record: its own list's entries (an import from its previous ESP
# included). Never global: one customer cannot suppress an address for the others.
API_REASONS = ("unsubscribe", "complaint", "hard-bounce", "soft-bounce", "manual")
# What the customer may lift again (its own entries only).
LIFTABLE = ("unsubscribe", "soft-bounce", "manual")
MAX_BODY = 2 * 1024 * 1024
MAX_ROWS = 10_000
PAGE_MAX = 1000


def _cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"s{last_id}".encode()).decode().rstrip("=")


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not text.startswith("s") or not text[1:].isdigit() or len(text) > 20:
            raise ValueError
        return int(text[1:])
    except ValueError:
        raise BadInput("cursor", "not a cursor this API gave out") from None


def view(entry: Suppression, customer_id: int) -> dict[str, Any]:
    ours = entry.customer_id == customer_id
    shown: dict[str, Any] = {
        "email": entry.address,
        "scope": "customer" if ours else "global",
        "reason": entry.reason,
        "created_at": iso_time(entry.created_at),
        "can_lift": ours and entry.reason in LIFTABLE,
    }
    if ours:
        shown.update({"mail_id": entry.mail_id, "detail": entry.detail})
    return {k: v for k, v in shown.items() if v is not None}


class SuppressionApi:
    def __init__(self, api: ConsentApi) -> None:
        self.api = api

    @property
    def store(self) -> Any:
        return self.api.store

    def mount(self, app: web.Application) -> None:
        wrap = self.api._wrap
        app.router.add_route("GET", "/api/v1/suppressions", wrap("suppressions-get", self.get))
        app.router.add_route("POST", "/api/v1/suppressions", wrap("suppressions-add", self.add))
        app.router.add_route("DELETE", "/api/v1/suppressions/{email}", wrap("suppressions-lift", self.lift))

    async def get(self, request: web.Request, customer: Any) -> web.Response:
        query = request.query
        if "email" in query:
            email = _email(query.get("email", ""), "email")
            found = await asyncio.to_thread(self.store.suppressions_affecting, customer.id, email)
            return _ok(
                {"email": email, "suppressed": bool(found), "entries": [view(e, customer.id) for e in found]}
            )
        try:
            limit = min(max(int(query.get("limit", "100")), 1), PAGE_MAX)
        except ValueError:
            raise BadInput("limit", "not a number") from None
        after = _after(query.get("cursor"))
        page = await asyncio.to_thread(self.store.customer_suppressions_page, customer.id, after, limit)
        body: dict[str, Any] = {"data": [view(e, customer.id) for e in page]}
        body["next_cursor"] = _cursor(page[-1].id) if len(page) == limit else None
        return _ok(body)

    async def add(self, request: web.Request, customer: Any) -> web.Response:
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:
            raise BadInput("body", f"larger than {MAX_BODY} bytes; send several requests")
        rows = _rows(request.content_type, raw)
        if len(rows) > MAX_ROWS:
            raise BadInput("body", f"more than {MAX_ROWS} addresses; send several requests")
        good: list[tuple[str, str, str | None]] = []
        errors: list[dict[str, Any]] = []
        for n, row in enumerate(rows, 1):
            try:
                email = _email(row.get("email"), "email")
                reason = str(row.get("reason") or "manual").strip()
                if reason not in API_REASONS:
                    raise BadInput("reason", f"one of {', '.join(API_REASONS)}")
                note = row.get("note")
                good.append((email, reason, str(note)[:500] if note else None))
            except BadInput as exc:
                errors.append({"row": n, "field": exc.field, "error": exc.problem})
        by = f"api:{customer.name}"

        def work() -> tuple[int, int]:
            added: dict[str, int] = {}
            existing = 0
            with self.store.transaction():
                for email, reason, note in good:
                    _, new = self.store.add_suppression(
                        customer.id, email, reason, detail=note or "added over the API", by=by
                    )
                    if new:
                        added[reason] = added.get(reason, 0) + 1
                    else:
                        existing += 1
            for reason, count in added.items():  # counted once the transaction committed
                metrics.SUPPRESSIONS.labels(reason).inc(count)
            return sum(added.values()), existing

        added, existing = await asyncio.to_thread(work) if good else (0, 0)
        log.event(
            "suppression_api",
            customer=customer.name,
            action="add",
            added=added,
            existing=existing,
            errors=len(errors),
        )
        return _ok(
            {"added": added, "existing": existing, "errors": errors},
            status=200 if not errors or good else 400,
        )

    async def lift(self, request: web.Request, customer: Any) -> web.Response:
        email = _email(unquote(request.match_info["email"]), "email")
        by = f"api:{customer.name}"

        def work() -> tuple[list[Suppression], list[Suppression]]:
            entries = self.store.suppressions_affecting(customer.id, email)
            ours = [e for e in entries if e.customer_id == customer.id]
            kept = [e for e in entries if e not in ours or e.reason not in LIFTABLE]
            if ours and all(e.reason in LIFTABLE for e in ours):
                with self.store.transaction():
                    self.store.remove_suppression(customer.id, email, by=by)
                    for entry in ours:  # the audit trail holds every lift (issue #12)
                        self.store.audit(
                            customer,
                            "unsuppress",
                            by,
                            "lifted over the API",
                            {"address": email, "suppressed": entry.reason},
                            {"address": email, "suppressed": None},
                        )
                return ours, kept
            return [], kept

        lifted, kept = await asyncio.to_thread(work)
        if not lifted and not kept:
            return _error(404, "this address is not suppressed for you", "email")
        if not lifted:
            why = "; ".join(_why_not(e) for e in kept)
            log.event(
                "suppression_api",
                customer=customer.name,
                action="lift",
                rcpt=email,
                result="refused",
                reason=",".join(e.reason for e in kept),
            )
            return _error(409, why, "email")
        log.event(
            "suppression_api",
            customer=customer.name,
            action="lift",
            rcpt=email,
            result="lifted",
            reason=",".join(e.reason for e in lifted),
        )
        return _ok(
            {
                "email": email,
                "lifted": [view(e, customer.id) for e in lifted],
                "still_suppressed_by": [view(e, customer.id) for e in kept],
            }
        )


def _why_not(entry: Suppression) -> str:
    if entry.customer_id == GLOBAL:
        return (
            f"a global {entry.reason} entry (the mailbox refused mail for every sender) "
            "cannot be lifted over the API; ask the ESP's support"
        )
    if entry.reason == "complaint":
        return "the recipient complained about your mail: a complaint cannot be lifted"
    return f"a {entry.reason} entry cannot be lifted over the API"


def _email(value: Any, field: str) -> str:
    try:
        return check_email(value)
    except ConsentInputError as exc:
        raise BadInput(field, str(exc)) from None


def _rows(content_type: str, raw: bytes) -> list[dict[str, Any]]:
    """The entries of a POST body: JSON (one object, or {"suppressions": [...]}) or CSV."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BadInput("body", "not UTF-8") from None
    if content_type == "application/json":
        try:
            body = json.loads(text or "null")
        except ValueError:
            raise BadInput("body", "not valid JSON") from None
        if isinstance(body, dict) and isinstance(body.get("suppressions"), list):
            items = body["suppressions"]
        elif isinstance(body, dict):
            items = [body]
        else:
            raise BadInput("body", 'a JSON object: {"email", "reason"} or {"suppressions": [...]}')
        if not all(isinstance(i, dict) for i in items):
            raise BadInput("suppressions", "each entry must be a JSON object")
        return items
    if content_type in ("text/csv", "application/csv"):
        reader = csv.DictReader(io.StringIO(text))
        names = [n.strip().lower() for n in reader.fieldnames or []]
        if "email" not in names:
            raise BadInput("body", "the CSV needs a header row with an 'email' column")
        reader.fieldnames = names
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    raise BadInput("body", "send application/json or text/csv")
