"""Tunnels a gateway's traffic arrives in when it is mirrored to the capturing host: GRE
(RFC 2784, 2890) with ERSPAN (types I, II and III) or transparent Ethernet bridging inside,
IP in IP (RFC 2003, 4213), VXLAN (RFC 7348) and Geneve (RFC 8926). The decoder reads the
inner frame as it would read a captured one.

Layouts::

    GRE:     flags/version (2: C 0x8000, K 0x2000, S 0x1000; version 0), protocol type (2),
             [checksum (2) + reserved (2)] [key (4)] [sequence number (4)]
    ERSPAN:  type I: no header (GRE without S); type II: 8 bytes; type III: 12 bytes, plus an
             8-byte platform subheader when its O bit (low bit of byte 11) is set
    VXLAN:   flags (1: I 0x08), reserved (3), VNI (3), reserved (1): 8 bytes, then Ethernet
    Geneve:  version/option length (1: length in 4-byte words in the low 6 bits), flags (1),
             protocol type (2), VNI (3), reserved (1), options
"""

from __future__ import annotations

from ..capture.linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW
from .ethernet import ETH_P_IP, ETH_P_IPV6

IPPROTO_IPIP = 4
IPPROTO_IPV6_IN_IP = 41
IPPROTO_GRE = 47

VXLAN_PORT = 4789
GENEVE_PORT = 6081

GRE_CHECKSUM = 0x8000
GRE_KEY = 0x2000
GRE_SEQUENCE = 0x1000
GRE_VERSION_MASK = 0x0007
GRE_HEADER_LEN = 4

ETH_P_TEB = 0x6558  # transparent Ethernet bridging: an Ethernet frame follows
ETH_P_ERSPAN = 0x88BE  # ERSPAN type I (no S bit) or II
ETH_P_ERSPAN3 = 0x22EB

ERSPAN2_HEADER_LEN = 8
ERSPAN3_HEADER_LEN = 12
ERSPAN3_SUBHEADER_LEN = 8
VXLAN_HEADER_LEN = 8
VXLAN_FLAG_VNI = 0x08
GENEVE_HEADER_LEN = 8

#: Tunnels inside tunnels followed at most (a loop guard against crafted packets).
MAX_TUNNEL_DEPTH = 4

#: What follows a GRE or Geneve header, by protocol type: the link type it is read as.
INNER_BY_PROTOCOL = {ETH_P_TEB: LINKTYPE_ETHERNET, ETH_P_IP: LINKTYPE_RAW, ETH_P_IPV6: LINKTYPE_RAW}

TUNNEL_PROTOCOLS = frozenset({IPPROTO_IPIP, IPPROTO_IPV6_IN_IP, IPPROTO_GRE})
TUNNEL_PORTS = frozenset({VXLAN_PORT, GENEVE_PORT})


def inner_frame(proto: int, buf: bytes, l4: int, end: int) -> tuple[int, int] | None:
    """(link type, offset) of the frame carried by the tunnel packet whose IP payload starts
    at ``l4`` (``proto``: the IP protocol; UDP for VXLAN and Geneve), or None when it is not
    one read here (GRE version 1 of PPTP, keepalives, other payloads) or is cut short."""
    if proto == IPPROTO_IPIP or proto == IPPROTO_IPV6_IN_IP:
        return LINKTYPE_RAW, l4
    if proto == IPPROTO_GRE:
        if l4 + GRE_HEADER_LEN > end:
            return None
        flags = (buf[l4] << 8) | buf[l4 + 1]
        if flags & GRE_VERSION_MASK:
            return None
        ptype = (buf[l4 + 2] << 8) | buf[l4 + 3]
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
    if proto == 17:  # UDP: the ports were checked by the caller
        dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
        body = l4 + 8
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
