"""`gateway policies`: the configured pipeline (order, phases, mode) and the policies that are
installed (entry-point group `gateway.policies`) but not configured."""

from __future__ import annotations

import argparse
from typing import Any

from gateway.cli import CliError
from gateway.cli.common import add_parser, config_of, print_json


def register(sub: Any) -> None:
    p = add_parser(
        sub, "policies", "list the configured policies in order, and the installed ones not configured"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_policies)


def policy_rows(config: Any, source: str = "config") -> list[dict[str, Any]]:
    """One row per configured policy (in order), then the installed, unconfigured ones.

    Raises CliError for unknown names, options a policy refuses, or a broken registry.
    """
    from gateway.core.pipeline import Pipeline, PipelineError
    from gateway.core.registry import RegistryError, discover

    try:
        registry = discover()
    except RegistryError as exc:
        raise CliError(f"policy registry: {exc}") from None
    unknown = [e.name for e in config.policies if e.name not in registry]
    if unknown:
        known = ", ".join(sorted(registry)) or "none installed"
        names = ", ".join(repr(n) for n in unknown)
        raise CliError(f"{source}: policies: unknown policy {names} (installed: {known})")
    try:
        Pipeline.from_config(config.policies, registry)
    except PipelineError as exc:
        raise CliError(f"{source}: {exc}") from None
    rows: list[dict[str, Any]] = []
    for order, entry in enumerate(config.policies, start=1):
        cls = registry[entry.name]
        rows.append(
            {
                "order": order,
                "name": entry.name,
                "phases": [p.value for p in cls.phases],
                "mode": entry.mode,
                "configured": True,
                "timeout": entry.timeout,
                "on_error": entry.on_error,
                "options": dict(entry.options),
                "description": cls.description,
                "class": f"{cls.__module__}.{cls.__qualname__}",
            }
        )
    configured = {e.name for e in config.policies}
    for name in sorted(set(registry) - configured):
        cls = registry[name]
        rows.append(
            {
                "order": None,
                "name": name,
                "phases": [p.value for p in cls.phases],
                "mode": "not configured",
                "configured": False,
                "timeout": None,
                "on_error": None,
                "options": None,
                "description": cls.description,
                "class": f"{cls.__module__}.{cls.__qualname__}",
            }
        )
    return rows


def cmd_policies(args: argparse.Namespace) -> int:
    from gateway.config import find_config

    config = config_of(args)
    rows = policy_rows(config, str(find_config(getattr(args, "config", None))))
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no policies configured and none installed")
        return 0
    name_w = max(16, *(len(r["name"]) for r in rows))
    print(f"{'ORDER':<5} {'NAME':<{name_w}} {'PHASES':<14} {'MODE':<14} DESCRIPTION")
    for r in rows:
        order = str(r["order"]) if r["order"] is not None else "-"
        print(
            f"{order:<5} {r['name']:<{name_w}} {'+'.join(r['phases']) or '-':<14} "
            f"{r['mode']:<14} {r['description'] or '-'}"
        )
    if not config.policies:
        print("note: no policies configured: every message would pass unchecked")
    return 0
