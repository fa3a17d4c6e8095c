"""Helpers the subcommand modules share: config + store loading, output."""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import sys
from typing import Any

from gateway.config import Config, load_config
from gateway.store import SqlStore, open_store


def add_parser(sub: Any, name: str, help: str, **kwargs: Any) -> argparse.ArgumentParser:
    from gateway.cli import config_option

    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help, **kwargs)
    config_option(parser)
    return parser


def config_of(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def store_of(args: argparse.Namespace) -> tuple[Config, SqlStore]:
    config = config_of(args)
    return config, open_store(config.store_url())


def read_secret(prompt: str) -> str:
    """A password from stdin when piped, else from a prompt; never from argv."""
    if sys.stdin is None or not sys.stdin.isatty():
        line = sys.stdin.readline() if sys.stdin is not None else ""
        return line.rstrip("\r\n")
    first = getpass.getpass(prompt)
    second = getpass.getpass("Repeat: ")
    if first != second:
        from gateway.cli import CliError

        raise CliError("the two passwords differ")
    return first


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def add_by(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--by", metavar="WHO", required=True, help="who takes this decision (recorded in the audit trail)"
    )


def actor_of(args: argparse.Namespace) -> str:
    """`--by`, checked: a name, not blank, no control characters (it goes into logs)."""
    from gateway.cli import CliError

    by = (getattr(args, "by", None) or "").strip()
    if not by:
        raise CliError("--by needs a name (who takes the decision)")
    if any(ord(c) < 32 or ord(c) == 127 for c in by) or len(by) > 200:
        raise CliError("--by: a name of at most 200 characters without control characters")
    return by


def parse_date(value: str) -> float:
    """'YYYY-MM-DD' or an ISO date-time; without a zone it is UTC."""
    try:
        parsed = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
