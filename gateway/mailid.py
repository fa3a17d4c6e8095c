"""The signed mail ID (DESIGN §6): short, grep-friendly, decodable offline, HMAC-authenticated.

Text form: lower-case RFC 4648 base32 without padding (``[a-z2-7]``). The ID is born in two
steps because the facts arrive in two steps:

* the STEM (16 chars = 10 bytes) is made at MAIL FROM, when only the customer and the time are
  known; it is all that log lines before DATA can carry;
* the FINAL ID (48 chars = 30 bytes) is ``stem + tail``, made once the campaign (X-Campaign-ID)
  and the recipient are known. The stem is always a fixed-length prefix of the final ID, so
  ``grep <stem>`` finds a transaction's early and late log lines alike.

Byte layout (big-endian integers)::

    stem   0      version (high 3 bits, currently 1) | key id (low 5 bits, 0..31)
           1..4   unix time, seconds (good until 2106)
           5..7   customer id (integer id from the store, 0..16_777_215)
           8..9   nonce
    tail  10..13  campaign ref (integer id of the campaign, 0 = none)
          14..17  recipient hash: HMAC-SHA256(key, "rcpt\\0" + normalised address)[:4]
          18..27  MAC: HMAC-SHA256(key, "mailid\\0" + bytes 0..17)[:10]  (80 bits)
          28..29  checksum: CRC-16/CCITT over bytes 0..27, unkeyed

Deviations from the first sketch, and why:

* The checksum comes LAST and covers the MAC too. With the checksum before the MAC, a typo in the
  last 16 characters (the MAC) would pass the checksum and be reported as "forged"; here any
  change anywhere is "altered", and "forged" means exactly "someone computed a valid checksum but
  had no key". CRC-16 rather than a truncated hash because a CRC is guaranteed (not just likely)
  to catch every single-character change and every swap of two neighbouring characters: both are
  bursts of at most 10 bits.
* The nonce is not drawn at random per ID: 2 random bytes collide among the stems of one
  customer within one second after a few hundred connections (birthday bound), and the stem is
  the only key of pre-DATA log lines. It is a per-process counter pushed through a per-process
  random permutation of 0..65535: unique for 65536 consecutive stems of a process, yet it looks
  random, so a recipient of two mails cannot read our sending volume off the difference. Two
  gateway processes can still collide (1 in 65536 per pair of stems of one customer in the same
  second); the final IDs differ anyway by campaign and recipient hash.
* The recipient hash is keyed, so the address cannot be brute-forced offline from an ID without
  the key; ``recipient_matches`` tests a candidate address with the key.

Keys: a key file with lines ``<key-id> <base64 secret>`` (``#`` comments and blank lines
allowed). The LAST line signs new IDs (so key ids can wrap around after 31: append the new key,
drop the old line when its IDs no longer matter); every listed key verifies. The key id is in the
ID, so verification needs no trial and error. ``from_key_file`` creates the file (mode 0600,
32 random bytes, key id 0) on first use; ``add_key`` appends a new key for rotation.

A VERP sender ``<prefix>-<id>@<bounce-domain>`` has a 49 + len(prefix) character local part, inside
RFC 5321's 64 for prefixes of up to 15 characters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import logging
import random
import re
import secrets
import struct
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from gateway.keyfiles import create_key_file, new_key_line, warn_if_readable_by_others

__all__ = [
    "MAILID_RE",
    "STEM_RE",
    "DecodedMailId",
    "MailIdCodec",
    "MailIdError",
    "MailIdKeyError",
    "Status",
    "add_key",
    "read_key_file",
    "stem_of",
]

log = logging.getLogger(__name__)

VERSION = 1
MAX_KEY_ID = 31
MAX_CUSTOMER_ID = (1 << 24) - 1
MAX_CAMPAIGN_REF = (1 << 32) - 1
STEM_BYTES = 10
ID_BYTES = 30
STEM_LEN = 16  # base32 characters
ID_LEN = 48
MIN_SECRET_BYTES = 16

_MAC_BYTES = 10
_RCPT_LABEL = b"rcpt\0"
_MAC_LABEL = b"mailid\0"

# Version 1 puts 001 in the top three bits, so the first character is one of e, f, g, h; anchoring
# on it keeps random base32 tokens (tracking URLs, attachment names) from matching.
_FIRST_CHARS = "e-h"
MAILID_RE = re.compile(rf"(?<![A-Za-z0-9])[{_FIRST_CHARS}][a-z2-7]{{{ID_LEN - 1}}}(?![A-Za-z0-9])")
STEM_RE = re.compile(rf"(?<![A-Za-z0-9])[{_FIRST_CHARS}][a-z2-7]{{{STEM_LEN - 1}}}")
_BASE32_RE = re.compile(r"[a-z2-7]+")

Status = Literal["genuine", "altered", "forged", "malformed"]


class MailIdError(ValueError):
    """A mail ID operation got arguments it cannot encode (out-of-range ids, bad stem)."""


class MailIdKeyError(Exception):
    """The key file cannot be used; the message names the file and what is wrong with it."""

    def __init__(self, path: Path | str, problem: str) -> None:
        super().__init__(f"mail ID key file {path}: {problem}")
        self.path = Path(path)
        self.problem = problem


@dataclass(frozen=True)
class DecodedMailId:
    """What an ID says. Fields other than ``status`` are only trustworthy when genuine.

    For "altered" and "forged" IDs the fields are decoded anyway (best effort, as far as the
    characters go) because they help a human investigating; "malformed" IDs have none.
    """

    mail_id: str
    status: Status
    key_id: int | None = None
    customer_id: int | None = None
    timestamp: datetime | None = None
    campaign_ref: int | None = None
    recipient_hash: str | None = None  # hex of the 4-byte keyed hash

    @property
    def genuine(self) -> bool:
        return self.status == "genuine"


def _b32encode(raw: bytes) -> str:
    return base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def _b32decode(text: str) -> bytes:
    # Callers only pass lengths that are multiples of 8 characters, so no padding is needed.
    return base64.b32decode(text.upper())


def _normalise_address(address: str) -> bytes:
    """Lower-cased, unbracketed address: what was hashed at finalize and what is compared later."""
    return address.strip().strip("<>").strip().lower().encode("utf-8")


def _checksum(data: bytes) -> bytes:
    return struct.pack(">H", binascii.crc_hqx(data, 0xFFFF))


def stem_of(mail_id: str) -> str:
    """The stem (first 16 characters) of a final ID or of a stem; MailIdError if it has none."""
    text = mail_id.strip().lower()
    if len(text) < STEM_LEN or not _BASE32_RE.fullmatch(text[:STEM_LEN]):
        raise MailIdError(f"not a mail ID: {mail_id!r}")
    return text[:STEM_LEN]


class _NonceSource:
    """Unique-looking 16-bit nonces: a counter through a random permutation (see module doc)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        # Seeded from the OS: the permutation only has to be unpredictable to recipients, it is
        # not a key (the MAC protects the ID).
        rng = rng or random.Random(secrets.randbits(128))
        table = list(range(1 << 16))
        rng.shuffle(table)
        self._table = array("H", table)
        self._counter = itertools.count(rng.randrange(1 << 16))
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            return self._table[next(self._counter) & 0xFFFF]


