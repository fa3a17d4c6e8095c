"""Unsubscribe checks: the visible link in a body part and the RFC 2369/8058 headers."""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from urllib.parse import urlsplit

from gateway.mime.html import LinkSpan, render
from gateway.mime.parts import TextPart

__all__ = [
    "ONE_CLICK_VALUE",
    "UNSUBSCRIBE_WORDS",
    "check_list_unsubscribe_headers",
    "find_unsubscribe_link",
    "has_registered_prefix",
    "mentions_unsubscribe",
    "parse_list_unsubscribe",
]

# Phrases that tell a reader "this is how you unsubscribe", in the languages
# of the ESP's customers. Matched case-insensitively, tolerant of whitespace,
# line breaks and hyphens between words and of missing accents ("desinscrire").
UNSUBSCRIBE_WORDS: tuple[str, ...] = (
    # English
    "unsubscribe", "unsubscribe here", "unsubscribing", "opt out", "opt-out", "optout",
    "remove me", "stop receiving", "no longer wish to receive", "no longer want to receive",
    # German
    "abmelden", "abmeldung", "abzumelden", "abbestellen", "abzubestellen", "newsletter abbestellen",
    "austragen", "auszutragen", "nicht mehr erhalten", "nicht mehr empfangen",
    # Spanish
    "darse de baja", "dar de baja", "darte de baja", "date de baja", "darme de baja",
    "cancelar suscripción", "cancelar la suscripción", "anular suscripción",
    # French
    "désinscrire", "se désinscrire", "désinscrivez-vous", "désinscription",
    "désabonner", "se désabonner", "désabonnez-vous", "désabonnement",
    "ne plus recevoir", "ne souhaitez plus recevoir",
    # Italian
    "disiscriviti", "disiscriverti", "disiscrizione", "cancellati", "cancellarti",
    "annulla iscrizione", "annullare l'iscrizione",
    # Dutch
    "afmelden", "af te melden", "uitschrijven", "uit te schrijven", "schrijf je uit", "opzeggen",
    # Polish
    "wypisz", "wypisz się", "wypisać się", "wypisania",
    # Czech
    "odhlásit", "odhlásit se", "odhlášení",
    # Swedish, Danish, Norwegian
    "avregistrera", "avsluta prenumeration", "avsluta prenumerationen", "avanmäl",
    "afmeld", "frameld", "meld dig af", "avmeld", "meld deg av",
    # Portuguese
    "cancelar inscrição", "cancelar a inscrição", "cancelar subscrição", "descadastrar", "descadastre-se",
    # Finnish, Hungarian, Russian
    "peruuta tilaus", "leiratkozás", "leiratkozni", "отписаться", "отписка",
)  # fmt: skip

ONE_CLICK_VALUE = "List-Unsubscribe=One-Click"

# Nearby-word windows: ~80 characters of visible HTML text around a link, at
# most one line break away; ~2 lines around a URL in plain text.
HTML_WINDOW = 80
TEXT_LINE_WINDOW = 2

_LINK_SCHEMES = ("http", "https", "mailto")
_TEXT_URL = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\"»›"
_CLOSERS = {")": "(", "]": "[", "}": "{", ">": "<"}


_ACCENTED = "áàâäãåąéèêëěęíìîïóòôöõøúùûüůýÿçćčñńřšśžźżďťľĺ"
_MAX_WORD_LEN = 60


def _letter_class(base: str) -> str:
    # Every accented letter whose decomposition starts with ``base``, so
    # "desinscrire" and "désinscrire" both match, without touching offsets.
    variants = {base}
    for ch in _ACCENTED:
        if unicodedata.normalize("NFD", ch)[0] == base:
            variants.add(ch)
    # Decomposed input (e + U+0301) carries its accent as a combining mark.
    marks = "[\u0300-\u036f]*"
    if len(variants) == 1:
        return re.escape(base) + marks
    return "[" + "".join(sorted(variants)) + "]" + marks


