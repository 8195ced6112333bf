"""Seeded mutations of real capture files (pcap, pcapng; gzip-compressed or not).

A capture is parsed into *units* — pcap records or pcapng blocks — so that mutations can
work on structure (a record's length field, a packet's IP header, a block's trailer) and a
truncation can cut exactly at, or inside, any unit. ``SeedCapture.mutant(seed, n)`` is a pure
function of (file name, bytes, seed, n): the same arguments always give the same mutant,
which is what makes a crash reproducible from its report line.

Even-numbered mutants are truncations, cycling through every cut position of the file (each
record boundary, a point inside each record, a point inside the file header); odd-numbered
mutants stack one to three of the structural mutations in ``MUTATIONS``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import random
import struct
from dataclasses import dataclass

#: pcap magic (as read in the file's own byte order) → record header length.
PCAP_MAGICS = {0xA1B2C3D4: 16, 0xA1B23C4D: 16, 0xA1B2CD34: 24}
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
BT_IDB, BT_OPB, BT_SPB, BT_EPB = 1, 2, 3, 6
BT_DSB = 0x0000000A
SECRETS_TLS_KEY_LOG = 0x544C534B  # "TLSK"

#: Link types a mutant may claim: unsupported ones, supported ones that do not fit the
#: frames, and values with the FCS bits of the pcap link type field set.
BOGUS_LINKTYPES = (0, 1, 6, 9, 12, 14, 101, 105, 108, 113, 127, 147, 192, 228, 229, 252, 276, 0xFFFF,
                   0x10000001, 0x0FFFFFFF, 0xFFFFFFFF)
SNAPLENS = (0, 1, 13, 14, 20, 34, 38, 40, 54, 58, 60, 64, 68, 74, 96, 128, 200)
TLS_CONTENT_TYPES = (20, 21, 22, 23, 24)
VLAN_TPIDS = (0x8100, 0x88A8, 0x9100)
WIDTHS = {"u8": 8, "u16": 16, "u24": 24, "u32": 32, "lo4": 4, "hi4": 4}


@dataclass
class Unit:
    """One pcap record or one pcapng block, as raw bytes.

    ``frame_off``/``frame_len`` locate the packet's frame inside ``raw`` (``frame_off`` is
    None for blocks that carry no packet).
    """

    raw: bytearray
    kind: str  # "record", "shb", "idb", "epb", "spb", "opb", "block"
    order: str = "<"
    linktype: int = 1
    frame_off: int | None = None
    frame_len: int = 0

    @property
    def frame(self) -> bytes:
        assert self.frame_off is not None
        return bytes(self.raw[self.frame_off : self.frame_off + self.frame_len])


@dataclass
class Capture:
    """A parsed capture: ``head`` (the pcap file header; empty for pcapng) and its units."""

    fmt: str
    head: bytearray
    units: list[Unit]
    order: str = "<"
    record_header_len: int = 16

    def packets(self) -> list[int]:
        return [i for i, u in enumerate(self.units) if u.frame_off is not None]

    def serialize(self) -> bytes:
        return bytes(self.head) + b"".join(bytes(u.raw) for u in self.units)

    def copy(self) -> "Capture":
        return Capture(self.fmt, bytearray(self.head), [_clone(u) for u in self.units], self.order, self.record_header_len)


@dataclass
class Mutant:
    data: bytes
    steps: list[str]
    suffix: str
    #: For pure truncations: "damaged" (cut inside a record: exit code 3 expected) or
    #: "clean" (cut at a record boundary: no damage may be claimed); None otherwise.
    expect: str | None = None

    def describe(self) -> str:
        return "; ".join(self.steps)


# -- parsing ------------------------------------------------------------------------------------
def parse(data: bytes) -> Capture:
    """Parse a well-formed capture (the seeds are real files)."""
    if len(data) >= 4 and struct.unpack("<I", data[:4])[0] == PCAPNG_SHB:
        return _parse_pcapng(data)
    return _parse_pcap(data)


def _parse_pcap(data: bytes) -> Capture:
    order = "<" if struct.unpack("<I", data[:4])[0] in PCAP_MAGICS else ">"
    hlen = PCAP_MAGICS[struct.unpack(order + "I", data[:4])[0]]
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    units = []
    pos = 24
    while pos + hlen <= len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        end = pos + hlen + caplen
        if end > len(data):
            break
        units.append(Unit(bytearray(data[pos:end]), "record", order, linktype, hlen, caplen))
        pos = end
    return Capture("pcap", bytearray(data[:24]), units, order, hlen)


def _parse_pcapng(data: bytes) -> Capture:
    units = []
    linktypes: list[int] = []
    order = "<"
    pos = 0
    while pos + 12 <= len(data):
        if struct.unpack_from("<I", data, pos)[0] == PCAPNG_SHB:
            order = "<" if struct.unpack_from("<I", data, pos + 8)[0] == PCAPNG_BOM else ">"
            linktypes = []
        btype, blen = struct.unpack_from(order + "II", data, pos)
        if blen < 12 or pos + blen > len(data):
            break
        unit = Unit(bytearray(data[pos : pos + blen]), "block", order)
        if btype == PCAPNG_SHB:
            unit.kind = "shb"
        elif btype == BT_IDB:
            unit.kind = "idb"
            linktypes.append(struct.unpack_from(order + "H", data, pos + 8)[0])
        elif btype in (BT_EPB, BT_OPB) and blen >= 32:
            ifid = struct.unpack_from(order + ("I" if btype == BT_EPB else "H"), data, pos + 8)[0]
            unit.kind = "epb" if btype == BT_EPB else "opb"
            unit.linktype = linktypes[ifid] if ifid < len(linktypes) else 1
            unit.frame_off = 28
            unit.frame_len = struct.unpack_from(order + "I", data, pos + 20)[0]
        elif btype == BT_SPB and blen >= 16:
            unit.kind = "spb"
            unit.linktype = linktypes[0] if linktypes else 1
            unit.frame_off = 12
            unit.frame_len = min(struct.unpack_from(order + "I", data, pos + 8)[0], blen - 16)
        units.append(unit)
        pos += blen
    return Capture("pcapng", bytearray(), units, units[0].order if units else "<")


# -- where the length fields of a frame are ---------------------------------------------------------
def _be16(f: bytes, off: int) -> int:
    return (f[off] << 8) | f[off + 1]


def _network_offset(linktype: int, f: bytes) -> int | None:
    """Offset of the IP header in a frame, for the link types smtpflow reads."""
    if linktype == 1:
        if len(f) < 14:
            return None
        etype, off = _be16(f, 12), 14
        while etype in VLAN_TPIDS and off + 4 <= len(f):
            etype, off = _be16(f, off + 2), off + 4
        if etype == 0x8903 and off + 16 <= len(f):  # Cisco FabricPath
            etype, off = _be16(f, off + 14), off + 16
        return off if etype in (0x0800, 0x86DD) else None
    if linktype == 113:
        return 16
    if linktype == 276:
        return 20
    if linktype in (0, 108):
        return 4
    if linktype in (12, 14, 101, 228, 229):
        return 0
    return None


def length_fields(linktype: int, f: bytes) -> list[tuple[str, int, str]]:
    """(name, offset in the frame, kind) of every IP/TCP/UDP/DNS/TLS length field found."""
    out: list[tuple[str, int, str]] = []
    off = _network_offset(linktype, f)
    if off is None or off >= len(f):
        return out
    version = f[off] >> 4
    if version == 4 and off + 20 <= len(f):
        out += [("ipv4.ihl", off, "lo4"), ("ipv4.total_length", off + 2, "u16")]
        proto, l4 = f[off + 9], off + (f[off] & 0x0F) * 4
    elif version == 6 and off + 40 <= len(f):
        out.append(("ipv6.payload_length", off + 4, "u16"))
        proto, l4 = f[off + 6], off + 40
    else:
        return out
    dns = None
    if proto == 6 and l4 + 20 <= len(f):
        out.append(("tcp.data_offset", l4 + 12, "hi4"))
        p = l4 + (f[l4 + 12] >> 4) * 4
        if 53 in (_be16(f, l4), _be16(f, l4 + 2)):
            if p + 2 <= len(f):
                out.append(("dns.tcp_length", p, "u16"))
                dns = p + 2
        else:
            while p + 5 <= len(f) and f[p] in TLS_CONTENT_TYPES and f[p + 1] == 3:
                out.append(("tls.record_length", p + 3, "u16"))
                if f[p] == 22 and p + 9 <= len(f):
                    out.append(("tls.handshake_length", p + 6, "u24"))
                    if f[p + 5] in (1, 2) and p + 44 <= len(f):  # ClientHello/ServerHello
                        out.append(("tls.session_id_length", p + 43, "u8"))
                p += 5 + _be16(f, p + 3)
    elif proto == 17 and l4 + 8 <= len(f):
        out.append(("udp.length", l4 + 4, "u16"))
        if 53 in (_be16(f, l4), _be16(f, l4 + 2)):
            dns = l4 + 8
    if dns is not None and dns + 12 <= len(f):
        for i, name in enumerate(("qdcount", "ancount", "nscount", "arcount")):
            out.append((f"dns.{name}", dns + 4 + 2 * i, "u16"))
        if dns + 13 <= len(f):
            out.append(("dns.label_length", dns + 12, "u8"))
    return out


def _get(buf: bytearray, off: int, kind: str) -> int:
    if kind == "lo4":
        return buf[off] & 0x0F
    if kind == "hi4":
        return buf[off] >> 4
    return int.from_bytes(buf[off : off + WIDTHS[kind] // 8], "big")


def _set(buf: bytearray, off: int, kind: str, value: int) -> None:
    if kind == "lo4":
        buf[off] = (buf[off] & 0xF0) | value
    elif kind == "hi4":
        buf[off] = (buf[off] & 0x0F) | (value << 4)
    else:
        size = WIDTHS[kind] // 8
        buf[off : off + size] = value.to_bytes(size, "big")


def absurd(rng: random.Random, current: int, bits: int) -> int:
    """A value a length field should never hold, or one just off the right one."""
    top = (1 << bits) - 1
    value = rng.choice((0, 1, top, top - 1, (top + 1) // 2, current + 1, current - 1, current * 2, rng.randrange(top + 1)))
    return min(max(value, 0), top)


# -- the mutations ---------------------------------------------------------------------------------
# Each takes (rng, capture), changes the capture in place and returns a description, or None
# when it does not apply to this capture.


def _pick_packet(rng: random.Random, cap: Capture) -> int | None:
    packets = cap.packets()
    return rng.choice(packets) if packets else None


def m_bitflip(rng: random.Random, cap: Capture) -> str | None:
    """Flip 1–32 bits, half of the time within a packet's first 80 bytes (its headers)."""
    flips = []
    for _ in range(rng.randint(1, 32)):
        i = rng.randrange(len(cap.units) + 1)
        if i == len(cap.units):
            target, base, span, label = cap.head, 0, len(cap.head), "header"
        else:
            unit = cap.units[i]
            target, label = unit.raw, f"unit {i}"
            if unit.frame_off is not None and unit.frame_len and rng.random() < 0.5:
                base, span = unit.frame_off, min(unit.frame_len, 80)
            else:
                base, span = 0, len(unit.raw)
        if span <= 0:
            continue
        pos = base + rng.randrange(span)
        b = rng.randrange(8)
        target[pos] ^= 1 << b
        flips.append(f"{label}+{pos}.{b}")
    return f"bitflip({', '.join(flips)})" if flips else None


