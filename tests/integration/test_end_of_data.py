"""What happens to a message at the end of DATA, seen from outside: a real gateway, a real SMTP
client, and the exact bytes the downstream receives."""

from __future__ import annotations

import re
import smtplib
import threading
import time

import pytest

from gateway.core.message import header_values
from gateway.dkim import keygen, static_dnsfunc, verify
from tests.integration import test_http_support as http_support
from tests.support.gateway import add_customer

HEAD = (
    b"From: Shop News <news@customer.example>\r\n"
    b"To: anna@example.org\r\n"
    b"Subject: Autumn offers\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <autumn-1@customer.example>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
)
BODY = b"\r\nHello Anna,\r\n\r\n-- \r\nShop GmbH\r\n"

# What only the gateway or the receiving side may write, as a customer might forge it: every
# case, folded, more than once.
FORGED = (
    b"Return-Path: <forged-rp@attacker.example>\r\n"
    b"return-path:\r\n <forged-rp-folded@attacker.example>\r\n"
    b"Delivered-To: forged-dt@example.org\r\n"
    b"DELIVERED-TO :\r\n\tforged-dt-folded@example.org\r\n"
    b"X-CSA-Complaints: forged-csa@attacker.example\r\n"
    b"x-csa-complaints:\r\n forged-csa-folded@attacker.example\r\n"
)


def send(gw, message: bytes) -> dict:
    with gw.client() as smtp:
        return smtp.sendmail("news@customer.example", ["anna@example.org"], message)


@pytest.fixture
def signing_gateway(tmp_path, gateway, scripted_mta):
    """gateway(**overrides) signing for customer.example -> (gateway, downstream, DNS)."""
    _, txt = keygen("customer.example", "s1", "rsa-sha256", tmp_path / "dkim")
    dns = static_dnsfunc({"s1._domainkey.customer.example": txt})

    def start(**overrides):
        mta = scripted_mta()
        overrides.setdefault("dkim", {"keys_dir": str(tmp_path / "dkim"), "missing_key": "tempfail"})
        gw = gateway(mta.port, **overrides)
        add_customer(gw.store)
        return gw, mta, dns

    return start


def signed_names(data: bytes) -> list[str]:
    [sig] = header_values(data, "DKIM-Signature")
    return re.search(r"h=([^;]+);", sig.replace(" ", "")).group(1).lower().split(":")


# -- item 5: headers the customer may not write ------------------------------------------------


@pytest.mark.parametrize("csa", [None, "csa-complaints@eco.de"])
def test_headers_only_the_gateway_or_receiver_may_write_are_removed_before_signing(signing_gateway, csa):
    gw, mta, dns = signing_gateway(feedback={"csa_complaints": csa})
    first, rest = FORGED.split(b"\r\n", 1)  # one before the customer's headers, the rest after
    message = first + b"\r\n" + HEAD + rest + BODY

    assert send(gw, message) == {}

    [(_, _, data)] = mta.received
    assert b"forged" not in data
    assert header_values(data, "Return-Path") == []
    assert header_values(data, "Delivered-To") == []
    assert header_values(data, "X-CSA-Complaints") == ([csa] if csa else [])
    # The rest of the customer's bytes are untouched and the signature verifies.
    assert data.endswith(HEAD + BODY)
    assert [r.result for r in verify(data, dns)] == ["pass"]
    if csa:
        assert "x-csa-complaints" in signed_names(data)


# -- item 7: MIME complexity is bounded, and a big message does not freeze the worker ----------


def multipart(parts: int, part_body: bytes = b"hello\r\n", depth: int = 1) -> bytes:
    """A message of `parts` text parts in one multipart, that multipart nested `depth` deep."""
    inner = (
        b"".join(b"--leaf\r\nContent-Type: text/plain\r\n\r\n" + part_body for _ in range(parts))
        + b"--leaf--\r\n"
    )
    content_type = b'multipart/mixed; boundary="leaf"'
    for level in range(depth - 1):
        boundary = b"level%d" % level
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
    return HEAD.replace(b"text/plain; charset=utf-8", content_type) + b"\r\n" + inner


@pytest.mark.parametrize(
    "limits, message, reply",
    [
        ({}, multipart(501), b"5.3.4 Message has more than 500 MIME parts, the most accepted"),
        ({}, multipart(240_000, b""), b"5.3.4 Message has more than 500 MIME parts, the most accepted"),
        (
            {"max_mime_parts": 50},
            multipart(51),
            b"5.3.4 Message has more than 50 MIME parts, the most accepted",
        ),
        (
            {},
            multipart(2, depth=21),
            b"5.3.4 Message has MIME parts nested more than 20 deep, the most accepted",
        ),
        (
            {"max_mime_depth": 5},
            multipart(2, depth=5),
            b"5.3.4 Message has MIME parts nested more than 5 deep, the most accepted",
        ),
    ],
)
def test_a_message_over_the_mime_limits_is_refused_naming_the_limit(
    gateway, scripted_mta, limits, message, reply
):
    mta = scripted_mta()
    gw = gateway(mta.port, limits={"auth_failure_delay": 0.0, **limits})
    add_customer(gw.store)

    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(gw, message)

    assert (refused.value.smtp_code, refused.value.smtp_error) == (552, reply)
    assert mta.received == []
    [line] = [e for e in gw.log_lines() if e.get("event") == "message"]
    assert line["result"] == "rejected" and "limits.max_mime_" in line["reason"]


