"""gateway.mime.parts: which text parts a message has and what they say."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import random
import time
from email.message import Message
from pathlib import Path

import pytest

from gateway.mime.charset import decode_bytes, normalise_charset
from gateway.mime.parts import (
    DEFAULT_MAX_DECODED_BYTES,
    TextPart,
    body_alternatives,
    decode_payload,
    iter_text_parts,
    scan_text_parts,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mime"


def parse(raw: bytes) -> Message:
    # Exactly how the gateway parses at end of DATA.
    return email.parser.BytesParser(policy=email.policy.compat32).parsebytes(raw)


def load(name: str, *, crlf: bool = False) -> Message:
    raw = (FIXTURES / name).read_bytes()
    if crlf:  # what arrives over SMTP
        raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return parse(raw)


def shape(parts: list[TextPart]) -> list[tuple[str, str, bool]]:
    return [(p.path, p.content_type, p.is_attachment) for p in parts]


# (fixture, [(path, content type, attachment)] of iter_text_parts, paths of body_alternatives)
STRUCTURE = [
    ("plain.eml", [("1", "text/plain", False)], ["1"]),
    ("alternative.eml", [("1", "text/plain", False), ("2", "text/html", False)], ["1", "2"]),
    (
        "mixed_pdf.eml",
        [("1.1", "text/plain", False), ("1.2.1", "text/html", False), ("3", "text/plain", True)],
        ["1.1", "1.2.1"],
    ),
    ("html_base64.eml", [("1", "text/html", False)], ["1"]),
    ("qp_soft_breaks.eml", [("1", "text/plain", False)], ["1"]),
    ("latin1.eml", [("1", "text/plain", False)], ["1"]),
    ("cp1252.eml", [("1", "text/html", False)], ["1"]),
    ("unknown_charset.eml", [("1", "text/plain", False)], ["1"]),
    # The forwarded message is someone else's mail: not entered at all.
    ("rfc822_attached.eml", [("1", "text/plain", False)], ["1"]),
]


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize(("name", "expected", "alternatives"), STRUCTURE, ids=[s[0] for s in STRUCTURE])
def test_structure(
    name: str, expected: list[tuple[str, str, bool]], alternatives: list[str], crlf: bool
) -> None:
    msg = load(name, crlf=crlf)
    assert shape(iter_text_parts(msg)) == expected
    assert [p.path for p in body_alternatives(msg)] == alternatives


# (fixture, path, snippets the decoded text must contain)
DECODED = [
    ("plain.eml", "1", ["To unsubscribe from this newsletter", "Hauptstr. 5, 10115 Berlin"]),
    ("alternative.eml", "1", ["Hauptstraße 5", "Newsletter abbestellen"]),
    ("alternative.eml", "2", ["Hauptstra&szlig;e&nbsp;5", "<a href="]),  # raw HTML, undecoded entities
    ("mixed_pdf.eml", "1.1", ["Katalog hängt", "info@muster-handels.example"]),  # QP soft break in address
    ("html_base64.eml", "1", ["Hauptstraße 5, 10115 Berlin</p>", "</html>"]),  # broken padding
    ("qp_soft_breaks.eml", "1", ["sich abmelden:", "?id=qp-1&x=1", "Hauptstraße 5, 10115 Berlin"]),
    ("latin1.eml", "1", ["Grüße aus Berlin", "Hauptstraße 5"]),
    ("cp1252.eml", "1", ["9,99 €", "„Angebot der Woche“", "– Hauptstraße 5 –"]),
    ("imprint_umlauts.eml", "1", ["MÜLLER & SÖHNE", "80331 MÜNCHEN"]),
    ("unknown_charset.eml", "1", ["Für immer abmelden", "Hauptstraße 5"]),
    ("wrong_charset_utf8_as_latin1.eml", "1", ["Désinscrire", "Hauptstraße 5"]),
    ("wrong_charset_latin1_as_utf8.eml", "1", ["Désabonner", "Hauptstraße 5"]),
]


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize(("name", "path", "snippets"), DECODED, ids=[f"{d[0]}:{d[1]}" for d in DECODED])
def test_decoded_text(name: str, path: str, snippets: list[str], crlf: bool) -> None:
    part = next(p for p in iter_text_parts(load(name, crlf=crlf)) if p.path == path)
    for snippet in snippets:
        assert snippet in part.text
    assert "\ufffd" not in part.text
    assert not part.truncated


def test_attachment_text_is_marked_not_dropped() -> None:
    parts = iter_text_parts(load("mixed_pdf.eml"))
    attachment = next(p for p in parts if p.is_attachment)
    assert "These notes mention unsubscribe" in attachment.text


def test_body_alternatives_exclude_attachments_and_binary_parts() -> None:
    alternatives = body_alternatives(load("mixed_pdf.eml"))
    assert {p.content_type for p in alternatives} == {"text/plain", "text/html"}
    assert not any("%PDF" in p.text or "These notes" in p.text for p in alternatives)


# -- charset decoding -----------------------------------------------------------

CHARSETS = [
    ("utf-8", "Straße €".encode(), "Straße €"),
    ("iso-8859-1", "Straße".encode("latin-1"), "Straße"),
    ("ISO-8859-1", "9,99 €".encode("cp1252"), "9,99 €"),  # labels mean windows-1252, as in browsers
    ("windows-1252", "„Grüße“".encode("cp1252"), "„Grüße“"),
    ("iso-8859-15", "€".encode("iso-8859-15"), "€"),
    ("us-ascii", "Grüße".encode(), "Grüße"),  # 8-bit UTF-8 under an ASCII label
    ("iso-8859-1", "Grüße".encode(), "Grüße"),  # UTF-8 declared as Latin-1
    ("utf-8", "Grüße".encode("latin-1"), "Grüße"),  # Latin-1 declared as UTF-8
    ("utf-8", "Grüße ".encode() + "Straße".encode("cp1252"), "Grüße Straße"),  # mixed
    ("x-foo", "Grüße".encode(), "Grüße"),
    ("x-foo", "Grüße".encode("latin-1"), "Grüße"),
    (None, "Grüße".encode(), "Grüße"),
    ("", b"plain", "plain"),
    ("gb2312", "退订".encode("gb2312"), "退订"),
    ("koi8-r", "отписаться".encode("koi8-r"), "отписаться"),
    ("shift_jis", "配信停止".encode("shift_jis"), "配信停止"),
    # Python codecs that are not mail charsets must not be honoured.
    ("unicode_escape", b"\\u0075nsubscribe", "\\u0075nsubscribe"),
    ("base64", b"dW5zdWJzY3JpYmU=", "dW5zdWJzY3JpYmU="),
    ("rot13", b"hafhofpevor", "hafhofpevor"),
    ("undefined", b"abc", "abc"),
    ('"utf-8"', b"quoted", "quoted"),
]


@pytest.mark.parametrize(("charset", "data", "expected"), CHARSETS)
def test_decode_bytes(charset: str | None, data: bytes, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


@pytest.mark.parametrize("charset", ["utf-16", "utf-7", "x-foo", "gb2312", "iso-2022-jp", "utf-32", "\x00"])
def test_decode_bytes_never_raises_on_garbage(charset: str) -> None:
    garbage = bytes(range(256)) * 3 + b"\xff\xfe\x00"
    assert isinstance(decode_bytes(garbage, charset), str)


def test_normalise_charset() -> None:
    assert normalise_charset("UTF8") == "utf-8"
    assert normalise_charset("latin1") == "cp1252"
    assert normalise_charset("x-foo") is None
    assert normalise_charset("raw_unicode_escape") is None
    assert normalise_charset(None) is None


# -- transfer encodings -----------------------------------------------------------


def _leaf(body: bytes, cte: str, ctype: str = "text/plain; charset=utf-8") -> Message:
    raw = f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + body
    return parse(raw)


TRANSFER = [
    ("base64", base64.b64encode("Abmelden über".encode()), "Abmelden über"),
    ("base64", base64.b64encode(b"abcd").rstrip(b"="), "abcd"),  # missing padding
    ("base64", b"YWJj\r\nZGVm\r\n", "abcdef"),
    ("base64", b"YW*Jj ZG!Vm", "abcdef"),  # junk characters are skipped
    ("base64", b"YWI=\r\nY2Q=", "abcd"),  # two padded blocks glued together
    ("base64", b"YWJjZ", "abc"),  # a dangling sextet is dropped
    ("BASE64", b"YWJj", "abc"),
    ("quoted-printable", b"abmel=\r\nden =3D ok", "abmelden = ok"),
    ("quoted-printable", b"soft=\nbreak", "softbreak"),
    ("quoted-printable", b"broken =ZZ escape and =\r\n", "broken =ZZ escape and "),
    ("quoted-printable", b"Stra=C3=9Fe", "Straße"),
    ("7bit", b"plain", "plain"),
    ("8bit", "Straße".encode(), "Straße"),
    ("binary", "Straße".encode(), "Straße"),
    ("x-unknown", b"as is", "as is"),
]


@pytest.mark.parametrize(("cte", "body", "expected"), TRANSFER)
def test_transfer_decoding(cte: str, body: bytes, expected: str) -> None:
    (part,) = iter_text_parts(_leaf(body, cte))
    assert part.text == expected


def test_declared_charset_in_rfc2231_form() -> None:
    msg = _leaf("Grüße".encode("latin-1"), "8bit", "text/plain; charset*=iso-8859-1''")
    assert iter_text_parts(msg)[0].text == "Grüße"


def test_message_built_from_str_decodes_too() -> None:
    # Callers that parse str (tests, CLI tools) give real non-ASCII characters.
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(
        "Content-Type: text/plain; charset=utf-8\n\nGrüße\n"
    )
    assert iter_text_parts(msg)[0].text == "Grüße\n"


# -- bounds ------------------------------------------------------------------------


def test_decode_payload_keeps_head_and_tail_when_capped() -> None:
    body = ("HEAD " + "x" * 5000 + " FOOTER-unsubscribe").encode()
    for cte, encoded in [("8bit", body), ("base64", base64.encodebytes(body))]:
        part = _leaf(encoded, cte)
        data, truncated = decode_payload(part, max_bytes=1000)
        assert truncated
        assert len(data) <= 1001
        assert data.startswith(b"HEAD ")
        assert data.endswith(b"FOOTER-unsubscribe")


def test_long_base64_tail_is_realigned() -> None:
    # One huge unbroken base64 line: the tail must still decode cleanly.
    body = ("A" * 100_001 + " the footer says unsubscribe").encode()
    part = _leaf(base64.b64encode(body), "base64")
    data, truncated = decode_payload(part, max_bytes=2000)
    assert truncated
    assert data.endswith(b"the footer says unsubscribe")


def _ten_megabyte_message() -> bytes:
    filler = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit.</p>\n" * 80_000  # ~5 MB
    html = f"<html><body>{filler}<p><a href='https://x.example/u'>Unsubscribe</a></p></body></html>"
    pdf = base64.encodebytes(b"%PDF" + b"\x00\xff" * 2_000_000).decode()  # ~5.4 MB encoded
    return (
        'Content-Type: multipart/mixed; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        f"{html}\r\n"
        "--B\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        "Content-Disposition: attachment; filename=big.pdf\r\n\r\n"
        f"{pdf}\r\n--B--\r\n"
    ).encode()


def test_ten_megabyte_message_is_bounded() -> None:
    raw = _ten_megabyte_message()
    assert len(raw) > 10_000_000
    msg = parse(raw)
    started = time.monotonic()
    scan = scan_text_parts(msg)
    elapsed = time.monotonic() - started
    assert scan.complete
    (part,) = scan.parts
    assert part.truncated  # 5 MB of HTML > the default per part
    assert len(part.text) <= DEFAULT_MAX_DECODED_BYTES + 1
    assert part.text.rstrip().endswith("</html>")  # the footer survives truncation
    assert elapsed < 10


def _mime_bomb(parts: int) -> bytes:
    chunks = ['Content-Type: multipart/mixed; boundary="BOMB"\r\n\r\n']
    for i in range(parts):
        chunks.append(f"--BOMB\r\nContent-Type: text/plain\r\n\r\npart {i} says hello\r\n")
    chunks.append("--BOMB--\r\n")
    return "".join(chunks).encode()


def test_thousand_part_bomb_is_capped() -> None:
    msg = parse(_mime_bomb(5000))
    started = time.monotonic()
    scan = scan_text_parts(msg, max_parts=1000)
    assert time.monotonic() - started < 10
    assert scan.hit_part_limit and not scan.complete
    assert scan.nodes_seen == 1000
    assert len(scan.parts) == 999  # the root multipart is node 1
    assert scan.parts[0].text.strip() == "part 0 says hello"
    assert len(iter_text_parts(msg)) == 999


def test_exactly_thousand_parts_is_complete() -> None:
    scan = scan_text_parts(parse(_mime_bomb(999)))
    assert scan.complete
    assert len(scan.parts) == 999


def test_total_budget_across_parts() -> None:
    msg = parse(_mime_bomb(50))
    scan = scan_text_parts(msg, max_total_bytes=200)
    texts = [p.text for p in scan.parts]
    assert sum(map(len, texts)) <= 200 + 20
    assert scan.parts[-1].truncated and scan.parts[-1].text == ""


def _nested(depth: int) -> bytes:
    head = "".join(f'Content-Type: multipart/mixed; boundary="N{i}"\r\n\r\n--N{i}\r\n' for i in range(depth))
    tail = "".join(f"\r\n--N{i}--\r\n" for i in reversed(range(depth)))
    return (head + "Content-Type: text/plain\r\n\r\ndeep text" + tail).encode()


def test_depth_limit() -> None:
    shallow = scan_text_parts(parse(_nested(5)), max_depth=20)
    assert [p.text.strip() for p in shallow.parts] == ["deep text"]
    assert shallow.parts[0].path == "1.1.1.1.1"
    deep = scan_text_parts(parse(_nested(30)), max_depth=20)
    assert deep.parts == [] and deep.hit_depth_limit


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n\r\n",
        b"Content-Type: multipart/alternative\r\n\r\nno boundary at all",
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\n',
        b'Content-Type: multipart/mixed; boundary="X"\r\n\r\n--X\r\nContent-Type: text/html\r\n\r\n<p>x',
        b"Content-Type: text/plain; charset=\r\n\r\nx",
        b"Content-Type: text/plain; charset*=utf-8''%ZZ\r\n\r\nx",
        b"Content-Type: ;;;\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!",
        b"Content-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\nbody",
        bytes(range(256)),
    ],
)
def test_malformed_never_raises(raw: bytes) -> None:
    msg = parse(raw)
    assert isinstance(iter_text_parts(msg), list)
    assert isinstance(body_alternatives(msg), list)


def test_part_without_content_type_is_text_plain() -> None:
    (part,) = iter_text_parts(parse(b"Subject: x\r\n\r\nhello"))
    assert (part.content_type, part.text, part.path) == ("text/plain", "hello", "1")


def test_root_marked_attachment_is_no_body() -> None:
    msg = parse(b"Content-Type: text/html\r\nContent-Disposition: attachment; filename=x.html\r\n\r\n<p>x")
    assert body_alternatives(msg) == []
    assert iter_text_parts(msg)[0].is_attachment


def _mutations(raw: bytes, rng: random.Random, count: int) -> list[bytes]:
    out = []
    for _ in range(count):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 20)):
            pos = rng.randrange(len(data))
            action = rng.random()
            if action < 0.4:
                data[pos] = rng.randrange(256)
            elif action < 0.7:
                data[pos:pos] = rng.choice(
                    [b"<", b">", b"=", b"\r\n", b"--", b'"', b"=?", b"<a href=", b"\x00"]
                )
            else:
                del data[pos : pos + rng.randint(1, 40)]
        out.append(bytes(data))
    return out


def test_mutated_fixtures_never_raise() -> None:
    # Every public helper, on hundreds of randomly damaged messages (fixed seed).
    from gateway.mime.addresses import display_name_disguise, domain_of, parse_mailbox
    from gateway.mime.html import links, visible_text
    from gateway.mime.imprint import Imprint, missing_imprint_fields
    from gateway.mime.unsubscribe import check_list_unsubscribe_headers, find_unsubscribe_link

    rng = random.Random(20260302)
    imprint = Imprint(
        company="Muster", street="Hauptstraße 5", postcode="10115", city="Berlin", phone="030 1"
    )
    for fixture in sorted(FIXTURES.glob("*.eml")):
        for raw in _mutations(fixture.read_bytes(), rng, 25):
            msg = parse(raw)
            for part in iter_text_parts(msg):
                seen = visible_text(part.text) if part.content_type == "text/html" else part.text
                links(part.text)
                find_unsubscribe_link(part, "https://muster-handels.example/u/")
                missing_imprint_fields(seen, imprint)
            body_alternatives(msg)
            check_list_unsubscribe_headers(msg.get("List-Unsubscribe"), msg.get("List-Unsubscribe-Post"))
            for name, addr in parse_mailbox(msg.get("From")):
                display_name_disguise(name, domain_of(addr))