def m_length_field(rng: random.Random, cap: Capture) -> str | None:
    """Put an absurd value into 1–4 IP/TCP/UDP/DNS/TLS length fields."""
    done = []
    for _ in range(rng.randint(1, 4)):
        i = _pick_packet(rng, cap)
        if i is None:
            return None
        unit = cap.units[i]
        fields = length_fields(unit.linktype, unit.frame)
        if not fields:
            continue
        name, off, kind = rng.choice(fields)
        pos = unit.frame_off + off
        value = absurd(rng, _get(unit.raw, pos, kind), WIDTHS[kind])
        _set(unit.raw, pos, kind, value)
        done.append(f"{name}={value} in unit {i}")
    return f"length_field({', '.join(done)})" if done else None


def _set_frame(cap: Capture, i: int, frame: bytes) -> None:
    """Replace a packet's captured bytes (shorter: a snaplen cut), keeping its wire length."""
    unit = cap.units[i]
    o = unit.order
    if unit.kind == "record":
        unit.raw = bytearray(unit.raw[: cap.record_header_len]) + frame
        struct.pack_into(o + "I", unit.raw, 8, len(frame))
    elif unit.kind in ("epb", "opb"):
        body = bytearray(unit.raw[8:28]) + frame + bytes(-len(frame) % 4)
        struct.pack_into(o + "I", body, 12, len(frame))
        unit.raw = bytearray(struct.pack(o + "II", struct.unpack_from(o + "I", unit.raw)[0], len(body) + 12)) + body
        unit.raw += struct.pack(o + "I", len(unit.raw) + 4)
    else:  # SPB: its captured length is implied by the block length
        body = bytearray(unit.raw[8:12]) + frame + bytes(-len(frame) % 4)
        unit.raw = bytearray(struct.pack(o + "II", BT_SPB, len(body) + 12)) + body + struct.pack(o + "I", len(body) + 12)
    unit.frame_len = len(frame)


