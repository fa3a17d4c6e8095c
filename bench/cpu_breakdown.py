"""Per-message CPU breakdown of the gateway's pipeline: parse, each policy, DKIM, relay.

    .venv/bin/python bench/cpu_breakdown.py [--size 20] [--messages 300] [--cprofile]

Runs the real Engine in-process (the same objects `gateway serve` builds) on a compliant
newsletter and times each stage on its own: no sockets but the relay to a local smtp-sink.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import email.parser
import email.policy
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    available_policies,
    free_port,
    gateway_config,
    prepare_store,
    start_sink,
    stop,
)
from bench.newsletter import newsletter  # noqa: E402
from gateway.mime import fastparse  # noqa: E402


def cpu_ms(fn, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        samples.append(time.process_time() - started)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--cprofile", action="store_true")
    args = parser.parse_args()

    from gateway.config import load_config
    from gateway.core.policy import PolicyContext
    from gateway.core.transaction import Phase, SessionInfo, Transaction
    from gateway.server import build_engine, build_relay
    from gateway.store import open_store

    tmp = Path(tempfile.mkdtemp(prefix="gateway-profile-"))
    sink_port = free_port()
    sink = start_sink(sink_port)
    policies = available_policies()
    config_path = gateway_config(tmp, sink_port, free_port(), policies)
    prepare_store(config_path)
    config = load_config(config_path)
    store = open_store(config.store_url(), cache_ttl=config.store.cache_ttl)
    engine = build_engine(config, store)
    relay = build_relay(config)
    customer = store.get_customer("bench")
    raw = newsletter(args.size * 1024)
    n = args.messages

    def fresh_txn() -> Transaction:
        txn = Transaction(
            session=SessionInfo(id="p", customer=customer),
            mail_from="news@customer.example",
            recipients=["reader@recipients.example"],
        )
        txn.mail_id = engine.codec.new_stem(customer.id)
        txn.set_raw(raw)
        return txn

    rows: list[tuple[str, float]] = []
    parser_ = email.parser.BytesParser(policy=email.policy.compat32)
    rows.append(
        ("parse (stdlib feed parser, compat32; for comparison)", cpu_ms(lambda: parser_.parsebytes(raw), n))
    )
    rows.append(
        ("parse (gateway.mime.fastparse, what the gateway runs)", cpu_ms(lambda: fastparse.parse(raw), n))
    )
    for step in engine.pipeline.steps:
        policy = step.policy
        for phase in policy.phases:

            def run(policy=policy, phase=phase) -> None:
                txn = fresh_txn()
                if phase is Phase.RCPT:
                    txn.current_rcpt = "reader@recipients.example"
                txn.message  # noqa: B018 - parse outside the policy's time
                started = time.process_time()
                policy.check(txn, PolicyContext(phase, store, config))
                run.elapsed.append(time.process_time() - started)  # type: ignore[attr-defined]

            run.elapsed = []  # type: ignore[attr-defined]
            for _ in range(n):
                run()
            rows.append((f"policy {policy.name} ({phase.value})", statistics.median(run.elapsed) * 1000))  # type: ignore[attr-defined]
    signed = engine.signer.sign_message(raw)[0] if engine.signer else raw
    if engine.signer:
        rows.append(("DKIM sign (rsa-sha256 2048)", cpu_ms(lambda: engine.signer.sign_message(raw), n)))

    async def whole(count: int) -> float:
        started = time.process_time()
        for _ in range(count):
            txn, _ = await engine.mail(SessionInfo(id="p", customer=customer), "news@customer.example")
            await engine.rcpt(txn, "reader@recipients.example")
            outcome = await engine.data(txn, raw)
            assert outcome.ok, outcome.reply
        return (time.process_time() - started) * 1000 / count

    async def relay_only(count: int) -> float:
        started = time.process_time()
        for _ in range(count):
            result = await relay.send("news@customer.example", ["reader@recipients.example"], signed)
            assert result.accepted, result.reply
        return (time.process_time() - started) * 1000 / count

    async def both() -> tuple[float, float]:
        return await whole(n), await relay_only(n)

    import logging

    logging.getLogger("gateway").setLevel(logging.WARNING)  # time the work, not the log file
    engine_ms, relay_ms = asyncio.run(both())
    rows.append(("relay to smtp-sink (pooled connection)", relay_ms))
    print(f"\nper-message CPU, {len(raw)} bytes newsletter, median of {n} (ms):")
    for name, value in rows:
        print(f"  {name:<44} {value:7.3f}")
    print(f"  {'engine MAIL+RCPT+DATA, all of the above':<44} {engine_ms:7.3f}")
    if args.cprofile:
        profiler = cProfile.Profile()
        profiler.enable()
        asyncio.run(whole(n))
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    stop(sink)
    return 0


if __name__ == "__main__":
    sys.exit(main())
