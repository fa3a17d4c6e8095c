"""`gateway recipient erase ADDRESS [--customer NAME] --by WHO`: erasure by recipient (GDPR
Art. 17). See gateway/store/erasure.py for what is kept and why, README "Erasure"."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of
from gateway.store.consent import ConsentInputError, check_email


def register(sub: Any) -> None:
    group = sub.add_parser("recipient", help="a recipient's data (erasure on request)")
    rsub = group.add_subparsers(dest="recipient_command", metavar="ACTION")
    rsub.required = True
    p = add_parser(
        rsub,
        "erase",
        "erase an address from the ledger, events and logs; it stays suppressed (as a keyed hash)",
    )
    p.add_argument("address")
    p.add_argument("--customer", metavar="NAME", help="only this customer's data (default: every customer's)")
    p.add_argument("--by", required=True, metavar="WHO", help="who asked / who does it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_erase)


def cmd_erase(args: argparse.Namespace) -> int:
    from gateway.logerase import erase_from_logs

    config, store = store_of(args)
    try:
        address = check_email(args.address)
    except ConsentInputError as exc:
        raise CliError(f"address: {exc}") from None
    customer_id = None
    if args.customer:
        customer = store.get_customer(args.customer)
        if customer is None:
            raise CliError(f"no customer {args.customer!r}")
        customer_id = customer.id
    report = store.erase_recipient(address, customer_id=customer_id, by=f"erasure:{args.by}")
    logs: dict[str, int] = {}
    if config.logging.file is not None:
        logs = erase_from_logs(config.path(config.logging.file), address)
    if args.json:
        print_json({"address_hash": report.address_hash, "store": report.counts, "logs": logs})
        return 0
    print(
        f"erased {'for ' + args.customer if args.customer else 'for every customer'}; "
        f"kept as {report.address_hash} (still suppressed)"
    )
    for what, n in sorted(report.counts.items()):
        print(f"  {what}: {n}")
    for name, n in sorted(logs.items()):
        print(f"  log {name}: {n} occurrence(s) masked")
    return 0
