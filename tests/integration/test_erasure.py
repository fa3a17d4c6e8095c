"""Erasure by recipient (GDPR Art. 17) on a running gateway: after `gateway recipient erase`
the address is in no table of the store and no log file, mail to it is still refused at RCPT,
and the double-opt-in evidence is still found by whoever brings the address."""

from __future__ import annotations

import gzip
import sqlite3

from gateway.cli import main as cli
from gateway.logging import parse_logfmt
from tests.integration.test_webhooks import bounce, config_for, send, unsubscribe
from tests.support.gateway import PASSWORD, RunningGateway, add_customer, write_config

ANNA = "anna@example.org"


def dump(db_path) -> str:
    with sqlite3.connect(db_path) as conn:
        return "\n".join(conn.iterdump()).lower()


def start(tmp_path, scripted_mta):
    mta = scripted_mta()
    gw = RunningGateway(write_config(tmp_path, config_for(tmp_path, mta.port)))
    gw.mta = mta
    add_customer(gw.store)
    gw.store.set_unsubscribe("acme", None, managed=True)
    acme = gw.store.get_customer("acme")
    record, _ = gw.store.consent_subscribe(
        acme.id, ANNA, source="https://customer.example/f", at=1_780_000_000.0, ip="203.0.113.7"
    )
    gw.store.consent_confirm(acme.id, ANNA, at=1_780_000_100.0, ip="203.0.113.7")
    return gw


def test_erased_everywhere_still_suppressed_evidence_kept(tmp_path, scripted_mta, capsys):
    gw = start(tmp_path, scripted_mta)
    try:
        verp, data = send(gw, ANNA)
        bounce(gw, verp, ANNA, data)
        _, ben = send(gw, "ben@example.org")
        unsubscribe(gw, ben)
        db = tmp_path / "gateway.db"
        log = tmp_path / "gateway.log"
        (tmp_path / "gateway.log.2.gz").write_bytes(
            gzip.compress(b"ts=x event=relay rcpt=Anna@Example.org result=accepted\n")
        )
        assert ANNA in dump(db) and ANNA in log.read_text()

        code = cli(["-c", str(gw.config_path), "recipient", "erase", ANNA, "--by", "dpo"])
        assert code == 0
        out = capsys.readouterr().out
        assert "still suppressed" in out and "ledger rows: 1" in out

        assert ANNA not in dump(db)
        assert ANNA not in log.read_text().lower()
        assert (
            b"anna@example.org" not in gzip.decompress((tmp_path / "gateway.log.2.gz").read_bytes()).lower()
        )
        # Other recipients' data is untouched.
        assert "ben@example.org" in dump(db) and "ben@example.org" in log.read_text()
        # Still refused, for this customer and another.
        with gw.client() as smtp:
            assert smtp.mail("news@customer.example")[0] == 250
            code, text = smtp.rcpt(ANNA)
        assert code == 550
        # The running gateway keeps logging into the same file, line by line intact.
        send(gw, "carl@example.org")
        lines = [parse_logfmt(line) for line in log.read_text().splitlines() if line]
        assert any(line.get("rcpt") == "carl@example.org" for line in lines)
        # The evidence is found by the address's hash, revoked.
        acme = gw.store.get_customer("acme")
        hashed = gw.store.address_hash(ANNA)
        record = gw.store.read_consent(acme.id, hashed)
        assert record is not None and record.confirmed_ip == "203.0.113.7"
        assert record.revoked_at is not None
    finally:
        gw.stop()


def test_erasure_for_one_customer_leaves_the_others(tmp_path, scripted_mta):
    gw = start(tmp_path, scripted_mta)
    try:
        add_customer(gw.store, "other", domain="other.example")
        other = gw.store.get_customer("other")
        gw.store.add_suppression(other.id, ANNA, "unsubscribe", by="http:one-click")
        send(gw, ANNA)
        assert (
            cli(["-c", str(gw.config_path), "recipient", "erase", ANNA, "--customer", "acme", "--by", "dpo"])
            == 0
        )
        acme = gw.store.get_customer("acme")
        gw.store._cache.clear()  # the CLI is another process: its writes show after cache_ttl
        # acme: refused, and its ledger no longer names her; other: its own entry stays plain.
        assert gw.store.find_suppression(acme.id, ANNA) is not None
        assert gw.store.get_suppression(other.id, ANNA).address == ANNA
        assert all(
            ANNA not in m
            for (m,) in gw.store.execute("SELECT recipients FROM messages WHERE customer_id = ?", (acme.id,))
        )
        assert gw.store.find_suppression(gw.store.get_customer("other").id, "x@example.org") is None
    finally:
        gw.stop()


def test_hot_path_sees_an_erased_global_entry_from_another_process(tmp_path, scripted_mta):
    """The suppression look-up asks for the hash too: an entry that now holds only the hash
    still refuses (also for a customer that never sent to the address)."""
    gw = start(tmp_path, scripted_mta)
    try:
        gw.store.add_suppression(0, "zed@example.org", "hard-bounce", by="feedback:smtp")
        assert cli(["-c", str(gw.config_path), "recipient", "erase", "zed@example.org", "--by", "dpo"]) == 0
        gw.store._cache.clear()
        with gw.client(login=("acme", PASSWORD)) as smtp:
            assert smtp.mail("news@customer.example")[0] == 250
            assert smtp.rcpt("Zed@Example.org")[0] == 550
    finally:
        gw.stop()
