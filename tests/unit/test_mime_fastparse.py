"""The fast parse builds exactly the tree compat32's feed parser builds, or steps aside."""

from __future__ import annotations

import email.parser
from email import policy as email_policy
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.newsletter import newsletter
from gateway.mime.fastparse import parse, parse_fast

ROOT = Path(__file__).resolve().parents[2]
CORPORA = ROOT.parent / "shared" / "corpora"
FIXTURES = ROOT / "tests" / "fixtures"


def reference(raw: bytes) -> Message:
    return email.parser.BytesParser(policy=email_policy.compat32).parsebytes(raw)


def tree(message: Message) -> Any:
    """Everything a reader of the parsed message can see."""
    payload = message._payload  # type: ignore[attr-defined]
    return {
        "headers": list(message._headers),  # type: ignore[attr-defined]
        "payload": [tree(p) for p in payload] if isinstance(payload, list) else payload,
        "preamble": message.preamble,
        "epilogue": message.epilogue,
        "defects": [type(d).__name__ for d in message.defects],
        "default_type": message.get_default_type(),
        "unixfrom": message.get_unixfrom(),
        "charset": message.get_charset(),
    }


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def corpus_messages() -> list[Path]:
    files = sorted(
        p
        for p in CORPORA.rglob("*")
        if p.is_file() and p.suffix in {".eml", ".msg", ".txt", ".mbox", ".message"}
    )
    return files + sorted(FIXTURES.rglob("*.eml"))


CORPUS = corpus_messages()


def test_every_corpus_message_parses_to_the_same_tree_or_falls_back() -> None:
    assert CORPUS, "../shared/corpora is not beside the project"
    fast = 0
    for path in CORPUS:
        raw = crlf(path.read_bytes())
        quick = parse_fast(raw)
        if quick is not None:
            fast += 1
            assert tree(quick) == tree(reference(raw)), path
        assert tree(parse(raw)) == tree(reference(raw)), path
    # Bounces and reports carry message/* parts and take the feed parser; the newsletters,
    # fixtures and plain messages must not.
    assert fast >= 150, fast


def test_every_newsletter_takes_the_fast_path_unless_it_is_malformed() -> None:
    assert CORPUS, "../shared/corpora is not beside the project"
    newsletters = [p for p in CORPUS if "newsletters" in p.parts and p.suffix == ".eml"]
    taken = [p for p in newsletters if parse_fast(crlf(p.read_bytes())) is not None]
    assert len(taken) >= len(newsletters) * 0.7, (len(taken), len(newsletters))


@pytest.mark.parametrize("size", [2_000, 20 * 1024, 100 * 1024])
def test_the_benchmark_newsletter_takes_the_fast_path(size: int) -> None:
    raw = newsletter(size)
    quick = parse_fast(raw)
    assert quick is not None
    assert tree(quick) == tree(reference(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: lf only\n\nbody\n",  # bare LF
        b"From someone Mon Jan 1\r\nSubject: x\r\n\r\nbody\r\n",  # unix From_ line
        b" folded first\r\nSubject: x\r\n\r\nbody\r\n",  # continuation as first line
        b"Subject: x\r\nno colon here\r\n\r\nbody\r\n",  # body without separator
        b"Content-Type: multipart/mixed\r\n\r\nno boundary\r\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\nnever closed\r\n',
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno delimiter at all\r\n',
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n--b\r\n\r\nx\r\n--b--\r\n',
        b'Content-Type: multipart/mixed; boundary="b"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
        b"--b\r\n\r\nx\r\n--b--\r\n",
        b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n",
        b'Content-Type: multipart/digest; boundary="b"\r\n\r\n--b\r\n\r\nSubject: i\r\n\r\nx\r\n--b--\r\n',
        b"Subject: headers only, no blank line\r\n",
        # A boundary with a line break in it (folded quoted string, RFC 2231): the feed parser
        # reads line by line and never matches it.
        b'Content-Type: multipart/mixed; boundary="abc\r\n def"\r\n\r\n--abc\r\n def\r\n\r\n'
        b"hidden\r\n--abc\r\n def--\r\n",
        b"Content-Type: multipart/mixed; boundary*=us-ascii''abc%0D%0A%20def\r\n\r\n"
        b"--abc\r\n def\r\n\r\nhidden\r\n--abc\r\n def--\r\n",
        # More entities than the policies ever look at: straight to the feed parser.
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        + b"".join(b"--b\r\n\r\npart %d\r\n" % i for i in range(1001))
        + b"--b--\r\n",
    ],
)
def test_odd_messages_step_aside_and_parse_as_before(raw: bytes) -> None:
    assert parse_fast(raw) is None
    assert tree(parse(raw)) == tree(reference(raw))


# Generated messages: random trees of multiparts and leaves, with folded headers, preambles,
# epilogues, trailing whitespace on delimiters and boundaries that are prefixes of each other.
_TEXT = st.lists(
    st.sampled_from([*"ab -=:\t.", "\r\n", "--", "\u00e4", "--b0", "--outer1"]), max_size=12
).map("".join)
_BOUNDARIES = st.sampled_from(["b", "b1", "b-1", "==_x", "b--", "outer", "outer2"])


@st.composite
def entity(draw: Any, depth: int = 0) -> str:
    headers = ""
    for _ in range(draw(st.integers(0, 3))):
        headers += f"X-H{draw(st.integers(0, 9))}:{draw(_TEXT).replace(chr(13) + chr(10), ' ')}"
        if draw(st.booleans()):
            headers += "\r\n\t" + draw(st.sampled_from(["folded", "", " more"]))
        headers += "\r\n"
    if depth < 3 and draw(st.booleans()):
        boundary = draw(_BOUNDARIES) + str(depth)
        children = [draw(entity(depth + 1)) for _ in range(draw(st.integers(1, 3)))]
        body = draw(_TEXT) + ("\r\n" if draw(st.booleans()) else "")
        for child in children:
            body += f"--{boundary}{draw(st.sampled_from(['', ' ', chr(9)]))}\r\n{child}\r\n"
        body += f"--{boundary}--" + draw(st.sampled_from(["\r\n", "  \r\n", ""]))
        if not body.endswith("--"):
            body += draw(_TEXT)
        headers += f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n'
        return f"{headers}\r\n{body}"
    return f"{headers}\r\n{draw(_TEXT)}"


@settings(max_examples=400, deadline=None)
@given(entity())
def test_generated_messages_parse_to_the_same_tree(text: str) -> None:
    raw = text.encode("utf-8")
    quick = parse_fast(raw)
    if quick is not None:
        assert tree(quick) == tree(reference(raw))
    assert tree(parse(raw)) == tree(reference(raw))
