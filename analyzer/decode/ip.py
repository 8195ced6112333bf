"""IPv4 (RFC 791) and IPv6 (RFC 8200) header layouts and constants.

IPv4: version/IHL (1), TOS (1), total length (2), id (2), flags/fragment offset (2),
TTL (1), protocol (1), header checksum (2), source (4), destination (4), options.
IPv6: version/class/flow (4), payload length (2), next header (1), hop limit (1),
source (16), destination (16), then a chain of extension headers.
"""

from __future__ import annotations

from typing import Final

import ipaddress
from socket import inet_ntoa

IPV4_MIN_HEADER_LEN = 20
IPV6_HEADER_LEN = 40

IP_MF = 0x2000  # more fragments
IP_OFFMASK = 0x1FFF

IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP: Final = 17  # Final: compiled code (``dispatch``) inlines it
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MOBILITY = 135

#: IPv6 extension headers that are walked over (length in 8-octet units, not counting the first 8).
IPV6_SKIPPABLE_EXTENSIONS = frozenset({IPPROTO_HOPOPTS, IPPROTO_ROUTING, IPPROTO_DSTOPTS, IPPROTO_MOBILITY})
IPV6_MAX_EXTENSIONS = 8


def address_text(raw: bytes) -> str:
    """Presentation form of a 4- or 16-byte address (IPv6 as ``ipaddress`` writes it: an
    IPv4-mapped one as ``::ffff:102:304``, where ``inet_ntop`` would write ``::ffff:1.2.3.4``)."""
    if len(raw) == 4:
        return inet_ntoa(raw)  # a fifth of the f-string's time: three per session record
    return str(ipaddress.IPv6Address(raw))


def likely_initial_ttl(ttl: int) -> int:
    """The initial TTL a sender most likely used (stacks start at 64, 128 or 255)."""
    if ttl <= 64:
        return 64
    if ttl <= 128:
        return 128
    return 255


def hop_distance(ttl: int) -> int:
    """Routers passed since the sender, assuming the usual initial TTLs."""
    return likely_initial_ttl(ttl) - ttl
