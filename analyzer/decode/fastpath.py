"""The Python face of the C hot path (``_fastpath.c``), and what to do without it.

:class:`Prefilter` is handed to the capture readers: for a run of records in their read
buffer it returns only those the decoder might find relevant, and adds what it dropped to
the decoder's statistics exactly as the decoder would have counted them. Without the
compiled module (no C compiler at install time) ``Prefilter.available`` is False and the
readers decode every record in Python: same results, slower.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from ..capture.window import ALL_TIME
from .packet import DecodeStats, TcpSegment, UdpDatagram
from .tcp import parse_options
from .select import NON_SMTP_SERVICE_PORTS, Selector

try:  # pragma: no cover - which branch runs depends on the build
    from . import _fastpath
except ImportError:  # pragma: no cover
    _fastpath = None

#: Set SMTPFLOW_PURE_PYTHON=1 to run without the C hot path (tests compare the two).
DISABLED = os.environ.get("SMTPFLOW_PURE_PYTHON") == "1"

#: Records one scan call keeps at most: decoded segments carry their payload, and a window
#: of a capture that is all SMTP would otherwise become tens of megabytes of objects at once.
MAX_KEPT = 2048

# Whether a scan builds the packets it keeps (_fastpath.c's DECODE_*).
DECODE_NONE, DECODE_PACKETS, DECODE_PACKETS_NO_CHECKSUMS = 0, 1, 2

#: Can scans build TcpSegments and UdpDatagrams themselves? (They fill their __slots__.)
SEGMENTS = False
if _fastpath is not None and not DISABLED:  # pragma: no branch
    try:
        _fastpath.segment_types(TcpSegment, UdpDatagram, parse_options)
        SEGMENTS = True
    except (TypeError, AttributeError):  # pragma: no cover - slots laid out otherwise, or a stale build
        pass


def _bitmap(ports) -> bytearray:
    bits = bytearray(8192)
    for port in ports:
        bits[port >> 3] |= 1 << (port & 7)
    return bits


def filter_blob(selector: Selector) -> bytes:
    """The selector flattened for C: port bitmaps, then IPv4 and IPv6 (network, mask) lists."""
    out = bytearray()
    out += _bitmap(selector.ports)
    out += _bitmap(NON_SMTP_SERVICE_PORTS)
    out += bytes([1 if selector.all_ports else 0, 0, 0, 0])
    v4 = [n for n in selector.networks if n.version == 4]
    v6 = [n for n in selector.networks if n.version == 6]
    out += struct.pack("<I", len(v4))
    for net in v4:
        out += struct.pack("<II", int(net.network_address), int(net.netmask))
    out += struct.pack("<I", len(v6))
    for net in v6:
        out += net.network_address.packed + ipaddress.IPv6Address(int(net.netmask)).packed
    dns = selector.dns
    out += bytes([1 if dns is not None else 0, 0, 0, 0])
    lists = ((), (), (), ()) if dns is None else (
        [n.encode() for n in sorted(dns.names)], [s.encode() for s in dns.suffixes],
        [p.encode() for p in dns.label_prefixes], list(dns.markers),
    )
    for items in lists:
        items = [item for item in items if len(item) < 256]
        out += struct.pack("<I", len(items))
        for item in items:
            out += bytes([len(item)]) + item
    return bytes(out)


class Prefilter:
    """Drops plainly irrelevant records in C; counts them into ``stats``.

    With ``build`` (the engine's own runs) the plain TCP segments and DNS datagrams it
    keeps come back decoded, as ``(ts, TcpSegment)`` or ``(ts, UdpDatagram)`` pairs counted as
    the decoder would count them; other kept records stay ``(ts, linktype, start, end,
    wirelen)`` for ``Decoder.decode``. With ``build`` and a ``shard`` (index, count: a split
    run's process, ``analyzer.parallel``), a segment of a connection another process follows
    (``dispatch.shard_of``) comes as ``(ts, src, checksum)``: all that process needs of it
    (``ConnectionTable.observe_at``), without building a TcpSegment and copying its payload.
    ``verify_checksums`` is the decoder's setting of the same name.
    """

    available = _fastpath is not None and not DISABLED

    def __init__(self, selector: Selector, stats: DecodeStats, build: bool = False, verify_checksums: bool = True,
                 shard: tuple[int, int] | None = None) -> None:
        self.blob = filter_blob(selector)
        self.stats = stats
        self.decode = DECODE_NONE
        if build and SEGMENTS:
            self.decode = DECODE_PACKETS if verify_checksums else DECODE_PACKETS_NO_CHECKSUMS
        self.shard = shard or (0, 1)

    def account(self, st: tuple) -> int:
        """Add a scan's counters to the statistics; return how many records it dropped.

        Kept apart from the scan so that a scan may run in another thread (it releases the
        GIL) while only the thread that decodes touches the statistics."""
        (packets, nbytes, v4, v6, tcp, udp, icmp, other, non_ip, truncated, dns_ignored, relevant, bad_checksums,
         tunneled, first_ts, last_ts, _outside) = st
        stats = self.stats
        stats.packets += packets
        stats.bytes += nbytes
        stats.ip_versions[4] += v4
        stats.ip_versions[6] += v6
        stats.tcp += tcp
        stats.udp += udp
        stats.icmp += icmp
        stats.other_ip += other
        stats.non_ip += non_ip
        stats.truncated += truncated
        stats.dns_ignored += dns_ignored
        stats.relevant += relevant
        stats.bad_checksums += bad_checksums
        stats.tunneled += tunneled
        if packets:
            if stats.first_ts is None or first_ts < stats.first_ts:
                stats.first_ts = first_ts
            if stats.last_ts is None or last_ts > stats.last_ts:
                stats.last_ts = last_ts
        return packets - relevant  # the decoded ones are among the kept

    def pcap(self, buf: bytes, pos: int, big: bool, nano: bool, hlen: int, linktype: int, max_len: int,
             bounds: tuple[int, int, int] = ALL_TIME, limit: int = -1):
        """(new position, kept records (ts, linktype, start, end, wirelen) or decoded packets
        (ts, TcpSegment | UdpDatagram) or other processes' segments (ts, src, checksum), status,
        counters).

        Records starting at or after ``limit`` (when given) are left for the next call, and so
        are those after the first ``MAX_KEPT`` kept (status ``capture.pcap.SCAN_FULL``); pass the counters
        to ``account``. ``bounds``: a time window's (since, until, stop) (``capture.window``):
        records outside [since, until) are only counted (the counters' last), and the scan ends
        at a record stamped ``stop`` or later (status ``capture.pcap.SCAN_PAST``)."""
        if limit < 0:
            limit = len(buf)
        return _fastpath.scan_pcap(buf, pos, big, nano, hlen, linktype, max_len, self.blob, limit, self.decode, MAX_KEPT, *bounds,
                                   *self.shard)

    def pcapng(self, buf: bytes, pos: int, big: bool, interfaces: tuple, bounds: tuple[int, int, int] = ALL_TIME,
               limit: int = -1):
        """As ``pcap``, over a run of enhanced packet blocks."""
        if limit < 0:
            limit = len(buf)
        return _fastpath.scan_pcapng(buf, pos, big, interfaces, self.blob, limit, self.decode, MAX_KEPT, *bounds, *self.shard)
