"""gateway.mime.unsubscribe: visible unsubscribe links and the List-Unsubscribe headers."""

from __future__ import annotations

import email.parser
import email.policy
import unicodedata
from email.message import Message
from pathlib import Path

import pytest

from gateway.mime.parts import TextPart, body_alternatives
from gateway.mime.unsubscribe import (
    UNSUBSCRIBE_WORDS,
    check_list_unsubscribe_headers,
    find_unsubscribe_link,
    has_registered_prefix,
    mentions_unsubscribe,
    parse_list_unsubscribe,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"
CORPORA = Path(__file__).resolve().parents[2] / ".." / "shared" / "corpora"
NEWSLETTERS = CORPORA / "newsletters"


def parse(raw: bytes) -> Message:
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


def load(path: Path, *, crlf: bool = False) -> Message:
    raw = path.read_bytes()
    if crlf:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return parse(raw)


def found_per_part(msg: Message, prefix: str | None = None) -> dict[str, str | None]:
    return {p.path: find_unsubscribe_link(p, prefix) for p in body_alternatives(msg)}


def html(text: str) -> TextPart:
    return TextPart("text/html", text, "1", False)


def plain(text: str) -> TextPart:
    return TextPart("text/plain", text, "1", False)


# -- our fixtures -----------------------------------------------------------------

SHOP = "https://muster-handels.example"
FIXTURE_CASES = [
    # (fixture, registered prefix, {body alternative path: link found or None})
    ("plain.eml", None, {"1": f"{SHOP}/unsub?u=plain-1"}),
    ("alternative.eml", None, {"1": f"{SHOP}/u/alt-1", "2": f"{SHOP}/u/alt-1"}),
    ("mixed_pdf.eml", None, {"1.1": f"{SHOP}/u/mixed-1", "1.2.1": f"{SHOP}/u/mixed-1"}),
    ("html_base64.eml", None, {"1": f"{SHOP}/u/b64-1"}),
    ("qp_soft_breaks.eml", None, {"1": f"{SHOP}/abmelden?id=qp-1&x=1"}),  # "abmel=\ndef" soft break
    ("latin1.eml", None, {"1": f"{SHOP}/u/latin1-1"}),  # "Zum Abbestellen"
    ("cp1252.eml", None, {"1": f"{SHOP}/u/cp1252-1"}),
    ("unknown_charset.eml", None, {"1": f"{SHOP}/u/xfoo-1"}),
    ("wrong_charset_utf8_as_latin1.eml", None, {"1": f"{SHOP}/u/wrong-1"}),  # "Désinscrire"
    ("wrong_charset_latin1_as_utf8.eml", None, {"1": f"{SHOP}/u/wrong-2"}),  # "Désabonner"
    ("unsub_html_only.eml", None, {"1": None, "2": f"{SHOP}/u/htmlonly-1"}),
    ("unsub_text_only.eml", None, {"1": f"{SHOP}/u/textonly-1", "2": None}),  # "opt out", URL 2 lines on
    (
        "unsub_spanish.eml",
        None,
        {"1": "https://tienda.example/baja?id=es-1", "2": "https://tienda.example/baja?id=es-1"},
    ),
    ("unsub_nearby.eml", None, {"1": f"{SHOP}/u/nearby-1"}),  # "... abzumelden, klicken Sie <a>hier</a>"
    ("unsub_far.eml", None, {"1": None}),  # the word is paragraphs away from the only link
    ("unsub_hidden.eml", None, {"1": None}),  # only in display:none / visibility:hidden / hidden
    ("unsub_hidden.eml", f"{SHOP}/u/", {"1": None}),  # a hidden link does not count even with the prefix
    ("unsub_img_alt.eml", None, {"1": None}),  # only in an image alt text
    ("unsub_img_alt.eml", f"{SHOP}/u/", {"1": f"{SHOP}/u/img-1"}),  # an image button with the prefix
    ("unsub_registered_prefix.eml", None, {"1": None, "2": None}),
    (
        "unsub_registered_prefix.eml",
        "https://lists.esp.example/m/",
        {"1": "https://lists.esp.example/m/prefix-1", "2": "https://lists.esp.example/m/prefix-1"},
    ),
    ("rfc822_attached.eml", None, {"1": None}),  # the attached mail's link is not this body's
]


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize(
    ("name", "prefix", "expected"), FIXTURE_CASES, ids=[f"{c[0]}-{bool(c[1])}" for c in FIXTURE_CASES]
)
def test_fixture(name: str, prefix: str | None, expected: dict[str, str | None], crlf: bool) -> None:
    assert found_per_part(load(FIXTURES / name, crlf=crlf), prefix) == expected


# -- the real newsletters in the shared corpus ----------------------------------------

# Expected result per body alternative, written after reading each file.
CORPUS_CASES = [
    # Single HTML part: a visible "Remove me from all future mailings" link, and
    # "you can also unsubscribe from all future mailings by clicking <a>here</a>".
    (
        "embedded_in_sisimai_bounces/lhost-exchange2007-05__original.eml",
        {"1": "http://t.newsletter.supersurprises-au.com/c/?t=aa089f9-i2-3kz-292-!xqme"},
    ),
    # French: text "Pour vous désabonner, suivez ce lien http://unsub...",
    # HTML "Pour vous désabonner, <a>cliquez-ici</a>".
    (
        "embedded_in_sisimai_bounces/lhost-exchange2007-06__original.eml",
        {
            "1": "http://unsub.mb.newsletter-autos.fr/?e=transports@agglo-saumur.fr&s=722&b=869",
            "2": "http://t.mb.newsletter-autos.fr/c/?t=9ec00f7-1i3-z8c-1wk-z5wkq",
        },
    ),
    # "If you'd like to unsubscribe ... click here: http://..." (URL cut by QP soft breaks)
    (
        "embedded_in_sisimai_bounces/lhost-sendgrid-03__original.eml",
        {
            "1": "http://u00000.sendgrid.org/wf/unsubscribe?upn=c2XvhmdlwFNZzrpICz3vLbjzSAqaJa54l4f0h6yEr5Wkugeh"
            "mE1-2BUIc1M6MgWuGYcwk7UvpKnzF0RFKlVthnEnCyYXoC3e6MIdQGOtImBiNUIxz1-2B4G5uXN52Xa6ZHZdC9GcaDfUOiJIHB"
            "tT3ODzvLCRIwp7WxlA95cBQYh1IR-2FQW9B7CMRkcX-2BIc-2FNDcS8NLhLrr1dUcrcxk8gJqVAfpRQXXZT4zL2ePErvBngWcbg"
            "t1-2FavhOrS-2Bkk1K0CVrSLk"
        },
    ),
    # Mailchimp: "or ** unsubscribe from this list (https://...)" / "<a>unsubscribe from this list</a>"
    (
        "mailing_list_misc/mail-parser__mail_test_13.eml",
        {
            "1": "https://cimanagementconference.us14.list-manage.com/unsubscribe?u=3f21937f0f636c8cec1db30bf"
            "&id=9bc9573bd6&e=042ea43672&c=199bb58d0b",
            "2": "https://cimanagementconference.us14.list-manage.com/unsubscribe?u=3f21937f0f636c8cec1db30bf"
            "&id=9bc9573bd6&e=042ea43672&c=199bb58d0b",
        },
    ),
    # French: "..., vous ne souhaitez plus recevoir de messages de notre part ? Cliquer ici <url>"
    # (text on the next line; in HTML the whole sentence is the link text).
    (
        "mailing_list_misc/mail-parser__mail_test_5.eml",
        {
            "1": "https://t2d857ce9.emailsys2a.net/136/1071579/1264/4531494/9012/3ee5635269/unsubscribe.html",
            "2.1": "https://t2d857ce9.emailsys2a.net/136/1071579/1264/4531494/9012/3ee5635269/unsubscribe.html",
        },
    ),
    # Russian notification: only "configure all notification types in your settings"
    # ("настроить все типы оповещений"); no unsubscribe wording in the body.
    ("mailing_list_misc/mail-parser__mail_test_6.eml", {"1": None}),
    # Plain list posts without a footer.
    ("mailing_list_misc/spamassassin__002.eml", {"1": None}),
    ("mailing_list_misc/spamassassin__base64.txt.eml", {"1": None}),  # part 2 is an attachment
    ("mailing_list_misc/stalwart-mail-parser__thirdparty_014.eml", {"1": None, "2": None}),
    # "you can subscribe to the mailing list at http://.../listinfo/..." -- subscribe, not unsubscribe.
    ("mailing_list_misc/spamassassin__mailman_message.txt.eml", {"1": None}),
    # "To UNSUBSCRIBE, email to debian-chinese-gb-request@..." -- an address, no URL to click.
    ("mailing_list_misc/spamassassin__cjk_gb2312.2.eml", {"1": None}),
    # A blank line inside the header block pushes "List-Unsubscribe: <http://...>" into the
    # body, so the reader does see an unsubscribe URL on the same line as the word.
    (
        "mailing_list_misc/spamassassin__005.eml",
        {"1": "http://MailMan.RWTH-Aachen.DE/mailman/listinfo/procmail"},
    ),
]

# The corpus is part of the workspace (../shared): missing means broken, not skipped.
assert NEWSLETTERS.is_dir(), f"shared corpora not found at {NEWSLETTERS}"


@pytest.mark.parametrize(("name", "expected"), CORPUS_CASES, ids=[c[0].split("/")[-1] for c in CORPUS_CASES])
def test_corpus_newsletter(name: str, expected: dict[str, str | None]) -> None:
    assert found_per_part(load(NEWSLETTERS / name)) == expected


def test_corpus_table_covers_every_message() -> None:
    on_disk = {str(p.relative_to(NEWSLETTERS)) for p in NEWSLETTERS.glob("*/*.eml")}
    assert on_disk == {name for name, _ in CORPUS_CASES}


# -- HTML rules -------------------------------------------------------------------------

U = "https://x.example/u"

HTML_CASES = [
    (f'<a href="{U}">Unsubscribe</a>', U),
    (f'<a href="{U}">UNSUBSCRIBE HERE</a>', U),
    (f'<a href="{U}">Newsletter\n  abbestellen</a>', U),
    (f'<a href="{U}">Opt-Out</a>', U),
    (f'<a href="{U}">se d&eacute;sabonner</a>', U),
    (f'<a href="{U}">desinscrire</a>', U),  # accent left out
    (f'<a href="{U}">Disiscriviti</a>', U),
    (f'<a href="{U}">Afmelden</a>', U),
    (f'<a href="{U}">Wypisz się</a>', U),
    (f'<a href="{U}">Odhlásit</a>', U),
    (f'<a href="{U}">Avsluta prenumeration</a>', U),
    (f'<a href="{U}">Descadastrar</a>', U),
    (f'<a href="{U}">Ab&shy;mel&shy;den</a>', U),
    ('<a href="mailto:off@x.example">unsubscribe</a>', "mailto:off@x.example"),
    (f'<p>To unsubscribe, <a href="{U}">click here</a>.</p>', U),
    (f'<p><a href="{U}">Click here</a> to unsubscribe.</p>', U),
    (f'<p>Keine Mails mehr?<br>Hier <a href="{U}">klicken</a> zum Abmelden</p>', U),
    (f'<td>Pour vous désabonner,</td><td><a href="{U}">cliquez ici</a></td>', U),
    # Not links a reader could use
    ('<a href="javascript:unsub()">Unsubscribe</a>', None),
    ('<a href="/relative">Unsubscribe</a>', None),
    (f'<a href="{U}">Subscribe</a>', None),
    (f'<a href="{U}">resubscribe</a>', None),
    (f'<a href="{U}"><img src="x.png" alt="Unsubscribe"></a>', None),
    (f'<a href="{U}" title="Unsubscribe">here</a>', None),
    (f'<div style="display:none">Unsubscribe <a href="{U}">here</a></div>', None),
    (f'<span style="display:none">unsubscribe</span> <a href="{U}">here</a>', None),
    (f'<!-- unsubscribe --><a href="{U}">here</a>', None),
    (f'<style>.u{{display:none}}</style><p>To unsubscribe <a class="u" href="{U}">click</a></p>', None),
    (f'<p>unsubscribe</p><p>{"x " * 60}</p><a href="{U}">here</a>', None),  # too far away
    (f'<p>unsubscribe</p><p>a</p><p>b</p><a href="{U}">here</a>', None),  # two line breaks away
    # The word is another link's text: it describes that link, not its neighbour.
    (
        f'<a href="https://x.example/settings">Unsubscribe settings page</a> | <a href="{U}">Shop</a>',
        "https://x.example/settings",
    ),
    (f'<a href="javascript:x()">Unsubscribe</a> | <a href="{U}">Privacy</a>', None),
]


@pytest.mark.parametrize(("markup", "expected"), HTML_CASES)
def test_html_rules(markup: str, expected: str | None) -> None:
    assert find_unsubscribe_link(html(markup)) == expected


def test_html_prefers_link_nearest_to_the_word() -> None:
    markup = '<p><a href="https://x.example/shop">Shop</a> - To unsubscribe <a href="https://x.example/u">click</a></p>'
    assert find_unsubscribe_link(html(markup)) == "https://x.example/u"


def test_html_registered_prefix() -> None:
    markup = '<a href="https://x.example/shop">Shop</a> <a href="https://esp.example/m/42">Settings</a>'
    assert find_unsubscribe_link(html(markup)) is None
    assert find_unsubscribe_link(html(markup), "https://esp.example/m/") == "https://esp.example/m/42"
    assert find_unsubscribe_link(html(markup), "HTTPS://ESP.EXAMPLE/m/") == "https://esp.example/m/42"
    assert find_unsubscribe_link(html(markup), "https://esp.example/other/") is None
    # An empty <a> with the prefix is nothing a reader could click.
    assert (
        find_unsubscribe_link(html('<a href="https://esp.example/m/1"></a>'), "https://esp.example/m/")
        is None
    )


# -- plain text rules ------------------------------------------------------------------------

TEXT_CASES = [
    (f"Unsubscribe: {U}", U),
    (f"To unsubscribe visit\n{U}", U),
    (f"To unsubscribe\nfrom this list\nvisit {U}", U),  # two lines below
    (f"{U}\n\nunsubscribe above", U),
    (f"unsubscribe\na\nb\nc\n{U}", None),  # four lines below
    (f"Abmelden: <{U}>.", U),
    (f"Unsubscribe ({U}).", U),
    (f"unsubscribe: {U}?a=(1)", f"{U}?a=(1)"),
    (f"Zum Abbestellen\r\nhier klicken: {U}", U),
    ("Unsubscribe by email: off@x.example", None),
    ("Unsubscribe: ftp://x.example/u", None),
    (f"Subscribe here: {U}", None),
    (f"Shop: {U}", None),
    (f"{U}/unsubscribe", f"{U}/unsubscribe"),  # the URL itself says it, and the reader sees it
    (f"Shop: https://x.example/shop\nUnsubscribe: {U}", U),
    ("Unsubscribe: https://", None),
    ("Unsubscribe: http://[::1 or http://[x", None),  # urlsplit raises on these
    (f"Unsubscribe: http://[::1 or {U}", U),
]


@pytest.mark.parametrize(("text", "expected"), TEXT_CASES)
def test_text_rules(text: str, expected: str | None) -> None:
    assert find_unsubscribe_link(plain(text)) == expected


def test_text_registered_prefix() -> None:
    text = "Settings: https://esp.example/m/42\nShop: https://x.example/shop"
    assert find_unsubscribe_link(plain(text)) is None
    assert find_unsubscribe_link(plain(text), "https://esp.example/m/") == "https://esp.example/m/42"


# -- words ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", UNSUBSCRIBE_WORDS)
def test_every_word_matches_itself_in_any_case_and_spacing(word: str) -> None:
    assert mentions_unsubscribe(f"Bitte hier {word}.")
    assert mentions_unsubscribe(word.upper())
    assert mentions_unsubscribe(word.replace(" ", "\n   "))
    assert mentions_unsubscribe(unicodedata.normalize("NFD", word))  # decomposed accents


@pytest.mark.parametrize(
    "text",
    ["subscribe", "resubscribe", "unsubscribed-ish-word-unsubscribers", "Abmeldeformular", "baja california"],
)
def test_words_do_not_match_inside_other_words(text: str) -> None:
    assert not mentions_unsubscribe(text)


@pytest.mark.parametrize(
    ("url", "prefix", "expected"),
    [
        ("https://esp.example/u/1", "https://esp.example/u/", True),
        ("https://ESP.example/u/1", "https://esp.example/u/", True),
        ("https://esp.example/U/1", "https://esp.example/u/", False),  # paths are case-sensitive
        ("https://esp.example.evil/u/1", "https://esp.example", False),
        ("https://esp.example/u/1", "https://esp.example", True),
        ("https://esp.example@evil.example/u/1", "https://esp.example", False),
        ("http://esp.example/u/1", "https://esp.example/u/", False),
        ("https://esp.example/u?id=1", "https://esp.example/u?id=", True),
        ("https://esp.example/u/1", None, False),
        ("https://esp.example/u/1", "", False),
        ("https://esp.example/u/1", "esp.example/u/", False),
    ],
)
def test_has_registered_prefix(url: str, prefix: str | None, expected: bool) -> None:
    assert has_registered_prefix(url, prefix) is expected


# -- List-Unsubscribe / List-Unsubscribe-Post ----------------------------------------------------

PARSE_CASES = [
    ("<https://x.example/u>", ["https://x.example/u"]),
    (
        "<mailto:u@x.example?subject=unsub>, <https://x.example/u>",
        ["mailto:u@x.example?subject=unsub", "https://x.example/u"],
    ),
    ("<https://x.example/\r\n very/long>", ["https://x.example/very/long"]),  # folded inside the brackets
    ("(comment) <https://x.example/u> (another)", ["https://x.example/u"]),
    ("https://x.example/u", []),  # no angle brackets: not RFC 2369
    ("<>", []),
    ("", []),
    (None, []),
]


@pytest.mark.parametrize(("value", "expected"), PARSE_CASES)
def test_parse_list_unsubscribe(value: str | None, expected: list[str]) -> None:
    assert parse_list_unsubscribe(value) == expected


GOOD_LU = "<mailto:u@x.example>, <https://x.example/u?t=1>"
ONE_CLICK = "List-Unsubscribe=One-Click"

HEADER_CASES = [
    (GOOD_LU, ONE_CLICK, None),
    ("<https://x.example/u>", f"  {ONE_CLICK}\r\n ", None),  # surrounding whitespace is fine
    ("<HTTPS://x.example/u>", ONE_CLICK, None),
    (None, ONE_CLICK, ["List-Unsubscribe header is missing"]),
    ("   ", ONE_CLICK, ["List-Unsubscribe header is missing"]),
    ("<mailto:u@x.example>", ONE_CLICK, ["no https: URI (only mailto:)"]),
    ("<http://x.example/u>, <mailto:u@x.example>", ONE_CLICK, ["no https: URI (only http:, mailto:)"]),
    ("<https:///nohost>", ONE_CLICK, ["no https: URI"]),
    ("https://x.example/u", ONE_CLICK, ["no URI in angle brackets"]),
    (GOOD_LU, None, ["List-Unsubscribe-Post header is missing"]),
    (GOOD_LU, "List-Unsubscribe=one-click", ["must be exactly"]),
    (GOOD_LU, "List-Unsubscribe = One-Click", ["must be exactly"]),
    (GOOD_LU, "List-Unsubscribe=One-Click; foo", ["must be exactly"]),
    (GOOD_LU, "", ["must be exactly"]),
    (None, None, ["List-Unsubscribe header is missing", "List-Unsubscribe-Post header is missing"]),
]


@pytest.mark.parametrize(("lu", "lup", "reasons"), HEADER_CASES)
def test_check_list_unsubscribe_headers(lu: str | None, lup: str | None, reasons: list[str] | None) -> None:
    result = check_list_unsubscribe_headers(lu, lup)
    if reasons is None:
        assert result is None
    else:
        assert result is not None
        for reason in reasons:
            assert reason in result


# (file, parsed List-Unsubscribe URIs, header check passes)
CORPUS_HEADERS = [
    (
        "embedded_in_sisimai_bounces/lhost-postfix-80__original_headers.txt",
        ["mailto:xxxx@lu.xxxx.com"],
        False,
    ),
    (
        "embedded_in_sisimai_bounces/rfc3464-07__original_headers.txt",
        [
            "http://mail.example.org/mailman/listinfo/neko-list",
            "mailto:neko-list-request@example.org?subject=unsubscribe",
        ],
        False,
    ),
    ("embedded_in_sisimai_bounces/rhost-cox-01__original_headers.txt", [], False),  # URL without brackets
    (
        "embedded_in_sisimai_bounces/rhost-franceptt-12__original_headers.txt",
        ["mailto:xxxx@lu.xxxx.net"],
        False,
    ),
    (
        "mailing_list_misc/mail-parser__mail_test_13.eml",  # Mailchimp with RFC 8058 one-click
        [
            "https://cimanagementconference.us14.list-manage.com/unsubscribe?u=3f21937f0f636c8cec1db30bf"
            "&id=9bc9573bd6&e=042ea43672&c=199bb58d0b",
            "mailto:unsubscribe-mc.us14_3f21937f0f636c8cec1db30bf.199bb58d0b-042ea43672@mailin.mcsv.net"
            "?subject=unsubscribe",
        ],
        True,
    ),
    (
        "mailing_list_misc/mail-parser__mail_test_5.eml",  # https, but no List-Unsubscribe-Post
        ["https://t2d857ce9.emailsys2a.net/136/1071579/1264/4531494/9012/3ee5635269/unsubscribe.html"],
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "uris", "ok"), CORPUS_HEADERS, ids=[c[0].split("/")[-1] for c in CORPUS_HEADERS]
)
def test_corpus_headers(name: str, uris: list[str], ok: bool) -> None:
    msg = load(NEWSLETTERS / name)
    assert parse_list_unsubscribe(msg.get("List-Unsubscribe")) == uris
    result = check_list_unsubscribe_headers(msg.get("List-Unsubscribe"), msg.get("List-Unsubscribe-Post"))
    assert (result is None) is ok


# -- the plain-text search looks for words only near URLs ------------------------------
# _find_in_text maps and searches only the lines around its URLs (_line_stretches,
# _word_spans_near). These compare that with the whole-text search it replaces.

import re  # noqa: E402
from bisect import bisect_right  # noqa: E402
from unittest import mock  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gateway.mime import unsubscribe as unsub  # noqa: E402

_NEAR = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_BREAKS = ["\r\n", "\n", "\r", "\n\r", "\r\r\n"]
_near_pieces = st.one_of(
    st.sampled_from(UNSUBSCRIBE_WORDS),
    st.sampled_from(UNSUBSCRIBE_WORDS).map(str.upper),
    st.sampled_from(UNSUBSCRIBE_WORDS).map(lambda w: unicodedata.normalize("NFD", w)),
    st.sampled_from(["se", "opt", "no longer", "ne plus", "darse", "de", "wypisz", "meld", "dig"]),
    st.sampled_from([" ", "  ", "-", "\u2010", "'", "\u2019", "\t", "\u00a0", "\u2028"]),
    st.sampled_from(_BREAKS),
    st.sampled_from(
        [
            "https://shop.example/u?x=1",
            "http://a.example/abmelden",
            "x",
            "42",
            ".",
            ",",
            ":",
            "?",
            "!",
            "(",
            ")",
            "3abmelden",
            "STRASSE",
            "Straße",
            "ß",
            "\u0301",
            "ОТПИСАТЬСЯ",
            "ª",
            "_",
            "©",
        ]
    ),
)
_near_texts = st.lists(_near_pieces, max_size=40).map("".join)


def _line_of(text: str) -> list[int]:
    starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    return [bisect_right(starts, p) - 1 for p in range(len(text) + 1)]


@_NEAR
@given(_near_texts, st.lists(st.integers(0, 2000), max_size=6))
def test_word_spans_near_are_the_whole_text_spans(text: str, picks: list[int]) -> None:
    whole = unsub._word_spans(text)
    cuts = [0] + [i for i, ch in enumerate(text) if not ch.isalnum()] + [len(text)]
    stretches = []
    for a, b in zip(picks[::2], picks[1::2], strict=False):
        hi = cuts[b % len(cuts)]
        stretches.append((min(a % (len(text) + 1), hi), hi))
    near = unsub._word_spans_near(text, stretches)
    assert set(near) <= set(whole)
    assert [w for w in whole if any(lo <= w[0] < hi for lo, hi in stretches)] == [
        w for w in near if any(lo <= w[0] < hi for lo, hi in stretches)
    ]


@_NEAR
@given(_near_texts, st.lists(st.integers(0, 2000), max_size=5), st.integers(0, 3))
def test_line_stretches_hold_every_position_close_enough(text: str, picks: list[int], lines: int) -> None:
    line = _line_of(text)
    # Positions not inside a line break (as URL starts are not).
    allowed = [p for p in range(len(text) + 1) if p == len(text) or text[p] not in "\r\n"]
    positions = sorted({allowed[p % len(allowed)] for p in picks})
    stretches = unsub._line_stretches(text, positions, lines)
    for _, hi in stretches:
        assert hi == len(text) or text[hi] in "\r\n"
    for pos in positions:
        for q in range(len(text)):  # where a word can start: not in a line break
            if text[q] not in "\r\n" and abs(line[q] - line[pos]) <= lines:
                assert any(lo <= q < hi for lo, hi in stretches), (pos, q)


@pytest.mark.parametrize(
    "text, expected",
    [
        # A phrase that starts three lines above the URL and runs into the line two above: the
        # whole-text search sees one match, three lines away, not "désinscrire" two lines away.
        ("se\ndésinscrire\nc\nhttps://x.example/u", None),
        ("x.\nse\ndésinscrire\nc\nhttps://x.example/u", None),
        ("NEWSLETTER\r\nAbbestellen\r\nc\r\nhttps://x.example/u", None),
        ("Newsletter  \n abbestellen\nhttps://x.example/u", "https://x.example/u"),
        ("se\n\ndésinscrire\nb\nc\nhttps://x.example/u", None),
        ("OPT\r\nOUT\r\na\r\nb\r\nhttps://x.example/u", None),
        ("ABMELDEN\r\n\r\n\r\nhttps://x.example/u", None),
        ("ABMELDEN\r\n\r\nhttps://x.example/u", "https://x.example/u"),
        ("ABMELDEN\r\r\nhttps://x.example/u", "https://x.example/u"),
        ("ABMELDEN\n\r\r\nhttps://x.example/u", None),
        ("Ab-\nmelden. 12 Straße\n\nhttps://x.example/u", None),
        ("abmelden" + " x" * 500 + "\nhttps://x.example/u", "https://x.example/u"),
        ("a " * 400 + "wypisz\nsię\nx\nhttps://x.example/u", None),
        ("a " * 400 + "wypisz\nsię\nhttps://x.example/u", "https://x.example/u"),
        ("STRASSE 3abmelden\nhttps://x.example/u", None),
        ("des\u0301inscrire\nhttps://x.example/u", "https://x.example/u"),
        ("ОТПИСАТЬСЯ: https://x.example/u", "https://x.example/u"),
    ],
)
def test_text_words_near_urls(text: str, expected: str | None) -> None:
    part = TextPart("text/plain", text, "1", False)
    with mock.patch.object(unsub, "_NEAR_MIN_CHARS", 0):
        assert find_unsubscribe_link(part) == expected
    # The same with the whole-text word search.
    with mock.patch.object(unsub, "_word_spans_near", lambda text, _: unsub._word_spans_slow(text)):
        assert find_unsubscribe_link(part) == expected


def test_token_regexes_find_what_the_whole_regex_finds() -> None:
    tables = unsub._fast_tables()
    assert tables is not None
    for token in tables.first_tokens:
        for phrase in tables.phrases_of[token]:
            for text in (phrase, phrase.upper(), f"x {phrase}, y"):
                start = text.lower().find(phrase.lower()[:1])
                whole = unsub._WORDS_RE.match(text, start)
                if whole is not None:
                    assert unsub._token_regex(token).match(text, start).span() == whole.span()


def test_a_stretch_ending_before_a_combining_mark_still_finds_the_word() -> None:
    # Found by the randomised test above: the stretch ended at the accent of "d\u0301..."
    text = "unsubscribese d\u0301\u00e9sinscrire"
    assert unsub._word_spans(text) == [(14, 26)]
    assert unsub._word_spans_near(text, [(0, 15)]) == [(14, 26)]