@pytest.mark.parametrize(
    "limits, message",
    [
        ({}, multipart(499)),
        ({}, multipart(2, depth=19)),
        ({"max_mime_parts": 50, "max_mime_depth": 5}, multipart(50)),
    ],
)
def test_a_message_within_the_mime_limits_is_relayed(gateway, scripted_mta, limits, message):
    mta = scripted_mta()
    gw = gateway(mta.port, limits={"auth_failure_delay": 0.0, **limits})
    add_customer(gw.store)

    assert send(gw, message) == {}
    assert mta.received[0][2].endswith(message)


def test_another_session_is_answered_while_the_largest_allowed_message_is_checked(signing_gateway):
    """The largest message the limits allow (10 MB, 500 parts) is counted, parsed, checked and
    signed while a second session on the same worker sends NOOPs: they are answered all along,
    not after the check."""
    gw, mta, dns = signing_gateway(
        policies=[
            {"name": "customer-active", "mode": "enforce"},
            {"name": "sender-identity", "mode": "enforce"},
            {"name": "message-format", "mode": "monitor"},
            {"name": "unsubscribe", "mode": "monitor"},
            {"name": "imprint", "mode": "monitor"},
        ]
    )
    line = b"Unsubscribe: https://customer.example/u " + b"x" * 60 + b"\r\n"
    big = multipart(500, line * 195)
    assert 9_000_000 < len(big) < gw.config.limits.max_message_size

    latencies: list[tuple[float, float]] = []  # (sent at, seconds to the answer)
    stop, ready = threading.Event(), threading.Event()

    def noops() -> None:
        with gw.client() as smtp:
            ready.set()
            while not stop.is_set():
                started = time.perf_counter()
                assert smtp.noop()[0] == 250
                latencies.append((started, time.perf_counter() - started))
                time.sleep(0.005)

    pinger = threading.Thread(target=noops)
    with gw.client() as smtp:
        pinger.start()
        assert ready.wait(30)
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        assert smtp.docmd("DATA")[0] == 354
        smtp.send(big + b".\r\n")
        sent = time.perf_counter()
        code, _ = smtp.getreply()
        answered = time.perf_counter()
    stop.set()
    pinger.join(30)

    assert code == 250
    assert [r.result for r in verify(mta.received[0][2], dns)] == ["pass"]
    # While the gateway read the end of the message and checked it, the other session's NOOPs
    # were answered: none waited for the check (the check itself takes most of the window).
    window = answered - sent
    during = [seconds for started, seconds in latencies if sent <= started < answered]
    assert len(during) >= 3, (window, latencies[-5:])
    assert max(during) < max(0.1, window / 4), (window, sorted(during)[-5:])


# -- item 14: managed List-Unsubscribe is the customer's service, not a policy's side effect ---


@pytest.mark.parametrize(
    "unsubscribe_policy, body",
    [
        ("enforce", None),
        ("monitor", None),
        ("monitor", "Hello, no link to leave the list here.\r\n"),  # the policy would refuse
        ("off", None),
        (None, None),  # not in the pipeline at all
    ],
)
def test_managed_list_unsubscribe_is_stamped_whatever_the_unsubscribe_policy_says(
    gateway, scripted_mta, tmp_path, unsubscribe_policy, body
):
    policies = [{"name": "customer-active", "mode": "enforce"}]
    if unsubscribe_policy:
        policies.append({"name": "unsubscribe", "mode": unsubscribe_policy})
    gw, mta, _, records = http_support.start(gateway, scripted_mta, tmp_path, policies=policies, managed=True)
    raw = http_support.message(
        "anna@example.org",
        body=body,
        extra_headers="List-Unsubscribe: <https://evil.example/u>\r\n"
        "list-unsubscribe-post: List-Unsubscribe=One-Click\r\n",
    )

    data = http_support.send(gw, mta, "anna@example.org", raw)

    [url] = header_values(data, "List-Unsubscribe")
    assert url.startswith(f"<{http_support.PUBLIC}/u/")
    assert header_values(data, "List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]
    assert b"evil.example" not in data
    assert [r.result for r in verify(data, static_dnsfunc(records))] == ["pass"]
    assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed_names(data))


def test_a_managed_customers_second_recipient_goes_in_its_own_transaction(gateway, scripted_mta, tmp_path):
    def five_recipients(port, **overrides):
        return gateway(port, limits={"max_recipients": 5, "auth_failure_delay": 0.0}, **overrides)

    gw, mta, _, _ = http_support.start(
        five_recipients,
        scripted_mta,
        tmp_path,
        managed=True,
        policies=[{"name": "customer-active", "mode": "enforce"}],
    )
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        assert smtp.rcpt("anna@example.org")[0] == 250
        assert smtp.rcpt("ben@example.org") == (
            452,
            b"4.5.3 Too many recipients; send the others in a new transaction",
        )
        assert smtp.data(http_support.message("anna@example.org"))[0] == 250
    [(_, rcpts, data)] = mta.received
    assert rcpts == ["anna@example.org"]
    assert len(header_values(data, "List-Unsubscribe")) == 1


def test_managed_list_unsubscribe_without_a_public_url_tempfails_rather_than_leave_without(
    gateway, scripted_mta, tmp_path
):
    gw, mta, _, _ = http_support.start(
        gateway,
        scripted_mta,
        tmp_path,
        managed=True,
        policies=[{"name": "customer-active", "mode": "enforce"}],
        http={"public_url": None},
    )
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(gw, http_support.message("anna@example.org"))
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        451,
        b"4.3.5 Unsubscribe links cannot be made right now, please try again later",
    )
    assert mta.received == []
