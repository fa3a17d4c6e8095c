"""Turn bytes of a declared (often wrong, sometimes invented) charset into text.

Mail in the wild lies about its charset all the time: UTF-8 declared as
ISO-8859-1, Windows-1252 declared as UTF-8, made-up names like ``x-foo``.
The policies only need *the words the recipient sees*, so every function here
returns text and never raises; undecodable bytes become U+FFFD or their
Windows-1252 reading, whichever a mail client would most likely show.
"""

from __future__ import annotations

import codecs

__all__ = ["decode_bytes", "normalise_charset"]

_FALLBACK_HANDLER = "gateway-mime-cp1252-fallback"


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    # Mixed UTF-8 / Windows-1252 bodies are common (a UTF-8 template with a
    # pasted Latin-1 footer). Reading each invalid byte as Windows-1252 keeps
    # the umlauts of such a footer readable instead of turning them into U+FFFD.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return bytes(bad).decode("cp1252", errors="replace"), exc.end


codecs.register_error(_FALLBACK_HANDLER, _cp1252_fallback)

# WHATWG maps these labels to a superset that mail clients actually use; the
# strict Python codecs would turn e.g. "€" (0x80) into U+FFFD.
_SUPERSETS: dict[str, str] = {
    "ascii": "cp1252",
    "iso8859-1": "cp1252",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc_kr": "cp949",
    "shift_jis": "cp932",
}

# Python ships codecs that are not charsets a mail client knows. Decoding with
# them would let a sender show us words the recipient never sees (e.g.
# charset=unicode_escape turns the literal "\u0075nsubscribe" into a keyword).
_NOT_MAIL_CHARSETS = frozenset(
    {
        "undefined",
        "unicode-escape",
        "raw-unicode-escape",
        "unicode-internal",
        "idna",
        "punycode",
        "charmap",
        "escape",
        "palmos",
    }
)

# Single-byte western charsets that senders declare by habit while the bytes
# are really UTF-8.
_OFTEN_MISLABELLED = frozenset({"cp1252", "iso8859-15", "mac-roman"})


def normalise_charset(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None if unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    if not label:
        return None
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_MAIL_CHARSETS:
        return None
    return _SUPERSETS.get(info.name, info.name)


def _looks_like_utf8(data: bytes) -> bool:
    # Only a *non-ASCII* valid UTF-8 sequence is evidence: pure ASCII decodes
    # the same in every candidate charset.
    if data.isascii():
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` declared as ``charset`` the way a tolerant client would.

    Unknown, missing or ASCII charsets are read as UTF-8 with a Windows-1252
    fallback per invalid byte; Latin-1-ish labels on valid UTF-8 are read as
    UTF-8; anything else uses the declared codec with replacement characters.
    """
    codec = normalise_charset(charset)
    if codec is None or codec == "utf-8":
        return data.decode("utf-8", errors=_FALLBACK_HANDLER)
    if codec in _OFTEN_MISLABELLED and _looks_like_utf8(data):
        return data.decode("utf-8")
    try:
        return data.decode(codec, errors="replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        # Stateful/broken codecs can still blow up on garbage input.
        return data.decode("utf-8", errors=_FALLBACK_HANDLER)
