"""The DNS as policies see it: dnspython's `Resolver.resolve`, injectable by tests."""

from __future__ import annotations

from typing import Any, Protocol


class Resolver(Protocol):
    def resolve(self, qname: str, rdtype: str) -> Any:
        """The answer's records (iterable); raises dns.resolver.NXDOMAIN / NoAnswer /
        dns.exception.DNSException as dnspython does."""
        ...
