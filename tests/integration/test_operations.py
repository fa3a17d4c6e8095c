"""Operations: `gateway serve` as a process (SIGTERM, SIGHUP), check-config, the customer CLI."""

from __future__ import annotations

import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from gateway.store import open_store
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import PASSWORD, add_customer, base_config, write_config
from tests.support.postfix import free_port

GATEWAY = [sys.executable, "-m", "gateway"]


def run_cli(*args: str, stdin: str | None = None, cwd: Path | None = None):
    return subprocess.run([*GATEWAY, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd)


def _die_with_parent() -> None:
    # A gateway started by a test must not outlive a pytest that was killed.
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def start_serve(config_path: Path, workers: int = 1) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [*GATEWAY, "serve", "-c", str(config_path), "--workers", str(workers)],
        preexec_fn=_die_with_parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    port = yaml.safe_load(config_path.read_text())["listeners"][0]["port"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=2).quit()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"serve exited: {proc.stderr.read()}") from None
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("serve did not start listening")


def tls_client(port: int) -> smtplib.SMTP:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
    smtp.starttls(context=context)
    smtp.login("acme", PASSWORD)
    return smtp


@pytest.fixture
def served(tmp_path, scripted_mta):
    mta = scripted_mta()
    port = free_port()
    config = base_config(tmp_path, mta.port, limits={"shutdown_grace": 10, "auth_failure_delay": 0})
    config["listeners"][0]["port"] = port
    path = write_config(tmp_path, config)
    add_customer(open_store(config["store"]["url"]))
    proc = start_serve(path)
    yield proc, port, mta, path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_sigterm_during_a_transaction_lets_it_complete(served):
    proc, port, mta, _ = served
    smtp = tls_client(port)
    assert smtp.mail("news@customer.example")[0] == 250
    assert smtp.rcpt("anna@example.org")[0] == 250
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # New connections are no longer accepted ...
    with pytest.raises(OSError):
        smtplib.SMTP("127.0.0.1", port, timeout=2)
    # ... but the transaction under way finishes and is relayed.
    code, _ = smtp.data(MESSAGE)
    assert code == 250
    assert proc.wait(20) == 0
    assert len(mta.received) == 1


def test_sighup_reloads_config_without_dropping_connections(served):
    proc, port, mta, path = served
    smtp = tls_client(port)
    config = yaml.safe_load(path.read_text())
    config["limits"]["max_recipients"] = 2
    path.write_text(yaml.safe_dump(config))
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    log = Path(config["logging"]["file"])
    while "event=reload" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "event=reload result=ok" in log.read_text()
    # The connection opened before the reload still works, and sees the new limit.
    assert smtp.mail("news@customer.example")[0] == 250
    assert smtp.rcpt("anna@example.org")[0] == 250
    assert smtp.rcpt("ben@example.org")[0] == 250
    assert smtp.data(MESSAGE)[0] == 250
    smtp.quit()
    assert mta.received[0][1] == ["anna@example.org", "ben@example.org"]


def test_sighup_with_a_broken_config_keeps_running(served):
    proc, port, mta, path = served
    path.write_text(path.read_text() + "\nbogus_key: 1\n")
    proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert proc.poll() is None
    smtp = tls_client(port)
    assert smtp.sendmail("news@customer.example", ["anna@example.org"], MESSAGE) == {}


# -- check-config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "patch,expected",
    [
        ({"listners": []}, "listners: unknown key"),
        ({"limits": {"max_recipients": "many"}}, "limits.max_recipients"),
        ({"downstream": {"starttls": "sometimes"}}, "downstream.starttls"),
        (
            {"downstream": {"host": "h", "auth": {"username": "u", "password_file": "/nonexistent/pw"}}},
            "downstream.auth.password_file: file not found",
        ),
        ({"policies": [{"name": "no-such-policy"}]}, "unknown policy 'no-such-policy'"),
        (
            {"listeners": [{"kind": "submission", "address": "0.0.0.0", "port": 25, "trusted_local": True}]},
            "only allowed on a loopback address",
        ),
    ],
)
def test_check_config_reports_the_key_path(tmp_path, patch, expected):
    config = base_config(tmp_path, 25)
    config.update(patch)
    path = write_config(tmp_path, config)
    result = run_cli("check-config", "-c", str(path))
    assert result.returncode == 1
    assert expected in result.stdout + result.stderr


