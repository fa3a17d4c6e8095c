"""imprint: the registered imprint in every body alternative's visible text."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.imprint import ImprintPolicy
from tests.unit.test_policy_support import IMPRINT, Env, fixture, newsletter, reply_of


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


INCOMPLETE = "550 5.7.1 Imprint incomplete: {}"
RECORD_INCOMPLETE = (
    "550 5.7.1 The imprint registered for your account is incomplete; ask support to complete it"
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("reference_newsletter.eml", None),  # HTML: tags, entities, &nbsp;, line breaks
        ("plain_text.eml", None),
        ("nested_mixed_attachment.eml", None),  # the attachment needs no imprint
        ("base64_html.eml", None),
        ("qp_text_soft_breaks.eml", None),  # soft breaks inside "Königstra=\n=C3=9Fe"
        ("latin1_text.eml", None),
        ("cp1252_html.eml", None),
        ("unsub_spanish.eml", None),
        (
            "imprint_no_address_html.eml",
            INCOMPLETE.format("street, postcode and city not found in the HTML part"),
        ),
        # In a comment and in display:none: the words are in the markup, not in what is seen.
        (
            "imprint_hidden_html.eml",
            INCOMPLETE.format(
                "company name, street, postcode and city, contact (email or phone) not found in the HTML part"
            ),
        ),
    ],
)
def test_fixtures(env: Env, name: str, expected: str | None) -> None:
    assert reply_of(env.check(ImprintPolicy(), fixture(name))) == expected


def plain_with(footer: str) -> bytes:
    head = fixture("plain_text.eml").split(b"\r\n\r\n", 1)[0]
    return head + b"\r\n\r\nHallo!\r\n\r\n" + footer.replace("\n", "\r\n").encode() + b"\r\n"


@pytest.mark.parametrize(
    "footer, expected",
    [
        ("Mueller Gartenbedarf GmbH\nKoenigstrasse 12\n70173 Stuttgart\nTel. 0711 / 123 456", None),
        ("MÜLLER GARTENBEDARF GMBH · Königstr. 12 · 70173 Stuttgart · INFO@SHOP.EXAMPLE", None),
        (
            "Müller Gartenbedarf GmbH, Königstraße 14, 70173 Stuttgart, info@shop.example",
            "street not found in the text/plain part",
        ),
        (
            "Müller Gartenbedarf, Königstraße 12, 70173 Stuttgart, info@shop.example",
            "company name not found in the text/plain part",
        ),
        (
            "Müller Gartenbedarf GmbH, Königstraße 12, 70173 Stuttgart, sales@shop.example",
            "contact (email or phone) not found in the text/plain part",
        ),
        (
            "Müller Gartenbedarf GmbH, Königstraße 12, 70174 Stuttgart, info@shop.example",
            "postcode and city not found in the text/plain part",
        ),
        (
            "Mit freundlichen Grüßen",
            "company name, street, postcode and city, contact (email or phone) "
            "not found in the text/plain part",
        ),
    ],
)
def test_tolerant_but_exact_matching(env: Env, footer: str, expected: str | None) -> None:
    verdict = env.check(ImprintPolicy(), plain_with(footer))
    assert reply_of(verdict) == (expected and INCOMPLETE.format(expected))


def test_each_part_is_named(env: Env) -> None:
    head = (
        fixture("plain_text.eml")
        .split(b"\r\n\r\n", 1)[0]
        .replace(b"Content-Type: text/plain; charset=utf-8", b'Content-Type: multipart/mixed; boundary="b"')
    )
    good = "Müller Gartenbedarf GmbH, Königstraße 12, 70173 Stuttgart, info@shop.example"
    raw = (
        head
        + b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + good.encode()
        + b"\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nP.S. nur ein Nachtrag\r\n--b--\r\n"
    )
    assert reply_of(env.check(ImprintPolicy(), raw)) == INCOMPLETE.format(
        "company name, street, postcode and city, contact (email or phone) not found in the "
        "text/plain part (MIME part 2)"
    )


def test_no_imprint_registered(env: Env) -> None:
    env.store.add_customer("newbie", status="active")
    verdict = env.check(
        ImprintPolicy(), fixture("reference_newsletter.eml"), customer=env.store.require_customer("newbie")
    )
    assert reply_of(verdict) == (
        "550 5.7.1 No imprint is registered for your account; ask support to record it"
    )


@pytest.mark.parametrize(
    "record",
    [
        {k: v for k, v in IMPRINT.items() if k != "street"},
        {k: v for k, v in IMPRINT.items() if k not in ("email", "phone")},
        {**IMPRINT, "adress": "typo"},
    ],
)
def test_unusable_record(env: Env, record: dict) -> None:
    env.store.set_imprint("acme", record)
    verdict = env.check(ImprintPolicy(), fixture("reference_newsletter.eml"))
    assert reply_of(verdict) == RECORD_INCOMPLETE


def test_record_is_read_from_the_store_not_the_session(env: Env) -> None:
    session_customer = env.customer
    env.store.set_imprint("acme", {**IMPRINT, "street": "Neue Straße 1"})
    verdict = env.check(ImprintPolicy(), fixture("plain_text.eml"), customer=session_customer)
    assert reply_of(verdict) == INCOMPLETE.format("street not found in the text/plain part")


def test_no_customer(env: Env) -> None:
    verdict = env.check(ImprintPolicy(), fixture("reference_newsletter.eml"), customer=None)
    assert reply_of(verdict) == "530 5.7.0 Authentication required"


def test_real_newsletter_with_its_own_imprint(env: Env) -> None:
    # French newsletter: the footer of both parts names company, address and email.
    env.store.add_customer("carlance", status="active")
    env.store.set_imprint(
        "carlance",
        {
            "company": "Carlance",
            "street": "564 Chemin des Platières",
            "postcode": "38670",
            "city": "Chasse sur Rhône",
            "country": "France",
            "email": "service.clients@carlance.fr",
        },
    )
    carlance = env.store.require_customer("carlance")
    raw = newsletter("mailing_list_misc/mail-parser__mail_test_5.eml")
    assert reply_of(env.check(ImprintPolicy(), raw, customer=carlance)) is None
    # The same mail sent through the acme account does not carry acme's imprint.
    assert reply_of(env.check(ImprintPolicy(), raw)) == INCOMPLETE.format(
        "company name, street, postcode and city, contact (email or phone) not found in the "
        "text/plain and HTML parts"
    )


def test_real_newsletter_without_contact(env: Env) -> None:
    # Mailchimp footer: name and postal address, but no email or phone anywhere.
    env.store.add_customer("cimc", status="active")
    env.store.set_imprint(
        "cimc",
        {
            "company": "CIMC",
            "street": "26 Buttercup Ln",
            "postcode": "18940-3204",
            "city": "Newtown, PA",
            "country": "USA",
            "email": "info@continuityinsights.com",
        },
    )
    raw = newsletter("mailing_list_misc/mail-parser__mail_test_13.eml")
    verdict = env.check(ImprintPolicy(), raw, customer=env.store.require_customer("cimc"))
    assert reply_of(verdict) == INCOMPLETE.format(
        "contact (email or phone) not found in the text/plain and HTML parts"
    )
