"""EventLogger's direct path (no LogRecord) writes byte for byte the lines the stdlib logging
path writes, flushed before `event` returns, and steps aside for any other logging set-up."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.logging import (
    LOGGER_NAME,
    LogfmtFormatter,
    ReopeningFileHandler,
    StdoutHandler,
    get_logger,
    parse_logfmt,
    setup_logging,
)


class Shouty:
    def __str__(self) -> str:
        return 'say "hi"\\n'


# (event, level, fields): the kinds of values callers pass, and the odd ones.
EVENTS: list[tuple[str, int, dict[str, Any]]] = [
    (
        "relay",
        logging.INFO,
        {
            "session": "4538abbef8",
            "mail_id": "ebvqun57aaaadujlaaaaaalym6",
            "result": "accepted",
            "reply": "250 2.0.0 Ok: queued as 4XyZ",
            "queue_id": "4XyZ",
            "seconds": 0.006136,
        },
    ),
    ("session_open", logging.INFO, {"session": "a", "peer": "127.0.0.1", "port": 587, "tls": False}),
    ("session_close", logging.INFO, {"session": "a", "peer": "::1", "error": None}),
    ("auth", logging.WARNING, {"login": 'we"ird\\name\r\nx', "result": "failed"}),
    (
        "policy",
        logging.ERROR,
        {
            "detail": "Ümlaut ünd spaces",
            "empty": "",
            "zero": 0,
            "float": 1.5,
            "whole": 2.0,
            "tiny": 1e-9,
            "neg": -0.25,
        },
    ),
    ("", logging.INFO, {"x": 1}),  # no event name: "log"
    ("reload", 25, {"policies": 3}),  # a level without a name
    ("override", logging.INFO, {"ts": "mine", "z": None}),  # a field replaces ts in place
    (
        "objects",
        logging.INFO,
        {"obj": Shouty(), "lst": [1, "a b"], "none": None, "bool": True, "bytes": b"raw"},
    ),
    (
        "unsafe",
        logging.INFO,
        {"path": "/var/log/x y", "eq": "a=b", "br": "[1,2]", "tab": "a\tb", "uni": "\u2028"},
    ),
]

CLOCK = [1764302943.4941, 1764302943.9999, 1764302944.0, 1764302944.0005]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    logger = logging.getLogger(LOGGER_NAME)
    saved = (list(logger.handlers), logger.level, logger.propagate, list(logger.filters))
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers, logger.level, logger.propagate, logger.filters = saved


class Clock:
    """time.time() for the logging code: the same instants for each pass over EVENTS."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return CLOCK[(self.calls - 1) % len(CLOCK)]


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    return clock


def emit_all(clock: Clock | None = None) -> None:
    log = get_logger()
    for event, level, fields in EVENTS:
        if clock is not None:
            clock.calls = 0
        log.event(event, level, **fields)


def via_stdlib(logger: logging.Logger, clock: Clock) -> None:
    """The same events through Logger.log (a pass-all filter turns the direct path off)."""
    logger.addFilter(lambda record: True)
    try:
        emit_all(clock)
    finally:
        logger.filters.clear()


