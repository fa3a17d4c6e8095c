"""API keys of the consent API: which customer a bearer token speaks for.

The file (`http.api_keys_file`) holds one line per key: ``<customer> <sha256 hex of the key>``
and an optional ``# comment``. Only hashes are stored, so the file reveals no key; the key is
shown once, by `gateway consent api-key add NAME`. A customer may have several keys (rotation:
add the new one, deploy it, remove the old line). The file is re-read when it changes.
Keys are 256-bit random strings, so a plain SHA-256 (no salt, no slow hash) is the right hash:
there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "gwk_"
_LINE = re.compile(r"^([A-Za-z0-9._-]+)\s+([0-9a-f]{64})(?:\s+#\s?(.*))?$")


class ApiKeyError(Exception):
    """The keys file has a line that cannot be read; the message names the line."""


@dataclass(frozen=True)
class ApiKey:
    customer: str
    digest: str
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        return self.digest[:12]


def digest_of(key: str) -> str:
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def read_keys(path: Path) -> list[ApiKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    keys: list[ApiKey] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(stripped)
        if match is None:
            raise ApiKeyError(f"{path}: line {lineno}: expected '<customer> <sha256 hex>'")
        keys.append(ApiKey(match.group(1), match.group(2), match.group(3) or ""))
    return keys


def add_key(path: Path, customer: str, comment: str = "") -> tuple[str, ApiKey]:
    """Append a new key for `customer`; returns (the key, shown once; its entry)."""
    key = new_key()
    entry = ApiKey(customer, digest_of(key), comment)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        note = comment.replace("\n", " ").strip()
        fh.write(f"{customer} {entry.digest}" + (f" # {note}" if note else "") + "\n")
    return key, entry


def remove_keys(path: Path, customer: str, fingerprint: str | None = None) -> list[ApiKey]:
    """Remove the customer's keys (all, or the one whose digest starts with `fingerprint`)."""
    if not path.exists():
        return []
    kept: list[str] = []
    removed: list[ApiKey] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _LINE.match(line.strip())
        if (
            match
            and match.group(1) == customer
            and (fingerprint is None or match.group(2).startswith(fingerprint.lower()))
        ):
            removed.append(ApiKey(match.group(1), match.group(2), match.group(3) or ""))
            continue
        kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
    return removed


class ApiKeyRing:
    """Answers "which customer is this bearer token?", re-reading the file when it changes."""

    def __init__(self, path: Path, recheck: float = 0.0) -> None:
        self.path = path
        self.recheck = recheck
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        self._by_digest: dict[str, str] = {}

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.recheck and self._stamp is not None:
            return
        self._checked = now
        try:
            st = self.path.stat()
            stamp = (st.st_mtime, st.st_size)
        except FileNotFoundError:
            stamp = (0.0, -1)
        if stamp == self._stamp:
            return
        keys = read_keys(self.path) if stamp[1] >= 0 else []
        self._by_digest = {k.digest: k.customer for k in keys}
        self._stamp = stamp

    def customer_for(self, key: str) -> str | None:
        if not key or len(key) > 200:
            return None
        with self._lock:
            self._refresh()
            table = self._by_digest
        # A dict look-up by the SHA-256 of the presented key: its timing can only tell an
        # attacker about hashes of keys they already hold.
        return table.get(digest_of(key))
