"""Volume and reputation (issue #12): quotas, probation, the circuit breaker, the audit trail.

Real `gateway serve` processes, real SMTP, a real PostgreSQL for the two-node case.
"""

from __future__ import annotations

import json
import signal
import smtplib
from pathlib import Path
from typing import Any

import yaml

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


def serve_config(
    tmp: Path, mta_port: int, store_url: str | None = None, **overrides: Any
) -> tuple[Path, int]:
    port = free_port()
    config = base_config(tmp, mta_port, limits={"shutdown_grace": 5, "auth_failure_delay": 0}, **overrides)
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
    assert (
        cli(
            path,
            "customer",
            "set-limits",
            "shop",
            "--per-hour",
            "10",
            "--by",
            "Jane Doe",
            "--reason",
            "old list",
        ).returncode
        == 0
    )
    assert (
        cli(path, "customer", "suspend", "shop", "--by", "Bob", "--reason", "spam trap hits").returncode == 0
    )
    assert cli(path, "campaign", "confirm", "shop", "autumn-2026", "--by", "Jane Doe").returncode == 0
    out = cli(path, "audit", "--customer", "shop", "--json")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    actions = [(e["action"], e["by"]) for e in entries]
    assert actions == [
        ("activate", "Jane Doe"),
        ("probation", "Jane Doe"),
        ("limits", "Jane Doe"),
        ("suspend", "Bob"),
        ("campaign", "Jane Doe"),
    ]
    suspend = entries[3]
    assert suspend["reason"] == "spam trap hits"
    assert suspend["before"]["status"] == "active" and suspend["after"]["status"] == "suspended"
    assert entries[2]["before"] == {"per_hour": 0} and entries[2]["after"] == {"per_hour": 10}
    text = cli(path, "audit").stdout
    assert "suspend" in text and "by Bob: spam trap hits" in text
    assert "no audit entries" in cli(path, "audit", "--since", "2999-01-01").stdout
    bad = cli(path, "audit", "--since", "yesterday")
    assert bad.returncode == 1 and "--since" in bad.stderr


# -- quotas -----------------------------------------------------------------------------------


def avoid_hour_edge() -> None:
    """Hourly counters restart at the full hour; a test must not straddle it."""
    import time

    left = 3600 - time.time() % 3600
    if left < 60:
        time.sleep(left + 1)


def test_quota_reached_on_one_node_is_refused_on_the_other(tmp_path, scripted_mta, postgres_url):
    import concurrent.futures

    avoid_hour_edge()
    mta = scripted_mta()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    path_a, port_a = serve_config(tmp_path / "a", mta.port, postgres_url)
    path_b, port_b = serve_config(tmp_path / "b", mta.port, postgres_url)
    add_customer(open_store(postgres_url))
    assert cli(path_a, "customer", "set-limits", "acme", "--per-hour", "10", "--by", "Jane").returncode == 0
    node_a, node_b = start_serve(path_a), start_serve(path_b)
    try:
        assert [send(port_a) for _ in range(6)] == ["250"] * 6
        on_b = [send(port_b) for _ in range(6)]
        assert on_b[:4] == ["250"] * 4
        assert all(
            r.startswith("451 4.7.1 Hourly sending limit of 10 recipients") and "resets at" in r
            for r in on_b[4:]
        ), on_b
        assert send(port_a).startswith("451 4.7.1 Hourly sending limit of 10")
        assert len(mta.received) == 10
        shown = cli(path_a, "customer", "show", "acme", "--json")
        limits = json.loads(shown.stdout)["limits"]
        assert limits["per_hour"] == 10 and limits["used_hour"] == 10
        # Raced from both nodes at once: the day's limit of 25 holds exactly (15 left).
        assert (
            cli(
                path_a,
                "customer",
                "set-limits",
                "acme",
                "--per-hour",
                "1000",
                "--per-day",
                "25",
                "--by",
                "Jane",
            ).returncode
            == 0
        )
        import time

        time.sleep(5.5)  # the nodes' memory of "over the limit" (quota.OVER_LIMIT_MEMORY)
        with concurrent.futures.ThreadPoolExecutor(12) as pool:
            results = list(pool.map(send, [port_a, port_b] * 15))
        assert results.count("250") == 15, results
        assert all(r.startswith("451 4.7.1 Daily sending limit of 25") for r in results if r != "250")
        assert len(mta.received) == 25
    finally:
        stop(node_a)
        stop(node_b)
    log = (tmp_path / "b" / "gateway.log").read_text()
    assert "event=quota" in log and "customer=acme" in log


