"""Unsubscribe checks: the visible link in a body part and the RFC 2369/8058 headers."""

from __future__ import annotations

import codecs
import functools
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from gateway.mime.html import LinkSpan, render
from gateway.mime.parts import TextPart

__all__ = [
    "ONE_CLICK_VALUE",
    "PREFERENCE_WORDS",
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
_OPT_OUT_WORDS: tuple[str, ...] = (
    # English
    "unsubscribe", "unsubscribe here", "unsubscribing", "opt out", "opt-out", "optout",
    "remove me", "stop receiving", "no longer wish to receive", "no longer want to receive",
    # German, with Austrian and Swiss usage ("Abo künden")
    "abmelden", "abmeldung", "abzumelden", "abbestellen", "abzubestellen", "newsletter abbestellen",
    "abbestellung", "austragen", "auszutragen", "nicht mehr erhalten", "nicht mehr empfangen",
    "abo kündigen", "abonnement kündigen", "newsletter kündigen", "abo künden",
    "abonnement künden", "newsletter künden",
    # Spanish
    "darse de baja", "dar de baja", "darte de baja", "date de baja", "darme de baja",
    "cancelar suscripción", "cancelar la suscripción", "anular suscripción",
    "anular la suscripción", "cancela tu suscripción", "cancele su suscripción",
    "cancelar tu suscripción", "dejar de recibir", "desuscribirse", "desuscribirte",
    # French
    "désinscrire", "se désinscrire", "désinscrivez-vous", "désinscription",
    "désabonner", "se désabonner", "désabonnez-vous", "désabonnement",
    "ne plus recevoir", "ne souhaitez plus recevoir",
    # Italian
    "disiscriviti", "disiscriverti", "disiscrizione", "cancellati", "cancellarti",
    "annulla iscrizione", "annullare l'iscrizione", "annulla l'iscrizione",
    "cancella iscrizione", "cancella l'iscrizione", "cancellare l'iscrizione", "disiscriversi",
    "revoca l'iscrizione", "non ricevere più",
    # Dutch
    "afmelden", "af te melden", "uitschrijven", "uit te schrijven", "schrijf je uit", "opzeggen",
    "schrijf u uit", "meld je af", "meld u af", "afmelding", "uitschrijving",
    "niet meer ontvangen",
    # Polish
    "wypisz", "wypisz się", "wypisać się", "wypisania", "wypisz mnie", "odsubskrybuj",
    "zrezygnuj z subskrypcji", "zrezygnować z subskrypcji", "rezygnacja z subskrypcji",
    "rezygnacja z newslettera",
    # Czech
    "odhlásit", "odhlásit se", "odhlášení", "zrušit odběr", "zrušení odběru",
    "odhlásit odběr", "zrušte odběr", "odhlaste se",
    # Slovak
    "zrušiť odber", "zrušenie odberu", "odhlásiť", "odhlásiť sa", "odhlásenie",
    "odhlásiť odber", "zrušte odber", "odhláste sa",
    # Slovenian ("odjava" alone is also "log out": only with what it leaves)
    "odjava od prejemanja", "odjava od novic", "odjava od e-novic", "odjava iz seznama",
    "odjavite se od prejemanja", "odjavi se od prejemanja", "ne želite več prejemati",
    "za odjavo", "odjava od obveščanja",
    # Croatian (likewise)
    "odjava s newslettera", "odjava od newslettera", "odjava s popisa", "odjavite se s popisa",
    "otkaži pretplatu", "otkažite pretplatu", "otkazati pretplatu", "otkazivanje pretplate",
    "ne želite više primati", "za odjavu", "odjava od primanja",
    # Hungarian
    "leiratkozás", "leiratkozni", "leiratkozhat", "leiratkozáshoz", "iratkozzon le",
    "iratkozz le", "le szeretne iratkozni",
    # Romanian (ș/ț and the older ş/ţ both match)
    "dezabonare", "dezabonează-te", "dezabonați-vă", "vă dezabona", "te dezabona",
    "dezabonați", "dezabona", "dezabonează", "dezabonezi", "nu mai doriți să primiți",
    # Bulgarian, Russian
    "отписване", "отпишете се", "да се отпишете", "отпиши се", "отказ от абонамент",
    "отписаться", "отписка",
    # Greek (written with σ: under IGNORECASE it also matches the final ς)
    "διαγραφείτε", "διαγραφή από τη λίστα", "απεγγραφή", "απεγγραφείτε",
    "κατάργηση εγγραφήσ", "κατάργηση συνδρομήσ",
    "δεν θέλετε να λαμβάνετε",
    # Latvian
    "atteikties no abonēšanas", "atteikties no jaunumiem", "atrakstīties",
    "atteikties no saņemšanas",
    # Lithuanian
    "atsisakyti prenumeratos", "atsisakykite prenumeratos", "atsisakyti naujienlaiškio",
    "prenumeratos atsisakymas",
    # Estonian
    "loobu tellimusest", "tellimusest loobumine", "tellimusest loobumiseks",
    "loobu uudiskirjast", "uudiskirjast loobumine", "eemalda nimekirjast",
    # Finnish
    "peruuta tilaus", "peru uutiskirjeen tilaus", "peruuta uutiskirjeen tilaus",
    "lopeta uutiskirjeen tilaus", "poistu postituslistalta", "eroa postituslistalta",
    "poistu listalta",
    # Swedish
    "avregistrera", "avsluta prenumeration", "avsluta prenumerationen", "avanmäl",
    "avprenumerera", "avanmälan", "avanmäl dig", "avsluta din prenumeration",
    # Danish
    "afmeld", "frameld", "meld dig af", "afmelding", "framelding", "afmeld dig", "frameld dig",
    "afmelde dig", "framelde dig",
    # Norwegian
    "avmeld", "meld deg av", "meld av", "avmelding", "avslutt abonnement",
    "avslutt abonnementet",
    # Icelandic
    "afskrá", "afskrá mig", "afskráning", "afskráðu þig", "hætta áskrift", "afskráð þig", "afskrá þig",
    "segja upp áskrift",
    # Portuguese
    "cancelar inscrição", "cancelar a inscrição", "cancelar subscrição", "descadastrar", "descadastre-se",
    "cancelar a subscrição", "anular subscrição", "anular a subscrição", "deixar de receber",
    "cancelar assinatura", "cancele a subscrição", "anule a subscrição",
    # Irish
    "díliostáil", "bain den liosta",
    # Maltese
    "ikkanċella l-abbonament", "neħħi l-abbonament",
    # Turkish (ı written as i: under IGNORECASE "i" also matches ı and İ)
    "abonelikten çik", "abonelikten çikin", "abonelikten çikmak", "aboneliği iptal et",
    "aboneliğinizi iptal", "üyelikten ayril", "üyeliği sonlandir", "listeden çik",
)  # fmt: skip

# "Manage preferences": a preference centre is a way out too, but a link that says
# unsubscribe is preferred when both are there.
PREFERENCE_WORDS: tuple[str, ...] = (
    "manage preferences",
    "manage your preferences",
    "update your preferences",
    "manage your subscription",
    "manage subscription",
    "email preferences",
    "subscription preferences",
    "newsletter-einstellungen",
    "e-mail-einstellungen",
    "abonnement verwalten",
    "newsletter verwalten",
    "gestionar preferencias",
    "gestionar tus preferencias",
    "gestiona tus preferencias",
    "gérer vos préférences",
    "gérer mes préférences",
    "gérer votre abonnement",
    "gestisci le preferenze",
    "gestisci le tue preferenze",
    "voorkeuren beheren",
    "beheer je voorkeuren",
    "beheer uw voorkeuren",
    "beheer voorkeuren",
    "zarządzaj preferencjami",
    "zmień preferencje",
    "správa předvoleb",
    "správa predvolieb",
    "gestionarea preferințelor",
    "управление на предпочитанията",
    "διαχείριση προτιμήσεων",
    "hantera preferenser",
    "administrer præferencer",
    "administrer preferanser",
    "gerir preferências",
    "gerenciar preferências",
    "tercihleri yönet",
)  # fmt: skip

UNSUBSCRIBE_WORDS: tuple[str, ...] = _OPT_OUT_WORDS + PREFERENCE_WORDS

ONE_CLICK_VALUE = "List-Unsubscribe=One-Click"

# Nearby-word windows: ~80 characters of visible HTML text around a link, at
# most one line break away; ~2 lines around a URL in plain text.
HTML_WINDOW = 80
TEXT_LINE_WINDOW = 2

_LINK_SCHEMES = ("http", "https", "mailto")
_TEXT_URL = re.compile(r"https?://[^\s<>\"'`\x00-\x1f\x7f]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\"»›"
_CLOSERS = {")": "(", "]": "[", "}": "{", ">": "<"}


# Latin letters with marks the phrases use, and Greek vowels with tonos: each also matches
# its base letter ("desinscrire" for "désinscrire").
_ACCENTED = "áàâäãåąéèêëěęíìîïóòôöõøúùûüůýÿçćčñńřšśžźżďťľĺășşțţőűāēīūėįųļķņģğċġάέήίόύώϊϋΐΰ"
_MAX_WORD_LEN = 60
# Decomposed input (e + U+0301) carries its accent as a combining mark.
_MARKS = "[\u0300-\u036f]"


def _variants(base: str) -> list[str]:
    # Every accented letter whose decomposition starts with ``base``, so
    # "desinscrire" and "désinscrire" both match, without touching offsets.
    variants = {base}
    for ch in _ACCENTED:
        if unicodedata.normalize("NFD", ch)[0] == base:
            variants.add(ch)
    return sorted(variants)


def _letter_set(base: str) -> str:
    variants = _variants(base)
    if len(variants) == 1:
        return re.escape(base)
    return "[" + "".join(variants) + "]"


def _letter_class(base: str) -> str:
    return _letter_set(base) + _MARKS + "*"


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


@functools.cache
def _words_re() -> re.Pattern[str]:
    # Compiled on first use, not at import: with every EU language's phrases this takes
    # about a second, and only text with combining marks (the slow path) needs it.
    return _compile(UNSUBSCRIBE_WORDS)


def __getattr__(name: str) -> Any:
    if name == "_WORDS_RE":  # the whole-phrase regex, as tests compare against it
        return _words_re()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_PREFERENCE_RE = _compile(PREFERENCE_WORDS)


def _tier(text: str, span: tuple[int, int]) -> int:
    """0 for a phrase that says unsubscribe, 1 for a preference centre's (ranked after)."""
    return 1 if _PREFERENCE_RE.fullmatch(text[span[0] : span[1]]) else 0


def mentions_unsubscribe(text: str) -> bool:
    """Whether ``text`` contains one of :data:`UNSUBSCRIBE_WORDS`."""
    return bool(_word_spans(text))


def _word_spans_slow(text: str) -> list[tuple[int, int]]:
    # No Unicode normalisation: the pattern already accepts decomposed accents,
    # and offsets (and URLs) must stay those of the text we were given.
    return [m.span() for m in _words_re().finditer(text)]


# -- finding the phrases fast ---------------------------------------------------
# _WORDS_RE tries its ~300 case-insensitive alternatives at every word start: about
# 0.2 us per character, 2 ms for a 10 KB footer-heavy newsletter. Nearly all of a
# text contains no phrase, so _word_spans first finds the few places where a match
# could start, with byte operations that run at C speed, and runs _WORDS_RE only
# there. The result is exactly _word_spans_slow's (tests/unit/test_mime_fastpaths.py
# compares both on random and real texts):
#
# 1. Map the text to bytes, one byte per character so that offsets stay valid. Each
#    character that _WORDS_RE's letter class for a base letter accepts (accented and
#    upper-case forms, with re.IGNORECASE's own case rules) becomes that base letter's
#    byte; other word characters become b"0"; everything else becomes b" ".
# 2. A match starts after a non-word character, and without combining marks in the
#    text its letters are one character each. So it starts a space-delimited token of
#    the mapped bytes, and that token is the phrase's first word or its first words
#    written together ("optout"): separators map to spaces, and the character after a
#    match is not a word character (it maps to a space too).
# 3. Only where such a token occurs does _WORDS_RE.match decide, left to right and
#    skipping overlaps, just as finditer does. Text with combining marks (decomposed
#    accents, rare in mail) takes the slow path.

_COMBINING = re.compile(_MARKS)
_SEPARATORS = " -'"  # _phrase_pattern turns these into optional separators


@dataclass(frozen=True)
class _FastTables:
    latin1: bytes  # translate table for text.encode("latin-1")
    charmaps: tuple[Any, ...]  # codecs encoding maps: the characters that matter -> a byte each
    others: tuple[bytes, ...]  # translate tables for their output (unmapped -> 0)
    more: re.Pattern[str] | None  # a character only the maps after the first know
    first_tokens: frozenset[bytes]  # what a phrase's first token can be, in mapped bytes
    phrases_of: dict[bytes, frozenset[str]]  # first token -> the phrases that can start with it


def _phrase_words(phrase: str) -> list[str] | None:
    """Base letters of each word of ``phrase`` (None if it has other characters)."""
    words = [""]
    for ch in unicodedata.normalize("NFC", phrase.lower()):
        if ch in _SEPARATORS:
            words.append("")
            continue
        base = unicodedata.normalize("NFD", ch)[0]
        if not base.isalpha():
            return None
        words[-1] += base
    # A leading or trailing separator would let a match start or end with a space.
    return words if words[0] and words[-1] else None


@functools.cache
def _fast_tables() -> _FastTables | None:
    """The mapping of step 1 and the tokens of step 2, or None if they cannot be exact.

    Built on first use (about 10 ms): which characters a letter class accepts under
    re.IGNORECASE is found by asking the regex engine about every BMP character (no
    letter outside the BMP folds to Latin or Cyrillic; a test checks all of Unicode).
    """
    words_of = [_phrase_words(p) for p in UNSUBSCRIBE_WORDS]
    if any(w is None for w in words_of):
        return None
    bases = sorted({ch for words in words_of for word in words for ch in word})  # type: ignore[union-attr]
    # One scan of the BMP for any letter, then each letter's own class over the few found.
    letters = "".join(sorted({ch for base in bases for ch in _variants(base)}))
    bmp = "".join(map(chr, range(0x10000)))
    found = "".join(re.findall("[" + re.escape(letters) + "]", bmp, re.IGNORECASE))
    base_of: dict[str, str] = {}
    for base in bases:
        for ch in re.findall(_letter_set(base), found, re.IGNORECASE):
            if _COMBINING.match(ch):
                continue  # U+0345 folds to iota; text with marks takes the slow path anyway
            # Each character must map to one letter, and be a word character (step 2:
            # then a letter can never be the character before or after a match).
            if base_of.setdefault(ch, base) != base or not re.match(r"\w", ch):
                return None
    # ASCII letters keep their byte; the others (Cyrillic) get bytes from 0x80 up.
    code = {base: ord(base) for base in bases if base.isascii()}
    others = [base for base in bases if not base.isascii()]
    code.update((base, 0x80 + i) for i, base in enumerate(others))
    if len(others) > 0x80:
        return None

    def mapped(ch: str) -> int:
        if ch in base_of:
            return code[base_of[ch]]
        return ord("0") if re.match(r"\w", ch) else ord(" ")

    latin1 = bytes(mapped(chr(i)) for i in range(256))
    # Other text: ASCII keeps its byte, the non-ASCII letters the classes accept get the
    # next ones; anything else is "unmapped" and encodes as "?", which maps to " ".
    # Upper and lower case of every phrase letter in two dozen languages do not fit in
    # one map's 128 free bytes: the first map takes the commonest (Latin-1, lower case
    # first), further maps the rest. Only text that has one of the rest (found by a
    # character class search, at C speed) is encoded with them too; then each map's
    # output is translated with unmapped as 0, the results OR-ed (a character is in at
    # most one map) and a remaining 0 made a " ".
    extra = sorted(
        (ch for ch in base_of if not ch.isascii()), key=lambda ch: (ch > "\xff", ch != ch.lower(), ch)
    )
    ascii_only = "".join(map(chr, range(128)))
    charmaps: list[Any] = []
    translations: list[bytes] = []
    for at in range(0, len(extra), 128):
        chunk = extra[at : at + 128]
        decoding = ascii_only + "".join(chunk)
        charmaps.append(codecs.charmap_build(decoding + "\ufffe" * (256 - len(decoding))))
        # ASCII is the first map's; "?" (also what an unmapped character becomes) is 0.
        head = bytes(0 if ch == "?" else mapped(ch) for ch in ascii_only) if not at else bytes(128)
        translations.append(head + bytes(mapped(ch) for ch in chunk) + bytes(128 - len(chunk)))
    if not charmaps or len(charmaps) > 4:
        return None
    rest = "".join(extra[128:])
    more = re.compile("[" + re.escape(rest) + "]") if rest else None
    phrases_of: dict[bytes, set[str]] = {}
    for phrase, words in zip(UNSUBSCRIBE_WORDS, words_of, strict=True):
        joined = ""
        for word in words:  # type: ignore[union-attr]
            joined += word
            phrases_of.setdefault(bytes(code[ch] for ch in joined), set()).add(phrase)
    return _FastTables(
        latin1,
        tuple(charmaps),
        tuple(translations),
        more,
        frozenset(phrases_of),
        {token: frozenset(p) for token, p in phrases_of.items()},
    )


@functools.cache
def _token_regex(token: bytes) -> re.Pattern[str]:
    """_WORDS_RE with only the phrases that can start with ``token`` (same order).

    A match of _WORDS_RE starts with one of its phrases' first tokens (step 2), so at a
    place where ``token`` starts, the other alternatives cannot match: this regex finds
    the same match there, without trying ~300 alternatives.
    """
    tables = _fast_tables()
    assert tables is not None
    phrases = tables.phrases_of[token]
    ordered = [w for w in sorted(set(UNSUBSCRIBE_WORDS), key=len, reverse=True) if w in phrases]
    alternatives = "|".join(_phrase_pattern(w) for w in ordered)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def _mapped(text: str, tables: _FastTables) -> bytes | None:
    """Step 1: ``text`` as one byte per character; None for text with combining marks."""
    try:
        return text.encode("latin-1").translate(tables.latin1)
    except UnicodeEncodeError:
        if _COMBINING.search(text):
            return None
        encoded, _ = codecs.charmap_encode(text, "replace", tables.charmaps[0])
        first = encoded.translate(tables.others[0])
        if tables.more is None or not tables.more.search(text):
            return first.translate(_ZERO_IS_SPACE)
        merged = int.from_bytes(first, "little")
        for charmap, table in zip(tables.charmaps[1:], tables.others[1:], strict=True):
            encoded, _ = codecs.charmap_encode(text, "replace", charmap)
            merged |= int.from_bytes(encoded.translate(table), "little")
        return merged.to_bytes(len(text), "little").translate(_ZERO_IS_SPACE)


_ZERO_IS_SPACE = b" " + bytes(range(1, 256))


def _candidates(mapped: bytes, offset: int, first_tokens: frozenset[bytes]) -> dict[int, bytes]:
    """Step 2: where in ``mapped`` a first token starts (plus ``offset``) -> that token.

    ``mapped`` must not begin or end inside a token: it maps all of the text or a stretch
    of it that starts at the text's start or after a character mapped to a space or "0",
    and ends at the text's end or before a character mapped to a space.
    """
    tokens = first_tokens.intersection(mapped.split())
    starts: dict[int, bytes] = {}
    if not tokens:
        return starts
    padded = b" " + mapped + b" "  # padded[i + 1] is mapped[i]
    for token in tokens:
        needle = b" " + token + b" "
        at = padded.find(needle)
        while at >= 0:
            starts[offset + at] = token  # the token starts at padded[at + 1], i.e. mapped[at]
            at = padded.find(needle, at + 1)
    return starts


def _matches_at(text: str, starts: dict[int, bytes]) -> list[tuple[int, int]]:
    """Step 3: the regex decides at each candidate, left to right, skipping overlaps."""
    spans: list[tuple[int, int]] = []
    end = 0
    for start in sorted(starts):
        if start >= end and (match := _token_regex(starts[start]).match(text, start)):
            spans.append(match.span())
            end = match.end()
    return spans


def _word_spans(text: str) -> list[tuple[int, int]]:
    """``[m.span() for m in _WORDS_RE.finditer(text)]``, fast (see above)."""
    tables = _fast_tables()
    mapped = None if tables is None else _mapped(text, tables)
    if tables is None or mapped is None:
        return _word_spans_slow(text)
    return _matches_at(text, _candidates(mapped, 0, tables.first_tokens))


# -- only near some places ---------------------------------------------------------
# The plain-text search only uses words within a few lines of a URL, and a newsletter
# has its few URLs in the footer: _word_spans_near maps and searches those stretches
# only, and gives every span of _word_spans(text) that starts in them (and maybe some
# other of its spans, never anything else).
#
# finditer's result after a point depends on what came before only through a match
# that runs across that point. A match consumes only phrase letters, combining marks,
# whitespace, hyphens and apostrophes, so it never runs across a "stop" character (an
# ASCII digit or punctuation mark that is none of those): each stretch is widened back
# to just after one (or the start of the text) and then searched on its own, exactly.


@functools.cache
def _stop_table() -> bytes | None:
    """bytes.translate table for ASCII-encoded text: stop characters -> b"!", others b"."."""
    tables = _fast_tables()
    if tables is None:
        return None
    table = bytearray(b"." * 256)
    for code in range(128):
        # Not a phrase letter (mapped to "0" or " "), not a separator, and not the "?"
        # that encode("ascii", "replace") puts for every non-ASCII character.
        if tables.latin1[code] in b"0 " and not re.match(r"[\s\-'?]", chr(code)):
            table[code] = ord("!")
    return bytes(table)


def _after_stop(text: str, pos: int, stops: bytes) -> int:
    """Just after the last stop character before ``pos``, or 0."""
    size = 256
    while pos > 0:
        start = max(0, pos - size)
        found = text[start:pos].encode("ascii", "replace").translate(stops).rfind(b"!")
        if found >= 0:
            return start + found + 1
        pos, size = start, size * 2
    return 0


def _word_spans_near(text: str, stretches: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans of ``_word_spans(text)`` that start in one of the ``[lo, hi)`` stretches.

    Each ``hi`` must be len(text) or the position of a character that is neither a letter
    nor a digit (a line break, say). Spans of ``_word_spans(text)`` outside the stretches
    may be in the result too.
    """
    tables = _fast_tables()
    stops = _stop_table()
    if tables is None or stops is None:
        return _word_spans_slow(text)
    merged: list[list[int]] = []
    for lo, hi in sorted(stretches):
        # A combining mark is no letter, but words carry them: a stretch must not end between
        # a letter and its marks (the first word of a phrase would be cut short).
        while hi < len(text) and _COMBINING.match(text, hi):
            hi += 1
        if not merged or lo > merged[-1][1]:
            lo = _after_stop(text, lo, stops)
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    starts: dict[int, bytes] = {}
    for lo, hi in merged:
        mapped = _mapped(text[lo:hi], tables)
        if mapped is None:  # combining marks: the slow path, as _word_spans takes it
            return _word_spans_slow(text)
        starts.update(_candidates(mapped, lo, tables.first_tokens))
    return _matches_at(text, starts)


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
    # A link whose own text says it: the first that says unsubscribe, else the first that
    # names the preference centre.
    best_tier: tuple[int, str] | None = None
    for span in candidates:
        spans = _word_spans(span.link.text)
        if spans:
            tier = min(_tier(span.link.text, w) for w in spans)
            if tier == 0:
                return span.link.url
            best_tier = best_tier or (tier, span.link.url)
    if best_tier is not None:
        return best_tier[1]
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
    best: tuple[int, int, str] | None = None
    for span in candidates:
        lo = bisect_left(starts, span.start - HTML_WINDOW - _MAX_WORD_LEN)
        hi = bisect_right(starts, span.end + HTML_WINDOW)
        for w_start, w_end in words[lo:hi]:
            distance = _html_distance(text, span, w_start, w_end)
            if distance is None:
                continue
            key = (_tier(text, (w_start, w_end)), distance, span.link.url)
            if best is None or key[:2] < best[:2]:
                best = key
    return best[2] if best else None


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


def _text_urls(text: str) -> list[re.Match[str]]:
    """``list(_TEXT_URL.finditer(text))``, without scanning every position.

    Every match has its "://" 4 or 5 characters after its start ("http", "https"), so
    _TEXT_URL only needs to try there: left to right, skipping overlaps, as finditer.
    """
    starts = []
    at = text.find("://")
    while at >= 0:
        starts += [at - 5, at - 4]
        at = text.find("://", at + 1)
    matches = []
    end = 0
    for start in starts:  # ascending, as "://" occurrences are 3 or more apart
        if start >= end and (match := _TEXT_URL.match(text, start)):  # end >= 0: no negatives
            matches.append(match)
            end = match.end()
    return matches


def _line_numbers(text: str, positions: list[int]) -> list[int]:
    r"""Line of each of the ascending ``positions``, counted from the first of them.

    That is how many line breaks (CRLF, CR or LF, as ``\r\n|\r|\n`` finds them)
    end after ``positions[0]`` and at or before the position; only differences of
    lines matter to the caller. C-speed counting over just that stretch, instead of
    a regex over the whole text.
    """
    lines = []
    line = 0
    last = positions[0] if positions else 0
    for pos in positions:
        if pos > last:
            # Breaks end in (last, pos] when their last character is in [last, pos).
            line += text.count("\n", last, pos) + text.count("\r", last, pos)
            line -= text.count("\r\n", last, pos)  # counted twice above
            # A CR at pos - 1 whose LF is at pos: that CRLF ends after pos (and its LF
            # is counted in the next stretch), so its CR must not count here.
            line -= text.startswith("\r\n", pos - 1)
            last = pos
        lines.append(line)
    return lines


_NEAR_MIN_CHARS = 4096
_NEAR_MAX_URLS = 8


def _line_break_before(text: str, end: int, has_cr: bool) -> int:
    r"""Start of the last line break (``\r\n``, ``\r`` or ``\n``) before ``end``, or -1.

    ``text[end]`` must not be the LF of a CRLF. Scans only back to that break.
    """
    lf = text.rfind("\n", 0, end)
    if has_cr:
        cr = text.rfind("\r", lf + 1, end)
        if cr >= 0:
            return cr
    if lf > 0 and text[lf - 1] == "\r":
        return lf - 1
    return lf


def _line_break_after(text: str, start: int, has_cr: bool) -> tuple[int, int]:
    """``(start, end)`` of the first line break at or after ``start``, or (-1, -1)."""
    lf = text.find("\n", start)
    if has_cr:
        cr = text.find("\r", start, lf if lf >= 0 else len(text))
        if cr >= 0:
            return cr, cr + 2 if text.startswith("\n", cr + 1) else cr + 1
    return lf, lf + 1


def _line_stretches(text: str, positions: list[int], lines: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` stretches that hold every position at most ``lines`` lines from a position.

    For each position, ``lo`` is the start of the ``lines + 1``-th line break before the position (0 if none),
    ``hi`` the start of the ``lines + 1``-th after it (len(text) if none); a position inside
    the previous stretch keeps ``lo`` at itself. Positions must not be inside a line break.
    """
    has_cr = "\r" in text
    stretches: list[tuple[int, int]] = []
    for pos in sorted(positions):
        lo = pos
        # Inside the previous stretch: that one already reaches back far enough.
        if not stretches or pos >= stretches[-1][1]:
            for _ in range(lines + 1):
                lo = _line_break_before(text, lo, has_cr)
                if lo < 0:
                    lo = 0
                    break
        hi, at = pos, pos
        for _ in range(lines + 1):
            hi, at = _line_break_after(text, at, has_cr)
            if hi < 0:
                hi = len(text)
                break
        stretches.append((lo, hi))
    return stretches


def _find_in_text(text: str, prefix: str | None) -> str | None:
    urls = [(m.start(), _clean_url(m.group())) for m in _text_urls(text)]
    urls = [(pos, url) for pos, url in urls if _has_host(url)]
    for _, url in urls:
        if has_registered_prefix(url, prefix):
            return url
    if not urls:
        return None
    # Only words within TEXT_LINE_WINDOW lines of a URL count: in a long text with few URLs
    # (a newsletter's footer), look for them only there; else finding the stretches costs more.
    if len(text) >= _NEAR_MIN_CHARS and len(urls) <= _NEAR_MAX_URLS:
        stretches = _line_stretches(text, [pos for pos, _ in urls], TEXT_LINE_WINDOW)
        words = _word_spans_near(text, stretches)
    else:
        words = _word_spans(text)
    if not words:
        return None
    word_starts = [w[0] for w in words]
    positions = sorted({*word_starts, *(pos for pos, _ in urls)})
    line_of = dict(zip(positions, _line_numbers(text, positions), strict=True))
    word_lines = [line_of[pos] for pos in word_starts]
    tiers = [_tier(text, w) for w in words]
    best: tuple[int, int, int, str] | None = None
    for pos, url in urls:
        line = line_of[pos]
        lo = bisect_left(word_lines, line - TEXT_LINE_WINDOW)
        hi = bisect_right(word_lines, line + TEXT_LINE_WINDOW)
        for index in range(lo, hi):
            key = (tiers[index], abs(word_lines[index] - line), abs(word_starts[index] - pos), url)
            if best is None or key[:3] < best[:3]:
                best = key
    return best[3] if best else None


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
