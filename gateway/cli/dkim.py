"""`gateway dkim keygen` and `gateway dkim check`."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, config_of


def register(sub: Any) -> None:
    group = sub.add_parser("dkim", help="DKIM keys: generate, check DNS")
    dsub = group.add_subparsers(dest="dkim_command", metavar="ACTION")
    dsub.required = True
    p = add_parser(dsub, "keygen", "write a new key (mode 0600) and print its DNS TXT record")
    p.add_argument("--domain", required=True)
    p.add_argument("--selector", required=True)
    p.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa")
    p.set_defaults(func=cmd_keygen)
    p = add_parser(dsub, "check", "resolve the DNS record and compare it with our key")
    p.add_argument("domain")
    p.add_argument("selector")
    p.set_defaults(func=cmd_check)


def cmd_keygen(args: argparse.Namespace) -> int:
    from gateway.dkim import DkimKeyError, dns_txt_name, keygen

    config = config_of(args)
    algorithm = "rsa-sha256" if args.algorithm == "rsa" else "ed25519-sha256"
    try:
        path, txt = keygen(args.domain, args.selector, algorithm, config.path(config.dkim.keys_dir))
    except DkimKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"wrote {path} (mode 0600)")
    print(
        "publish this DNS record, then run `gateway dkim check "
        f"{args.domain} {args.selector}` and reload the gateway:"
    )
    print(f'{dns_txt_name(args.domain, args.selector)}. IN TXT "{txt}"')
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.dkim import check_dns
    from gateway.dnsverify import resolver_from_env

    config = config_of(args)
    ok, message = check_dns(
        args.domain, args.selector, config.path(config.dkim.keys_dir), resolver=resolver_from_env()
    )
    print(message)
    return 0 if ok else 1
