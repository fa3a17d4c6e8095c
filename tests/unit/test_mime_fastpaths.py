"""The fast paths of the MIME helpers and policies give exactly what the original code gives.

Each original (slow, obviously right) implementation is kept here as a private reference,
and the optimised function is compared with it on random texts built from the things that
matter: the unsubscribe phrases, case, accents (composed and decomposed), the characters
re.IGNORECASE and str.casefold treat specially, separators, punctuation, line breaks, URLs
and imprint values; and on the real mail of the fixtures and the shared corpora.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
import unicodedata
from bisect import bisect_left, bisect_right
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.core.transaction import SessionInfo, Transaction
from gateway.core.verdict import Verdict
from gateway.mime import imprint as imp
from gateway.mime import unsubscribe as unsub
from gateway.mime.html import render
from gateway.mime.parts import TextPart, body_alternatives, iter_text_parts
from policies import message_format
from policies._text import body_parts

ROOT = Path(__file__).resolve().parents[2]
REAL_MAIL = sorted((ROOT / "tests" / "fixtures").rglob("*.eml")) + sorted(
    (ROOT / ".." / "shared" / "corpora").rglob("*.eml")
)
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- references: the original implementations ---------------------------------------


def _ref_letter_class(base: str) -> str:
    variants = {base}
    for ch in unsub._ACCENTED:
        if unicodedata.normalize("NFD", ch)[0] == base:
            variants.add(ch)
    marks = "[\u0300-\u036f]*"
    if len(variants) == 1:
        return re.escape(base) + marks
    return "[" + "".join(sorted(variants)) + "]" + marks


def _ref_phrase_pattern(phrase: str) -> str:
    parts: list[str] = []
    for ch in unicodedata.normalize("NFC", phrase.lower()):
        if ch in " -":
            parts.append(r"[\s\-‐‑]*")
        elif ch == "'":
            parts.append(r"['’]?\s*")
        else:
            base = unicodedata.normalize("NFD", ch)[0]
            parts.append(_ref_letter_class(base) if base.isalpha() else re.escape(ch))
    return "".join(parts)


def _ref_words_re() -> re.Pattern[str]:
    ordered = sorted(set(unsub.UNSUBSCRIBE_WORDS), key=len, reverse=True)
    alternatives = "|".join(_ref_phrase_pattern(w) for w in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


_REF_WORDS_RE = _ref_words_re()


def ref_word_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _REF_WORDS_RE.finditer(text)]


def ref_find_in_text(text: str, prefix: str | None) -> str | None:
    urls = [(m.start(), unsub._clean_url(m.group())) for m in unsub._TEXT_URL.finditer(text)]
    urls = [(pos, url) for pos, url in urls if unsub._has_host(url)]
    for _, url in urls:
        if unsub.has_registered_prefix(url, prefix):
            return url
    words = ref_word_spans(text)
    if not words or not urls:
        return None
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    word_lines = [bisect_right(line_starts, w[0]) - 1 for w in words]
    word_starts = [w[0] for w in words]
    # A phrase that says unsubscribe beats a preference centre's (unsub._tier), then nearness.
    best: tuple[int, int, int, str] | None = None
    for pos, url in urls:
        line = bisect_right(line_starts, pos) - 1
        lo = bisect_left(word_lines, line - unsub.TEXT_LINE_WINDOW)
        hi = bisect_right(word_lines, line + unsub.TEXT_LINE_WINDOW)
        for index in range(lo, hi):
            key = (
                unsub._tier(text, words[index]),
                abs(word_lines[index] - line),
                abs(word_starts[index] - pos),
                url,
            )
            if best is None or key[:3] < best[:3]:
                best = key
    return best[3] if best else None


def ref_find_unsubscribe_link(part: TextPart, prefix: str | None) -> str | None:
    # The HTML side is unchanged but for the word search under it.
    with (
        mock.patch.object(unsub, "_word_spans", ref_word_spans),
        mock.patch.object(unsub, "_find_in_text", ref_find_in_text),
    ):
        return unsub.find_unsubscribe_link(part, prefix)


_REF_TRANSCRIBE = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "\u00a0": " "})
_REF_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)


def ref_fold(text: str) -> str:
    text = unicodedata.normalize("NFC", text).translate(_REF_INVISIBLE).casefold().translate(_REF_TRANSCRIBE)
    text = re.sub(r"[^\w@&]+|_", " ", text)
    return re.sub(r"strasse(?![a-z0-9])", "str", text)


def ref_contains(folded_text: str, value: str) -> bool:
    tokens = re.findall(r"\d+|[^\W\d_]+|[@&]", ref_fold(value))
    if not tokens:
        return False
    body = r"\s*".join(re.escape(t) for t in tokens)
    return re.search(rf"(?<![^\W_]){body}(?![^\W_])", folded_text) is not None


def ref_has_email(text: str, email: str | None) -> bool:
    if not email or "@" not in email:
        return False
    address = re.escape(email.strip().casefold())
    pattern = rf"(?<![\w.+\-]){address}(?![\w\-]|\.\w)"
    return re.search(pattern, text.translate(_REF_INVISIBLE).casefold()) is not None


def ref_missing_imprint_fields(visible_text: str, imprint: imp.Imprint) -> list[str]:
    folded = ref_fold(visible_text)
    missing = []
    company = imp._company_value(imprint)
    if company is None or not ref_contains(folded, company):
        missing.append(imp.FIELD_COMPANY)
    if not imprint.street or not ref_contains(folded, imprint.street):
        missing.append(imp.FIELD_STREET)
    if not (
        imprint.postcode
        and imprint.city
        and (
            ref_contains(folded, f"{imprint.postcode} {imprint.city}")
            or ref_contains(folded, f"{imprint.city} {imprint.postcode}")
        )
    ):
        missing.append(imp.FIELD_POSTCODE_CITY)
    if not (ref_has_email(visible_text, imprint.email) or imp._has_phone(visible_text, imprint.phone)):
        missing.append(imp.FIELD_CONTACT)
    return missing


def ref_message_format(txn: Transaction) -> Verdict:
    # Bare CR/LF is the engine's refusal, before any policy (test_policy_message_format).
    raw = txn.raw
    problems = []
    for name in message_format.EXACTLY_ONE:
        count = len(txn.headers(name))
        if count != 1:
            problems.append(
                f"{'no' if count == 0 else count} {name} header"
                f"{'s' if count > 1 else ''}; exactly one is required"
            )
    for name in message_format.AT_MOST_ONE:
        count = len(txn.headers(name))
        if count > 1:
            problems.append(f"{count} {name} headers; at most one is allowed")
    for number, line in enumerate(raw.split(b"\r\n"), start=1):
        if len(line) > message_format.MAX_LINE:
            problems.append(
                f"line {number} is {len(line)} octets long; "
                f"lines may have at most {message_format.MAX_LINE} octets"
            )
            break
    if problems:
        return Verdict.reject(
            "Message format: " + "; ".join(problems),
            "RFC 5322 format: " + "; ".join(problems),
            enhanced="5.6.0",
        )
    return Verdict.ok(
        "format checked: From/Date/Message-ID once, To/Subject at most once, lines within 998 octets"
    )


# -- random texts --------------------------------------------------------------------

# Characters that case-insensitive matching, casefolding or the fast paths treat specially:
# Latin-1 and other accented letters, İ ı ſ K (Kelvin) Å (Angstrom) ẞ, Cyrillic and its
# rounded variants, ligatures, final sigma, combining marks, invisible characters, the
# separators and apostrophes of the phrase patterns, CJK and emoji.
SPECIAL = list(
    "éÉèàÀäÄöÖüÜßẞçÇñøØåÅąĄęłŁšŠžŽůŮÿŸœæ"
    "İıſKÅ"
    "оОᲂсСᲃтТᲄᲅпя"
    "ﬁﬆσςΣµμ"
    "漢字😀"
    "\u0301\u0308\u0327\u034f"
    "\u00ad\u200b\u200c\u200d\u2060\ufeff"
    "\u00a0\u2003\u3000\u2028"
    "-‐‑–—'’“”„«»_@&./:;,!?()<>[]#0123456789"
) + [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\r\r\n", "x", "Text", "mehr", "ne", "se", "opt"]
URLS = [
    "https://shop.example/u?x=1",
    "http://shop.example/abmelden",
    "HTTPS://SHOP.EXAMPLE/U",
    "https://shop.example/unsubscribe).",
    "httpſ://shop.example/",
    "http://[::1",
    "https://",
    "xhttp://shop.example/a",
    "https://a.example/r?to=http://b.example/u",
    "mailto:u@shop.example",
]


def _vary_phrase(phrase: str, style: int, separator: str) -> str:
    if style & 1:
        phrase = phrase.upper()
    if style & 2:
        phrase = phrase.title()
    if style & 4:
        phrase = unicodedata.normalize("NFD", phrase)
    if style & 8:  # accents a sender forgot or added
        phrase = unicodedata.normalize("NFD", phrase).encode("ascii", "ignore").decode()
    if style & 16:
        phrase = phrase.translate(str.maketrans("aeiouscnk", "áéíóúšçñK"))
    if style & 32:
        phrase = phrase.replace(" ", separator)
    if style & 64:
        phrase = phrase.replace("s", "ſ").replace("i", "ı").replace("o", "ᲂ")
    return phrase


# Decomposed accents send _word_spans down its slow path, and phrases written together
# ("optout") are tokens of their own on its fast path: make sure both come up often.
DECOMPOSED = [d for w in unsub.UNSUBSCRIBE_WORDS if (d := unicodedata.normalize("NFD", w)) != w]
JOINED = [re.sub(r"[ \-']", "", w) for w in unsub.UNSUBSCRIBE_WORDS if re.search(r"[ \-']", w)]
phrases = st.one_of(
    st.builds(
        _vary_phrase,
        st.sampled_from(unsub.UNSUBSCRIBE_WORDS),
        st.integers(0, 127),
        st.sampled_from(["", "  ", "\n", "\r\n ", "-", "‐", "'", "\u2003", "_"]),
    ),
    st.sampled_from(DECOMPOSED),
    st.sampled_from(JOINED),
)
pieces = st.one_of(phrases, st.sampled_from(SPECIAL), st.sampled_from(URLS), st.text(max_size=3))


def _latin1(text: str) -> bool:
    return all(ch <= "\xff" for ch in text)


# Latin-1 text takes the bytes shortcut of _word_spans, the rest its encoding map.
latin1_pieces = st.one_of(phrases.filter(_latin1), st.sampled_from([p for p in SPECIAL if _latin1(p)]))
texts = st.one_of(
    st.lists(pieces, max_size=25).map("".join), st.lists(latin1_pieces, max_size=25).map("".join)
)

EMAILS = ["info@muster.example", "Info@Muster.Example", "a.b+c@x-y.example", "jürgen@müller.example", "x@y"]
IMPRINT_VALUES = [
    "Muster Handels GmbH",
    "GmbH",
    "Muster GmbH & Co. KG",
    "Hauptstraße 5",
    "Haupt-Str. 5",
    "Strasse 1",
    "Straßenweg 2",
    "10115",
    "Berlin",
    "München",
    "Ærø",
    "İzmir",
    "ﬁrma",
    "Σοφία",
    "a_b",
    "x1y2",
    "@",
    "&",
    *EMAILS,
]


def _vary_value(value: str, style: int, separator: str) -> str:
    if style & 1:
        value = value.upper()
    if style & 2:
        value = unicodedata.normalize("NFD", value)
    if style & 4:
        value = value.replace(" ", separator)
    if style & 8:
        value = value.replace("ß", "ss").replace("ü", "ue")
    if style & 16:
        value = value.replace("a", "a\u00ad").replace("t", "t\u200b")
    return value


values = st.builds(
    _vary_value,
    st.sampled_from(IMPRINT_VALUES),
    st.integers(0, 31),
    st.sampled_from(["", "  ", "\n", "-", "_", ". ", "\u00a0", ",\r\n"]),
)
# What stands right before and after a value decides whether it stands alone.
NEIGHBOURS = ["", " ", "x", "é", ".", "+", "-", "_", "0", "@", "\u00ad", ".x", ">", "\u0301"]
mentions = st.builds(
    lambda a, v, b: a + v + b, st.sampled_from(NEIGHBOURS), values, st.sampled_from(NEIGHBOURS)
)
# Latin-1 text takes the bytes shortcut of _casefolded.
LATIN1 = "aAeEsSßµÿŸÀàÉé\u00ad\u00a0 x5.@&_-\n"
imprint_texts = st.one_of(
    st.lists(st.one_of(mentions, st.sampled_from(SPECIAL), st.text(max_size=3)), max_size=20).map("".join),
    st.lists(
        st.one_of(
            mentions.filter(lambda v: v.isascii() or v.encode("latin-1", "ignore") == v),
            st.text(alphabet=LATIN1, max_size=4),
        ),
        max_size=12,
    ).map("".join),
)
optional_values = st.one_of(st.none(), values)
imprints = st.builds(
    imp.Imprint,
    company=optional_values,
    legal_form=optional_values,
    street=optional_values,
    postcode=optional_values,
    city=optional_values,
    email=st.one_of(st.none(), st.sampled_from([*EMAILS, "@", "x"])),
    phone=st.sampled_from([None, "+49 30 1234567", "030 12345", "12"]),
)


def real_texts() -> list[str]:
    found = []
    for path in REAL_MAIL:
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(path.read_bytes())
        for part in iter_text_parts(msg):
            found.append(part.text)
            if part.content_type == "text/html":
                rendered = render(part.text)
                found.append(rendered.text)
                found.extend(span.link.text for span in rendered.links)
    return found


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = real_texts()
    assert len(texts) > 100  # the shared corpora are there
    return texts


# -- unsubscribe ----------------------------------------------------------------------


def test_phrase_regex_is_unchanged() -> None:
    assert unsub._WORDS_RE.pattern == _REF_WORDS_RE.pattern
    assert unsub._WORDS_RE.flags == _REF_WORDS_RE.flags


def test_fast_phrase_search_is_on() -> None:
    # If it could not be exact it would be off (None), and everything slow again.
    tables = unsub._fast_tables()
    assert tables is not None
    assert b"abmelden" in tables.first_tokens and b"optout" in tables.first_tokens


def test_no_letter_beyond_the_bmp_matches_a_phrase_letter() -> None:
    # _fast_tables asks the regex engine about BMP characters only.
    letters = "".join(
        sorted(
            {
                ch
                for phrase in unsub.UNSUBSCRIBE_WORDS
                for ch in unicodedata.normalize("NFD", phrase.lower())
                if ch.isalpha()
            }
        )
    )
    astral = "".join(map(chr, range(0x10000, 0x110000)))
    assert re.findall("[" + re.escape(letters) + "]", astral, re.IGNORECASE) == []


@FAST
@given(texts)
def test_word_spans_equal_the_regex(text: str) -> None:
    assert unsub._word_spans(text) == ref_word_spans(text)
    assert unsub.mentions_unsubscribe(text) == (_REF_WORDS_RE.search(text) is not None)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abmelden",
        "Abmelden:",
        "xabmelden",
        "abmeldenx",
        "ab-melden",
        "opt out",
        "OPT\u2003-OUT",
        "opt\n\n out",
        "optout",
        "désinscrire",
        "de\u0301sinscrire",
        "DÉSINSCRIRE",
        "desinscrire",
        "annullare l’iscrizione",
        "annullare l'  iscrizione",
        "annullareliscrizione",
        "ne plus recevoir",
        "ne  plus\nrecevoir",
        "neplusrecevoir",
        "ОТПИСАТЬСЯ",
        "ᲂтписка",
        "оᲅписка",
        "unſubscribe",
        "unsubſcribe here",
        "İ unsubscribe",
        "“abmelden”",
        "_abmelden",
        "abmelden_",
        "0abmelden",
        "abmelden😀",
        "漢abmelden",
        "abmelden\u0301",
        "wypisać się",
        "WYPISAĆ SIĘ",
        "odhlášení",
        "afmelden af te melden af te  melden",
        "unsubscribe unsubscribe here unsubscribing",
    ],
)
def test_word_spans_examples(text: str) -> None:
    assert unsub._word_spans(text) == ref_word_spans(text)


def test_every_case_and_accent_variant_of_every_phrase_letter() -> None:
    # Each character re.IGNORECASE lets stand for a phrase letter (İ, ſ, K, Å, ᲂ, ...),
    # in each position of each phrase, in Latin-1 text and in other text: this covers
    # every entry of the fast path's character tables.
    bmp = "".join(map(chr, range(0x10000)))
    marks = "[\u0300-\u036f]*"
    variants: dict[str, list[str]] = {}
    for phrase in unsub.UNSUBSCRIBE_WORDS:
        phrase = unicodedata.normalize("NFC", phrase.lower())
        for i, ch in enumerate(phrase):
            base = unicodedata.normalize("NFD", ch)[0]
            if not base.isalpha():
                continue
            if base not in variants:
                letter = _ref_letter_class(base).removesuffix(marks)
                variants[base] = re.findall(letter, bmp, re.IGNORECASE)
            for variant in variants[base]:
                text = phrase[:i] + variant + phrase[i + 1 :]
                for context in ("{}", "x {}.", "{} 😀", "😀{}", "{}x", "“{}”"):
                    framed = context.format(text)
                    assert unsub._word_spans(framed) == ref_word_spans(framed), framed


def test_word_spans_on_real_mail(corpus: list[str]) -> None:
    for text in corpus:
        assert unsub._word_spans(text) == ref_word_spans(text), text[:200]
        decomposed = unicodedata.normalize("NFD", text)
        assert unsub._word_spans(decomposed) == ref_word_spans(decomposed)


@FAST
@given(texts)
def test_text_urls_equal_the_regex(text: str) -> None:
    fast = [m.span() for m in unsub._text_urls(text)]
    assert fast == [m.span() for m in unsub._TEXT_URL.finditer(text)]


@FAST
@given(st.one_of(texts, st.text(alphabet="\r\n x", max_size=30)), st.lists(st.integers(0, 400), max_size=8))
def test_line_numbers_differ_like_the_line_starts(text: str, picks: list[int]) -> None:
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    # A few positions anywhere, and every position (between the CR and LF of a CRLF too).
    for positions in (sorted({p % (len(text) + 1) for p in picks}), list(range(len(text) + 1))):
        absolute = [bisect_right(line_starts, p) - 1 for p in positions]
        relative = unsub._line_numbers(text, positions)
        assert relative == [line - absolute[0] for line in absolute]


@FAST
@given(texts, st.sampled_from([None, "https://shop.example", "http://shop.example/abmelden"]))
def test_find_in_plain_text_equals_the_original(text: str, prefix: str | None) -> None:
    part = TextPart("text/plain", text, "1", False)
    assert unsub.find_unsubscribe_link(part, prefix) == ref_find_unsubscribe_link(part, prefix)


html_pieces = st.one_of(
    pieces,
    st.sampled_from(
        [
            "<br>",
            "<p>",
            "</p>",
            "<div style='display:none'>",
            "</div>",
            "</a>",
            '<a href="https://shop.example/u">',
            '<a href="mailto:u@shop.example">',
            '<a href="https://other.example/x">',
            "<td>",
            "&nbsp;",
            "&shy;",
        ]
    ),
)


@FAST
@given(st.lists(html_pieces, max_size=25).map("".join), st.sampled_from([None, "https://shop.example"]))
def test_find_in_html_equals_the_original(html: str, prefix: str | None) -> None:
    part = TextPart("text/html", html, "1", False)
    assert unsub.find_unsubscribe_link(part, prefix) == ref_find_unsubscribe_link(part, prefix)


def test_find_unsubscribe_link_on_real_mail() -> None:
    for path in REAL_MAIL:
        raw = path.read_bytes()
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)
        for part in iter_text_parts(msg):
            for prefix in (None, "https://shop.example"):
                assert unsub.find_unsubscribe_link(part, prefix) == ref_find_unsubscribe_link(part, prefix), (
                    path
                )


# -- imprint ----------------------------------------------------------------------


def test_latin1_text_is_always_nfc() -> None:
    # _casefolded skips NFC for Latin-1 text: no character or pair changes under it.
    latin1 = [chr(c) for c in range(256)]
    for a in latin1:
        for b in latin1:
            assert unicodedata.normalize("NFC", a + b) == a + b


@FAST
@given(st.one_of(imprint_texts, texts, st.text(alphabet=st.characters(max_codepoint=255))))
def test_casefolded_equals_nfc_translate_casefold(text: str) -> None:
    nfc = unicodedata.normalize("NFC", text)
    assert imp._casefolded(text) == (nfc.translate(_REF_INVISIBLE).casefold(), nfc == text)


@FAST
@given(st.one_of(imprint_texts, values))
def test_fold_equals_the_original(text: str) -> None:
    assert imp._fold(text) == ref_fold(text)
    assert imp._PUNCT.sub(" ", imp._haystack(imp._casefolded(text)[0])) == ref_fold(text)


@FAST
@given(imprint_texts, values)
def test_contains_equals_the_original(text: str, value: str) -> None:
    haystack = imp._haystack(imp._casefolded(text)[0])
    assert imp._contains(haystack, value) == ref_contains(ref_fold(text), value)


@FAST
@given(
    st.sampled_from(EMAILS),
    st.integers(0, 31),
    st.sampled_from(NEIGHBOURS),
    st.sampled_from(NEIGHBOURS),
    st.lists(st.one_of(mentions, st.sampled_from(SPECIAL)), max_size=4),
)
def test_email_is_found_as_the_original_finds_it(
    address: str, style: int, before: str, after: str, noise: list[str]
) -> None:
    # Contact is the only field such a record can have: the email alone decides it.
    text = "".join(noise) + before + _vary_value(address, style, "") + after
    record = imp.Imprint(email=address)
    assert imp.missing_imprint_fields(text, record) == ref_missing_imprint_fields(text, record)


@pytest.mark.parametrize(
    "text",
    [
        "jürgen@müller.example",
        unicodedata.normalize("NFD", "jürgen@müller.example"),
        "JÜRGEN@MÜLLER.EXAMPLE",
        "xjürgen@müller.example",
        "jürgen@müller.example.x",
        "jürgen@müller.example.",
        "<jürgen@müller.example>",
        "j\u00adürgen@müller.example",
    ],
)
def test_email_examples(text: str) -> None:
    record = imp.Imprint(email="jürgen@müller.example")
    assert imp.missing_imprint_fields(text, record) == ref_missing_imprint_fields(text, record)


@FAST
@given(imprint_texts, imprints)
def test_missing_imprint_fields_equal_the_original(text: str, imprint: imp.Imprint) -> None:
    assert imp.missing_imprint_fields(text, imprint) == ref_missing_imprint_fields(text, imprint)


IMPRINT_RECORDS = [
    imp.Imprint(
        company="Muster Handels",
        legal_form="GmbH & Co. KG",
        street="Hauptstraße 5",
        postcode="10115",
        city="Berlin",
        email="info@muster-handels.example",
        phone="+49 30 1234567",
    ),
    imp.Imprint(
        company="Beispiel Shop GmbH",
        legal_form="GmbH",
        street="Hauptstraße 5",
        postcode="10115",
        city="Berlin",
        email="info@customer.example",
    ),
]


def test_missing_imprint_fields_on_real_mail(corpus: list[str]) -> None:
    for text in corpus:
        for record in IMPRINT_RECORDS:
            assert imp.missing_imprint_fields(text, record) == ref_missing_imprint_fields(text, record)


# -- message-format ---------------------------------------------------------------------

HEADERS = [
    b"From: a@shop.example\r\n",
    b"Date: Fri, 27 Nov 2026 10:00:00 +0100\r\n",
    b"Message-ID: <1@shop.example>\r\n",
    b"To: b@example.org\r\n",
    b"Subject: hi\r\n",
]
raw_pieces = st.one_of(
    st.sampled_from(HEADERS),
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"\r",
            b"\r\r\n",
            b"\n\r",
            b"\rX\n",
            b"\r\n\n\r",
            b"body",
            b" ",
            b"\r\n\r\n",
            b"x" * 997,
            b"y" * 999,
            b"\xc3\xa4",
        ]
    ),
    st.binary(max_size=4),
)


@FAST
@given(st.lists(raw_pieces, max_size=20).map(b"".join))
def test_message_format_equals_the_original(raw: bytes) -> None:
    txn = Transaction(session=SessionInfo(id="t"))
    txn.set_raw(raw)
    policy = message_format.MessageFormat()
    assert policy.check(txn, None) == ref_message_format(txn)  # type: ignore[arg-type]


# -- body parts shared between policies -------------------------------------------------------


def test_body_parts_are_decoded_once_per_message() -> None:
    raw = (ROOT / "tests" / "fixtures" / "mime" / "alternative.eml").read_bytes()
    txn = Transaction(session=SessionInfo(id="t"))
    txn.set_raw(raw)
    first, second = body_parts(txn), body_parts(txn)
    assert first == second == body_alternatives(txn.message)
    assert first is not second and all(a is b for a, b in zip(first, second, strict=True))
    txn.set_raw(raw.replace(b"alt-1", b"alt-2"))  # new bytes: parsed and decoded anew
    assert body_parts(txn) == body_alternatives(txn.message) != first
