"""The signed mail ID: layout, round trip, classification of damaged and forged IDs, keys."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import stat
import struct
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.mailid import (
    ID_LEN,
    MAILID_RE,
    STEM_LEN,
    STEM_RE,
    MailIdCodec,
    MailIdError,
    MailIdKeyError,
    add_key,
    read_key_file,
    stem_of,
)

KEY_A = b"A" * 32
KEY_B = b"B" * 32
NOW = 1_764_201_600.0  # 2025-11-27 00:00:00 UTC


@pytest.fixture
def codec() -> MailIdCodec:
    return MailIdCodec({0: KEY_A}, signing_key_id=0)


def test_round_trip(codec: MailIdCodec) -> None:
    stem = codec.new_stem(4242, now=NOW)
    mail_id = codec.finalize(stem, campaign_ref=77, recipient="Jane.Doe@Example.NET")
    decoded = codec.decode(mail_id)
    assert decoded.status == "genuine" and decoded.genuine
    assert decoded.customer_id == 4242
    assert decoded.campaign_ref == 77
    assert decoded.timestamp == datetime(2025, 11, 27, tzinfo=UTC)
    assert decoded.key_id == 0
    assert len(decoded.recipient_hash or "") == 8
    assert codec.recipient_matches(decoded, "jane.doe@example.net")
    assert codec.recipient_matches(decoded, " <JANE.DOE@example.net> ")
    assert not codec.recipient_matches(decoded, "john.doe@example.net")


def test_text_form_and_lengths(codec: MailIdCodec) -> None:
    stem = codec.new_stem(1, now=NOW)
    mail_id = codec.finalize(stem, 0, "a@b.example")
    assert len(stem) == STEM_LEN == 16 and len(mail_id) == ID_LEN == 48
    for text in (stem, mail_id):
        assert set(text) <= set("abcdefghijklmnopqrstuvwxyz234567"), text
        assert "=" not in text
    assert mail_id.startswith(stem)
    assert stem_of(mail_id) == stem
    assert stem_of(stem.upper()) == stem


def test_no_campaign_and_extremes(codec: MailIdCodec) -> None:
    stem = codec.new_stem(2**24 - 1, now=2**32 - 1)
    decoded = codec.decode(codec.finalize(stem, 2**32 - 1, "x@y.example"))
    assert decoded.genuine
    assert decoded.customer_id == 2**24 - 1 and decoded.campaign_ref == 2**32 - 1
    zero = codec.decode(codec.finalize(codec.new_stem(0, now=0), 0, "x@y.example"))
    assert zero.genuine and zero.campaign_ref == 0 and zero.customer_id == 0


@pytest.mark.parametrize("customer", [-1, 2**24])
def test_customer_out_of_range_is_refused(codec: MailIdCodec, customer: int) -> None:
    with pytest.raises(MailIdError, match="customer id"):
        codec.new_stem(customer, NOW)


@pytest.mark.parametrize("campaign", [-1, 2**32])
def test_campaign_out_of_range_is_refused(codec: MailIdCodec, campaign: int) -> None:
    with pytest.raises(MailIdError, match="campaign ref"):
        codec.finalize(codec.new_stem(1, NOW), campaign, "a@b.example")


def test_finalize_rejects_bad_stems(codec: MailIdCodec) -> None:
    stem = codec.new_stem(1, now=NOW)
    with pytest.raises(MailIdError):
        codec.finalize(stem[:-1], 0, "a@b.example")
    with pytest.raises(MailIdError):
        codec.finalize("0" * 16, 0, "a@b.example")
    other = MailIdCodec({5: KEY_B}, signing_key_id=5)
    with pytest.raises(MailIdError, match="unknown"):
        codec.finalize(other.new_stem(1, now=NOW), 0, "a@b.example")


def test_uniqueness_over_10k_ids(codec: MailIdCodec) -> None:
    # Same customer, same second: the worst case for the nonce (2 random bytes would collide).
    stems = [codec.new_stem(7, now=NOW) for _ in range(10_000)]
    assert len(set(stems)) == len(stems)
    ids = [codec.finalize(stem, 3, f"user{i}@example.com") for i, stem in enumerate(stems)]
    assert len(set(ids)) == len(ids)
    # Same stem, different recipients or campaigns: distinct final IDs sharing the prefix.
    stem = stems[0]
    fan_out = {codec.finalize(stem, c, f"r{i}@example.com") for c in (0, 1) for i in range(500)}
    assert len(fan_out) == 1000 and all(x.startswith(stem) for x in fan_out)


def test_nonce_does_not_reveal_a_counter(codec: MailIdCodec) -> None:
    nonces = [
        int.from_bytes(base64.b32decode(codec.new_stem(7, NOW).upper())[8:10], "big") for _ in range(200)
    ]
    steps = {(b - a) % 65536 for a, b in zip(nonces, nonces[1:], strict=False)}
    assert len(steps) > 150  # a plain counter would show one step


def _replace_char(text: str, index: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    new = alphabet[(alphabet.index(text[index]) + 1) % 32]
    return text[:index] + new + text[index + 1 :]


def test_every_single_character_change_is_altered(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(99, now=NOW), 5, "a@b.example")
    for index in range(ID_LEN):
        assert codec.decode(_replace_char(mail_id, index)).status == "altered", index


def test_swapped_neighbours_are_altered(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(99, now=NOW), 5, "a@b.example")
    for i in range(ID_LEN - 1):
        if mail_id[i] != mail_id[i + 1]:
            swapped = mail_id[:i] + mail_id[i + 1] + mail_id[i] + mail_id[i + 2 :]
            assert codec.decode(swapped).status == "altered", i


def test_truncated_is_altered_but_still_shows_the_stem(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(99, now=NOW), 5, "a@b.example")
    for cut in (47, 40, 30, 16):
        decoded = codec.decode(mail_id[:cut])
        assert decoded.status == "altered", cut
        assert decoded.customer_id == 99 and decoded.campaign_ref is None


@pytest.mark.parametrize("text", ["", "hello", "e" * 15, "e" * 49, "e" * 47 + "1", "E-not-an-id", "a" * 20])
def test_malformed(codec: MailIdCodec, text: str) -> None:
    # "a" * 20 is base32 but its stem announces version 0: not a truncated ID of ours.
    decoded = codec.decode(text)
    assert decoded.status == "malformed"
    assert decoded.customer_id is None


def test_intact_id_of_unknown_version_is_malformed(codec: MailIdCodec) -> None:
    body = bytes([2 << 5]) + bytes(27)
    raw = body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF))
    assert codec.decode(base64.b32encode(raw).decode().lower()).status == "malformed"
    # The same with a broken checksum reads as a damaged ID.
    assert codec.decode(base64.b32encode(body + b"\0\0").decode().lower()).status == "altered"


def test_upper_case_is_accepted(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(1, now=NOW), 2, "a@b.example")
    assert codec.decode(mail_id.upper()).genuine


def test_forged_with_another_key_has_valid_checksum(codec: MailIdCodec) -> None:
    forger = MailIdCodec({0: KEY_B}, signing_key_id=0)  # same key id, wrong secret
    forged = forger.finalize(forger.new_stem(1234, now=NOW), 9, "victim@example.com")
    decoded = codec.decode(forged)
    assert decoded.status == "forged"
    # Fields are still shown (for a human), but recipient matching needs the real key.
    assert decoded.customer_id == 1234
    assert not codec.recipient_matches(decoded, "victim@example.com")


def test_forged_by_editing_fields_and_fixing_the_checksum(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(1, now=NOW), 2, "a@b.example")
    raw = bytearray(base64.b32decode(mail_id.upper()))
    raw[5:8] = (777).to_bytes(3, "big")  # claim another customer
    raw[28:30] = struct.pack(">H", binascii.crc_hqx(bytes(raw[:28]), 0xFFFF))
    forged = base64.b32encode(bytes(raw)).decode().lower()
    assert codec.decode(forged).status == "forged"


def test_unknown_key_id_is_forged(codec: MailIdCodec) -> None:
    stranger = MailIdCodec({9: KEY_A}, signing_key_id=9)  # even with the same secret
    assert codec.decode(stranger.finalize(stranger.new_stem(1, NOW), 0, "a@b.example")).status == "forged"


def test_layout_is_as_documented(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(0x010203, now=NOW), 0x0A0B0C0D, "a@b.example")
    raw = base64.b32decode(mail_id.upper())
    assert raw[0] == (1 << 5) | 0
    assert struct.unpack(">I", raw[1:5])[0] == int(NOW)
    assert raw[5:8] == b"\x01\x02\x03"
    assert raw[10:14] == b"\x0a\x0b\x0c\x0d"
    rcpt = hmac.new(KEY_A, b"rcpt\0a@b.example", hashlib.sha256).digest()[:4]
    assert raw[14:18] == rcpt
    assert raw[18:28] == hmac.new(KEY_A, b"mailid\0" + raw[:18], hashlib.sha256).digest()[:10]


def test_regexes_find_ids_in_text(codec: MailIdCodec) -> None:
    mail_id = codec.finalize(codec.new_stem(5, now=NOW), 6, "a@b.example")
    text = f"Return-Path: <m-{mail_id}@bounces.esp.example>\nX-Mailing-ID: {mail_id}\n"
    assert MAILID_RE.findall(text) == [mail_id, mail_id]
    assert MAILID_RE.search("x" + mail_id) is None  # glued to other text: not an ID
    assert MAILID_RE.search(mail_id + "a") is None
    found = STEM_RE.search(f"stem={mail_id[:16]} ")
    assert found is not None and found.group() == mail_id[:16]


def test_stem_of_rejects_garbage() -> None:
    with pytest.raises(MailIdError):
        stem_of("short")


# -- key file ---------------------------------------------------------------------------------


def test_key_file_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "mailid.key"
    first = MailIdCodec.from_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    content = path.read_bytes()
    second = MailIdCodec.from_key_file(path)
    assert path.read_bytes() == content  # not re-created
    mail_id = first.finalize(first.new_stem(1, NOW), 2, "a@b.example")
    assert second.decode(mail_id).genuine
    assert len(read_key_file(path)[0]) == 32


def test_mode_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        MailIdCodec.from_key_file(tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_missing_file_without_create(tmp_path: Path) -> None:
    with pytest.raises(MailIdKeyError, match="does not exist") as info:
        MailIdCodec.from_key_file(tmp_path / "absent", create=False)
    assert info.value.path == tmp_path / "absent"


def test_rotation_old_key_verifies_new_key_signs(tmp_path: Path) -> None:
    path = tmp_path / "mailid.key"
    before = MailIdCodec.from_key_file(path)
    old_stem = before.new_stem(1, NOW)  # made at MAIL FROM, before the rotation
    old_id = before.finalize(old_stem, 2, "a@b.example")
    assert add_key(path) == 1
    after = MailIdCodec.from_key_file(path)
    assert after.signing_key_id == 1 and after.key_ids == [0, 1]
    new_id = after.finalize(after.new_stem(1, NOW), 2, "a@b.example")
    assert after.decode(new_id).key_id == 1 and after.decode(new_id).genuine
    assert after.decode(old_id).genuine and after.decode(old_id).key_id == 0
    # A stem from before the reload still finalizes with the key it names.
    assert after.decode(after.finalize(old_stem, 3, "c@d.example")).key_id == 0
    # The old process does not know the new key: IDs made after rotation look forged to it.
    assert before.decode(new_id).status == "forged"


def test_last_line_signs_so_ids_can_wrap(tmp_path: Path) -> None:
    path = tmp_path / "k"
    secret = base64.b64encode(KEY_A).decode()
    path.write_text(f"31 {secret}\n0 {base64.b64encode(KEY_B).decode()}\n")
    assert MailIdCodec.from_key_file(path).signing_key_id == 0
    with pytest.raises(MailIdKeyError, match="still in use"):
        path.write_text(f"1 {secret}\n0 {secret}\n")
        add_key(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "no keys"),
        ("# only a comment\n\n", "no keys"),
        ("0\n", "line 1: expected"),
        ("x c2VjcmV0c2VjcmV0c2VjcmV0\n", "line 1: key id"),
        ("32 c2VjcmV0c2VjcmV0c2VjcmV0\n", "line 1: key id"),
        ("0 not*base64\n", "line 1: secret is not valid base64"),
        ("0 c2hvcnQ=\n", "line 1: secret has 5 bytes"),
        ("# c\n0 " + "QUFB" * 8 + "\n0 " + "QkJC" * 8 + "\n", "line 3: key id 0 appears twice"),
    ],
)
def test_malformed_key_file(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "mailid.key"
    path.write_text(content)
    with pytest.raises(MailIdKeyError) as info:
        MailIdCodec.from_key_file(path)
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def test_binary_key_file(tmp_path: Path) -> None:
    path = tmp_path / "mailid.key"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MailIdKeyError, match="not ASCII"):
        MailIdCodec.from_key_file(path)


def test_unreadable_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated: the tests may run as root, who reads a mode-000 file anyway.
    path = tmp_path / "mailid.key"
    path.write_text("0 " + "QUFB" * 8 + "\n")

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(MailIdKeyError, match="cannot be read .Permission denied") as info:
        MailIdCodec.from_key_file(path)
    assert str(path) in str(info.value)


def test_unreadable_key_file_as_a_directory(tmp_path: Path) -> None:
    # Works as root too: reading a directory fails whatever the privileges.
    with pytest.raises(MailIdKeyError, match="cannot be read"):
        MailIdCodec.from_key_file(tmp_path)


def test_key_file_in_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(MailIdKeyError, match="cannot be created"):
        MailIdCodec.from_key_file(tmp_path / "no" / "such" / "dir" / "k")
