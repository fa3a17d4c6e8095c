"""Third-party DKIM vectors (shared/corpora/dkim), verified as labelled through our helpers.

* dkimpy/: dkimpy's own test data; ``expected_verify`` is what ``dkim.verify`` (first signature
  only) returns upstream, so we compare it with our first result. Its keys also sign through our
  signer and must verify against its DNS records (PKCS#1/PKCS#8 keys, SPKI/PKCS#1 p= forms).
* RFC 8463 Appendix A: deterministic signatures, so our signer must reproduce its b= exactly.
* stalwart_mail_auth/: real signed mail; the last signature passes at unix time 1667843664
  (our ``verify(now=...)``; 005 has x= and expires after that).
* flanker_canonicalization/: expected canonical forms, checked against dkimpy's canonicalization
  (which our signer uses for headers) and our faster body canonicalization.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from dkim.canonicalization import CanonicalizationPolicy

from gateway.dkim import (
    ED25519_SHA256,
    DkimError,
    DkimSigner,
    SigningKey,
    relaxed_body,
    static_dnsfunc,
    verify,
)

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpora" / "dkim"
DKIMPY = CORPUS / "dkimpy"
STALWART = CORPUS / "stalwart_mail_auth" / "dkim"
FLANKER = CORPUS / "flanker_canonicalization"
VECTORS = json.loads((DKIMPY / "vectors.json").read_text())
DNS = VECTORS["dns_records"]
STALWART_NOW = 1667843664


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def test_corpus_is_present() -> None:
    # Fail loudly (not skip) when the checkout lacks ../shared.
    assert DKIMPY.is_dir() and STALWART.is_dir() and FLANKER.is_dir(), CORPUS


# -- dkimpy ------------------------------------------------------------------------------------

STATIC = [v for v in VECTORS["static_vectors"] if v["expected_verify"] is not None]


@pytest.mark.parametrize("vector", STATIC, ids=[v["file"] for v in STATIC])
def test_dkimpy_static_vectors(vector: dict[str, object]) -> None:
    message = (DKIMPY / str(vector["file"])).read_bytes()
    results = verify(message, static_dnsfunc(DNS[str(vector["dns"])]))
    first = results[0].ok if results else False
    assert first is vector["expected_verify"], results


def test_rfc8463_example_both_signatures_pass() -> None:
    results = verify(
        (DKIMPY / "rfc6376.signed.msg").read_bytes(), static_dnsfunc(DNS["dnsfunc5 (RFC 8463 example keys)"])
    )
    assert [(r.algorithm, r.ok) for r in results] == [("ed25519-sha256", True), ("rsa-sha256", True)], results


def test_dkimpy_nofrom_message_cannot_be_signed() -> None:
    key = SigningKey.from_pem("example.com", "test", (DKIMPY / "test.private").read_bytes())
    with pytest.raises(DkimError, match="From"):
        DkimSigner().sign((DKIMPY / "test_nofrom.message").read_bytes(), [key])


def _ed25519_key(domain: str, selector: str, seed_file: str) -> SigningKey:
    seed = base64.b64decode((DKIMPY / seed_file).read_bytes())
    return SigningKey(domain, selector, ED25519_SHA256, ed25519.Ed25519PrivateKey.from_private_bytes(seed))


SIGNING_CASES = [
    # (key file, domain, selector, DNS set)
    ("test.private", "example.com", "test", "default (test_dkim.py dnsfunc)"),
    ("test2.private", "example.com", "test", "dnsfunc2 (implicit k=)"),
    ("1024_testkey.key", "example.com", "test", "rsavariants (test_dkim_rsavariants.py)"),
    ("1024_testkey.key", "example.com", "test2", "rsavariants (test_dkim_rsavariants.py)"),
    ("2048_testkey.key", "example.com", "test3", "rsavariants (test_dkim_rsavariants.py)"),
    ("2048_testkey.key", "example.com", "test4", "rsavariants (test_dkim_rsavariants.py)"),
    ("2048_testkey_PKCS8.key", "example.com", "test5", "rsavariants (test_dkim_rsavariants.py)"),
]


@pytest.mark.parametrize(
    ("key_file", "domain", "selector", "dns"), SIGNING_CASES, ids=[f"{c[0]}-{c[2]}" for c in SIGNING_CASES]
)
def test_dkimpy_keys_sign_and_verify(key_file: str, domain: str, selector: str, dns: str) -> None:
    key = SigningKey.from_pem(domain, selector, (DKIMPY / key_file).read_bytes())
    message = crlf((DKIMPY / "test.message").read_bytes())
    signed = DkimSigner().sign(message, [key]) + message
    [result] = verify(signed, static_dnsfunc(DNS[dns]))
    assert result.ok, result
    # And plain dkimpy agrees (RSA needs no PyNaCl).
    assert dkim.verify(signed, dnsfunc=static_dnsfunc(DNS[dns]))


def test_dkimpy_ed25519_key_signs_and_verifies() -> None:
    key = _ed25519_key("example.net", "test", "ed25519test.key")
    message = crlf((DKIMPY / "test.message").read_bytes())
    signed = DkimSigner().sign(message, [key]) + message
    [result] = verify(signed, static_dnsfunc(DNS["ed25519 (test_dkim_ed25519.py dnsfunc)"]))
    assert result.ok, result


def test_dkimpy_bad_key_records() -> None:
    key = SigningKey.from_pem("example.com", "test", (DKIMPY / "test.private").read_bytes())
    message = crlf((DKIMPY / "test.message").read_bytes())
    signed = DkimSigner().sign(message, [key]) + message
    for dns in ("dnsfunc3 (bad v=)", "dnsfunc4 (unknown k=)"):
        [result] = verify(signed, static_dnsfunc(DNS[dns]))
        assert not result.ok and result.reason, (dns, result)


# -- RFC 8463 Appendix A: known answers ---------------------------------------------------------


def _rfc8463_signatures() -> dict[str, bytes]:
    """b= values of the relaxed/relaxed signatures of RFC 8463 A.3 (stalwart's 001.txt)."""
    text = crlf((STALWART / "001.txt").read_bytes()).split(b"\r\n\r\n", 1)[1]
    found = {}
    for header in re.findall(rb"DKIM-Signature:.*?(?=\r\n\S)", text, re.S):
        tags = dkim.util.parse_tag_value(re.sub(rb"\r\n", b"", header.split(b":", 1)[1]))
        found[tags[b"a"].decode()] = re.sub(rb"\s+", b"", tags[b"b"])
    return found


def test_rfc8463_known_answer() -> None:
    """Ed25519 and RSA PKCS#1 v1.5 are deterministic: same key, time, headers -> same b=."""
    message = crlf((DKIMPY / "rfc6376.msg").read_bytes())
    ed = _ed25519_key("football.example.com", "brisbane", "rfc8032_7_1.key")
    rsa_key = SigningKey.from_pem("football.example.com", "test", (DKIMPY / "test.private").read_bytes())
    signer = DkimSigner(oversign=[b"from", b"subject", b"date"], clock=lambda: 1528637909)
    headers = signer.sign(
        message, [ed, rsa_key], headers_to_sign=[b"from", b"to", b"subject", b"date", b"message-id"]
    )
    ours = {}
    for header in re.findall(rb"DKIM-Signature:.*?(?=DKIM-Signature:|\Z)", headers, re.S):
        tags = dkim.util.parse_tag_value(re.sub(rb"\r\n", b"", header.split(b":", 1)[1]))
        h = re.sub(rb"\s+", b"", tags[b"h"])
        assert h == b"from:to:subject:date:message-id:from:subject:date"
        ours[tags[b"a"].decode()] = re.sub(rb"\s+", b"", tags[b"b"])
    assert ours == _rfc8463_signatures()


# -- stalwart mail-auth ------------------------------------------------------------------------


def _stalwart(path: Path) -> tuple[dict[str, str], bytes]:
    text = path.read_bytes()
    records, message = text.split(b"\n\n", 1)
    dns = {}
    for line in records.decode().splitlines():
        name, value = line.split(" ", 1)
        dns[name] = value
    return dns, crlf(message)


STALWART_FILES = sorted(STALWART.glob("*.txt"))


@pytest.mark.parametrize("path", STALWART_FILES, ids=[p.name for p in STALWART_FILES])
def test_stalwart_last_signature_passes(path: Path) -> None:
    dns, message = _stalwart(path)
    results = verify(message, static_dnsfunc(dns), now=STALWART_NOW)
    assert results and results[-1].ok, results


def test_stalwart_set_is_complete() -> None:
    assert len(STALWART_FILES) == 6


def test_stalwart_x_tag_expires_with_the_clock() -> None:
    dns, message = _stalwart(STALWART / "005.txt")
    x = int(re.search(rb"x=(\d+)", message).group(1))  # type: ignore[union-attr]
    [ok] = verify(message, static_dnsfunc(dns), now=STALWART_NOW)
    [late] = verify(message, static_dnsfunc(dns), now=x + 36_000 + 1)
    assert ok.ok
    assert not late.ok and "x= value is past" in late.reason
    # Without the override the real clock is used: long after x=, so it fails today.
    [today] = verify(message, static_dnsfunc(dns))
    assert not today.ok


# -- flanker canonicalization -------------------------------------------------------------------

CROSSCHECK = json.loads((FLANKER / "dkimpy_1.1.8_crosscheck.json").read_text())


@pytest.mark.parametrize("case", CROSSCHECK, ids=[c["case"] for c in CROSSCHECK])
@pytest.mark.parametrize("algorithm", ["simple", "relaxed"])
def test_flanker_canonicalization(case: dict[str, str], algorithm: str) -> None:
    raw = (FLANKER / f"email.{case['case']}").read_bytes()
    expected = (FLANKER / f"{algorithm}.expected.{case['case']}").read_bytes()
    headers, body = dkim.rfc822_parse(raw)
    policy = CanonicalizationPolicy.from_c_value(f"{algorithm}/{algorithm}".encode())
    canonical_headers = b"".join(n + b":" + v for n, v in policy.canonicalize_headers(headers))
    canonical_body = policy.canonicalize_body(body)
    got = canonical_headers + b"\r\n" + canonical_body
    assert (got == expected) is (case[algorithm] == "match")
    if algorithm == "relaxed":
        assert relaxed_body(body) == canonical_body
