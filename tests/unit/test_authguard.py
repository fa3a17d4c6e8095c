"""Which store key a client address is counted under (gateway/authguard.py)."""

from __future__ import annotations

from gateway.authguard import client_key, login_key


def test_ipv4_is_counted_per_address():
    assert client_key("192.0.2.7") == "addr:192.0.2.7"
    assert client_key("192.0.2.7") != client_key("192.0.2.8")


def test_ipv6_is_counted_per_64_prefix_and_mapped_ipv4_as_ipv4():
    assert client_key("2001:db8:1:2::5") == client_key("2001:db8:1:2:ffff::9") == "addr:2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::5") != client_key("2001:db8:1:2::5")
    assert client_key("::ffff:192.0.2.7") == "addr:192.0.2.7"


def test_login_keys_are_bounded_and_apart_from_addresses():
    assert login_key("192.0.2.7") != client_key("192.0.2.7")
    assert len(login_key("x" * 5000)) < 300
