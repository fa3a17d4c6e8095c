"""URL tokens: what the links in mail carry (one-click unsubscribe, DOI confirmation).

A token names a PURPOSE (unsubscribe or confirm), the CUSTOMER, the RECIPIENT, a LIST label,
a REFERENCE (the mail ID of the mail that carried an unsubscribe link; the consent record
generation of a confirmation link) and the time it was issued, and is authenticated with
HMAC-SHA256 under a secret key. Nothing in it can be changed without the key: a token made for
anna@ cannot be turned into one for ben@, one of customer A not into one of customer B, an
unsubscribe token not into a confirmation token.

Text form: unpadded base64url of ``body + mac``::

    body  0      version (1)
          1      key id (0..31, the line of the key file that signed)
          2      purpose: b"u" unsubscribe | b"c" confirm
          3..6   customer id (big-endian)
          7..10  issued at, unix seconds
          11..   recipient NUL list NUL reference  (UTF-8; none of them contains NUL)
    mac          HMAC-SHA256(key, b"gw-url-token\\0" + body)[:16]   (128 bits)

The recipient travels in the token (base64, not encrypted): the link is in a mail to that very
address. Keys: a file of ``<key-id> <base64 secret>`` lines like the mail ID key file, created
with mode 0600 and one 32-byte key on first use; the last line signs, every line verifies, so
a key is rotated by appending a line (``gateway consent rotate-token-key``) and an old line is
dropped once links signed with it may die.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from gateway import keyfiles

VERSION = 1
MAX_KEY_ID = 31
MIN_SECRET_BYTES = 16
MAC_BYTES = 16
UNSUBSCRIBE = "u"
CONFIRM = "c"
PURPOSES = (UNSUBSCRIBE, CONFIRM)
_LABEL = b"gw-url-token\0"
_HEAD = struct.Struct(">BBcII")
MAX_TOKEN_CHARS = 1024  # a token longer than this is refused before decoding
# Page nonces: the hidden field of the confirmation (and unsubscribe) page's form,
# "<key id>.<issued at>.<base64url HMAC-SHA256(key, label + token NUL issued)[:16]>". Only this
# service can make one, it names the token of the page it was put on (a nonce of anna's page is
# worthless on ben's), and it expires: a day is long enough for a tab left open overnight.
PAGE_NONCE_MAX_AGE = 86400.0
NONCE_CLOCK_SKEW = 300.0  # nodes' clocks may differ a little
_NONCE_LABEL = b"gw-page-nonce\0"


class TokenKeyError(Exception):
    """The token key file cannot be used; the message names the file."""


class TokenError(ValueError):
    """A token that is not ours: malformed, altered, forged, wrong purpose or expired."""


@dataclass(frozen=True)
class Claims:
    purpose: str
    customer_id: int
    recipient: str
    list_label: str
    reference: str
    issued_at: int
    key_id: int


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def normalise(address: str) -> str:
    return address.strip().strip("<>").strip().lower()


class TokenSigner:
    def __init__(self, keys: dict[int, bytes], signing_key_id: int | None = None) -> None:
        if not keys:
            raise TokenKeyError("no keys")
        self._keys = dict(keys)
        self.signing_key_id = list(keys)[-1] if signing_key_id is None else signing_key_id

    @classmethod
    def from_key_file(cls, path: Path | str, create: bool = True) -> TokenSigner:
        path = Path(path)
        if create and not path.exists():
            create_key_file(path)
        return cls(read_key_file(path))

    def make(
        self,
        purpose: str,
        customer_id: int,
        recipient: str,
        *,
        list_label: str = "",
        reference: str = "",
        now: float | None = None,
    ) -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        fields = [normalise(recipient), list_label, reference]
        if any("\0" in f for f in fields):
            raise ValueError("token fields must not contain NUL")
        issued = int(time.time() if now is None else now)
        body = _HEAD.pack(VERSION, self.signing_key_id, purpose.encode(), customer_id, issued) + "\0".join(
            fields
        ).encode("utf-8")
        return _b64e(body + self._mac(self._keys[self.signing_key_id], body))

    def verify(
        self, token: str, purpose: str, *, max_age: float | None = None, now: float | None = None
    ) -> Claims:
        """The claims of a genuine token of this purpose; TokenError otherwise."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenError("malformed")
        try:
            raw = _b64d(token)
        except (binascii.Error, ValueError):
            raise TokenError("malformed") from None
        if len(raw) < _HEAD.size + 2 + MAC_BYTES or _b64e(raw) != token:
            raise TokenError("malformed")
        body, mac = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        version, key_id, kind, customer_id, issued = _HEAD.unpack(body[: _HEAD.size])
        key = self._keys.get(key_id)
        if version != VERSION or key is None:
            raise TokenError("unknown key or version")
        if not hmac.compare_digest(self._mac(key, body), mac):
            raise TokenError("signature does not verify")
        try:
            recipient, list_label, reference = body[_HEAD.size :].decode("utf-8").split("\0")
        except (UnicodeDecodeError, ValueError):
            raise TokenError("malformed") from None
        if kind.decode("ascii", "replace") != purpose:
            raise TokenError("made for another purpose")
        if max_age is not None and max_age > 0:
            current = time.time() if now is None else now
            if current - issued > max_age:
                raise TokenError("expired")
        return Claims(purpose, customer_id, recipient, list_label, reference, issued, key_id)

    @staticmethod
    def _mac(key: bytes, body: bytes) -> bytes:
        return hmac.new(key, _LABEL + body, hashlib.sha256).digest()[:MAC_BYTES]

    # -- page nonces --------------------------------------------------------------------------
    def page_nonce(self, token: str, *, now: float | None = None) -> str:
        """The nonce of the form on the page of `token` (see PAGE_NONCE_MAX_AGE)."""
        issued = int(time.time() if now is None else now)
        key_id = self.signing_key_id
        mac = self._nonce_mac(self._keys[key_id], token, issued)
        return f"{key_id}.{issued}.{_b64e(mac)}"

    def check_page_nonce(
        self, token: str, nonce: str, *, max_age: float = PAGE_NONCE_MAX_AGE, now: float | None = None
    ) -> None:
        """TokenError unless `nonce` is one this service put on the page of this very token,
        less than `max_age` seconds ago."""
        parts = nonce.split(".") if 0 < len(nonce) <= 80 else []
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise TokenError("malformed nonce")
        key = self._keys.get(int(parts[0]))
        if key is None:
            raise TokenError("unknown key")
        issued = int(parts[1])
        if not hmac.compare_digest(_b64e(self._nonce_mac(key, token, issued)), parts[2]):
            raise TokenError("nonce does not verify")
        current = time.time() if now is None else now
        if issued > current + NONCE_CLOCK_SKEW:
            raise TokenError("nonce from the future")
        if current - issued > max_age:
            raise TokenError("nonce expired")

    @staticmethod
    def _nonce_mac(key: bytes, token: str, issued: int) -> bytes:
        message = _NONCE_LABEL + token.encode("utf-8") + b"\0" + str(issued).encode("ascii")
        return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]


