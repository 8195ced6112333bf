"""The C hot path changes speed, never results: same records and statistics with or without it."""

from __future__ import annotations

import gzip
import os
import struct

import pytest

from analyzer.decode import fastpath
from conftest import ROOT, all_captures, analyse_twice

from crafting import (CLIENT6, MS_SERVER6, Conversation, dns_exchange, dot11, ethernet, frames, linux_sll2, plain_smtp_session, ppp,
                      write_pcap, write_pcapng)

pytestmark = pytest.mark.skipif(fastpath._fastpath is None, reason="the C hot path was not built (no compiler at install time)")


def both(path, **options):
    """(records, statistics, exit code) with and without the C hot path."""
    return [(records, stats, code) for records, _events, stats, code in
            analyse_twice(path, [(fastpath.Prefilter, "available")], **options)]


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: os.path.relpath(p, os.path.dirname(ROOT)))
@pytest.mark.parametrize("ports", ["default", "all"])
def test_same_results_on_real_captures(path, ports):
    (fast, fast_stats, fast_exit), (slow, slow_stats, slow_exit) = both(path, ports=ports)
    assert fast == slow
    assert fast_stats == slow_stats
    assert fast_exit == slow_exit


def test_same_results_on_a_mixed_crafted_capture(tmp_path):
    packets = dns_exchange(1_700_000_000.0, "www.example.com", [("www.example.com", "A", "93.184.216.34")])
    packets += dns_exchange(1_700_000_000.5, "smtp.office365.com", [("smtp.office365.com", "A", "52.96.10.20")], txid=2)
    packets += plain_smtp_session(Conversation(t=1_700_000_001.0, sport=587)).packets
    packets += plain_smtp_session(Conversation(cport=41000, t=1_700_000_002.0, sport=443)).packets  # web port: skipped
    packets += plain_smtp_session(Conversation(cport=41001, t=1_700_000_003.0, sport=2526)).packets  # MS range, odd port
    packets += plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6, t=1_700_000_004.0)).packets
    other = Conversation(server="198.51.100.7", sport=8080, cport=41002, t=1_700_000_005.0).handshake()
    packets += other.packets
    path = write_pcap(tmp_path / "mixed.pcap", frames(sorted(packets), 1))
    for ports in ("default", "all", "25,8080"):
        (fast, fast_stats, _), (slow, slow_stats, _) = both(path, ports=ports)
        assert fast == slow and fast_stats == slow_stats
    assert fast_stats["dns_ignored"] == 2  # the web lookup and its answer


