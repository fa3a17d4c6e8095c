"""`gateway mailid decode ID` and `gateway mailid rotate`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, config_of

# What a mail ID's status means, for every command that shows one.
STATUS_MEANING = {
    "genuine": "genuine: made by this gateway with one of its keys",
    "altered": "ALTERED: the ID was changed or truncated after it was made (checksum fails)",
    "forged": "FORGED: well-formed, but not signed by any of this gateway's keys",
    "malformed": "MALFORMED: not a mail ID of this gateway",
}


def register(sub: Any) -> None:
    group = sub.add_parser("mailid", help="decode and manage signed mail IDs")
    msub = group.add_subparsers(dest="mailid_command", metavar="ACTION")
    msub.required = True
    p = add_parser(msub, "decode", "decode a mail ID offline and say whether it is genuine")
    p.add_argument("mail_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_decode)
    p = add_parser(msub, "rotate", "append a new signing key (old keys keep verifying)")
    p.set_defaults(func=cmd_rotate)


def decode_info(config: Any, mail_id: str, store: Any = None) -> dict[str, Any]:
    """The decoded fields, with customer and campaign names when a store is at hand."""
    from gateway.mailid import MailIdCodec

    codec = MailIdCodec.from_key_file(config.path(config.mail_id.key_file), create=False)
    decoded = codec.decode(mail_id.strip().lower())
    info: dict[str, Any] = {
        "mail_id": decoded.mail_id,
        "status": decoded.status,
        "key_id": decoded.key_id,
        "time": decoded.timestamp.isoformat() if decoded.timestamp else None,
        "customer_id": decoded.customer_id,
        "campaign_ref": decoded.campaign_ref,
        "recipient_hash": decoded.recipient_hash,
    }
    if store is not None and decoded.customer_id:
        try:
            customer = store.get_customer_by_id(decoded.customer_id)
            info["customer"] = customer.name if customer else None
            if decoded.campaign_ref:
                campaign = store.get_campaign_by_id(decoded.campaign_ref)
                info["campaign"] = campaign.campaign if campaign else None
        except Exception:  # noqa: BLE001 - decoding works offline; names are a bonus
            pass
    return info


def cmd_decode(args: argparse.Namespace) -> int:
    from gateway.mailid import MailIdKeyError
    from gateway.store import open_store

    config = config_of(args)
    try:
        store = open_store(config.store_url())
    except Exception:  # noqa: BLE001 - offline decode needs no store
        store = None
    try:
        info = decode_info(config, args.mail_id, store)
    except MailIdKeyError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(info, sort_keys=True))
    else:
        print(f"mail ID:      {info['mail_id']}")
        print(f"status:       {STATUS_MEANING[info['status']]}")
        if info["status"] != "malformed":
            print(f"time:         {info['time']}")
            print(f"customer:     {info.get('customer') or '-'} (id {info['customer_id']})")
            campaign = info.get("campaign") or ("none" if not info["campaign_ref"] else "-")
            print(f"campaign:     {campaign} (ref {info['campaign_ref']})")
            print(
                f"recipient:    hash {info['recipient_hash']} (keyed; check an address with "
                "`gateway abuse lookup`)"
            )
            print(f"key id:       {info['key_id']}")
    return 0 if info["status"] == "genuine" else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    from gateway.mailid import MailIdKeyError, add_key

    config = config_of(args)
    try:
        # Never creates a missing file: a new key set would orphan every ID already sent.
        key_id = add_key(config.path(config.mail_id.key_file))
    except MailIdKeyError as exc:
        raise CliError(str(exc)) from None
    print(
        f"added mail ID key {key_id}; new IDs are signed with it, older keys still verify. "
        "Reload running gateways: systemctl reload gateway (SIGHUP)"
    )
    return 0
