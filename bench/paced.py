"""Paced load for latency figures: messages arriving at random times at a given mean rate.

smtp-source can only pace in whole seconds (`-R`), so its sessions fire together on each
second tick: at "half load" the gateway then sees a burst of a second's worth of messages
at once and the p99 measures that burst, not the latency at half load. Here arrivals are a
Poisson process (exponential gaps, a fixed seed), each message on a new connection, and every
message's time from connect to the reply to its DATA is recorded. The client is a few lines
of asyncio on raw sockets, cheap enough at a few hundred messages a second.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

_LEADING_DOT = re.compile(rb"^\.", re.M)


@dataclass
class Paced:
    latencies: list[float] = field(default_factory=list)  # seconds, after the warm-up
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


async def _reply(reader: asyncio.StreamReader, expected: int) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            break
    if int(line[:3]) != expected:
        raise RuntimeError(line.decode("ascii", "replace").strip())


async def _one(port: int, payload: bytes, sender: str, recipient: str) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await _reply(reader, 220)
        writer.write(b"EHLO paced.bench\r\n")
        await _reply(reader, 250)
        writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
        await _reply(reader, 250)
        writer.write(f"RCPT TO:<{recipient}>\r\n".encode())
        await _reply(reader, 250)
        writer.write(b"DATA\r\n")
        await _reply(reader, 354)
        writer.write(payload)
        await _reply(reader, 250)
        elapsed = time.perf_counter() - started
        writer.write(b"QUIT\r\n")
        return elapsed
    finally:
        writer.close()


async def _run(
    port: int,
    message: bytes,
    rate: float,
    seconds: float,
    warmup: float,
    sender: str,
    recipient: str,
    seed: int,
) -> Paced:
    payload = _LEADING_DOT.sub(b"..", message)
    payload += (b"" if payload.endswith(b"\r\n") else b"\r\n") + b".\r\n"
    rng = random.Random(seed)
    result = Paced()
    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks: list[asyncio.Task[None]] = []

    async def send(at: float) -> None:
        try:
            latency = await _one(port, payload, sender, recipient)
        except (OSError, RuntimeError, ConnectionError):
            result.errors += 1
            return
        if at - start >= warmup:
            result.latencies.append(latency)

    at = start
    while True:
        at += rng.expovariate(rate)
        if at - start > warmup + seconds:
            break
        await asyncio.sleep(max(0.0, at - loop.time()))
        tasks.append(asyncio.create_task(send(at)))
    await asyncio.gather(*tasks)
    result.seconds = seconds
    return result


def paced_load(
    port: int,
    message: bytes,
    rate: float,
    seconds: float = 10.0,
    warmup: float = 1.0,
    sender: str = "news@customer.example",
    recipient: str = "reader@recipients.example",
    seed: int = 8,
) -> Paced:
    """Send for `warmup + seconds` at `rate` msg/s on average; latencies after the warm-up."""
    return asyncio.run(_run(port, message, rate, seconds, warmup, sender, recipient, seed))
