"""Is the customer's registered imprint (§5 DDG) in a body's visible text?

The record is master data from account review; the body is whatever the
customer's template produced. Matching therefore forgives what templates do
to text (case, whitespace, line breaks, punctuation, umlaut transcription,
"Straße"/"Str."), but not a different name, street or number.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, fields

__all__ = [
    "FIELD_COMPANY",
    "FIELD_CONTACT",
    "FIELD_POSTCODE_CITY",
    "FIELD_STREET",
    "IMPRINT_FIELDS",
    "Imprint",
    "incomplete_imprint",
    "missing_imprint_fields",
]

IMPRINT_FIELDS: tuple[str, ...] = (
    "company",
    "legal_form",
    "representative",
    "street",
    "postcode",
    "city",
    "country",
    "email",
    "phone",
    "register_court",
    "register_number",
    "vat_id",
)

# Human names reported to the customer in the 550 text.
FIELD_COMPANY = "company name"
FIELD_STREET = "street"
FIELD_POSTCODE_CITY = "postcode and city"
FIELD_CONTACT = "contact (email or phone)"

_MIN_PHONE_DIGITS = 6


@dataclass
class Imprint:
    """The imprint a customer registered at account review (those fields that apply)."""

    company: str | None = None
    legal_form: str | None = None
    representative: str | None = None
    street: str | None = None
    postcode: str | None = None
    city: str | None = None
    country: str | None = None
    email: str | None = None
    phone: str | None = None
    register_court: str | None = None
    register_number: str | None = None
    vat_id: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> Imprint:
        """Build from e.g. the YAML of ``gateway customer set-imprint``.

        Unknown keys and non-string values are rejected: a typo ("adress") or
        a YAML number (``postcode: 01067`` is the *octal* 567) would otherwise
        silently break every later check of this customer's mail.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"imprint must be a mapping of field -> text, not {type(data).__name__}")
        unknown = sorted(str(k) for k in data if k not in IMPRINT_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown imprint field(s): {', '.join(unknown)}; allowed: {', '.join(IMPRINT_FIELDS)}"
            )
        values: dict[str, str | None] = {}
        for key, value in data.items():
            if value is None:
                values[str(key)] = None
            elif isinstance(value, str):
                values[str(key)] = value.strip() or None
            else:
                raise ValueError(
                    f"imprint field {key!r} must be text, got {type(value).__name__} {value!r}"
                    ' (quote it in YAML, e.g. postcode: "01067")'
                )
        return cls(**values)

    def to_mapping(self) -> dict[str, str]:
        """The fields that are set, for storage or display."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


def incomplete_imprint(imprint: Imprint) -> list[str]:
    """Human names of the required parts the *record* itself lacks.

    For account review: such a record can never be matched, so
    :func:`missing_imprint_fields` would reject every message of the customer.
    """
    missing = []
    if not imprint.company:
        missing.append(FIELD_COMPANY)
    if not imprint.street:
        missing.append(FIELD_STREET)
    if not (imprint.postcode and imprint.city):
        missing.append(FIELD_POSTCODE_CITY)
    if not (imprint.email or _phone_key(imprint.phone or "")):
        missing.append(FIELD_CONTACT)
    return missing


# -- normalisation --------------------------------------------------------------
# A record value matches when its tokens appear in order in the "folded" body text
# (_fold): NFC, invisible characters dropped, casefolded, umlauts transcribed, every
# run of layout characters made one space, "strasse" shortened to "str".
#
# Folding a whole 10 KB body that way costs ~1 ms (dict-based str.translate and the
# layout regex substitute character by character), so bodies are only half-folded
# (_haystack: no layout step, and str.replace instead of str.translate) and each
# value's regex (_needle) accepts a run of layout characters wherever the folded
# text would have spaces. That finds a value exactly where the fully folded text
# would; tests/unit/test_mime_fastpaths.py checks it against the original functions.

_TRANSCRIPTIONS = (("ä", "ae"), ("ö", "oe"), ("ü", "ue"), ("ß", "ss"), ("\u00a0", " "))
_INVISIBLE_CHARS = "\u00ad\u200b\u200c\u200d\u2060\ufeff"
# What folding does with them, as str.translate tables; _transcribe and
# _without_invisible below do the same faster.
_TRANSCRIBE = str.maketrans(dict(_TRANSCRIPTIONS))
_INVISIBLE = dict.fromkeys(map(ord, _INVISIBLE_CHARS), None)
# After folding, "Straße", "Strasse", "Str." and "Str" all become "str".
_STREET_SUFFIX = re.compile(r"strasse(?![a-z0-9])")
# Anything but letters, digits, "@" and "&" is layout, not content.
_PUNCT = re.compile(r"[^\w@&]+|_")
_LAYOUT_RUN = r"(?:[^\w@&]|_)*"  # what _PUNCT turns into spaces, on unfolded text
_SPLIT = re.compile(r"\d+|[^\W\d_]+|[@&]")


def _without_invisible(text: str) -> str:
    # Same as text.translate(_INVISIBLE), but str.translate with a dict costs ~50 ns
    # per character of non-ASCII text; these characters are rare, and looking for
    # each one is a C-speed scan.
    for ch in _INVISIBLE_CHARS:
        if ch in text:
            text = text.replace(ch, "")
    return text


def _transcribe(text: str) -> str:
    # Same as text.translate(_TRANSCRIBE): no replacement contains a character
    # that is replaced, so replacing one after the other gives the same result.
    for ch, replacement in _TRANSCRIPTIONS:
        if ch in text:
            text = text.replace(ch, replacement)
    return text


def _latin1_casefold() -> tuple[bytes, tuple[tuple[str, str], ...]]:
    # str.casefold works character by character. For all but two Latin-1
    # characters the result is one Latin-1 character: a bytes.translate table.
    table = bytearray(range(256))
    special = []
    for code in range(256):
        folded = chr(code).casefold()
        if len(folded) == 1 and ord(folded) < 256:
            table[code] = ord(folded)
        else:
            special.append((chr(code), folded))  # "ß" -> "ss", "µ" -> "μ"
    return bytes(table), tuple(special)


_LATIN1_CASEFOLD, _LATIN1_CASEFOLD_SPECIAL = _latin1_casefold()
_LATIN1_INVISIBLE = "".join(ch for ch in _INVISIBLE_CHARS if ch < "\u0100").encode("latin-1")


def _casefolded(text: str) -> tuple[str, bool]:
    """``(NFC(text).translate(_INVISIBLE).casefold(), whether text is NFC)``.

    Text of Latin-1 characters only (most Western mail) takes a C-speed shortcut:
    it is always NFC (there are no combining characters below U+0100), and
    bytes.translate casefolds it ~10x faster than str.casefold. Tests compare both.
    """
    try:
        data = text.encode("latin-1")
    except UnicodeEncodeError:
        nfc = unicodedata.normalize("NFC", text)
        return _without_invisible(nfc).casefold(), nfc == text
    folded = data.translate(_LATIN1_CASEFOLD, _LATIN1_INVISIBLE).decode("latin-1")
    for ch, replacement in _LATIN1_CASEFOLD_SPECIAL:
        if ch in folded:
            folded = folded.replace(ch, replacement)
    return folded, True


def _fold(text: str) -> str:
    text = _PUNCT.sub(" ", _transcribe(_casefolded(text)[0]))
    return _STREET_SUFFIX.sub("str", text)


def _haystack(casefolded: str) -> str:
    """``_fold`` without its layout step, from ``_casefolded(text)``.

    _PUNCT only turns runs of non-letters into spaces and _STREET_SUFFIX only
    looks at letters and at whether a digit or ASCII letter follows (a space from
    _PUNCT is neither), so shortening "strasse" before or after the layout step is
    the same, and _fold(text) == _PUNCT.sub(" ", _haystack(_casefolded(text)[0])).
    """
    return _STREET_SUFFIX.sub("str", _transcribe(casefolded))


@functools.lru_cache(maxsize=1024)
def _tokens(value: str) -> tuple[str, ...]:
    return tuple(_SPLIT.findall(_fold(value)))


@functools.lru_cache(maxsize=1024)
def _needle(value: str) -> re.Pattern[str] | None:
    r"""Regex for a record value in a _haystack: its tokens in order, with only
    layout between them, not inside a longer word or number.

    On fully folded text that is ``(?<![^\W_])t1\s*t2...(?![^\W_])``. Tokens are
    letters, digits, "@" or "&", which folding keeps, and a gap of spaces there is a
    run of _LAYOUT_RUN characters here. The first token comes first and the
    lookbehind after it (same check: what precedes the token is no letter or digit)
    so that the regex engine finds candidates by a fast literal scan.
    """
    tokens = _tokens(value)
    if not tokens:
        return None
    first = rf"{re.escape(tokens[0])}(?<![^\W_](?s:.){{{len(tokens[0])}}})"
    body = _LAYOUT_RUN.join([first, *(re.escape(t) for t in tokens[1:])])
    return re.compile(rf"{body}(?![^\W_])")


def _contains(haystack: str, value: str) -> bool:
    needle = _needle(value)
    return needle is not None and needle.search(haystack) is not None


# -- the individual checks ------------------------------------------------------------


def _company_value(imprint: Imprint) -> str | None:
    company = (imprint.company or "").strip()
    if not company:
        return None
    legal_form = (imprint.legal_form or "").strip()
    # "Muster GmbH" registered with legal form "GmbH" must not need "GmbH GmbH".
    form_tokens = _tokens(legal_form)
    if form_tokens and _tokens(company)[-len(form_tokens) :] != form_tokens:
        return f"{company} {legal_form}"
    return company


def _has_postcode_and_city(haystack: str, imprint: Imprint) -> bool:
    if not (imprint.postcode and imprint.city):
        return False
    # German order is "10115 Berlin"; international mail also writes "Berlin 10115".
    return _contains(haystack, f"{imprint.postcode} {imprint.city}") or _contains(
        haystack, f"{imprint.city} {imprint.postcode}"
    )


@functools.lru_cache(maxsize=1024)
def _email_needle(address: str) -> re.Pattern[str]:
    # (?<![\w.+\-])ADDRESS(?![\w\-]|\.\w), with the lookbehind moved after the
    # address (see _needle) for the fast literal scan.
    literal = re.escape(address)
    return re.compile(rf"{literal}(?<![\w.+\-](?s:.){{{len(address)}}})(?![\w\-]|\.\w)")


def _has_email(casefolded: str, email: str | None) -> bool:
    """``email`` in ``text.translate(_INVISIBLE).casefold()`` (given), standing alone."""
    if not email or "@" not in email:
        return False
    return _email_needle(email.strip().casefold()).search(casefolded) is not None


_PHONE_CANDIDATE = re.compile(r"\+?\d[\d\s/().+\-\u2010-\u2015]*\d")
_DIGIT_GROUP = re.compile(r"\+?\d+")
# A phone number is at most this many digit groups ("+49 (0) 30 123 45 67").
_MAX_PHONE_GROUPS = 8
# Bounds the work on bodies that are mostly digits.
_MAX_PHONE_TRIES = 50_000


def _phone_key(phone: str) -> str:
    """Comparable digits: national German form ("0301234") for +49/0049 numbers.

    "+49 (0)30 123-45", "0049 30 12345" and "030/12345" all give "03012345".
    Other international numbers keep their country code ("0043...").
    """
    raw = phone.strip().replace("(0)", "")
    digits = re.sub(r"\D", "", raw)
    if raw.startswith("+"):
        digits = "00" + digits
    if digits.startswith("0049"):
        digits = "0" + digits[4:].lstrip("0")
    return digits if len(digits) >= _MIN_PHONE_DIGITS else ""


def _has_phone(text: str, phone: str | None) -> bool:
    key = _phone_key(phone or "")
    if not key:
        return False
    tries = 0
    for match in _PHONE_CANDIDATE.finditer(text):
        chunk = match.group()
        groups = list(_DIGIT_GROUP.finditer(chunk))
        # Separators may glue the number to a neighbouring postcode or fax
        # number, so try every run of consecutive digit groups that could
        # start a number (national "0..." or international "+"/"00").
        for i, first in enumerate(groups):
            if not first.group().startswith(("+", "0")):
                continue
            for last in groups[i : i + _MAX_PHONE_GROUPS]:
                tries += 1
                if tries > _MAX_PHONE_TRIES:
                    return False
                candidate = _phone_key(chunk[first.start() : last.end()])
                if candidate == key:
                    return True
                if len(candidate) > len(key) + 4:
                    break
    return False


def missing_imprint_fields(visible_text: str, imprint: Imprint) -> list[str]:
    """Which required imprint parts are not in ``visible_text`` (empty list: all there).

    Required per RULES.md: company name (with legal form if registered), street,
    postcode + city, and one contact (email or phone). A part the record
    itself lacks counts as missing, so an incomplete record fails closed.
    """
    casefolded, is_nfc = _casefolded(visible_text)
    haystack = _haystack(casefolded)
    missing = []
    company = _company_value(imprint)
    if company is None or not _contains(haystack, company):
        missing.append(FIELD_COMPANY)
    if not imprint.street or not _contains(haystack, imprint.street):
        missing.append(FIELD_STREET)
    if not _has_postcode_and_city(haystack, imprint):
        missing.append(FIELD_POSTCODE_CITY)
    # The email is looked for in the text as given, not NFC-normalised: reuse the
    # casefolded text unless normalising changed something (rare).
    if not is_nfc:
        casefolded = _without_invisible(visible_text).casefold()
    if not (_has_email(casefolded, imprint.email) or _has_phone(visible_text, imprint.phone)):
        missing.append(FIELD_CONTACT)
    return missing
