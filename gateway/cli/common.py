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
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))
