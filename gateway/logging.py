"""logfmt event logs: one line per event, `key=value`, grep-friendly.

Every line about a message carries `mail_id=`, every line of a session `session=`. Secrets are
never passed in: callers log names and outcomes, not credentials.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

LOGGER_NAME = "gateway"
_SAFE = re.compile(r"[A-Za-z0-9\-_.:/@+<>=,\[\]]+")


def _quote(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, float):
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    if _SAFE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace(
        "\r", "\\r")
    return f'"{escaped}"'


def format_logfmt(fields: dict[str, Any]) -> str:
    return " ".join(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)


def parse_logfmt(line: str) -> dict[str, str]:
    """Inverse of format_logfmt (for `gateway trace` and tests)."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    nxt = line[i + 1]
                    buf.append({"n": "\n", "r": "\r"}.get(nxt, nxt))
                    i += 2
                    continue
                buf.append(line[i])
                i += 1
            i += 1
            out[key] = "".join(buf)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            out[key] = line[i:end]
            i = end
    return out


class LogfmtFormatter(logging.Formatter):
    _second = -1
    _second_text = ""

    def _timestamp(self, created: float) -> str:
        # strftime once per second, not once per line.
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or "log",
        }
        fields.update(getattr(record, "fields", {}))
        if record.msg and not getattr(record, "event", None):
            fields["msg"] = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            fields["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return format_logfmt(fields)


class EventLogger:
    """`log.event("relay", mail_id=..., reply=...)` writes one logfmt line."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def event(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, "", extra={"event": event, "fields": fields})

    def warning(self, event: str, **fields: Any) -> None:
        self.event(event, logging.WARNING, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event(event, logging.ERROR, **fields)


class ReopeningFileHandler(logging.handlers.WatchedFileHandler):
    """WatchedFileHandler that looks for a logrotate move at most once a second, not with an
    os.stat() before every line; lines written in that second go to the moved file, which
    logrotate keeps (copy-free `create` rotation), so none is lost."""

    _checked = 0.0

    def reopenIfNeeded(self) -> None:  # noqa: N802 - the stdlib's name
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            super().reopenIfNeeded()


def get_logger() -> EventLogger:
    return EventLogger(logging.getLogger(LOGGER_NAME))


def setup_logging(file: Path | None, level: str = "info", max_bytes: int = 0,
                  backup_count: int = 0) -> None:
    """stdout (journald under systemd) or a file. A file rotates by size in-process, or, with
    max_bytes 0, is reopened when logrotate moves it away (WatchedFileHandler): either way no
    line is lost or written into a file that was already rotated."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if file is None:
        handler = logging.StreamHandler(sys.stdout)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        if max_bytes > 0:
            handler = logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8")
        else:
            handler = ReopeningFileHandler(file, encoding="utf-8")
    handler.setFormatter(LogfmtFormatter())
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
    # Library chatter (aiosmtpd logs every command at INFO) stays out of the event log.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
