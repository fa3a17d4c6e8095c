"""Relay benchmark: the same load straight to a sink and through the gateway to that sink.

    .venv/bin/python bench/relay_bench.py [--messages 2000] [--sessions 20] [--size 20]

Load comes from Postfix's smtp-source (C, so the load generator does not eat the CPU being
measured); the sink is Postfix's smtp-sink. The gateway runs as a real `gateway serve` process
with its full pipeline for the configured policies, mail ID and DKIM (RSA-2048). smtp-source
cannot AUTH, so the bench listener authenticates 127.0.0.1 as the bench customer through
`trusted_networks`. Latency is measured by a probe client that sends one message every
`--probe-interval` seconds during the load; p50/p99 are over those probes.

Figures are ratios against the direct-to-sink baseline measured in the same run: the machines
are shared and noisy, so absolute numbers mean little from one run to the next.
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

SMTP_SOURCE = shutil.which("smtp-source", path="/usr/sbin:/usr/bin") or "smtp-source"
SMTP_SINK = shutil.which("smtp-sink", path="/usr/sbin:/usr/bin") or "smtp-sink"
ALL_POLICIES = ["customer-active", "role-address", "sender-identity", "unsubscribe", "imprint",
                "campaign-confirmed", "message-format"]


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


def probe(port: int, message: bytes, interval: float, stop: threading.Event,
          out: list[float]) -> None:
    """One message at a time, timed from connect to the reply of QUIT's predecessor (DATA)."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="probe.bench", timeout=30) as s:
                s.sendmail("news@customer.example", ["probe@recipients.example"], message)
            out.append(time.perf_counter() - started)
        except (OSError, smtplib.SMTPException) as exc:
            print(f"  probe error: {exc}", file=sys.stderr)
        stop.wait(interval)


def run_load(name: str, port: int, message_file: Path, message: bytes, args: argparse.Namespace,
             pid: int | None = None) -> Result:
    latencies: list[float] = []
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(port, message, args.probe_interval, stop,
                                                  latencies), daemon=True)
    cpu_before = _cpu(pid) if pid else None
    cmd = [SMTP_SOURCE, "-s", str(args.sessions), "-m", str(args.messages), "-F", str(message_file),
           "-f", "news@customer.example", "-t", "reader@recipients.example",
           "-M", "load.bench"]
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


def gateway_config(tmp: Path, sink_port: int, listen_port: int, policies: list[str],
                   workers: int | None) -> Path:
    config = {
        "hostname": "gateway.bench",
        "listeners": [{"kind": "submission", "address": "127.0.0.1", "port": listen_port,
                       "trusted_networks": {"127.0.0.1/32": "bench"}}],
        "downstream": {"host": "127.0.0.1", "port": sink_port, "starttls": "none"},
        "store": {"url": f"sqlite:///{tmp / 'gateway.db'}"},
        "mail_id": {"key_file": str(tmp / "mailid.key")},
        "dkim": {"keys_dir": str(tmp / "dkim"), "algorithms": ["rsa-sha256"],
                 "missing_key": "tempfail"},
        "logging": {"file": str(tmp / "gateway.log")},
        "limits": {"max_sessions": 2000},
        "policies": [{"name": p, "mode": "enforce"} for p in policies],
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prepare_store(config_path: Path) -> None:
    from gateway.config import load_config
    from gateway.dkim import keygen
    from gateway.store import open_store

    config = load_config(config_path)
    store = open_store(config.store_url())
    store.add_customer("bench")
    store.set_imprint("bench", IMPRINT)
    domain = store.add_domain("bench", "customer.example", "t")
    store.mark_domain_verified(domain.customer_id, "customer.example", "bench")
    store.confirm_campaign("bench", "bench-2026", "bench")
    store.set_customer_status("bench", "active")
    keygen("customer.example", "bench", "rsa-sha256", config.path(config.dkim.keys_dir))


def start_gateway(config_path: Path, port: int, workers: int | None) -> subprocess.Popen[bytes]:
    cmd = [str(ROOT / ".venv/bin/gateway"), "serve", "-c", str(config_path)]
    if workers:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_port(port)
    return proc


def available_policies() -> list[str]:
    from gateway.core.registry import discover

    found = discover()
    return [p for p in ALL_POLICIES if p in found]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=20, help="newsletter size in KB")
    parser.add_argument("--reuse", action="store_true",
                        help="send every message of a session over one connection")
    parser.add_argument("--probe-interval", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    message = newsletter(args.size * 1024)
    message_file = tmp / "newsletter.eml"
    message_file.write_bytes(message.replace(b"\r\n", b"\n"))
    sink_port, gw_port = free_port(), free_port()
    sink = start_sink(sink_port)
    procs: list[subprocess.Popen[bytes]] = [sink]
    try:
        direct = run_load("smtp-sink direct", sink_port, message_file, message, args)
        policies = available_policies()
        config = gateway_config(tmp, sink_port, gw_port, policies, args.workers)
        prepare_store(config)
        gw = start_gateway(config, gw_port, args.workers)
        procs.append(gw)
        via = run_load("gateway -> smtp-sink", gw_port, message_file, message, args, gw.pid)
        log = (tmp / "gateway.log").read_text()
        accepted = log.count("event=relay") - log.count("result=tempfailed") - log.count(
            "result=rejected")
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    print(f"\n{args.size} KB multipart newsletter, {args.messages} messages, {args.sessions} "
          f"sessions, {'connection reuse' if args.reuse else 'new connection per message'}; "
          f"policies: {', '.join(policies)}; DKIM rsa-sha256 2048")
    print(f"{'system':<24} {'msg/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>7} {'RSS MB':>7}")
    for r in (direct, via):
        p50, p99 = r.pct(0.5), r.pct(0.99)
        print(f"{r.name:<24} {r.rate:>8.0f} {p50 or 0:>8.1f} {p99 or 0:>8.1f} "
              f"{r.cpu_seconds if r.cpu_seconds is not None else float('nan'):>7.1f} "
              f"{r.peak_rss_mb if r.peak_rss_mb is not None else float('nan'):>7.0f}")
    print(f"ratio gateway/direct throughput: {via.rate / direct.rate:.3f}")
    if direct.latencies and via.latencies:
        print(f"latency added by the gateway: p50 {(via.pct(.5) or 0) - (direct.pct(.5) or 0):.1f} ms,"
              f" p99 {(via.pct(.99) or 0) - (direct.pct(.99) or 0):.1f} ms")
    print(f"gateway relayed (log): {accepted} of {args.messages + len(via.latencies)} sent")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
