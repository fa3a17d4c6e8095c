"""Volume and reputation (issue #12): quotas, probation, the circuit breaker, the audit trail.

Real `gateway serve` processes, real SMTP, a real PostgreSQL for the two-node case.
"""

from __future__ import annotations

import json
import signal
import smtplib
from pathlib import Path
from typing import Any

import pytest

from gateway.store import open_store
from tests.integration.test_operations import run_cli, start_serve, tls_client
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import add_customer, base_config, write_config
from tests.support.postfix import free_port


def send(port: int, rcpt: str = "anna@example.org") -> str:
    """One message; the reply that decided it ('250', or the refusal '451 4.7.1 ...')."""
    with tls_client(port) as smtp:
        try:
            smtp.sendmail("news@customer.example", [rcpt], MESSAGE)
        except smtplib.SMTPSenderRefused as exc:
            return f"{exc.smtp_code} {exc.smtp_error.decode()}"
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients[rcpt]
            return f"{code} {text.decode()}"
        return "250"


def serve_config(tmp: Path, mta_port: int, store_url: str | None = None,
                 **overrides: Any) -> tuple[Path, int]:
    port = free_port()
    config = base_config(tmp, mta_port, limits={"shutdown_grace": 5, "auth_failure_delay": 0},
                         **overrides)
    config["listeners"][0]["port"] = port
    if store_url:
        config["store"] = {"url": store_url, "cache_ttl": 0}
    return write_config(tmp, config), port


def stop(proc: Any) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except Exception:  # noqa: BLE001
            proc.kill()
            proc.wait()


def cli(path: Path, *args: str) -> Any:
    return run_cli(*args, "-c", str(path))


# -- audit trail ------------------------------------------------------------------------------

def test_customer_decisions_need_by_and_are_in_the_audit_trail(tmp_path):
    path = write_config(tmp_path, base_config(tmp_path, 25))
    assert cli(path, "customer", "add", "shop").returncode == 0
    missing = cli(path, "customer", "activate", "shop")
    assert missing.returncode == 2 and "--by" in missing.stderr
    blank = cli(path, "customer", "activate", "shop", "--by", "  ")
    assert blank.returncode == 1 and "--by" in blank.stderr
    forged = cli(path, "customer", "activate", "shop", "--by", "Eve\nroot")
    assert forged.returncode == 1
    assert cli(path, "customer", "activate", "shop", "--by", "Jane Doe").returncode == 0
    assert cli(path, "customer", "set-limits", "shop", "--per-hour", "10", "--by", "Jane Doe",
               "--reason", "old list").returncode == 0
    assert cli(path, "customer", "suspend", "shop", "--by", "Bob",
               "--reason", "spam trap hits").returncode == 0
    assert cli(path, "campaign", "confirm", "shop", "autumn-2026", "--by", "Jane Doe"
               ).returncode == 0
    out = cli(path, "audit", "--customer", "shop", "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    actions = [(e["action"], e["by"]) for e in entries]
    assert actions == [("activate", "Jane Doe"), ("probation", "Jane Doe"),
                       ("limits", "Jane Doe"), ("suspend", "Bob"), ("campaign", "Jane Doe")]
    suspend = entries[3]
    assert suspend["reason"] == "spam trap hits"
    assert suspend["before"]["status"] == "active" and suspend["after"]["status"] == "suspended"
    assert entries[2]["before"] == {"per_hour": 0} and entries[2]["after"] == {"per_hour": 10}
    text = cli(path, "audit").stdout
    assert "suspend" in text and "by Bob: spam trap hits" in text
    assert "no audit entries" in cli(path, "audit", "--since", "2999-01-01").stdout
    bad = cli(path, "audit", "--since", "yesterday")
    assert bad.returncode == 1 and "--since" in bad.stderr
