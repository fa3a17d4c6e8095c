"""Crafted and mutated returned mail for the cost tests of the feedback intake (this module
holds no tests). Everything is generated here, from a seed: no third-party mail is copied.

The shapes are the ones that used to cost seconds: many recipients whose diagnostics say
nothing (each was classified against the whole notification again), and lines that made a
parser regex backtrack (a line of dashes, a body of blanks, runs of '<' in HTML, thousands of
parts).
"""

from __future__ import annotations

import random
import string

BOUNCE_DOMAIN = "bounces.esp.example"


def _words(rnd: random.Random, n: int) -> str:
    return " ".join(
        "".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9))) for _ in range(n)
    )


def _headers(to: str, subject: str = "Undelivered Mail Returned to Sender") -> str:
    return (
        "From: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n"
        f"To: {to}\r\n"
        f"Subject: {subject}\r\n"
        "Date: Sat, 28 Nov 2026 09:00:01 +0000\r\n"
        "MIME-Version: 1.0\r\n"
    )


def many_recipients_dsn(
    seed: int, *, recipients: int = 100, text_kb: int = 60, to: str = f"bounces@{BOUNCE_DOMAIN}"
) -> bytes:
    """An RFC 3464 report naming `recipients` addresses, each with a diagnostic no rule
    understands, and a notification of `text_kb` KB mentioning them over and over."""
    rnd = random.Random(seed)
    rcpts = [f"user{i}@example{i % 7}.org" for i in range(recipients)]
    lines: list[str] = []
    size = 0
    while size < text_kb * 1024:
        rcpt = rnd.choice(rcpts)
        lines.append(
            f"<{rcpt}>: host mx.example.org[192.0.2.10] said: 550 {_words(rnd, 8)} {rcpt} {_words(rnd, 6)}"
        )
        size += len(lines[-1])
    groups = "".join(
        f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\nStatus: 5.0.0\r\n"
        f"Diagnostic-Code: smtp; 550 {_words(rnd, 5)}\r\n\r\n"
        for r in rcpts
    )
    return (
        _headers(to)
        + 'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n\r\n'
        + "--BB\r\nContent-Type: text/plain\r\n\r\n"
        + "\r\n".join(lines)
        + "\r\n"
        + "--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
        + f"Reporting-MTA: dns; mx.example.org\r\n\r\n{groups}--BB--\r\n"
    ).encode()


def many_recipients_text(
    seed: int, *, recipients: int = 100, text_kb: int = 70, to: str = f"bounces@{BOUNCE_DOMAIN}"
) -> bytes:
    """A plain-text bounce (no RFC 3464 part) naming `recipients` addresses."""
    rnd = random.Random(seed)
    rcpts = [f"user{i}@example{i % 7}.org" for i in range(recipients)]
    lines = [
        "This is the mail system at host mx.example.org.",
        "I'm sorry to have to inform you that your message could not be delivered to one or more recipients.",
    ]
    size = 0
    while size < text_kb * 1024:
        lines.append(f"<{rnd.choice(rcpts)}>: host mx.example.org[192.0.2.10] said: 550 {_words(rnd, 8)}")
        size += len(lines[-1])
    return (_headers(to) + "Content-Type: text/plain\r\n\r\n" + "\r\n".join(lines)).encode()


