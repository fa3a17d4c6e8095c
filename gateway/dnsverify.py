"""Sending-domain verification by a DNS TXT token (RULES.md "Sender not disguised").

`gateway domain add CUSTOMER DOMAIN` draws a random token (``secrets.token_hex(16)``) and asks the
customer to publish it; `gateway domain verify CUSTOMER DOMAIN` looks it up. The record is::

    _gateway-verify.<domain>. IN TXT "esp-gateway-verification=<token>"

* A dedicated ``_gateway-verify`` label, not the domain apex: the apex TXT set is crowded (SPF,
  other vendors' tokens) and some DNS hosts cannot add a TXT record next to a CNAME at the apex.
  An underscore label can hold no host, so the record cannot collide with a real name.
* The value carries a ``esp-gateway-verification=`` prefix so it says what it is to whoever
  reads the zone later, and so a TXT record meant for something else never matches by accident.
* The token is per customer AND domain: two customers claiming one domain need two records, and
  the one that can publish in the zone is the one that gets it verified.
* A TXT record may be split into several strings (255-octet limit per string); they are joined
  before comparing, as RFC 7208 does for SPF. Whitespace around the value and the case of the
  prefix are ignored; the token is compared exactly (it is lower-case hex).

Resolver: anything with ``.resolve(name, "TXT")`` returning an iterable of TXT rdata (dnspython's
``dns.resolver.Resolver``; tests pass their own). Without one, `default_resolver()` is used: the
system resolver, or, when the environment names one, a specific DNS server:

* ``GATEWAY_DNS_SERVER=127.0.0.1:5353`` (``HOST``, ``HOST:PORT``, ``[IPv6]:PORT``): ask only that
  server (``dns.resolver.Resolver(configure=False)``), e.g. a local test server or the ESP's
  own recursive resolver;
* ``GATEWAY_DNS_TIMEOUT=5``: seconds for the whole look-up (default 5).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import dns.exception
import dns.resolver

RECORD_LABEL = "_gateway-verify"
VALUE_PREFIX = "esp-gateway-verification="
ENV_SERVER = "GATEWAY_DNS_SERVER"
ENV_TIMEOUT = "GATEWAY_DNS_TIMEOUT"
DEFAULT_TIMEOUT = 5.0

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class DnsConfigError(ValueError):
    """GATEWAY_DNS_SERVER / GATEWAY_DNS_TIMEOUT cannot be used."""


def normalize_domain(domain: str) -> str:
    """Lower-case ASCII (IDNA) form without the trailing dot; ValueError if not a domain name."""
    name = domain.strip().rstrip(".").lower()
    if not name:
        raise ValueError("empty domain name")
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{domain!r} is not a valid domain name") from None
    labels = ascii_name.split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(_LABEL.match(x) for x in labels):
        raise ValueError(f"{domain!r} is not a valid domain name (expected e.g. news.example.com)")
    if labels[-1].isdigit():
        raise ValueError(f"{domain!r} is an IP address, not a domain name")
    return ascii_name


def record_name(domain: str) -> str:
    """The owner name of the TXT record, without the trailing dot."""
    return f"{RECORD_LABEL}.{domain.rstrip('.').lower()}"


def record_value(token: str) -> str:
    return f"{VALUE_PREFIX}{token}"


def zone_line(domain: str, token: str) -> str:
    """The record as a zone-file line, ready to paste."""
    return f'{record_name(domain)}. IN TXT "{record_value(token)}"'


def parse_server(spec: str) -> tuple[str, int]:
    """'HOST', 'HOST:PORT' or '[IPv6]:PORT' (also a bare IPv6 address) -> (address, port)."""
    spec = spec.strip()
    host, port = spec, 53
    if spec.startswith("["):
        host, sep, rest = spec[1:].partition("]")
        if not sep:
            raise DnsConfigError(f"{ENV_SERVER}={spec!r}: missing ']'")
        if rest:
            if not rest.startswith(":"):
                raise DnsConfigError(f"{ENV_SERVER}={spec!r}: expected [ADDRESS]:PORT")
            port = _port(spec, rest[1:])
    elif spec.count(":") == 1:
        host, _, port_text = spec.partition(":")
        port = _port(spec, port_text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise DnsConfigError(
            f"{ENV_SERVER}={spec!r}: expected an IP address with an optional port, e.g. 127.0.0.1:5353"
        ) from None
    return host, port


def _port(spec: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise DnsConfigError(f"{ENV_SERVER}={spec!r}: bad port {text!r}")
    return int(text)


def _timeout(environ: Mapping[str, str]) -> float:
    text = environ.get(ENV_TIMEOUT, "").strip()
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DnsConfigError(f"{ENV_TIMEOUT}={text!r}: expected a positive number of seconds")
    return value


def resolver_from_env(environ: Mapping[str, str] | None = None) -> dns.resolver.Resolver | None:
    """A resolver for GATEWAY_DNS_SERVER when it is set, else None."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    spec = env.get(ENV_SERVER, "").strip()
    if not spec:
        return None
    host, port = parse_server(spec)
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.lifetime = _timeout(env)
    resolver.timeout = min(resolver.lifetime, 2.0)
    return resolver


