"""The engine's hot loop: each capture record to the layer that takes it (compiled, see ``native``).

``Engine.feed`` hands its records here. A record is either what a capture reader gives,
``(ts, linktype, buf, start, end, wirelen)``, decoded here by the Python decoder, or
``(ts, packet)``, a packet the C scan has already decoded, or ``(ts, src, checksum)``, what the
C scan keeps of a segment another shard follows. TCP segments go to the connection
table, DNS datagrams and ICMP errors about them to the DNS tracker, other ICMP errors to the
table. Compiled, the loop calls the table and the tracker directly, without Python's argument
passing: it was a fifth of an all-SMTP capture's time as a Python loop.

With a shard (``analyzer.parallel``), every packet is still decoded, so the statistics are whole,
but only this shard's connections are followed; the other segments only advance the table's
clock and checksum knowledge (``ConnectionTable.observe``). Every shard reads the DNS datagrams
(its records need the names; shard 0's tracker also keeps the rows); DNS over TCP stays with
shard 0, like its connections.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from .decode.ip import IPPROTO_UDP
from .decode.packet import IcmpError, TcpSegment, UdpDatagram
from .decode.udp import DNS_PORT
from .flows.table import ConnectionTable
from .protocols.dns.tracker import DnsTracker

#: How often (capture time) the DNS tracker lets unanswered queries go.
DNS_EXPIRY_INTERVAL_NS: Final = 5_000_000_000


def shard_of(src: bytes, sport: int, dst: bytes, dport: int, shards: int) -> int:
    """Which of ``shards`` processes follows this TCP connection (the same both ways).

    DNS over TCP stays with shard 0, which keeps the DNS table."""
    if sport == DNS_PORT or dport == DNS_PORT:
        return 0
    return (sport + dport + src[-1] + dst[-1]) % shards


def dispatch(records: Iterable[Any], decode: Callable[..., Any], table: ConnectionTable, dns: DnsTracker, index: int,
             shards: int) -> int:
    """Run ``records`` through the layers (see the module docstring); returns how many there were."""
    count = 0
    last_expiry = 0
    for rec in records:
        count += 1
        size = len(rec)
        if size == 3:  # a segment another shard follows, as the C scan hands it on: (ts, src, checksum)
            table.observe_at(rec[0], rec[1], rec[2])
            continue
        pkt = decode(*rec) if size == 6 else rec[1]
        if pkt is None:
            continue
        if isinstance(pkt, TcpSegment):
            if shards > 1 and shard_of(pkt.src, pkt.sport, pkt.dst, pkt.dport, shards) != index:
                table.observe(pkt)
            else:
                table.tcp(pkt)
        elif isinstance(pkt, UdpDatagram):
            dns.udp(pkt)
            if pkt.ts - last_expiry > DNS_EXPIRY_INTERVAL_NS:
                last_expiry = pkt.ts
                dns.expire(pkt.ts)
        elif isinstance(pkt, IcmpError):
            if pkt.q_proto == IPPROTO_UDP:
                dns.icmp_unreachable(pkt)
            elif shards == 1 or shard_of(pkt.q_src, pkt.q_sport, pkt.q_dst, pkt.q_dport, shards) == index:
                table.icmp(pkt)
    return count
