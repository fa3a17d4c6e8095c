"""Who the client is (gateway/identity.py) and who may open a session (gateway/listeners.py),
the one place every listener asks."""

from __future__ import annotations

from typing import Any

from gateway.config import Listener as ListenerConfig
from gateway.core import replies
from gateway.identity import milter_login, network_login, trusted_network_customer
from gateway.listeners import SessionCap
from gateway.store import StoreUnavailable, open_store
from tests.support.gateway import add_customer

MILTER = ListenerConfig(
    kind="milter", address="127.0.0.1", port=10025, trusted_networks={"10.1.0.0/16": "acme"}
)


def macros(**values: str) -> Any:
    return lambda name: values.get(name, "")


def test_the_postfix_sasl_login_wins_over_the_trusted_network():
    login = milter_login(macros(auth_authen="globex"), MILTER, "10.1.2.3")
    assert (login.name, login.how) == ("globex", "postfix-sasl")


def test_without_a_login_a_trusted_network_names_the_customer_and_nothing_else_does():
    login = milter_login(macros(), MILTER, "10.1.2.3")
    assert (login.name, login.how) == ("acme", "trusted-network")
    assert milter_login(macros(), MILTER, "10.2.0.1") is None
    assert milter_login(macros(), MILTER, "") is None
    assert network_login(None, "10.1.2.3") is None


def test_a_trusted_network_customer_added_later_is_known_at_the_next_lookup(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'gateway.db'}", cache_ttl=60)
    assert trusted_network_customer(store, "acme") is None  # a miss is not cached
    add_customer(store)
    assert trusted_network_customer(store, "acme").name == "acme"


def test_a_store_outage_leaves_the_session_without_a_customer():
    class Down:
        def cached(self, key: Any, load: Any) -> Any:
            raise StoreUnavailable("down")

    assert trusted_network_customer(Down(), "acme") is None


class FakeSession:
    def __init__(self, busy: bool = False) -> None:
        self.busy = busy


def test_the_session_cap_refuses_at_the_cap_and_reads_it_at_each_connection():
    cap_value = [2]
    cap: SessionCap[FakeSession] = SessionCap(lambda: cap_value[0])
    first, second = FakeSession(busy=True), FakeSession()
    for session in (first, second):
        assert cap.refusal() is None
        cap.add(session)
    assert cap.refusal() == (replies.TOO_MANY_SESSIONS, "session cap")
    cap_value[0] = 3  # a reload raised it
    assert cap.refusal() is None
    assert cap.in_flight == 1
    assert cap.discard(second) and not cap.discard(second)  # counted once
    assert list(cap) == [first]


def test_while_draining_every_connection_hears_shutting_down_even_under_the_cap():
    cap: SessionCap[FakeSession] = SessionCap(lambda: None)
    assert cap.refusal() is None
    cap.accepting = False
    assert cap.refusal() == (replies.SHUTTING_DOWN, "shutting down")