def m_snaplen(rng: random.Random, cap: Capture) -> str | None:
    """Cut packets short as a small capture snaplen would (the wire length stays)."""
    packets = cap.packets()
    if not packets:
        return None
    snap = rng.choice(SNAPLENS)
    share = rng.choice((1.0, 0.5, 0.1))
    cut = [i for i in packets if rng.random() < share and cap.units[i].frame_len > snap]
    for i in cut:
        _set_frame(cap, i, cap.units[i].frame[:snap])
    if cap.fmt == "pcap" and share == 1.0:
        struct.pack_into(cap.order + "I", cap.head, 16, snap)
    return f"snaplen({snap}, {len(cut)} packets)"


def _clone(unit: Unit) -> Unit:
    return Unit(bytearray(unit.raw), unit.kind, unit.order, unit.linktype, unit.frame_off, unit.frame_len)


def m_duplicate(rng: random.Random, cap: Capture) -> str | None:
    """Duplicate packets: right after themselves (retransmission-like) or later on."""
    packets = cap.packets()
    if not packets:
        return None
    count = len(packets) if rng.random() < 0.1 else rng.randint(1, 10)
    picks = sorted((rng.choice(packets) for _ in range(count)), reverse=True)
    for i in picks:
        where = i + 1 if rng.random() < 0.6 else rng.randint(i + 1, len(cap.units))
        cap.units.insert(where, _clone(cap.units[i]))
    return f"duplicate({len(picks)} packets)"


