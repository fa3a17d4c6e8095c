"""DKIM signing: our signatures verify (dkimpy), cover what they must, and equal dkimpy's own."""

from __future__ import annotations

import random
import re
import types
from collections.abc import Iterator

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import Relaxed

from gateway.dkim import (
    DEFAULT_HEADERS_TO_SIGN,
    ED25519_SHA256,
    RSA_SHA256,
    DkimError,
    DkimSigner,
    DnsFunc,
    KeyRing,
    SigningKey,
    VerifyResult,
    _split_message,  # the fast path must parse exactly as dkimpy does
    fold,
    relaxed_body,
    relaxed_header,
    select_headers,
    signed_header_list,
    static_dnsfunc,
    txt_record,
    verify,
)

NOW = 1_764_230_400  # 2025-11-27 08:00 UTC

MESSAGE = (
    b"From: Example Shop <news@shop.example.com>\r\n"
    b"To: Jane Doe <jane@example.net>\r\n"
    b"Subject: Autumn sale\r\n"
    b"Date: Thu, 27 Nov 2025 09:00:00 +0100\r\n"
    b"Message-ID: <1@shop.example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"List-Unsubscribe: <https://esp.example/u/abc>\r\n"
    b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
    b"Feedback-ID: 12:42:newsletter:espgw\r\n"
    b"X-Mailing-ID: ebvqufruaaacukmeaaaaaby42qy4vm3j42zlei4agwd5oxvy\r\n"
    b"X-Campaign-ID: autumn\r\n"
    b"\r\n"
    b"Hello Jane,  \r\n"
    b"\r\n"
    b"the\tsale   has started.\r\n"
    b"\r\n"
    b"\r\n"
)


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey("shop.example.com", "s2025", RSA_SHA256, key)


@pytest.fixture(scope="module")
def ed_key() -> SigningKey:
    return SigningKey("shop.example.com", "e2025", ED25519_SHA256, ed25519.Ed25519PrivateKey.generate())


@pytest.fixture(scope="module")
def esp_key() -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return SigningKey("esp.example", "esp1", RSA_SHA256, key)


@pytest.fixture(scope="module")
def dns(rsa_key: SigningKey, ed_key: SigningKey, esp_key: SigningKey) -> DnsFunc:
    return static_dnsfunc(
        {f"{k.selector}._domainkey.{k.domain}": txt_record(k.private_key) for k in (rsa_key, ed_key, esp_key)}
    )


@pytest.fixture
def signer() -> DkimSigner:
    return DkimSigner(clock=lambda: NOW)


def sign(signer: DkimSigner, keys: list[SigningKey], message: bytes = MESSAGE) -> bytes:
    return signer.sign(message, keys) + message


def results(message: bytes, dns: DnsFunc) -> list[VerifyResult]:
    return verify(message, dns, now=NOW)


def test_rsa_and_ed25519_both_verify(
    signer: DkimSigner, rsa_key: SigningKey, ed_key: SigningKey, dns: DnsFunc
) -> None:
    signed = sign(signer, [rsa_key, ed_key])
    got = results(signed, dns)
    assert [(r.domain, r.selector, r.algorithm, r.result) for r in got] == [
        ("shop.example.com", "s2025", "rsa-sha256", "pass"),
        ("shop.example.com", "e2025", "ed25519-sha256", "pass"),
    ], got


def test_stock_dkimpy_verifies_the_rsa_signature(
    signer: DkimSigner, rsa_key: SigningKey, dns: DnsFunc
) -> None:
    # Plain dkimpy, no subclass: dkim.verify checks the first (top) signature.
    assert dkim.verify(sign(signer, [rsa_key]), dnsfunc=dns)


def test_three_signatures_with_esp_domain(
    rsa_key: SigningKey, ed_key: SigningKey, esp_key: SigningKey, dns: DnsFunc
) -> None:
    signer = DkimSigner(KeyRing((ed_key, esp_key, rsa_key)), clock=lambda: NOW)
    keys = signer.keys_for("Shop.Example.COM.", esp_domain="esp.example")
    assert keys == [rsa_key, ed_key, esp_key]
    assert signer.keys_for("shop.example.com", algorithms=[RSA_SHA256]) == [rsa_key]
    got = results(signer.sign(MESSAGE, keys) + MESSAGE, dns)
    assert [(r.domain, r.ok) for r in got] == [
        ("shop.example.com", True),
        ("shop.example.com", True),
        ("esp.example", True),
    ]


