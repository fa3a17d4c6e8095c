"""message-format: header counts and line length, refused with 550 5.6.0. Bare CR/LF is the
engine's refusal, before any policy runs (the last test here)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import Config, PolicyEntry
from gateway.core.pipeline import Pipeline
from gateway.core.plan import Plan
from gateway.core.registry import discover
from gateway.engine import Engine
from gateway.mailid import MailIdCodec
from policies.message_format import MessageFormat
from tests.unit.test_policy_support import Env, fixture, newsletter, reply_of, set_header


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    yield from Env.session(tmp_path)


REF = "reference_newsletter.eml"


def edit(name: str, *values: str) -> bytes:
    return set_header(fixture(REF), name, *values)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (fixture(REF), None),
        (fixture("plain_text.eml"), None),
        (fixture("nested_mixed_attachment.eml"), None),
        (
            edit("From", "a@shop.example", "b@shop.example"),
            "550 5.6.0 Message format: 2 From headers; exactly one is required",
        ),
        (edit("Date"), "550 5.6.0 Message format: no Date header; exactly one is required"),
        (edit("Message-ID"), "550 5.6.0 Message format: no Message-ID header; exactly one is required"),
        (
            edit("Message-Id", "<a@shop.example>", "<b@shop.example>"),
            "550 5.6.0 Message format: 2 Message-ID headers; exactly one is required",
        ),
        (edit("To"), None),
        (edit("Subject"), None),
        (
            edit("To", "a@example.org", "b@example.org"),
            "550 5.6.0 Message format: 2 To headers; at most one is allowed",
        ),
        (
            set_header(edit("Subject", "one", "two", "three"), "Date"),
            "550 5.6.0 Message format: no Date header; exactly one is required; "
            "3 Subject headers; at most one is allowed",
        ),
        (
            fixture(REF).replace(b"Hallo,", b"H" + b"a" * 998, 1),
            "550 5.6.0 Message format: line 18 is 999 octets long; lines may have at most 998 octets",
        ),
        (fixture(REF).replace(b"Hallo,", b"H" + b"a" * 997, 1), None),
    ],
)
def test_format(env: Env, raw: bytes, expected: str | None) -> None:
    assert reply_of(env.check(MessageFormat(), raw)) == expected


@pytest.mark.parametrize(
    "relpath, expected",
    [
        ("mailing_list_misc/mail-parser__mail_test_13.eml", None),
        ("mailing_list_misc/spamassassin__mailman_message.txt.eml", None),
        # A stray blank line ends its header block early: Message-ID lands in the body.
        (
            "mailing_list_misc/spamassassin__005.eml",
            "550 5.6.0 Message format: no Message-ID header; exactly one is required",
        ),
    ],
)
def test_real_newsletters(env: Env, relpath: str, expected: str | None) -> None:
    assert reply_of(env.check(MessageFormat(), newsletter(relpath))) == expected


HEAD = (
    b"From: a@shop.example\r\nDate: Fri, 27 Nov 2026 10:00:00 +0100\r\nMessage-ID: <m@shop.example>\r\n\r\n"
)
LONG = "550 5.6.0 Message format: line {} is {} octets long; lines may have at most 998 octets"


@pytest.mark.parametrize(
    "body, expected",
    [
        (b"x" * 998 + b"\r\n", None),  # 998 octets and the CR: 999 in the LF-split segment
        (b"x" * 998, None),  # last line without CRLF
        (b"x" * 999 + b"\r\n", LONG.format(5, 999)),
        (b"ok\r\n" + b"x" * 999, LONG.format(6, 999)),
        (b"\r\n\r\n", None),
    ],
)
def test_line_ends_and_lengths(env: Env, body: bytes, expected: str | None) -> None:
    assert reply_of(env.check(MessageFormat(), HEAD + body)) == expected


SMUGGLED = [
    fixture(REF).replace(b"Hallo,\r\n", b"Hallo,\n", 1),
    fixture(REF).replace(b"Hallo,\r\n", b"Hallo,\r\r\n", 1),
    fixture(REF) + b"\r\n.\r\nMAIL FROM:<x@evil.example>\n",
    HEAD + b"a\n\r",  # one CR, one LF, but not a CRLF
    HEAD + b"a\r\nb\r",  # a CR ending the last line
]


@pytest.mark.parametrize("raw", SMUGGLED)
@pytest.mark.parametrize("mode", ["enforce", "monitor", None])
def test_a_bare_cr_or_lf_is_refused_by_the_engine_before_any_policy(
    env: Env, raw: bytes, mode: str | None
) -> None:
    """The client gets the engine's 550 5.6.0 whether message-format is enforced, monitored or
    not configured at all, and no policy runs on the message: that is why message-format has
    no bare CR/LF check of its own."""
    entries = [PolicyEntry(name="message-format", mode=mode)] if mode else []
    config = Config(policies=entries)
    engine = Engine(
        config,
        env.store,
        Pipeline.from_config(config.policies, discover()),
        codec=MailIdCodec({0: b"k" * 32}, 0),
    )

    async def session() -> Plan:
        txn, _ = await engine.mail(env.txn().session, "bounce@shop.example")
        await engine.rcpt(txn, "jane.doe@example.org")
        return await engine.data(txn, raw)

    outcome = asyncio.run(session())
    assert str(outcome.reply) == (
        "550 5.6.0 Message contains a bare CR or LF; use CRLF line endings (SMTP smuggling protection)"
    )
    assert not outcome.decisions and outcome.edits == ()  # no policy ran, nothing to relay
