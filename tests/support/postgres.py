"""A private PostgreSQL server for tests: initdb in a temporary directory, a random port.

Runs the cluster as the `postgres` system user (PostgreSQL refuses to run as root). When
GATEWAY_TEST_POSTGRES_URL is set (a CI that runs its own server), that server is used instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.postfix import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install PostgreSQL (run .ci/setup)")
    return path


class PostgresServer:
    def __init__(self) -> None:
        # Not under pytest's tmp_path: its parents are 0700 and the postgres user must traverse.
        self.base = Path(tempfile.mkdtemp(prefix="gateway-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.user = pwd.getpwnam("postgres")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> PostgresServer:
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        os.chown(self.base, self.user.pw_uid, self.user.pw_gid)
        result = self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr}")
        result = self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        if result.returncode != 0:
            log_file = self.base / "log"
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}{log}")
        return self

    def create_database(self, name: str) -> str:
        import psycopg

        deadline = time.monotonic() + 20
        while True:
            try:
                with psycopg.connect(
                    f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
                ) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop_server(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        self._run(
            _pg_bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.base / "log"),
            "-w",
            "-o",
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )

    def stop(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.base, ignore_errors=True)
