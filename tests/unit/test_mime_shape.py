"""gateway.mime.shape: the part and depth bounds are never below what the parser finds (or a
crafted message would slip past the limits), tight for real mail, and cheap for a MIME bomb."""

from __future__ import annotations

import email
import re
import time
from email import policy
from email.message import Message
from pathlib import Path

import pytest

from gateway.mime.shape import coarse_bound, mime_shape

CORPORA = Path(__file__).resolve().parents[2].parent / "shared" / "corpora"
NOT_MAIL = {".csv", ".json", ".jsonl", ".md", ".pem", ".txt", ".key"}


def parsed_shape(raw: bytes) -> tuple[int, int]:
    """(parts below the top entity, nesting depth) as the stdlib's compat32 parse has them."""

    def walk(entity: Message, depth: int) -> tuple[int, int]:
        parts, deepest = 0, depth
        if entity.is_multipart():
            for child in entity.get_payload():
                below, child_depth = walk(child, depth + 1)
                parts, deepest = parts + 1 + below, max(deepest, child_depth)
        return parts, deepest

    return walk(email.message_from_bytes(raw, policy=policy.compat32), 1)


def crlf(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


HEAD = b"From: a@shop.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"


def flat(parts: int, content_type: bytes = b'multipart/mixed; boundary="b"', boundary: bytes = b"b") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n\r\nx\r\n" for _ in range(parts))
    return HEAD + b"Content-Type: " + content_type + b"\r\n\r\n" + body + b"--" + boundary + b"--\r\n"


def nested(depth: int, boundaries: list[bytes]) -> bytes:
    inner = b"leaf\r\n"
    content_type = b"text/plain"
    for boundary in boundaries[:depth]:
        inner = (
            b"--"
            + boundary
            + b"\r\nContent-Type: "
            + content_type
            + b"\r\n\r\n"
            + inner
            + b"--"
            + boundary
            + b"--\r\n"
        )
        content_type = b'multipart/mixed; boundary="' + boundary + b'"'
    return HEAD + b"Content-Type: " + content_type + b"\r\n\r\n" + inner


def rfc822_chain(depth: int) -> bytes:
    inner = b"Subject: innermost\r\n\r\nleaf\r\n"
    for _ in range(depth):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return HEAD + inner


CRAFTED = {
    "plain": HEAD + b"\r\nno parts\r\n-- \r\nsignature\r\n",
    "flat": flat(30),
    "uppercase param": flat(30, b'multipart/mixed; BOUNDARY="b"'),
    "unquoted": flat(30, b"multipart/mixed; boundary=b"),
    "folded param": flat(30, b"multipart/mixed; boundary\r\n =\r\n b"),
    "rfc2231 continuation": flat(30, b'multipart/mixed; boundary*0="b"; boundary*1="cd"', b"bcd"),
    "rfc2231 encoded": flat(30, b"multipart/mixed; boundary*=us-ascii''%62%63", b"bc"),
    "quoted pair": flat(30, b'multipart/mixed; boundary="a\\"b"', b'a"b'),
    "quoted then more": flat(30, b'multipart/mixed; boundary="a"b', b'"a"b'),
    "trailing blanks": flat(30, b'multipart/mixed; boundary="b   "', b"b"),
    "nested, distinct": nested(25, [b"level%d" % i for i in range(25)]),
    "nested, each a prefix of the next": nested(25, [b"a" * (i + 1) for i in range(25)]),
    "nested, each extending the next": nested(25, [b"a" * (30 - i) for i in range(25)]),
    "message/rfc822 chain": rfc822_chain(25),
}


@pytest.mark.parametrize("name", CRAFTED)
def test_bounds_are_never_below_the_parse_of_crafted_messages(name: str) -> None:
    raw = CRAFTED[name]
    parts, depth = parsed_shape(raw)
    shape = mime_shape(raw, 500)
    assert shape.parts >= parts and shape.depth >= depth, (shape, parts, depth)
    assert coarse_bound(raw) >= max(parts, depth), (coarse_bound(raw), parts, depth)


def test_crafted_deep_messages_are_found_deep() -> None:
    for name in ("nested, distinct", "nested, each a prefix of the next", "message/rfc822 chain"):
        assert mime_shape(CRAFTED[name], 500).depth > 20, name


def corpus_messages() -> list[Path]:
    if not CORPORA.is_dir():
        return []
    return sorted(
        p for p in CORPORA.rglob("*") if p.is_file() and p.suffix not in NOT_MAIL and "LICENSE" not in p.name
    )


def test_bounds_are_never_below_the_parse_of_real_mail_and_tight_for_newsletters() -> None:
    messages = corpus_messages()
    assert len(messages) > 500, "shared corpora not found"
    for path in messages:
        raw = crlf(path.read_bytes())
        parts, depth = parsed_shape(raw)
        shape = mime_shape(raw, 500)
        assert shape.parts >= parts and shape.depth >= depth, (path, shape, parts, depth)
        # The cheap first count the engine takes is a bound too, and it spares the finer
        # count for ordinary newsletters.
        assert coarse_bound(raw) >= max(parts, depth), (path, coarse_bound(raw), parts, depth)
        if "newsletters" in path.parts:
            assert coarse_bound(raw) <= 20, path
            assert (shape.parts, shape.depth) == (parts, depth), path


def test_counting_a_mime_bomb_costs_a_small_share_of_parsing_it() -> None:
    bomb = flat(240_000)  # the message: 240,000 parts
    started = time.perf_counter()
    shape = mime_shape(bomb, 500)
    counted = time.perf_counter() - started
    started = time.perf_counter()
    email.message_from_bytes(bomb, policy=policy.compat32)
    parsed = time.perf_counter() - started

    assert shape.parts > 500
    assert counted < parsed / 10, (counted, parsed)