def _phrase_pattern(phrase: str) -> str:
    parts: list[str] = []
    for ch in unicodedata.normalize("NFC", phrase.lower()):
        if ch in " -":
            parts.append(r"[\s\-‐‑]*")
        elif ch == "'":
            parts.append(r"['’]?\s*")
        else:
            base = unicodedata.normalize("NFD", ch)[0]
            parts.append(_letter_class(base) if base.isalpha() else re.escape(ch))
    return "".join(parts)


def _compile(words: Iterable[str]) -> re.Pattern[str]:
    # Longest first so "unsubscribe here" wins over "unsubscribe".
    ordered = sorted(set(words), key=len, reverse=True)
    alternatives = "|".join(_phrase_pattern(w) for w in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


_WORDS_RE = _compile(UNSUBSCRIBE_WORDS)


def mentions_unsubscribe(text: str) -> bool:
    """Whether ``text`` contains one of :data:`UNSUBSCRIBE_WORDS`."""
    return _WORDS_RE.search(text) is not None


def _word_spans(text: str) -> list[tuple[int, int]]:
    # No Unicode normalisation: the pattern already accepts decomposed accents,
    # and offsets (and URLs) must stay those of the text we were given.
    return [m.span() for m in _WORDS_RE.finditer(text)]


def has_registered_prefix(url: str, prefix: str | None) -> bool:
    """``url`` starts with the customer's registered unsubscribe URL prefix.

    Scheme and host compare case-insensitively and must be *equal*, so the
    prefix "https://shop.example" does not accept "https://shop.example.evil".
    """
    if not prefix or not url:
        return False
    try:
        u, p = urlsplit(url.strip()), urlsplit(prefix.strip())
    except ValueError:
        return False
    if not p.scheme or not p.netloc:
        return False
    if (u.scheme.lower(), u.netloc.lower()) != (p.scheme.lower(), p.netloc.lower()):
        return False
    rest_u = url.strip()[len(u.scheme) + 3 + len(u.netloc) :]
    rest_p = prefix.strip()[len(p.scheme) + 3 + len(p.netloc) :]
    return rest_u.startswith(rest_p)


def _scheme(url: str) -> str:
    head, sep, _ = url.partition(":")
    return head.strip().lower() if sep else ""


def find_unsubscribe_link(part: TextPart, registered_prefix: str | None = None) -> str | None:
    """URL of a visible unsubscribe link in ``part``, or None.

    HTML: a visible ``<a href>`` (http/https/mailto) whose URL starts with the
    registered prefix, or whose link text, or the visible words right around
    it, say unsubscribe. Plain text: an http(s) URL with the registered
    prefix, or within two lines of an unsubscribe word.
    """
    if part.content_type == "text/html":
        return _find_in_html(part.text, registered_prefix)
    return _find_in_text(part.text, registered_prefix)


# -- HTML -------------------------------------------------------------------


def _find_in_html(html: str, prefix: str | None) -> str | None:
    rendered = render(html)
    candidates = [s for s in rendered.links if not s.link.hidden and _scheme(s.link.url) in _LINK_SCHEMES]
    for span in candidates:
        # An empty, image-less <a> is nothing a recipient could click.
        if (span.link.text or span.has_image) and has_registered_prefix(span.link.url, prefix):
            return span.link.url
    for span in candidates:
        if mentions_unsubscribe(span.link.text):
            return span.link.url
    return _nearest_to_words(rendered.text, candidates, rendered.links)


def _nearest_to_words(text: str, candidates: list[LinkSpan], all_links: tuple[LinkSpan, ...]) -> str | None:
    # A word that is itself the text of another link describes *that* link
    # ("Unsubscribe | Privacy"), so it cannot vouch for its neighbour.
    link_ranges = [(s.start, s.end) for s in all_links if s.end > s.start]
    range_starts = [r[0] for r in link_ranges]
    words = [w for w in _word_spans(text) if not _inside_any(w, link_ranges, range_starts)]
    if not words:
        return None
    starts = [w[0] for w in words]
    best: tuple[int, str] | None = None
    for span in candidates:
        lo = bisect_left(starts, span.start - HTML_WINDOW - _MAX_WORD_LEN)
        hi = bisect_right(starts, span.end + HTML_WINDOW)
        for w_start, w_end in words[lo:hi]:
            distance = _html_distance(text, span, w_start, w_end)
            if distance is not None and (best is None or distance < best[0]):
                best = (distance, span.link.url)
    return best[1] if best else None


def _inside_any(word: tuple[int, int], ranges: list[tuple[int, int]], starts: list[int]) -> bool:
    # Link texts never overlap (an <a> closes the previous one), so only the
    # last range starting at or before the word can contain it.
    index = bisect_right(starts, word[0]) - 1
    return index >= 0 and word[1] <= ranges[index][1]


def _html_distance(text: str, span: LinkSpan, w_start: int, w_end: int) -> int | None:
    if w_end <= span.start:
        gap = text[w_end : span.start]
    elif w_start >= span.end:
        gap = text[span.end : w_start]
    else:
        return 0
    if len(gap) > HTML_WINDOW or gap.count("\n") > 1:
        return None
    return len(gap)


# -- plain text ---------------------------------------------------------------


def _clean_url(url: str) -> str:
    # Sentence punctuation and unbalanced closing brackets after a URL
    # belong to the prose, e.g. "(https://x.example/u)." -> https://x.example/u
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _CLOSERS and url.count(last) > url.count(_CLOSERS[last]):
            url = url[:-1]
        else:
            break
    return url


def _find_in_text(text: str, prefix: str | None) -> str | None:
    urls = [(m.start(), _clean_url(m.group())) for m in _TEXT_URL.finditer(text)]
    urls = [(pos, url) for pos, url in urls if _has_host(url)]
    for _, url in urls:
        if has_registered_prefix(url, prefix):
            return url
    words = _word_spans(text)
    if not words or not urls:
        return None
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", text)]
    word_lines = [bisect_right(line_starts, w[0]) - 1 for w in words]
    word_starts = [w[0] for w in words]
    best: tuple[int, int, str] | None = None
    for pos, url in urls:
        line = bisect_right(line_starts, pos) - 1
        lo = bisect_left(word_lines, line - TEXT_LINE_WINDOW)
        hi = bisect_right(word_lines, line + TEXT_LINE_WINDOW)
        for index in range(lo, hi):
            key = (abs(word_lines[index] - line), abs(word_starts[index] - pos), url)
            if best is None or key[:2] < best[:2]:
                best = key
    return best[2] if best else None


# -- headers (RFC 2369, RFC 8058) ------------------------------------------------


def parse_list_unsubscribe(value: str | None) -> list[str]:
    """The URIs in angle brackets of a List-Unsubscribe value (RFC 2369).

    Whitespace inside the brackets is ignored (folded long URIs); text outside
    brackets, such as comments, is not a URI.
    """
    if not value:
        return []
    uris = []
    for match in re.finditer(r"<([^<>]*)>", str(value)):
        uri = "".join(match.group(1).split())
        if uri:
            uris.append(uri)
    return uris


def _has_host(url: str) -> bool:
    try:  # urlsplit raises on e.g. "http://[::1"
        return bool(urlsplit(url).hostname)
    except ValueError:
        return False


def _is_https_uri(uri: str) -> bool:
    return _scheme(uri) == "https" and _has_host(uri)


def check_list_unsubscribe_headers(
    list_unsubscribe: str | None, list_unsubscribe_post: str | None
) -> str | None:
    """None if the headers allow one-click unsubscribe, else why not (for humans)."""
    problems = []
    if list_unsubscribe is None or not str(list_unsubscribe).strip():
        problems.append("List-Unsubscribe header is missing")
    else:
        uris = parse_list_unsubscribe(list_unsubscribe)
        if not uris:
            problems.append("List-Unsubscribe has no URI in angle brackets")
        elif not any(_is_https_uri(u) for u in uris):
            schemes = ", ".join(sorted({_scheme(u) + ":" for u in uris}))
            problems.append(f"List-Unsubscribe has no https: URI (only {schemes})")
    if list_unsubscribe_post is None:
        problems.append(f"List-Unsubscribe-Post header is missing (must be '{ONE_CLICK_VALUE}')")
    elif str(list_unsubscribe_post).strip() != ONE_CLICK_VALUE:
        problems.append(f"List-Unsubscribe-Post must be exactly '{ONE_CLICK_VALUE}'")
    return "; ".join(problems) or None
