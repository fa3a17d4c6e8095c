"""`gateway campaign confirm | list`: the per-campaign guideline confirmation (RULES.md
"Guidelines confirmed per campaign").

The campaign id is the value the customer's mails carry in `X-Campaign-ID` (compared after
trimming surrounding whitespace, as the campaign-confirmed policy reads it). Confirming again
records the new who/when.
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when

MAX_CAMPAIGN_LENGTH = 200


def register(sub: Any) -> None:
    group = sub.add_parser("campaign", help="campaign guideline confirmations")
    csub = group.add_subparsers(dest="campaign_command", metavar="ACTION")
    csub.required = True

    p = add_parser(
        csub, "confirm", "record that the customer confirmed the anti-spam guidelines for a campaign"
    )
    p.add_argument("customer")
    p.add_argument("campaign", metavar="CAMPAIGN-ID", help="the X-Campaign-ID value of its mails")
    p.add_argument(
        "--by",
        metavar="NAME",
        required=True,
        help="who confirmed (the customer's user, or the support agent)",
    )
    p.set_defaults(func=cmd_confirm)

    p = add_parser(csub, "list", "list a customer's confirmed campaigns")
    p.add_argument("customer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def _campaign_arg(text: str) -> str:
    campaign = text.strip()
    if not campaign:
        raise CliError("the campaign id is empty")
    if len(campaign) > MAX_CAMPAIGN_LENGTH:
        raise CliError(f"the campaign id is longer than {MAX_CAMPAIGN_LENGTH} characters")
    if any(not c.isprintable() for c in campaign):
        raise CliError(
            "the campaign id contains control characters; it must be the exact X-Campaign-ID header value"
        )
    return campaign


def cmd_confirm(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    campaign = _campaign_arg(args.campaign)
    by = args.by.strip()
    if not by:
        raise CliError("--by needs a name (who confirmed)")
    before = store.get_campaign(customer.id, campaign)
    found = store.confirm_campaign(customer.name, campaign, by)
    store.audit(
        customer,
        "campaign",
        by,
        f"campaign {campaign} confirmed",
        {"campaign": campaign, "confirmed_by": before.confirmed_by} if before else None,
        {"campaign": campaign, "confirmed_by": by},
    )
    again = " again" if before is not None else ""
    print(
        f"campaign {found.campaign} of customer {customer.name} confirmed{again} by "
        f"{found.confirmed_by} at {when(found.confirmed_at)}"
    )
    if before is not None:
        print(f"  (previously by {before.confirmed_by} at {when(before.confirmed_at)})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    campaigns = store.list_campaigns(customer.id)
    if args.json:
        print_json(
            [
                {
                    "customer": customer.name,
                    "campaign": k.campaign,
                    "confirmed_by": k.confirmed_by,
                    "confirmed_at": when(k.confirmed_at),
                    "confirmed_ts": k.confirmed_at,
                }
                for k in campaigns
            ]
        )
        return 0
    if not campaigns:
        print(f"no confirmed campaigns for customer {customer.name}")
        return 0
    width = max(24, *(len(k.campaign) for k in campaigns))
    print(f"{'CAMPAIGN':<{width}} {'CONFIRMED':<23} BY")
    for k in campaigns:
        print(f"{k.campaign:<{width}} {when(k.confirmed_at):<23} {k.confirmed_by}")
    return 0
