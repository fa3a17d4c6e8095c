"""The performance harness: the same load against baselines and the gateway, in one run.

    .venv/bin/python bench/harness.py            # everything (a few minutes)
    .venv/bin/python bench/harness.py --quick    # one profile, one size: a quick look

Systems, all started by the harness: Postfix's smtp-sink (C) directly; a bare aiosmtpd server
that accepts and discards; the gateway (`gateway serve`, every built-in policy in `enforce`,
signed mail ID, DKIM RSA-2048, relay to smtp-sink) with 1 and with 2 worker processes.
Load profiles: (a) a new connection per message, (b) 100 messages per connection. Load comes
from Postfix's smtp-source (C, so the load generator does not eat the CPU being measured);
smtp-source cannot AUTH, so the bench listener authenticates 127.0.0.1 as the bench customer
through `trusted_networks`. Latency under full load is measured by a probe client sending one
message every `--probe-interval` seconds during the load (p50/p99 over the probes); latency at
half load by bench/paced.py, which sends at random (Poisson) arrival times and times every
message.

Figures are ratios against baselines measured in the same run: the machines are shared and
noisy, so absolute numbers mean little from one run to the next. Never assert them in tests.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.newsletter import IMPRINT, newsletter  # noqa: E402
from bench.paced import paced_load  # noqa: E402

SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "smtp-source"
SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") or "smtp-sink"
# Every built-in policy, in the example config's order; consent needs per-recipient records,
# so the bench customer's recipient gets one (prepare_store) when the policy exists.
ALL_POLICIES = [
    "customer-active",
    "sender-identity",
    "role-address",
    "suppression",
    "consent",
    "message-format",
    "campaign-confirmed",
    "unsubscribe",
    "imprint",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Result:
    name: str
    messages: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: float | None = None
    peak_rss_mb: float | None = None

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def start_sink(port: int) -> subprocess.Popen[bytes]:
    cmd = [SMTP_SINK]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]
    cmd += [f"127.0.0.1:{port}", "1024"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def probe(port: int, message: bytes, interval: float, stop: threading.Event, out: list[float]) -> None:
    """One message at a time, timed from connect to the reply to DATA."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="probe.bench", timeout=30) as s:
                s.sendmail("news@customer.example", ["probe@recipients.example"], message)
            out.append(time.perf_counter() - started)
        except (OSError, smtplib.SMTPException) as exc:
            print(f"  probe error: {exc}", file=sys.stderr)
        stop.wait(interval)


