"""`gateway domain add | verify | list`: a customer's sending domains and their DNS verification.

A domain counts for the sender-identity policy only once verified: by the DNS TXT token
(`gateway domain verify`, see gateway/dnsverify.py for the record) or, by hand, by support
(`--force --by NAME`, recorded as verified_by "force:NAME").
"""

from __future__ import annotations

import argparse
from typing import Any

from gateway import dnsverify
from gateway.cli import CliError
from gateway.cli.common import add_parser, print_json, store_of, when


def register(sub: Any) -> None:
    group = sub.add_parser("domain", help="sending domains of customers (DNS TXT verification)")
    dsub = group.add_subparsers(dest="domain_command", metavar="ACTION")
    dsub.required = True

    p = add_parser(dsub, "add", "add a sending domain and print the DNS TXT record to publish")
    p.add_argument("customer")
    p.add_argument("domain")
    p.set_defaults(func=cmd_add)

    p = add_parser(
        dsub,
        "verify",
        "check the domain's DNS TXT token and mark the domain verified",
        epilog=f"The DNS server can be chosen with {dnsverify.ENV_SERVER}=HOST[:PORT] and the "
        f"look-up time limit with {dnsverify.ENV_TIMEOUT}=SECONDS.",
    )
    p.add_argument("customer")
    p.add_argument("domain")
    p.add_argument(
        "--force",
        action="store_true",
        help="mark verified without the DNS check (support, by hand); needs --by",
    )
    p.add_argument("--by", metavar="NAME", help="who forces the verification (recorded)")
    p.set_defaults(func=cmd_verify)

    p = add_parser(dsub, "list", "list sending domains (of one customer or of all)")
    p.add_argument("customer", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)


def _domain_arg(text: str) -> str:
    try:
        return dnsverify.normalize_domain(text)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def cmd_add(args: argparse.Namespace) -> int:
    import secrets

    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    domain = _domain_arg(args.domain)
    existing = store.get_domain(customer.id, domain)
    record = existing or store.add_domain(customer.name, domain, secrets.token_hex(16))
    if existing is None:
        print(f"domain {domain} added for customer {customer.name} (not verified yet)")
    elif existing.verified_at is not None:
        print(
            f"domain {domain} of customer {customer.name} is already verified "
            f"({when(existing.verified_at)} by {existing.verified_by})"
        )
        return 0
    else:
        print(f"domain {domain} of customer {customer.name} was added before; its token is unchanged")
    print("publish this DNS record:")
    print(f"  {dnsverify.zone_line(domain, record.token)}")
    print(f"then: gateway domain verify {customer.name} {domain}")
    others = sorted(
        c.name
        for d in store.list_domains()
        if d.domain == domain and d.customer_id != customer.id
        for c in [store.get_customer_by_id(d.customer_id)]
        if c is not None
    )
    if others:
        print(f"note: {domain} is also registered for: {', '.join(others)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    customer = store.require_customer(args.customer)
    domain = _domain_arg(args.domain)
    record = store.get_domain(customer.id, domain)
    if record is None:
        raise CliError(
            f"domain {domain} is not registered for customer {customer.name}; "
            f"first: gateway domain add {customer.name} {domain}"
        )
    if args.force:
        by = (args.by or "").strip()
        if not by:
            raise CliError("--force needs --by NAME (who verified the domain by hand)")
        store.mark_domain_verified(customer.id, domain, f"force:{by}")
        store.audit(
            customer,
            "domain-forced",
            by,
            f"{domain} marked verified without DNS check",
            {"domain": domain, "verified_by": record.verified_by},
            {"domain": domain, "verified_by": f"force:{by}"},
        )
        print(
            f"domain {domain} of customer {customer.name} marked verified by hand "
            f"(verified_by force:{by}); the DNS record was not checked"
        )
        return 0
    if args.by is not None:
        raise CliError("--by goes with --force; a DNS verification is recorded as 'dns'")
    ok, message = dnsverify.verify_domain_token(domain, record.token, resolver=_resolver())
    if not ok:
        note = ""
        if record.verified_at is not None:
            note = f" (the domain stays verified since {when(record.verified_at)} by {record.verified_by})"
        raise CliError(f"domain {domain} of customer {customer.name} not verified: {message}{note}")
    store.mark_domain_verified(customer.id, domain, "dns")
    print(f"domain {domain} of customer {customer.name} verified: {message}")
    return 0


def _resolver() -> Any:
    try:
        return dnsverify.default_resolver()
    except dnsverify.DnsConfigError as exc:
        raise CliError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    _, store = store_of(args)
    names = {c.id: c.name for c in store.list_customers()}
    if args.customer:
        customer = store.require_customer(args.customer)
        domains = store.list_domains(customer.id)
    else:
        domains = sorted(store.list_domains(), key=lambda d: (names.get(d.customer_id, ""), d.domain))
    rows = [
        {
            "customer": names.get(d.customer_id, str(d.customer_id)),
            "domain": d.domain,
            "status": "verified" if d.verified_at is not None else "pending",
            "verified_at": when(d.verified_at) if d.verified_at is not None else None,
            "verified_by": d.verified_by,
            "record": None if d.verified_at is not None else dnsverify.zone_line(d.domain, d.token),
        }
        for d in domains
    ]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print(f"no domains for customer {args.customer}" if args.customer else "no domains")
        return 0
    print(f"{'CUSTOMER':<20} {'DOMAIN':<32} {'STATUS':<9} {'VERIFIED':<23} BY")
    for r in rows:
        print(
            f"{r['customer']:<20} {r['domain']:<32} {r['status']:<9} "
            f"{r['verified_at'] or '-':<23} {r['verified_by'] or '-'}"
        )
    return 0