def test_output_is_folded_crlf_header_lines_and_message_untouched(
    signer: DkimSigner, rsa_key: SigningKey, ed_key: SigningKey
) -> None:
    message = bytes(MESSAGE)
    headers = signer.sign(message, [rsa_key, ed_key])
    assert message == MESSAGE  # not modified in place (bytes, but also no re-serialisation)
    assert headers.endswith(b"\r\n") and headers.count(b"DKIM-Signature: ") == 2
    lines = headers.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith((b"DKIM-Signature: ", b" ")) for line in lines)
    assert b"\n" not in headers.replace(b"\r\n", b"")
    signed = headers + message
    assert signed[len(headers) :] == message
    assert b"c=relaxed/relaxed" in headers and f"t={NOW}".encode() in headers


def test_empty_key_list_signs_nothing(signer: DkimSigner) -> None:
    assert signer.sign(MESSAGE, []) == b""


def test_header_list_oversigns(signer: DkimSigner, rsa_key: SigningKey) -> None:
    headers = signer.sign(MESSAGE, [rsa_key])
    h = re.search(rb"h=([^;]+);", headers.replace(b"\r\n", b""))
    assert h is not None
    names = [n.strip() for n in h.group(1).split(b":")]
    count = {n: names.count(n) for n in set(names)}
    for once_more in (
        b"from",
        b"to",
        b"subject",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"feedback-id",
        b"x-mailing-id",
    ):
        assert count[once_more] == 2, once_more
    for absent in (b"reply-to", b"cfbl-address", b"cfbl-feedback-id"):
        assert count[absent] == 1, absent  # signed as absent: cannot be added
    for present in (b"date", b"message-id", b"mime-version", b"content-type", b"x-campaign-id"):
        assert count[present] == 1, present
    for not_signed in (b"cc", b"sender", b"content-transfer-encoding"):
        assert not_signed not in count


def test_signed_header_list_order_and_counts() -> None:
    headers = [[b"Received", b""], [b"From", b""], [b"To", b""], [b"To", b""], [b"Date", b""]]
    assert signed_header_list(headers, [b"From", b"to", b"date", b"cc"], [b"from", b"to"]) == [
        b"from",
        b"to",
        b"to",
        b"date",
        b"from",
        b"to",
    ]
    with pytest.raises(DkimError, match="received"):
        signed_header_list(headers, [b"from", b"Received"])


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"From: Example Shop <news@shop.example.com>", b"From: Evil <news@shop.example.com>"),
        (b"Subject: Autumn sale", b"Subject: Autumn SALE"),
        (b"List-Unsubscribe: <https://esp.example/u/abc>", b"List-Unsubscribe: <https://evil.example/u/abc>"),
        (b"X-Mailing-ID: ebvqufruaaacukme", b"X-Mailing-ID: ebvqufruaaacukma"),
        (b"Feedback-ID: 12:42", b"Feedback-ID: 13:42"),
        (b"X-Campaign-ID: autumn", b"X-Campaign-ID: winter"),
        (b"the\tsale", b"the sole"),
    ],
)
def test_changing_signed_content_breaks_every_signature(
    signer: DkimSigner,
    rsa_key: SigningKey,
    ed_key: SigningKey,
    dns: DnsFunc,
    old: bytes,
    new: bytes,
) -> None:
    signed = sign(signer, [rsa_key, ed_key])
    assert old in signed
    got = results(signed.replace(old, new, 1), dns)
    assert [r.ok for r in got] == [False, False], got


@pytest.mark.parametrize(
    "added",
    [
        b"From: Evil <ceo@shop.example.com>\r\n",
        b"Subject: Urgent\r\n",
        b"X-Mailing-ID: ebvqufruaaacukmeaaaaaby42qy4vm3j42zlei4agwd5aaaa\r\n",
        b"Reply-To: <thief@evil.example>\r\n",  # absent when signed
        b"CFBL-Address: fbl@evil.example; report=arf\r\n",  # absent when signed
    ],
)
def test_adding_an_oversigned_header_breaks_the_signatures(
    signer: DkimSigner, rsa_key: SigningKey, ed_key: SigningKey, dns: DnsFunc, added: bytes
) -> None:
    headers = signer.sign(MESSAGE, [rsa_key, ed_key])
    on_top = headers + added + MESSAGE
    at_end_of_header = headers + MESSAGE.replace(b"\r\n\r\n", b"\r\n" + added + b"\r\n", 1)
    for tampered in (on_top, at_end_of_header):
        assert [r.ok for r in results(tampered, dns)] == [False, False], added


def test_unsigned_headers_may_be_added(
    signer: DkimSigner, rsa_key: SigningKey, ed_key: SigningKey, dns: DnsFunc
) -> None:
    signed = sign(signer, [rsa_key, ed_key])
    relayed = b"Received: from gateway by mx; Thu, 27 Nov 2025\r\n" + signed
    assert [r.ok for r in results(relayed, dns)] == [True, True]
    # Cc is signed only when present, so one added later goes unnoticed (the contrast to the
    # oversigned headers above).
    with_cc = signed.replace(b"\r\n\r\n", b"\r\nCc: someone@example.org\r\n\r\n", 1)
    assert [r.ok for r in results(with_cc, dns)] == [True, True]