def default_resolver(environ: Mapping[str, str] | None = None) -> dns.resolver.Resolver:
    """GATEWAY_DNS_SERVER when set, else the system's resolver configuration."""
    resolver = resolver_from_env(environ)
    if resolver is not None:
        return resolver
    env: Mapping[str, str] = os.environ if environ is None else environ
    resolver = dns.resolver.Resolver()
    resolver.lifetime = _timeout(env)
    return resolver


def _txt_values(answer: Iterable[Any]) -> list[str]:
    values = []
    for rdata in answer:
        strings = getattr(rdata, "strings", None)
        if strings is not None:
            raw = b"".join(s if isinstance(s, bytes) else str(s).encode() for s in strings)
            values.append(raw.decode("utf-8", "replace"))
        elif isinstance(rdata, bytes):
            values.append(rdata.decode("utf-8", "replace"))
        else:  # a plain string from a test double, possibly in zone-file quotes
            values.append(str(rdata).strip().strip('"'))
    return values


def _shorten(value: str, limit: int = 80) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def verify_domain_token(domain: str, token: str, resolver: Any = None) -> tuple[bool, str]:
    """Look up the verification record of `domain` and compare it with `token`.

    Returns (ok, message); the message says what was found or what failed, for a human.
    """
    name = record_name(domain)
    expected = record_value(token)
    if resolver is None:
        try:
            resolver = default_resolver()
        except DnsConfigError as exc:
            return False, str(exc)
    try:
        answer = resolver.resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        return False, (f"{name} does not exist (NXDOMAIN): publish {zone_line(domain, token)}")
    except dns.resolver.NoAnswer:
        return False, (f"{name} has no TXT record: publish {zone_line(domain, token)}")
    except dns.exception.Timeout:
        return False, (f"DNS timeout looking up TXT {name}; no answer from the DNS server, try again later")
    except dns.resolver.NoNameservers as exc:
        return False, f"DNS lookup of TXT {name} failed (SERVFAIL or refused): {exc}"
    except dns.exception.DNSException as exc:
        return False, f"DNS lookup of TXT {name} failed: {exc}"
    values = _txt_values(answer)
    for value in values:
        text = value.strip()
        if text[: len(VALUE_PREFIX)].lower() == VALUE_PREFIX and text[len(VALUE_PREFIX) :].strip() == token:
            return True, f"found TXT {name} with the expected token"
    ours = [v.strip() for v in values if v.strip().lower().startswith(VALUE_PREFIX)]
    if ours:
        found = ", ".join(f'"{_shorten(v)}"' for v in ours)
        return False, (
            f'wrong token at TXT {name}: found {found}, expected "{expected}" '
            "(was the domain added again, or for another customer?)"
        )
    if values:
        found = ", ".join(f'"{_shorten(v)}"' for v in values)
        return False, (
            f"TXT {name} has no verification token (found {found}); publish {zone_line(domain, token)}"
        )
    return False, f"{name} has no TXT record: publish {zone_line(domain, token)}"
