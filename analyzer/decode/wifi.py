"""IEEE 802.11 data frames (link types 105, and 127 behind a radiotap header): a capture of
a wireless link in monitor mode. Only unprotected data frames carry a packet smtpflow can
read; what WPA encrypted stays unread, as in any tool without the keys.

Layouts::

    radiotap: version (1: 0), pad (1), length (2, little-endian: the whole header), present
              flags and fields (skipped)
    802.11:   frame control (2: type in bits 2-3 of the first byte, subtype in bits 4-7;
              flags in the second: to DS 0x01, from DS 0x02, more fragments 0x04,
              protected 0x40, order 0x80), duration (2), address 1-3 (18), sequence control
              (2: the fragment number in the low 4 bits, little-endian), [address 4 (6) when
              to DS and from DS], [QoS control (2) in QoS subtypes], [HT control (4) when a
              QoS frame has the order flag]
    LLC/SNAP: DSAP 0xAA, SSAP 0xAA, control 0x03, OUI (3: 0), EtherType (2)
"""

from __future__ import annotations

DOT11_TYPE_DATA = 2
DOT11_SUBTYPE_QOS = 0x08  # QoS data and its kin: a QoS control field follows the addresses
DOT11_SUBTYPE_NO_DATA = 0x04  # null data, CF-ACK/CF-poll without data: no payload
DOT11_TO_DS = 0x01
DOT11_FROM_DS = 0x02
DOT11_MORE_FRAGMENTS = 0x04
DOT11_PROTECTED = 0x40
DOT11_ORDER = 0x80
DOT11_HEADER_LEN = 24
DOT11_ADDR4_LEN = 6
DOT11_QOS_LEN = 2
DOT11_HT_CONTROL_LEN = 4
LLC_SNAP = b"\xaa\xaa\x03\x00\x00\x00"
LLC_SNAP_LEN = 8
RADIOTAP_MIN_LEN = 8


def radiotap_length(buf: bytes, start: int, end: int) -> int:
    """The radiotap header's length, or -1 when it is not one (version 0) or is cut."""
    if end - start < RADIOTAP_MIN_LEN or buf[start] != 0:
        return -1
    length = buf[start + 2] | (buf[start + 3] << 8)
    return length if RADIOTAP_MIN_LEN <= length <= end - start else -1


def data_payload(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(EtherType, offset) of what an 802.11 frame at ``start`` carries; (0, 0) when it is not
    an unprotected, unfragmented data frame with LLC/SNAP (management, control, null data,
    encrypted, a fragment: not a packet), (-1, 0) when it is cut short."""
    if end - start < DOT11_HEADER_LEN:
        return -1, 0
    fc0, flags = buf[start], buf[start + 1]
    subtype = fc0 >> 4
    if (fc0 >> 2) & 0x03 != DOT11_TYPE_DATA or fc0 & 0x03 or subtype & DOT11_SUBTYPE_NO_DATA:
        return 0, 0
    if flags & (DOT11_PROTECTED | DOT11_MORE_FRAGMENTS) or buf[start + 22] & 0x0F:
        return 0, 0
    off = start + DOT11_HEADER_LEN
    if flags & DOT11_TO_DS and flags & DOT11_FROM_DS:
        off += DOT11_ADDR4_LEN
    if subtype & DOT11_SUBTYPE_QOS:
        off += DOT11_QOS_LEN
        if flags & DOT11_ORDER:
            off += DOT11_HT_CONTROL_LEN
    if off + LLC_SNAP_LEN > end:
        return -1, 0
    if buf[off : off + 6] != LLC_SNAP:
        return 0, 0
    return (buf[off + 6] << 8) | buf[off + 7], off + LLC_SNAP_LEN
