"""Per-connection set-up of aiosmtpd without the introspection.

aiosmtpd's `SMTP.__init__` runs `inspect.getmembers` and `dir()` over the protocol and the
handler, and `inspect.signature` over the EHLO hook, for every connection (~100-200 µs of CPU)
to find the same methods of the same classes again. It only keeps the members whose names
start with "auth_", "handle_" or "smtp_". The stand-ins below give it exactly those members
from a per-class cache. `install()` puts them into aiosmtpd's module namespace, where its
`__init__` looks the names up (a module global shadows the builtin `dir` there); nothing else
of aiosmtpd changes.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

# The only members aiosmtpd's __init__ looks for (smtp.py: auth_*, handle_*, smtp_*).
_PREFIXES = ("auth_", "handle_", "smtp_")
_names_by_type: dict[type, tuple[str, ...]] = {}


def _member_names(obj: Any) -> tuple[str, ...]:
    cls = type(obj)
    names = _names_by_type.get(cls)
    if names is None:
        names = tuple(name for name in dir(cls) if name.startswith(_PREFIXES))
        _names_by_type[cls] = names
    return names


@functools.lru_cache(maxsize=256)
def _signature(func: Any) -> inspect.Signature:
    return inspect.signature(func)


class _CachedInspect:
    """The slice of `inspect` aiosmtpd uses: getmembers and signature, from caches."""

    @staticmethod
    def getmembers(obj: Any) -> list[tuple[str, Any]]:
        return [(name, getattr(obj, name)) for name in _member_names(obj)]

    @staticmethod
    def signature(obj: Any) -> inspect.Signature:
        func = getattr(obj, "__func__", None)
        if func is None:
            return inspect.signature(obj)
        # A bound method: the function's signature without its first parameter.
        params = list(_signature(func).parameters.values())[1:]
        return _signature(func).replace(parameters=params)

    def __getattr__(self, name: str) -> Any:
        return getattr(inspect, name)


def _cached_dir(obj: Any) -> list[str]:
    return list(_member_names(obj))


def install() -> None:
    import aiosmtpd.smtp as aiosmtpd_smtp

    aiosmtpd_smtp.inspect = _CachedInspect()  # type: ignore[assignment]
    aiosmtpd_smtp.dir = _cached_dir  # type: ignore[attr-defined]
