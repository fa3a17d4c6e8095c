"""The relay core end to end: real sockets, real TLS, real downstreams (Postfix and scripted)."""

from __future__ import annotations

import smtplib
import socket
import time

import pytest

from tests.support.gateway import PASSWORD, add_customer

MESSAGE = (
    b"From: Shop News <news@customer.example>\r\n"
    b"To: anna@example.org\r\n"
    b"Subject: Autumn offers\r\n"
    b"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <autumn-1@customer.example>\r\n"
    b"X-Campaign-ID: autumn-2026\r\n"
    b"X-Mailing-ID: forged-by-client\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello Anna,\r\n"
    b".leading dot line must survive dot-stuffing\r\n"
    b"\r\n"
    b"-- \r\nShop GmbH\r\n"
)


def send(gw, message=MESSAGE, rcpt="anna@example.org", sender="news@customer.example", **kw):
    with gw.client(**kw) as smtp:
        return smtp.sendmail(sender, [rcpt], message)


# -- authentication and relaying rights --------------------------------------------------------


def test_auth_over_starttls_with_right_password_relays(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    assert send(gw) == {}
    assert len(mta.received) == 1
    events = [line["event"] for line in gw.log_lines()]
    assert "auth" in events and "relay" in events


def test_wrong_password_is_refused_and_counted(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
        gw.client(login=("acme", "wrong password"))
    assert excinfo.value.smtp_code == 535
    assert any(line.get("event") == "auth" and line.get("result") == "failed" for line in gw.log_lines())
    assert not any(
        "wrong password" in line for line in gw.config.path(gw.config.logging.file).read_text().splitlines()
    )


def test_auth_before_tls_is_refused(gateway, scripted_mta):
    gw = gateway(scripted_mta().port)
    add_customer(gw.store)
    with smtplib.SMTP("127.0.0.1", gw.port) as smtp:
        smtp.ehlo()
        assert "auth" not in smtp.esmtp_features
        code, text = smtp.docmd("AUTH", "PLAIN AGFjbWUAY29ycmVjdCBob3JzZSBiYXR0ZXJ5IHN0YXBsZQ==")
        assert code == 538


def test_unauthenticated_mail_is_refused_and_nothing_relayed(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    with gw.client(login=None) as smtp:
        code, text = smtp.mail("news@customer.example")
        assert (code, text[:5]) == (530, b"5.7.0")
        code, _ = smtp.rcpt("anna@example.org")
        assert code >= 500
        code, _ = smtp.docmd("DATA")
        assert code >= 500
    assert mta.received == []


def test_auth_failures_slow_down_the_peer(gateway, scripted_mta):
    gw = gateway(scripted_mta().port, limits={"auth_failure_delay": 0.4})
    add_customer(gw.store)
    started = time.monotonic()
    for _ in range(3):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            gw.client(login=("acme", "nope"))
    assert time.monotonic() - started >= 0.8  # failures answered 0.4 s apart


@pytest.mark.parametrize("status,text", [("pending", b"not yet activated"), ("suspended", b"suspended")])
def test_inactive_customers_are_refused_at_mail(gateway, scripted_mta, status, text):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store, status=status)
    with gw.client() as smtp:
        code, reply = smtp.mail("news@customer.example")
    assert code == 550
    assert reply.startswith(b"5.7.1") and text in reply
    assert b"(customer-active)" in reply
    assert mta.received == []


def test_trusted_local_listener_allows_plaintext_auth_on_loopback(gateway, scripted_mta, tmp_path):
    mta = scripted_mta()
    gw = gateway(
        mta.port, listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}]
    )
    add_customer(gw.store)
    assert send(gw, tls=False) == {}
    assert len(mta.received) == 1


# -- limits ------------------------------------------------------------------------------------