def test_check_config_accepts_the_shipped_example():
    root = Path(__file__).resolve().parents[2]
    result = run_cli("-c", str(root / "config.yaml"), "check-config")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_serve_with_a_missing_config_says_so(tmp_path):
    result = run_cli("serve", "-c", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "config file not found" in result.stderr


# -- customer CLI ------------------------------------------------------------------------------


def test_customer_lifecycle_through_the_cli(tmp_path):
    path = write_config(tmp_path, base_config(tmp_path, 25))
    c = ["-c", str(path)]
    assert run_cli("customer", "add", "acme", *c).returncode == 0
    dup = run_cli("customer", "add", "acme", *c)
    assert dup.returncode == 1 and "exists already" in dup.stderr
    # -c after the subcommand and before it both work; the password comes from stdin.
    assert (
        run_cli(
            *c, "customer", "set-password", "acme", "--by", "Jane", stdin="a long enough password\n"
        ).returncode
        == 0
    )
    short = run_cli("customer", "set-password", "acme", "--by", "Jane", *c, stdin="short\n")
    assert short.returncode == 1 and "at least 12" in short.stderr
    listed = run_cli("customer", "list", *c).stdout
    assert "acme" in listed and "pending" in listed
    assert run_cli("customer", "activate", "acme", "--by", "Jane", *c).returncode == 0
    shown = run_cli("customer", "show", "acme", *c).stdout
    assert "active" in shown and "a long enough password" not in shown
    assert (
        run_cli("customer", "suspend", "acme", "--reason", "complaints", "--by", "Jane", *c).returncode == 0
    )
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    customer = store.get_customer("acme")
    assert customer.status == "suspended" and customer.status_reason == "complaints"
    assert customer.password_hash.startswith("scrypt$")
    missing = run_cli("customer", "activate", "nobody", "--by", "Jane", *c)
    assert missing.returncode == 1 and "no customer named 'nobody'" in missing.stderr


def test_set_imprint_from_file_and_flags(tmp_path):
    path = write_config(tmp_path, base_config(tmp_path, 25))
    c = ["-c", str(path)]
    run_cli("customer", "add", "acme", *c)
    imprint = tmp_path / "imprint.yaml"
    imprint.write_text(
        "company: Shop GmbH\nlegal_form: GmbH\nstreet: Hauptstraße 5\n"
        "postcode: '10115'\ncity: Berlin\nemail: info@customer.example\n"
    )
    assert (
        run_cli(
            "customer", "set-imprint", "acme", "--from-file", str(imprint), "--phone", "+49 30 123", *c
        ).returncode
        == 0
    )
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}")
    assert store.get_customer("acme").imprint["street"] == "Hauptstraße 5"
    assert store.get_customer("acme").imprint["phone"] == "+49 30 123"
    imprint.write_text("company: X\nshoe_size: 44\n")
    bad = run_cli("customer", "set-imprint", "acme", "--from-file", str(imprint), *c)
    assert bad.returncode == 1 and "shoe_size" in bad.stderr


def test_first_run_then_swaks_lands_the_demo_mail_in_the_outbox(tmp_path):
    """The README's first run: example config, demo customer, swaks --tls --auth, var/outbox."""
    root = Path(__file__).resolve().parents[2]
    config = yaml.safe_load((root / "config.yaml").read_text())
    for listener in config["listeners"]:
        listener["port"] = free_port()
    port = config["listeners"][0]["port"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    # As the README runs it: the default worker count (2 here), capture MTA in every worker.
    proc = start_serve(path, workers=2)
    try:
        deadline = time.monotonic() + 10
        while not (tmp_path / "var/demo-message.eml").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "var/tls/cert.pem").exists()
        assert oct((tmp_path / "var/tls/key.pem").stat().st_mode & 0o777) == "0o600"
        # The password is printed once on stderr; read it while the server runs.
        password = None
        while password is None:
            line = proc.stderr.readline()
            assert line, "serve ended before printing the demo password"
            if "SMTP password" in line:
                password = line.split(": ", 1)[1].strip()
        swaks = subprocess.run(
            [
                "swaks",
                "--server",
                f"127.0.0.1:{port}",
                "--tls",
                "--auth",
                "LOGIN",
                "--auth-user",
                "demo",
                "--auth-password",
                password,
                "--from",
                "news@demo.example",
                "--to",
                "reader@example.org",
                "--data",
                str(tmp_path / "var/demo-message.eml"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert swaks.returncode == 0, swaks.stdout[-2000:]
        assert "250 2.0.0 Ok: queued as CAPTURE" in swaks.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    outbox = list((tmp_path / "var/outbox/new").iterdir())
    assert len(outbox) == 1
    delivered = outbox[0].read_bytes()
    # The example config sets a bounce domain: the envelope sender is the VERP address.
    assert re.match(
        rb"Return-Path: <m-[a-z2-7]{48}@bounces\.esp\.example>\r\n"
        rb"Delivered-To: reader@example\.org\r\n",
        delivered,
    )
    assert b"DKIM-Signature: v=1; a=rsa-sha256" in delivered and b"X-Mailing-ID: " in delivered
    assert password not in (tmp_path / "var/log/gateway.log").read_text()
    # A second start creates no second customer and prints no password.
    proc = start_serve(path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert "SMTP password" not in err