# -- key file ---------------------------------------------------------------------------------


def create_key_file(path: Path) -> None:
    """A new key file (0600) with one fresh key; a concurrent creator wins."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        keyfiles.create_key_file(path, "URL token keys")
    except OSError as exc:
        raise TokenKeyError(f"URL token key file {path}: cannot be created ({exc.strerror or exc})") from None


def add_key(path: Path | str) -> int:
    """Rotate: append a fresh key that signs from now on; returns its id."""
    path = Path(path)
    keys = read_key_file(path)
    new_id = (list(keys)[-1] + 1) % (MAX_KEY_ID + 1)
    if new_id in keys:
        raise TokenKeyError(
            f"URL token key file {path}: key id {new_id} is still in use; remove its line first"
        )
    with path.open("a", encoding="ascii") as fh:
        fh.write(keyfiles.new_key_line(new_id))
    return new_id


def read_key_file(path: Path | str) -> dict[int, bytes]:
    path = Path(path)
    where = f"URL token key file {path}"
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise TokenKeyError(f"{where}: does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenKeyError(f"{where}: cannot be read ({exc})") from None
    keys: dict[int, bytes] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > MAX_KEY_ID:
            raise TokenKeyError(f"{where}: line {lineno}: expected '<key-id 0..31> <base64>'")
        try:
            secret = base64.b64decode(parts[1], validate=True)
        except binascii.Error:
            raise TokenKeyError(f"{where}: line {lineno}: secret is not valid base64") from None
        if len(secret) < MIN_SECRET_BYTES:
            raise TokenKeyError(f"{where}: line {lineno}: secret shorter than {MIN_SECRET_BYTES} bytes")
        if int(parts[0]) in keys:
            raise TokenKeyError(f"{where}: line {lineno}: key id {parts[0]} appears twice")
        keys[int(parts[0])] = secret
    if not keys:
        raise TokenKeyError(f"{where}: holds no keys")
    return keys


_CACHE: dict[Path, tuple[float, int, TokenSigner]] = {}
_CACHE_LOCK = threading.Lock()


def signer_for(path: Path | str, *, create: bool = True) -> TokenSigner:
    """The signer of a key file, re-read when the file changes (rotation without restart)."""
    path = Path(path)
    if create and not path.exists():
        create_key_file(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise TokenKeyError(f"URL token key file {path}: {exc.strerror or exc}") from None
    with _CACHE_LOCK:
        hit = _CACHE.get(path)
        if hit is not None and hit[0] == st.st_mtime and hit[1] == st.st_size:
            return hit[2]
    signer = TokenSigner(read_key_file(path))
    with _CACHE_LOCK:
        _CACHE[path] = (st.st_mtime, st.st_size, signer)
    return signer


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/u/{token}"


def confirm_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/c/{token}"
