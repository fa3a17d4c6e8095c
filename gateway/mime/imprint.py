"""Is the customer's registered imprint (§5 DDG) in a body's visible text?

The record is master data from account review; the body is whatever the
customer's template produced. Matching therefore forgives what templates do
to text (case, whitespace, line breaks, punctuation, umlaut transcription,
"Straße"/"Str."), but not a different name, street or number.
"""

from __future__ import annotations

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

_TRANSCRIBE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "\u00a0": " "})
_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
# After folding, "Straße", "Strasse", "Str." and "Str" all become "str".
_STREET_SUFFIX = re.compile(r"strasse(?![a-z0-9])")
# Anything but letters, digits, "@" and "&" is layout, not content.
_PUNCT = re.compile(r"[^\w@&]+|_")
_SPLIT = re.compile(r"\d+|[^\W\d_]+|[@&]")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_INVISIBLE).casefold().translate(_TRANSCRIBE)
    text = _PUNCT.sub(" ", text)
    return _STREET_SUFFIX.sub("str", text)


def _tokens(value: str) -> list[str]:
    return _SPLIT.findall(_fold(value))


def _needle(value: str) -> re.Pattern[str] | None:
    """Regex for a record value in folded text: tokens in order, any spacing."""
    tokens = _tokens(value)
    if not tokens:
        return None
    body = r"\s*".join(re.escape(t) for t in tokens)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_])")


def _contains(folded_text: str, value: str) -> bool:
    needle = _needle(value)
    return needle is not None and needle.search(folded_text) is not None


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


def _has_postcode_and_city(folded_text: str, imprint: Imprint) -> bool:
    if not (imprint.postcode and imprint.city):
        return False
    # German order is "10115 Berlin"; international mail also writes "Berlin 10115".
    return _contains(folded_text, f"{imprint.postcode} {imprint.city}") or _contains(
        folded_text, f"{imprint.city} {imprint.postcode}"
    )


def _has_email(text: str, email: str | None) -> bool:
    if not email or "@" not in email:
        return False
    address = re.escape(email.strip().casefold())
    pattern = rf"(?<![\w.+\-]){address}(?![\w\-]|\.\w)"
    return re.search(pattern, text.translate(_INVISIBLE).casefold()) is not None


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
    folded = _fold(visible_text)
    missing = []
    company = _company_value(imprint)
    if company is None or not _contains(folded, company):
        missing.append(FIELD_COMPANY)
    if not imprint.street or not _contains(folded, imprint.street):
        missing.append(FIELD_STREET)
    if not _has_postcode_and_city(folded, imprint):
        missing.append(FIELD_POSTCODE_CITY)
    if not (_has_email(visible_text, imprint.email) or _has_phone(visible_text, imprint.phone)):
        missing.append(FIELD_CONTACT)
    return missing
