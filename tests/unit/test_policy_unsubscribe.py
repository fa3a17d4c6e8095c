"""unsubscribe: RFC 8058 headers and a visible unsubscribe link in each body alternative."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from policies.unsubscribe import Unsubscribe
from tests.unit.test_policy_support import Env, fixture, newsletter, reply_of, set_header


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


REF = "reference_newsletter.eml"
NO_LINK = "550 5.7.1 No visible unsubscribe link found in the {}"
NO_POST = "List-Unsubscribe-Post header is missing (must be 'List-Unsubscribe=One-Click')"


@pytest.mark.parametrize(
    "name, expected",
    [
        (REF, None),
        ("plain_text.eml", None),
        ("nested_mixed_attachment.eml", None),  # the agb.txt attachment needs no link
        ("base64_html.eml", None),
        ("qp_text_soft_breaks.eml", None),
        ("latin1_text.eml", None),
        ("cp1252_html.eml", None),
        ("unsub_spanish.eml", None),  # "darse de baja", URL not under the registered prefix
        ("unsub_registered_url_only.eml", None),  # no wording, but the registered URL
        ("unsub_only_html.eml", NO_LINK.format("text/plain part")),
        ("unsub_only_text.eml", NO_LINK.format("HTML part")),
        ("unsub_hidden_display_none.eml", NO_LINK.format("HTML part")),
        ("unsub_image_alt.eml", NO_LINK.format("HTML part")),  # alt text is not visible text
    ],
)
def test_body_links(env: Env, name: str, expected: str | None) -> None:
    assert reply_of(env.check(Unsubscribe(), fixture(name))) == expected


def test_registered_url_counts_only_when_registered(env: Env) -> None:
    env.store.set_unsubscribe("acme", None)
    verdict = env.check(Unsubscribe(), fixture("unsub_registered_url_only.eml"))
    assert reply_of(verdict) == NO_LINK.format("text/plain and HTML parts")


def test_prefix_is_read_from_the_store_not_the_session(env: Env) -> None:
    session_customer = env.customer
    env.store.set_unsubscribe("acme", "https://other.example/unsub/")
    verdict = env.check(Unsubscribe(), fixture("unsub_registered_url_only.eml"), customer=session_customer)
    assert reply_of(verdict) == NO_LINK.format("text/plain and HTML parts")


def test_no_customer_still_checks_words(env: Env) -> None:
    assert reply_of(env.check(Unsubscribe(), fixture(REF), customer=None)) is None
    verdict = env.check(Unsubscribe(), fixture("unsub_registered_url_only.eml"), customer=None)
    assert reply_of(verdict) == NO_LINK.format("text/plain and HTML parts")


@pytest.mark.parametrize(
    "lu, lup, expected",
    [
        (["<https://shop.example/u/abc123>"], ["List-Unsubscribe=One-Click"], None),
        (["<mailto:u@shop.example>, <https://shop.example/u/1>"], ["List-Unsubscribe=One-Click"], None),
        ([], ["List-Unsubscribe=One-Click"], "List-Unsubscribe header is missing"),
        (
            ["<mailto:u@shop.example>"],
            ["List-Unsubscribe=One-Click"],
            "List-Unsubscribe has no https: URI (only mailto:)",
        ),
        (
            ["<http://shop.example/u/1>"],
            ["List-Unsubscribe=One-Click"],
            "List-Unsubscribe has no https: URI (only http:)",
        ),
        (
            ["https://shop.example/u/1"],
            ["List-Unsubscribe=One-Click"],
            "List-Unsubscribe has no URI in angle brackets",
        ),
        (["<https://shop.example/u/1>"], [], NO_POST),
        (
            ["<https://shop.example/u/1>"],
            ["List-Unsubscribe=One-click"],
            "List-Unsubscribe-Post must be exactly 'List-Unsubscribe=One-Click'",
        ),
        (
            ["<https://shop.example/u/1>"],
            ["List-Unsubscribe=One-Click", "List-Unsubscribe=One-Click"],
            "Send List-Unsubscribe and List-Unsubscribe-Post once each",
        ),
        ([], [], "List-Unsubscribe header is missing; " + NO_POST),
    ],
)
def test_headers(env: Env, lu: list[str], lup: list[str], expected: str | None) -> None:
    raw = set_header(set_header(fixture(REF), "List-Unsubscribe", *lu), "List-Unsubscribe-Post", *lup)
    assert reply_of(env.check(Unsubscribe(), raw)) == (expected and "550 5.7.1 " + expected)


def test_header_and_body_problems_are_named_together(env: Env) -> None:
    raw = set_header(fixture("unsub_only_text.eml"), "List-Unsubscribe-Post")
    assert reply_of(env.check(Unsubscribe(), raw)) == (
        f"550 5.7.1 {NO_POST}; no visible unsubscribe link found in the HTML part"
    )


def test_message_without_body(env: Env) -> None:
    raw = (
        set_header(fixture(REF), "Content-Type", 'multipart/mixed; boundary="x"').split(b"\r\n\r\n")[0]
        + b"\r\n\r\n--x\r\nContent-Type: image/png\r\n\r\nPNG\r\n--x--\r\n"
    )
    assert reply_of(env.check(Unsubscribe(), raw)) == (
        "550 5.7.1 The message has no text or HTML body to show an unsubscribe link in"
    )


@pytest.mark.parametrize(
    "relpath, expected",
    [
        # Mailchimp 2018: both headers and "unsubscribe from this list" in text and HTML.
        ("mailing_list_misc/mail-parser__mail_test_13.eml", None),
        # French, "vous ne souhaitez plus recevoir ... Cliquer ici": links fine, no one-click header.
        ("mailing_list_misc/mail-parser__mail_test_5.eml", "550 5.7.1 " + NO_POST),
        # "Pour vous désabonner, suivez ce lien": links fine, only a mailto: List-Unsubscribe.
        (
            "embedded_in_sisimai_bounces/lhost-exchange2007-06__original.eml",
            "550 5.7.1 List-Unsubscribe has no https: URI (only mailto:); " + NO_POST,
        ),
        # A mailing-list post: no link in the body either.
        (
            "mailing_list_misc/stalwart-mail-parser__thirdparty_014.eml",
            "550 5.7.1 List-Unsubscribe has no https: URI (only http:, mailto:); "
            + NO_POST
            + "; no visible unsubscribe link found in the text/plain and HTML parts",
        ),
    ],
)
def test_real_newsletters(env: Env, relpath: str, expected: str | None) -> None:
    assert reply_of(env.check(Unsubscribe(), newsletter(relpath))) == expected
