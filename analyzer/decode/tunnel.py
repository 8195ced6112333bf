"""Tunnels a gateway's traffic arrives in when it is mirrored to the capturing host: GRE
(RFC 2784, 2890) with ERSPAN (types I, II and III) or transparent Ethernet bridging inside,
IP in IP (RFC 2003, 4213), VXLAN (RFC 7348) and Geneve (RFC 8926); and tunnels the traffic
itself takes, as Zeek opens them: PPTP's enhanced GRE (RFC 2637, PPP inside), Teredo
(RFC 4380), GTPv1-U (3GPP TS 29.281) and AYIYA. GRE, Geneve and UDP (RFC 7510) may carry an
MPLS label stack. The decoder reads the inner frame as it would read a captured one.

Layouts::

    GRE:     flags/version (2: C 0x8000, K 0x2000, S 0x1000; version 0), protocol type (2),
             [checksum (2) + reserved (2)] [key (4)] [sequence number (4)]
    PPTP:    GRE version 1, K set, protocol type 0x880B: flags/version (2; A 0x0080),
             protocol type (2), payload length (2), call id (2), [sequence (4)] [ack (4)],
             then a PPP frame
    ERSPAN:  type I: no header (GRE without S); type II: 8 bytes; type III: 12 bytes, plus an
             8-byte platform subheader when its O bit (low bit of byte 11) is set
    VXLAN:   flags (1: I 0x08), reserved (3), VNI (3), reserved (1): 8 bytes, then Ethernet
    Geneve:  version/option length (1: length in 4-byte words in the low 6 bits), flags (1),
             protocol type (2), VNI (3), reserved (1), options
    MPLS:    label stack entries (4: label 20 bits, traffic class 3, bottom of stack 1, TTL 8),
             then IP (by its version: MPLS does not say)
    Teredo:  [authentication: 0x0001, id length (1), auth length (1), id, auth, nonce (8),
             confirmation (1)] [origin indication: 0x0000, port (2), address (4)], then IPv6
             (whose length must fill the datagram: the test Zeek makes too)
    GTPv1-U: flags (1: version 1 in the top 3 bits, PT 0x10, E 0x04, S 0x02, PN 0x01), message
             type (1: 0xFF, a G-PDU), length (2), TEID (4), [sequence (2), N-PDU (1), next
             extension type (1)] [extensions: length (1, in 4-byte words) ... next type (1)],
             then IPv4 or IPv6
    AYIYA:   identity length (high 4 bits: 2 ** n bytes) / type (1), signature length (high
             4 bits: 4 * n bytes) / hash (1), authentication / opcode (1: 1, forward), next
             header (1: 4 or 41), epoch (4), identity, signature, then IP
"""

from __future__ import annotations

from ..capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_MPLS, LINKTYPE_PPP, LINKTYPE_RAW
from .ethernet import ETH_P_IP, ETH_P_IPV6, ETH_P_MPLS_MC, ETH_P_MPLS_UC
from .udp import DNS_PORT

IPPROTO_IPIP = 4
IPPROTO_IPV6_IN_IP = 41
IPPROTO_GRE = 47

VXLAN_PORT = 4789
GENEVE_PORT = 6081
MPLS_UDP_PORT = 6635  # RFC 7510: an MPLS label stack follows the UDP header
TEREDO_PORT = 3544
GTP_U_PORT = 2152
AYIYA_PORT = 5072

GRE_CHECKSUM = 0x8000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_VERSION_MASK = 0x0007
GRE_HEADER_LEN = 4
GRE_VERSION_PPTP = 1
GRE_ACK = 0x0080  # PPTP: an acknowledgment number follows
ETH_P_PPP = 0x880B

ETH_P_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows
ETH_P_ERSPAN = 0x88BE  # ERSPAN type I (no S bit) or II
ETH_P_ERSPAN3 = 0x22EB