def test_second_recipient_gets_452_and_first_is_relayed(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    with gw.client() as smtp:
        assert smtp.mail("news@customer.example")[0] == 250
        assert smtp.rcpt("anna@example.org")[0] == 250
        code, text = smtp.rcpt("ben@example.org")
        assert (code, text[:5]) == (452, b"4.5.3")
        assert smtp.data(MESSAGE)[0] == 250
    assert mta.received[0][1] == ["anna@example.org"]


def test_size_is_advertised_and_enforced(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port, limits={"max_message_size": 4096})
    add_customer(gw.store)
    with gw.client() as smtp:
        assert smtp.esmtp_features["size"] == "4096"
        code, text = smtp.mail("news@customer.example", options=["SIZE=100000"])
        assert (code, text[:5]) == (552, b"5.3.4")
    big = MESSAGE + b"x" * 80 + b"\r\n"
    big = big * 60
    with gw.client() as smtp:
        assert smtp.mail("news@customer.example")[0] == 250  # no SIZE= announced
        assert smtp.rcpt("anna@example.org")[0] == 250
        code, text = smtp.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
    assert mta.received == []


def test_session_cap_refuses_extra_connections_with_421(gateway, scripted_mta):
    gw = gateway(scripted_mta().port, limits={"max_sessions": 1})
    first = socket.create_connection(("127.0.0.1", gw.port))
    assert first.recv(100).startswith(b"220")
    second = socket.create_connection(("127.0.0.1", gw.port))
    assert second.recv(100).startswith(b"421 4.3.2")
    first.close()
    second.close()


# -- relay semantics ---------------------------------------------------------------------------


def test_downstream_5xx_is_passed_back_as_5xx(gateway, scripted_mta):
    mta = scripted_mta("data-5xx")
    gw = gateway(mta.port)
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE)
    assert code == 554
    assert text.startswith(b"5.7.1 Message rejected: content policy")


def test_downstream_recipient_5xx_is_passed_back(gateway, scripted_mta):
    gw = gateway(scripted_mta("rcpt-5xx").port)
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE)
    assert code == 550 and text.startswith(b"5.1.1")


def test_downstream_4xx_is_passed_back_as_4xx(gateway, scripted_mta):
    gw = gateway(scripted_mta("data-4xx").port)
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, _ = smtp.data(MESSAGE)
    assert code == 452


def test_downstream_closing_mid_data_gives_4xx(gateway, scripted_mta):
    gw = gateway(scripted_mta("drop-in-data").port)
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE)
    assert 400 <= code < 500
    assert b"Traceback" not in text and b"/" not in text


def test_downstream_required_starttls_missing_gives_4xx(gateway, scripted_mta):
    gw = gateway(scripted_mta().port, downstream={"starttls": "required"})
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE)
    assert (code, text[:5]) == (451, b"4.7.5")


def test_store_down_gives_4xx_not_a_crash(gateway, scripted_mta, tmp_path):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    with gw.client() as smtp:
        # The database goes away under a logged-in session.
        gw.store.execute("PRAGMA foreign_keys=OFF")
        gw.store.execute("DROP TABLE customers")
        code, text = smtp.mail("news@customer.example")
    assert 400 <= code < 500
    assert b"sqlite" not in text.lower() and b"table" not in text.lower()
    assert mta.received == []


def test_downstream_down_then_retry_arrives_exactly_once(gateway, postfix_clean):
    postfix = postfix_clean
    postfix.stop()
    try:
        gw = gateway(postfix.port)
        add_customer(gw.store)
        with gw.client() as smtp:
            smtp.mail("news@customer.example")
            smtp.rcpt("anna@example.org")
            code, text = smtp.data(MESSAGE)
        assert (code, text[:5]) == (451, b"4.4.1")
    finally:
        postfix.start()
    assert send(gw) == {}  # the client's retry
    time.sleep(1.0)
    delivered = postfix.wait_for_messages(1)
    assert len(delivered) == 1


