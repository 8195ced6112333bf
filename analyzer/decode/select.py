"""Which packets are worth decoding: SMTP ports, configured endpoints, everything (``--ports all``).

The test runs on header bytes still in the read buffer: ports first (two integer look-ups),
then, only for packets on other ports, the destination/source address against the endpoint
networks, with a one-byte pre-check of the first address octet.

DNS is judged by its question: on a gateway nearly every lookup is for a web name, and only
lookups of mail and Microsoft names (and MX queries) can explain an SMTP problem.
:class:`DnsInterest` is that rule, applied to the raw message, the same in Python and in C.
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


class DnsInterest:
    """Which DNS messages matter: by the first question's name and type, and a few markers.

    A message is kept when its question name equals one of ``names``, ends with one of
    ``suffixes`` (given with their leading dot; the bare name matches too), or its first label
    starts with one of ``label_prefixes``; when it is an MX query or answer; or when it
    contains one of ``markers`` (an answer whose CNAME chain leads to Microsoft). A question
    that cannot be read cheaply (compressed, malformed) keeps the message: the full parser
    decides.
    """

    MX = 15

    def __init__(self, names: Iterable[str], suffixes: Iterable[str], label_prefixes: Iterable[str], markers: Iterable[bytes]) -> None:
        self.names = frozenset(n.lower().rstrip(".") for n in names)
        self.suffixes = tuple(sorted({"." + s.lower().strip(".") for s in suffixes if s.strip(".")}))
        self._suffix_roots = frozenset(suffix[1:] for suffix in self.suffixes)  # the bare names
        self.label_prefixes = tuple(sorted({p.lower() for p in label_prefixes if p}))
        self.markers = tuple(m for m in markers if m)
        self._verdicts: dict[str, bool] = {}

    def wants_name(self, name: str) -> bool:
        name = name.lower().rstrip(".")
        if name in self.names:
            return True
        if name.endswith(self.suffixes) or name in self._suffix_roots:
            return True
        return name.split(".", 1)[0].startswith(self.label_prefixes) if self.label_prefixes else False

    def wants_message(self, payload: bytes) -> bool:
        question = quick_question(payload)
        if question is None:
            return True
        name, qtype = question
        if qtype == self.MX:
            return True
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = self.wants_name(name)
            if len(self._verdicts) >= 100_000:
                self._verdicts.clear()
            self._verdicts[name] = verdict
        if verdict:
            return True
        return bool(payload[2] & 0x80) and any(marker in payload for marker in self.markers)


def quick_question(payload: bytes) -> tuple[str, int] | None:
    """The first question's (lower-case name, qtype) of a DNS message, or None if not simple.

    Only uncompressed, printable-ASCII names are read here; anything else is left to the
    DNS parser. Used on the hot path, so it builds nothing but the name.
    """
    end = len(payload)
    if end < 17 or not (payload[4] or payload[5]):
        return None
    pos = 12
    labels = []
    while True:
        if pos >= end:
            return None
        length = payload[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 or len(labels) >= 127:
            return None
        labels.append(payload[pos + 1 : pos + 1 + length])
        pos += 1 + length
    if pos + 2 > end:
        return None
    try:
        name = b".".join(labels).decode("ascii").lower() if labels else "."
    except UnicodeDecodeError:
        return None
    return name, (payload[pos] << 8) | payload[pos + 1]


class Selector:
    """Decides relevance of TCP traffic from raw header bytes.

    ``ports``: TCP ports to follow, or ``None`` for every TCP session.
    ``networks``: endpoint networks (Microsoft's published ranges, user-configured ones):
    TCP to or from them is followed on any port except ``NON_SMTP_SERVICE_PORTS``.
    ``dns``: which DNS messages over UDP to decode (None: all).
    """

    def __init__(self, ports: Iterable[int] | None = DEFAULT_SMTP_PORTS, networks: Iterable[Network] = (),
                 dns: DnsInterest | None = None) -> None:
        self.dns = dns  # None: every DNS message is decoded
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