def test_body_hash_mismatch_reason(signer: DkimSigner, rsa_key: SigningKey, dns: DnsFunc) -> None:
    [result] = results(sign(signer, [rsa_key]) + b"appended footer\r\n", dns)
    assert not result.ok and "body hash mismatch" in result.reason


VARIANTS = {
    "newsletter": MESSAGE,
    "bare-lf": MESSAGE.replace(b"\r\n", b"\n"),
    "headers-only": b"From: a@shop.example.com\r\nSubject: x\r\n",
    "empty-body": b"From: a@shop.example.com\r\n\r\n",
    "folded-and-repeated": (
        b"From: a@shop.example.com\r\nTo: x@example.net,\r\n\t y@example.net\r\n"
        b"To: z@example.net\r\nSubject:  folded\r\n   subject \t\r\n"
        b"\r\n\r\n\tbody \t \r\n\r\n"
    ),
    "mbox-from-line": b"From sender@x Thu Nov 27 2025\r\nFrom: a@shop.example.com\r\n\r\nx",
    "tabs-and-odd-whitespace": (
        b"From:\ta@shop.example.com \t \r\nSubject:\t\tx \x0b y\t\r\nTo:\r\n\tz@example.net\r\n"
        b"\r\n\x0c body\t\r\n \r\n"
    ),
}
# dkimpy's fold cuts a d=/i= value this long in the middle (see gateway.dkim.fold).
LONG_NAMES = (
    "mail-relay-newsletters.marketing.a-rather-long-customer-domain.example",
    "selector-2025-11-27-rotation",
)
MEDIUM_NAMES = ("newsletters.marketing.customer-domain.example", "selector-2025-11-27")


def stock_dkimpy_signature(
    key: SigningKey, message: bytes, like: bytes, monkeypatch: pytest.MonkeyPatch
) -> bytes:
    """dkimpy's own dkim.sign with the key, time and h= list of our header ``like``."""
    found = re.search(rb"h=([^;]+);", like.replace(b"\r\n", b""))
    assert found is not None
    names = [n.strip() for n in found.group(1).split(b":")]
    pem = key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    # dkimpy reads the clock through its module's `time`; pin it for this call only.
    monkeypatch.setattr(dkim, "time", types.SimpleNamespace(time=lambda: NOW))
    return dkim.sign(
        message,
        key.selector.encode(),
        key.domain.encode(),
        pem,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=names,
    )