def m_drop(rng: random.Random, cap: Capture) -> str | None:
    """Lose packets, as a capture under load does."""
    packets = cap.packets()
    if not packets:
        return None
    gone = set(rng.sample(packets, min(len(packets), rng.randint(1, 8))))
    cap.units = [u for i, u in enumerate(cap.units) if i not in gone]
    return f"drop({sorted(gone)})"


def m_reorder(rng: random.Random, cap: Capture) -> str | None:
    """Reorder packets (swaps, a reversed or shuffled window) among the packet slots."""
    slots = cap.packets()
    if len(slots) < 2:
        return None
    order = list(slots)
    how = rng.choice(("swap", "reverse", "shuffle"))
    if how == "swap":
        for _ in range(rng.randint(1, 6)):
            a, b = rng.randrange(len(order)), rng.randrange(len(order))
            order[a], order[b] = order[b], order[a]
    else:
        width = rng.randint(2, min(len(order), 40))
        start = rng.randrange(len(order) - width + 1)
        window = order[start : start + width]
        if how == "reverse":
            window.reverse()
        else:
            rng.shuffle(window)
        order[start : start + width] = window
    units = [cap.units[i] for i in order]
    for slot, unit in zip(slots, units):
        cap.units[slot] = unit
    return f"reorder({how})"


