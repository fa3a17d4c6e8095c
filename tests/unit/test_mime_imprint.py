"""gateway.mime.imprint: is the registered imprint in a body's visible text?"""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path

import pytest

from gateway.mime.html import visible_text
from gateway.mime.imprint import (
    FIELD_COMPANY,
    FIELD_CONTACT,
    FIELD_POSTCODE_CITY,
    FIELD_STREET,
    IMPRINT_FIELDS,
    Imprint,
    incomplete_imprint,
    missing_imprint_fields,
)
from gateway.mime.parts import TextPart, body_alternatives

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"

MUSTER = Imprint(
    company="Muster Handels",
    legal_form="GmbH & Co. KG",
    representative="Erika Mustermann",
    street="Hauptstraße 5",
    postcode="10115",
    city="Berlin",
    country="DE",
    email="info@muster-handels.example",
    phone="+49 30 1234567",
)
MUELLER = Imprint(
    company="Mueller & Soehne GmbH",
    street="Grosse Str. 12",
    postcode="80331",
    city="Muenchen",
    email="kontakt@mueller-soehne.example",
)


def seen(part: TextPart) -> str:
    # What the policies hand in: visible text for HTML, the text itself otherwise.
    return visible_text(part.text) if part.content_type == "text/html" else part.text


def missing_per_part(name: str, imprint: Imprint, *, crlf: bool = False) -> dict[str, list[str]]:
    raw = (FIXTURES / name).read_bytes()
    if crlf:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
    return {p.path: missing_imprint_fields(seen(p), imprint) for p in body_alternatives(msg)}


CONTACT_ONLY = [FIELD_CONTACT]
NOTHING = [FIELD_COMPANY, FIELD_STREET, FIELD_POSTCODE_CITY, FIELD_CONTACT]

FIXTURE_CASES = [
    ("plain.eml", MUSTER, {"1": []}),  # "Hauptstr. 5", email
    ("alternative.eml", MUSTER, {"1": [], "2": []}),  # "030 / 123 45 67"; HTML entities and <br>
    ("mixed_pdf.eml", MUSTER, {"1.1": [], "1.2.1": []}),
    ("qp_soft_breaks.eml", MUSTER, {"1": []}),  # "Hauptstra=C3=9F=\ne 5", "Ber=\nlin", 030-1234567
    ("cp1252.eml", MUSTER, {"1": []}),  # "(030) 123 45 67"
    ("latin1.eml", MUSTER, {"1": CONTACT_ONLY}),  # address in ISO-8859-1, no contact at all
    ("html_base64.eml", MUSTER, {"1": CONTACT_ONLY}),
    ("unknown_charset.eml", MUSTER, {"1": CONTACT_ONLY}),
    ("wrong_charset_utf8_as_latin1.eml", MUSTER, {"1": CONTACT_ONLY}),
    ("wrong_charset_latin1_as_utf8.eml", MUSTER, {"1": CONTACT_ONLY}),
    ("unsub_html_only.eml", MUSTER, {"1": CONTACT_ONLY, "2": NOTHING}),
    ("imprint_umlauts.eml", MUELLER, {"1": []}),  # "MÜLLER & SÖHNE GMBH", "GROSSE STRASSE 12", "MÜNCHEN"
    ("imprint_umlauts.eml", MUSTER, {"1": NOTHING}),
]


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize(
    ("name", "imprint", "expected"), FIXTURE_CASES, ids=[f"{c[0]}-{c[1].company}" for c in FIXTURE_CASES]
)
def test_fixture(name: str, imprint: Imprint, expected: dict[str, list[str]], crlf: bool) -> None:
    assert missing_per_part(name, imprint, crlf=crlf) == expected


FULL = "Muster Handels GmbH & Co. KG\nHauptstraße 5\n10115 Berlin\ninfo@muster-handels.example"

