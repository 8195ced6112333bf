"""The decoding hot path: raw frame bytes → a small packet object, or nothing.

Most packets on a gateway are not mail. ``Decoder.decode`` looks at header bytes in place
(link header, IP addresses and protocol, ports) and returns ``None`` as soon as it knows a
packet is irrelevant, before any object is built or any bytes are copied. Only packets that
matter (SMTP ports or endpoints, DNS, ICMP errors about such traffic) become objects.
"""

from __future__ import annotations

from typing import Final

import os

from ..capture.linktypes import (
    LINKTYPE_C_HDLC,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NFLOG,
    LINKTYPE_NULL,
    LINKTYPE_IEEE802_11,
    LINKTYPE_IEEE802_11_RADIOTAP,
    LINKTYPE_MPLS,
    LINKTYPE_PFLOG,
    LINKTYPE_PKTAP,
    LINKTYPE_PPP,
    LINKTYPE_PPP_HDLC,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD,
    LINKTYPE_RAW_OPENBSD,
)
from .ethernet import (
    ETH_P_FABRICPATH,
    ETH_P_IP,
    ETH_P_IPV6,
    ETH_P_MPLS_MC,
    ETH_P_MPLS_UC,
    ETH_P_PPPOE_SESSION,
    MAX_ENCAPSULATION_DEPTH,
    MPLS_MAX_LABELS,
    PPP_IPV4,
    PPP_IPV6,
    VLAN_TPIDS,
)
from .icmp import ICMP6_ERROR_TYPES, ICMP_ERROR_TYPES
from .ip import (
    IP_MF,
    IP_OFFMASK,
    IPPROTO_AH,
    IPPROTO_FRAGMENT,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV6_MAX_EXTENSIONS,
    IPV6_SKIPPABLE_EXTENSIONS,
)
from .select import Selector
from .tcp import TH_SYN, parse_options
from . import wifi
from .firewall import NFLOG_HEADER_LEN, PFLOG_MIN_HEADER_LEN, FirewallLog, nflog_parts
from .fragments import FragmentTable
from .tunnel import MAX_TUNNEL_DEPTH, TUNNEL_PROTOCOLS, inner_frame, is_udp_tunnel
from .udp import DNS_PORT

try:  # pragma: no cover - which branch runs depends on the build
    from ._fastpath import checksum_state as _c_checksum_state
except ImportError:  # pragma: no cover
    _c_checksum_state = None
if os.environ.get("SMTPFLOW_PURE_PYTHON") == "1":
    _c_checksum_state = None

#: BSD loopback address families for IPv6 differ by OS (Linux 10, the BSDs 24, FreeBSD 28, macOS 30).
AF_INET: Final = 2
AF_INET6_VALUES: Final = frozenset({10, 24, 28, 30})
PKTAP_MIN_HEADER_LEN: Final = 12
PKTAP_TYPE_PACKET: Final = 1

CHECKSUM_OK: Final = 1
CHECKSUM_BAD: Final = 0
CHECKSUM_UNKNOWN: Final = 2  # snaplen-cut, or left to the NIC (offload): not judged


class TcpSegment:
    """One TCP segment. ``payload`` holds the captured bytes; ``length`` the true payload
    length from the IP header (larger when the capture's snaplen cut the packet).

    ``ident`` tells one transmission from another that carries the same TCP numbers: the
    TCP checksum field as sent (it covers the addresses, the header with its options and the
    payload), with the IPv4 identification above it (``id << 16 | checksum``; IPv6: the
    checksum alone). A retransmission gets a new IPv4 id, and usually new timestamps; the
    same packet captured twice (on two interfaces) keeps both."""

    __slots__ = (
        "ts", "version", "src", "dst", "ttl", "ip_len", "sport", "dport",
        "seq", "ack", "flags", "win", "payload", "length", "options", "checksum", "ident",
    )

    def __init__(self, ts: int, version: int, src: bytes, dst: bytes, ttl: int, ip_len: int, sport: int, dport: int, seq: int,
                 ack: int, flags: int, win: int, payload: bytes, length: int, options: dict[str, object] | None, checksum: int,
                 ident: int) -> None:
        self.ts = ts
        self.version = version
        self.src = src
        self.dst = dst
        self.ttl = ttl
        self.ip_len = ip_len
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.win = win
        self.payload = payload
        self.length = length
        self.options = options
        self.checksum = checksum
        self.ident = ident


