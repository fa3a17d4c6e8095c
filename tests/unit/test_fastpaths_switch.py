"""GATEWAY_NO_FASTPATHS=1, or a library version the fast paths were not written for, puts
each library's own code back: observed through what runs (aiosmtpd's introspection and address
parser, one write per reply line, one read per DATA line, aiosmtplib's regexes, no pipelined
batch), not only through the setting."""

from __future__ import annotations

import asyncio
import email.parser
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import aiosmtpd.smtp
import aiosmtplib.protocol
import pytest

from gateway import fastpaths
from gateway.dataread import DataAccumulator
from gateway.fastpaths import aiosmtpd as fast_aiosmtpd
from gateway.fastpaths import aiosmtplib as fast_aiosmtplib
from gateway.mime import fastparse


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """switch(on) sets the environment and reconfigures; the process's own setting is put
    back afterwards."""

    def set_fastpaths(on: bool) -> None:
        if on:
            monkeypatch.delenv(fastpaths.SWITCH, raising=False)
        else:
            monkeypatch.setenv(fastpaths.SWITCH, "1")
        fastpaths.configure()

    yield set_fastpaths
    monkeypatch.undo()
    fastpaths.configure()


class _Handler:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def _counting(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[Any]:
    calls: list[Any] = []
    original = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("on", [True, False])
async def test_session_setup_introspects_only_when_off(switch, monkeypatch, on):
    switch(on)
    calls = _counting(monkeypatch, inspect, "getmembers")
    fast_aiosmtpd.FastPathSMTP(_Handler())
    assert (len(calls) > 0) is (not on)


@pytest.mark.parametrize("on", [True, False])
def test_plain_address_reaches_aiosmtpds_parser_only_when_off(switch, monkeypatch, on):
    switch(on)
    calls = _counting(monkeypatch, aiosmtpd.smtp, "get_angle_addr")
    session = fast_aiosmtpd.FastPathSMTP.__new__(fast_aiosmtpd.FastPathSMTP)
    session.local_part_limit = 0
    assert session._getaddr("<anna@example.org> SIZE=10") == ("anna@example.org", "SIZE=10")
    assert (len(calls) > 0) is (not on)


class _Writer:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    async def drain(self) -> None:
        pass


@pytest.mark.parametrize(
    "on, writes",
    [
        (True, [b"250-one\r\n250-two\r\n250 three\r\n"]),
        (False, [b"250-one\r\n", b"250-two\r\n", b"250 three\r\n"]),
    ],
)
async def test_a_multi_line_reply_is_one_write_only_when_on(switch, on, writes):
    switch(on)
    session = fast_aiosmtpd.FastPathSMTP(_Handler())
    session._writer = writer = _Writer()  # type: ignore[assignment]
    session.session = aiosmtpd.smtp.Session(asyncio.get_running_loop())
    for line in ("250-one", "250-two", "250 three"):
        await session.push(line)
    assert writer.writes == writes


@pytest.mark.parametrize("on", [True, False])
async def test_data_is_read_line_by_line_only_when_off(switch, on):
    switch(on)
    reader = asyncio.StreamReader()
    reader.feed_data(b"Subject: x\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n")
    lines = _counting(pytest.MonkeyPatch(), reader, "readuntil")
    acc = DataAccumulator(None, 1000)
    assert await fast_aiosmtpd.read_data(reader, reader.readuntil, acc)
    assert acc.content() == b"Subject: x\r\n\r\n.dot\r\nbody\r\n"
    # Either way the pipelined command after the message is the command reader's next line.
    assert await reader.readuntil(b"\r\n") == b"QUIT\r\n"
    assert (len(lines) > 1) is (not on)  # the last call is the QUIT read above


@pytest.mark.parametrize("on", [True, False])
def test_data_preparation_is_aiosmtplibs_own_only_when_off(switch, on):
    switch(on)
    stock = (
        aiosmtplib.protocol.PERIOD_REGEX is fast_aiosmtplib._STOCK_PERIOD_REGEX
        and aiosmtplib.protocol.normalize_message_line_endings is fast_aiosmtplib._STOCK_NORMALIZE
    )
    assert stock is (not on)
    assert fast_aiosmtplib.data_payload(b".a\r\nb") == b"..a\r\nb\r\n.\r\n"


class _PipeliningClient:
    protocol = object()

    def supports_extension(self, name: str) -> bool:
        return name == "pipelining"


@pytest.mark.parametrize("on", [True, False])
def test_the_relay_pipelines_only_when_on(switch, on):
    switch(on)
    assert fast_aiosmtplib.can_pipeline(_PipeliningClient()) is on  # type: ignore[arg-type]


def test_a_version_outside_the_range_runs_the_stock_code(switch, monkeypatch):
    switch(True)
    real_version = fastpaths.metadata.version
    monkeypatch.setattr(
        fastpaths.metadata, "version", lambda name: "6.0.0" if name == "aiosmtplib" else real_version(name)
    )
    aiosmtpd_status, aiosmtplib_status, _ = fastpaths.configure()
    assert aiosmtpd_status.active
    assert not aiosmtplib_status.active and "written for aiosmtplib>=5.1,<6" in aiosmtplib_status.reason
    assert aiosmtplib.protocol.PERIOD_REGEX is fast_aiosmtplib._STOCK_PERIOD_REGEX
    assert not fast_aiosmtplib.can_pipeline(_PipeliningClient())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "installed, active",
    [
        ("1.4.6", True),
        ("1.4.6.post1", True),
        ("1.4.99", True),
        ("1.4.5", False),
        ("1.5.0", False),
        ("1.5.0rc1", False),
        ("2.0", False),
        ("unknown", False),
    ],
)
def test_version_range(monkeypatch, installed, active):
    monkeypatch.delenv(fastpaths.SWITCH, raising=False)
    assert fastpaths.decide("aiosmtpd", ((1, 4, 6), (1, 5)), installed).active is active


@pytest.mark.parametrize("value, off", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_switch_value(monkeypatch, value, off):
    monkeypatch.setenv(fastpaths.SWITCH, value)
    assert fastpaths.decide("aiosmtpd", ((1, 4, 6), (1, 5)), "1.4.6").active is not off


def test_start_up_logs_each_library_once(switch, monkeypatch, caplog):
    switch(False)
    monkeypatch.setattr(fastpaths, "_logged", False)
    with caplog.at_level(logging.INFO, logger="gateway"):
        fastpaths.log_status()
        fastpaths.log_status()
    lines = [r.fields for r in caplog.records if getattr(r, "event", None) == "fastpaths"]
    assert [line["library"] for line in lines] == ["aiosmtpd", "aiosmtplib", "python"]
    assert all(not line["active"] and line["reason"] == "GATEWAY_NO_FASTPATHS is set" for line in lines)


@pytest.mark.parametrize("on", [True, False])
def test_well_formed_mail_reaches_the_feed_parser_only_when_off(switch, monkeypatch, on):
    switch(on)
    calls = _counting(monkeypatch, email.parser.BytesParser, "parsebytes")
    message = fastparse.parse(b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n")
    assert message["Subject"] == "hi" and message.get_payload() == "body\r\n"
    assert (len(calls) > 0) is (not on)