def m_timestamp(rng: random.Random, cap: Capture) -> str | None:
    """Absurd timestamps: zero, the largest values, fractions out of range, time going back."""
    i = _pick_packet(rng, cap)
    if i is None:
        return None
    unit = cap.units[i]
    o = unit.order
    if unit.kind == "record":
        sec = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, struct.unpack_from(o + "I", unit.raw)[0] - 86400))
        frac = rng.choice((0, 999_999, 1_000_000, 999_999_999, 1_000_000_000, 0xFFFFFFFF))
        struct.pack_into(o + "II", unit.raw, 0, max(sec, 0), frac)
        return f"timestamp(unit {i}: {sec}.{frac})"
    if unit.kind in ("epb", "opb"):
        hi, lo = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF)), rng.randrange(1 << 32)
        struct.pack_into(o + "II", unit.raw, 12, hi, lo)
        return f"timestamp(unit {i}: {hi}:{lo})"
    return None


def m_linktype(rng: random.Random, cap: Capture) -> str | None:
    """Claim a link type the frames are not (or one smtpflow cannot read)."""
    value = rng.choice(BOGUS_LINKTYPES)
    if cap.fmt == "pcap":
        struct.pack_into(cap.order + "I", cap.head, 20, value)
        return f"linktype({value:#x})"
    idbs = [i for i, u in enumerate(cap.units) if u.kind == "idb"]
    if not idbs:
        return None
    i = rng.choice(idbs)
    struct.pack_into(cap.units[i].order + "H", cap.units[i].raw, 8, value & 0xFFFF)
    return f"linktype(idb unit {i}: {value & 0xFFFF:#x})"


def m_record_length(rng: random.Random, cap: Capture) -> str | None:
    """pcap: absurd captured or wire lengths in a record header."""
    if cap.fmt != "pcap" or not cap.units:
        return None
    i = rng.randrange(len(cap.units))
    unit = cap.units[i]
    caplen, wirelen = struct.unpack_from(unit.order + "II", unit.raw, 8)
    which = rng.choice(("caplen", "wirelen"))
    value = rng.choice((0, 1, caplen - 1, caplen + 1, 65535, 65536, 262144, 262145, 1 << 26, 0x7FFFFFFF, 0xFFFFFFFF,
                        absurd(rng, caplen, 32)))
    value = min(max(value, 0), 0xFFFFFFFF)
    struct.pack_into(unit.order + "I", unit.raw, 8 if which == "caplen" else 12, value)
    return f"record_length(unit {i}: {which}={value})"


