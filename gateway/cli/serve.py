"""`gateway serve` and `gateway check-config`."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli.common import add_parser


def register(sub: Any) -> None:
    p = add_parser(sub, "serve", "run the gateway's listeners")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes sharing the listeners (default: number of cores)",
    )
    p.set_defaults(func=cmd_serve)
    p = add_parser(sub, "check-config", "validate a config file and the files it names")
    p.set_defaults(func=cmd_check_config)


def cmd_serve(args: argparse.Namespace) -> int:
    import os

    from gateway.cli import CliError
    from gateway.server import serve

    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise CliError("--workers must be at least 1")
    return serve(getattr(args, "config", None), workers)


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, check_files, find_config, load_config
    from gateway.core.pipeline import Pipeline, PipelineError
    from gateway.core.registry import RegistryError, discover

    path = find_config(getattr(args, "config", None))
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc)
        return 1
    problems = check_files(config)
    try:
        Pipeline.from_config(config.policies, discover())
    except (PipelineError, RegistryError) as exc:
        problems.append(str(exc))
    if problems:
        print(f"{path}: invalid configuration")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{path}: OK ({len(config.listeners)} listeners, {len(config.policies)} policies)")
    return 0
