"""pcapng file format (Wireshark/dumpcap default): sections, interfaces, packet blocks.

Layouts (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html)::

    generic block: block_type u32, block_total_length u32, body..., block_total_length u32
    SHB  0x0A0D0D0A: byte_order_magic u32 (0x1A2B3C4D), major u16, minor u16, section_length i64, options
    IDB  0x00000001: linktype u16, reserved u16, snaplen u32, options (if_tsresol=9, if_tsoffset=14)
    EPB  0x00000006: interface_id u32, ts_high u32, ts_low u32, caplen u32, wirelen u32, data, options
    SPB  0x00000003: wirelen u32, data (caplen = min(wirelen, snaplen, block room))
    OPB  0x00000002: interface_id u16, drops u16, ts_high u32, ts_low u32, caplen u32, wirelen u32, data

Every section carries its own byte order and its own interface list; every interface its
own link type and timestamp resolution. Unknown block types are skipped.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Callable, Iterator

from .errors import READ_ERRORS, CaptureError, Damage
from .interrupt import STOP
from .pcap import EarlyEnd, Record, StreamBuffer, Windows, _nothing
from .window import ALL_TIME, LATEST

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_OPB = 0x00000002  # obsolete Packet Block
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BT_DSB = 0x0000000A  # Decryption Secrets Block (editcap --inject-secrets, Wireshark "embed TLS secrets")
BYTE_ORDER_MAGIC = 0x1A2B3C4D

#: A DSB's secrets type for an NSS key log (``SSLKEYLOGFILE`` lines): "TLSK".
SECRETS_TLS_KEY_LOG = 0x544C534B
#: Key log text a file may hand on from its DSBs; past it their secrets are skipped (counted).
MAX_SECRETS_BYTES = 64 * 1024 * 1024

OPT_ENDOFOPT = 0
OPT_IF_TSRESOL = 9
OPT_IF_TSOFFSET = 14

#: Blocks larger than this are corruption (pcapng readers commonly cap blocks at 16 MiB).
MAX_BLOCK_LENGTH = 16 * 1024 * 1024
MIN_BLOCK_LENGTH = 12


def int64(value: int) -> int:
    """``value`` wrapped into a signed 64-bit integer, as the C hot path computes timestamps.

    Absurd timestamps (a corrupt block, a huge if_tsoffset) then stay machine integers
    instead of overflowing wherever a timestamp must fit 64 bits.
    """
    return ((value + (1 << 63)) & 0xFFFF_FFFF_FFFF_FFFF) - (1 << 63)


def ts_conversion(tsresol: int, tsoffset: int) -> tuple[int, int, int]:
    """How raw 64-bit timestamp units become integer nanoseconds: (kind, amount, offset_ns).

    kind 0: units × amount; kind 1: units ÷ amount; kind 2: (units × 10^9) >> amount.
    """
    offset_ns = int64(tsoffset * 1_000_000_000)
    if tsresol & 0x80:  # power of two: units of 2^-n seconds
        return 2, tsresol & 0x7F, offset_ns
    if tsresol <= 9:
        return 0, 10 ** (9 - tsresol), offset_ns
    return 1, 10 ** (tsresol - 9), offset_ns


def ts_converter(tsresol: int, tsoffset: int) -> Callable[[int], int]:
    """Return a function turning raw 64-bit timestamp units into integer nanoseconds."""
    kind, amount, offset_ns = ts_conversion(tsresol, tsoffset)
    if kind == 2:
        return lambda units: int64(((units * 1_000_000_000) >> amount) + offset_ns)
    if kind == 0:
        return lambda units: int64(units * amount + offset_ns)
    return lambda units: int64(units // amount + offset_ns)


class _Interface:
    __slots__ = ("linktype", "snaplen", "to_ns", "conversion")

    def __init__(self, linktype: int, snaplen: int, tsresol: int, tsoffset: int) -> None:
        self.linktype = linktype
        self.snaplen = snaplen
        self.to_ns = ts_converter(tsresol, tsoffset)
        self.conversion = (linktype,) + ts_conversion(tsresol, tsoffset)


def looks_like_pcapng(head: bytes) -> bool:
    return len(head) >= 4 and struct.unpack("<I", head[:4])[0] == BT_SHB


class PcapngReader(EarlyEnd):
    """Streams records out of a pcapng file object, section by section."""

    format = "pcapng"

    def __init__(self, fileobj: BinaryIO, path: str, head: bytes = b"") -> None:
        self.path = path
        self._file = fileobj
        self._rest = head + fileobj.read(max(0, 12 - len(head)))
        if not looks_like_pcapng(self._rest):
            raise CaptureError(f"{path}: not a pcapng file")
        if len(self._rest) < 12 or struct.unpack("<I", self._rest[8:12])[0] not in (
            BYTE_ORDER_MAGIC,
            0x4D3C2B1A,
        ):
            raise CaptureError(f"{path}: pcapng section header has no valid byte-order magic")
        self.linktypes: set[int] = set()
        self.interfaces_seen = 0
        self.damage: Damage | None = None
        self.records = 0
        self.bytes_read = 0
        self.skipped_blocks = 0
        #: Set by the layer above: called with the key log text of each Decryption Secrets Block,
        #: in the file's order (before the packets that follow it). Not set: DSBs are skipped.
        self.on_secrets = None
        self.secrets_bytes = 0
        self.secrets_skipped = 0  # DSBs of another kind (WireGuard, SSH …), broken, or past the limit
        #: Set by the layer above to drop irrelevant records in bulk (see decode.fastpath).
        self.prefilter = None
        #: The whole file mapped in memory (uncompressed regular files): no reads, no copies.
        self.mapped = None
        #: A time window's bounds, and what the scans found of it (see ``PcapReader``).
        self.bounds = ALL_TIME
        self.outside = 0
        self.past_window = False
        #: Set when the user asked the reading to stop (Ctrl-C: ``capture.interrupt``); it then
        #: stops after the records up to the time ``stop_time()`` gives (None: at once).
        self.interrupted = False
        self.stop_time = None

    def __iter__(self) -> Iterator[Record]:
        # What has come so far of a pipe (standard input): it may never end. Files read whole.
        read = getattr(self._file, "read1", None) or self._file.read
        buf = self._rest
        pos = 0
        base = 0
        windows = Windows(self.mapped)
        if self.mapped is not None:
            buf = self.mapped
            read = _nothing
        count = 0
        stream = StreamBuffer(read)
        order = "<"
        interfaces: list[_Interface] = []
        u32 = struct.Struct("<I").unpack_from
        epb = struct.Struct("<IIIII").unpack_from
        prefilter = self.prefilter
        conversions: tuple = ()
        stop_at = LATEST  # after Ctrl-C: the first timestamp not read any more
        try:
            while True:
                if STOP.requested and not self.interrupted:  # Ctrl-C: the capture ends at a common time
                    stop_at = self._interrupt(windows)
                    if stop_at is None:
                        return
                limit = windows.limit(pos)
                if prefilter is not None and interfaces and len(buf) - pos >= 12 and u32(buf, pos)[0] == BT_EPB:
                    # A run of enhanced packet blocks in one call; other blocks, and a block cut
                    # by the buffer's end or broken, are handled below.
                    if len(conversions) != len(interfaces):
                        conversions = tuple(iface.conversion for iface in interfaces)
                    scanned = windows.scan(prefilter.pcapng, buf, pos, order == ">", conversions, self.bounds, limit=limit,
                                           min_left=12)
                    count, pos, again = yield from windows.hand_on(self, prefilter, scanned, buf, base, pos, count, limit)
                    if self.past_window:
                        return
                    if again:
                        continue
                if len(buf) - pos < 12:
                    got = stream.more(buf, pos, base, 12 - (len(buf) - pos))
                    if got is None:
                        if len(buf) - pos:
                            self._damaged(base + pos, count, "the last block header is cut short")
                        return
                    buf, pos, base = got
                    continue
                (btype,) = struct.unpack_from("<I", buf, pos)
                if btype == BT_SHB:
                    # The byte-order magic decides how this section, this block included, is read.
                    (bom,) = struct.unpack_from("<I", buf, pos + 8)
                    if bom == BYTE_ORDER_MAGIC:
                        order = "<"
                    elif bom == 0x4D3C2B1A:
                        order = ">"
                    else:
                        self._damaged(base + pos, count, "section header block with a bad byte-order magic")
                        return
                    u32 = struct.Struct(order + "I").unpack_from
                    epb = struct.Struct(order + "IIIII").unpack_from
                    interfaces = []
                    conversions = ()
                (btype, blen) = struct.unpack_from(order + "II", buf, pos)
                if blen < MIN_BLOCK_LENGTH or blen % 4 or blen > MAX_BLOCK_LENGTH:
                    self._damaged(base + pos, count, f"block length {blen} is impossible")
                    return
                end = pos + blen
                if end > len(buf):
                    got = stream.more(buf, pos, base, end - len(buf))
                    if got is None:
                        self._damaged(base + pos, count, f"the last block is cut short ({len(buf) - pos} of {blen} bytes)")
                        return
                    buf, pos, base = got
                    continue
                if u32(buf, end - 4)[0] != blen:
                    self._damaged(base + pos, count, "block trailer length does not match its header")
                    return
                if btype == BT_EPB:
                    if blen < 32:
                        self._damaged(base + pos, count, "enhanced packet block too short")
                        return
                    ifid, hi, lo, caplen, wirelen = epb(buf, pos + 8)
                    start = pos + 28
                    if ifid >= len(interfaces):
                        self._damaged(base + pos, count, f"packet refers to interface {ifid}, which was never described")
                        return
                    if start + caplen > end - 4:
                        self._damaged(base + pos, count, f"packet length {caplen} overruns its block")
                        return
                    iface = interfaces[ifid]
                    ts = iface.to_ns((hi << 32) | lo)
                    if ts >= stop_at:
                        return
                    count += 1
                    self.records = count
                    self.bytes_read = base + end
                    yield ts, iface.linktype, buf, start, start + caplen, wirelen
                elif btype == BT_SPB:
                    if not interfaces:
                        self._damaged(base + pos, count, "simple packet block before any interface description")
                        return
                    (wirelen,) = u32(buf, pos + 8)
                    iface = interfaces[0]
                    room = blen - 16
                    caplen = min(wirelen, room, iface.snaplen or room)
                    if stop_at != LATEST:
                        return  # after Ctrl-C: a block without a timestamp cannot be placed before the stop
                    count += 1
                    self.records = count
                    self.bytes_read = base + end
                    # Simple packet blocks carry no timestamp.
                    yield 0, iface.linktype, buf, pos + 12, pos + 12 + caplen, wirelen
                elif btype == BT_OPB:
                    ifid, _drops = struct.unpack_from(order + "HH", buf, pos + 8)
                    hi, lo, caplen, wirelen = struct.unpack_from(order + "IIII", buf, pos + 12)
                    start = pos + 28
                    if ifid >= len(interfaces) or start + caplen > end - 4:
                        self._damaged(base + pos, count, "packet block is inconsistent with its interface or length")
                        return
                    iface = interfaces[ifid]
                    ts = iface.to_ns((hi << 32) | lo)
                    if ts >= stop_at:
                        return
                    count += 1
                    self.records = count
                    self.bytes_read = base + end
                    yield ts, iface.linktype, buf, start, start + caplen, wirelen
                elif btype == BT_IDB:
                    iface = self._parse_idb(buf, pos, end, order)
                    if iface is None:
                        self._damaged(base + pos, count, "interface description block is malformed")
                        return
                    interfaces.append(iface)
                    self.interfaces_seen += 1
                    self.linktypes.add(iface.linktype)
                elif btype == BT_DSB:
                    self._secrets(buf, pos, end, order)
                elif btype != BT_SHB:
                    self.skipped_blocks += 1
                pos = end
                self.bytes_read = base + pos
        except READ_ERRORS as exc:  # truncated or corrupt compressed stream
            self._damaged(base + pos, count, f"read error: {exc}")

    def _secrets(self, buf, pos: int, end: int, order: str) -> None:
        """A Decryption Secrets Block: secrets type u32, length u32, then the secrets."""
        if self.on_secrets is None:
            return
        kind, length = struct.unpack_from(order + "II", buf, pos + 8) if end - pos >= 20 else (None, 0)
        if kind != SECRETS_TLS_KEY_LOG or pos + 16 + length > end - 4 or self.secrets_bytes + length > MAX_SECRETS_BYTES:
            self.secrets_skipped += 1
            return
        self.secrets_bytes += length
        self.on_secrets(bytes(buf[pos + 16 : pos + 16 + length]))

    @staticmethod
    def _parse_idb(buf: bytes, pos: int, end: int, order: str) -> _Interface | None:
        if end - pos < 20:
            return None
        linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, pos + 8)
        tsresol, tsoffset = 6, 0
        opt = pos + 16
        limit = end - 4
        while opt + 4 <= limit:
            code, length = struct.unpack_from(order + "HH", buf, opt)
            if code == OPT_ENDOFOPT:
                break
            value = opt + 4
            if value + length > limit:
                return None
            if code == OPT_IF_TSRESOL and length >= 1:
                tsresol = buf[value]
            elif code == OPT_IF_TSOFFSET and length >= 8:
                (tsoffset,) = struct.unpack_from(order + "q", buf, value)
            opt = value + ((length + 3) & ~3)
        if (tsresol & 0x7F) > 63 if tsresol & 0x80 else tsresol > 18:
            return None
        return _Interface(linktype, snaplen, tsresol, tsoffset)
