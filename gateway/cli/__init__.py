"""The `gateway` command. One module per subcommand group; each adds its parsers.

`-c/--config FILE` works before or after the subcommand (`gateway -c F customer list` and
`gateway customer list -c F`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gateway.config import ConfigError
from gateway.store import StoreError, StoreUnavailable

# Order is the order of `gateway --help`.
GROUPS = [
    "serve",
    "customer",
    "audit",
    "domain",
    "campaign",
    "policies",
    "check",
    "mailid",
    "dkim",
    "trace",
    "feedback",
    "suppression",
    "abuse",
    "consent",
    "webhook",
    "recipient",
]


class CliError(Exception):
    """A user mistake or a missing thing: printed as one line, exit status 1."""


def config_option(parser: argparse.ArgumentParser, top: bool = False) -> None:
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=None if top else argparse.SUPPRESS,
        help="config file (default: ./config.yaml, then /etc/gateway/config.yaml)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Outbound SMTP policy gateway for an email service provider."
    )
    config_option(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        try:
            module = importlib.import_module(f"gateway.cli.{group}")
        except ModuleNotFoundError as exc:
            if exc.name == f"gateway.cli.{group}":
                continue  # a group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (CliError, ConfigError, StoreError) as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"gateway: the store is unavailable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
