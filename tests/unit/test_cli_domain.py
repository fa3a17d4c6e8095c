"""`gateway domain add | verify | list` and gateway/dnsverify.py, against a fake resolver and a
real DNS server on 127.0.0.1 (dnspython answering over UDP in a thread)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.rrset
import pytest

from gateway import dnsverify
from gateway.cli import main
from gateway.store import open_store
from tests.support.commands import INSTALLED_GATEWAY
from tests.support.dnsstub import DnsStub

GATEWAY = INSTALLED_GATEWAY


def write_config(tmp_path: Path) -> Path:
    (tmp_path / "dkim").mkdir(exist_ok=True)
    path = tmp_path / "config.yaml"
    path.write_text(
        f'store: {{url: "sqlite:///{tmp_path}/g.db"}}\n'
        f"mail_id: {{key_file: {tmp_path}/mailid.key}}\n"
        f"dkim: {{keys_dir: {tmp_path}/dkim, missing_key: unsigned}}\n"
        "policies:\n"
        "  - {name: customer-active, mode: enforce}\n"
    )
    return path


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(dnsverify.ENV_SERVER, raising=False)
    monkeypatch.delenv(dnsverify.ENV_TIMEOUT, raising=False)
    path = write_config(tmp_path)
    store = open_store(f"sqlite:///{tmp_path}/g.db")
    store.add_customer("acme", status="active")
    store.add_customer("other")
    store.close()
    return path


def store_of(cfg: Path):
    return open_store(f"sqlite:///{cfg.parent}/g.db")


def token_of(cfg: Path, customer: str, domain: str) -> str:
    store = store_of(cfg)
    found = store.get_domain(store.require_customer(customer).id, domain)
    assert found is not None
    return found.token


# -- fakes ------------------------------------------------------------------------------------
class FakeTxt:
    def __init__(self, *strings: bytes) -> None:
        self.strings = strings


class FakeResolver:
    """`.resolve(name, "TXT")` over a dict; a value that is an exception class is raised."""

    def __init__(self, records: dict[str, object]) -> None:
        self.records = records
        self.asked: list[tuple[str, str]] = []

    def resolve(self, name: str, rdtype: str):
        self.asked.append((name, rdtype))
        value = self.records.get(name.rstrip(".").lower(), dns.resolver.NXDOMAIN)
        if isinstance(value, type) and issubclass(value, BaseException):
            raise value()
        return value


# -- gateway/dnsverify.py -----------------------------------------------------------------------
def test_record_format() -> None:
    assert dnsverify.record_name("News.Example.COM.") == "_gateway-verify.news.example.com"
    assert dnsverify.zone_line("example.com", "ab12") == (
        '_gateway-verify.example.com. IN TXT "esp-gateway-verification=ab12"'
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Example.COM.", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
    ],
)
def test_normalize_domain(text: str, expected: str) -> None:
    assert dnsverify.normalize_domain(text) == expected


@pytest.mark.parametrize(
    "text", ["", "localhost", "exa mple.com", "-a.example", "192.0.2.1", "a..example", "x" * 64 + ".example"]
)
def test_normalize_domain_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        dnsverify.normalize_domain(text)


def test_verify_token_ok_and_split_strings() -> None:
    name = "_gateway-verify.example.com"
    resolver = FakeResolver(
        {name: [FakeTxt(b"v=spf1 -all"), FakeTxt(b"esp-gateway-verification=", b"abc123")]}
    )
    ok, message = dnsverify.verify_domain_token("example.com", "abc123", resolver)
    assert ok, message
    assert resolver.asked == [(name, "TXT")]


@pytest.mark.parametrize(
    "records, expected",
    [
        ({}, "NXDOMAIN"),
        ({"_gateway-verify.example.com": dns.resolver.NoAnswer}, "has no TXT record"),
        ({"_gateway-verify.example.com": dns.resolver.LifetimeTimeout}, "DNS timeout"),
        ({"_gateway-verify.example.com": dns.resolver.NoNameservers}, "SERVFAIL"),
        ({"_gateway-verify.example.com": [FakeTxt(b"esp-gateway-verification=feed")]}, "wrong token"),
        ({"_gateway-verify.example.com": [FakeTxt(b"something else")]}, "no verification token"),
    ],
)
def test_verify_token_failures(records: dict[str, object], expected: str) -> None:
    ok, message = dnsverify.verify_domain_token("example.com", "abc123", FakeResolver(records))
    assert not ok
    assert expected in message
    if expected in ("NXDOMAIN", "has no TXT record", "no verification token"):
        assert '"esp-gateway-verification=abc123"' in message  # says what to publish


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("127.0.0.1", ("127.0.0.1", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[::1]:5353", ("::1", 5353)),
        ("::1", ("::1", 53)),
    ],
)
def test_parse_server(spec: str, expected: tuple[str, int]) -> None:
    assert dnsverify.parse_server(spec) == expected


@pytest.mark.parametrize("spec", ["dns.example:53", "127.0.0.1:0", "127.0.0.1:x", "[::1"])
def test_parse_server_refuses(spec: str) -> None:
    with pytest.raises(dnsverify.DnsConfigError):
        dnsverify.parse_server(spec)


def test_resolver_from_env() -> None:
    assert dnsverify.resolver_from_env({}) is None
    resolver = dnsverify.resolver_from_env(
        {"GATEWAY_DNS_SERVER": "127.0.0.1:5353", "GATEWAY_DNS_TIMEOUT": "1.5"}
    )
    assert resolver is not None
    assert resolver.nameservers == ["127.0.0.1"] and resolver.port == 5353
    assert resolver.lifetime == 1.5


def test_verify_token_against_real_dns_server() -> None:
    with DnsStub({"_gateway-verify.example.com": ["esp-gateway-verification=abc123"]}) as server:
        resolver = dnsverify.resolver_from_env({"GATEWAY_DNS_SERVER": server.address})
        assert dnsverify.verify_domain_token("example.com", "abc123", resolver)[0]
        ok, message = dnsverify.verify_domain_token("example.com", "zzz", resolver)
        assert not ok and "wrong token" in message
        ok, message = dnsverify.verify_domain_token("nowhere.example", "abc123", resolver)
        assert not ok and "NXDOMAIN" in message


# -- gateway domain add -------------------------------------------------------------------------
def test_add_prints_record(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(cfg), "domain", "add", "acme", "News.Acme.Example."]) == 0
    out = capsys.readouterr().out
    token = token_of(cfg, "acme", "news.acme.example")
    assert re.fullmatch(r"[0-9a-f]{32}", token)
    assert f'_gateway-verify.news.acme.example. IN TXT "esp-gateway-verification={token}"' in out
    assert "gateway domain verify acme news.acme.example" in out
    # Adding again keeps the token (the customer may have published it already).
    assert main(["domain", "add", "acme", "news.acme.example", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and token in out
    assert token_of(cfg, "acme", "news.acme.example") == token


def test_add_errors(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(cfg), "domain", "add", "nobody", "acme.example"]) == 1
    assert "no customer named 'nobody'" in capsys.readouterr().err
    assert main(["-c", str(cfg), "domain", "add", "acme", "not a domain"]) == 1
    assert "not a valid domain name" in capsys.readouterr().err


def test_add_notes_other_customer(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["-c", str(cfg), "domain", "add", "other", "acme.example"])
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    assert "also registered for: other" in capsys.readouterr().out
    assert token_of(cfg, "acme", "acme.example") != token_of(cfg, "other", "acme.example")


# -- gateway domain verify ------------------------------------------------------------------------
def test_verify_with_fake_resolver(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    token = token_of(cfg, "acme", "acme.example")
    resolver = FakeResolver(
        {"_gateway-verify.acme.example": [FakeTxt(f"esp-gateway-verification={token}".encode())]}
    )
    monkeypatch.setattr(dnsverify, "default_resolver", lambda: resolver)
    capsys.readouterr()
    assert main(["domain", "verify", "acme", "acme.example", "-c", str(cfg)]) == 0
    assert "verified" in capsys.readouterr().out
    store = store_of(cfg)
    acme = store.require_customer("acme")
    assert store.verified_domains(acme.id) == {"acme.example"}
    assert store.get_domain(acme.id, "acme.example").verified_by == "dns"


@pytest.mark.parametrize(
    "records, expected",
    [
        ({}, "NXDOMAIN"),
        ({"_gateway-verify.acme.example": dns.resolver.NoAnswer}, "has no TXT record"),
        ({"_gateway-verify.acme.example": [FakeTxt(b"esp-gateway-verification=0000")]}, "wrong token"),
        ({"_gateway-verify.acme.example": dns.resolver.LifetimeTimeout}, "DNS timeout"),
    ],
)
def test_verify_failures_leave_domain_unverified(
    cfg: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    records: dict[str, object],
    expected: str,
) -> None:
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    monkeypatch.setattr(dnsverify, "default_resolver", lambda: FakeResolver(records))
    assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example"]) == 1
    err = capsys.readouterr().err
    assert "not verified" in err and expected in err
    store = store_of(cfg)
    assert store.verified_domains(store.require_customer("acme").id) == set()


def test_verify_errors(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(cfg), "domain", "verify", "nobody", "acme.example"]) == 1
    assert "no customer named 'nobody'" in capsys.readouterr().err
    assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example"]) == 1
    assert "not registered for customer acme" in capsys.readouterr().err
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example", "--force"]) == 1
    assert "--force needs --by" in capsys.readouterr().err


def test_verify_force(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example", "--force", "--by", "jane"]) == 0
    assert "by hand" in capsys.readouterr().out
    store = store_of(cfg)
    record = store.get_domain(store.require_customer("acme").id, "acme.example")
    assert record.verified_by == "force:jane" and record.verified_at is not None
    assert main(["-c", str(cfg), "domain", "list", "acme"]) == 0
    out = capsys.readouterr().out
    assert "verified" in out and "force:jane" in out


def test_verify_against_local_dns_server(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    main(["-c", str(cfg), "domain", "add", "acme", "silent.example"])
    main(["-c", str(cfg), "domain", "add", "acme", "gone.example"])
    token = token_of(cfg, "acme", "acme.example")
    records = {"_gateway-verify.acme.example": [f"esp-gateway-verification={token}"]}
    with DnsStub(records, silent=("_gateway-verify.silent.example",)) as server:
        monkeypatch.setenv("GATEWAY_DNS_SERVER", server.address)
        monkeypatch.setenv("GATEWAY_DNS_TIMEOUT", "0.5")
        capsys.readouterr()
        assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example"]) == 0
        assert "_gateway-verify.acme.example" in server.queries
        assert main(["-c", str(cfg), "domain", "verify", "acme", "gone.example"]) == 1
        assert "NXDOMAIN" in capsys.readouterr().err
        assert main(["-c", str(cfg), "domain", "verify", "acme", "silent.example"]) == 1
        assert "DNS timeout" in capsys.readouterr().err
    store = store_of(cfg)
    assert store.verified_domains(store.require_customer("acme").id) == {"acme.example"}


def test_bad_dns_server_setting(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    main(["-c", str(cfg), "domain", "add", "acme", "acme.example"])
    monkeypatch.setenv("GATEWAY_DNS_SERVER", "dns.example")
    assert main(["-c", str(cfg), "domain", "verify", "acme", "acme.example"]) == 1
    assert "GATEWAY_DNS_SERVER" in capsys.readouterr().err


def test_verify_subprocess_against_local_dns_server(cfg: Path) -> None:
    env = {**os.environ, "GATEWAY_DNS_TIMEOUT": "2"}
    env.pop("GATEWAY_DNS_SERVER", None)
    add = subprocess.run(
        [GATEWAY, "domain", "add", "acme", "acme.example", "-c", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert add.returncode == 0, add.stderr
    match = re.search(r'IN TXT "(esp-gateway-verification=[0-9a-f]{32})"', add.stdout)
    assert match, add.stdout
    with DnsStub({"_gateway-verify.acme.example": [match.group(1)]}) as server:
        env["GATEWAY_DNS_SERVER"] = server.address
        done = subprocess.run(
            [GATEWAY, "-c", str(cfg), "domain", "verify", "acme", "acme.example"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    assert "acme.example of customer acme verified" in done.stdout


# -- gateway domain list --------------------------------------------------------------------------
def test_list(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(cfg), "domain", "list"]) == 0
    assert "no domains" in capsys.readouterr().out
    main(["-c", str(cfg), "domain", "add", "acme", "b.example"])
    main(["-c", str(cfg), "domain", "add", "acme", "a.example"])
    main(["-c", str(cfg), "domain", "add", "other", "other.example"])
    main(["-c", str(cfg), "domain", "verify", "acme", "a.example", "--force", "--by", "jane"])
    capsys.readouterr()
    assert main(["-c", str(cfg), "domain", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CUSTOMER", "DOMAIN", "STATUS", "VERIFIED", "BY"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["acme", "a.example", "verified"],
        ["acme", "b.example", "pending"],
        ["other", "other.example", "pending"],
    ]
    assert main(["domain", "list", "acme", "--json", "-c", str(cfg)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["domain"] for r in rows] == ["a.example", "b.example"]
    assert rows[0]["verified_by"] == "force:jane" and rows[0]["record"] is None
    assert rows[1]["status"] == "pending" and "esp-gateway-verification=" in rows[1]["record"]
    assert main(["-c", str(cfg), "domain", "list", "nobody"]) == 1
    assert "no customer named 'nobody'" in capsys.readouterr().err
