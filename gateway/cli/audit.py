"""`gateway audit [--customer NAME] [--since DATE] [--json]`: the decisions taken about
customers, oldest first (RULES.md "Audit trail"; the table is append-only)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, parse_date, print_json, store_of, when


def register(sub: Any) -> None:
    p = add_parser(sub, "audit", "decisions about customers: who, when, what, why")
    p.add_argument("--customer", metavar="NAME")
    p.add_argument("--since", metavar="DATE", help="YYYY-MM-DD[THH:MM] (UTC)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer_id = None
    if args.customer:
        customer_id = store.require_customer(args.customer).id
    since = None
    if args.since:
        try:
            since = parse_date(args.since)
        except ValueError as exc:
            raise CliError(f"--since: {exc}") from None
    entries = store.list_audit(customer_id, since)
    if args.json:
        print_json([e.json_dict() for e in entries])
        return 0
    if not entries:
        print("no audit entries")
        return 0
    for e in entries:
        change = ""
        if e.before is not None or e.after is not None:
            change = f" {_compact(e.before)} -> {_compact(e.after)}"
        print(
            f"{when(e.happened_at)}  {e.customer or '-':<20} {e.action:<12} by {e.actor}"
            f"{': ' + e.reason if e.reason else ''}{change}"
        )
    return 0


def _compact(state: dict[str, Any] | None) -> str:
    return json.dumps(state, sort_keys=True, separators=(",", ":")) if state is not None else "-"
