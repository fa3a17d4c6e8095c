"""`gateway suppression list | add | remove | export`: the addresses refused at RCPT.

A suppression is global (every customer: hard bounces, repeated soft bounces) or for one
customer (complaints, unsubscribes). Entries made by the feedback intake carry the mail ID that
caused them; entries made here carry the OS user who made them.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import getpass
import sys
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when
from gateway.store.feedback import GLOBAL, SUPPRESSION_REASONS, Suppression

CSV_COLUMNS = ["address", "scope", "customer", "reason", "created_at", "mail_id", "detail", "created_by"]


def register(sub: Any) -> None:
    group = sub.add_parser("suppression", help="suppressed recipients (bounces, complaints, unsubscribes)")
    ssub = group.add_subparsers(dest="suppression_command", metavar="ACTION")
    ssub.required = True

    p = add_parser(ssub, "list", "list suppressions (all scopes unless narrowed)")
    _scope_options(p)
    p.add_argument("--address", help="only this address")
    p.add_argument("--reason", choices=SUPPRESSION_REASONS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = add_parser(ssub, "add", "suppress addresses for one customer or for everyone")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    _scope_options(p)
    p.add_argument("--reason", choices=SUPPRESSION_REASONS, default="manual")
    p.add_argument("--note", help="free text kept with the entry (ticket number, why)")
    p.set_defaults(func=cmd_add)

    p = add_parser(ssub, "remove", "lift suppressions")
    p.add_argument("addresses", nargs="+", metavar="ADDRESS")
    _scope_options(p)
    p.add_argument("--all", action="store_true", help="every scope: global and all customers")
    p.add_argument(
        "--by", metavar="WHO", help="who lifts it (audit trail; default: the operating-system user)"
    )
    p.add_argument("--reason", help="why (audit trail)")
    p.set_defaults(func=cmd_remove)

    p = add_parser(ssub, "export", "write suppressions as CSV (" + ",".join(CSV_COLUMNS) + ")")
    _scope_options(p)
    p.add_argument("--reason", choices=SUPPRESSION_REASONS)
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=cmd_export)


def _scope_options(p: argparse.ArgumentParser) -> None:
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--customer", metavar="NAME", help="the customer's suppressions")
    scope.add_argument(
        "--global", dest="global_", action="store_true", help="the global suppressions (every customer)"
    )


def _scope_id(store: Any, args: argparse.Namespace) -> int | None:
    if getattr(args, "customer", None):
        return int(store.require_customer(args.customer).id)
    if getattr(args, "global_", False):
        return GLOBAL
    return None


def _names(store: Any) -> dict[int, str]:
    return {c.id: c.name for c in store.list_customers()}


def _scope_name(entry: Suppression, names: dict[int, str]) -> str:
    if entry.is_global:
        return "global"
    return names.get(entry.customer_id, f"customer id {entry.customer_id}")


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "cli"


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cmd_list(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    entries = store.list_suppressions(
        customer_id=_scope_id(store, args), address=args.address, reason=args.reason
    )
    names = _names(store)
    if args.json:
        print_json([_row(e, names) for e in entries])
        return 0
    if not entries:
        print("no suppressions")
        return 0
    print(f"{'ADDRESS':<36} {'SCOPE':<16} {'REASON':<12} {'SINCE':<24} MAIL ID / NOTE")
    for e in entries:
        print(
            f"{e.address:<36} {_scope_name(e, names):<16} {e.reason:<12} "
            f"{when(e.created_at):<24} {e.mail_id or e.detail or '-'}"
        )
    print(f"{len(entries)} suppression{'s' if len(entries) != 1 else ''}")
    return 0


def _row(e: Suppression, names: dict[int, str]) -> dict[str, Any]:
    return {
        "address": e.address,
        "scope": "global" if e.is_global else "customer",
        "customer": None if e.is_global else names.get(e.customer_id),
        "reason": e.reason,
        "created_at": _iso(e.created_at),
        "mail_id": e.mail_id,
        "detail": e.detail,
        "created_by": e.created_by,
    }


def cmd_add(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    scope = _scope_id(store, args)
    if scope is None:
        raise CliError("say whom the suppression is for: --customer NAME or --global")
    label = "everyone" if scope == GLOBAL else args.customer
    for address in args.addresses:
        entry, added = store.add_suppression(scope, address, args.reason, detail=args.note, by=_actor())
        if added:
            print(f"{entry.address} suppressed for {label} ({entry.reason})")
        else:
            print(
                f"{entry.address} was already suppressed for {label} "
                f"({entry.reason} since {when(entry.created_at)})"
            )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    scope = _scope_id(store, args)
    if scope is None and not args.all:
        raise CliError("say which suppression to lift: --customer NAME, --global or --all")
    names = _names(store)
    missing = 0
    for address in args.addresses:
        actor = (args.by or "").strip() or _actor()
        removed = store.remove_suppression(None if args.all else scope, address, by=actor)
        for e in removed:
            owner = store.get_customer_by_id(e.customer_id) if e.customer_id else None
            store.audit(
                owner,
                "unsuppress",
                actor,
                args.reason,
                {"address": e.address, "suppressed": e.reason},
                {"address": e.address, "suppressed": None},
            )
        if not removed:
            missing += 1
            print(f"{address.strip().lower()}: no such suppression", file=sys.stderr)
        for e in removed:
            print(f"{e.address} no longer suppressed ({_scope_name(e, names)}, was {e.reason})")
    return 1 if missing else 0


def cmd_export(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    entries = store.list_suppressions(customer_id=_scope_id(store, args), reason=args.reason)
    names = _names(store)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for e in entries:
            row = _row(e, names)
            writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output:
        print(f"{len(entries)} suppressions written to {args.output}", file=sys.stderr)
    return 0