TEXT_CASES = [
    (FULL, []),
    ("MUSTER HANDELS GMBH & CO. KG, HAUPTSTRASSE  5, 10115  BERLIN, INFO@MUSTER-HANDELS.EXAMPLE", []),
    ("Muster Handels GmbH&Co.KG · Hauptstr.5 · D-10115 Berlin · Tel. 030/1234567", []),
    ("Muster Handels\nGmbH & Co KG\nHaupt str. 5\n10115\nBerlin\nTel.: (030) 12 34 567", [FIELD_STREET]),
    ("Muster Handels GmbH und Co. KG, Hauptstr 5, 10115 Berlin, +49 (0)30 123 45 67", [FIELD_COMPANY]),
    ("Muster Handels, Hauptstraße 5, 10115 Berlin, info@muster-handels.example", [FIELD_COMPANY]),  # no form
    ("Muster Handels GmbH & Co. KG, Hauptstraße 50, 10115 Berlin, 0049 30 1234567", [FIELD_STREET]),
    ("Muster Handels GmbH & Co. KG, Haupt-straße 5, 10115 Berlin, 030 1234567", [FIELD_STREET]),
    ("Muster Handels GmbH & Co. KG, Nebenstraße 5, 10115 Berlin, 030 1234567", [FIELD_STREET]),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10117 Berlin, 030 1234567", [FIELD_POSTCODE_CITY]),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Potsdam, 030 1234567", [FIELD_POSTCODE_CITY]),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, Berlin 10115, 030 1234567", []),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin", [FIELD_CONTACT]),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, Tel. 030 12345678", [FIELD_CONTACT]),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, Fax 030 123456", [FIELD_CONTACT]),
    (
        "Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, xinfo@muster-handels.example",
        [FIELD_CONTACT],
    ),
    (
        "Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, info@muster-handels.example.org",
        [FIELD_CONTACT],
    ),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, mailto:info@muster-handels.example.", []),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, Tel +49 30 1234567, Fax +49 30 7654321", []),
    ("Muster Handels GmbH & Co. KG, Hauptstraße 5\n10115 Berlin\nTelefon\n+49 (30) 1234-567", []),
    ("Tel 030 1234567 Muster Handels GmbH & Co. KG Hauptstraße 5 10115 Berlin", []),
    ("Kuster Handels GmbH & Co. KG, Hauptstraße 5, 10115 Berlin, 030 1234567", [FIELD_COMPANY]),
    ("Muster Handels GmbH & Co. KGaA, Hauptstraße 5, 10115 Berlin, 030 1234567", [FIELD_COMPANY]),
    ("", NOTHING),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_matching(text: str, expected: list[str]) -> None:
    assert missing_imprint_fields(text, MUSTER) == expected


@pytest.mark.parametrize(
    ("record", "text"),
    [
        ("Hauptstraße 5", "Hauptstr. 5"),
        ("Hauptstraße 5", "HAUPTSTRASSE  5"),
        ("Hauptstraße 5", "Hauptstrasse\n5"),
        ("Hauptstraße 5", "Hauptstr 5"),
        ("Hauptstr. 5", "Hauptstraße 5"),
        ("Lange Straße 5a", "Lange Str. 5 a"),
        ("Große Straße 12", "Grosse Strasse 12"),
        ("Große Str. 12", "GROSSE STRAẞE 12"),
        ("Große Str. 12", "Gro&szlig;e Stra&szlig;e 12"),  # after visible_text()
        ("Müllerweg 1", "Muellerweg 1"),
        ("Muellerweg 1", "Müllerweg 1"),
        ("Müllerweg 1", "Mu\u0308llerweg 1"),  # decomposed umlaut
        ("Öder Weg 2", "OEDER WEG 2"),
        ("Am Ufer 3", "Am\u00a0Ufer\u00a03"),
    ],
)
def test_street_variants(record: str, text: str) -> None:
    imprint = Imprint(street=record)
    assert FIELD_STREET not in missing_imprint_fields(visible_text(text), imprint)


@pytest.mark.parametrize(
    ("record", "text"),
    [
        ("Hauptstraße 5", "Hauptweg 5"),
        ("Hauptstraße 5", "Hauptstraße 55"),
        ("Hauptstraße 5", "Haupt-straße 5"),  # not one of the listed variants
        ("Hauptstraße 5", "Nebenhauptstraße 5"),
        ("Hauptstraße 5", "Hauptstraßenfest 5"),
    ],
)
def test_street_mismatches(record: str, text: str) -> None:
    assert FIELD_STREET in missing_imprint_fields(text, Imprint(street=record))