@pytest.mark.parametrize("names", ["short", "medium"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_same_bytes_as_stock_dkimpy(
    rsa_key: SigningKey, monkeypatch: pytest.MonkeyPatch, variant: str, names: str
) -> None:
    """RSA PKCS#1 v1.5 is deterministic: our header must equal dkimpy's byte for byte."""
    domain, selector = MEDIUM_NAMES if names == "medium" else (rsa_key.domain, rsa_key.selector)
    key = SigningKey(domain, selector, RSA_SHA256, rsa_key.private_key)
    message = VARIANTS[variant]
    ours = DkimSigner(clock=lambda: NOW).sign(message, [key])
    assert ours == stock_dkimpy_signature(key, message, ours, monkeypatch)


def test_long_domain_is_not_cut(rsa_key: SigningKey, monkeypatch: pytest.MonkeyPatch) -> None:
    key = SigningKey(*LONG_NAMES, RSA_SHA256, rsa_key.private_key)
    dns = static_dnsfunc({f"{LONG_NAMES[1]}._domainkey.{LONG_NAMES[0]}": txt_record(rsa_key.private_key)})
    ours = DkimSigner(clock=lambda: NOW).sign(MESSAGE, [key])
    assert f"d={LONG_NAMES[0]};".encode() in ours
    assert [r.ok for r in verify(ours + MESSAGE, dns, now=NOW)] == [True]
    assert dkim.verify(ours + MESSAGE, dnsfunc=dns)
    # The reason for our own fold: stock dkimpy's header for this domain does not verify.
    stock = stock_dkimpy_signature(key, MESSAGE, ours, monkeypatch)
    monkeypatch.undo()
    assert f"d={LONG_NAMES[0]};".encode() not in stock
    [result] = verify(stock + MESSAGE, dns, now=NOW)
    assert not result.ok


def test_fold_equals_dkimpy_when_no_token_is_too_long() -> None:
    rng = random.Random(72)
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789+/=.-:;@"
    for _ in range(3000):
        tokens = [
            bytes(rng.choice(alphabet) for _ in range(rng.randrange(1, 50)))
            for _ in range(rng.randrange(1, 30))
        ]
        if rng.random() < 0.5:
            tokens.append(b"b=" + bytes(rng.choice(alphabet[:36]) for _ in range(344)))
        header = b" ".join(tokens) + (b"\r\n" if rng.random() < 0.5 else b"")
        namelen = rng.choice([0, 14])
        assert fold(header, namelen) == dkim.fold(header, namelen), header


@pytest.mark.parametrize("name", list(VARIANTS))
def test_message_split_equals_dkimpy_parse(name: str) -> None:
    assert list(_split_message(VARIANTS[name])) == list(dkim.rfc822_parse(VARIANTS[name]))


def test_bare_lf_message_is_signed_as_dkimpy_would(
    signer: DkimSigner, rsa_key: SigningKey, dns: DnsFunc
) -> None:
    message = MESSAGE.replace(b"\r\n", b"\n")
    [result] = results(signer.sign(message, [rsa_key]) + message, dns)
    assert result.ok, result
    assert signer.sign(message, [rsa_key]) == signer.sign(MESSAGE, [rsa_key])


def test_headers_only_message(signer: DkimSigner, rsa_key: SigningKey, dns: DnsFunc) -> None:
    message = b"From: a@shop.example.com\r\nSubject: x\r\n"
    assert [r.ok for r in results(signer.sign(message, [rsa_key]) + message, dns)] == [True]


def test_no_from_is_refused(signer: DkimSigner, rsa_key: SigningKey) -> None:
    with pytest.raises(DkimError, match="no From"):
        signer.sign(b"Subject: x\r\n\r\nbody\r\n", [rsa_key])
    with pytest.raises(DkimError, match="must include From"):
        signer.sign(MESSAGE, [rsa_key], headers_to_sign=[b"subject"])


def test_unparsable_header_is_refused(signer: DkimSigner, rsa_key: SigningKey) -> None:
    with pytest.raises(DkimError, match="cannot be parsed"):
        signer.sign(b"From: a@b.example\r\nnot a header\r\n\r\nbody\r\n", [rsa_key])


def test_key_type_must_match_algorithm(rsa_key: SigningKey) -> None:
    with pytest.raises(DkimError):
        SigningKey("a.example", "s", ED25519_SHA256, rsa_key.private_key)
    with pytest.raises(DkimError):
        SigningKey("a.example", "s", "rsa-sha1", rsa_key.private_key)


def test_default_header_set_matches_the_design() -> None:
    required = {
        b"from",
        b"to",
        b"subject",
        b"reply-to",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"feedback-id",
        b"x-mailing-id",
        b"cfbl-address",
        b"cfbl-feedback-id",
        b"date",
        b"message-id",
        b"mime-version",
        b"content-type",
        b"sender",
        b"cc",
        b"x-campaign-id",
    }
    assert required <= set(DEFAULT_HEADERS_TO_SIGN)


# -- relaxed body canonicalization: ours must equal dkimpy's -------------------------------------


def _random_bodies(count: int) -> Iterator[bytes]:
    pieces = [
        b"a",
        b"bc",
        b" ",
        b"  ",
        b"\t",
        b" \t ",
        b"\r\n",
        b"\r\n",
        b"\r\n\r\n",
        b"\r",
        b"\n",
        b"\xc3\xa9",
        b"\x0b",
        b"\x0c",
    ]
    rng = random.Random(6376)
    for _ in range(count):
        yield b"".join(rng.choice(pieces) for _ in range(rng.randrange(0, 40)))


@pytest.mark.parametrize(
    "body",
    [b"", b"\r\n", b"\r\n\r\n", b" ", b" \r\n", b"a", b"a ", b"a \t\r\n \r\n\t\r\n", b"\t\ta  b \t c\t\r\n"],
)
def test_relaxed_body_edge_cases(body: bytes) -> None:
    assert relaxed_body(body) == Relaxed.canonicalize_body(body)


def test_relaxed_body_equals_dkimpy_on_random_bodies() -> None:
    for body in _random_bodies(5000):
        assert relaxed_body(body) == Relaxed.canonicalize_body(body), body


def test_relaxed_header_equals_dkimpy_on_random_values() -> None:
    for value in _random_bodies(5000):
        for name in (b"Subject", b"X-Mailing-ID"):
            expected = Relaxed.canonicalize_headers([(name, value)])[0]
            assert relaxed_header(name, value) == expected, value


def test_select_headers_equals_dkimpy() -> None:
    rng = random.Random(8463)
    names = [b"From", b"to", b"To", b"Subject", b"Received", b"X-A"]
    for _ in range(2000):
        headers = [[rng.choice(names), b"v%d" % i] for i in range(rng.randrange(0, 8))]
        include = [rng.choice(names).lower() for _ in range(rng.randrange(0, 10))]
        assert select_headers(headers, include) == dkim.select_headers(headers, include)