def test_end_to_end_through_postfix_is_byte_identical_but_for_added_headers(gateway, postfix_clean, tmp_path):
    from gateway.dkim import keygen

    keygen("customer.example", "s2026", "rsa-sha256", tmp_path / "dkim")
    gw = gateway(postfix_clean.port, dkim={"missing_key": "tempfail"})
    add_customer(gw.store)
    assert send(gw) == {}
    [delivered] = postfix_clean.wait_for_messages(1)
    delivered = delivered.replace(b"\r\n", b"\n")
    original = MESSAGE.replace(b"\r\n", b"\n")
    # Postfix prepends its trace headers; the gateway prepends its own; then the client's bytes.
    kept_client_part = original.replace(b"X-Mailing-ID: forged-by-client\n", b"")
    assert delivered.endswith(kept_client_part)
    added = delivered[: -len(kept_client_part)]
    names = [line.split(b":")[0] for line in added.split(b"\n") if line and line[:1] not in b" \t"]
    assert names[:3] == [b"Return-Path", b"X-Original-To", b"Delivered-To"]
    assert b"Received" in names
    gateway_names = names[names.index(b"Received") + 1 :]
    assert gateway_names == [b"DKIM-Signature", b"X-Mailing-ID", b"Feedback-ID"]
    assert b"forged-by-client" not in delivered
    # The downstream queue id reaches the log line of the relay.
    relay = [line for line in gw.log_lines() if line.get("event") == "relay"][-1]
    assert relay["result"] == "accepted" and relay.get("queue_id")
    assert relay["queue_id"] in postfix_clean.read_log()


def test_downstream_connections_are_reused(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    for _ in range(3):
        assert send(gw) == {}
    assert len(mta.received) == 3
    assert mta.connections == 1


def test_a_pooled_connection_closed_by_the_downstream_is_replaced(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    assert send(gw) == {}
    mta.drop_connections()
    time.sleep(0.2)
    assert send(gw) == {}
    assert len(mta.received) == 2 and mta.connections == 2


# -- SMTP smuggling ----------------------------------------------------------------------------

SMUGGLED = (
    b"\r\nMAIL FROM:<evil@customer.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
    b"From: evil@customer.example\r\n\r\nsmuggled\r\n"
)


@pytest.mark.parametrize(
    "sequence", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r"], ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR"]
)
def test_smuggling_sequences_never_yield_a_second_message(gateway, scripted_mta, sequence):
    mta = scripted_mta()
    gw = gateway(
        mta.port, listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}]
    )
    add_customer(gw.store)
    conn = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    reader = conn.makefile("rb")

    def reply() -> bytes:
        lines = []
        while True:
            line = reader.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    assert reply().startswith(b"220")
    import base64

    auth = base64.b64encode(b"\0acme\0" + PASSWORD.encode())
    for command, expect in [
        (b"EHLO client.test", b"250"),
        (b"AUTH PLAIN " + auth, b"235"),
        (b"MAIL FROM:<news@customer.example>", b"250"),
        (b"RCPT TO:<anna@example.org>", b"250"),
        (b"DATA", b"354"),
    ]:
        conn.sendall(command + b"\r\n")
        assert reply().startswith(expect), command
    body = MESSAGE + b"first part" + sequence + SMUGGLED + b"\r\n.\r\n"
    conn.sendall(body)
    answer = reply()
    assert answer.startswith(b"550 5.6.0"), answer
    conn.sendall(b"QUIT\r\n")
    reply()
    conn.close()
    assert mta.received == []


def test_a_ledger_that_cannot_be_written_leaves_the_delivery_standing_and_tells_ops(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    assert send(gw) == {}
    gw.store.execute("DROP TABLE messages")  # the ledger is gone; everything else works
    assert send(gw) == {}, "the downstream accepted it: the client hears its 250"
    assert len(mta.received) == 2
    failed = [line for line in gw.log_lines() if line.get("event") == "ledger"]
    relayed = [line for line in gw.log_lines() if line.get("event") == "relay"]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    assert failed[0]["mail_id"] == relayed[-1]["mail_id"]