def run_load(
    name: str, port: int, message_file: Path, message: bytes, args: argparse.Namespace, pid: int | None = None
) -> Result:
    if args.reuse and args.messages > args.sessions * 100:
        # Profile (b): 100 messages per connection means this many sessions at most.
        args = argparse.Namespace(**{**vars(args), "sessions": max(1, args.messages // 100)})
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(
        target=probe, args=(port, message, args.probe_interval, stop, latencies), daemon=True
    )
    cpu_before = _cpu(pid) if pid else None
    cmd = [
        SMTP_SOURCE,
        "-s",
        str(args.sessions),
        "-m",
        str(args.messages),
        "-F",
        str(message_file),
        "-f",
        "news@customer.example",
        "-t",
        "reader@recipients.example",
        "-M",
        "load.bench",
    ]
    if args.reuse:
        cmd.append("-d")
    cmd.append(f"127.0.0.1:{port}")
    started = time.perf_counter()
    prober.start()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    stop.set()
    prober.join(30)
    if result.returncode != 0:
        raise RuntimeError(f"smtp-source failed against {name}: {result.stderr.strip()}")
    cpu = (_cpu(pid) - cpu_before) if pid and cpu_before is not None else None
    return Result(name, args.messages, seconds, latencies, cpu, _peak_rss(pid) if pid else None)


def _cpu(pid: int) -> float:
    total = 0.0
    for p in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
    return total


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _peak_rss(pid: int) -> float | None:
    peak = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
    return peak / 1024 if peak else None


def gateway_config(
    tmp: Path,
    sink_port: int,
    listen_port: int,
    policies: list[str],
    http_port: int | None = None,
    quota: bool | None = True,
    store_url: str | None = None,
    webhooks: bool = False,
) -> Path:
    listeners: list[dict[str, object]] = [
        {
            "kind": "submission",
            "address": "127.0.0.1",
            "port": listen_port,
            "trusted_networks": {"127.0.0.1/32": "bench"},
        }
    ]
    if http_port:
        listeners.append({"kind": "http", "address": "127.0.0.1", "port": http_port})
    config = {
        "hostname": "gateway.bench",
        "listeners": listeners,
        "downstream": {"host": "127.0.0.1", "port": sink_port, "starttls": "none"},
        "store": {"url": store_url or f"sqlite:///{tmp / 'gateway.db'}"},
        "mail_id": {"key_file": str(tmp / "mailid.key")},
        "dkim": {"keys_dir": str(tmp / "dkim"), "algorithms": ["rsa-sha256"], "missing_key": "tempfail"},
        "logging": {"file": str(tmp / "gateway.log"), "max_bytes": 0},
        "limits": {"max_sessions": 5000},
        "policies": [{"name": p, "mode": "enforce"} for p in policies],
    }
    if quota is not None:  # None: a baseline checkout from before quotas (no such key)
        config["quota"] = {"enabled": quota}
    if webhooks:
        config["webhooks"] = {"allow_loopback": True, "poll_interval_seconds": 0.2}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prepare_store(config_path: Path) -> None:
    from gateway.config import load_config
    from gateway.dkim import keygen
    from gateway.store import open_store

    config = load_config(config_path)
    store = open_store(config.store_url())
    if store.get_customer("bench") is not None:
        return
    store.add_customer("bench")
    store.set_imprint("bench", IMPRINT)
    domain = store.add_domain("bench", "customer.example", "t")
    store.mark_domain_verified(domain.customer_id, "customer.example", "bench")
    store.confirm_campaign("bench", "bench-2026", "bench")
    store.set_customer_status("bench", "active")
    if hasattr(store, "update_limits"):
        # Quotas stay on (their cost is measured) but a whole bench run must fit into them.
        store.update_limits(
            store.require_customer("bench"), actor="bench", action="limits", per_hour=10**9, per_day=10**9
        )
    if hasattr(store, "consent_subscribe"):
        # The consent policy needs confirmed double opt-in evidence for the bench recipients.
        now = time.time()
        for address in ("reader@recipients.example", "probe@recipients.example"):
            store.consent_subscribe(domain.customer_id, address, source="bench", at=now - 60, ip="192.0.2.1")
            store.consent_confirm(domain.customer_id, address, at=now - 30, ip="192.0.2.1")
    keygen("customer.example", "bench", "rsa-sha256", config.path(config.dkim.keys_dir))


def start_gateway(
    config_path: Path, port: int, workers: int, checkout: Path = ROOT
) -> subprocess.Popen[bytes]:
    cmd = [str(checkout / ".venv/bin/gateway"), "serve", "-c", str(config_path), "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port)
    time.sleep(0.5 * workers)  # let every worker reach its accept loop
    return proc


class _SlowReceiver:
    """A webhook receiver on loopback that takes `delay` per POST: with a backlog of events the
    gateway's dispatcher is busy for the whole load, which is what --webhooks measures."""

    def __init__(self, delay: float = 0.005) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                time.sleep(delay)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.count += 1

            def log_message(self, *a: object) -> None:
                pass

        receiver = self
        self.count = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        self.server.shutdown()


def webhook_backlog(config_path: Path, url: str, events: int) -> None:
    """The bench customer's webhook and `events` pending events for it."""
    from gateway.config import load_config
    from gateway.store import open_store

    store = open_store(load_config(config_path).store_url())
    customer = store.require_customer("bench")
    store.set_webhook(customer.id, url, None, by="bench")
    with store.transaction():
        for n in range(events):
            store.emit_event(
                customer.id, "unsubscribe", {"via": "bench"}, recipient=f"r{n}@recipients.example"
            )


def start_bare(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/bare_aiosmtpd.py"), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_port(port)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def idle_sessions_rss(port: int, pid: int, count: int) -> float | None:
    """Peak RSS (MB, the largest process) with `count` idle sessions open after EHLO."""
    socks = []
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.recv(512)
            s.sendall(b"EHLO idle.bench\r\n")
            socks.append(s)
        for s in socks:
            s.recv(4096)
        time.sleep(1.0)
        return max((_rss(p) for p in [pid, *_children(pid)]), default=None)
    finally:
        for s in socks:
            s.close()


def _rss(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def available_policies() -> list[str]:
    from gateway.core.registry import discover

    found = discover()
    return [p for p in ALL_POLICIES if p in found]


def fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-".rjust(len(format(0, spec)))


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n{title}")
    print(
        f"  {'system':<28} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>7} "
        f"{'CPU ms/msg':>10} {'RSS MB':>7}"
    )
    for r in results:
        per_msg = r.cpu_seconds * 1000 / r.messages if r.cpu_seconds is not None else None
        print(
            f"  {r.name:<28} {r.rate:>8.0f} {fmt(r.pct(0.5), '8.1f')} {fmt(r.pct(0.99), '8.1f')} "
            f"{fmt(r.cpu_seconds, '7.1f')} {fmt(per_msg, '10.2f')} {fmt(r.peak_rss_mb, '7.0f')}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="performance harness (see module doc)")
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--sizes", default="20,100", help="newsletter sizes in KB")
    parser.add_argument(
        "--profiles", default="a,b", help="a: new connection per message; b: 100 messages per connection"
    )
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--quota",
        choices=("on", "off", "both"),
        default="on",
        help="sending quotas in the gateway; both: also a gateway with quotas "
        "off per worker count, to measure their cost in the same run",
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the gateways' store on a private PostgreSQL (tests/support) instead of SQLite",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also run the gateway of another checkout (its .venv, set up with "
        ".ci/setup) with 1 worker, e.g. the last release: same run, ratio",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="also a 1-worker gateway whose dispatcher delivers a backlog of "
        "webhook events to a slow receiver during the load",
    )
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument("--idle", type=int, default=1000, help="idle sessions for the RSS figure")
    parser.add_argument("--quick", action="store_true", help="profile a, 20 KB, 1000 messages")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print the per-message CPU breakdown (bench/cpu_breakdown.py)",
    )
    args = parser.parse_args()
    if args.quick:
        args.messages, args.sizes, args.profiles, args.idle = 1000, "20", "a", 200
    sizes = [int(x) for x in args.sizes.split(",")]
    profiles = args.profiles.split(",")
    worker_counts = [int(x) for x in args.workers.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    postgres = None
    if args.postgres:
        from tests.support.postgres import PostgresServer

        postgres = PostgresServer().start()
    policies = available_policies()
    sink_port, bare_port = free_port(), free_port()
    sink = start_sink(sink_port)
    bare = start_bare(bare_port)
    gateways: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
    unlimited: dict[int, tuple[subprocess.Popen[bytes], int]] = {}  # --quota both: quotas off
    summary: dict[tuple[str, int], dict[str, Result]] = {}
    extra: dict[str, tuple[str, subprocess.Popen[bytes], int]] = {}  # --baseline, --webhooks
    receiver: _SlowReceiver | None = None
    try:
        for workers in worker_counts:
            port = free_port()
            wtmp = tmp / f"w{workers}"
            wtmp.mkdir()
            config = gateway_config(
                wtmp,
                sink_port,
                port,
                policies,
                quota=args.quota != "off",
                store_url=postgres.create_database(f"bench_w{workers}") if postgres else None,
            )
            prepare_store(config)
            gateways[workers] = (start_gateway(config, port, workers), port)
            if args.quota == "both":
                port = free_port()
                wtmp = tmp / f"w{workers}-noquota"
                wtmp.mkdir()
                config = gateway_config(
                    wtmp,
                    sink_port,
                    port,
                    policies,
                    quota=False,
                    store_url=postgres.create_database(f"bench_nq{workers}") if postgres else None,
                )
                prepare_store(config)
                unlimited[workers] = (start_gateway(config, port, workers), port)
        if args.baseline is not None:
            port = free_port()
            wtmp = tmp / "baseline"
            wtmp.mkdir()
            config = gateway_config(wtmp, sink_port, port, policies, quota=None)
            subprocess.run(
                [
                    str(args.baseline / ".venv/bin/python"),
                    "-c",
                    "import sys; sys.path.insert(0, 'bench'); sys.argv = ['x']; "
                    "from harness import prepare_store; from pathlib import Path; "
                    f"prepare_store(Path({str(config)!r}))",
                ],
                cwd=args.baseline,
                check=True,
            )
            extra["base"] = (
                "baseline checkout, 1 worker",
                start_gateway(config, port, 1, args.baseline),
                port,
            )
        if args.webhooks:
            receiver = _SlowReceiver()
            port = free_port()
            wtmp = tmp / "webhooks"
            wtmp.mkdir()
            config = gateway_config(wtmp, sink_port, port, policies, webhooks=True)
            prepare_store(config)
            webhook_backlog(config, receiver.url, 100_000)
            extra["hook"] = ("gateway, 1 worker, delivering events", start_gateway(config, port, 1), port)
        for profile in profiles:
            args.reuse = profile == "b"
            for size in sizes:
                message = newsletter(size * 1024)
                message_file = tmp / f"newsletter-{size}.eml"
                message_file.write_bytes(message.replace(b"\r\n", b"\n"))
                results = {
                    "sink": run_load("smtp-sink direct (C)", sink_port, message_file, message, args),
                    "bare": run_load(
                        "bare aiosmtpd, discard", bare_port, message_file, message, args, bare.pid
                    ),
                }
                for workers, (proc, port) in gateways.items():
                    results[f"gw{workers}"] = run_load(
                        f"gateway, {workers} worker{'s' if workers > 1 else ''}",
                        port,
                        message_file,
                        message,
                        args,
                        proc.pid,
                    )
                    if workers in unlimited:
                        proc, port = unlimited[workers]
                        results[f"nq{workers}"] = run_load(
                            f"gateway, {workers} worker{'s' if workers > 1 else ''}, no quota",
                            port,
                            message_file,
                            message,
                            args,
                            proc.pid,
                        )
                for key, (name, proc, port) in extra.items():
                    results[key] = run_load(name, port, message_file, message, args, proc.pid)
                summary[(profile, size)] = results
                label = (
                    "(a) new connection per message" if profile == "a" else "(b) 100 messages per connection"
                )
                print_table(
                    f"{label}, {size} KB newsletter, {args.messages} messages, {args.sessions} sessions",
                    list(results.values()),
                )
        half_latency = None
        if 1 in gateways and ("a", sizes[0]) in summary:
            proc, port = gateways[1]
            full = summary[("a", sizes[0])]["gw1"].rate
            message = newsletter(sizes[0] * 1024)
            half = half_rate_latency(port, message, full / 2, "gateway")
            sink_half = half_rate_latency(sink_port, message, full / 2, "smtp-sink")
            half_latency = (half, sink_half)
        rss = None
        if 1 in gateways and args.idle:
            proc, port = gateways[1]
            rss = idle_sessions_rss(port, proc.pid, args.idle)
    finally:
        for proc, _ in [*gateways.values(), *unlimited.values()]:
            stop(proc)
        for _, proc, _ in extra.values():
            stop(proc)
        if receiver is not None:
            print(f"\nwebhook events delivered during the run: {receiver.count}")
            receiver.stop()
        stop(bare)
        stop(sink)
        if postgres is not None:
            postgres.stop()

    print(f"\npolicies: {', '.join(policies)}; mail ID; DKIM rsa-sha256 2048; relay to smtp-sink")
    print("ratios (goal):")
    for (profile, size), results in summary.items():
        if "gw1" in results:
            best = max(r.rate for k, r in results.items() if k.startswith("gw"))
            print(
                f"  ({profile}) {size:>3} KB  gateway(1)/bare aiosmtpd = "
                f"{results['gw1'].rate / results['bare'].rate:.2f} (>= 1.5 for (a) 20 KB)   "
                f"gateway(best)/smtp-sink = {best / results['sink'].rate:.2f} (>= 0.2)"
            )
        for workers in unlimited:
            if f"gw{workers}" in results:
                print(
                    f"  ({profile}) {size:>3} KB  quotas on / off, {workers} worker(s) = "
                    f"{results[f'gw{workers}'].rate / results[f'nq{workers}'].rate:.2f} "
                    f"(>= 0.9)"
                )
        if "gw1" in results and "base" in results:
            print(
                f"  ({profile}) {size:>3} KB  gateway(1) / baseline checkout(1) = "
                f"{results['gw1'].rate / results['base'].rate:.2f} (>= 0.95)"
            )
        if "gw1" in results and "hook" in results:
            print(
                f"  ({profile}) {size:>3} KB  delivering webhooks / not, 1 worker = "
                f"{results['hook'].rate / results['gw1'].rate:.2f} (>= 0.95)"
            )
        if "gw1" in results and "gw2" in results:
            print(
                f"  ({profile}) {size:>3} KB  2 workers / 1 worker = "
                f"{results['gw2'].rate / results['gw1'].rate:.2f} (>= 1.5)"
            )
    if half_latency:
        gw, sink_r = half_latency
        print(
            f"  latency added at half of max throughput ({gw.rate:.0f} msg/s, random arrivals): "
            f"p50 {(gw.pct(0.5) or 0) - (sink_r.pct(0.5) or 0):.1f} ms, p99 "
            f"{(gw.pct(0.99) or 0) - (sink_r.pct(0.99) or 0):.1f} ms (p99 <= 10 ms); "
            f"gateway p50/p99 {gw.pct(0.5) or 0:.1f}/{gw.pct(0.99) or 0:.1f} ms, smtp-sink "
            f"{sink_r.pct(0.5) or 0:.1f}/{sink_r.pct(0.99) or 0:.1f} ms"
        )
    if rss is not None:
        print(f"  peak RSS of a worker with {args.idle} idle sessions: {rss:.0f} MB (<= 150 MB)")
    if args.profile:
        subprocess.run([sys.executable, str(ROOT / "bench/cpu_breakdown.py")])
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def half_rate_latency(port: int, message: bytes, rate: float, name: str) -> Result:
    """Every message's latency while messages arrive at random at `rate` msg/s (bench/paced.py:
    smtp-source paces in whole-second bursts, which is not half load)."""
    paced = paced_load(port, message, rate)
    if paced.errors:
        print(f"  {name}: {paced.errors} paced messages failed", file=sys.stderr)
    return Result(name, len(paced.latencies), paced.seconds, paced.latencies)


if __name__ == "__main__":
    sys.exit(main())
