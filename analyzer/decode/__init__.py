"""Decode layer: link, IP and transport headers, read in place from capture buffers.

One small module per protocol (``ethernet``, ``ip``, ``tcp``, ``udp``, ``icmp``) with
constants named as in the RFCs; :mod:`.packet` is the hot path that combines them and
:mod:`.select` decides which packets are worth an object at all.
"""

from .packet import (
    CHECKSUM_BAD,
    CHECKSUM_OK,
    CHECKSUM_UNKNOWN,
    Decoder,
    DecodeStats,
    IcmpError,
    TcpSegment,
    UdpDatagram,
)
from .select import DEFAULT_SMTP_PORTS, Selector

__all__ = [
    "CHECKSUM_BAD",
    "CHECKSUM_OK",
    "CHECKSUM_UNKNOWN",
    "DEFAULT_SMTP_PORTS",
    "DecodeStats",
    "Decoder",
    "IcmpError",
    "Selector",
    "TcpSegment",
    "UdpDatagram",
]