def m_file_header(rng: random.Random, cap: Capture) -> str | None:
    """pcap: change the magic (resolution, byte order, the 'modified' format), version or snaplen."""
    if cap.fmt != "pcap":
        return None
    o = cap.order
    what = rng.choice(("magic", "version", "snaplen"))
    if what == "magic":
        magic = rng.choice((0xA1B2C3D4, 0xA1B23C4D, 0xA1B2CD34, 0xD4C3B2A1, 0x4D3CB2A1, 0))
        struct.pack_into(o + "I", cap.head, 0, magic)
        return f"file_header(magic={magic:#x})"
    if what == "version":
        major, minor = rng.choice(((0, 0), (1, 0), (2, 3), (0xFFFF, 0xFFFF)))
        struct.pack_into(o + "HH", cap.head, 4, major, minor)
        return f"file_header(version={major}.{minor})"
    snap = rng.choice((0, 1, 64, 65535, 262144, 1 << 26, 0xFFFFFFFF))
    struct.pack_into(o + "I", cap.head, 16, snap)
    return f"file_header(snaplen={snap})"


def m_block_length(rng: random.Random, cap: Capture) -> str | None:
    """pcapng: wrong block lengths in the header, the trailer or both."""
    if cap.fmt != "pcapng" or not cap.units:
        return None
    i = rng.randrange(len(cap.units))
    unit = cap.units[i]
    blen = len(unit.raw)
    value = rng.choice((0, 4, 11, 12, 13, blen - 4, blen + 4, blen + 2, 16 * 1024 * 1024, 16 * 1024 * 1024 + 4,
                        0xFFFFFFFC, 0xFFFFFFFF, absurd(rng, blen, 32)))
    value = min(max(value, 0), 0xFFFFFFFF)
    where = rng.choice(("header", "trailer", "both"))
    if where in ("header", "both"):
        struct.pack_into(unit.order + "I", unit.raw, 4, value)
    if where in ("trailer", "both"):
        struct.pack_into(unit.order + "I", unit.raw, blen - 4, value)
    return f"block_length(unit {i} {unit.kind}: {where}={value})"


def m_packet_block(rng: random.Random, cap: Capture) -> str | None:
    """pcapng: an enhanced packet block naming a missing interface or an impossible length."""
    blocks = [i for i, u in enumerate(cap.units) if u.kind in ("epb", "opb")]
    if cap.fmt != "pcapng" or not blocks:
        return None
    i = rng.choice(blocks)
    unit = cap.units[i]
    if rng.random() < 0.5:
        ifid = rng.choice((1, 2, 63, 64, 65, 0xFFFF, 0xFFFFFFFF if unit.kind == "epb" else 0xFFFF))
        struct.pack_into(unit.order + ("I" if unit.kind == "epb" else "H"), unit.raw, 8, ifid)
        return f"packet_block(unit {i}: interface {ifid})"
    caplen = rng.choice((0, unit.frame_len + 1, len(unit.raw), len(unit.raw) - 31, 0xFFFFFFFF))
    struct.pack_into(unit.order + "I", unit.raw, 20, caplen)
    return f"packet_block(unit {i}: caplen {caplen})"


def m_interface(rng: random.Random, cap: Capture) -> str | None:
    """pcapng: absurd interface options (timestamp resolution and offset, option lengths)."""
    idbs = [i for i, u in enumerate(cap.units) if u.kind == "idb"]
    if cap.fmt != "pcapng" or not idbs:
        return None
    i = rng.choice(idbs)
    unit = cap.units[i]
    o = unit.order
    body = bytearray(unit.raw[8:16])
    what = rng.choice(("tsresol", "tsoffset", "option_length"))
    if what == "tsresol":
        value = rng.choice((0, 3, 9, 18, 19, 0x7F, 0x80, 0xBF, 0xC0, 0xFF))
        body += struct.pack(o + "HH", 9, 1) + bytes([value, 0, 0, 0])
    elif what == "tsoffset":
        value = rng.choice((-(1 << 63), -1, 1 << 33, (1 << 63) - 1))
        body += struct.pack(o + "HHq", 14, 8, value)
    else:
        value = rng.choice((4, 0xFF, 0xFFFF))
        body += struct.pack(o + "HH", 9, value) + bytes(4)
    body += struct.pack(o + "HH", 0, 0)
    unit.raw = bytearray(struct.pack(o + "II", BT_IDB, len(body) + 12)) + body + struct.pack(o + "I", len(body) + 12)
    return f"interface(unit {i}: {what}={value})"


