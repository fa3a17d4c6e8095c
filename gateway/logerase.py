"""Remove one address from the gateway's log files (erasure by recipient, GDPR Art. 17).

The running gateway appends to its log file while this runs, so the file is never rewritten
or truncated: every occurrence is overwritten in place with a mask of the same length
(``*`` characters; the line's mail ID still ties it to the ledger, where the address is now a
keyed hash). Writers append behind us and lose nothing. Rotated files that are compressed
(``.gz``, written once by logrotate and never appended to) are rewritten whole through a
temporary file.
"""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

CHUNK = 1 << 20


def log_files(log_file: Path) -> list[Path]:
    """The log file and its rotated siblings (gateway.log, gateway.log.1, gateway.log.2.gz)."""
    if not log_file.parent.is_dir():
        return []
    return sorted(
        p
        for p in log_file.parent.iterdir()
        if p.is_file() and (p.name == log_file.name or p.name.startswith(log_file.name + "."))
    )


def _pattern(address: str) -> re.Pattern[bytes]:
    return re.compile(re.escape(address.strip().lower().encode()), re.IGNORECASE)


def mask_in_place(path: Path, address: str) -> int:
    """Overwrite each occurrence with '*'s of its byte length; returns how many."""
    pattern = _pattern(address)
    width = len(address.strip().lower().encode())
    found = 0
    with open(path, "r+b") as f:
        offset = 0
        carry = b""
        while True:
            f.seek(offset)
            chunk = f.read(CHUNK)
            if not chunk:
                break
            block = carry + chunk
            start = offset - len(carry)
            for match in pattern.finditer(block):
                f.seek(start + match.start())
                f.write(b"*" * (match.end() - match.start()))
                found += 1
            offset += len(chunk)
            # The tail a match could still start in; no whole match fits in it, so none is
            # masked twice.
            carry = block[-(width - 1) :] if width > 1 else b""
        f.flush()
        os.fsync(f.fileno())
    return found


def mask_gzip(path: Path, address: str) -> int:
    pattern = _pattern(address)
    with gzip.open(path, "rb") as f:
        data = f.read()
    masked, found = pattern.subn(lambda m: b"*" * len(m.group()), data)
    if found:
        tmp = path.with_name(path.name + ".erasing")
        with gzip.open(tmp, "wb") as f:
            f.write(masked)
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    return found


def erase_from_logs(log_file: Path, address: str) -> dict[str, int]:
    """{file name: occurrences masked} over the log file and its rotated siblings."""
    done: dict[str, int] = {}
    for path in log_files(log_file):
        if path.name.endswith(".erasing"):
            continue
        n = mask_gzip(path, address) if path.suffix == ".gz" else mask_in_place(path, address)
        if n:
            done[path.name] = n
    return done