TEREDO_AUTH = 0x0001
TEREDO_ORIGIN = 0x0000
TEREDO_ORIGIN_LEN = 8
TEREDO_AUTH_FIXED_LEN = 4 + 8 + 1  # indicator and lengths, nonce, confirmation
IPV6_HEADER_LEN = 40
GTP_VERSION_1 = 1
GTP_PT = 0x10
GTP_E = 0x04
GTP_OPTIONAL = 0x07  # E, S or PN: the 4-byte optional field is there
GTP_GPDU = 0xFF
GTP_HEADER_LEN = 8
AYIYA_HEADER_LEN = 8
AYIYA_FORWARD = 1
ERSPAN2_HEADER_LEN = 8
ERSPAN3_HEADER_LEN = 12
ERSPAN3_SUBHEADER_LEN = 8
VXLAN_HEADER_LEN = 8
VXLAN_FLAG_VNI = 0x08
GENEVE_HEADER_LEN = 8

#: Tunnels inside tunnels followed at most (a loop guard against crafted packets).
MAX_TUNNEL_DEPTH = 4

#: What follows a GRE or Geneve header, by protocol type: the link type it is read as.
INNER_BY_PROTOCOL = {ETH_P_TEB: LINKTYPE_ETHERNET, ETH_P_IP: LINKTYPE_RAW, ETH_P_IPV6: LINKTYPE_RAW,
                     ETH_P_MPLS_UC: LINKTYPE_MPLS, ETH_P_MPLS_MC: LINKTYPE_MPLS}

TUNNEL_PROTOCOLS = frozenset({IPPROTO_IPIP, IPPROTO_IPV6_IN_IP, IPPROTO_GRE})
#: UDP tunnels by destination port; those by either port (traffic both ways uses them).
TUNNEL_PORTS = frozenset({VXLAN_PORT, GENEVE_PORT, MPLS_UDP_PORT})
TUNNEL_EITHER_PORTS = frozenset({TEREDO_PORT, GTP_U_PORT, AYIYA_PORT})


def is_udp_tunnel(sport: int, dport: int) -> bool:
    """Whether a datagram between these ports may carry a tunnel (DNS never does: a query
    from port 2152 is a query)."""
    if sport == DNS_PORT or dport == DNS_PORT:
        return False
    return dport in TUNNEL_PORTS or dport in TUNNEL_EITHER_PORTS or sport in TUNNEL_EITHER_PORTS


def inner_frame(proto: int, buf: bytes, l4: int, end: int) -> tuple[int, int] | None:
    """(link type, offset) of the frame carried by the tunnel packet whose IP payload starts
    at ``l4`` (``proto``: the IP protocol; UDP for VXLAN, Geneve, MPLS, Teredo, GTP-U, AYIYA),
    or None when it is not one read here (keepalives, other payloads, other messages) or is
    cut short."""
    if proto == IPPROTO_IPIP or proto == IPPROTO_IPV6_IN_IP:
        return LINKTYPE_RAW, l4
    if proto == IPPROTO_GRE:
        if l4 + GRE_HEADER_LEN > end:
            return None
        flags = (buf[l4] << 8) | buf[l4 + 1]
        ptype = (buf[l4 + 2] << 8) | buf[l4 + 3]
        if flags & GRE_VERSION_MASK:
            if flags & GRE_VERSION_MASK != GRE_VERSION_PPTP or ptype != ETH_P_PPP or not flags & GRE_KEY:
                return None
            off = l4 + GRE_HEADER_LEN + 4 + (4 if flags & GRE_SEQUENCE else 0) + (4 if flags & GRE_ACK else 0)
            return (LINKTYPE_PPP, off) if off < end else None  # an acknowledgment alone carries nothing
        off = l4 + GRE_HEADER_LEN + (4 if flags & GRE_CHECKSUM else 0) + (4 if flags & GRE_KEY else 0) + (
            4 if flags & GRE_SEQUENCE else 0)
        if ptype == ETH_P_ERSPAN:
            if flags & GRE_SEQUENCE:
                off += ERSPAN2_HEADER_LEN  # type II; type I has no header of its own
            linktype = LINKTYPE_ETHERNET
        elif ptype == ETH_P_ERSPAN3:
            if off + ERSPAN3_HEADER_LEN > end:
                return None
            optional = buf[off + 11] & 0x01
            off += ERSPAN3_HEADER_LEN + (ERSPAN3_SUBHEADER_LEN if optional else 0)
            linktype = LINKTYPE_ETHERNET
        else:
            linktype = INNER_BY_PROTOCOL.get(ptype, -1)
            if linktype < 0:
                return None
        return (linktype, off) if off < end else None
    if proto == 17:  # UDP: is_udp_tunnel said yes to the ports
        sport = (buf[l4] << 8) | buf[l4 + 1]
        dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
        body = l4 + 8
        if TEREDO_PORT in (sport, dport):
            return _teredo(buf, body, l4 + ((buf[l4 + 4] << 8) | buf[l4 + 5]), end)
        if GTP_U_PORT in (sport, dport):
            return _gtp_u(buf, body, end)
        if AYIYA_PORT in (sport, dport):
            return _ayiya(buf, body, end)
        if dport == MPLS_UDP_PORT:
            return (LINKTYPE_MPLS, body) if body < end else None
        if dport == VXLAN_PORT:
            if body + VXLAN_HEADER_LEN >= end or not buf[body] & VXLAN_FLAG_VNI:
                return None
            return LINKTYPE_ETHERNET, body + VXLAN_HEADER_LEN
        if body + GENEVE_HEADER_LEN > end or buf[body] >> 6:  # version 0 only
            return None
        linktype = INNER_BY_PROTOCOL.get((buf[body + 2] << 8) | buf[body + 3], -1)
        off = body + GENEVE_HEADER_LEN + ((buf[body] & 0x3F) << 2)
        return (linktype, off) if linktype >= 0 and off < end else None
    return None


