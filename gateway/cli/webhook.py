"""`gateway webhook set | show | test | disable | failures | replay`: the customer's event URL.

`set` prints the signing secret once (the customer's receiver verifies every POST with it, per
the Standard Webhooks spec); it is not shown again, `set` again makes a new one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import time
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when
from gateway.store.events import EVENT_TYPES, OPT_IN_TYPES, OutboxEvent, iso_time


def register(sub: Any) -> None:
    group = sub.add_parser(
        "webhook",
        help="events to a customer's URL (bounces, complaints, unsubscribes, suppressions, consent)",
    )
    wsub = group.add_subparsers(dest="webhook_command", metavar="ACTION")
    wsub.required = True

    p = add_parser(wsub, "set", "set the customer's webhook URL; prints a new secret once")
    p.add_argument("customer", metavar="NAME")
    p.add_argument("--url", required=True)
    p.add_argument(
        "--events",
        metavar="TYPE,...",
        help=f"only these types (default: all but {', '.join(OPT_IN_TYPES)}); "
        f"known: {', '.join(EVENT_TYPES)}",
    )
    p.add_argument("--by", required=True, metavar="WHO", help="who made the change (audit)")
    p.set_defaults(func=cmd_set)

    p = add_parser(wsub, "show", "the customer's webhook and its delivery counts")
    p.add_argument("customer", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = add_parser(wsub, "test", "POST a signed test event now and print the answer")
    p.add_argument("customer", metavar="NAME")
    p.set_defaults(func=cmd_test)

    p = add_parser(wsub, "disable", "stop delivering (events are still recorded)")
    p.add_argument("customer", metavar="NAME")
    p.add_argument("--by", required=True, metavar="WHO")
    p.set_defaults(func=cmd_disable)

    p = add_parser(wsub, "failures", "events given up on, with the last error")
    p.add_argument("customer", metavar="NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_failures)

    p = add_parser(wsub, "replay", "send again every event since DATE (same ids)")
    p.add_argument("customer", metavar="NAME")
    p.add_argument(
        "--since",
        required=True,
        metavar="DATE",
        help="YYYY-MM-DD or an ISO 8601 time (UTC unless it names a zone)",
    )
    p.set_defaults(func=cmd_replay)


def parse_since(value: str) -> float:
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since {value!r}: not a date (YYYY-MM-DD or ISO 8601)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _customer(store: Any, name: str) -> Any:
    customer = store.get_customer(name)
    if customer is None:
        raise CliError(f"no customer {name!r}")
    return customer


def cmd_set(args: argparse.Namespace) -> int:
    from gateway.webhooks import WebhookUrlError, check_url

    config, store = store_of(args)
    customer = _customer(store, args.customer)
    try:
        url = check_url(args.url, allow_loopback=config.webhooks.allow_loopback)
    except WebhookUrlError as exc:
        raise CliError(f"--url: {exc}") from None
    types = [t.strip() for t in args.events.split(",") if t.strip()] if args.events else None
    webhook, secret = store.set_webhook(customer.id, url, types, by=args.by)
    print(f"webhook for {customer.name}: {webhook.url}")
    print(f"events: {', '.join(webhook.event_types) if webhook.event_types else 'all'}")
    print(f"secret (shown once; the receiver verifies signatures with it): {secret}")
    return 0


def _summary(store: Any, customer: Any) -> dict[str, Any]:
    webhook = store.get_webhook(customer.id)
    counts: dict[str, int] = {}
    for event in store.list_events(customer.id, limit=None):
        counts[event.state] = counts.get(event.state, 0) + 1
    if webhook is None:
        return {"customer": customer.name, "webhook": None, "events": counts}
    return {
        "customer": customer.name,
        "url": webhook.url,
        "enabled": webhook.enabled,
        "event_types": list(webhook.event_types) if webhook.event_types else "all",
        "updated_at": iso_time(webhook.updated_at),
        "updated_by": webhook.updated_by,
        "events": counts,
    }


def cmd_show(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    summary = _summary(store, _customer(store, args.customer))
    if args.json:
        print_json(summary)
        return 0
    if summary.get("webhook", True) is None:
        print(f"{summary['customer']}: no webhook")
    else:
        types = summary["event_types"]
        print(
            f"{summary['customer']}: {summary['url']} "
            f"({'enabled' if summary['enabled'] else 'disabled'}), events "
            f"{types if isinstance(types, str) else ', '.join(types)}"
            f"; set {summary['updated_at']} by {summary['updated_by'] or '-'}"
        )
    states = summary["events"]
    print("events: " + (", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"))
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from gateway.webhooks import Dispatcher

    config, store = store_of(args)
    customer = _customer(store, args.customer)
    webhook = store.get_webhook(customer.id)
    if webhook is None:
        raise CliError(f"{customer.name} has no webhook (gateway webhook set)")
    now = time.time()
    event_id = f"evt_test_{int(now)}"
    event = OutboxEvent(
        0,
        event_id,
        customer.id,
        "test",
        now,
        None,
        {"id": event_id, "type": "test", "timestamp": iso_time(now), "data": {"customer": customer.name}},
        "pending",
        0,
        now,
        now,
        None,
        None,
        None,
        None,
    )

    async def send() -> Any:
        import aiohttp

        dispatcher = Dispatcher(store, config.webhooks)
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.webhooks.timeout_seconds)
        ) as session:
            dispatcher._session = session
            return await dispatcher.post(webhook.url, webhook.secret, event)

    outcome = asyncio.run(send())
    if outcome.delivered:
        print(f"delivered {event_id} to {webhook.url}: HTTP {outcome.status}")
        return 0
    print(f"not delivered to {webhook.url}: {outcome.error}")
    return 1


def cmd_disable(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = _customer(store, args.customer)
    if not store.disable_webhook(customer.id, by=args.by):
        raise CliError(f"{customer.name} has no webhook")
    print(
        f"webhook of {customer.name} disabled; events are still recorded "
        "(gateway webhook replay sends them once it is set again)"
    )
    return 0


def cmd_failures(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = _customer(store, args.customer)
    failed = store.list_events(customer.id, state="failed", limit=None)
    if args.json:
        print_json(
            [
                {
                    "id": e.event_id,
                    "type": e.type,
                    "created_at": iso_time(e.created_at),
                    "attempts": e.attempts,
                    "last_error": e.last_error,
                }
                for e in failed
            ]
        )
        return 0
    for e in failed:
        print(f"{e.event_id} {e.type} {when(e.created_at)} attempts={e.attempts} error={e.last_error}")
    if not failed:
        print("no failed events")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = _customer(store, args.customer)
    webhook = store.get_webhook(customer.id)
    if webhook is None or not webhook.enabled:
        raise CliError(f"{customer.name} has no enabled webhook (gateway webhook set)")
    count = store.replay_events(customer.id, parse_since(args.since))
    print(f"{count} event(s) of {customer.name} queued again for {webhook.url}")
    return 0
