"""DKIM keys: keygen, the keys directory, DNS TXT records and `check_dns` with a fake resolver."""

from __future__ import annotations

import base64
import re
import stat
from collections.abc import Iterable
from pathlib import Path

import dkim
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.dkim import (
    ED25519_SHA256,
    RSA_SHA256,
    DkimKeyError,
    DkimSigner,
    check_dns,
    dns_txt_name,
    keygen,
    load_keys,
    static_dnsfunc,
    verify,
    zone_record,
)

MESSAGE = b"From: a@shop.example.com\r\nSubject: hi\r\n\r\nbody\r\n"


class FakeResolver:
    """dnspython's resolve() interface, answering from a dict of zone-file TXT texts."""

    def __init__(self, zone: dict[str, list[str]]) -> None:
        self.zone = zone
        self.asked: list[tuple[str, str]] = []

    def resolve(self, qname: str, rdtype: str) -> Iterable[object]:
        self.asked.append((qname, rdtype))
        if qname not in self.zone:
            raise dns.resolver.NXDOMAIN(qnames=[qname])
        if not self.zone[qname]:
            raise dns.resolver.NoAnswer()
        return [dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, text) for text in self.zone[qname]]


def quoted(value: str, chunk: int = 255) -> str:
    """A TXT value as zone-file text, split into <=255-byte strings like real records."""
    return " ".join(f'"{value[i : i + chunk]}"' for i in range(0, len(value), chunk))


def record_value(txt: str) -> dict[bytes, bytes]:
    return dkim.util.parse_tag_value(txt.encode())


def test_keygen_rsa_writes_0600_pkcs8_and_a_parsable_record(tmp_path: Path) -> None:
    path, txt = keygen("Shop.Example.com", "s2025", "rsa-sha256", tmp_path)
    assert path == tmp_path / "shop.example.com" / "s2025.rsa.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    tags = record_value(txt)
    assert tags[b"v"] == b"DKIM1" and tags[b"k"] == b"rsa"
    # dkimpy itself accepts the record and reads a 2048-bit key out of it.
    pk, keysize, ktag, _ = dkim.evaluate_pk(b"s2025._domainkey.shop.example.com", txt)
    assert (keysize, ktag) == (2048, b"rsa")


def test_keygen_ed25519_record(tmp_path: Path) -> None:
    path, txt = keygen("shop.example.com", "e2025", ED25519_SHA256, tmp_path)
    assert path.name == "e2025.ed25519.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tags = record_value(txt)
    assert tags[b"k"] == b"ed25519" and len(base64.b64decode(tags[b"p"])) == 32


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    path, _ = keygen("shop.example.com", "s1", RSA_SHA256, tmp_path)
    before = path.read_bytes()
    with pytest.raises(DkimKeyError, match="refusing to overwrite"):
        keygen("shop.example.com", "s1", RSA_SHA256, tmp_path)
    # Another algorithm under the same selector would need the same DNS name: refused too.
    with pytest.raises(DkimKeyError, match="already has a key"):
        keygen("shop.example.com", "s1", ED25519_SHA256, tmp_path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("domain", "selector", "algorithm"),
    [
        ("shop.example.com", "s1", "rsa-sha1"),
        ("shop example", "s1", RSA_SHA256),
        ("shop.example.com", "../x", RSA_SHA256),
    ],
)
def test_keygen_rejects_bad_arguments(tmp_path: Path, domain: str, selector: str, algorithm: str) -> None:
    with pytest.raises(DkimKeyError):
        keygen(domain, selector, algorithm, tmp_path)


def test_keygen_load_sign_verify_round_trip(tmp_path: Path) -> None:
    _, rsa_txt = keygen("shop.example.com", "s1", RSA_SHA256, tmp_path)
    _, ed_txt = keygen("shop.example.com", "e1", ED25519_SHA256, tmp_path)
    ring = load_keys(tmp_path)
    keys = ring.for_domain("shop.example.com")
    assert [(k.selector, k.algorithm) for k in keys] == [("s1", RSA_SHA256), ("e1", ED25519_SHA256)]
    assert ring.for_domain("shop.example.com")[0] is keys[0]  # parsed once, reused
    signed = DkimSigner(ring).sign(MESSAGE, keys) + MESSAGE
    dnsfunc = static_dnsfunc(
        {dns_txt_name("shop.example.com", "s1"): rsa_txt, dns_txt_name("shop.example.com", "e1"): ed_txt}
    )
    assert [r.ok for r in verify(signed, dnsfunc)] == [True, True]