def m_section(rng: random.Random, cap: Capture) -> str | None:
    """pcapng: a broken byte-order magic, or a new section (with no interfaces) mid-file."""
    if cap.fmt != "pcapng" or not cap.units:
        return None
    if rng.random() < 0.5:
        bom = rng.choice((0, 0x1A2B3C4C, 0xFFFFFFFF))
        j = rng.choice([i for i, u in enumerate(cap.units) if u.kind == "shb"])
        struct.pack_into("<I", cap.units[j].raw, 8, bom)
        return f"section(unit {j}: byte-order magic {bom:#x})"
    where = rng.randint(1, len(cap.units))
    cap.units.insert(where, _clone(cap.units[0]))
    return f"section(new section before unit {where})"


#: (mutation, weight): the header-oriented ones are tried most.
MUTATIONS = (
    (m_bitflip, 6),
    (m_length_field, 6),
    (m_snaplen, 3),
    (m_duplicate, 3),
    (m_drop, 2),
    (m_reorder, 3),
    (m_timestamp, 2),
    (m_linktype, 1),
    (m_record_length, 3),
    (m_file_header, 1),
    (m_block_length, 3),
    (m_packet_block, 2),
    (m_interface, 2),
    (m_section, 1),
)


# -- compression (applied last) ------------------------------------------------------------------
COMPRESSORS = {"gzip": (gzip.compress, ".gz"), "bzip2": (bz2.compress, ".bz2"), "xz": (lzma.compress, ".xz")}
try:
    import zstandard

    COMPRESSORS["zstd"] = (lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data), ".zst")
except ImportError:  # smtpflow's dependency; absent only where it could not be installed
    pass


def _compress(rng: random.Random, data: bytes, steps: list[str], keep_gzip: bool) -> tuple[bytes, str, str | None]:
    """Gzip seeds stay gzip; others are sometimes compressed. The compressed stream may be cut
    or have bits flipped.

    Returns (bytes, file name suffix, "cut" / "flipped" / None).
    """
    if keep_gzip:
        name = "gzip"
    elif rng.random() < 0.08:
        name = rng.choice(sorted(COMPRESSORS))
    else:
        return data, "", None
    compress, suffix = COMPRESSORS[name]
    packed = compress(data)
    damage = rng.random()
    if damage < 0.3:
        cut = rng.randrange(len(packed))
        steps.append(f"{name}(cut at {cut} of {len(packed)} compressed bytes)")
        return packed[:cut], suffix, "cut"
    if damage < 0.45:
        corrupt = bytearray(packed)
        flips = [rng.randrange(len(corrupt) * 8) for _ in range(rng.randint(1, 4))]
        for bit in flips:
            corrupt[bit >> 3] ^= 1 << (bit & 7)
        steps.append(f"{name}(bits {flips} of the compressed stream flipped)")
        return bytes(corrupt), suffix, "flipped"
    if not keep_gzip:
        steps.append(name)
    return packed, suffix, None


