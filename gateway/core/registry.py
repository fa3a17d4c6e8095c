"""Policy discovery through the `gateway.policies` entry-point group.

A third-party package adds a policy by declaring an entry point in that group; nothing in this
repository changes. Two policies with the same name stop the start: silently picking one would
let a plugin shadow a compliance rule.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from gateway.core.policy import Policy

GROUP = "gateway.policies"


class RegistryError(Exception):
    pass


def discover(extra: list[type[Policy]] | None = None) -> dict[str, type[Policy]]:
    found: dict[str, type[Policy]] = {}
    origins: dict[str, str] = {}

    def add(cls: type[Policy], origin: str) -> None:
        if not isinstance(cls, type) or not issubclass(cls, Policy) or not cls.name:
            raise RegistryError(f"{origin} is not a gateway policy class")
        if cls.name in found and found[cls.name] is not cls:
            raise RegistryError(f"duplicate policy name {cls.name!r}: {origins[cls.name]} and {origin}")
        found[cls.name] = cls
        origins[cls.name] = origin

    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must say which one
            raise RegistryError(f"cannot load policy entry point {ep.name!r} ({ep.value}): {exc}") from exc
        add(cls, f"{ep.value}")
    for cls in extra or []:
        add(cls, f"{cls.__module__}.{cls.__qualname__}")
    return found
