"""Key rotation as ops do it, against a running gateway: `gateway mailid rotate` (then SIGHUP)
and `gateway consent rotate-token-key` (picked up without a reload). New mail IDs and links are
signed with the new key; those made before keep verifying while the old key is listed, and stop
when its line is removed."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from gateway.core.message import header_values
from gateway.mailid import MailIdCodec
from gateway.store import open_store
from gateway.urltokens import UNSUBSCRIBE, TokenError, TokenSigner, read_key_file
from tests.integration.test_feedback_e2e import (
    BOUNCE_DOMAIN,
    deliver_feedback,
    mail_id_of,
    postfix_dsn,
)
from tests.integration.test_http_support import local_path, send, start, unsubscribe_url_of
from tests.integration.test_operations import run_cli, start_serve, tls_client
from tests.integration.test_relay_core import MESSAGE
from tests.support.gateway import add_customer, base_config, write_config
from tests.support.postfix import free_port

# -- gateway mailid rotate -------------------------------------------------------------------


@pytest.fixture
def served(tmp_path, scripted_mta):
    """`gateway serve` with a submission and a feedback listener; (proc, ports, mta, config)."""
    mta = scripted_mta()
    port, feedback_port = free_port(), free_port()
    config = base_config(
        tmp_path,
        mta.port,
        bounce_domain=BOUNCE_DOMAIN,
        policies=[{"name": "customer-active", "mode": "enforce"}, {"name": "suppression", "mode": "enforce"}],
    )
    config["listeners"][0]["port"] = port
    config["listeners"].append({"kind": "feedback", "address": "127.0.0.1", "port": feedback_port})
    path = write_config(tmp_path, config)
    add_customer(open_store(config["store"]["url"]))
    proc = start_serve(path)
    yield proc, port, feedback_port, mta, path
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def relay_one(port: int, mta, rcpt: str) -> tuple[str, bytes]:
    with tls_client(port) as smtp:
        assert smtp.sendmail("news@customer.example", [rcpt], MESSAGE) == {}
    mail_from, _, data = mta.received[-1]
    return mail_from, data


def decode(path: Path, mail_id: str) -> tuple[int, dict]:
    done = run_cli("mailid", "decode", mail_id, "--json", "-c", str(path))
    return done.returncode, json.loads(done.stdout)


def reload_and_wait(proc, log: Path) -> None:
    before = log.read_text().count("event=reload result=ok")
    proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while log.read_text().count("event=reload result=ok") == before:
        assert time.monotonic() < deadline, "no reload logged"
        time.sleep(0.1)


def feedback_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "event=feedback " in line]


def test_mailid_rotate_signs_new_ids_with_the_new_key_and_old_ids_keep_verifying(served):
    proc, port, feedback_port, mta, path = served
    key_file = path.parent / "mailid.key"
    log = path.parent / "gateway.log"
    old_verp, old_data = relay_one(port, mta, "anna@example.org")
    [old_id] = header_values(old_data, "X-Mailing-ID")
    assert mail_id_of(old_verp) == old_id
    code, info = decode(path, old_id)
    assert (code, info["status"], info["key_id"]) == (0, "genuine", 0)

    done = run_cli("mailid", "rotate", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("added mail ID key 1;")
    assert sorted(read_key_file_ids(key_file)) == [0, 1]
    reload_and_wait(proc, log)

    new_verp, new_data = relay_one(port, mta, "ben@example.org")
    [new_id] = header_values(new_data, "X-Mailing-ID")
    code, info = decode(path, new_id)
    assert (code, info["status"], info["key_id"]) == (0, "genuine", 1)
    # The old ID still verifies, offline and in the running gateway's feedback listener.
    assert decode(path, old_id)[1]["status"] == "genuine"
    for verp, rcpt, data in (
        (old_verp, "anna@example.org", old_data),
        (new_verp, "ben@example.org", new_data),
    ):
        code, _ = deliver_feedback(feedback_port, "", verp, postfix_dsn(verp, rcpt, data))
        assert code == 250
    deadline = time.monotonic() + 10
    while len(feedback_lines(log)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    lines = feedback_lines(log)
    assert len(lines) == 2
    assert all("mail_id_status=genuine" in line for line in lines), lines
    assert f"mail_id={old_id}" in lines[0] and f"mail_id={new_id}" in lines[1]

    # Once key 0's line is removed, IDs it signed are no longer this gateway's.
    key_file.write_text(
        "".join(line for line in key_file.read_text().splitlines(True) if not line.startswith("0 "))
    )
    code, info = decode(path, old_id)
    assert (code, info["status"]) == (1, "forged")
    assert decode(path, new_id)[1]["status"] == "genuine"


def read_key_file_ids(path: Path) -> list[int]:
    return [
        int(line.split()[0])
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_mailid_rotate_without_a_key_file_says_so_and_creates_none(tmp_path):
    # A wrong path must not start a new key set: the gateway would stop knowing its own IDs.
    path = write_config(tmp_path, base_config(tmp_path, 25))
    done = run_cli("mailid", "rotate", "-c", str(path))
    assert done.returncode == 1
    assert done.stderr.strip() == (f"gateway: mail ID key file {tmp_path / 'mailid.key'}: does not exist")
    assert not (tmp_path / "mailid.key").exists()


def test_mailid_rotate_refuses_to_reuse_a_listed_key_id(tmp_path):
    path = write_config(tmp_path, base_config(tmp_path, 25))
    key_file = tmp_path / "mailid.key"
    MailIdCodec.from_key_file(key_file)  # key 0, as the first start makes it
    assert run_cli("mailid", "rotate", "-c", str(path)).returncode == 0  # adds 1
    lines = key_file.read_text().splitlines(True)
    # Key 31 signs now; the next id wraps to 0, which still verifies old IDs.
    key_file.write_text("".join(lines) + lines[-1].replace("1 ", "31 ", 1))
    before = key_file.read_text()
    done = run_cli("mailid", "rotate", "-c", str(path))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        f"gateway: mail ID key file {key_file}: key id 0 is still in use; remove its line first"
    )
    assert key_file.read_text() == before


# -- gateway consent rotate-token-key --------------------------------------------------------


def token_of(url: str) -> str:
    return local_path(url).removeprefix("/u/")


def test_rotate_token_key_signs_new_links_with_the_new_key_and_old_links_keep_working(
    gateway, scripted_mta, tmp_path
):
    gw, mta, http, _ = start(
        gateway,
        scripted_mta,
        tmp_path,
        managed=True,
        policies=[
            {"name": "customer-active", "mode": "enforce"},
            {"name": "suppression", "mode": "enforce"},
            {"name": "unsubscribe", "mode": "enforce"},
        ],
    )
    key_file = tmp_path / "http.key"
    old = token_of(unsubscribe_url_of(send(gw, mta, "anna@example.org")))
    assert TokenSigner(read_key_file(key_file)).verify(old, UNSUBSCRIBE).key_id == 0

    done = run_cli("consent", "rotate-token-key", "-c", str(gw.config_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"key 1 appended to {key_file}")
    # No reload: the running gateway signs the next link with key 1.
    new = token_of(unsubscribe_url_of(send(gw, mta, "ben@example.org")))
    keys = read_key_file(key_file)
    assert sorted(keys) == [0, 1]
    assert TokenSigner(keys).verify(new, UNSUBSCRIBE).key_id == 1
    with pytest.raises(TokenError):
        TokenSigner({0: keys[0]}).verify(new, UNSUBSCRIBE)

    # The link in the mail sent before the rotation still unsubscribes.
    assert http.get(f"/u/{old}").status == 200
    assert http.post_form(f"/u/{old}", "List-Unsubscribe=One-Click").status == 200
    acme = gw.store.get_customer("acme")
    assert gw.store.find_suppression(acme.id, "anna@example.org") is not None
    assert http.get(f"/u/{new}").status == 200

    # Once key 0's line is removed, its links are invalid; key 1's still work.
    key_file.write_text(
        "".join(line for line in key_file.read_text().splitlines(True) if not line.startswith("0 "))
    )
    assert http.get(f"/u/{old}").status == 404
    assert http.post_form(f"/u/{new}", "List-Unsubscribe=One-Click").status == 200
    assert gw.store.find_suppression(acme.id, "ben@example.org") is not None


def test_rotate_token_key_creates_a_missing_key_file(tmp_path):
    config = base_config(
        tmp_path, 25, http={"public_url": "https://gw.esp.example", "token_key_file": str(tmp_path / "t.key")}
    )
    path = write_config(tmp_path, config)
    done = run_cli("consent", "rotate-token-key", "-c", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"created {tmp_path / 't.key'}"
    assert list(read_key_file(tmp_path / "t.key")) == [0]
    assert (tmp_path / "t.key").stat().st_mode & 0o777 == 0o600
