"""Which packets are worth decoding: SMTP ports, configured endpoints, everything (``--ports all``).

The test runs on header bytes still in the read buffer: ports first (two integer look-ups),
then, only for packets on other ports, the destination/source address against the endpoint
networks, with a one-byte pre-check of the first address octet.
"""

from __future__ import annotations

import ipaddress
from typing import Iterable

#: Submission and relay ports smtpflow follows by default.
DEFAULT_SMTP_PORTS = frozenset({25, 465, 587, 2525})

#: Ports on endpoint networks that are known not to carry SMTP (HTTP(S), IMAP, POP). Sessions to
#: Microsoft ranges on these ports are web and mailbox-access traffic, not mail submission.
NON_SMTP_SERVICE_PORTS = frozenset({80, 443, 110, 143, 993, 995})

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Selector:
    """Decides relevance of TCP traffic from raw header bytes.

    ``ports``: TCP ports to follow, or ``None`` for every TCP session.
    ``networks``: endpoint networks (Microsoft's published ranges, user-configured ones):
    TCP to or from them is followed on any port except ``NON_SMTP_SERVICE_PORTS``.
    """

    def __init__(self, ports: Iterable[int] | None = DEFAULT_SMTP_PORTS, networks: Iterable[Network] = ()) -> None:
        self.all_ports = ports is None
        self.ports = frozenset(ports) if ports is not None else frozenset()
        self.networks = list(networks)
        v4: dict[int, list[tuple[int, int]]] = {}
        v6: dict[int, list[tuple[int, int]]] = {}
        for net in self.networks:
            if net.version == 4:
                first_octets = _first_octets(net, 32)
                for octet in first_octets:
                    v4.setdefault(octet, []).append((int(net.network_address), int(net.netmask)))
            else:
                for octet in _first_octets(net, 128):
                    v6.setdefault(octet, []).append((int(net.network_address), int(net.netmask)))
        self._v4 = v4
        self._v6 = v6

    def wants_tcp(self, sport: int, dport: int, buf: bytes, saddr: int, daddr: int, alen: int) -> bool:
        if self.all_ports:
            return True
        ports = self.ports
        if dport in ports or sport in ports:
            return True
        table = self._v4 if alen == 4 else self._v6
        if not table:
            return False
        if dport in NON_SMTP_SERVICE_PORTS or sport in NON_SMTP_SERVICE_PORTS:
            return False
        for addr in (daddr, saddr):
            candidates = table.get(buf[addr])
            if candidates:
                value = int.from_bytes(buf[addr : addr + alen], "big")
                for network, mask in candidates:
                    if value & mask == network:
                        return True
        return False

    def in_networks(self, raw_address: bytes) -> bool:
        table = self._v4 if len(raw_address) == 4 else self._v6
        candidates = table.get(raw_address[0]) if raw_address else None
        if not candidates:
            return False
        value = int.from_bytes(raw_address, "big")
        return any(value & mask == network for network, mask in candidates)


def _first_octets(net: Network, bits: int) -> range:
    """First-octet values an address of ``net`` can have."""
    shift = bits - 8
    first = int(net.network_address) >> shift
    last = int(net.broadcast_address) >> shift
    return range(first, last + 1)
