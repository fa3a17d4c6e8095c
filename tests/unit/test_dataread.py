"""The chunked DATA reader keeps the line reader's guarantees whatever the chunk boundaries."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dataread import DataAccumulator

MESSAGE = b"Subject: x\r\n\r\n..dot line\r\nbody\r\n.\r\nMAIL FROM:<next@example.org>\r\n"


def feed_in_chunks(data: bytes, cuts: list[int], size_limit=None, line_limit=1001):
    acc = DataAccumulator(size_limit, line_limit)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in zip(points, points[1:], strict=False):
        if acc.feed(data[start:end]):
            # What the reader got past the marker in this chunk, plus what was not fed yet.
            return acc, acc.leftover + data[end:]
    return acc, b""


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=12))
def test_any_chunking_gives_the_same_message_and_leftover(cuts):
    acc, rest = feed_in_chunks(MESSAGE, cuts)
    assert acc.done
    assert acc.content() == b"Subject: x\r\n\r\n.dot line\r\nbody\r\n"
    assert rest == b"MAIL FROM:<next@example.org>\r\n"


@pytest.mark.parametrize("sequence", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"])
def test_smuggling_sequences_do_not_end_the_message(sequence):
    acc = DataAccumulator(None, 1001)
    assert not acc.feed(b"first" + sequence + b"MAIL FROM:<x@y>\r\n")
    assert acc.feed(b"\r\n.\r\n")


def test_empty_message():
    acc = DataAccumulator(None, 1001)
    assert acc.feed(b".\r\n")
    assert acc.content() == b""


def test_too_big_is_drained_to_the_marker_with_bounded_memory():
    acc = DataAccumulator(1000, 1001)
    for _ in range(1000):
        assert not acc.feed(b"x" * 70 + b"\r\n")
    assert len(acc.buffer) < 100
    assert acc.feed(b".\r\nQUIT\r\n")
    assert acc.too_big and acc.leftover == b"QUIT\r\n"


@pytest.mark.parametrize("length,too_long", [(999, False), (1000, True)])
def test_line_limit_counts_the_line_with_its_crlf(length, too_long):
    acc = DataAccumulator(None, 1001)
    acc.feed(b"a" * 500)
    acc.feed(b"a" * (length - 500) + b"\r\n.\r\n")
    assert acc.done and acc.too_long is too_long


def test_too_big_in_the_same_chunk_as_the_marker():
    acc = DataAccumulator(1000, 1001)
    assert acc.feed((b"x" * 70 + b"\r\n") * 20 + b".\r\n")
    assert acc.too_big
