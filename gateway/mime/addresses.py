"""Mailbox headers: parse them tolerantly and spot display names that disguise the sender.

§6 Abs. 2 DDG forbids disguising the sender. We do not judge brands ("PayPal
<x@shop.example>" passes); we refuse a display name that *shows an address or
domain* which is not the sending one ("service@paypal.com <x@shop.example>").
"""

from __future__ import annotations

import re
import unicodedata
from email.header import Header, decode_header
from email.utils import getaddresses

from gateway.mime.charset import decode_bytes

__all__ = [
    "display_name_disguise",
    "domain_of",
    "is_subdomain_or_same",
    "local_part_disguise",
    "normalise_domain",
    "parse_mailbox",
]

# Characters that render as nothing but split what a regex sees.
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
_LABEL = r"[a-z0-9\u00a1-\uffff](?:[a-z0-9\u00a1-\uffff-]{0,61}[a-z0-9\u00a1-\uffff])?"
_EMAIL_IN_NAME = re.compile(
    rf"[^\s<>\"'(),;:@\[\]]+@((?:{_LABEL}\.)+(?:[a-z\u00a1-\uffff]{{2,63}}|xn--[a-z0-9-]{{1,59}}))",
    re.IGNORECASE,
)
_DOMAIN_IN_NAME = re.compile(
    rf"(?<![\w@.-])((?:{_LABEL}\.)+([a-z\u00a1-\uffff]{{2,63}}|xn--[a-z0-9-]{{1,59}}))(?![\w@-]|\.\w)",
    re.IGNORECASE,
)
# Bare words like "Co.KG" or "Dr.Med" look like domains; only treat a token as
# a domain when its TLD is a generic one, or a two-letter country code after
# a label of at least three characters ("paypal.de", not "Co.KG").
_GENERIC_TLDS = frozenset(
    """
    com net org info biz name pro mobi aero asia cat coop edu gov int jobs mil museum tel travel
    app dev io ai co me tv cc ly to gg sh ws xyz top site online store shop web website page link
    click email mail support help services service solutions company business agency digital media
    network group global world center today news blog cloud tech systems software bank finance money
    pay insurance secure security login account accounts verify review delivery express
    example test invalid localhost
    """.split()
)


def _unsurrogate(text: str) -> str:
    # compat32 keeps raw 8-bit header bytes as lone surrogates; show them as
    # the client would (UTF-8 usually, Windows-1252 otherwise).
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    return decode_bytes(text.encode("utf-8", errors="surrogateescape"), None)


def _decode_words(name: str) -> str:
    """Decode RFC 2047 encoded words in a display name; never raises."""
    if "=?" not in name:
        return name
    try:
        chunks = decode_header(name)
    except Exception:  # garbage encoded words: keep the raw text
        return name
    decoded = []
    for chunk, charset in chunks:
        if isinstance(chunk, bytes):
            decoded.append(decode_bytes(chunk, charset))
        else:
            decoded.append(chunk)
    return " ".join("".join(decoded).split())


def _header_text(value: object) -> str:
    # str() of a compat32 Header holding raw 8-bit bytes yields U+FFFD; its
    # chunks still have the bytes.
    if isinstance(value, Header):
        try:
            chunks = decode_header(value)
        except Exception:
            return str(value)
        return "".join(decode_bytes(c, cs) if isinstance(c, bytes) else c for c, cs in chunks)
    return _unsurrogate(str(value))


def parse_mailbox(header_value: str | Header | None) -> list[tuple[str, str]]:
    """``(display name, address)`` pairs of an address header, names decoded.

    Accepts str or compat32 ``Header`` objects; garbage gives whatever
    ``getaddresses`` salvages, never an exception. Empty entries (from group
    syntax like "undisclosed-recipients:;") are dropped.
    """
    if header_value is None:
        return []
    value = _header_text(header_value)
    try:
        pairs = getaddresses([value])
    except Exception:  # the stdlib parser has raised on crafted input before
        return []
    result = []
    for name, addr in pairs:
        name = _decode_words(_unsurrogate(name)).strip()
        addr = addr.strip()
        if name or addr:
            result.append((name, addr))
    return result


def normalise_domain(domain: str) -> str:
    """Lower-case, without trailing dot, IDNA (xn--) form where possible."""
    domain = unicodedata.normalize("NFKC", domain.translate(_INVISIBLE)).strip().strip(".").lower()
    if not domain or domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def domain_of(addr: str) -> str:
    """Domain of an address, normalised (see :func:`normalise_domain`); '' if none."""
    if not addr or "@" not in addr:
        return ""
    domain = addr.rsplit("@", 1)[1].strip().rstrip(">").strip()
    return normalise_domain(domain)


def is_subdomain_or_same(domain: str, parent: str) -> bool:
    """``domain`` equals ``parent`` or lies below it (label-wise, not string-wise)."""
    domain, parent = normalise_domain(domain), normalise_domain(parent)
    if not domain or not parent:
        return False
    return domain == parent or domain.endswith("." + parent)


def _plausible_domain(domain: str, tld: str) -> bool:
    tld = tld.lower()
    if tld in _GENERIC_TLDS or tld.startswith("xn--"):
        return True
    if len(tld) == 2 and tld.isascii():
        return any(len(label) >= 3 for label in domain.split(".")[:-1])
    return False


def display_name_disguise(display_name: str, addr_domain: str) -> str | None:
    """The foreign address or domain shown in ``display_name``, or None.

    Foreign means neither ``addr_domain`` nor a subdomain of it. The name is
    NFKC-normalised first, so full-width "＠" and similar look-alikes count.
    """
    if not display_name:
        return None
    name = unicodedata.normalize("NFKC", display_name.translate(_INVISIBLE))
    for match in _EMAIL_IN_NAME.finditer(name):
        if not is_subdomain_or_same(match.group(1), addr_domain):
            return match.group(0)
    without_emails = _EMAIL_IN_NAME.sub(" ", name)
    for match in _DOMAIN_IN_NAME.finditer(without_emails):
        domain, tld = match.group(1), match.group(2)
        if _plausible_domain(domain, tld) and not is_subdomain_or_same(domain, addr_domain):
            return domain.lower()
    return None


def local_part_disguise(addr: str) -> str | None:
    """What the local part of ``addr`` shows that is not the address's own domain, or None.

    A quoted local part may hold anything, an address of another domain included:
    ``"news@shop.example"@demo.example`` reads as news@shop.example in a mail client, so it
    disguises the sender just as a display name would. Encoded words (RFC 2047 forbids them in
    an address, but some clients decode them anyway) are decoded first. A plain dot-atom local
    part ("first.last") is left alone: it cannot hold an "@", and "news.shop" is a name, not a
    domain.
    """
    if "@" not in addr:
        return None
    local, domain = addr.rsplit("@", 1)
    local = local.strip()
    quoted = local.startswith('"') and local.endswith('"') and len(local) >= 2
    if quoted:
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    elif "=?" not in local:
        return None
    shown = _decode_words(local)
    return display_name_disguise(shown, normalise_domain(domain))
