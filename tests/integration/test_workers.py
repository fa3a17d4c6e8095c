"""`gateway serve --workers 2`: shared sockets, restarts, aggregated metrics, clean stop."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from gateway.config import Config
from gateway.store import open_store
from gateway.supervisor import Supervisor
from tests.integration.test_operations import start_serve, tls_client
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import add_customer, base_config, write_config
from tests.support.postfix import free_port


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


def accepted_total(http_port: int) -> float:
    body = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
    match = re.search(r'^gateway_messages_total\{result="accepted"\} (\S+)$', body, re.M)
    return float(match.group(1)) if match else 0.0


def test_two_workers_share_the_listeners_restart_and_stop_cleanly(tmp_path, scripted_mta):
    mta = scripted_mta()
    port, http_port = free_port(), free_port()
    config = base_config(tmp_path, mta.port, limits={"shutdown_grace": 5})
    config["listeners"][0]["port"] = port
    config["listeners"].append({"kind": "http", "address": "127.0.0.1", "port": http_port})
    path = write_config(tmp_path, config)
    add_customer(open_store(config["store"]["url"]))
    proc = start_serve(path, workers=2)
    try:
        deadline = time.monotonic() + 20
        while len(children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = children(proc.pid)
        assert len(workers) == 2
        for _ in range(10):
            with tls_client(port) as smtp:
                assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
        assert len(mta.received) == 10
        assert accepted_total(http_port) == 10
        # A worker that dies is replaced; the service goes on meanwhile.
        os.kill(workers[0], signal.SIGKILL)
        with tls_client(port) as smtp:
            assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}
        deadline = time.monotonic() + 20
        while (
            len(children(proc.pid)) < 2 or workers[0] in children(proc.pid)
        ) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(children(proc.pid)) == 2 and workers[0] not in children(proc.pid)
        assert "action=died" in (tmp_path / "gateway.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(mta.received) == 11


class SignalDuringRespawn(Supervisor):
    """Workers are plain `sleep` processes; the first one dies at once, and the SIGTERM for the
    supervisor arrives while its replacement is being spawned (the race CI once hit)."""

    def __init__(self, config: Config) -> None:
        super().__init__(None, config, workers=1)
        self.spawned: list[subprocess.Popen[bytes]] = []

    def spawn(self, slot: int) -> None:
        proc = subprocess.Popen(["sleep", "0" if not self.spawned else "20"])
        if self.spawned:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the new worker is registered
        self.spawned.append(proc)
        self.workers[slot] = proc


def test_sigterm_while_a_worker_is_being_replaced_still_stops_that_worker(tmp_path):
    config = Config.model_validate({**base_config(tmp_path, 25), "listeners": []})
    supervisor = SignalDuringRespawn(config)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        assert supervisor.run() == 0
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    replacement = supervisor.spawned[1]
    replacement.wait(5)
    # Terminated by the supervisor, not by running out its 20 seconds.
    assert replacement.returncode == -signal.SIGTERM
