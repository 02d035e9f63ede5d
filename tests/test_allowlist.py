"""Client address and allowlist decisions (pure functions), as a table of cases."""

from __future__ import annotations

import ipaddress

import pytest

from qwengw.allowlist import client_ip, in_networks, parse_ip

TRUSTED = [
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("10.1.0.0/24"),
    ipaddress.ip_network("::1/128"),
]


@pytest.mark.parametrize(
    "peer, xff, real, expected",
    [
        ("198.51.100.1", None, None, "198.51.100.1"),  # no proxy
        ("198.51.100.1", "1.2.3.4", None, "198.51.100.1"),  # untrusted peer: header ignored
        ("127.0.0.1", "1.2.3.4", None, "1.2.3.4"),  # trusted proxy
        ("127.0.0.1", "6.6.6.6, 1.2.3.4", None, "1.2.3.4"),  # spoofed left-most entry
        ("127.0.0.1", "1.2.3.4, 10.1.0.7", None, "1.2.3.4"),  # chain of trusted proxies
        ("127.0.0.1", "10.1.0.8, 10.1.0.7", None, "10.1.0.8"),  # all trusted: left-most proxy
        ("127.0.0.1", "garbage, 1.2.3.4", None, "1.2.3.4"),  # garbage left of the real hop
        ("127.0.0.1", "1.2.3.4, garbage", None, "127.0.0.1"),  # garbage right: trust nothing
        ("127.0.0.1", None, "1.2.3.4", "1.2.3.4"),  # X-Real-IP from a trusted proxy
        ("::1", "2001:db8::5", None, "2001:db8::5"),  # IPv6
        ("::ffff:127.0.0.1", "1.2.3.4", None, "1.2.3.4"),  # IPv4-mapped peer
        ("127.0.0.1", "fe80::1%eth0", None, "fe80::1"),  # scope stripped
        ("127.0.0.1", "[2001:db8::9]", None, "2001:db8::9"),
    ],
)
def test_client_ip(peer: str, xff: str | None, real: str | None, expected: str) -> None:
    assert str(client_ip(peer, xff, real, TRUSTED)) == expected


@pytest.mark.parametrize(
    "ip, allowed",
    [
        ("10.0.3.4", True),
        ("10.1.0.1", False),
        ("::ffff:10.0.0.1", True),
        ("2001:db8::1", True),
        ("2001:db9::1", False),
        ("bogus", False),
    ],
)
def test_in_networks(ip: str, allowed: bool) -> None:
    nets = [ipaddress.ip_network("10.0.0.0/16"), ipaddress.ip_network("2001:db8::/32")]
    assert in_networks(parse_ip(ip), nets) is allowed
