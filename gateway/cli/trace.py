"""`gateway trace MAIL-ID [--log FILE...]`: the decoded ID and that message's log lines."""

from __future__ import annotations

import argparse
import glob
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, config_of
from gateway.mailid import STEM_LEN

_MAIL_ID = re.compile(r"\bmail_id=([a-z2-7]+)")


def register(sub: Any) -> None:
    p = add_parser(sub, "trace", "print a message's decoded mail ID and its log lines")
    p.add_argument("mail_id")
    p.add_argument(
        "--log",
        nargs="+",
        metavar="FILE",
        help="log files to search (default: logging.file and its rotations)",
    )
    p.set_defaults(func=cmd_trace)


def log_files(config: Any, explicit: list[str] | None) -> list[Path]:
    if explicit:
        return [Path(p) for p in explicit]
    if config.logging.file is None:
        raise CliError(
            "logging goes to stdout (journald): pass --log FILE, or use "
            "`journalctl -u gateway | grep MAIL-ID`"
        )
    current = config.path(config.logging.file)
    rotated = sorted(glob.glob(f"{current}.*"), key=lambda p: -_suffix(p))
    return [Path(p) for p in rotated] + [current]


def _suffix(path: str) -> int:
    tail = path.rsplit(".", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def matching_lines(files: list[Path], mail_id: str) -> Iterator[str]:
    """Lines about this message: its full ID, or its stem (the lines written before DATA).
    Given only a stem, every line whose ID starts with it."""
    stem = mail_id[:STEM_LEN]
    for path in files:
        try:
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    match = _MAIL_ID.search(line)
                    if match is None:
                        continue
                    value = match.group(1)
                    if value in (mail_id, stem) or (mail_id == stem and value.startswith(stem)):
                        yield line.rstrip("\n")
        except FileNotFoundError:
            continue


def cmd_trace(args: argparse.Namespace) -> int:
    from gateway.cli.mailid import decode_info
    from gateway.mailid import MailIdKeyError
    from gateway.store import open_store

    config = config_of(args)
    mail_id = args.mail_id.strip().lower()
    try:
        store = open_store(config.store_url())
    except Exception:  # noqa: BLE001 - tracing works from the logs alone
        store = None
    if len(mail_id) > STEM_LEN:
        try:
            info = decode_info(config, mail_id, store)
        except MailIdKeyError as exc:
            raise CliError(str(exc)) from None
        print(
            f"mail ID {mail_id}: {info['status']}; time {info['time']}; customer "
            f"{info.get('customer') or info['customer_id']}; campaign "
            f"{info.get('campaign') or info['campaign_ref']}"
        )
    files = log_files(config, args.log)
    found = 0
    for line in matching_lines(files, mail_id):
        print(line)
        found += 1
    if not found:
        print(f"no log lines for {mail_id} in {', '.join(str(f) for f in files)}")
        return 1
    return 0
