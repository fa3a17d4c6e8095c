"""Listener options: implicit TLS, timeouts, line length, trusted networks, log rotation."""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time

import pytest

from gateway.logging import get_logger, setup_logging
from tests.integration.test_relay_core import MESSAGE, send
from tests.support.gateway import PASSWORD, add_customer


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def test_implicit_tls_listener_allows_auth_at_once(gateway, scripted_mta, tmp_path):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "implicit_tls": True,
                "tls": {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")},
            }
        ],
    )
    add_customer(gw.store)
    with smtplib.SMTP_SSL("127.0.0.1", gw.port, context=unverified(), timeout=10) as smtp:
        smtp.ehlo()
        assert "starttls" not in smtp.esmtp_features
        smtp.login("acme", PASSWORD)
        assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    assert len(mta.received) == 1
    # Plaintext to an implicit-TLS port gets no SMTP greeting.
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as raw:
        raw.sendall(b"EHLO x\r\n")
        assert not raw.recv(100).startswith(b"220")


def test_idle_command_timeout_closes_the_session(gateway, scripted_mta):
    gw = gateway(scripted_mta().port, limits={"command_timeout": 0.5})
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as conn:
        assert conn.recv(100).startswith(b"220")
        time.sleep(1.0)
        assert conn.recv(100) == b""  # closed by the gateway


def test_data_timeout_closes_a_stalled_transfer_and_relays_nothing(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        limits={"data_timeout": 0.5},
        listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}],
    )
    add_customer(gw.store)
    smtp = gw.client(tls=False)
    smtp.mail("news@customer.example")
    smtp.rcpt("anna@example.org")
    smtp.putcmd("DATA")
    assert smtp.getreply()[0] == 354
    smtp.send(MESSAGE[:100])  # ... and then nothing more
    time.sleep(1.0)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        smtp.send(b"more\r\n.\r\n")
        smtp.getreply()
    assert mta.received == []


def test_over_long_line_in_data_is_refused(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(mta.port)
    add_customer(gw.store)
    with gw.client() as smtp:
        smtp.mail("news@customer.example")
        smtp.rcpt("anna@example.org")
        code, text = smtp.data(MESSAGE + b"x" * 1200 + b"\r\n")
    assert (code, text[:5]) == (500, b"5.5.2")
    assert mta.received == []


def test_trusted_networks_never_apply_to_other_addresses(gateway, scripted_mta):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "trusted_networks": {"10.0.0.0/8": "acme"},
            }
        ],
    )
    add_customer(gw.store)
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as smtp:
        smtp.ehlo()
        code, _ = smtp.mail("news@customer.example")
    assert code == 530
    assert mta.received == []


def test_trusted_network_authenticates_its_customer(gateway, scripted_mta):
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
    assert send(gw, tls=False, login=None) == {}
    assert len(mta.received) == 1
    assert any(line.get("result") == "trusted-network" for line in gw.log_lines())


def test_size_rotation_keeps_every_line(tmp_path):
    path = tmp_path / "gw.log"
    setup_logging(path, "info", max_bytes=2000, backup_count=50)
    log = get_logger()
    for i in range(300):
        log.event("relay", mail_id=f"id{i:04d}", result="accepted")
    logging.getLogger("gateway").handlers[0].flush()
    lines = [line for f in tmp_path.glob("gw.log*") for line in f.read_text().splitlines()]
    assert len(list(tmp_path.glob("gw.log*"))) > 3
    assert sorted(line.split("mail_id=")[1].split()[0] for line in lines) == [
        f"id{i:04d}" for i in range(300)
    ]


def test_a_log_file_moved_by_logrotate_is_reopened_and_no_line_is_lost(tmp_path):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    log = get_logger()
    for i in range(5):
        log.event("relay", mail_id=f"id{i}")
    path.rename(tmp_path / "gw.log.1")  # what logrotate does
    time.sleep(1.1)
    for i in range(5, 10):
        log.event("relay", mail_id=f"id{i}")
    logging.getLogger("gateway").handlers[0].flush()
    old = (tmp_path / "gw.log.1").read_text().splitlines()
    new = path.read_text().splitlines()
    assert len(old) + len(new) == 10 and len(new) >= 4


def test_healthz_of_a_milter_only_gateway_does_not_check_a_downstream(gateway):
    import json
    import urllib.request

    from tests.support.postfix import free_port

    http_port = free_port()
    gateway(
        free_port(),
        listeners=[  # the downstream port: nothing listens there
            {"kind": "milter", "address": "127.0.0.1", "port": free_port()},
            {"kind": "http", "address": "127.0.0.1", "port": http_port},
        ],
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz") as response:
        report = json.loads(response.read())
    assert response.status == 200
    assert report["checks"] == {"store": "ok", "downstream": "not used"}


def test_a_slow_downstream_is_waited_for_beyond_the_data_timeout(gateway, scripted_mta):
    """The DATA timer covers the client's upload, not the downstream's answer: cutting the
    client off there would make it send again what the downstream then accepted."""
    mta = scripted_mta("slow-data")
    gw = gateway(mta.port, limits={"data_timeout": 0.5})
    add_customer(gw.store)
    with gw.client() as smtp:
        assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    assert len(mta.received) == 1


def test_a_client_hanging_up_during_the_relay_still_gets_its_message_recorded(gateway, scripted_mta):
    from gateway.core.message import header_values

    mta = scripted_mta("slow-data")
    gw = gateway(
        mta.port, listeners=[{"kind": "submission", "address": "127.0.0.1", "port": 0, "trusted_local": True}]
    )
    add_customer(gw.store)
    smtp = gw.client(tls=False)
    smtp.mail("news@customer.example")
    smtp.rcpt("anna@example.org")
    smtp.putcmd("DATA")
    assert smtp.getreply()[0] == 354
    smtp.send(MESSAGE + b".\r\n")
    time.sleep(0.3)
    smtp.sock.shutdown(socket.SHUT_WR)  # gone before the downstream answered
    smtp.sock.close()
    deadline = time.monotonic() + 10
    while not mta.received and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    [mail_id] = header_values(mta.received[0][2], "X-Mailing-ID")
    record = gw.store.get_message(mail_id)
    assert record is not None and record.result == "accepted"
    assert any(line.get("event") == "relay" and line.get("mail_id") == mail_id for line in gw.log_lines())


def test_a_trusted_network_client_stays_known_after_starttls(gateway, scripted_mta, tmp_path):
    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "k.pem")},
                "trusted_networks": {"127.0.0.1/32": "acme"},
            }
        ],
    )
    add_customer(gw.store)
    with gw.client(tls=True, login=None) as smtp:
        assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
    assert len(mta.received) == 1
