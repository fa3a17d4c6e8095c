"""Replacements of library internals, one module per library (DESIGN.md §12).

Where a library is too slow on the hot path, the gateway replaces a piece of its internals.
Each such replacement lives in the module named after the library (`aiosmtpd`, `aiosmtplib`,
`stdlib_email`), which states the versions it was written for. Outside that range, or with
`GATEWAY_NO_FASTPATHS=1` in the environment, the library's own code runs instead: an upgrade
can never run a replacement written for another version, and CI runs the SMTP, relay and
milter tests both ways to prove the two agree.

`configure()` (re)decides every fast path from the environment and the installed versions;
`log_status()` logs the decisions once per process, at start.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata

SWITCH = "GATEWAY_NO_FASTPATHS"
Version = tuple[int, ...]


@dataclass(frozen=True)
class Status:
    """Whether one library's fast paths run, and why (for the start-up log line)."""

    library: str
    version: str
    active: bool
    reason: str


def switched_off() -> bool:
    return os.environ.get(SWITCH, "").strip().lower() not in ("", "0", "false", "no")


def _parse(version: str) -> Version:
    parts: list[int] = []
    for part in version.split("."):
        digits = ""
        for char in part:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:  # "6rc1", "1.4.6.post1": the release number ends here
            break
    return tuple(parts)


def decide(library: str, written_for: tuple[Version, Version],
           installed: str | None = None) -> Status:
    """Active only if not switched off and `written_for[0] <= installed < written_for[1]`."""
    if installed is None:
        try:
            installed = metadata.version(library)
        except metadata.PackageNotFoundError:
            installed = "unknown"
    low, below = written_for
    span = f">={'.'.join(map(str, low))},<{'.'.join(map(str, below))}"
    if switched_off():
        return Status(library, installed, False, f"{SWITCH} is set")
    if not low <= _parse(installed) < below:
        return Status(library, installed, False,
                      f"written for {library}{span}; the library's own code runs")
    return Status(library, installed, True, f"written for {library}{span}")


def configure() -> list[Status]:
    """Install or remove every fast path as the environment and the versions say."""
    from gateway.fastpaths import aiosmtpd, aiosmtplib, stdlib_email

    return [aiosmtpd.configure(), aiosmtplib.configure(), stdlib_email.configure()]


_logged = False


def log_status() -> None:
    """One log line per library at start: which fast paths are on, which off, and why."""
    global _logged
    if _logged:
        return
    _logged = True
    from gateway.fastpaths import aiosmtpd, aiosmtplib, stdlib_email
    from gateway.logging import get_logger

    log = get_logger()
    for status in (aiosmtpd.STATUS, aiosmtplib.STATUS, stdlib_email.STATUS):
        log.event("fastpaths", library=status.library, version=status.version,
                  active=status.active, reason=status.reason)
