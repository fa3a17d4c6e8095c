"""Byte-level message helpers: bare CR/LF detection (SMTP smuggling) and header edits."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.message import (
    crlf_only,
    has_bare_line_ending,
    header_values,
    prepend,
    prepend_headers,
    remove_headers,
)

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


@pytest.mark.parametrize(
    "data,bare",
    [
        (b"a\r\nb\r\n", False),
        (b"", False),
        (b"a\r\n\r\n", False),
        (b"a\nb", True),
        (b"a\rb", True),
        (b"\r\r\n\n", True),
        (b"\rX\n", True),
        (b"x\r.\ny", True),
        (b"\n\r", True),
        (b"\r\n\r", True),
    ],
)
def test_bare_line_endings(data, bare):
    assert has_bare_line_ending(data) is bare


@given(st.binary(max_size=64).map(lambda b: bytes(c if c > 14 else (10, 13)[c % 2] for c in b)))
def test_crlf_only_agrees_with_the_reference_regex(data):
    assert crlf_only(data) is (_BARE.search(data) is None)


def test_header_edits_keep_the_body_byte_identical():
    raw = b"X-Mailing-ID: client\r\nFrom: a@b.example\r\nSubject: x\r\n y\r\n\r\nbody\r\n"
    edited = prepend_headers(remove_headers(raw, ["x-mailing-id"]), [("X-Mailing-ID", "id1")])
    assert edited == b"X-Mailing-ID: id1\r\nFrom: a@b.example\r\nSubject: x\r\n y\r\n\r\nbody\r\n"
    assert header_values(edited, "subject") == ["x y"]


def test_crlf_only_answers_again_for_the_same_bytes_and_rechecks_a_changed_buffer() -> None:
    clean = b"Subject: x\r\n\r\nbody\r\n" * 100
    assert crlf_only(clean) and crlf_only(clean)
    smuggled = clean + b"\n.\r\n"
    assert not crlf_only(smuggled) and not crlf_only(smuggled)
    buffer = bytearray(clean)
    assert crlf_only(buffer)
    buffer += b"\n"
    assert not crlf_only(buffer)


_LINES = st.binary(max_size=32).map(lambda b: bytes(c if c > 14 else (10, 13)[c % 2] for c in b))


@given(_LINES, _LINES, st.booleans())
def test_prepend_keeps_crlf_only_right(prefix: bytes, body: bytes, checked_first: bool) -> None:
    if checked_first:
        crlf_only(body)  # what the engine does before it adds headers
    joined = prepend(prefix, body)
    assert joined == prefix + body
    assert crlf_only(joined) is (_BARE.search(joined) is None)
