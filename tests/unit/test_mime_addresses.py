"""gateway.mime.addresses: mailbox headers and disguised display names."""

from __future__ import annotations

import email.parser
import email.policy
from pathlib import Path

import pytest

from gateway.mime.addresses import (
    display_name_disguise,
    domain_of,
    is_subdomain_or_same,
    normalise_domain,
    parse_mailbox,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"
NEWSLETTERS = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora" / "newsletters"

MAILBOXES = [
    ("news@shop.example", [("", "news@shop.example")]),
    ("Shop News <news@shop.example>", [("Shop News", "news@shop.example")]),
    ('"Müller, Hans" <h@x.example>', [("Müller, Hans", "h@x.example")]),
    ("=?utf-8?q?M=C3=BCller_Shop?= <news@shop.example>", [("Müller Shop", "news@shop.example")]),
    ('"=?UTF-8?Q?Kipli_par_AM?=" <newsletter@xxxx.net>', [("Kipli par AM", "newsletter@xxxx.net")]),
    ("=?utf-8?b?U2hvcA==?= =?utf-8?b?IE5ld3M=?= <n@x.example>", [("Shop News", "n@x.example")]),
    ("Foo =?iso-8859-1?q?B=E4r?= Baz <a@x.example>", [("Foo Bär Baz", "a@x.example")]),
    ("=?x-foo?q?Gr=C3=BC=C3=9Fe?= <a@x.example>", [("Grüße", "a@x.example")]),  # unknown charset
    ("=?utf-8?q?broken <a@x.example>", [("=?utf-8?q?broken", "a@x.example")]),
    ("=?utf-8?b?!!!?= <a@x.example>", [("", "a@x.example")]),  # undecodable: no name
    ("a@x.example, B <b@y.example>", [("", "a@x.example"), ("B", "b@y.example")]),
    ("undisclosed-recipients:;", []),
    ("", []),
    ("(comment) a@x.example", [("comment", "a@x.example")]),
]


@pytest.mark.parametrize(("value", "expected"), MAILBOXES)
def test_parse_mailbox(value: str, expected: list[tuple[str, str]]) -> None:
    assert parse_mailbox(value) == expected


@pytest.mark.parametrize(
    "value",
    ["<<<>>>", "@@@", '"unterminated <a@x.example>', "\x00\xff", "=?" * 1000, "a" * 100_000 + "@x", None],
)
def test_parse_mailbox_never_raises(value: str | None) -> None:
    assert isinstance(parse_mailbox(value), list)


def test_parse_mailbox_of_raw_8bit_header() -> None:
    # compat32 hands out raw UTF-8 header bytes as surrogates or Header objects.
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        "From: Bäckerei Süß <info@baeckerei.example>\r\n\r\nbody".encode()
    )
    assert parse_mailbox(msg["From"]) == [("Bäckerei Süß", "info@baeckerei.example")]


def test_parse_mailbox_of_fixture_from_header() -> None:
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
        (FIXTURES / "alternative.eml").read_bytes()
    )
    assert parse_mailbox(msg["From"]) == [("Muster Handels", "news@muster-handels.example")]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "embedded_in_sisimai_bounces/rhost-franceptt-12__original_headers.txt",
            [("Kipli par AM", "newsletter@xxxx.net")],
        ),
        (
            "embedded_in_sisimai_bounces/lhost-sendgrid-03__original.eml",
            [("kijitora@example.ed.jp", "kijitora@example.ed.jp")],
        ),
        (
            "embedded_in_sisimai_bounces/lhost-exchange2007-05__original.eml",
            [("Trivago", "newsletter@newsletter.supersurprises-au.com")],
        ),
    ],
)
def test_corpus_from_headers(name: str, expected: list[tuple[str, str]]) -> None:
    msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes((NEWSLETTERS / name).read_bytes())
    assert parse_mailbox(msg["From"]) == expected


@pytest.mark.parametrize(
    ("addr", "domain"),
    [
        ("a@Shop.Example", "shop.example"),
        ("a@shop.example.", "shop.example"),
        ("a@BÜCHER.example", "xn--bcher-kva.example"),
        ("a@xn--bcher-kva.example", "xn--bcher-kva.example"),
        ('"a@b"@c.example', "c.example"),
        ("a@[192.0.2.1]", "[192.0.2.1]"),
        ("no-at-sign", ""),
        ("a@", ""),
        ("", ""),
    ],
)
def test_domain_of(addr: str, domain: str) -> None:
    assert domain_of(addr) == domain


def test_normalise_domain_keeps_what_idna_rejects() -> None:
    too_long = "ü" * 70 + ".example"  # a label over 63 octets
    assert normalise_domain(too_long.upper()) == too_long  # lower-cased, never raises


@pytest.mark.parametrize(
    ("domain", "parent", "expected"),
    [
        ("shop.example", "shop.example", True),
        ("mail.shop.example", "shop.example", True),
        ("MAIL.Shop.Example.", "shop.example", True),
        ("evilshop.example", "shop.example", False),
        ("shop.example.evil", "shop.example", False),
        ("example", "shop.example", False),
        ("bücher.example", "xn--bcher-kva.example", True),
        ("", "shop.example", False),
        ("shop.example", "", False),
    ],
)
def test_is_subdomain_or_same(domain: str, parent: str, expected: bool) -> None:
    assert is_subdomain_or_same(domain, parent) is expected


DISGUISES = [
    # (display name, sending domain, reported foreign address/domain)
    ("PayPal", "shop.example", None),  # no brand checks
    ("PayPal Service", "shop.example", None),
    ("service@paypal.com", "shop.example", "service@paypal.com"),
    ("PayPal (service@paypal.com)", "shop.example", "service@paypal.com"),
    ("SERVICE@PAYPAL.COM", "shop.example", "SERVICE@PAYPAL.COM"),
    ("service＠paypal.com", "shop.example", "service@paypal.com"),  # full-width at sign
    ("ser\u200bvice@pay\u200bpal.com", "shop.example", "service@paypal.com"),  # zero-width spaces
    ("news@shop.example", "shop.example", None),
    ("news@mail.shop.example", "shop.example", None),
    ("news@shop.example.evil.example", "shop.example", "news@shop.example.evil.example"),
    ("paypal.com", "shop.example", "paypal.com"),
    ("paypal.de Kundenservice", "shop.example", "paypal.de"),
    ("amazon.co.uk Team", "shop.example", "amazon.co.uk"),
    ("www.sparkasse.de", "shop.example", "www.sparkasse.de"),
    ("Shop.Example News", "shop.example", None),
    ("news.shop.example", "shop.example", None),
    ("evilshop.example", "shop.example", "evilshop.example"),
    ("x.com", "shop.example", "x.com"),
    # Ordinary names with dots are not domains.
    ("Muster GmbH & Co.KG", "muster.example", None),
    ("Dr.Med Hans Muster", "muster.example", None),
    ("J.Do", "muster.example", None),
    ("St.Gallen AG", "muster.example", None),
    ("Version 2.0 Release", "muster.example", None),
    ("Hans Muster e.K.", "muster.example", None),
    ("", "shop.example", None),
]


@pytest.mark.parametrize(("name", "domain", "expected"), DISGUISES)
def test_display_name_disguise(name: str, domain: str, expected: str | None) -> None:
    assert display_name_disguise(name, domain) == expected


def test_disguise_on_parsed_header() -> None:
    ((name, addr),) = parse_mailbox("=?utf-8?q?service=40paypal=2Ecom?= <x@shop.example>")
    assert display_name_disguise(name, domain_of(addr)) == "service@paypal.com"
