"""The verification helper: one result per signature, reasons, the clock, DNS failures."""

from __future__ import annotations

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.dkim import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimError,
    DkimSigner,
    SigningKey,
    _check_times,  # the unit behind verify's clock override
    static_dnsfunc,
    txt_record,
    verify,
)

T = 1_700_000_000
MESSAGE = b"From: a@shop.example.com\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture(scope="module")
def keys() -> tuple[SigningKey, SigningKey]:
    return (
        SigningKey(
            "shop.example.com",
            "r",
            RSA_SHA256,
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ),
        SigningKey("shop.example.com", "e", ED25519_SHA256, ed25519.Ed25519PrivateKey.generate()),
    )


@pytest.fixture(scope="module")
def signed(keys: tuple[SigningKey, SigningKey]) -> bytes:
    return DkimSigner(clock=lambda: T).sign(MESSAGE, list(keys)) + MESSAGE


def dns_for(*pairs: tuple[SigningKey, SigningKey]) -> dict[str, str]:
    return {f"{k.selector}._domainkey.{k.domain}": txt_record(pub.private_key) for k, pub in pairs}


def test_unsigned_message_has_no_results() -> None:
    assert verify(MESSAGE, static_dnsfunc({})) == []


def test_missing_key_record(signed: bytes) -> None:
    got = verify(signed, static_dnsfunc({}), now=T)
    assert [(r.selector, r.ok) for r in got] == [("r", False), ("e", False)]
    assert all("missing public key" in r.reason for r in got), got


def test_wrong_keys_in_dns(keys: tuple[SigningKey, SigningKey], signed: bytes) -> None:
    rsa_key, ed_key = keys
    other_rsa = SigningKey(
        "x", "x", RSA_SHA256, rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    other_ed = SigningKey("x", "x", ED25519_SHA256, ed25519.Ed25519PrivateKey.generate())
    dns = static_dnsfunc(dns_for((rsa_key, other_rsa), (ed_key, other_ed)))
    got = verify(signed, dns, now=T)
    assert [r.result for r in got] == ["fail", "fail"]
    assert all(r.reason == "signature mismatch" for r in got), got


def test_clock_override_for_t_and_x(keys: tuple[SigningKey, SigningKey]) -> None:
    rsa_key, _ = keys
    dns = static_dnsfunc(dns_for((rsa_key, rsa_key)))
    signed = DkimSigner(clock=lambda: T).sign(MESSAGE, [rsa_key]) + MESSAGE
    # t= a day in the future of the verifier's clock: refused as dkimpy would.
    [early] = verify(signed, dns, now=T - 86_400)
    assert not early.ok and "t= value is in the future" in early.reason
    [on_time] = verify(signed, dns, now=T)
    assert on_time.ok


def test_time_checks_mirror_dkimpy() -> None:
    # End to end with a real x= signature: tests/corpus/test_dkim_vectors.py (stalwart 005).
    _check_times({b"t": str(T).encode(), b"x": str(T + 3600).encode()}, T)
    _check_times({b"x": str(T + 3600).encode()}, T + 3600 + 36_000)  # dkimpy's 10 h slop
    with pytest.raises(dkim.ValidationError, match="x= value is past"):
        _check_times({b"x": str(T + 3600).encode()}, T + 3600 + 36_001)
    with pytest.raises(dkim.ValidationError, match="less than t="):
        _check_times({b"t": str(T).encode(), b"x": str(T - 1).encode()}, T)
    with pytest.raises(dkim.ValidationError, match="not a decimal"):
        _check_times({b"t": b"soon"}, T)


def test_dns_timeout_is_a_failure_with_reason(signed: bytes) -> None:
    def timeout(name: bytes, timeout: float = 5) -> bytes:
        raise dkim.DnsTimeoutError("no answer")

    got = verify(signed, timeout, now=T)
    assert [r.ok for r in got] == [False, False]
    assert all("DnsTimeoutError" in r.reason for r in got)


def test_bad_ed25519_record(keys: tuple[SigningKey, SigningKey], signed: bytes) -> None:
    rsa_key, _ = keys
    records = dns_for((rsa_key, rsa_key))
    records["e._domainkey.shop.example.com"] = "v=DKIM1; k=ed25519; p=c2hvcnQ="
    got = verify(signed, static_dnsfunc(records), now=T)
    assert [r.ok for r in got] == [True, False]
    assert "could not parse ed25519 public key" in got[1].reason


def test_malformed_signature_header() -> None:
    message = b"DKIM-Signature: v=1; a=rsa-sha256; garbage\r\n" + MESSAGE
    [result] = verify(message, static_dnsfunc({}))
    assert not result.ok and result.algorithm == "" and "MessageFormatError" in result.reason


def test_unparsable_message() -> None:
    with pytest.raises(DkimError, match="cannot be parsed"):
        verify(b"From: a@b\r\nno colon here\r\n\r\n", static_dnsfunc({}))


def test_verify_does_not_log_to_the_application(signed: bytes, caplog: pytest.LogCaptureFixture) -> None:
    verify(signed, static_dnsfunc({}), now=T)
    assert not [r for r in caplog.records if r.name.startswith("gateway")]