def test_quotas_survive_a_restart(tmp_path, scripted_mta):
    avoid_hour_edge()
    import re
    import urllib.request

    mta = scripted_mta()
    http_port = free_port()
    path, port = serve_config(tmp_path, mta.port)
    config = yaml.safe_load(path.read_text())
    config["listeners"].append({"kind": "http", "address": "127.0.0.1", "port": http_port})
    path.write_text(yaml.safe_dump(config))
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"))
    assert cli(path, "customer", "set-limits", "acme", "--per-hour", "3", "--by", "Jane").returncode == 0
    proc = start_serve(path)
    try:
        assert [send(port) for _ in range(3)] == ["250"] * 3
        assert send(port).startswith("451 4.7.1 Hourly sending limit of 3")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
        assert re.search(r'^gateway_quota_refusals_total\{customer_tier="custom"\} 1\.0$', metrics, re.M), (
            metrics
        )
        assert re.search(r'^gateway_customer_state\{state="active"\} 1\.0$', metrics, re.M)
        assert re.search(r'^gateway_customer_state\{state="paused"\} 0\.0$', metrics, re.M)
    finally:
        stop(proc)
    proc = start_serve(path)
    try:
        assert send(port).startswith("451 4.7.1 Hourly sending limit of 3")
        assert cli(path, "customer", "set-limits", "acme", "--per-hour", "4", "--by", "Jane").returncode == 0
        import time

        time.sleep(5.5)
        assert send(port) == "250"
        assert send(port).startswith("451 4.7.1 Hourly sending limit of 4")
    finally:
        stop(proc)
    assert len(mta.received) == 4


def test_sqlite_with_two_workers_shares_the_counts(tmp_path, scripted_mta):
    import concurrent.futures

    avoid_hour_edge()
    mta = scripted_mta()
    path, port = serve_config(tmp_path, mta.port)
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"))
    assert cli(path, "customer", "set-limits", "acme", "--per-hour", "8", "--by", "Jane").returncode == 0
    proc = start_serve(path, workers=2)
    try:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda _: send(port), range(20)))
    finally:
        stop(proc)
    assert results.count("250") == 8, results
    assert len(mta.received) == 8


def test_a_refused_recipient_does_not_count(tmp_path, scripted_mta):
    avoid_hour_edge()
    mta = scripted_mta()
    path, port = serve_config(
        tmp_path, mta.port, policies=[{"name": "customer-active"}, {"name": "role-address"}]
    )
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"))
    assert cli(path, "customer", "set-limits", "acme", "--per-hour", "2", "--by", "Jane").returncode == 0
    proc = start_serve(path)
    try:
        assert send(port, "sales@example.org").startswith("550")
        assert send(port, "sales@example.org").startswith("550")
        assert [send(port) for _ in range(2)] == ["250", "250"]
        assert send(port).startswith("451 4.7.1")
    finally:
        stop(proc)


# -- circuit breaker --------------------------------------------------------------------------


def mail_reply(gw: Any) -> str:
    from tests.integration.test_feedback_e2e import SENDER

    with gw.client() as smtp:
        code, text = smtp.mail(SENDER)
        return f"{code} {text.decode()}"


