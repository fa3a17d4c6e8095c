"""Who is the client of an HTTP request: the address stored as consent and unsubscribe
evidence and the key of the /report limit.

Without `http.trusted_proxies` it is the peer of the TCP connection, whatever the request
claims. Behind trusted proxies it is read from X-Forwarded-For, from the right: each proxy
appends the address it was connected from, so the right-most entries are the trusted proxies'
own additions, and the first address from the right that is not a trusted proxy is the client
the nearest untrusted hop was seen as. Everything left of it was written by that client and is
not believed (a client can send any "X-Forwarded-For: <someone else>").

* Several X-Forwarded-For header lines count as one list, in order (RFC 9110 5.3).
* An entry that is not an IP address ("unknown", a host name, garbage) where the client should
  be means a trusted proxy wrote something we cannot use; the walk stops there and the answer
  is the address of the proxy that wrote it: the nearest address we can vouch for, never
  anything further left. Empty entries ("a,,b") are skipped.
* "1.2.3.4:5678" and "[2001:db8::1]:443" (proxies that add the port) are read as addresses.
* IPv4-mapped IPv6 ("::ffff:192.0.2.1", what a dual-stack listener sees for IPv4 peers) is
  read as the IPv4 address, so trusted_proxies in IPv4 notation match it.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Sequence

from aiohttp import web

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_BRACKETED = re.compile(r"^\[([0-9A-Fa-f:.]+(?:%[^\]]+)?)\](?::\d{1,5})?$")
_V4_WITH_PORT = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){3}):\d{1,5}$")
# An IPv6 client of /report is limited by its /64: one subscriber line, not one address of 2**64.
REPORT_V6_PREFIX = 64


def parse_address(text: str) -> IpAddress | None:
    """An X-Forwarded-For entry or a peer address as an IP address; None if it is none."""
    text = text.strip()
    match = _BRACKETED.match(text) or _V4_WITH_PORT.match(text)
    if match:
        text = match.group(1)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in trusted)


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[str]) -> str:
    """The client address, given the connection's peer, the X-Forwarded-For header lines and
    the trusted proxies (CIDRs). See the module text for the rules."""
    nearest = parse_address(peer)
    if nearest is None:
        return peer
    nets = _networks(tuple(trusted))
    if not nets:
        return str(nearest)

    def is_trusted(address: IpAddress) -> bool:
        return any(address in net for net in nets)

    if not is_trusted(nearest):
        return str(nearest)
    entries = [h for line in forwarded_for for h in line.split(",") if h.strip()]
    for entry in reversed(entries):
        hop = parse_address(entry)
        if hop is None:
            return str(nearest)
        if not is_trusted(hop):
            return str(hop)
        nearest = hop
    return str(nearest)


def client_ip(request: web.Request, trusted: Sequence[str]) -> str:
    return forwarded_client(request.remote or "", request.headers.getall("X-Forwarded-For", []), trusted)


def report_limit_key(client: str) -> str:
    """The key of the /report limit: an IPv4 address, or the /64 network of an IPv6 one."""
    address = parse_address(client)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address.packed, REPORT_V6_PREFIX), strict=False))
    return client
