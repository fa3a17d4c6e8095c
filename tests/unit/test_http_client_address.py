"""forwarded_client with a peer the integration tests cannot make on 127.0.0.1: a dual-stack
listener sees IPv4 clients as IPv4-mapped IPv6 addresses, and a proxy may reach us over IPv6."""

from __future__ import annotations

import pytest

from gateway.http.clientaddr import forwarded_client, report_limit_key


@pytest.mark.parametrize(
    "peer, forwarded, trusted, expected",
    [
        # the proxy 10.0.0.5 as a dual-stack listener sees it: still the trusted proxy
        ("::ffff:10.0.0.5", ["203.0.113.7"], ["10.0.0.0/8"], "203.0.113.7"),
        # an untrusted IPv4 client on a dual-stack listener: named in IPv4 notation
        ("::ffff:198.51.100.3", ["203.0.113.7"], ["10.0.0.0/8"], "198.51.100.3"),
        ("2001:db8:ffff::5", ["203.0.113.7, 2001:db8:ffff::9"], ["2001:db8:ffff::/48"], "203.0.113.7"),
        ("2001:db8::5", ["203.0.113.7"], ["2001:db8:ffff::/48"], "2001:db8::5"),
        ("", ["203.0.113.7"], ["10.0.0.0/8"], ""),  # no peer address (not a TCP socket)
    ],
)
def test_peer_shapes(peer, forwarded, trusted, expected):
    assert forwarded_client(peer, forwarded, trusted) == expected


def test_report_limit_key_is_the_ipv6_slash_64():
    assert report_limit_key("203.0.113.7") == "203.0.113.7"
    assert report_limit_key("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert report_limit_key("2001:db8:1:2::9") == report_limit_key("2001:db8:1:2:ffff::1")