def _teredo(buf: bytes, body: int, udp_end: int, end: int) -> tuple[int, int] | None:
    """Teredo: the IPv6 packet after the optional headers, if its length is the datagram's
    rest (``udp_end``: where the UDP length says the datagram ends)."""
    off = body
    if off + 4 <= end and (buf[off] << 8) | buf[off + 1] == TEREDO_AUTH:
        off += TEREDO_AUTH_FIXED_LEN + buf[off + 2] + buf[off + 3]
    if off + 2 <= end and (buf[off] << 8) | buf[off + 1] == TEREDO_ORIGIN:
        off += TEREDO_ORIGIN_LEN
    if off + IPV6_HEADER_LEN > end or buf[off] >> 4 != 6:
        return None
    if off + IPV6_HEADER_LEN + ((buf[off + 4] << 8) | buf[off + 5]) != udp_end:
        return None
    return LINKTYPE_RAW, off


def _gtp_u(buf: bytes, body: int, end: int) -> tuple[int, int] | None:
    """GTPv1-U: the IP packet a G-PDU carries, after the optional field and extensions."""
    if body + GTP_HEADER_LEN > end:
        return None
    flags = buf[body]
    if flags >> 5 != GTP_VERSION_1 or not flags & GTP_PT or buf[body + 1] != GTP_GPDU:
        return None
    off = body + GTP_HEADER_LEN
    if flags & GTP_OPTIONAL:
        if off + 4 > end:
            return None
        next_type = buf[off + 3] if flags & GTP_E else 0
        off += 4
        while next_type:
            if off >= end or not buf[off]:
                return None
            length = buf[off] << 2
            if off + length > end:
                return None
            next_type = buf[off + length - 1]
            off += length
    if off >= end or buf[off] >> 4 not in (4, 6):
        return None
    return LINKTYPE_RAW, off


def _ayiya(buf: bytes, body: int, end: int) -> tuple[int, int] | None:
    """AYIYA: the IP packet of a forward message, after the identity and the signature."""
    if body + AYIYA_HEADER_LEN > end:
        return None
    next_header = buf[body + 3]
    if buf[body + 2] & 0x0F != AYIYA_FORWARD or next_header not in (IPPROTO_IPIP, IPPROTO_IPV6_IN_IP):
        return None
    off = body + AYIYA_HEADER_LEN + (1 << (buf[body] >> 4)) + ((buf[body + 1] >> 4) << 2)
    if off >= end or buf[off] >> 4 != (4 if next_header == IPPROTO_IPIP else 6):
        return None
    return LINKTYPE_RAW, off