def test_same_results_for_pcapng_and_truncated_files(tmp_path):
    packets = plain_smtp_session().packets + dns_exchange(1_700_000_100.0, "www.example.com", [("www.example.com", "A", "93.184.216.34")])
    ifaces = [(1, 6), (276, 0x80 | 30)]
    path = write_pcapng(tmp_path / "x.pcapng", ifaces, [(i % 2, ts, ethernet(ip) if i % 2 == 0 else linux_sll2(ip)) for i, (ts, ip) in enumerate(packets)])
    (fast, fast_stats, _), (slow, slow_stats, _) = both(path)
    assert fast == slow and fast_stats == slow_stats
    data = open(path, "rb").read()
    for cut in (len(data) // 3, len(data) - 5):
        cut_path = tmp_path / f"cut{cut}.pcapng"
        cut_path.write_bytes(data[:cut])
        (fast, fast_stats, fast_exit), (slow, slow_stats, slow_exit) = both(str(cut_path))
        assert fast == slow and fast_stats == slow_stats and fast_exit == slow_exit == 3


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
def test_mapped_files_read_in_small_windows_lose_nothing(tmp_path, monkeypatch, fmt):
    """Mapped files are scanned window by window, the pages behind released: with a one-page
    window, session records and counters equal those of the same capture read through gzip."""
    from analyzer.capture import pcap, pcapng

    web = []
    for i in range(300):  # noise: many windows' worth of web traffic around the SMTP session
        conv = Conversation(server="198.51.100.7", sport=443, cport=30000 + i, t=1_700_000_000.0 + i * 0.01)
        web += conv.handshake().packets
    packets = sorted(web + plain_smtp_session(Conversation(t=1_700_000_001.0)).packets)
    if fmt == "pcap":
        path = write_pcap(tmp_path / "x.pcap", frames(packets, 1))
        zipped = write_pcap(tmp_path / "x.pcap.gz", frames(packets, 1), compress=True)
    else:
        blocks = [(0, ts, ethernet(ip)) for ts, ip in packets]
        path = write_pcapng(tmp_path / "x.pcapng", [(1, 6)], blocks)
        zipped = str(tmp_path / "x.pcapng.gz")
        with open(path, "rb") as src, gzip.open(zipped, "wb") as dst:
            dst.write(src.read())
    monkeypatch.setattr(pcap, "MAPPED_WINDOW", 4096)  # both readers window through pcap.Windows
    assert os.path.getsize(path) > 10 * 4096
    (fast, fast_stats, _), (slow, slow_stats, _) = both(str(path))
    (zfast, zfast_stats, _), _ = both(zipped)
    assert fast == slow == zfast
    assert fast_stats == slow_stats == zfast_stats
    assert fast_stats["packets"] == len(packets)
    assert '"outcome": "completed"' in fast


@pytest.mark.parametrize("suffix", [".pcap", ".pcapng", ".pcap.gz"])
def test_scans_stopped_at_their_cap_of_kept_records_lose_nothing(tmp_path, monkeypatch, suffix):
    """A scan keeps at most MAX_KEPT records per call (decoded segments carry payload): with a
    cap of 3, in small mapped windows or a compressed stream, nothing is lost or repeated."""
    from analyzer.capture import pcap

    packets = []
    for i in range(40):
        packets += plain_smtp_session(Conversation(cport=40000 + i, t=1_700_000_000.0 + i)).packets
    packets.sort()
    if suffix == ".pcapng":
        path = write_pcapng(tmp_path / "x.pcapng", [(1, 6)], [(0, ts, ethernet(ip)) for ts, ip in packets])
    else:
        path = write_pcap(tmp_path / f"x{suffix}", frames(packets, 1), compress=suffix.endswith(".gz"))
    whole, _slow = both(path)
    monkeypatch.setattr(fastpath, "MAX_KEPT", 3)
    monkeypatch.setattr(pcap, "MAPPED_WINDOW", 8192)
    capped, _slow = both(path)
    assert capped == whole
    assert capped[1]["packets"] == len(packets) and capped[0].count('"outcome": "completed"') == 40


def _fill_checksum(version, src, dst, proto, seg: bytearray, mode: str, rng) -> bytearray:
    """Put a correct, an offloaded (pseudo-header only) or a random checksum in place."""
    off = 16 if proto == 6 else 6
    seg[off:off + 2] = b"\0\0"
    words = bytes(seg) + (b"\0" if len(seg) % 2 else b"")
    total = sum(int.from_bytes(words[i:i + 2], "big") for i in range(0, len(words), 2))
    pseudo = sum(int.from_bytes((src + dst)[i:i + 2], "big") for i in range(0, len(src + dst), 2)) + proto + len(seg)
    def fold(x):
        while x >> 16:
            x = (x & 0xFFFF) + (x >> 16)
        return x
    if mode == "correct":
        value = (~fold(total + pseudo)) & 0xFFFF
    elif mode == "offloaded":
        value = fold(pseudo)
    else:
        value = rng.getrandbits(16)
    seg[off:off + 2] = value.to_bytes(2, "big")
    return seg


@pytest.mark.skipif(fastpath.DISABLED, reason="SMTPFLOW_PURE_PYTHON=1: the C checksum is not used")
@pytest.mark.parametrize("mode", ["correct", "offloaded", "random"])
def test_checksum_in_c_answers_as_python_does(mode):
    """The C checksum check gives the Python one's answer on every kind of segment."""
    import random

    from analyzer.decode import packet

    rng = random.Random(7)
    seen = set()
    for _ in range(3000):
        version = rng.choice((4, 6))
        alen = 4 if version == 4 else 16
        src, dst = rng.randbytes(alen), rng.randbytes(alen)
        proto = rng.choice((6, 17))
        seg = bytearray(rng.randbytes(rng.randint(20, 1600)))
        seg = _fill_checksum(version, src, dst, proto, seg, mode, rng)
        lead = rng.randbytes(rng.randint(0, 40))
        buf = lead + bytes(seg) + rng.randbytes(rng.randint(0, 8))
        args = (version, src, dst, proto, buf, len(lead), len(lead) + len(seg))
        python = packet._checksum_state(*args)
        assert packet._checksum_state_c(*args) == python, (mode, args[:4], len(seg))
        seen.add(python)
    expected = {"correct": {packet.CHECKSUM_OK}, "offloaded": {packet.CHECKSUM_UNKNOWN}}.get(mode)
    if expected is not None:
        assert seen == expected
    else:
        assert packet.CHECKSUM_BAD in seen


def _variants(rng):
    """Frames of every shape a scan might decode or must leave to Python: VLAN stacks up to
    past the decoder's depth, IPv6, TSO (IP length 0), cut by a snaplen, wrong or offloaded
    checksums, SYNs with options, padding after the IP packet, header lengths out of range."""
    from crafting import MS_SERVER6

    packets = []
    for i in range(4):
        packets += plain_smtp_session(Conversation(cport=41000 + i, t=1_700_000_001.0 + i)).packets
        packets += plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6, cport=42000 + i, t=1_700_000_010.0 + i)).packets
        for name in ("smtp.office365.com", "www.example.com", "mx1.contoso.com"):  # kept, dropped, kept by prefix
            packets += dns_exchange(1_700_000_020.0 + i, name, [(name, "A", "52.96.10.20")], txid=i)
    for ts, ip in packets:
        ip = bytearray(ip)
        v6 = ip[0] >> 4 == 6
        l4 = 40 if v6 else (ip[0] & 0x0F) * 4
        udp = ip[9 if not v6 else 6] == 17
        kind = rng.randrange(7)
        if udp and kind in (1, 3):
            kind = 0  # no checksum or data offset to spoil
        if kind == 1:
            ip[l4 + 16] ^= 0x5A  # a wrong checksum
        elif kind == 2 and not v6:
            ip[2:4] = b"\0\0"  # TSO: the IP length left blank
        elif kind == 3:
            ip[l4 + 12] = rng.choice((0x40, 0xF0, 0x50))  # data offset 16, 60 or plain 20
        elif kind == 4 and not v6:
            ip[2:4] = rng.randrange(0, 20).to_bytes(2, "big")  # shorter than its own header
        frame = ethernet(bytes(ip), vlans=(7,) * rng.randrange(11)) + (b"\0" * rng.randrange(8) if kind == 5 else b"")
        yield ts, frame, (len(frame) - rng.randrange(1, 20) if kind == 6 else len(frame))


