"""Workers that start together on a fresh directory all end up with the same secrets and
certificate, and none of them reads a half-written file (`serve --workers N`)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from gateway.mailid import MailIdCodec
from gateway.tlsutil import ensure_self_signed, server_context


def _start_like_a_worker(
    directory: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    base = Path(directory)
    barrier.wait()
    try:
        codec = MailIdCodec.from_key_file(base / "mailid.key")
        ensure_self_signed(base / "tls/cert.pem", base / "tls/key.pem", "gateway.test")
        server_context(base / "tls/cert.pem", base / "tls/key.pem")
        results.put(("ok", codec.new_stem(1)[:1], (base / "mailid.key").read_text()))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put(("failed", type(exc).__name__, str(exc)))


def test_workers_starting_together_share_one_key_file_and_one_certificate(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        directory = tmp_path / f"run{attempt}"
        directory.mkdir()
        barrier = ctx.Barrier(6)
        results = ctx.Queue()
        workers = [
            ctx.Process(target=_start_like_a_worker, args=(str(directory), barrier, results))
            for _ in range(6)
        ]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(10)
        assert all(o[0] == "ok" for o in outcomes), outcomes
        assert len({o[2] for o in outcomes}) == 1, "every worker read the same, whole key file"
        assert not list(directory.glob(".*.tmp")) and not list(directory.glob("tls/.*.tmp"))
