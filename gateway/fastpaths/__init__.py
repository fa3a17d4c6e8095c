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

from importlib import metadata

from gateway.fastpaths.switch import SWITCH, Status, Version, decide, switched_off

__all__ = ["SWITCH", "Status", "Version", "configure", "decide", "log_status", "metadata", "switched_off"]


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
        log.event(
            "fastpaths",
            library=status.library,
            version=status.version,
            active=status.active,
            reason=status.reason,
        )
