"""Secret files: created once with mode 0600, never overwritten, warned about when others can
read them. Shared by the mail ID keys, the URL token keys and the DKIM keys."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger(__name__)

NEW_SECRET_BYTES = 32


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> bool:
    """Write a new file (fsynced) that appears whole or not at all; False (nothing written) if
    it exists, so that processes starting together (the workers of `serve --workers N`) all end
    up with the same file and none ever reads a half-written one.

    The content goes to a private temporary file first, which is then hard-linked to `path`:
    the link fails if `path` exists, and once it exists it is complete."""
    if path.exists():
        return False
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)


def new_key_line(key_id: int) -> str:
    """A line of an HMAC key file: '<key-id> <base64 secret>'."""
    return f"{key_id} {base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()}\n"


def create_key_file(path: Path, title: str) -> bool:
    """An HMAC key file with a comment and one fresh key (id 0); False if it exists."""
    header = f"# {title}: '<key-id> <base64 secret>'; the last line signs, all verify\n"
    return create_exclusive(path, (header + new_key_line(0)).encode("ascii"))


def warn_if_readable_by_others(path: Path, what: str) -> None:
    # A warning, not a refusal: secrets mounted by orchestrators are often 0644 in a private dir.
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s %s has mode %o; 0600 recommended", what, path, mode & 0o777)