def to_pcapng(cap: Capture, order: str, secrets: bytes = b"") -> bytes:
    """The same packets as a one-interface pcapng file (so pcapng mutations get seeds too);
    with ``secrets``, a TLS key log in a Decryption Secrets Block before them (as editcap
    --inject-secrets writes it)."""
    assert cap.fmt == "pcap"
    o = cap.order
    magic, _, _, _, _, snaplen, linktype = struct.unpack(o + "IHHiIII", bytes(cap.head))
    nano = magic == 0xA1B23C4D

    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack(order + "II", btype, len(body) + 12) + body + struct.pack(order + "I", len(body) + 12)

    out = [block(PCAPNG_SHB, struct.pack(order + "IHHq", PCAPNG_BOM, 1, 0, -1))]
    if secrets:
        out.append(block(BT_DSB, struct.pack(order + "II", SECRETS_TLS_KEY_LOG, len(secrets)) + secrets))
    out += [block(BT_IDB, struct.pack(order + "HHIHH", linktype & 0xFFFF, 0, snaplen, 9, 1) + bytes([9 if nano else 6, 0, 0, 0])
                 + struct.pack(order + "HH", 0, 0))]
    for unit in cap.units:
        sec, frac, caplen, wirelen = struct.unpack_from(o + "IIII", unit.raw)
        units = sec * (1_000_000_000 if nano else 1_000_000) + frac
        out.append(block(BT_EPB, struct.pack(order + "IIIII", 0, units >> 32, units & 0xFFFFFFFF, caplen, wirelen) + unit.frame))
    return b"".join(out)


# -- the seeds -------------------------------------------------------------------------------------
class SeedCapture:
    """A real capture file to derive mutants from."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name = name
        self.gzipped = data[:2] == b"\x1f\x8b"
        inner = gzip.decompress(data) if self.gzipped else data
        self.capture = parse(inner)
        self.suffix = ".pcapng" if self.capture.fmt == "pcapng" else ".pcap"
        # Cut positions: every record boundary (keeping 0 … n-1 records), one point inside
        # every record, and one inside the pcap file header.
        units = len(self.capture.units)
        self.cuts = [(kind, k) for k in range(units) for kind in ("boundary", "inside")]
        if self.capture.fmt == "pcap":
            self.cuts.append(("inside", -1))

    @classmethod
    def load(cls, path: str, name: str | None = None) -> "SeedCapture":
        with open(path, "rb") as fh:
            return cls(name or path, fh.read())

    def pcapng_twin(self, order: str, secrets: bytes = b"") -> "SeedCapture | None":
        """This pcap seed converted to pcapng (in ``order`` byte order), named NAME@pcapng; with
        ``secrets`` (its key log), carrying them in a Decryption Secrets Block."""
        if self.capture.fmt != "pcap" or self.capture.record_header_len != 16:
            return None
        return SeedCapture(self.name + "@pcapng", to_pcapng(self.capture, order, secrets))

    def mutant(self, seed: int, n: int) -> Mutant:
        rng = random.Random(f"{seed}:{self.name}:{n}")
        if n % 2 == 0 and self.cuts:
            data, steps, expect = self._truncation(rng, n // 2)
        else:
            cap = self.capture.copy()
            steps = []
            for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
                for _attempt in range(8):
                    ops, weights = zip(*MUTATIONS)
                    step = rng.choices(ops, weights)[0](rng, cap)
                    if step:
                        steps.append(step)
                        break
            data, expect = cap.serialize(), None
        data, suffix, broken = _compress(rng, data, steps, self.gzipped)
        # A cut stream is damage; flipped bits may be (a CRC error) or not (in the gzip header).
        expect = {"cut": "damaged", "flipped": None}.get(broken, expect)
        return Mutant(data, steps or ["unchanged"], self.suffix + suffix, expect)

    def _truncation(self, rng: random.Random, index: int) -> tuple[bytes, list[str], str]:
        cap = self.capture
        kind, k = self.cuts[index % len(self.cuts)]
        full = cap.serialize()
        if k < 0:
            cut = rng.randrange(1, len(cap.head))
            return full[:cut], [f"truncate(inside the file header, at byte {cut})"], "damaged"
        start = len(cap.head) + sum(len(u.raw) for u in cap.units[:k])
        if kind == "boundary":
            return full[:start], [f"truncate(at record boundary {k}, byte {start})"], "clean"
        cut = start + rng.randrange(1, len(cap.units[k].raw))
        return full[:cut], [f"truncate(inside record {k}, at byte {cut})"], "damaged"