class UdpDatagram:
    __slots__ = ("ts", "version", "src", "dst", "ttl", "sport", "dport", "payload")

    def __init__(self, ts: int, version: int, src: bytes, dst: bytes, ttl: int, sport: int, dport: int, payload: bytes) -> None:
        self.ts = ts
        self.version = version
        self.src = src
        self.dst = dst
        self.ttl = ttl
        self.sport = sport
        self.dport = dport
        self.payload = payload


class IcmpError:
    """An ICMP/ICMPv6 error, with the addresses, ports and sequence of the packet it quotes.

    ``src`` is the host that reported the error (a router, a firewall, or the destination).
    """

    __slots__ = (
        "ts", "version", "src", "dst", "ttl", "type", "code",
        "q_proto", "q_src", "q_dst", "q_sport", "q_dport", "q_seq",
    )

    def __init__(self, ts: int, version: int, src: bytes, dst: bytes, ttl: int, type_: int, code: int, q_proto: int, q_src: bytes,
                 q_dst: bytes, q_sport: int, q_dport: int, q_seq: int | None) -> None:
        self.ts = ts
        self.version = version
        self.src = src
        self.dst = dst
        self.ttl = ttl
        self.type = type_
        self.code = code
        self.q_proto = q_proto
        self.q_src = q_src
        self.q_dst = q_dst
        self.q_sport = q_sport
        self.q_dport = q_dport
        self.q_seq = q_seq


class DecodeStats:
    """Counters of what the decoder saw and skipped; reported with every analysis."""

    __slots__ = (
        "packets", "bytes", "relevant", "non_ip", "fragments", "malformed", "truncated",
        "bad_checksums", "unsupported_linktypes", "ip_versions", "tcp", "udp", "icmp", "other_ip",
        "dns_ignored", "tunneled", "reassembled", "first_ts", "last_ts",
    )

    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.relevant = 0
        self.non_ip = 0
        self.fragments = 0
        self.malformed = 0
        self.truncated = 0
        self.bad_checksums = 0
        self.unsupported_linktypes: dict[int, int] = {}
        self.ip_versions = {4: 0, 6: 0}
        self.tcp = 0
        self.udp = 0
        self.icmp = 0
        self.other_ip = 0
        self.dns_ignored = 0  # DNS messages about names of no interest (web lookups)
        self.tunneled = 0  # packets read inside a tunnel (GRE, ERSPAN, IP in IP, VXLAN, Geneve)
        self.reassembled = 0  # IP datagrams put together from their fragments (``fragments`` counts those)
        self.first_ts: int | None = None
        self.last_ts: int | None = None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def merge(self, other: "DecodeStats") -> None:
        for name in self.__slots__:
            mine, theirs = getattr(self, name), getattr(other, name)
            if name == "first_ts":
                if theirs is not None and (mine is None or theirs < mine):
                    self.first_ts = theirs
            elif name == "last_ts":
                if theirs is not None and (mine is None or theirs > mine):
                    self.last_ts = theirs
            elif isinstance(mine, dict):
                for key, value in theirs.items():
                    mine[key] = mine.get(key, 0) + value
            else:
                setattr(self, name, mine + theirs)


def _checksum_state(version: int, src: bytes, dst: bytes, proto: int, buf: bytes, l4: int, l4_end: int) -> int:
    """Verify a TCP/UDP checksum without a per-word loop.

    The one's-complement sum of 16-bit words equals the big integer formed by the bytes,
    modulo 0xFFFF (because 0x10000 ≡ 1). A correct segment sums (with its pseudo-header)
    to 0xFFFF ≡ 0. Captures taken on the sending host carry checksums the NIC had not yet
    filled in: only the pseudo-header sum is present. Those are "unknown", not "bad".
    """
    seg_len = l4_end - l4
    seg = buf[l4:l4_end]
    body = int.from_bytes(seg, "big")
    if seg_len & 1:
        body <<= 8
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + seg_len
    if (pseudo + body) % 0xFFFF == 0:
        return CHECKSUM_OK
    field_off = 16 if proto == IPPROTO_TCP else 6
    field = (seg[field_off] << 8) | seg[field_off + 1]
    folded = pseudo % 0xFFFF
    if field in (folded, (~folded) & 0xFFFF) or (folded == 0 and field == 0xFFFF):
        return CHECKSUM_UNKNOWN
    return CHECKSUM_BAD


