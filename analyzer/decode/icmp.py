"""ICMP (RFC 792) and ICMPv6 (RFC 4443) error types and codes, with names for reports.

An error message quotes the IP header and at least the first 8 bytes of the datagram that
caused it; for TCP those 8 bytes hold both ports and the sequence number, which is enough
to tie the error to the session that provoked it.
"""

from __future__ import annotations

ICMP_HEADER_LEN = 8

ICMP_DEST_UNREACH = 3
ICMP_SOURCE_QUENCH = 4
ICMP_REDIRECT = 5
ICMP_TIME_EXCEEDED = 11
ICMP_PARAMETER_PROBLEM = 12
ICMP_ERROR_TYPES = frozenset({ICMP_DEST_UNREACH, ICMP_SOURCE_QUENCH, ICMP_REDIRECT, ICMP_TIME_EXCEEDED, ICMP_PARAMETER_PROBLEM})

ICMP6_DST_UNREACH = 1
ICMP6_PACKET_TOO_BIG = 2
ICMP6_TIME_EXCEEDED = 3
ICMP6_PARAM_PROB = 4
ICMP6_ERROR_TYPES = frozenset({ICMP6_DST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, ICMP6_PARAM_PROB})

ICMP_NAMES = {
    (3, 0): "net unreachable",
    (3, 1): "host unreachable",
    (3, 2): "protocol unreachable",
    (3, 3): "port unreachable",
    (3, 4): "fragmentation needed",
    (3, 5): "source route failed",
    (3, 6): "destination network unknown",
    (3, 7): "destination host unknown",
    (3, 9): "network administratively prohibited",
    (3, 10): "host administratively prohibited",
    (3, 11): "network unreachable for TOS",
    (3, 12): "host unreachable for TOS",
    (3, 13): "communication administratively prohibited",
    (3, 14): "host precedence violation",
    (3, 15): "precedence cutoff in effect",
    (4, 0): "source quench",
    (5, 0): "redirect for network",
    (5, 1): "redirect for host",
    (11, 0): "TTL exceeded in transit",
    (11, 1): "fragment reassembly time exceeded",
    (12, 0): "parameter problem",
}

ICMP6_NAMES = {
    (1, 0): "no route to destination",
    (1, 1): "communication administratively prohibited",
    (1, 2): "beyond scope of source address",
    (1, 3): "address unreachable",
    (1, 4): "port unreachable",
    (1, 5): "source address failed ingress/egress policy",
    (1, 6): "reject route to destination",
    (2, 0): "packet too big",
    (3, 0): "hop limit exceeded in transit",
    (3, 1): "fragment reassembly time exceeded",
    (4, 0): "erroneous header field",
    (4, 1): "unrecognized next header",
    (4, 2): "unrecognized IPv6 option",
}

#: Codes that mean "a filter said no" rather than "no route" — the firewall signature.
ADMIN_PROHIBITED = frozenset({(4, 3, 9), (4, 3, 10), (4, 3, 13), (6, 1, 1), (6, 1, 5), (6, 1, 6)})


def icmp_name(ip_version: int, icmp_type: int, code: int) -> str:
    table = ICMP_NAMES if ip_version == 4 else ICMP6_NAMES
    return table.get((icmp_type, code), f"type {icmp_type} code {code}")


def is_admin_prohibited(ip_version: int, icmp_type: int, code: int) -> bool:
    return (ip_version, icmp_type, code) in ADMIN_PROHIBITED


def is_unreachable(ip_version: int, icmp_type: int) -> bool:
    return icmp_type == (ICMP_DEST_UNREACH if ip_version == 4 else ICMP6_DST_UNREACH)
