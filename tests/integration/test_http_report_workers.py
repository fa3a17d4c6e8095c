"""The /report limit holds for the whole service, not per worker: `gateway serve --workers 2`,
one client address, reports alternating between the two workers."""

from __future__ import annotations

import http.client
import re
import signal
import time
import urllib.request
from pathlib import Path

from tests.integration.test_operations import start_serve
from tests.integration.test_workers import children
from tests.support.gateway import base_config, write_config
from tests.support.postfix import free_port


def _server_side_inode(http_port: int, client_port: int) -> str | None:
    """The inode of the listener's end of our connection (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == http_port and int(remote.split(":")[1], 16) == client_port:
            return inode
    return None


def worker_of(conn: http.client.HTTPConnection, workers: list[int], http_port: int) -> int:
    """Which worker process accepted this (kept-alive) connection."""
    client_port = conn.sock.getsockname()[1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inode = _server_side_inode(http_port, client_port)
        for pid in workers:
            fds = Path(f"/proc/{pid}/fd")
            if inode and any(f"socket:[{inode}]" == _readlink(fd) for fd in fds.iterdir()):
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker holds the connection")


def _readlink(path: Path) -> str:
    try:
        return str(path.readlink())
    except OSError:
        return ""


def post_report(conn: http.client.HTTPConnection) -> tuple[int, str]:
    conn.request(
        "POST",
        "/report?lang=en",
        body="mail_id=no+id+in+here",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    response = conn.getresponse()
    return response.status, response.read().decode()


def rate_limited_total(http_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
    match = re.search(
        r'^gateway_http_page_actions_total\{page="report",result="rate-limited"\}'
        r" (\S+)$",
        body,
        re.M,
    )
    return float(match.group(1)) if match else 0.0


def test_report_limit_holds_across_two_workers(tmp_path, scripted_mta):
    mta = scripted_mta()
    port, http_port = free_port(), free_port()
    config = base_config(
        tmp_path,
        mta.port,
        limits={"shutdown_grace": 5},
        http={"token_key_file": str(tmp_path / "http.key"), "report_limit_per_hour": 30},
    )
    config["listeners"][0]["port"] = port
    config["listeners"].append({"kind": "http", "address": "127.0.0.1", "port": http_port})
    proc = start_serve(write_config(tmp_path, config), workers=2)
    connections: list[http.client.HTTPConnection] = []
    try:
        deadline = time.monotonic() + 20
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(proc.pid)
        assert len(workers) == 2
        # One kept-alive connection to each worker (the kernel picks the worker at accept).
        by_worker: dict[int, http.client.HTTPConnection] = {}
        for _ in range(200):
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=30)
            conn.connect()
            pid = worker_of(conn, workers, http_port)
            if pid in by_worker:
                conn.close()
            else:
                by_worker[pid] = conn
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "the kernel never gave a connection to the second worker"
        connections = list(by_worker.values())
        before = rate_limited_total(http_port)

        replies = [post_report(connections[i % 2]) for i in range(40)]
        statuses = [status for status, _ in replies]
        # 20 reports reached each worker; together they allow 30, then refuse.
        assert statuses == [422] * 30 + [429] * 10, statuses
        assert "Too many reports from your network" in replies[30][1]
        assert "Too many reports" not in replies[29][1]
        assert rate_limited_total(http_port) == before + 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        for conn in connections:
            conn.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
