"""What the engine decided for a message at the end of DATA, as edits every transport can apply.

The engine never hands a transport finished bytes: it returns a `Plan`, the reply plus the
ordered edits, and each transport applies them its own way. The SMTP proxy renders them onto
the client's bytes (`render`); the milter turns each edit into milter actions (header change,
header insert, sender change), so nothing has to be recovered by comparing bytes.

The edits, in the order they apply:

- `RemoveHeader(name)`: every field of that name the client wrote, whatever its case or
  folding. All removals come first, so a removal never touches a header the gateway adds.
- `AddHeader(name, value)`: one field put on top of the header block as it stands, so the
  last one added ends up first. The gateway's headers come first in the plan, then each
  DKIM-Signature: computed over the message with every earlier edit applied, it is the last
  edit to the header and lands on top, where a verifier expects it.
- `ChangeSender(address)`: the envelope sender to relay with (VERP, `bounce_domain`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.core.message import header_fields, prepend, split_message
from gateway.core.verdict import Reply

# RFC 5322 field name: printable ASCII but the colon (and so no space or control character).
_FIELD_NAME = re.compile(r"[!-9;-~]+")


class EditRefused(ValueError):
    """An edit that would write something other than one header field or one address (a
    policy's header mutation with a line break in it, say): the message is not relayed."""


def _well_folded(value: str) -> bool:
    """A value may be folded (CRLF followed by a space or tab) but may hold no other line break
    and no NUL: a bare one would start a header field (or a body) the engine never decided on,
    and the milter protocol ends its strings at NUL. Counted, not searched: a DKIM signature
    is checked ~20x faster than with a regex."""
    if "\x00" in value:
        return False
    if "\r" not in value and "\n" not in value:
        return True
    folds = value.count("\r\n")
    return (
        value.count("\r") == folds
        and value.count("\n") == folds
        and value.count("\r\n ") + value.count("\r\n\t") == folds
    )


@dataclass(frozen=True)
class RemoveHeader:
    """Remove every field of this name (case-insensitive) the client wrote."""

    name: str

    def __post_init__(self) -> None:
        if not _FIELD_NAME.fullmatch(self.name):
            raise EditRefused(f"not a header field name: {self.name!r}")

    @property
    def key(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class AddHeader:
    """Put `Name: value` on top of the header block (value already folded if long)."""

    name: str
    value: str

    def __post_init__(self) -> None:
        if not _FIELD_NAME.fullmatch(self.name):
            raise EditRefused(f"not a header field name: {self.name!r}")
        if not _well_folded(self.value):
            raise EditRefused(f"{self.name}: line break or NUL in a header value")

    def field(self) -> bytes:
        """The field as it is written into the message, CRLF-terminated."""
        return f"{self.name}: {self.value}\r\n".encode()


@dataclass(frozen=True)
class ChangeSender:
    """Relay with this envelope sender instead of the client's MAIL FROM."""

    address: str

    def __post_init__(self) -> None:
        if any(c in self.address for c in "\r\n<>\x00"):
            raise EditRefused(f"not an envelope sender: {self.address!r}")


Edit = RemoveHeader | AddHeader | ChangeSender


@dataclass(frozen=True)
class Plan:
    """The engine's answer to the end of DATA: the reply, and on a pass the edits to apply."""

    reply: Reply
    edits: tuple[Edit, ...] = ()
    mail_from: str = ""  # the client's MAIL FROM
    decisions: Sequence[Any] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        added = False
        for edit in self.edits:
            if isinstance(edit, AddHeader):
                added = True
            elif isinstance(edit, RemoveHeader) and added:
                # Would a removal after an addition drop the gateway's own header? Not allowed
                # to be a question: removals come first.
                raise ValueError("a RemoveHeader after an AddHeader")

    @property
    def ok(self) -> bool:
        return 200 <= self.reply.code < 300

    @property
    def envelope_sender(self) -> str:
        """The envelope sender to relay with."""
        changes = [e.address for e in self.edits if isinstance(e, ChangeSender)]
        return changes[-1] if changes else self.mail_from

    @property
    def header_edits(self) -> tuple[RemoveHeader | AddHeader, ...]:
        return tuple(e for e in self.edits if not isinstance(e, ChangeSender))


def present(raw: bytes, names: Iterable[str]) -> list[RemoveHeader]:
    """A RemoveHeader for each of `names` the message has a field of, in message order (names
    the client did not write would be edits without an effect)."""
    wanted = {n.lower(): n for n in names}
    found: dict[str, RemoveHeader] = {}
    for key, _ in _fields_of(raw)[1]:
        if key in wanted and key not in found:
            found[key] = RemoveHeader(wanted[key])
    return list(found.values())


# The header fields of the last message asked about, by object: the engine plans, renders to
# sign and the proxy renders again the same client bytes (immutable, so the answer holds).
_last_fields: tuple[bytes, int, list[tuple[str, bytes]]] = (b"", 0, [])


def _fields_of(raw: bytes) -> tuple[int, list[tuple[str, bytes]]]:
    """(length of the header block, its fields as gateway.core.message.header_fields)."""
    global _last_fields
    last, length, fields = _last_fields
    if last is raw:
        return length, fields
    header_block, _ = split_message(raw)
    fields = header_fields(header_block)
    if type(raw) is bytes:
        _last_fields = (raw, len(header_block), fields)
    return len(header_block), fields


def render(raw: bytes, edits: Iterable[Edit]) -> bytes:
    """`raw` with the header edits applied (ChangeSender is the envelope's, not the bytes').

    One copy of the message whatever the edits; the body and every kept field stay
    byte-identical.
    """
    removed: set[str] = set()
    added: list[bytes] = []
    for edit in edits:
        if isinstance(edit, RemoveHeader):
            removed.add(edit.key)
        elif isinstance(edit, AddHeader):
            added.append(edit.field())
    prefix = b"".join(reversed(added))  # each addition goes on top of the previous ones
    if removed:
        header_length, fields = _fields_of(raw)
        if any(key in removed for key, _ in fields):
            kept = [raw_field for key, raw_field in fields if key not in removed]
            return prepend(b"".join([prefix, *kept]), raw, header_length)
    if not prefix:
        return raw
    # prepend: the bare-line-ending check of `raw` carries over to the result (no recount).
    return prepend(prefix, raw)


def removed_fields(raw: bytes, edits: Iterable[Edit]) -> list[str]:
    """The names, as the client wrote them, of every field the edits remove, in message order."""
    removed = {e.key for e in edits if isinstance(e, RemoveHeader)}
    return [
        raw_field.split(b":", 1)[0].strip().decode("ascii", "replace")
        for key, raw_field in _fields_of(raw)[1]
        if key in removed
    ]


def added_on_top(edits: Iterable[Edit]) -> list[AddHeader]:
    """The added fields as they stand in the result, top first."""
    return [e for e in reversed(list(edits)) if isinstance(e, AddHeader)]


def fields_to_add(block: bytes) -> list[AddHeader]:
    """AddHeader edits that put `block` (CRLF-terminated `Name: value` fields, e.g. DKIM
    signatures, top first) on top of the header block as it is."""
    edits = []
    for key, raw_field in header_fields(block):
        name, sep, rest = raw_field.partition(b":")
        if not key or not sep or not rest.startswith(b" ") or not rest.endswith(b"\r\n"):
            raise ValueError(f"not a header field: {raw_field[:60]!r}")
        edits.append(AddHeader(name.decode("ascii"), rest[1:-2].decode("ascii")))
    return list(reversed(edits))