def _write_pem(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def test_load_keys_several_domains(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.example" / "z.ed25519.pem", ed25519.Ed25519PrivateKey.generate())
    _write_pem(
        tmp_path / "a.example" / "m.rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    _write_pem(tmp_path / "esp.example" / "x.ed25519.pem", ed25519.Ed25519PrivateKey.generate())
    (tmp_path / "a.example" / "README").write_text("not a key, ignored")
    ring = load_keys(tmp_path)
    assert len(ring) == 3
    assert [k.selector for k in ring.for_domain("A.example.")] == ["m", "z"]
    assert [k.selector for k in ring.for_domain("a.example", [ED25519_SHA256])] == ["z"]
    assert ring.for_domain("unknown.example") == []


def test_load_keys_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "a.example" / "s1.rsa.pem"
    bad.parent.mkdir()
    bad.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(DkimKeyError, match=str(bad)):
        load_keys(tmp_path)


def test_load_keys_file_name_must_say_the_algorithm(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.example" / "s1.pem", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(DkimKeyError, match="<selector>.rsa.pem"):
        load_keys(tmp_path)


def test_load_keys_algorithm_mismatch(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.example" / "s1.rsa.pem", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(DkimKeyError, match="not an rsa-sha256 key|file name says"):
        load_keys(tmp_path)


def test_load_keys_one_key_per_selector(tmp_path: Path) -> None:
    _write_pem(tmp_path / "a.example" / "s1.ed25519.pem", ed25519.Ed25519PrivateKey.generate())
    _write_pem(
        tmp_path / "a.example" / "s1.rsa.pem", rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    with pytest.raises(DkimKeyError, match="one selector"):
        load_keys(tmp_path)


# cryptography refuses to generate keys under 1024 bits; a throwaway 768-bit test key.
RSA_768_PEM = b"""-----BEGIN PRIVATE KEY-----
MIIB5AIBADANBgkqhkiG9w0BAQEFAASCAc4wggHKAgEAAmEAy5U1StcJWgtdIKs/
sRtYLkilt4Bx3a05qvOx6aQTLAMQdvNCAXlOuqbl11uNIxCaFzv1dJ8sbcyoHznl
DlxIHqaHvnlyRV4TTvPe3b1t2tIcHHWq2VjaNzxKmeJPH95BAgMBAAECYH09bEx/
Hzyqsv7O+t68YLIQdQn/VY027LwTMQb3reesduuGWLvJYbqHw+uJYbkJk3jwD7gj
TSd1jl9HZ6BQcuYrc9nNttw8b+/gvtVzn+dCB/hUYKbVUx+bV8/U2VVn8QIxAOoi
1tPSrxaEn2eFjHGpK57TkkpKSZZ1Vqj+LfLmsnUGeccnv7VzFejqQoidpZTNtQIx
AN6X+ceYXp3KQRwyJyZfdzT3KH9OJcGgR5Vm210azf8gvmchzrLcVnt59KSGmKbF
3QIwAnRRCjFoMnU7cotc2Igsc+LF4s96jAA441aexrASaNWjiynogY9uSF3ESshU
RwYNAjEA15cUqpfOVD+XjmqY9paSC6+y/pI/CWlmy7JClsumZwtcvuDEpQG5lYBK
Tau7YBPVAjAHgIDQFxtNQxgG1a7Ur7JLRCTXfH5www/w+C5qJNfwELlg+2CG+2Ya
xFKNh03FP04=
-----END PRIVATE KEY-----
"""


def test_load_keys_refuses_short_rsa(tmp_path: Path) -> None:
    path = tmp_path / "a.example" / "s1.rsa.pem"
    path.parent.mkdir()
    path.write_bytes(RSA_768_PEM)
    with pytest.raises(DkimKeyError, match="768 bits"):
        load_keys(tmp_path)


def test_load_keys_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match="does not exist"):
        load_keys(tmp_path / "nope")


def test_zone_record_splits_long_values() -> None:
    value = "v=DKIM1; k=rsa; p=" + "A" * 392
    line = zone_record("shop.example.com", "s1", value)
    assert line.startswith('s1._domainkey.shop.example.com. IN TXT ( "')
    strings = re.findall(r'"([^"]*)"', line)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert "".join(strings) == value


# -- check_dns -----------------------------------------------------------------------------------


@pytest.fixture
def keys_dir(tmp_path: Path) -> tuple[Path, str, str]:
    _, rsa_txt = keygen("shop.example.com", "s1", RSA_SHA256, tmp_path)
    _, ed_txt = keygen("shop.example.com", "e1", ED25519_SHA256, tmp_path)
    return tmp_path, rsa_txt, ed_txt


NAME = "s1._domainkey.shop.example.com"


def test_check_dns_match_with_multi_string_txt(keys_dir: tuple[Path, str, str]) -> None:
    path, rsa_txt, _ = keys_dir
    resolver = FakeResolver({NAME: [quoted(rsa_txt, chunk=200)]})
    ok, message = check_dns("shop.example.com", "s1", path, resolver=resolver)
    assert ok, message
    assert "matches" in message
    assert resolver.asked == [(NAME, "TXT")]


def test_check_dns_match_ed25519(keys_dir: tuple[Path, str, str]) -> None:
    path, _, ed_txt = keys_dir
    resolver = FakeResolver({"e1._domainkey.shop.example.com": [quoted(ed_txt)]})
    assert check_dns("shop.example.com", "e1", path, resolver=resolver)[0]


def test_check_dns_accepts_pkcs1_form_and_other_txt(keys_dir: tuple[Path, str, str]) -> None:
    path, _, _ = keys_dir
    key = load_keys(path).for_domain("shop.example.com")[0]
    pkcs1 = key.private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    value = f"k=rsa; p={base64.b64encode(pkcs1).decode()}"
    resolver = FakeResolver({NAME: ['"some-verification=abc"', quoted(value)]})
    ok, message = check_dns("shop.example.com", "s1", path, resolver=resolver)
    assert ok, message


def test_check_dns_mismatch(keys_dir: tuple[Path, str, str], tmp_path: Path) -> None:
    path, _, _ = keys_dir
    _, other_txt = keygen("shop.example.com", "s1", RSA_SHA256, tmp_path / "other")
    ok, message = check_dns(
        "shop.example.com", "s1", path, resolver=FakeResolver({NAME: [quoted(other_txt)]})
    )
    assert not ok
    assert "different public key" in message and "expected: v=DKIM1; k=rsa; p=" in message


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ({}, "NXDOMAIN"),
        ({NAME: []}, "no TXT record"),
        ({NAME: ['"v=spf1 -all"']}, "no DKIM key record"),
        ({NAME: ['"v=DKIM1; k=rsa; p="']}, "revoked"),
        (
            {NAME: ['"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="']},
            "k=ed25519 but the key is rsa-sha256",
        ),
        ({NAME: ['"v=DKIM2; p=AAAA"']}, "not DKIM1"),
        ({NAME: ['"v=DKIM1; p=bm90IGEga2V5"']}, "not a valid public key"),
        ({NAME: ['"v=DKIM1; h=sha1; p=AAAA"']}, "sha256"),
        ({NAME: ['"v=DKIM1; p=AAAA"', '"v=DKIM1; p=BBBB"']}, "2 DKIM records"),
    ],
)
def test_check_dns_problems(
    keys_dir: tuple[Path, str, str], records: dict[str, list[str]], problem: str
) -> None:
    path, _, _ = keys_dir
    ok, message = check_dns("shop.example.com", "s1", path, resolver=FakeResolver(records))
    assert not ok
    assert problem in message, message


def test_check_dns_without_a_local_key(tmp_path: Path) -> None:
    ok, message = check_dns("shop.example.com", "s9", tmp_path, resolver=FakeResolver({}))
    assert not ok and "no key for s9" in message


def test_check_dns_timeout(keys_dir: tuple[Path, str, str]) -> None:
    class Slow:
        def resolve(self, qname: str, rdtype: str) -> Iterable[object]:
            raise dns.resolver.LifetimeTimeout(timeout=5.0, errors=[])

    ok, message = check_dns("shop.example.com", "s1", keys_dir[0], resolver=Slow())
    assert not ok and "DNS lookup failed" in message
