"""Two gateway nodes on one real PostgreSQL, the way DESIGN §10 scales out: two `gateway serve`
processes (two workers each) with their own ports and the same store URL, sharing the mail ID
key file as a deployment copies it to every node.

Master data made with one node's CLI is used by the other for a real submission; a hard bounce
taken in by one node's feedback listener makes the other refuse the recipient; PostgreSQL
stopped under the running nodes turns submissions into 4xx (never 250), and once it is back
they are accepted again without restarting the gateway."""

from __future__ import annotations

import base64
import json
import shutil
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.mailid import MailIdCodec
from tests.integration.test_feedback_e2e import deliver_feedback, postfix_dsn
from tests.integration.test_operations import run_cli, start_serve
from tests.integration.test_workers import accepted_total, children
from tests.support.gateway import base_config, write_config
from tests.support.postfix import free_port
from tests.support.postgres import PostgresServer

BOUNCE_DOMAIN = "bounces.esp.example"
PASSWORD = "a long enough password for shop"
SENDER = "news@acme.example"
COMPLIANT = Path(__file__).resolve().parents[1] / "fixtures" / "cli" / "compliant.eml"
POLICIES = [
    {"name": name, "mode": "enforce"}
    for name in ("customer-active", "suppression", "sender-identity", "campaign-confirmed", "imprint")
]
CACHE_TTL = 1.0  # store.cache_ttl: another node's writes show after at most this long


