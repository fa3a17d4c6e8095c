"""Verdicts: what a policy decided (detection) kept apart from what the mode makes of it."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Action(enum.IntEnum):
    # Ordered by strictness: at DATA the strictest verdict of all policies wins.
    CONTINUE = 0
    TEMPFAIL = 1
    REJECT = 2


@dataclass(frozen=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.enhanced} {self.text}"

    @classmethod
    def parse(cls, line: str) -> Reply:
        """'451 4.3.5 text' -> Reply; used for on_error strings in config."""
        parts = line.split(" ", 2)
        code = int(parts[0])
        if len(parts) >= 2 and _looks_enhanced(parts[1]):
            return cls(code, parts[1], parts[2] if len(parts) > 2 else "")
        return cls(code, f"{code // 100}.0.0", " ".join(parts[1:]))

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500


def _looks_enhanced(token: str) -> bool:
    bits = token.split(".")
    return len(bits) == 3 and all(b.isdigit() for b in bits) and bits[0] in ("2", "4", "5")


@dataclass(frozen=True)
class HeaderMutation:
    """A header to add (prepended, above the client's headers) or remove, applied after a pass."""

    name: str
    value: str | None = None  # None: remove every header of that name
    op: str = "add"  # add | remove


@dataclass(frozen=True)
class Verdict:
    action: Action
    reply: Reply | None = None
    reason: str = ""
    policy: str = ""
    mutations: tuple[HeaderMutation, ...] = field(default_factory=tuple)

    @classmethod
    def ok(cls, reason: str = "", mutations: tuple[HeaderMutation, ...] = ()) -> Verdict:
        return cls(Action.CONTINUE, None, reason, mutations=mutations)

    @classmethod
    def reject(cls, text: str, reason: str = "", *, code: int = 550, enhanced: str = "5.7.1") -> Verdict:
        return cls(Action.REJECT, Reply(code, enhanced, text), reason or text)

    @classmethod
    def tempfail(cls, text: str, reason: str = "", *, code: int = 451, enhanced: str = "4.3.5") -> Verdict:
        return cls(Action.TEMPFAIL, Reply(code, enhanced, text), reason or text)

    @property
    def passed(self) -> bool:
        return self.action is Action.CONTINUE
