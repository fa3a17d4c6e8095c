"""The submission session's fast paths answer exactly as aiosmtpd's own code does.

* `SubmissionSMTP._getaddr` parses the plain `<local@domain>` form itself and hands anything
  else to aiosmtpd's parser: same address, same rest, same refusals, on many odd inputs;
* MAIL/RCPT through a running gateway get the same replies with and without the fast path;
* a trusted network's customer is read through the store cache, a missing one is not cached.
"""

from __future__ import annotations

import random
import smtplib
import socket
from typing import Any

import pytest

from gateway.fastpaths import aiosmtpd as fast
from gateway.transports.smtp import SubmissionSMTP
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import AioSMTP, add_customer

ODD = [
    "",
    " ",
    "<>",
    "<> SIZE=10",
    "<>SIZE=10",
    "<",
    ">",
    "<<a@b>>",
    "<a@b>>",
    "<a@b",
    "a@b",
    "a@b SIZE=1",
    "a@b>",
    "news@customer.example",
    "<news@customer.example>",
    "<news@customer.example> SIZE=20480 BODY=8BITMIME",
    "<news@customer.example>  SIZE=1",
    "<news@customer.example>\tSIZE=1",
    "<news@customer.example> \tSIZE=1",
    "<news@customer.example> (comment) SIZE=1",
    "<news@customer.example>(c)",
    "<news@customer.example> ",
    "<news@customer.example>SIZE=1",
    "<news@customer.example>x",
    "<news@customer.example> \x0bSIZE=1",
    "<news@customer.example> \x1cSIZE=1",
    "<news@customer.example> \u00a0SIZE=1",
    "<news@customer.example> \u2003x",
    '<"quoted local"@customer.example>',
    '<"a\\"b"@c.d>',
    '<"news"@customer.example>',
    "<@route.example:news@customer.example>",
    "<@a,@b:c@d>",
    "<@a:b>",
    "< news@customer.example>",
    "<news @customer.example>",
    "<news@ customer.example>",
    "<news@customer.example >",
    " <news@customer.example>",
    "<(c)news@customer.example>",
    "<news(c)@customer.example>",
    "<news@customer.example(c)>",
    "<a..b@c.d>",
    "<.a@c.d>",
    "<a.@c.d>",
    "<a@.c.d>",
    "<a@c..d>",
    "<a@c.d.>",
    "<a@c>",
    "<a@@c.d>",
    "<a@b@c.d>",
    "<@c.d>",
    "<a@>",
    "<a@[192.0.2.1]>",
    "<a@[IPv6:2001:db8::1]>",
    "<a@-c.d>",
    "<a@c_d.e>",
    "<a@c.d-e>",
    "<a+tag@c.d>",
    "<a!#$%&'*+/=?^_`{|}~-z@c.d>",
    "<=?utf-8?q?abc?=@c.d>",
    "<=?utf-8?q?a=20b?=@c.d>",
    "<x=?utf-8?q?abc?=@c.d>",
    "<a@=?utf-8?q?c?=.d>",
    "<=?@c.d>",
    "<=x@c.d>",
    "<?=@c.d>",
    "<jörg@bücher.example>",
    "<jörg@example.org>",
    "<a@bücher.example>",
    "<\udcff@c.d>",
    "<a\\b@c.d>",
    "<a\x01b@c.d>",
    "<a b@c.d>",
    "<a,b@c.d>",
    "<a;b@c.d>",
    "<a:b@c.d>",
    "<a[b]@c.d>",
    "<a@c.d> SIZE=1 BODY=8BITMIME SMTPUTF8",
    "<A.B-C_D@Example.ORG>",
    "<" + "a" * 64 + "@c.d>",
    "<" + "a" * 65 + "@c.d>",
    "<" + "a" * 300 + "@" + "b." * 100 + "c>",
    "<postmaster>",
    "<Postmaster>",
    "<a@b> <c@d>",
    "<a@b>,<c@d>",
]