def count_records(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    made: list[Any] = []
    original = logging.Logger.makeRecord

    def spy(self: logging.Logger, *args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(logging.Logger, "makeRecord", spy)
    return made


def test_direct_file_lines_are_the_stdlib_lines(tmp_path, monkeypatch, restore_logging, fixed_clock):
    direct, stdlib = tmp_path / "direct.log", tmp_path / "stdlib.log"
    logger = logging.getLogger(LOGGER_NAME)
    made = count_records(monkeypatch)
    setup_logging(direct, "info")
    assert type(logger.handlers[0]) is ReopeningFileHandler
    emit_all(fixed_clock)
    assert made == []  # the direct path made no LogRecord
    setup_logging(stdlib, "info")
    via_stdlib(logger, fixed_clock)
    assert len(made) == len(EVENTS)
    assert direct.read_bytes() == stdlib.read_bytes()
    lines = direct.read_text(encoding="utf-8").split("\n")[:-1]  # not splitlines: U+2028
    assert len(lines) == len(EVENTS)
    assert lines[0].startswith("ts=2025-11-28T04:09:03.494Z level=info event=relay ")
    assert parse_logfmt(lines[3])["login"] == 'we"ird\\name\r\nx'
    assert " event=log " in lines[5] and 'level="level 25"' in lines[6]


def test_direct_stdout_lines_are_the_stdlib_lines(monkeypatch, restore_logging, fixed_clock):
    logger = logging.getLogger(LOGGER_NAME)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    setup_logging(None, "info")
    assert type(logger.handlers[0]) is StdoutHandler
    made = count_records(monkeypatch)
    emit_all(fixed_clock)
    assert made == []
    direct = out.getvalue()
    out.seek(0)
    out.truncate()
    via_stdlib(logger, fixed_clock)
    assert direct == out.getvalue() and direct.count("\n") == len(EVENTS)


def test_each_line_is_in_the_file_when_event_returns(tmp_path, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    log = get_logger()
    for i in range(50):
        log.event("rcpt", mail_id=f"id{i}")
        # Read through another descriptor, as a test or `tail -f` would.
        assert path.read_text().splitlines()[-1].endswith(f"mail_id=id{i}")


def test_levels_and_the_level_setting_are_respected(tmp_path, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "warning")
    log = get_logger()
    log.event("quiet")
    log.warning("loud", n=1)
    log.error("louder", n=2)
    logging.getLogger(LOGGER_NAME).handlers[0].setLevel(logging.ERROR)
    log.warning("filtered-by-handler")
    events = [parse_logfmt(line)["event"] for line in path.read_text().splitlines()]
    assert events == ["loud", "louder"]


def test_other_handlers_and_propagation_take_the_stdlib_path(tmp_path, monkeypatch, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    logger = logging.getLogger(LOGGER_NAME)
    seen: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    extra = Collect()
    extra.setFormatter(LogfmtFormatter())
    logger.addHandler(extra)
    get_logger().event("both", n=1)
    logger.removeHandler(extra)
    assert len(seen) == 1 and seen[0].event == "both"  # type: ignore[attr-defined]
    assert path.read_text().splitlines()[-1] == extra.format(seen[0])

    # Propagating to the root (where pytest's caplog listens) goes the stdlib way too.
    root_seen: list[logging.LogRecord] = []
    root_handler = Collect()
    root_handler.emit = root_seen.append  # type: ignore[method-assign]
    logging.getLogger().addHandler(root_handler)
    logger.propagate = True
    try:
        get_logger().event("propagated")
    finally:
        logging.getLogger().removeHandler(root_handler)
    assert [r.event for r in root_seen] == ["propagated"]  # type: ignore[attr-defined]
    assert path.read_text().splitlines()[-1].endswith("event=propagated")


def test_a_subclassed_handler_keeps_its_own_emit(tmp_path, restore_logging):
    logger = logging.getLogger(LOGGER_NAME)
    emitted: list[str] = []

    class Custom(ReopeningFileHandler):
        def emit(self, record: logging.LogRecord) -> None:
            emitted.append(self.format(record))

    handler = Custom(tmp_path / "c.log", encoding="utf-8")
    handler.setFormatter(LogfmtFormatter())
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    get_logger().event("custom", n=1)
    assert len(emitted) == 1 and emitted[0].endswith("event=custom n=1")
    assert (tmp_path / "c.log").read_text() == ""


def test_a_moved_file_is_reopened_and_no_line_is_lost(tmp_path, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    handler = logging.getLogger(LOGGER_NAME).handlers[0]
    assert isinstance(handler, ReopeningFileHandler)
    log = get_logger()
    log.event("relay", n=0)
    path.rename(tmp_path / "gw.log.1")
    log.event("relay", n=1)  # within the second: still the moved file
    handler._checked = 0.0  # the second is over
    log.event("relay", n=2)
    log.event("relay", n=3)
    old = [parse_logfmt(x)["n"] for x in (tmp_path / "gw.log.1").read_text().splitlines()]
    new = [parse_logfmt(x)["n"] for x in path.read_text().splitlines()]
    assert (old, new) == (["0", "1"], ["2", "3"])
    # The stdlib path writes to the reopened file as well, in order.
    logging.getLogger(LOGGER_NAME).info("plain")
    log.event("relay", n=4)
    assert [parse_logfmt(x).get("n", x[-5:]) for x in path.read_text().splitlines()] == [
        "2",
        "3",
        "plain",
        "4",
    ]


def test_a_closed_handler_reopens_like_the_stdlib_one(tmp_path, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    log = get_logger()
    log.event("before")
    logging.getLogger(LOGGER_NAME).handlers[0].close()
    log.event("after")
    assert [parse_logfmt(x)["event"] for x in path.read_text().splitlines()] == ["before", "after"]


def test_a_failing_line_is_reported_not_raised(tmp_path, capsys, restore_logging):
    class Broken:
        def __str__(self) -> str:
            raise ValueError("no text")

    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    log = get_logger()
    log.event("bad", value=Broken())  # must not raise, as with the stdlib path
    log.event("good")
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "no text" in err
    assert [parse_logfmt(x)["event"] for x in path.read_text().splitlines()] == ["good"]


def test_writes_are_one_system_call_per_line(tmp_path, monkeypatch, restore_logging):
    path = tmp_path / "gw.log"
    setup_logging(path, "info")
    calls: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    log = get_logger()
    for i in range(5):
        log.event("relay", n=i)
    assert len(calls) == 5
    assert Path(path).read_text().count("\n") == 5