_C_CHECKSUM_STATES: Final = (CHECKSUM_OK, CHECKSUM_UNKNOWN, CHECKSUM_BAD)


def _checksum_state_c(version: int, src: bytes, dst: bytes, proto: int, buf: bytes, l4: int, l4_end: int) -> int:
    """``_checksum_state`` in C (``_fastpath.checksum_state``): the same answers, faster."""
    return _C_CHECKSUM_STATES[_c_checksum_state(buf, l4, l4_end, src, dst, proto)]


#: What the decoder uses; the tests check that both always agree.
checksum_state = _checksum_state_c if _c_checksum_state is not None else _checksum_state


def _nflog_payload(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(IP version, offset) of the packet in an NFLOG record (decode/firewall.py has the
    layout), as ``_network_start`` answers."""
    if end - start < NFLOG_HEADER_LEN + 4:
        return -1, 0
    off = nflog_parts(buf, start, end)[0]
    if off < 0:
        return 0, 0
    version = buf[off] >> 4 if off < end else 0
    return (version, off) if version in (4, 6) else (0, 0)


#: Link types whose header ends in an EtherType: (header length, offset of the EtherType).
#: Ethernet: destination, source, type; Linux cooked v1: packet type, ARPHRD, address length,
#: address (8), protocol; v2: protocol first; Cisco HDLC: address, control, protocol.
ETHERTYPE_LINK_HEADERS: Final = {
    LINKTYPE_ETHERNET: (14, 12),
    LINKTYPE_LINUX_SLL: (16, 14),
    LINKTYPE_LINUX_SLL2: (20, 0),
    LINKTYPE_C_HDLC: (4, 2),
}


class Decoder:
    """Turns raw frames into TcpSegment / UdpDatagram / IcmpError objects, or None.

    ``verify_checksums``: when true, TCP segments whose checksum is provably wrong are
    marked ``checksum == CHECKSUM_BAD`` (the flow layer then records Zeek's ``C`` and
    otherwise ignores them, as Zeek does).
    """

    def __init__(self, selector: Selector, verify_checksums: bool = True) -> None:
        self.selector = selector
        self.verify_checksums = verify_checksums
        self.stats = DecodeStats()
        self.fragments = FragmentTable()
        #: What a firewall's own log (pflog, NFLOG) said of each TCP connection (taken when it ends).
        self.firewall_log = FirewallLog()

    # -- link layer -------------------------------------------------------------------
    def _network_start(self, linktype: int, buf: bytes, start: int, end: int) -> tuple[int, int]:
        """Return (IP version 4/6 or 0, offset of the IP header)."""
        layout = ETHERTYPE_LINK_HEADERS.get(linktype)
        if layout is not None:
            header_len, at = layout
            if end - start < header_len:
                return -1, 0
            return self._after_ethertype((buf[start + at] << 8) | buf[start + at + 1], buf, start + header_len, end)
        if linktype == LINKTYPE_MPLS:
            return self._after_ethertype(ETH_P_MPLS_UC, buf, start, end)
        if linktype == LINKTYPE_PFLOG:
            # pfloghdr (decode/firewall.py): its length, the address family, ...; the packet starts
            # at the length rounded up to 4 bytes (BPF_WORDALIGN), as libpcap and Wireshark read it.
            if end - start < PFLOG_MIN_HEADER_LEN or buf[start] < PFLOG_MIN_HEADER_LEN:
                return -1, 0
            off = start + ((buf[start] + 3) & ~3)
            if off > end:
                return -1, 0
            family = buf[start + 1]
            return (4, off) if family == AF_INET else (6, off) if family in AF_INET6_VALUES else (0, 0)
        if linktype == LINKTYPE_PKTAP:
            # pktap_header (little-endian): its length (4), what follows (4: 1, a packet), the
            # following frame's link type (4), interface, process ...
            if end - start < PKTAP_MIN_HEADER_LEN:
                return -1, 0
            length = int.from_bytes(buf[start : start + 4], "little")
            if int.from_bytes(buf[start + 4 : start + 8], "little") != PKTAP_TYPE_PACKET:
                return 0, 0
            inner = int.from_bytes(buf[start + 8 : start + 12], "little")
            if length < PKTAP_MIN_HEADER_LEN or start + length > end:
                return -1, 0
            if inner == LINKTYPE_PKTAP:
                return 0, 0
            return self._network_start(inner, buf, start + length, end)
        if linktype == LINKTYPE_IEEE802_11 or linktype == LINKTYPE_IEEE802_11_RADIOTAP:
            if linktype == LINKTYPE_IEEE802_11_RADIOTAP:
                header = wifi.radiotap_length(buf, start, end)
                if header < 0:
                    return -1, 0
                start += header
            etype, off = wifi.data_payload(buf, start, end)
            return (etype, 0) if etype <= 0 else self._after_ethertype(etype, buf, off, end)
        if linktype in (LINKTYPE_RAW, LINKTYPE_RAW_BSD, LINKTYPE_RAW_OPENBSD, LINKTYPE_IPV4, LINKTYPE_IPV6):
            if end <= start:
                return -1, 0
            version = buf[start] >> 4
            return (version if version in (4, 6) else 0), start
        elif linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            if end - start < 5:
                return -1, 0
            if linktype == LINKTYPE_LOOP:
                family = int.from_bytes(buf[start : start + 4], "big")
            else:  # host byte order of the capturing machine: accept either
                family = int.from_bytes(buf[start : start + 4], "little")
                if family > 0xFFFF:
                    family = int.from_bytes(buf[start : start + 4], "big")
            if family == AF_INET:
                return 4, start + 4
            if family in AF_INET6_VALUES:
                return 6, start + 4
            return 0, 0
        elif linktype == LINKTYPE_PPP or linktype == LINKTYPE_PPP_HDLC:
            off = start + 2 if end - start >= 2 and buf[start] == 0xFF and buf[start + 1] == 0x03 else start
            if off >= end:
                return -1, 0
            if buf[off] & 1:  # protocol field compression: one byte
                protocol, off = buf[off], off + 1
            elif off + 2 <= end:
                protocol, off = (buf[off] << 8) | buf[off + 1], off + 2
            else:
                return -1, 0
            return (4, off) if protocol == PPP_IPV4 else (6, off) if protocol == PPP_IPV6 else (0, 0)
        elif linktype == LINKTYPE_NFLOG:
            return _nflog_payload(buf, start, end)
        unsupported = self.stats.unsupported_linktypes
        unsupported[linktype] = unsupported.get(linktype, 0) + 1
        return -2, 0

    @staticmethod
    def _after_ethertype(etype: int, buf: bytes, off: int, end: int) -> tuple[int, int]:
        depth = 0
        while True:
            if etype == ETH_P_IP:
                return 4, off
            if etype == ETH_P_IPV6:
                return 6, off
            depth += 1
            if depth > MAX_ENCAPSULATION_DEPTH:
                return 0, 0
            if etype in VLAN_TPIDS:
                if off + 4 > end:
                    return -1, 0
                etype = (buf[off + 2] << 8) | buf[off + 3]
                off += 4
            elif etype == ETH_P_PPPOE_SESSION:
                if off + 8 > end:
                    return -1, 0
                ppp = (buf[off + 6] << 8) | buf[off + 7]
                off += 8
                if ppp == PPP_IPV4:
                    return 4, off
                if ppp == PPP_IPV6:
                    return 6, off
                return 0, 0
            elif etype in (ETH_P_MPLS_UC, ETH_P_MPLS_MC):
                for _ in range(MPLS_MAX_LABELS):
                    if off + 4 > end:
                        return -1, 0
                    bottom = buf[off + 2] & 0x01
                    off += 4
                    if bottom:
                        break
                else:
                    return 0, 0
                if off >= end:
                    return -1, 0
                version = buf[off] >> 4  # MPLS does not say what it carries: guess from the version nibble
                return (version if version in (4, 6) else 0), off
            elif etype == ETH_P_FABRICPATH:
                # FTag/TTL (2), then the inner frame's addresses (12) and EtherType.
                if off + 16 > end:
                    return -1, 0
                etype = (buf[off + 14] << 8) | buf[off + 15]
                off += 16
            else:
                return 0, 0

    # -- the hot path -----------------------------------------------------------------
    def decode(self, ts: int, linktype: int, buf: bytes, start: int, end: int, wirelen: int):
        stats = self.stats
        stats.packets += 1
        stats.bytes += wirelen
        if stats.first_ts is None or ts < stats.first_ts:
            stats.first_ts = ts
        if stats.last_ts is None or ts > stats.last_ts:
            stats.last_ts = ts
        packet = self._frame(ts, linktype, buf, start, end, wirelen > end - start, 0)
        if (linktype == LINKTYPE_PFLOG or linktype == LINKTYPE_NFLOG) and type(packet) is TcpSegment:
            self.firewall_log.add((packet.src, packet.sport, packet.dst, packet.dport),
                                  "pflog" if linktype == LINKTYPE_PFLOG else "nflog", buf, start, end)
        return packet

    def _frame(self, ts: int, linktype: int, buf: bytes, start: int, end: int, truncated: bool, depth: int):
        """The frame in buf[start:end]: the captured one, or (``depth`` > 0) one a tunnel
        carried. The counters describe the innermost packet, plus ``tunneled``."""
        stats = self.stats
        version, off = self._network_start(linktype, buf, start, end)
        if version <= 0:
            if version == -1:
                stats.malformed += 1
            elif version == 0:
                stats.non_ip += 1
            return None
        if version == 4:
            if end - off < 20:
                stats.malformed += 1
                return None
            vihl = buf[off]
            ihl = (vihl & 0x0F) << 2
            if vihl >> 4 != 4 or ihl < 20 or off + ihl > end:
                stats.malformed += 1
                return None
            stats.ip_versions[4] += 1
            total = (buf[off + 2] << 8) | buf[off + 3]
            frag = (buf[off + 6] << 8) | buf[off + 7]
            if frag & (IP_MF | IP_OFFMASK):
                stats.fragments += 1
                if total < ihl or off + total > end:
                    return None  # cut by the capture: its piece is unknown
                whole = self.fragments.add(
                    ts, (4, buf[off + 12 : off + 20], buf[off + 9], buf[off + 4 : off + 6]), (frag & IP_OFFMASK) << 3,
                    bool(frag & IP_MF), buf[off + ihl : off + total], buf[off : off + ihl] if not frag & IP_OFFMASK else None)
                return None if whole is None else self._reassembled(ts, version, whole, depth)
            proto = buf[off + 9]
            if total == 0:  # TCP segmentation offload on the capturing host: length left blank
                ip_end = end
                total = end - off
            elif total < ihl:
                stats.malformed += 1
                return None
            else:
                ip_end = off + total
            l4 = off + ihl
            saddr = off + 12
            daddr = off + 16
            alen = 4
            ttl = buf[off + 8]
        else:
            if end - off < 40:
                stats.malformed += 1
                return None
            if buf[off] >> 4 != 6:
                stats.malformed += 1
                return None
            stats.ip_versions[6] += 1
            plen = (buf[off + 4] << 8) | buf[off + 5]
            proto = buf[off + 6]
            ttl = buf[off + 7]
            l4 = off + 40
            ip_end = l4 + plen if plen else end  # jumbograms/TSO: length 0
            total = ip_end - off
            saddr = off + 8
            daddr = off + 24
            alen = 16
            hops = 0
            while proto in IPV6_SKIPPABLE_EXTENSIONS or proto == IPPROTO_FRAGMENT or proto == IPPROTO_AH:
                hops += 1
                if hops > IPV6_MAX_EXTENSIONS or l4 + 8 > end:
                    stats.malformed += 1
                    return None
                if proto == IPPROTO_FRAGMENT:
                    fragword = (buf[l4 + 2] << 8) | buf[l4 + 3]
                    if fragword & 0xFFF9:  # offset != 0 or more-fragments set
                        stats.fragments += 1
                        if not plen or ip_end > end:
                            return None  # cut by the capture: its piece is unknown
                        # The datagram gets a plain IPv6 header, the fragment's next header in it
                        # (the headers before the fragment header are not needed here).
                        offset = fragword & 0xFFF8
                        header = bytes(buf[off : off + 6]) + bytes((buf[l4], ttl)) + bytes(buf[saddr : saddr + 32]) if not offset else None
                        whole = self.fragments.add(ts, (6, buf[saddr : saddr + 32], buf[l4 + 4 : l4 + 8]), offset,
                                                   bool(fragword & 1), buf[l4 + 8 : ip_end], header)
                        return None if whole is None else self._reassembled(ts, version, whole, depth)
                    proto = buf[l4]
                    l4 += 8
                elif proto == IPPROTO_AH:
                    nxt = buf[l4]
                    l4 += (buf[l4 + 1] + 2) << 2
                    proto = nxt
                else:
                    nxt = buf[l4]
                    l4 += (buf[l4 + 1] + 1) << 3
                    proto = nxt
        if ip_end > end:
            ip_end = end
            truncated = True
        if (proto in TUNNEL_PROTOCOLS or (
            proto == IPPROTO_UDP and l4 + 8 <= ip_end and is_udp_tunnel((buf[l4] << 8) | buf[l4 + 1], (buf[l4 + 2] << 8) | buf[l4 + 3])
        )) and depth < MAX_TUNNEL_DEPTH:
            inner = inner_frame(proto, buf, l4, ip_end)
            if inner is not None:
                stats.ip_versions[version] -= 1  # counted as the packet inside
                if not depth:
                    stats.tunneled += 1
                return self._frame(ts, inner[0], buf, inner[1], ip_end, truncated, depth + 1)
        if truncated:
            stats.truncated += 1
        selector = self.selector

        if proto == IPPROTO_TCP:
            stats.tcp += 1
            if l4 + 20 > end:
                stats.malformed += 1
                return None
            sport = (buf[l4] << 8) | buf[l4 + 1]
            dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
            if not selector.wants_tcp(sport, dport, buf, saddr, daddr, alen):
                return None
            doff = (buf[l4 + 12] >> 4) << 2
            if doff < 20 or l4 + doff > end:
                stats.malformed += 1
                return None
            flags = buf[l4 + 13]
            src = buf[saddr : saddr + alen]
            dst = buf[daddr : daddr + alen]
            seg_end = off + total  # where the segment ends on the wire
            pay_start = l4 + doff
            length = seg_end - pay_start
            if length < 0:
                stats.malformed += 1
                return None
            options = parse_options(buf[l4 + 20 : l4 + doff]) if (flags & TH_SYN and doff > 20) else None
            if self.verify_checksums and not truncated:
                checksum = checksum_state(version, src, dst, IPPROTO_TCP, buf, l4, ip_end)
                if checksum == CHECKSUM_BAD:
                    stats.bad_checksums += 1
            else:
                checksum = CHECKSUM_UNKNOWN
            stats.relevant += 1
            return TcpSegment(
                ts, version, src, dst, ttl, total, sport, dport,
                int.from_bytes(buf[l4 + 4 : l4 + 8], "big"),
                int.from_bytes(buf[l4 + 8 : l4 + 12], "big"),
                flags,
                (buf[l4 + 14] << 8) | buf[l4 + 15],
                buf[pay_start:ip_end],
                length,
                options,
                checksum,
                (((buf[off + 4] << 24) | (buf[off + 5] << 16)) if version == 4 else 0) | (buf[l4 + 16] << 8) | buf[l4 + 17],
            )

        if proto == IPPROTO_UDP:
            stats.udp += 1
            if l4 + 8 > end:
                stats.malformed += 1
                return None
            sport = (buf[l4] << 8) | buf[l4 + 1]
            dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
            if sport != DNS_PORT and dport != DNS_PORT:
                return None
            dns = selector.dns
            if dns is not None and not dns.wants_message(buf[l4 + 8 : ip_end]):
                stats.dns_ignored += 1
                return None
            stats.relevant += 1
            return UdpDatagram(
                ts, version, buf[saddr : saddr + alen], buf[daddr : daddr + alen], ttl, sport, dport, buf[l4 + 8 : ip_end]
            )

        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            stats.icmp += 1
            if l4 + 8 > end:
                return None
            icmp_type = buf[l4]
            if (proto == IPPROTO_ICMP and version == 4 and icmp_type in ICMP_ERROR_TYPES) or (
                proto == IPPROTO_ICMPV6 and version == 6 and icmp_type in ICMP6_ERROR_TYPES
            ):
                return self._icmp_error(ts, version, buf, saddr, daddr, alen, ttl, l4, end)
            return None

        stats.other_ip += 1
        return None

    def _reassembled(self, ts: int, version: int, whole: bytes, depth: int):
        """A datagram whose last fragment just came: its length set (0 past 64 KB, as TSO
        leaves it), no longer a fragment, decoded like a captured raw IP packet."""
        packet = bytearray(whole)
        if version == 4:
            packet[2:4] = (len(packet) if len(packet) <= 0xFFFF else 0).to_bytes(2, "big")
            packet[6:8] = b"\0\0"
        else:
            packet[4:6] = (len(packet) - 40 if len(packet) - 40 <= 0xFFFF else 0).to_bytes(2, "big")
        stats = self.stats
        stats.ip_versions[version] -= 1  # its fragments were counted; it is counted as itself
        stats.reassembled += 1
        if depth >= MAX_TUNNEL_DEPTH:
            return None
        return self._frame(ts, LINKTYPE_RAW, bytes(packet), 0, len(packet), False, depth + 1)

    def _icmp_error(self, ts, version, buf, saddr, daddr, alen, ttl, l4, end):
        """Parse the packet quoted by an ICMP error; keep it only if it was relevant traffic."""
        q = l4 + 8
        if version == 4:
            if q + 20 > end or buf[q] >> 4 != 4:
                return None
            qihl = (buf[q] & 0x0F) << 2
            q_proto = buf[q + 9]
            q_src = buf[q + 12 : q + 16]
            q_dst = buf[q + 16 : q + 20]
            q_l4 = q + qihl
            qs, qd, qalen = q + 12, q + 16, 4
        else:
            if q + 40 > end or buf[q] >> 4 != 6:
                return None
            q_proto = buf[q + 6]
            q_src = buf[q + 8 : q + 24]
            q_dst = buf[q + 24 : q + 40]
            q_l4 = q + 40
            qs, qd, qalen = q + 8, q + 24, 16
        if q_l4 + 4 > end:
            return None
        q_sport = (buf[q_l4] << 8) | buf[q_l4 + 1]
        q_dport = (buf[q_l4 + 2] << 8) | buf[q_l4 + 3]
        if q_proto == IPPROTO_TCP:
            if not self.selector.wants_tcp(q_sport, q_dport, buf, qs, qd, qalen):
                return None
            q_seq = int.from_bytes(buf[q_l4 + 4 : q_l4 + 8], "big") if q_l4 + 8 <= end else None
        elif q_proto == IPPROTO_UDP:
            if q_dport != DNS_PORT and q_sport != DNS_PORT:
                return None
            q_seq = None
        else:
            return None
        self.stats.relevant += 1
        return IcmpError(
            ts, version, buf[saddr : saddr + alen], buf[daddr : daddr + alen], ttl,
            buf[l4], buf[l4 + 1], q_proto, q_src, q_dst, q_sport, q_dport, q_seq,
        )


__all__ = [
    "CHECKSUM_BAD",
    "CHECKSUM_OK",
    "CHECKSUM_UNKNOWN",
    "DecodeStats",
    "Decoder",
    "IcmpError",
    "TcpSegment",
    "UdpDatagram",
]