def test_hard_bounce_burst_pauses_the_customer_until_resumed(gateway, scripted_mta, tmp_path):
    import time

    from gateway.transports.feedback import feedback_ports
    from tests.integration.test_feedback_e2e import (
        BOUNCE_DOMAIN,
        SENDER,
        deliver_feedback,
        message,
        postfix_dsn,
    )
    from tests.integration.test_feedback_e2e import send as send_one

    mta = scripted_mta()
    gw = gateway(
        mta.port,
        listeners=[
            {
                "kind": "submission",
                "address": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(tmp_path / "tls/cert.pem"), "key": str(tmp_path / "tls/key.pem")},
            },
            {"kind": "feedback", "address": "127.0.0.1", "port": 0},
        ],
        bounce_domain=BOUNCE_DOMAIN,
        breaker={"min_messages": 20},
        policies=[{"name": "customer-active"}, {"name": "suppression"}],
    )
    add_customer(gw.store)
    feedback_port = feedback_ports(gw.server)[0]
    sent = [send_one(gw, mta, f"reader{i}@example.org") for i in range(40)]

    def bounce(i: int) -> None:
        verp, relayed = sent[i]
        code, _ = deliver_feedback(
            feedback_port, "", verp, postfix_dsn(verp, f"reader{i}@example.org", relayed)
        )
        assert code == 250

    bounce(0)  # 1 / 40 = 2.5 %: a warning, sending goes on
    assert gw.store.get_customer("acme").status == "active"
    assert gw.store.get_limits(gw.store.get_customer("acme").id).breaker_warning == "bounce"
    # A transaction past MAIL when the pause comes is not cut.
    inflight = gw.client()
    assert inflight.mail(SENDER)[0] == 250
    assert inflight.rcpt("late@example.org")[0] == 250
    bounce(1)  # 2 / 40 = 5 %: paused
    customer = gw.store.get_customer("acme")
    assert customer.status == "paused" and "hard-bounce rate 5.00%" in customer.status_reason
    assert inflight.data(message("late@example.org"))[0] == 250
    inflight.quit()
    assert mta.received[-1][1] == ["late@example.org"]
    deadline = time.monotonic() + 15  # the gateway's customer cache (store.cache_ttl)
    while (reply := mail_reply(gw)).startswith("250") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reply.startswith("451 4.7.1 Sending for account acme is paused"), reply
    c = ["-c", str(gw.config_path)]
    assert run_cli("customer", "resume", "acme", "--by", "Jane", *c).returncode == 2
    assert (
        run_cli(
            "customer", "resume", "acme", "--by", "Jane", "--reason", "list cleaned, bounces suppressed", *c
        ).returncode
        == 0
    )
    deadline = time.monotonic() + 15
    while not (reply := mail_reply(gw)).startswith("250") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert reply.startswith("250"), reply
    entries = json.loads(run_cli("audit", "--customer", "acme", "--json", *c).stdout)
    assert [(e["action"], e["by"]) for e in entries] == [
        ("warning", "breaker"),
        ("pause", "breaker"),
        ("resume", "Jane"),
        ("warning", "Jane"),
    ]
    assert entries[3]["after"] == {"breaker_warning": None}
    assert entries[1]["after"]["status"] == "paused"
    assert entries[2]["reason"] == "list cleaned, bounces suppressed"
    # The window starts at the resume: too few messages since then to pause it again.
    bounce(2)
    assert gw.store.get_customer("acme").status == "active"
    lines = [line for line in gw.log_lines() if line.get("event") == "breaker"]
    assert any(line["action"] == "paused" and line["customer"] == "acme" for line in lines)


# -- probation --------------------------------------------------------------------------------


