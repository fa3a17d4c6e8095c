"""`gateway serve --workers N`: N worker processes sharing the listening sockets.

The supervisor binds every listener once and hands the sockets to its workers (inherited file
descriptors), so the kernel spreads connections over the workers and a worker that dies loses
no queued connection: the others keep accepting from the same socket while it is restarted.
SIGTERM and SIGHUP are forwarded; metrics are aggregated across workers with prometheus-client's
multiprocess mode (one directory of value files, read by whichever worker serves /metrics).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gateway.config import Config
from gateway.logging import get_logger

log = get_logger()

FDS_ENV = "GATEWAY_LISTEN_FDS"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def inherited_fds() -> dict[str, int]:
    """In a worker: the sockets the supervisor bound, by key ("listener:N")."""
    raw = os.environ.get(FDS_ENV)
    return {k: int(v) for k, v in json.loads(raw).items()} if raw else {}


def listener_key(config: Config, listener: Any) -> str:
    return f"listener:{next(i for i, x in enumerate(config.listeners) if x is listener)}"


def bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _terminate_with_parent() -> None:
    # Workers must not outlive a supervisor that was killed (SIGKILL leaves no time to forward).
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Supervisor:
    def __init__(self, config_path: str | None, config: Config, workers: int) -> None:
        self.config_path = config_path
        self.config = config
        self.count = workers
        self.sockets: dict[str, socket.socket] = {}
        self.workers: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.told_to_stop: set[int] = set()
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="gateway-metrics-"))

    def bind_all(self) -> None:
        # Not the capture MTA's port: each worker runs its own on loopback, so a worker that
        # exits never takes down a capture session another worker's relay is in the middle of.
        for index, listener in enumerate(self.config.listeners):
            self.sockets[f"listener:{index}"] = bind(listener.address, listener.port)

    def close_sockets(self) -> None:
        """Stopping: the workers hold the listening sockets while they drain (answering 421);
        once the last one exits, connections must be refused, not queued for nobody."""
        for sock in self.sockets.values():
            sock.close()

    def spawn(self, slot: int) -> None:
        env = {
            **os.environ,
            MULTIPROC_ENV: str(self.metrics_dir),
            FDS_ENV: json.dumps({k: s.fileno() for k, s in self.sockets.items()}),
            "GATEWAY_WORKER": str(slot),
        }
        cmd = [sys.executable, "-m", "gateway", "serve", "--workers", "1"]
        if self.config_path:
            cmd += ["-c", str(self.config_path)]
        proc = subprocess.Popen(
            cmd,
            env=env,
            pass_fds=[s.fileno() for s in self.sockets.values()],
            preexec_fn=_terminate_with_parent,
        )
        self.workers[slot] = proc
        log.event("worker", action="started", slot=slot, pid=proc.pid)

    def forward(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signum)
                if signum == signal.SIGTERM:
                    self.told_to_stop.add(proc.pid)

    def stop_stragglers(self) -> None:
        # A SIGTERM that lands while a replacement is being spawned reaches forward() before the
        # new process is in self.workers; without this sweep that worker would never be told to
        # stop and the supervisor would wait for it forever.
        for proc in self.workers.values():
            if proc.pid not in self.told_to_stop and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                self.told_to_stop.add(proc.pid)

    def run(self) -> int:
        self.bind_all()
        for slot in range(self.count):
            self.spawn(slot)

        def on_stop(signum: int, frame: Any) -> None:
            self.stopping = True
            self.forward(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, lambda signum, frame: self.forward(signal.SIGHUP))
        restarts: list[float] = []
        try:
            while True:
                time.sleep(0.2)
                if self.stopping:
                    self.stop_stragglers()
                    self.close_sockets()
                for slot, proc in list(self.workers.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    self._mark_dead(proc.pid)
                    if self.stopping:
                        del self.workers[slot]
                        continue
                    log.error("worker", action="died", slot=slot, pid=proc.pid, exit_code=code)
                    now = time.monotonic()
                    restarts = [t for t in restarts if now - t < 60] + [now]
                    if len(restarts) > 10 * self.count:
                        log.error("worker", action="giving-up", reason="restarting in a loop")
                        self.stopping = True
                        self.forward(signal.SIGTERM)
                        continue
                    self.spawn(slot)
                if self.stopping and not self.workers:
                    return 0
        finally:
            self.close_sockets()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def _mark_dead(self, pid: int) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(self.metrics_dir))