PIECES = [
    "<",
    ">",
    "a",
    "news",
    "b.c",
    "@",
    ".",
    " ",
    "  ",
    "\t",
    "(c)",
    '"q"',
    "=?",
    "=?utf-8?q?a?=",
    "[1.2.3.4]",
    ":",
    ",",
    "SIZE=1",
    "é",
    "\\",
    "-",
    "_",
    "+tag",
    "<>",
    "@r:",
    "\x0b",
    "customer.example",
    "=",
    "?",
]


def generated(count: int = 4000) -> list[str]:
    rng = random.Random(20261128)
    out = []
    for _ in range(count // 2):
        out.append("".join(rng.choice(PIECES) for _ in range(rng.randint(1, 9))))
    for _ in range(count // 2):
        local = "".join(
            rng.choice(["a", "b.c", ".", "+", "=?", "-", "é", '"', "x"]) for _ in range(rng.randint(0, 4))
        )
        domain = "".join(
            rng.choice(["d", "e.f", ".", "-", "_", "[", "ü", "g"]) for _ in range(rng.randint(0, 4))
        )
        tail = rng.choice(["", " ", " SIZE=1", "  SIZE=1", "\tX", " (c) X", "x", ">", " \x0b1"])
        out.append(f"<{local}@{domain}>{tail}")
    return out


def outcome(func: Any, protocol: Any, arg: str) -> Any:
    try:
        return func(protocol, arg)
    except Exception as exc:  # noqa: BLE001 - the same exception counts as the same outcome
        return type(exc).__name__


@pytest.mark.parametrize("local_part_limit", [0, 4, 64])
def test_getaddr_agrees_with_aiosmtpd_on_every_input(local_part_limit):
    protocol = SubmissionSMTP.__new__(SubmissionSMTP)  # _getaddr needs no session
    protocol.local_part_limit = local_part_limit
    cases = ODD + generated()
    fast = 0
    for arg in cases:
        ours = outcome(SubmissionSMTP._getaddr, protocol, arg)
        theirs = outcome(AioSMTP._getaddr, protocol, arg)
        assert ours == theirs, arg
        if arg.startswith("<") and "@" in arg:
            fast += 1
    assert fast > 1000  # the generated inputs did exercise the `<...@...>` form


@pytest.mark.skipif(not fast.ACTIVE, reason="the aiosmtpd fast paths are off")
def test_the_plain_form_does_not_reach_the_header_parser(monkeypatch):
    import aiosmtpd.smtp

    def refuse(value: str) -> Any:
        raise AssertionError(f"parser called for {value!r}")

    monkeypatch.setattr(aiosmtpd.smtp, "get_angle_addr", refuse)
    protocol = SubmissionSMTP.__new__(SubmissionSMTP)
    assert protocol._getaddr("<news@customer.example>") == ("news@customer.example", "")
    assert protocol._getaddr("<a.b+c@d-e.f> SIZE=5 BODY=8BITMIME") == ("a.b+c@d-e.f", "SIZE=5 BODY=8BITMIME")
    with pytest.raises(AssertionError):
        protocol._getaddr('<"q"@customer.example>')


def replies_for(gw: Any, commands: list[tuple[str, str]]) -> list[tuple[int, bytes]]:
    out = []
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname="client.test", timeout=30) as smtp:
        smtp.ehlo()
        for verb, arg in commands:
            smtp.putcmd(verb, arg)
            out.append(smtp.getreply())
    return out


SESSION = [
    (verb, arg)
    for address in [
        "<news@customer.example>",
        "<news@customer.example> SIZE=100",
        "<news@customer.example> SIZE=999999999999",
        "<news@customer.example> BODY=8BITMIME",
        "<news@customer.example> BODY=BINARY",
        "<news@customer.example> FOO=1",
        "<news@customer.example>  SIZE=1",
        "<news@customer.example> (c)",
        "<>",
        '<"news"@customer.example>',
        "<@r.example:news@customer.example>",
        "news@customer.example",
        "<news@customer.example",
        "<a..b@customer.example>",
        "<news@customer.example.>",
        "<=?utf-8?q?news?=@customer.example>",
        "<a@[192.0.2.1]>",
        "<news@customer.example> x=",
    ]
    for verb, arg in [
        ("MAIL", f"FROM:{address}"),
        ("RCPT", f"TO:{address.replace('news', 'anna')}"),
        ("RCPT", "TO:<anna@example.org> NOTIFY=NEVER"),
        ("RCPT", "TO:<bob@example.org>"),
        ("RSET", ""),
    ]
]


def test_mail_and_rcpt_replies_match_aiosmtpds_parser(gateway, scripted_mta, monkeypatch):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_networks": {"127.0.0.1/32": "acme"},
            }
        ],
    )
    add_customer(gw.store)
    fast = replies_for(gw, SESSION)
    monkeypatch.setattr(SubmissionSMTP, "_getaddr", AioSMTP._getaddr)
    assert replies_for(gw, SESSION) == fast
    codes = {code for code, _ in fast}
    assert {250, 501, 553} <= codes  # accepted, syntax errors and malformed addresses seen
    # Every reply's log line was written before the reply: the accepted MAILs are logged.
    mails = [line for line in gw.log_lines() if line.get("event") == "mail"]
    assert len(mails) == 2 * sum(
        1 for (verb, _), (code, _) in zip(SESSION, fast, strict=True) if verb == "MAIL" and code == 250
    )


