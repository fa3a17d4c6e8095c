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
_safe = _SAFE.fullmatch


def _quote(value: Any) -> str:
    if value is None:
        return '""'
    if type(value) is str:
        text = value
    elif isinstance(value, float):
        text = f"{value:.6f}".rstrip("0").rstrip(".")
    else:
        text = str(value)
    if _safe(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
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
    # (second, its text): one tuple, so that a thread never pairs one second with another's text.
    _second: tuple[int, str] = (-1, "")

    def _timestamp(self, created: float) -> str:
        # strftime once per second, not once per line.
        second = int(created)
        cached, text = self._second
        if second != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int((created - second) * 1000):03d}Z"

    def line(
        self, created: float, level: str, event: str | None, fields: dict[str, Any], **extra: Any
    ) -> str:
        """The logfmt line of one event (format() and EventLogger's direct path)."""
        return format_logfmt(
            {
                "ts": self._timestamp(created),
                "level": level.lower(),
                "event": event or "log",
                **fields,
                **extra,
            }
        )

    def format(self, record: logging.LogRecord) -> str:
        event = getattr(record, "event", None)
        extra: dict[str, Any] = {}
        if record.msg and not event:
            extra["msg"] = record.getMessage()
        if record.exc_info and record.levelno >= logging.ERROR:
            extra["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return self.line(record.created, record.levelname, event, getattr(record, "fields", {}), **extra)


class EventLogger:
    """`log.event("relay", mail_id=..., reply=...)` writes one logfmt line.

    When the logger's only handler is one of ours (setup_logging's stdout or reopened file)
    the line is formatted and written here directly, without a LogRecord, caller lookup and
    handler dispatch: the same line (LogfmtFormatter's format, the same timestamp), written
    and flushed before `event` returns, under the handler's lock. Any other set-up (another
    handler, a filter, propagation, a record factory) takes the stdlib path."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def event(self, event: str, level: int = logging.INFO, **fields: Any) -> None:
        logger = self._logger
        if not logger.isEnabledFor(level):
            return
        handlers = logger.handlers
        if len(handlers) == 1 and not logger.propagate and not logger.filters:
            handler = handlers[0]
            if (
                type(handler) in _DIRECT_HANDLERS
                and level >= handler.level
                and not handler.filters
                and type(handler.formatter) is LogfmtFormatter
                and logging.getLogRecordFactory() is logging.LogRecord
            ):
                created = time.time()
                try:
                    line = handler.formatter.line(created, logging.getLevelName(level), event, fields)
                    handler.write_line(line)  # type: ignore[attr-defined]
                except RecursionError:  # as StreamHandler.emit
                    raise
                except Exception:  # noqa: BLE001 - reported as the stdlib handler would
                    record = logger.makeRecord(
                        logger.name,
                        level,
                        "(unknown file)",
                        0,
                        "",
                        (),
                        None,
                        extra={"event": event, "fields": fields},
                    )
                    record.created = created
                    handler.handleError(record)
                return
        logger.log(level, "", extra={"event": event, "fields": fields})

    def warning(self, event: str, **fields: Any) -> None:
        self.event(event, logging.WARNING, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event(event, logging.ERROR, **fields)


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler on stdout that EventLogger may also write lines to directly."""

    def write_line(self, line: str) -> None:
        """What emit() does with the formatted line: write it and flush, under the lock."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + self.terminator)
            self.flush()


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

    def write_line(self, line: str) -> None:
        """What emit() does with the formatted line (reopen if moved, write, flush), in one
        write system call on the file's descriptor. Every write to the stream is flushed at
        once (here and in emit), so its buffer is empty and the order of lines is kept."""
        with self.lock:  # type: ignore[union-attr]
            self.reopenIfNeeded()
            if self.stream is None and (self.mode != "w" or not getattr(self, "_closed", False)):
                self.stream = self._open()  # as FileHandler.emit after close()
            stream: Any = self.stream
            data = (line + self.terminator).encode(stream.encoding, stream.errors or "strict")
            fd = stream.fileno()
            while data:
                data = data[os.write(fd, data) :]


_DIRECT_HANDLERS = (StdoutHandler, ReopeningFileHandler)


def get_logger() -> EventLogger:
    return EventLogger(logging.getLogger(LOGGER_NAME))


def setup_logging(file: Path | None, level: str = "info", max_bytes: int = 0, backup_count: int = 0) -> None:
    """stdout (journald under systemd) or a file. A file rotates by size in-process, or, with
    max_bytes 0, is reopened when logrotate moves it away (WatchedFileHandler): either way no
    line is lost or written into a file that was already rotated."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if file is None:
        handler = StdoutHandler(sys.stdout)
    else:
        file.parent.mkdir(parents=True, exist_ok=True)
        if max_bytes > 0:
            handler = logging.handlers.RotatingFileHandler(
                file, maxBytes=max_bytes, backupCount=backup_count, encoding="utf-8"
            )
        else:
            handler = ReopeningFileHandler(file, encoding="utf-8")
    handler.setFormatter(LogfmtFormatter())
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, level.upper()))
    logger.propagate = False
    # Library chatter (aiosmtpd logs every command at INFO) stays out of the event log.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