def test_probation_limits_apply_to_a_new_customer_and_lift_after_graduation(tmp_path, scripted_mta):
    import time

    avoid_hour_edge()
    mta = scripted_mta()
    path, port = serve_config(tmp_path, mta.port, quota={"per_hour": 50, "probation_per_hour": 2})
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"), status="pending")
    activated = cli(path, "customer", "activate", "acme", "--by", "Jane")
    assert activated.returncode == 0 and "probation: until" in activated.stdout
    proc = start_serve(path)
    try:
        assert [send(port) for _ in range(2)] == ["250", "250"]
        assert send(port).startswith("451 4.7.1 Hourly sending limit of 2 recipients")
        shown = json.loads(cli(path, "customer", "show", "acme", "--json").stdout)["limits"]
        assert shown["tier"] == "probation" and shown["per_hour"] == 2
        assert cli(path, "customer", "graduate", "acme", "--by", "Bob").returncode == 0
        again = cli(path, "customer", "graduate", "acme", "--by", "Bob")
        assert again.returncode == 1 and "not on probation" in again.stderr
        time.sleep(5.5)  # the node's memory of "over the limit"
        assert [send(port) for _ in range(3)] == ["250"] * 3
        shown = json.loads(cli(path, "customer", "show", "acme", "--json").stdout)["limits"]
        assert shown["tier"] == "standard" and shown["per_hour"] == 50
        # Support puts it back on probation until a date.
        assert (
            cli(
                path, "customer", "set-limits", "acme", "--probation-until", "2999-01-01", "--by", "Bob"
            ).returncode
            == 0
        )
        shown = json.loads(cli(path, "customer", "show", "acme", "--json").stdout)["limits"]
        assert shown["tier"] == "probation" and "2999-01-01" in shown["probation"]
    finally:
        stop(proc)
    entries = json.loads(cli(path, "audit", "--json").stdout)
    assert ("graduate", "Bob") in [(e["action"], e["by"]) for e in entries]


def test_probation_ends_by_itself_once_served(tmp_path, scripted_mta):
    avoid_hour_edge()
    mta = scripted_mta()
    path, port = serve_config(
        tmp_path,
        mta.port,
        quota={"per_hour": 50, "probation_per_hour": 2, "probation_days": 0, "probation_campaigns": 1},
    )
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"), status="pending")
    assert cli(path, "customer", "activate", "acme", "--by", "Jane").returncode == 0
    proc = start_serve(path)
    try:
        # The first message is sent on probation; once one campaign went out, it graduates.
        assert [send(port) for _ in range(4)] == ["250"] * 4
    finally:
        stop(proc)
    entries = json.loads(cli(path, "audit", "--customer", "acme", "--json").stdout)
    assert ("graduate", "probation") in [(e["action"], e["by"]) for e in entries]


def test_many_refusals_of_the_gateway_warn_about_the_list(tmp_path, scripted_mta):
    import time

    mta = scripted_mta()
    path, port = serve_config(
        tmp_path,
        mta.port,
        breaker={"min_messages": 20, "refusal_warning_rate": 0.5},
        policies=[{"name": "customer-active"}, {"name": "role-address"}],
    )
    add_customer(open_store(f"sqlite:///{tmp_path / 'gateway.db'}"))
    proc = start_serve(path)
    try:
        assert [send(port) for _ in range(3)] == ["250"] * 3
        with tls_client(port) as smtp:
            smtp.mail("news@customer.example")
            for i in range(19):
                assert smtp.rcpt(f"sales+{i}@example.org")[0] == 550
        time.sleep(1)
        store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
        assert store.list_audit() == []  # 19 of 22: not tallied yet
        with tls_client(port) as smtp:
            smtp.mail("news@customer.example")
            assert smtp.rcpt("info@example.org")[0] == 550
        deadline = time.monotonic() + 15
        while not store.list_audit() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(proc)
    [entry] = store.list_audit()
    assert (entry.action, entry.actor) == ("warning", "breaker")
    assert entry.after == {"breaker_warning": "refusal"}
    assert "own-refusal rate 86.96% today (20 of 23 recipients" in entry.reason
    log = (tmp_path / "gateway.log").read_text()
    assert "event=breaker" in log and "rate_kind=refusal" in log