def backtracking_lines(seed: int, *, width: int = 4000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """A bounce whose text has a line of dashes, a line of blanks, a run of blank lines and an
    HTML part of '<' runs and unclosed <script> tags: each made a parser regex backtrack
    quadratically (a few thousand characters took seconds)."""
    rnd = random.Random(seed)
    text = "\r\n".join(
        [
            "This message could not be delivered to the following recipients:",
            f"<user{rnd.randint(0, 99)}@example.org>: 550 5.1.1 {_words(rnd, 4)}",
            "-" * width,
            " " * width,
            *([" "] * (width // 4)),
            ">" * width,
        ]
    )
    html = "<" * width + "<p " * (width // 3) + "<script " * (width // 8)
    return (
        _headers(to)
        + 'Content-Type: multipart/alternative; boundary="AA"\r\n\r\n'
        + f"--AA\r\nContent-Type: text/plain\r\n\r\n{text}\r\n"
        + f"--AA\r\nContent-Type: text/html\r\n\r\n{html}\r\n--AA--\r\n"
    ).encode()


def blank_lines(seed: int, *, lines: int = 30000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """A text bounce padded with tens of thousands of lines of blanks: regexes anchored at
    line starts whose "\\s*" ran across lines were quadratic in them."""
    rnd = random.Random(seed)
    text = (
        f"This message could not be delivered to <user{rnd.randint(0, 99)}@example.org>: "
        f"550 5.1.1 {_words(rnd, 4)}\r\n" + " \r\n" * lines
    )
    return (_headers(to) + "Content-Type: text/plain\r\n\r\n" + text).encode()


def many_addresses(seed: int, *, count: int = 20000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """A bounce whose To and X-Failed-Recipients list `count` addresses (de-duplicating them
    in lists was quadratic: seconds)."""
    rnd = random.Random(seed)
    many = ", ".join(f"u{i}.{rnd.randint(0, 9)}@example{i % 50}.org" for i in range(count))
    return (
        _headers(to).replace(f"To: {to}", f"To: {to}, {many}")
        + f"X-Failed-Recipients: {many}\r\nContent-Type: text/plain\r\n\r\n"
        + "550 5.1.1 unknown user\r\n"
    ).encode()


def long_8bit_field(seed: int, *, size: int = 300_000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """An RFC 3464 report whose Diagnostic-Code is one field of `size` bytes of 8-bit text:
    the stdlib re-folded it when the status part was turned back into text, quadratically."""
    rnd = random.Random(seed)
    blob = bytes(rnd.choice(b"abc \xe4\xf6\xfc\xe9") for _ in range(size))
    return (
        (
            _headers(to)
            + 'Content-Type: multipart/report; report-type=delivery-status; boundary="BB"\r\n'
            + "\r\n--BB\r\nContent-Type: text/plain\r\n\r\nDelivery failed.\r\n"
            + "--BB\r\nContent-Type: message/delivery-status\r\n\r\n"
            + "Reporting-MTA: dns; mx.example.org\r\n\r\n"
            + "Final-Recipient: rfc822; user1@example.org\r\nAction: failed\r\n"
            + "Status: 5.0.0\r\nDiagnostic-Code: smtp; 550 "
        ).encode()
        + blob
        + b"\r\n\r\n--BB--\r\n"
    )


def header_like_lines(seed: int, *, lines: int = 40000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """A text bounce of tens of thousands of 'Name: value' lines that never make a block of
    original headers (each was tried as the start of one, reading 60 lines)."""
    rnd = random.Random(seed)
    body = "".join(f"X-{_words(rnd, 1)}: {rnd.randint(0, 9)}\r\n" for _ in range(lines))
    return (
        _headers(to)
        + "Content-Type: text/plain\r\n\r\n"
        + "550 5.1.1 <user1@example.org>: unknown user\r\n"
        + body
    ).encode()


def many_parts(seed: int, *, parts: int = 3000, to: str = f"bounces@{BOUNCE_DOMAIN}") -> bytes:
    """A 'bounce' of thousands of tiny nested and flat parts."""
    rnd = random.Random(seed)
    body = "".join(
        f"--PP\r\nContent-Type: text/plain\r\n\r\n550 5.1.1 <u{i}@example.org> {_words(rnd, 3)}\r\n"
        for i in range(parts)
    )
    return (
        _headers(to) + 'Content-Type: multipart/mixed; boundary="PP"\r\n\r\n' + body + "--PP--\r\n"
    ).encode()


def mutate(raw: bytes, seed: int) -> bytes:
    """A random mutation of a report: lines duplicated, multiplied, scrambled, boundaries and
    part headers inserted where they do not belong."""
    rnd = random.Random(seed)
    lines = raw.split(b"\r\n")
    for _ in range(rnd.randint(5, 30)):
        i = rnd.randrange(len(lines))
        op = rnd.randint(0, 6)
        if op == 0:
            lines.insert(i, lines[rnd.randrange(len(lines))])
        elif op == 1:
            lines[i] = lines[i] * rnd.randint(2, 20)
        elif op == 2:
            lines.insert(i, b"--BB")
        elif op == 3:
            lines.insert(i, b"Content-Type: message/rfc822")
        elif op == 4:
            lines.insert(i, b"")
        elif op == 5:
            lines[i] = bytes(rnd.randrange(32, 127) for _ in range(len(lines[i])))
        else:
            lines[i:i] = [b"--BB", b"Content-Type: multipart/mixed; boundary=BB", b""] * (rnd.randint(1, 50))
    return b"\r\n".join(lines)


def crafted_reports(seed: int = 1) -> dict[str, bytes]:
    """Every crafted shape, by name (generated, same seed: same bytes)."""
    return {
        "many-recipients-dsn": many_recipients_dsn(seed),
        "many-recipients-text": many_recipients_text(seed),
        "backtracking-lines": backtracking_lines(seed),
        "blank-lines": blank_lines(seed),
        "many-addresses": many_addresses(seed),
        "long-8bit-field": long_8bit_field(seed),
        "header-like-lines": header_like_lines(seed),
        "many-parts": many_parts(seed),
        "mutated-dsn": mutate(many_recipients_dsn(seed + 1), seed),
        "mutated-text": mutate(many_recipients_text(seed + 2), seed),
    }