@pytest.mark.skipif(not fastpath.SEGMENTS, reason="scans do not build packets here (SMTPFLOW_PURE_PYTHON=1, or a stale build)")
@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("shard", [None, (0, 2), (1, 3)])
def test_segments_decoded_in_c_are_those_python_builds(tmp_path, verify, shard):
    """Each TcpSegment and UdpDatagram a scan builds has, slot for slot, the values
    Decoder.decode gives the same record, and the statistics count it the same way; the rest
    are left to Python. For a split run's process (``shard``), a segment of a connection
    another process follows comes as (ts, src, checksum), those of the Python-built segment."""
    import random

    from analyzer.decode import Decoder, TcpSegment, UdpDatagram
    from analyzer.dispatch import shard_of
    from analyzer.engine import Engine, Options

    def mine(seg) -> bool:
        return shard is None or shard_of(seg.src, seg.sport, seg.dst, seg.dport, shard[1]) == shard[0]

    engine = Engine(Options(checksums="auto" if verify else "off"))
    rng = random.Random(11)
    records = []
    data = bytearray()
    for ts, frame, caplen in _variants(rng):
        start = len(data)
        data += frame[:caplen]
        records.append((ts, start, len(data), len(frame)))
    python = Decoder(engine.selector, verify_checksums=verify)
    scanned = Decoder(engine.selector, verify_checksums=verify)
    prefilter = fastpath.Prefilter(engine.selector, scanned.stats, build=True, verify_checksums=verify, shard=shard)
    decoded = kept = observed = 0
    kinds = set()
    buf = bytes(data)
    for ts, start, end, wirelen in records:
        hdr = struct.pack("<IIII", ts // 10**9, ts % 10**9 // 1000, end - start, wirelen)
        chunk = hdr + buf[start:end]
        _pos, hits, _status, st = prefilter.pcap(chunk, 0, False, False, 16, 1, 262144)
        prefilter.account(st)
        want = python.decode(ts // 1000 * 1000, 1, buf, start, end, wirelen)
        got = None
        for hit in hits:
            if len(hit) == 3:
                observed += 1
                assert type(want) is TcpSegment and not mine(want)
                assert hit == (want.ts, want.src, want.checksum)
                got = want
            elif len(hit) == 2:
                decoded += 1
                got = hit[1]
                kinds.add((type(got), getattr(got, "options", None) is not None))
                assert type(got) is UdpDatagram or mine(got)
            else:
                kept += 1
                got = scanned.decode(hit[0], hit[1], chunk, hit[2], hit[3], hit[4])
        if want is None:
            assert got is None
        else:
            assert type(got) is type(want)
            assert {s: getattr(got, s) for s in type(want).__slots__} == {s: getattr(want, s) for s in type(want).__slots__}
    assert decoded + observed > 100 and decoded > 40 and kept > 50  # every way was taken
    assert (observed > 50) == (shard is not None)
    assert kinds == {(TcpSegment, False), (TcpSegment, True), (UdpDatagram, False)}  # SYNs with options, DNS
    assert scanned.stats.as_dict() == python.stats.as_dict()


#: Link layers the C scan reads itself (with the plain ones: Ethernet, SLL, raw IP).
DECODED_LINKS = {
    "ppp-9": (9, lambda ip: ppp(ip)),
    "ppp-9-compressed": (9, lambda ip: ppp(ip, hdlc=False, compressed=True)),
    "ppp-hdlc-50": (50, lambda ip: ppp(ip)),
    "mpls-219": (219, lambda ip: struct.pack("!II", 100 << 12 | 64, 101 << 12 | 1 << 8 | 64) + ip),
    "ethernet-vlan-mpls": (1, lambda ip: bytes(12) + struct.pack("!HHHI", 0x8100, 7, 0x8847, 100 << 12 | 1 << 8 | 64) + ip),
    "wifi-105": (105, lambda ip: dot11(ip, radiotap=False, qos=False)),
    "wifi-radiotap-127": (127, dot11),
    "wifi-radiotap-127-wds-ht-control": (127, lambda ip: dot11(ip, wds=True, htc=True)),
}


@pytest.mark.skipif(not fastpath.SEGMENTS, reason="scans do not build packets here (SMTPFLOW_PURE_PYTHON=1, or a stale build)")
@pytest.mark.parametrize("v6", [False, True], ids=["IPv4", "IPv6"])
@pytest.mark.parametrize("name", sorted(DECODED_LINKS))
def test_the_c_scan_decodes_these_link_layers_itself(name, v6):
    """Not only the same results (Python would decode what C leaves): every packet of a
    session on these link layers is built by the C scan."""
    from analyzer.decode import DecodeStats
    from analyzer.engine import Engine, Options

    linktype, wrap = DECODED_LINKS[name]
    packets = plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6) if v6 else None).packets
    buf = b"".join(struct.pack("<IIII", ts // 10**9, ts % 10**9 // 1000, len(wrap(ip)), len(wrap(ip))) + wrap(ip)
                   for ts, ip in packets)
    stats = DecodeStats()
    prefilter = fastpath.Prefilter(Engine(Options()).selector, stats, build=True)
    _pos, hits, _status, counters = prefilter.pcap(buf, 0, False, False, 16, linktype, 262144)
    prefilter.account(counters)
    assert len(hits) == len(packets) > 10 and all(len(hit) == 2 for hit in hits)
