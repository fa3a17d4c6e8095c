"""What happens to a message at the end of DATA, seen from outside: a real gateway, a real SMTP
client, and the exact bytes the downstream receives."""

from __future__ import annotations

import re

import pytest

from gateway.core.message import header_values, split_message
from gateway.dkim import keygen, static_dnsfunc, verify
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
        overrides.setdefault("dkim", {"keys_dir": str(tmp_path / "dkim"),
                                      "missing_key": "tempfail"})
        gw = gateway(mta.port, **overrides)
        add_customer(gw.store)
        return gw, mta, dns

    return start


def signed_names(data: bytes) -> list[str]:
    [sig] = header_values(data, "DKIM-Signature")
    return re.search(r"h=([^;]+);", sig.replace(" ", "")).group(1).lower().split(":")


# -- item 5: headers the customer may not write ------------------------------------------------

@pytest.mark.parametrize("csa", [None, "csa-complaints@eco.de"])
def test_headers_only_the_gateway_or_receiver_may_write_are_removed_before_signing(
        signing_gateway, csa):
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
