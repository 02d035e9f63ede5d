"""Who is calling: the client address behind trusted proxies, and the IP allowlist."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_ip(text: str | None) -> IPAddress | None:
    """An address with any ``%scope`` removed and IPv4-mapped IPv6 folded to IPv4."""
    if not text:
        return None
    text = text.strip().strip("[]").split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(ip: IPAddress | None, networks: Sequence[IPNetwork]) -> bool:
    return ip is not None and any(ip.version == net.version and ip in net for net in networks)


def client_ip(
    peer: str | None, forwarded_for: str | None, real_ip: str | None, trusted: Sequence[IPNetwork]
) -> IPAddress | None:
    """The socket peer, unless it is a trusted proxy: then the right-most untrusted hop.

    Walking from the right stops at the first address we did not put there ourselves, so a
    client cannot spoof its way in by prepending entries to ``X-Forwarded-For``.
    """
    addr = parse_ip(peer)
    if not in_networks(addr, trusted):
        return addr
    if forwarded_for:
        hops = [h for h in (part.strip() for part in forwarded_for.split(",")) if h]
        for hop in reversed(hops):
            hop_ip = parse_ip(hop)
            if hop_ip is None:
                return addr  # garbage in the chain: trust nothing beyond the proxy itself
            if not in_networks(hop_ip, trusted):
                return hop_ip
            addr = hop_ip
        return addr
    if real_ip:
        return parse_ip(real_ip) or addr
    return addr