@dataclass
class Node:
    name: str
    config: Path
    proc: Any
    smtp_port: int
    http_port: int
    feedback_port: int

    def cli(self, *args: str, stdin: str | None = None) -> Any:
        done = run_cli(*args, "-c", str(self.config), stdin=stdin)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    def pids(self) -> tuple[int, list[int]]:
        return self.proc.pid, sorted(children(self.proc.pid))

    def http(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def log(self) -> str:
        return (self.config.parent / "gateway.log").read_text()


def compliant(rcpt: str) -> bytes:
    return (
        COMPLIANT.read_bytes()
        .replace(b"anna@example.org", rcpt.encode())
        .replace(b"\n", b"\r\n")
        .replace(b"\r\r\n", b"\r\n")
    )


@contextmanager
def session(node: Node) -> Iterator[tuple[smtplib.SMTP, int, bytes]]:
    """An SMTP session as a sending engine opens it: STARTTLS, then AUTH PLAIN as shop;
    yields (smtp, AUTH reply code, text)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", node.smtp_port, timeout=60) as smtp:
        smtp.ehlo("engine.test")
        smtp.starttls(context=context)
        smtp.ehlo("engine.test")
        token = base64.b64encode(f"\0shop\0{PASSWORD}".encode()).decode()
        yield (smtp, *smtp.docmd("AUTH", f"PLAIN {token}"))


def submit(node: Node, rcpt: str) -> tuple[str, int, bytes]:
    """One submission: (stage, code, text) of the first reply that is not a success, or
    ("data", 250, ...) when the message was taken."""
    with session(node) as (smtp, code, text):
        if code != 235:
            return "auth", code, text
        for stage, (code, text) in (("mail", smtp.mail(SENDER)), ("rcpt", smtp.rcpt(rcpt))):
            if code != 250:
                return stage, code, text
        try:
            code, text = smtp.data(compliant(rcpt))
        except smtplib.SMTPDataError as err:
            return "data", err.smtp_code, err.smtp_error
        return "data", code, text


def rcpt_reply(node: Node, rcpt: str) -> tuple[int, bytes]:
    """The reply to RCPT TO (nothing is sent: the transaction is reset)."""
    with session(node) as (smtp, code, text):
        assert code == 235, text
        assert smtp.mail(SENDER)[0] == 250
        reply = smtp.rcpt(rcpt)
        smtp.rset()
        return reply


@pytest.fixture
def cluster(tmp_path: Path, scripted_mta: Any) -> Iterator[tuple[PostgresServer, Any, list[Node]]]:
    # A private cluster: this test stops and restarts it under the running nodes.
    pg = PostgresServer().start()
    nodes: list[Node] = []
    try:
        url = pg.create_database("gateway_nodes")
        mta = scripted_mta()
        # One mail ID key for the whole platform: a bounce may come back to any node.
        shared_key = tmp_path / "mailid.key"
        MailIdCodec.from_key_file(shared_key)
        for name in ("a", "b"):
            home = tmp_path / name
            home.mkdir()
            shutil.copy2(shared_key, home / "mailid.key")
            for attempt in range(3):
                # A port found free can be taken before the node binds it (an outgoing
                # connection of another test gets it as its local port): then new ports.
                smtp_port, http_port, feedback_port = free_port(), free_port(), free_port()
                config = base_config(
                    home,
                    mta.port,
                    store={"url": url, "cache_ttl": CACHE_TTL},
                    bounce_domain=BOUNCE_DOMAIN,
                    policies=POLICIES,
                    limits={"auth_failure_delay": 0.0, "shutdown_grace": 5},
                )
                config["listeners"][0]["port"] = smtp_port
                config["listeners"] += [
                    {"kind": "http", "address": "127.0.0.1", "port": http_port},
                    {"kind": "feedback", "address": "127.0.0.1", "port": feedback_port},
                ]
                path = write_config(home, config)
                try:
                    proc = start_serve(path, workers=2)
                except AssertionError as exc:
                    if "Address already in use" not in str(exc) or attempt == 2:
                        raise
                    continue
                break
            nodes.append(Node(name, path, proc, smtp_port, http_port, feedback_port))
        for node in nodes:
            deadline = time.monotonic() + 60
            while len(children(node.proc.pid)) < 2:
                assert time.monotonic() < deadline, f"node {node.name}: workers did not start"
                time.sleep(0.1)
        yield pg, mta, nodes
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                node.proc.terminate()
                try:
                    node.proc.wait(30)
                except Exception:  # noqa: BLE001 - kill what did not stop
                    node.proc.kill()
                    node.proc.wait()
        pg.stop()


def register_shop(node: Node, tmp_path: Path) -> None:
    """README "Registering a customer", step by step, with this node's CLI."""
    imprint = tmp_path / "imprint.yaml"
    imprint.write_text(
        "company: Acme GmbH\nstreet: Hauptstrasse 1\npostcode: '10115'\n"
        "city: Berlin\nemail: info@acme.example\n"
    )
    node.cli("customer", "add", "shop")
    node.cli("customer", "set-password", "shop", "--by", "support", stdin=PASSWORD + "\n")
    node.cli("customer", "set-imprint", "shop", "--from-file", str(imprint))
    node.cli("domain", "add", "shop", "acme.example")
    node.cli("domain", "verify", "shop", "acme.example", "--force", "--by", "support")
    node.cli("campaign", "confirm", "shop", "spring-2026", "--by", "Jane Doe")
    node.cli("customer", "activate", "shop", "--by", "support")


def test_two_nodes_share_master_data_suppressions_and_survive_the_store_going_away(
    cluster: tuple[PostgresServer, Any, list[Node]], tmp_path: Path
) -> None:
    pg, mta, (a, b) = cluster

    # -- master data made on node A, used by node B -------------------------------------------
    register_shop(a, tmp_path)
    shown = json.loads(b.cli("customer", "show", "shop", "--json").stdout)
    assert shown["status"] == "active"
    assert submit(b, "anna@example.org")[:2] == ("data", 250)
    assert submit(a, "ben@example.org")[:2] == ("data", 250)
    assert [(m[1], m[0].split("@")[1]) for m in mta.received] == [
        (["anna@example.org"], BOUNCE_DOMAIN),
        (["ben@example.org"], BOUNCE_DOMAIN),
    ]

    # -- a hard bounce taken in on node A; node B refuses the recipient ------------------------
    verp, _, relayed = mta.received[0]
    mail_id = verp.split("@")[0].removeprefix("m-")
    code, text = deliver_feedback(a.feedback_port, "", verp, postfix_dsn(verp, "anna@example.org", relayed))
    assert code == 250, text
    feedback = [line for line in a.log().splitlines() if "event=feedback " in line]
    assert len(feedback) == 1 and "mail_id_status=genuine" in feedback[0], feedback
    assert f"mail_id={mail_id}" in feedback[0]
    deadline = time.monotonic() + 30  # node B's cache of the old answer expires in CACHE_TTL
    while (reply := rcpt_reply(b, "anna@example.org"))[0] == 250:
        assert time.monotonic() < deadline, "node B still accepts the bounced recipient"
        time.sleep(0.2)
    assert reply[0] == 550 and b"anna@example.org previously hard-bounced" in reply[1], reply
    assert rcpt_reply(b, "ben@example.org")[0] == 250
    assert submit(a, "anna@example.org")[:3] == ("rcpt", 550, reply[1])

    # -- the store goes away under the running nodes ------------------------------------------
    pids = [node.pids() for node in (a, b)]
    relayed_before = len(mta.received)
    pg.stop_server()
    for node in (a, b, a, b):
        stage, code, text = submit(node, "carla@example.org")
        assert 400 <= code < 500, (node.name, stage, code, text)
    status, body = b.http("/healthz")
    assert status == 503 and json.loads(body)["checks"]["store"].startswith("fail")
    assert len(mta.received) == relayed_before  # nothing was relayed while it was down

    # -- and comes back: the same processes accept mail again, from the first attempt on ------
    # (a connection that died with the old server is replaced, not reported as a 4xx once per
    # thread that held one)
    pg.restart()
    for node in (a, b, a, b, a, b):
        assert submit(node, "carla@example.org")[:2] == ("data", 250), node.name
    assert len(mta.received) == relayed_before + 6
    status, body = b.http("/healthz")
    assert status == 200, body
    assert [node.pids() for node in (a, b)] == pids  # no process was restarted
    # Each node counted what it accepted (summed over its two workers): one before the
    # outage and three after it.
    assert [accepted_total(node.http_port) for node in (a, b)] == [4, 4]
