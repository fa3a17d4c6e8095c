"""The one switch of the fast paths and the version check each of them passes first.

A leaf module: the fast-path modules of each library import it, and it imports none of them
(nor anything else of the gateway).
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


def decide(library: str, written_for: tuple[Version, Version], installed: str | None = None) -> Status:
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
        return Status(library, installed, False, f"written for {library}{span}; the library's own code runs")
    return Status(library, installed, True, f"written for {library}{span}")
