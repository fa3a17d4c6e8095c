"""sender-identity: envelope sender (MAIL) and From/Sender/Reply-To (DATA) in the customer's
verified sending domains; exactly one From address; no disguising display name; DMARC option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import dns.exception
import dns.resolver
import pytest

from gateway.core.transaction import Phase
from policies.sender_identity import SenderIdentity
from tests.unit.test_policy_support import Env, fixture, newsletter, reply_of, set_header


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


REF = "reference_newsletter.eml"
NOT_VERIFIED = "550 5.7.1 {} domain {} is not a verified sending domain of your account"


def ref(**headers: list[str]) -> bytes:
    raw = fixture(REF)
    for name, values in headers.items():
        raw = set_header(raw, name.replace("_", "-"), *values)
    return raw


@pytest.mark.parametrize(
    "mail_from, expected",
    [
        ("bounce@shop.example", None),
        ("<bounce@shop.example>", None),
        ("BOUNCE@News.Shop.Example", None),
        ("bounce@other.example", NOT_VERIFIED.format("Envelope sender", "other.example")),
        ("bounce@unverified.example", NOT_VERIFIED.format("Envelope sender", "unverified.example")),
        ("bounce@evilshop.example", NOT_VERIFIED.format("Envelope sender", "evilshop.example")),
        ("bounce@shop.example.evil", NOT_VERIFIED.format("Envelope sender", "shop.example.evil")),
        (
            "",
            "550 5.7.1 An empty envelope sender is not accepted; use an address in one of your "
            "verified sending domains",
        ),
        (
            "postmaster",
            "550 5.7.1 An empty envelope sender is not accepted; use an address in one of "
            "your verified sending domains",
        ),
        ('"first last"@shop.example', None),
        (
            '"bounce@paypal.example"@shop.example',
            "550 5.7.1 The envelope sender address shows bounce@paypal.example before its domain "
            "shop.example; use a plain address without it",
        ),
    ],
)
def test_envelope_at_mail(env: Env, mail_from: str, expected: str | None) -> None:
    verdict = env.check(SenderIdentity(), phase=Phase.MAIL, mail_from=mail_from)
    assert reply_of(verdict) == expected


ONE_FROM = "550 5.7.1 The message must have exactly one From address (found {})"


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({}, None),
        ({"From": ["news@News.Shop.Example"]}, None),
        ({"From": ['"PayPal" <x@shop.example>']}, None),  # brands are not judged
        ({"From": ['"info@shop.example" <x@news.shop.example>']}, None),  # own verified domain
        ({"From": ['"Müller GmbH & Co. KG" <x@shop.example>']}, None),
        ({"From": ["x@other.example"]}, NOT_VERIFIED.format("From", "other.example")),
        ({"From": ["Shop <x@unverified.example>"]}, NOT_VERIFIED.format("From", "unverified.example")),
        ({"From": ["x@evilshop.example"]}, NOT_VERIFIED.format("From", "evilshop.example")),
        ({"From": ["a@shop.example", "b@shop.example"]}, ONE_FROM.format(2)),
        ({"From": ["a@shop.example, b@shop.example"]}, ONE_FROM.format(2)),
        ({"From": []}, ONE_FROM.format(0)),
        ({"From": ["undisclosed-recipients:;"]}, ONE_FROM.format(0)),
        (
            {"From": ['"service@paypal.com" <x@shop.example>']},
            "550 5.7.1 The From display name shows service@paypal.com, which is not the sending domain "
            "shop.example; remove it from the display name",
        ),
        (
            {"From": ["=?utf-8?q?Kundenservice_service=40paypal=2Ecom?= <x@shop.example>"]},
            "550 5.7.1 The From display name shows service@paypal.com, which is not the sending domain "
            "shop.example; remove it from the display name",
        ),
        (
            {"From": ['"Ihre Bank (sparkasse.de)" <x@shop.example>']},
            "550 5.7.1 The From display name shows sparkasse.de, which is not the sending domain "
            "shop.example; remove it from the display name",
        ),
        ({"Sender": ["bulk@news.shop.example"]}, None),
        ({"Sender": ["bulk@esp.example"]}, NOT_VERIFIED.format("Sender", "esp.example")),
        ({"Reply_To": ["Support <help@shop.example>, team@news.shop.example"]}, None),
        (
            {"Reply_To": ["help@shop.example, someone@gmail.example"]},
            NOT_VERIFIED.format("Reply-To", "gmail.example"),
        ),
    ],
)
def test_headers_at_data(env: Env, headers: dict, expected: str | None) -> None:
    assert reply_of(env.check(SenderIdentity(), ref(**headers))) == expected


@pytest.mark.parametrize("phase", [Phase.MAIL, Phase.DATA])
def test_no_customer(env: Env, phase: Phase) -> None:
    verdict = env.check(SenderIdentity(), fixture(REF), phase=phase, customer=None)
    assert reply_of(verdict) == "530 5.7.0 Authentication required"


def test_real_newsletter_sender_header_of_the_esp_is_refused(env: Env) -> None:
    # Mailchimp mail: From is the customer's domain, Sender is Mailchimp's bounce domain.
    env.store.add_customer("cimc", status="active")
    cimc = env.store.require_customer("cimc")
    env.store.add_domain("cimc", "continuityinsights.com", token="t")
    env.store.mark_domain_verified(cimc.id, "continuityinsights.com", by="test")
    raw = newsletter("mailing_list_misc/mail-parser__mail_test_13.eml")
    verdict = env.check(SenderIdentity(), raw, customer=cimc)
    assert reply_of(verdict) == NOT_VERIFIED.format("Sender", "mail90.suw15.mcsv.net")
    env.store.add_domain("cimc", "mcsv.net", token="t")
    env.store.mark_domain_verified(cimc.id, "mcsv.net", by="test")
    assert reply_of(env.check(SenderIdentity(), raw, customer=cimc)) is None
    # ... and the acme account may not send it at all.
    assert reply_of(env.check(SenderIdentity(), raw)) == NOT_VERIFIED.format("From", "continuityinsights.com")


@pytest.mark.parametrize(
    "relpath, domain",
    [
        ("embedded_in_sisimai_bounces/lhost-exchange2007-06__original.eml", "mb.newsletter-autos.fr"),
        ("mailing_list_misc/mail-parser__mail_test_5.eml", "carlance.fr"),
    ],
)
def test_real_newsletters_of_other_senders(env: Env, relpath: str, domain: str) -> None:
    assert reply_of(env.check(SenderIdentity(), newsletter(relpath))) == NOT_VERIFIED.format("From", domain)


class FakeResolver:
    def __init__(self, records: dict[str, object]) -> None:
        self.records = records
        self.asked: list[str] = []

    def resolve(self, name: str, rdtype: str) -> list[SimpleNamespace]:
        assert rdtype == "TXT"
        self.asked.append(name)
        found = self.records.get(name)
        if isinstance(found, Exception):
            raise found
        if found is None:
            raise dns.resolver.NXDOMAIN()
        return [SimpleNamespace(strings=[s.encode() for s in found])]  # type: ignore[union-attr]


DMARC = SenderIdentity(SenderIdentity.Options(require_dmarc=True))


@pytest.mark.parametrize(
    "from_, records, expected",
    [
        ("x@shop.example", {"_dmarc.shop.example": ["v=DMARC1; p=none"]}, None),
        ("x@shop.example", {"_dmarc.shop.example": ["v=DMARC1; ", "p=reject"]}, None),
        ("x@news.shop.example", {"_dmarc.shop.example": ["v=DMARC1; p=quarantine"]}, None),
        (
            "x@shop.example",
            {},
            "550 5.7.1 From domain shop.example has no DMARC record; publish one at _dmarc.shop.example",
        ),
        (
            "x@shop.example",
            {"_dmarc.shop.example": ["v=spf1 -all"]},
            "550 5.7.1 From domain shop.example has no DMARC record; publish one at _dmarc.shop.example",
        ),
        (
            "x@shop.example",
            {"_dmarc.shop.example": dns.resolver.NoAnswer()},
            "550 5.7.1 From domain shop.example has no DMARC record; publish one at _dmarc.shop.example",
        ),
        (
            "x@shop.example",
            {"_dmarc.shop.example": dns.exception.Timeout()},
            "451 4.4.3 The DMARC record of shop.example could not be looked up; try again later",
        ),
    ],
)
def test_dmarc_option(env: Env, from_: str, records: dict, expected: str | None) -> None:
    verdict = env.check(DMARC, ref(From=[from_]), resolver=FakeResolver(records))
    assert reply_of(verdict) == expected


def test_dmarc_without_resolver_is_skipped_and_said(env: Env) -> None:
    verdict = env.check(DMARC, fixture(REF))
    assert verdict.passed and "DMARC not checked" in verdict.reason


def test_dmarc_is_not_looked_up_by_default(env: Env) -> None:
    resolver = FakeResolver({})
    assert env.check(SenderIdentity(), fixture(REF), resolver=resolver).passed
    assert resolver.asked == []


def test_unknown_option_is_refused() -> None:
    with pytest.raises(ValueError):
        SenderIdentity.Options.model_validate({"require_dmark": True})


LOCAL_PART = "550 5.7.1 The {} address shows {} before its domain {}; use a plain address without it"
DISPLAY_NAME = (
    "550 5.7.1 The {} display name shows {}, which is not the sending domain {}; "
    "remove it from the display name"
)


@pytest.mark.parametrize(
    "headers, expected",
    [
        # A quoted local part that is an address of another domain reads as that address.
        (
            {"From": ['"news@paypal.example"@shop.example']},
            LOCAL_PART.format("From", "news@paypal.example", "shop.example"),
        ),
        (
            {"From": ['Shop <"news@paypal.example"@shop.example>']},
            LOCAL_PART.format("From", "news@paypal.example", "shop.example"),
        ),
        (
            {"From": ['"news\\@paypal.example"@shop.example']},  # quoted-pair
            LOCAL_PART.format("From", "news@paypal.example", "shop.example"),
        ),
        (
            {"From": ['"service paypal.com"@shop.example']},
            LOCAL_PART.format("From", "paypal.com", "shop.example"),
        ),
        (
            {"From": ["=?utf-8?q?news=40paypal=2Eexample?=@shop.example"]},  # encoded word
            LOCAL_PART.format("From", "news@paypal.example", "shop.example"),
        ),
        (
            {"From": ["news@paypal.example@shop.example"]},  # salvaged as "@shop.example"
            "550 5.7.1 The From address @shop.example has no local part",
        ),
        # The same tricks in Sender and Reply-To, display names included.
        (
            {"Sender": ['"bulk@esp.example"@news.shop.example']},
            LOCAL_PART.format("Sender", "bulk@esp.example", "news.shop.example"),
        ),
        (
            {"Reply_To": ['help@shop.example, "help@paypal.example"@shop.example']},
            LOCAL_PART.format("Reply-To", "help@paypal.example", "shop.example"),
        ),
        (
            {"Reply_To": ['"support@paypal.com" <help@shop.example>']},
            DISPLAY_NAME.format("Reply-To", "support@paypal.com", "shop.example"),
        ),
        (
            {"Sender": ["=?utf-8?q?service=40paypal=2Ecom?= <bulk@shop.example>"]},
            DISPLAY_NAME.format("Sender", "service@paypal.com", "shop.example"),
        ),
        # Legitimate quoted local parts, and addresses that only show the customer's own domains.
        ({"From": ['"first last"@shop.example']}, None),
        ({"From": ['Shop <"news letter"@news.shop.example>']}, None),
        ({"From": ['"news@news.shop.example"@shop.example']}, None),
        ({"From": ["first.last@shop.example"]}, None),
        ({"From": ["news.shop@shop.example"]}, None),  # a dot-atom is a name, not a domain
        ({"Reply_To": ['"info shop.example" <help@shop.example>']}, None),
    ],
)
def test_quoted_local_part_and_sender_reply_to_disguises(
    env: Env, headers: dict, expected: str | None
) -> None:
    assert reply_of(env.check(SenderIdentity(), ref(**headers))) == expected
