"""URL tokens of the unsubscribe and confirmation links: cannot be forged, altered, replayed
for another recipient or customer, or used for another purpose."""

from __future__ import annotations

import base64
import stat

import pytest

from gateway.urltokens import (
    CONFIRM,
    MAC_BYTES,
    UNSUBSCRIBE,
    TokenError,
    TokenKeyError,
    TokenSigner,
    add_key,
    read_key_file,
    signer_for,
)


@pytest.fixture
def signer(tmp_path):
    return TokenSigner.from_key_file(tmp_path / "http.key")


def _b64d(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_roundtrip_carries_customer_recipient_list_and_reference(signer):
    token = signer.make(
        UNSUBSCRIBE,
        42,
        "<Anna@Example.org>",
        list_label="news@shop.example",
        reference="e" * 48,
        now=1_800_000_000,
    )
    claims = signer.verify(token, UNSUBSCRIBE)
    assert (claims.customer_id, claims.recipient, claims.list_label, claims.reference, claims.issued_at) == (
        42,
        "anna@example.org",
        "news@shop.example",
        "e" * 48,
        1_800_000_000,
    )
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_key_file_is_created_private(tmp_path):
    path = tmp_path / "sub" / "http.key"
    TokenSigner.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(read_key_file(path)[0]) == 32


def test_every_single_character_change_is_refused(signer):
    token = signer.make(UNSUBSCRIBE, 7, "anna@example.org")
    alphabet = "AQgw"
    for i in range(len(token)):
        for c in alphabet:
            if token[i] == c:
                continue
            changed = token[:i] + c + token[i + 1 :]
            with pytest.raises(TokenError):
                signer.verify(changed, UNSUBSCRIBE)


def test_recipient_swapped_under_the_old_mac_is_refused(signer):
    """Replay for another recipient: keep the MAC, put ben@ in the body."""
    token = signer.make(UNSUBSCRIBE, 7, "anna@example.org")
    raw = _b64d(token)
    body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
    forged = _b64e(body.replace(b"anna@example.org", b"bena@example.org") + mac)
    with pytest.raises(TokenError, match="signature"):
        signer.verify(forged, UNSUBSCRIBE)


def test_customer_swapped_is_refused(signer):
    token = signer.make(UNSUBSCRIBE, 7, "anna@example.org")
    raw = bytearray(_b64d(token))
    raw[6] = 8  # last byte of the customer id
    with pytest.raises(TokenError, match="signature"):
        signer.verify(_b64e(bytes(raw)), UNSUBSCRIBE)


def test_token_of_another_key_is_forged(tmp_path, signer):
    other = TokenSigner.from_key_file(tmp_path / "other.key")
    with pytest.raises(TokenError, match="signature"):
        signer.verify(other.make(UNSUBSCRIBE, 7, "anna@example.org"), UNSUBSCRIBE)


def test_purposes_do_not_mix(signer):
    unsub = signer.make(UNSUBSCRIBE, 7, "anna@example.org")
    confirm = signer.make(CONFIRM, 7, "anna@example.org", reference="1")
    with pytest.raises(TokenError, match="purpose"):
        signer.verify(unsub, CONFIRM)
    with pytest.raises(TokenError, match="purpose"):
        signer.verify(confirm, UNSUBSCRIBE)


def test_confirm_tokens_expire(signer):
    token = signer.make(CONFIRM, 7, "anna@example.org", now=1_800_000_000)
    assert signer.verify(token, CONFIRM, max_age=86400, now=1_800_000_000 + 3600)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token, CONFIRM, max_age=86400, now=1_800_000_000 + 2 * 86400)


@pytest.mark.parametrize(
    "junk", ["", "abc", "!!!!", "A" * 2000, "=" * 40, "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB"]
)
def test_junk_is_malformed(signer, junk):
    with pytest.raises(TokenError):
        signer.verify(junk, UNSUBSCRIBE)


def test_non_canonical_encoding_is_refused(signer):
    token = signer.make(UNSUBSCRIBE, 7, "anna@example.org")
    with pytest.raises(TokenError):
        signer.verify(token + "=", UNSUBSCRIBE)


def test_rotation_keeps_old_links_and_signs_with_the_new_key(tmp_path):
    path = tmp_path / "http.key"
    old = signer_for(path)
    token = old.make(UNSUBSCRIBE, 7, "anna@example.org")
    assert add_key(path) == 1
    new = signer_for(path)
    assert new is not old and new.signing_key_id == 1
    assert new.verify(token, UNSUBSCRIBE).key_id == 0
    assert new.verify(new.make(UNSUBSCRIBE, 7, "anna@example.org"), UNSUBSCRIBE).key_id == 1


def test_bad_key_file_names_itself(tmp_path):
    path = tmp_path / "http.key"
    path.write_text("0 c2hvcnQ=\n")
    with pytest.raises(TokenKeyError, match="http.key.*shorter"):
        read_key_file(path)
