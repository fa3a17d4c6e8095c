"""Small text helpers shared by the built-in policies (not a policy itself)."""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from email.message import Message

from gateway.core.transaction import Transaction
from gateway.mime.parts import TextPart, body_alternatives

_UNPRINTABLE = re.compile(r"[^\x21-\x7e]")


def shown(value: str, limit: int = 64) -> str:
    """A client-supplied value made safe to echo in a one-line ASCII SMTP reply."""
    clean = _UNPRINTABLE.sub("?", value.strip())
    return clean if len(clean) <= limit else clean[:limit] + "..."


def part_name(part: TextPart, parts: Sequence[TextPart]) -> str:
    """How a client text names a body part: 'HTML part', 'text/plain part (MIME part 1.2)'."""
    kind = "HTML" if part.content_type == "text/html" else "text/plain"
    same = sum(1 for p in parts if p.content_type == part.content_type)
    return f"{kind} part" + (f" (MIME part {part.path})" if same > 1 else "")


def join_parts(names: Sequence[str]) -> str:
    """'the HTML part', 'the text/plain and HTML parts', 'the A, B and C parts'."""
    if len(names) == 1:
        return f"the {names[0]}"
    bare = [n.removesuffix(" part") if n.endswith(" part") else n for n in names]
    return "the " + ", ".join(bare[:-1]) + f" and {bare[-1]} parts"


def clip(text: str, limit: int = 400) -> str:
    """Keep a client text within one SMTP reply line (512 octets with code and policy name)."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


# Decoded body parts per parsed message, shared by the policies that read the body
# (unsubscribe, imprint) instead of decoding every part once per policy. Keyed on the
# parsed message object, weakly: Transaction parses anew when its bytes change, and
# policies never modify the parsed message.
_BODY_PARTS: weakref.WeakKeyDictionary[Message, tuple[TextPart, ...]] = weakref.WeakKeyDictionary()


def body_parts(txn: Transaction) -> list[TextPart]:
    """``body_alternatives(txn.message)``, decoded once per message."""
    message = txn.message
    parts = _BODY_PARTS.get(message)
    if parts is None:
        parts = _BODY_PARTS[message] = tuple(body_alternatives(message))
    return list(parts)
