"""`gateway customer add | list | show | activate | suspend | resume | graduate | set-limits |
set-password | set-imprint | set-unsubscribe`.

Decisions about a customer (activate, suspend, resume, graduate, limits, password) need
`--by WHO` and are recorded in the audit trail (`gateway audit`) with the state before and
after, in the same transaction as the change.
"""

from __future__ import annotations

import argparse
from typing import Any

import yaml

from gateway.cli import CliError
from gateway.cli.common import (
    actor_of,
    add_by,
    add_parser,
    parse_date,
    print_json,
    read_secret,
    store_of,
    when,
)
from gateway.quota import effective_limits, on_probation, period_starts
from gateway.store.passwords import hash_password

IMPRINT_KEYS = (
    "company",
    "legal_form",
    "representative",
    "street",
    "postcode",
    "city",
    "country",
    "email",
    "phone",
    "register_court",
    "register_number",
    "vat_id",
)


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
    p = add_parser(csub, "activate", "allow a customer to send (a first activation starts its probation)")
    p.add_argument("name")
    add_by(p)
    p.add_argument("--reason")
    p.set_defaults(func=cmd_activate)
    p = add_parser(csub, "suspend", "stop a customer from sending (550)")
    p.add_argument("name")
    add_by(p)
    p.add_argument("--reason", default="suspended by support")
    p.set_defaults(func=cmd_suspend)
    p = add_parser(csub, "resume", "lift a pause of the circuit breaker")
    p.add_argument("name")
    add_by(p)
    p.add_argument("--reason", required=True, help="why sending may go on (recorded)")
    p.set_defaults(func=cmd_resume)
    p = add_parser(csub, "graduate", "end the customer's probation now")
    p.add_argument("name")
    add_by(p)
    p.add_argument("--reason", default="graduated by support")
    p.set_defaults(func=cmd_graduate)
    p = add_parser(
        csub, "set-limits", "the customer's sending limits (0 = platform default) and probation end"
    )
    p.add_argument("name")
    p.add_argument("--per-hour", type=_count, metavar="N")
    p.add_argument("--per-day", type=_count, metavar="N")
    p.add_argument(
        "--probation-until",
        type=_date,
        metavar="DATE",
        help="YYYY-MM-DD[THH:MM] (UTC): probation lasts at least until then",
    )
    add_by(p)
    p.add_argument("--reason")
    p.set_defaults(func=cmd_set_limits)
    p = add_parser(
        csub, "set-password", "set the SMTP password (read from stdin or a prompt, never from argv)"
    )
    p.add_argument("name")
    add_by(p)
    p.set_defaults(func=cmd_set_password)
    p = add_parser(csub, "set-imprint", "record the customer's imprint (legal notice)")
    p.add_argument("name")
    p.add_argument("--from-file", metavar="FILE", help="YAML with the imprint keys")
    for key in IMPRINT_KEYS:
        p.add_argument(f"--{key.replace('_', '-')}", dest=f"imprint_{key}")
    p.set_defaults(func=cmd_set_imprint)
    p = add_parser(
        csub, "set-unsubscribe", "register the customer's unsubscribe URL prefix and/or managed unsubscribe"
    )
    p.add_argument("name")
    p.add_argument("--prefix", help="https URL prefix of the customer's unsubscribe links")
    p.add_argument(
        "--managed",
        action="store_true",
        default=None,
        help="let the gateway add List-Unsubscribe headers pointing at itself",
    )
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
        print(
            f"{c.name:<24} {c.status:<10} {'set' if c.password_hash else '-':<8} "
            f"{'yes' if c.imprint else '-':<7} {when(c.created_at)}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    config, store = store_of(args)
    c = store.require_customer(args.name)
    domains = store.list_domains(c.id)
    campaigns = store.list_campaigns(c.id)
    info: dict[str, Any] = {
        "name": c.name,
        "id": c.id,
        "status": c.status,
        "status_reason": c.status_reason,
        "password": "set" if c.password_hash else "not set",
        "imprint": c.imprint or {},
        "unsubscribe_prefix": c.unsubscribe_prefix,
        "managed_unsubscribe": c.managed_unsubscribe,
        "created": when(c.created_at),
        "updated": when(c.updated_at),
        "domains": [
            {
                "domain": d.domain,
                "verified": when(d.verified_at) if d.verified_at else "no",
                "verified_by": d.verified_by,
                "token": d.token,
            }
            for d in domains
        ],
        "campaigns": [
            {"campaign": k.campaign, "confirmed_by": k.confirmed_by, "confirmed_at": when(k.confirmed_at)}
            for k in campaigns
        ],
        "limits": _limits_info(config, store, c),
    }
    if args.json:
        print_json(info)
        return 0
    for key in (
        "name",
        "id",
        "status",
        "status_reason",
        "password",
        "unsubscribe_prefix",
        "managed_unsubscribe",
        "created",
        "updated",
    ):
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
    lim = info["limits"]
    print("limits:")
    print(f"  {'tier:':<18} {lim['tier']}")
    print(
        f"  {'per hour:':<18} {lim['used_hour']} of {lim['per_hour']} used "
        f"(resets {lim['hour_resets']}; customer setting {lim['customer_per_hour'] or 'default'})"
    )
    print(
        f"  {'per day:':<18} {lim['used_day']} of {lim['per_day']} used "
        f"(resets {lim['day_resets']}; customer setting {lim['customer_per_day'] or 'default'})"
    )
    print(f"  {'probation:':<18} {lim['probation']}")
    if lim["breaker_warning"]:
        print(f"  {'breaker warning:':<18} {lim['breaker_warning']}")
    return 0


def _limits_info(config: Any, store: Any, c: Any) -> dict[str, Any]:
    """Limits in force and current use. Use counts the units the processes reserved: the
    recipients accepted plus at most one unused block per process (gateway/quota.py)."""
    import time

    limits = store.get_limits(c.id)
    eff = effective_limits(config.quota, limits)
    hour_start, day_start = period_starts(time.time())
    used_hour, used_day = store.quota_used(c.id, hour_start, day_start)
    if on_probation(limits):
        until = limits.probation_until or (limits.activated_at + config.quota.probation_days * 86400)
        probation = (
            f"until {when(until)} and {config.quota.probation_campaigns} campaigns "
            f"sent ({store.count_campaigns_sent(c.id)} so far)"
        )
    elif limits.graduated_at is not None:
        probation = f"graduated {when(limits.graduated_at)}"
    else:
        probation = "no"
    return {
        "tier": eff.tier,
        "per_hour": eff.per_hour,
        "per_day": eff.per_day,
        "customer_per_hour": limits.per_hour,
        "customer_per_day": limits.per_day,
        "used_hour": used_hour,
        "used_day": used_day,
        "hour_resets": when(hour_start + 3600),
        "day_resets": when(day_start + 86400),
        "probation": probation,
        "breaker_warning": limits.breaker_warning,
    }


def cmd_activate(args: argparse.Namespace) -> int:
    config, store = store_of(args)
    by = actor_of(args)
    before = store.require_customer(args.name)
    store.change_status(before, "active", args.reason, actor=by, action="activate")
    limits = store.get_limits(before.id)
    if limits.activated_at is None and config.quota.probation_days + config.quota.probation_campaigns > 0:
        # The first activation starts probation (RULES.md "Probation").
        import time

        now = time.time()
        store.update_limits(
            before,
            actor=by,
            action="probation",
            audited=True,
            reason="first activation: probation starts",
            activated_at=now,
            probation_until=now + config.quota.probation_days * 86400,
        )
        print(
            f"probation: until {when(now + config.quota.probation_days * 86400)} and "
            f"{config.quota.probation_campaigns} campaigns"
        )
    c = store.require_customer(args.name)
    print(f"customer {c.name} is {c.status}")
    if not c.password_hash:
        print(f"note: no SMTP password yet: gateway customer set-password {c.name}")
    return 0


def cmd_suspend(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    before = store.require_customer(args.name)
    store.change_status(before, "suspended", args.reason, actor=actor_of(args), action="suspend")
    print(f"customer {before.name} is suspended ({args.reason})")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    before = store.require_customer(args.name)
    if before.status != "paused":
        raise CliError(
            f"customer {before.name} is {before.status}, not paused"
            + (
                "; a suspension is lifted with `gateway customer activate`"
                if before.status == "suspended"
                else ""
            )
        )
    with store.transaction() as q:
        store.change_status(before, "active", args.reason, actor=actor_of(args), action="resume", q=q)
        # Support reviewed the account: the breaker's warnings start afresh.
        store.set_breaker_warning(before, None, "cleared on resume", q=q, actor=actor_of(args))
    print(f"customer {before.name} is active again ({args.reason})")
    return 0


def cmd_graduate(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.name)
    if not store.graduate(customer, actor=actor_of(args), reason=args.reason):
        raise CliError(f"customer {customer.name} is not on probation")
    print(f"customer {customer.name} graduated from probation")
    return 0


def cmd_set_limits(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.name)
    changes: dict[str, Any] = {}
    if args.per_hour is not None:
        changes["per_hour"] = args.per_hour
    if args.per_day is not None:
        changes["per_day"] = args.per_day
    if args.probation_until is not None:
        changes["probation_until"] = args.probation_until
        limits = store.get_limits(customer.id)
        if limits.activated_at is None or limits.graduated_at is not None:
            # Putting a customer (back) on probation: it ends on that date (and campaigns).
            import time

            changes["activated_at"] = limits.activated_at or time.time()
            changes["graduated_at"] = None
    if not changes:
        raise CliError("nothing to change: give --per-hour, --per-day or --probation-until")
    store.update_limits(customer, actor=actor_of(args), action="limits", reason=args.reason, **changes)
    shown = ", ".join(
        f"{k.replace('_', '-')} {when(v) if k.endswith(('_until', '_at')) else (v or 'default')}"
        for k, v in changes.items()
    )
    print(f"limits of {customer.name}: {shown}")
    return 0


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if number < 0 or number > 1_000_000_000:
        raise argparse.ArgumentTypeError("must be between 0 (the default) and 1000000000")
    return number


def _date(value: str) -> float:
    try:
        return parse_date(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_set_password(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    store.require_customer(args.name)
    password = read_secret(f"SMTP password for {args.name}: ")
    if len(password) < 12:
        raise CliError("the password must have at least 12 characters")
    customer = store.require_customer(args.name)
    with store.transaction() as q:
        q("UPDATE customers SET password_hash = ? WHERE id = ?", (hash_password(password), customer.id))
        store.audit(
            customer,
            "password",
            actor_of(args),
            "SMTP password changed",
            {"password": "set" if customer.password_hash else "not set"},
            {"password": "set"},
            q=q,
        )
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
            raise CliError(
                f"{args.from_file}: unknown imprint keys: {', '.join(unknown)} "
                f"(known: {', '.join(IMPRINT_KEYS)})"
            )
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
    print(
        f"{c.name}: unsubscribe prefix {c.unsubscribe_prefix or '-'}, "
        f"managed {'yes' if c.managed_unsubscribe else 'no'}"
    )
    return 0