def test_trusted_network_customer_is_read_through_the_cache(gateway, scripted_mta, tmp_path):
    from gateway.store import open_store

    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_networks": {"127.0.0.1/32": "acme"},
            }
        ],
    )
    store = gw.server.state.engine.store
    lookups: list[str] = []
    real = store.get_customer

    def counting(name: str) -> Any:
        lookups.append(name)
        return real(name)

    store.get_customer = counting

    def mail_code() -> int:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as smtp:
            smtp.ehlo()
            return smtp.mail("news@customer.example")[0]

    # Not there yet: refused, and the miss is not remembered ...
    assert mail_code() == 530
    # ... so a customer another process adds (no cache invalidation here) is known at once.
    other = open_store(gw.config.store_url())
    add_customer(other)
    assert mail_code() == 250
    before = len(lookups)
    for _ in range(5):
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as smtp:
            assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    assert len(lookups) == before  # served from the cache
    assert len(mta.received) == 5
    trusted = [line for line in gw.log_lines() if line.get("result") == "trusted-network"]
    assert len(trusted) == 6 and {line["customer"] for line in trusted} == {"acme"}
    # A write through the gateway's own store clears the cache: the next session reads again.
    store.set_customer_status("acme", "suspended")
    before = len(lookups)
    assert mail_code() != 250  # authenticated, then refused by customer-active
    assert len(lookups) == before + 1


def test_refused_session_over_the_cap_gets_the_same_reply(gateway, scripted_mta):
    gw = gateway(
        scripted_mta().port,
        limits={"max_sessions": 1},
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_networks": {"127.0.0.1/32": "acme"},
            }
        ],
    )
    add_customer(gw.store)
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as first:
        first.ehlo()
        with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as second:
            greeting = second.recv(200)
    assert greeting.startswith(b"421 ")
    assert any(line.get("event") == "session_refused" for line in gw.log_lines())


def test_long_line_check_agrees_with_splitting_every_line():
    from gateway.dataread import has_long_line

    rng = random.Random(5321)
    pieces = [b"\r\n", b"\r", b"\n", b".", b"a", b"\r\r\n", b"\n\r"]
    for _ in range(3000):
        limit = rng.choice([1, 2, 3, 5, 8, 20, 1001])
        parts = []
        for _ in range(rng.randint(0, 30)):
            if rng.random() < 0.3:
                parts.append(b"x" * rng.randint(0, 2 * limit + 3))
            else:
                parts.append(rng.choice(pieces))
        data = b"".join(parts)
        for buffer in (data, bytearray(data), b"\r\n" + data + b"\r\n"):
            expected = max(map(len, buffer.split(b"\r\n"))) + 2 > limit
            assert has_long_line(buffer, limit) is expected, (buffer, limit)
