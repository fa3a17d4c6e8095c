"""`gateway customer add | list | show | activate | suspend | set-password | set-imprint |
set-unsubscribe`."""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, read_secret, store_of, when
from gateway.store.passwords import hash_password

IMPRINT_KEYS = ("company", "legal_form", "representative", "street", "postcode", "city",
                "country", "email", "phone", "register_court", "register_number", "vat_id")


def register(sub: Any) -> None:
    group = sub.add_parser("customer", help="customer accounts (status, credentials, imprint)")
    csub = group.add_subparsers(dest="customer_command", metavar="ACTION")
    csub.required = True

    p = add_parser(csub, "add", "add a customer (status pending)")
    p.add_argument("name", help="unique short name; also the SMTP login")
    p.set_defaults(func=cmd_add)
    p = add_parser(csub, "list", "list customers")
    p.set_defaults(func=cmd_list)
    p = add_parser(csub, "show", "show one customer")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = add_parser(csub, "activate", "allow a customer to send")
    p.add_argument("name")
    p.set_defaults(func=cmd_activate)
    p = add_parser(csub, "suspend", "stop a customer from sending")
    p.add_argument("name")
    p.add_argument("--reason", default="suspended by support")
    p.set_defaults(func=cmd_suspend)
    p = add_parser(csub, "set-password",
                   "set the SMTP password (read from stdin or a prompt, never from argv)")
    p.add_argument("name")
    p.set_defaults(func=cmd_set_password)
    p = add_parser(csub, "set-imprint", "record the customer's imprint (legal notice)")
    p.add_argument("name")
    p.add_argument("--from-file", metavar="FILE", help="YAML with the imprint keys")
    for key in IMPRINT_KEYS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=f"imprint_{key}")
    p.set_defaults(func=cmd_set_imprint)
    p = add_parser(csub, "set-unsubscribe",
                   "register the customer's unsubscribe URL prefix and/or managed unsubscribe")
    p.add_argument("name")
    p.add_argument("--prefix", help="https URL prefix of the customer's unsubscribe links")
    p.add_argument("--managed", action="store_true", default=None,
                   help="let the gateway add List-Unsubscribe headers pointing at itself")
    p.add_argument("--unmanaged", dest="managed", action="store_false")
    p.set_defaults(func=cmd_set_unsubscribe)


def cmd_add(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    name = args.name
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise CliError("a customer name may contain letters, digits, '-', '_' and '.' only")
    customer = store.add_customer(name)
    print(f"customer {customer.name} added (id {customer.id}, status {customer.status})")
    print(f"next: gateway customer set-password {name}; gateway customer activate {name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customers = store.list_customers()
    if not customers:
        print("no customers")
        return 0
    print(f"{'NAME':<24} {'STATUS':<10} {'PASSWORD':<8} {'IMPRINT':<7} CREATED")
    for c in customers:
        print(f"{c.name:<24} {c.status:<10} {'set' if c.password_hash else '-':<8} "
              f"{'yes' if c.imprint else '-':<7} {when(c.created_at)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    c = store.require_customer(args.name)
    domains = store.list_domains(c.id)
    campaigns = store.list_campaigns(c.id)
    info: dict[str, Any] = {
        "name": c.name, "id": c.id, "status": c.status, "status_reason": c.status_reason,
        "password": "set" if c.password_hash else "not set", "imprint": c.imprint or {},
        "unsubscribe_prefix": c.unsubscribe_prefix, "managed_unsubscribe": c.managed_unsubscribe,
        "created": when(c.created_at), "updated": when(c.updated_at),
        "domains": [{"domain": d.domain, "verified": when(d.verified_at) if d.verified_at else
                     "no", "verified_by": d.verified_by, "token": d.token} for d in domains],
        "campaigns": [{"campaign": k.campaign, "confirmed_by": k.confirmed_by,
                       "confirmed_at": when(k.confirmed_at)} for k in campaigns],
    }
    if args.json:
        print_json(info)
        return 0
    for key in ("name", "id", "status", "status_reason", "password", "unsubscribe_prefix",
                "managed_unsubscribe", "created", "updated"):
        print(f"{key + ':':<20} {info[key] if info[key] is not None else '-'}")
    print("imprint:" + ("" if info["imprint"] else "            (none)"))
    for key, value in (info["imprint"] or {}).items():
        print(f"  {key + ':':<18} {value}")
    print("domains:" + ("" if domains else "            (none)"))
    for d in info["domains"]:
        print(f"  {d['domain']:<30} verified: {d['verified']}")
    print("campaigns:" + ("" if campaigns else "          (none)"))
    for k in info["campaigns"]:
        print(f"  {k['campaign']:<30} confirmed by {k['confirmed_by']} at {k['confirmed_at']}")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    c = store.set_customer_status(args.name, "active", None)
    print(f"customer {c.name} is {c.status}")
    if not c.password_hash:
        print(f"note: no SMTP password yet: gateway customer set-password {c.name}")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    c = store.set_customer_status(args.name, "suspended", args.reason)
    print(f"customer {c.name} is {c.status} ({args.reason})")
    return 0


def cmd_set_password(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    store.require_customer(args.name)
    password = read_secret(f"SMTP password for {args.name}: ")
    if len(password) < 12:
        raise CliError("the password must have at least 12 characters")
    store.set_password_hash(args.name, hash_password(password))
    print(f"password for {args.name} set")
    return 0


def cmd_set_imprint(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    imprint: dict[str, str] = {}
    if args.from_file:
        try:
            with open(args.from_file, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise CliError(f"{args.from_file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CliError(f"{args.from_file}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise CliError(f"{args.from_file}: expected a mapping of imprint keys")
        unknown = sorted(set(data) - set(IMPRINT_KEYS))
        if unknown:
            raise CliError(f"{args.from_file}: unknown imprint keys: {', '.join(unknown)} "
                           f"(known: {', '.join(IMPRINT_KEYS)})")
        imprint.update({k: str(v) for k, v in data.items() if v is not None})
    for key in IMPRINT_KEYS:
        value = getattr(args, f"imprint_{key}")
        if value is not None:
            imprint[key] = value
    missing = [k for k in ("company", "street", "postcode", "city") if not imprint.get(k)]
    if not (imprint.get("email") or imprint.get("phone")):
        missing.append("email or phone")
    if missing:
        raise CliError(f"imprint incomplete, missing: {', '.join(missing)}")
    store.set_imprint(args.name, imprint)
    print(f"imprint for {args.name} recorded ({', '.join(sorted(imprint))})")
    return 0


def cmd_set_unsubscribe(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.name)
    prefix = args.prefix if args.prefix is not None else customer.unsubscribe_prefix
    if prefix is not None and not prefix.startswith("https://"):
        raise CliError("the unsubscribe prefix must be an https:// URL")
    c = store.set_unsubscribe(args.name, prefix, args.managed)
    print(f"{c.name}: unsubscribe prefix {c.unsubscribe_prefix or '-'}, "
          f"managed {'yes' if c.managed_unsubscribe else 'no'}")
    return 0
