"""Who the client is: the one place every listener asks.

A session sends as a customer by one of
- SMTP AUTH on the submission listener (the check itself is gateway/authguard.py),
- the client's address in a listener's `trusted_networks` (a sending engine on the ESP's
  network, no login),
- the SASL login Postfix reports to the milter in the `{auth_authen}` macro.
Nothing here answers the client: the transports turn "no customer" into their own replies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.store import StoreUnavailable

# How a session's customer was established, as logged (`event=auth result=...`).
TRUSTED_NETWORK = "trusted-network"
POSTFIX_SASL = "postfix-sasl"


class _NoSuchCustomer(Exception):
    """Raised inside a cached load so that a miss is not remembered."""


@dataclass(frozen=True)
class Login:
    """A customer name a session claims, and how it came by it."""

    name: str
    how: str


def network_login(listener: Any, peer_ip: str) -> Login | None:
    """The customer a client at `peer_ip` sends as by the listener's `trusted_networks`."""
    name = listener.network_customer(peer_ip) if listener is not None else None
    return Login(name, TRUSTED_NETWORK) if name else None


def milter_login(macro: Callable[[str], str], listener: Any, peer_ip: str) -> Login | None:
    """The customer of a milter session: the SASL login Postfix reports (`macro` reads the
    MAIL-stage macros), else the client address Postfix reports by `trusted_networks`."""
    name = macro("auth_authen")
    if name:
        return Login(name, POSTFIX_SASL)
    return network_login(listener, peer_ip)


def trusted_network_customer(store: Any, name: str) -> Any:
    """The customer a trusted network sends as, through the store's read cache (the one
    the policies re-read the customer from): a sending engine that connects for every
    message costs a query per cache_ttl, not one per connection. A name not found is not
    cached: a customer added on another node is known at the next connection. None when
    unknown or the store is unavailable (the session then stays unauthenticated)."""

    def load() -> Any:
        customer = store.get_customer(name)
        if customer is None:
            raise _NoSuchCustomer(name)
        return customer

    try:
        return store.cached(("trusted-network-customer", name), load)
    except (_NoSuchCustomer, StoreUnavailable):
        return None


def authenticate(session: Any, customer: Any) -> None:
    """Mark an aiosmtpd session as sending as `customer` (AUTH or trusted network)."""
    session.authenticated = True
    session.auth_data = customer


def session_customer(session: Any) -> Any:
    """The customer of an aiosmtpd session, None before it authenticated."""
    return session.auth_data if session.authenticated else None