_NONCES: _NonceSource | None = None
_NONCES_LOCK = threading.Lock()


def _process_nonces() -> int:
    """Nonces from one permutation per process, built on first use (it takes ~30 ms)."""
    global _NONCES
    if _NONCES is None:
        with _NONCES_LOCK:
            if _NONCES is None:
                _NONCES = _NonceSource()
    return _NONCES.next()


class MailIdCodec:
    """Makes and checks mail IDs with the keys of one key file."""

    def __init__(
        self,
        keys: Mapping[int, bytes],
        signing_key_id: int,
        *,
        clock: Callable[[], float] = time.time,
        nonces: Callable[[], int] | None = None,
    ) -> None:
        if signing_key_id not in keys:
            raise MailIdError(f"signing key id {signing_key_id} is not among the keys")
        for key_id in keys:
            if not 0 <= key_id <= MAX_KEY_ID:
                raise MailIdError(f"key id {key_id} outside 0..{MAX_KEY_ID}")
        self._keys = dict(keys)
        self.signing_key_id = signing_key_id
        self._clock = clock
        self._nonces = nonces or _process_nonces

    @classmethod
    def from_key_file(cls, path: Path | str, create: bool = True) -> MailIdCodec:
        path = Path(path)
        if create and not path.exists():
            _create_key_file(path)
        keys = read_key_file(path)
        # Dicts keep insertion order: the last line of the file is the signing key.
        return cls(keys, signing_key_id=list(keys)[-1])

    @property
    def key_ids(self) -> list[int]:
        return list(self._keys)

    # -- making IDs ---------------------------------------------------------------------------

    def new_stem(self, customer_id: int, now: float | None = None) -> str:
        """The 16-character stem, made at MAIL FROM."""
        if not 0 <= customer_id <= MAX_CUSTOMER_ID:
            raise MailIdError(f"customer id {customer_id} outside 0..{MAX_CUSTOMER_ID}")
        seconds = int(self._clock() if now is None else now)
        if not 0 <= seconds <= 0xFFFFFFFF:
            raise MailIdError(f"time {seconds} does not fit in 32 bits")
        head = (VERSION << 5) | self.signing_key_id
        raw = (
            bytes([head])
            + struct.pack(">I", seconds)
            + customer_id.to_bytes(3, "big")
            + struct.pack(">H", self._nonces())
        )
        return _b32encode(raw)

    def finalize(self, stem: str, campaign_ref: int, recipient: str) -> str:
        """The 48-character final ID: the stem plus campaign, recipient hash, MAC and checksum.

        Signed with the key named in the stem, so a stem made just before a key rotation still
        finalizes with the key it announced.
        """
        stem_raw = self._parse_stem(stem)
        if not 0 <= campaign_ref <= MAX_CAMPAIGN_REF:
            raise MailIdError(f"campaign ref {campaign_ref} outside 0..{MAX_CAMPAIGN_REF}")
        key = self._keys[stem_raw[0] & MAX_KEY_ID]
        body = stem_raw + struct.pack(">I", campaign_ref) + _recipient_hash(key, recipient)
        body += _mac(key, body)
        return _b32encode(body + _checksum(body))

    def _parse_stem(self, stem: str) -> bytes:
        if len(stem) != STEM_LEN or not _BASE32_RE.fullmatch(stem):
            raise MailIdError(f"not a mail ID stem: {stem!r}")
        raw = _b32decode(stem)
        if raw[0] >> 5 != VERSION:
            raise MailIdError(f"stem {stem!r} has version {raw[0] >> 5}, expected {VERSION}")
        if raw[0] & MAX_KEY_ID not in self._keys:
            raise MailIdError(f"stem {stem!r} names key id {raw[0] & MAX_KEY_ID}, which is unknown")
        return raw

    # -- checking IDs -------------------------------------------------------------------------

    def decode(self, mail_id: str) -> DecodedMailId:
        """Classify and decode an ID found anywhere (headers, VERP address, complaint text).

        48 characters: "altered" if the checksum fails, else "genuine" or "forged" by the MAC
        ("malformed" if intact but of an unknown version). 16..47 characters: "altered" (a
        truncated ID; a bare stem is one too), its stem fields decoded. Anything else, or not
        base32: "malformed".
        """
        text = mail_id.strip().lower()
        if not _BASE32_RE.fullmatch(text) or not STEM_LEN <= len(text) <= ID_LEN:
            return DecodedMailId(text, "malformed")
        if len(text) < ID_LEN:
            # A prefix of a plausible ID: cut off in a log viewer, a form, a line wrap.
            stem_raw = _b32decode(text[:STEM_LEN])
            if stem_raw[0] >> 5 != VERSION:
                return DecodedMailId(text, "malformed")
            return _with_fields(text, "altered", stem_raw)
        raw = _b32decode(text)
        body, checksum = raw[:-2], raw[-2:]
        if not hmac.compare_digest(_checksum(body), checksum):
            # Checked before the version, so that a typo in the first character is "altered".
            if raw[0] >> 5 != VERSION:
                return DecodedMailId(text, "altered")
            return _with_fields(text, "altered", raw)
        if raw[0] >> 5 != VERSION:
            return DecodedMailId(text, "malformed")  # intact, but a layout we cannot read
        key = self._keys.get(raw[0] & MAX_KEY_ID)
        mac_ok = key is not None and hmac.compare_digest(_mac(key, body[:-_MAC_BYTES]), body[-_MAC_BYTES:])
        return _with_fields(text, "genuine" if mac_ok else "forged", raw)

    def recipient_matches(self, decoded: DecodedMailId, address: str) -> bool:
        """Whether ``address`` is the recipient the ID was made for (needs the ID's key)."""
        if decoded.recipient_hash is None or decoded.key_id is None:
            return False
        key = self._keys.get(decoded.key_id)
        if key is None:
            return False
        return hmac.compare_digest(_recipient_hash(key, address).hex(), decoded.recipient_hash)