@pytest.mark.parametrize(
    ("company", "legal_form", "text", "found"),
    [
        ("Muster", "GmbH", "Muster GmbH", True),
        ("Muster GmbH", "GmbH", "Muster GmbH", True),  # legal form already in the name
        ("Muster GmbH", None, "MUSTER GMBH", True),
        ("Muster", "GmbH & Co. KG", "Muster GmbH&Co.KG", True),
        ("Muster", "GmbH & Co. KG", "Muster GmbH & Co KG", True),
        ("Muster", "GmbH & Co. KG", "Muster GmbH", False),
        ("Muster", "e.K.", "Muster e. K.", True),
        ("Bäckerei Süß", "OHG", "Baeckerei Suess OHG", True),
        ("Muster", "GmbH", "Mustermann GmbH", False),
        ("Muster", "AG", "Muster AGB", False),
    ],
)
def test_company_name(company: str, legal_form: str | None, text: str, found: bool) -> None:
    missing = missing_imprint_fields(text, Imprint(company=company, legal_form=legal_form))
    assert (FIELD_COMPANY not in missing) is found


@pytest.mark.parametrize(
    ("record", "text", "found"),
    [
        ("+49 30 1234567", "030 1234567", True),
        ("+49 30 1234567", "030/123 45 67", True),
        ("+49 30 1234567", "(030) 123-4567", True),
        ("+49 30 1234567", "+49 (0)30 1234567", True),
        ("+49 30 1234567", "+49 (0) 30 – 123 45 67", True),
        ("+49 30 1234567", "0049 30 1234567", True),
        ("+49 30 1234567", "+49.30.1234567", True),
        ("030 1234567", "+49 30 1234567", True),
        ("030-1234567", "Berlin 10115\n030 1234567", True),  # one digit run with the postcode
        ("030 1234567", "030 12345678", False),
        ("030 1234567", "030 123456", False),
        ("030 1234567", "040 1234567", False),
        ("+43 1 234567", "+43 1 234567", True),
        ("+43 1 234567", "0043 1 234567", True),
        ("12345", "12345", False),  # too short to identify anyone
    ],
)
def test_phone(record: str, text: str, found: bool) -> None:
    missing = missing_imprint_fields(text, Imprint(phone=record))
    assert (FIELD_CONTACT not in missing) is found


def test_email_or_phone_is_enough() -> None:
    only_email = Imprint(email="a@x.example", phone="030 1234567")
    assert FIELD_CONTACT not in missing_imprint_fields("A@X.EXAMPLE", only_email)
    assert FIELD_CONTACT not in missing_imprint_fields("030 1234567", only_email)


def test_incomplete_record_fails_closed() -> None:
    empty = Imprint()
    assert missing_imprint_fields(FULL, empty) == NOTHING
    assert incomplete_imprint(empty) == NOTHING
    assert incomplete_imprint(MUSTER) == []
    assert incomplete_imprint(Imprint(company="x", street="y", postcode="1", city="z", phone="12")) == [
        FIELD_CONTACT
    ]


def test_pathological_digits_are_bounded() -> None:
    text = "0 " * 500_000
    assert FIELD_CONTACT in missing_imprint_fields(text, Imprint(phone="030 1234567"))


# -- from_mapping -----------------------------------------------------------------------------


def test_from_mapping_round_trip() -> None:
    data = {"company": "Muster Handels", "legal_form": "GmbH & Co. KG", "postcode": "01067", "phone": None}
    imprint = Imprint.from_mapping(data)
    assert imprint.company == "Muster Handels" and imprint.postcode == "01067" and imprint.phone is None
    assert imprint.to_mapping() == {
        "company": "Muster Handels",
        "legal_form": "GmbH & Co. KG",
        "postcode": "01067",
    }
    assert Imprint.from_mapping(MUSTER.to_mapping()) == MUSTER


def test_from_mapping_accepts_every_documented_key() -> None:
    imprint = Imprint.from_mapping({key: f"value of {key}" for key in IMPRINT_FIELDS})
    assert all(getattr(imprint, key) == f"value of {key}" for key in IMPRINT_FIELDS)


def test_from_mapping_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown imprint field\(s\): adress, zip") as info:
        Imprint.from_mapping({"company": "x", "zip": "1", "adress": "y"})
    assert "allowed: company, legal_form" in str(info.value)


@pytest.mark.parametrize("value", [1067, 10115, True, ["Berlin"], {"a": 1}, 1.5])
def test_from_mapping_rejects_non_text(value: object) -> None:
    with pytest.raises(ValueError, match="must be text"):
        Imprint.from_mapping({"postcode": value})


def test_from_mapping_blank_is_none() -> None:
    assert Imprint.from_mapping({"vat_id": "   "}).vat_id is None


def test_from_mapping_rejects_non_mapping() -> None:
    with pytest.raises(ValueError, match="mapping"):
        Imprint.from_mapping(["company"])  # type: ignore[arg-type]