def _recipient_hash(key: bytes, address: str) -> bytes:
    return hmac.new(key, _RCPT_LABEL + _normalise_address(address), hashlib.sha256).digest()[:4]


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, _MAC_LABEL + data, hashlib.sha256).digest()[:_MAC_BYTES]


def _with_fields(text: str, status: Status, raw: bytes) -> DecodedMailId:
    """Decode whatever fields ``raw`` (a stem or a full ID) holds."""
    full = len(raw) == ID_BYTES
    return DecodedMailId(
        text,
        status,
        key_id=raw[0] & MAX_KEY_ID,
        customer_id=int.from_bytes(raw[5:8], "big"),
        timestamp=datetime.fromtimestamp(struct.unpack(">I", raw[1:5])[0], UTC),
        campaign_ref=struct.unpack(">I", raw[10:14])[0] if full else None,
        recipient_hash=raw[14:18].hex() if full else None,
    )


# -- key file ---------------------------------------------------------------------------------


def read_key_file(path: Path | str) -> dict[int, bytes]:
    """Parse a key file into {key id: secret}, in file order; MailIdKeyError on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise MailIdKeyError(path, "does not exist") from None
    except PermissionError as exc:
        raise MailIdKeyError(path, f"cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        problem = "is not ASCII text (expected '<key-id> <base64>' lines)"
        raise MailIdKeyError(path, problem) from None
    except OSError as exc:
        raise MailIdKeyError(path, f"cannot be read ({exc.strerror or exc})") from None
    warn_if_readable_by_others(path, "mail ID key file")
    keys: dict[int, bytes] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key_id, secret = _parse_key_line(path, lineno, stripped)
        if key_id in keys:
            raise MailIdKeyError(path, f"line {lineno}: key id {key_id} appears twice")
        keys[key_id] = secret
    if not keys:
        raise MailIdKeyError(path, "holds no keys (expected '<key-id> <base64>' lines)")
    return keys


def _parse_key_line(path: Path, lineno: int, line: str) -> tuple[int, bytes]:
    parts = line.split()
    if len(parts) != 2:
        raise MailIdKeyError(path, f"line {lineno}: expected '<key-id> <base64 secret>'")
    if not parts[0].isdigit() or int(parts[0]) > MAX_KEY_ID:
        raise MailIdKeyError(path, f"line {lineno}: key id must be an integer 0..{MAX_KEY_ID}")
    try:
        secret = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise MailIdKeyError(path, f"line {lineno}: secret is not valid base64") from None
    if len(secret) < MIN_SECRET_BYTES:
        problem = f"secret has {len(secret)} bytes, at least {MIN_SECRET_BYTES} needed"
        raise MailIdKeyError(path, f"line {lineno}: {problem}")
    return int(parts[0]), secret


def _create_key_file(path: Path) -> None:
    """Create the key file with one fresh key; a concurrent creator wins and we use its file."""
    try:
        created = create_key_file(path, "mail ID keys")
    except OSError as exc:
        raise MailIdKeyError(path, f"cannot be created ({exc.strerror or exc})") from None
    if created:
        log.info("created mail ID key file %s", path)


def add_key(path: Path | str) -> int:
    """Rotate: append a fresh key (next id, wrapping after 31) that will sign from now on.

    Refuses when the next id is still in the file: an ID names its key by id, so reusing an id
    while the old key is listed would make old IDs unverifiable.
    """
    path = Path(path)
    keys = read_key_file(path)
    new_id = (list(keys)[-1] + 1) % (MAX_KEY_ID + 1)
    if new_id in keys:
        raise MailIdKeyError(path, f"key id {new_id} is still in use; remove its line first")
    with path.open("a", encoding="ascii") as fh:
        fh.write(new_key_line(new_id))
    return new_id
