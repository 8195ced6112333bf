"""Mirrored traffic in tunnels: a gateway's packets sent to the capturing host by ERSPAN
(GRE), VXLAN (cloud traffic mirroring), Geneve, or IP in IP; and traffic that itself takes a
tunnel, as Zeek opens them: PPTP's GRE, Teredo, GTP-U, AYIYA; MPLS in GRE or UDP. The session inside reads as it
does captured directly, with the C hot path and without it, and the statistics count the
packets inside (``tunneled`` says how many came in a tunnel).

Tunnels of a real stack are in tests/test_lab_tunnels.py (Linux's gretap and vxlan devices).
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6

from analyzer.decode.tunnel import MAX_TUNNEL_DEPTH
from conftest import analyse_twice
from analyzer.decode import fastpath
from crafting import CLIENT6, MS_SERVER6, Conversation, dns_exchange, ethernet, frames, plain_smtp_session, ppp, write_pcap

NS = 1_000_000_000
OUTER = dict(src="198.18.0.1", dst="198.18.0.2")
OUTER6 = dict(src="2001:db8:ffff::1", dst="2001:db8:ffff::2")


def gre(payload: bytes, ptype: int, flags: int = 0, extra: bytes = b"") -> bytes:
    return struct.pack("!HH", flags, ptype) + extra + payload


def erspan2(frame: bytes) -> bytes:  # GRE with a sequence number, then the 8-byte ERSPAN II header
    return gre(struct.pack("!HHI", 0x1000 | 7, 0x0800, 0) + frame, 0x88BE, 0x1000, struct.pack("!I", 42))


def erspan3(frame: bytes, subheader: bool) -> bytes:
    header = struct.pack("!HHIHH", 0x2000 | 7, 0, 0, 0, 1 if subheader else 0) + (bytes(8) if subheader else b"")
    return gre(header + frame, 0x22EB, 0x1000, struct.pack("!I", 42))


def vxlan(frame: bytes) -> bytes:
    return bytes(UDP(sport=49152, dport=4789) / (struct.pack("!B3xI", 0x08, 5 << 8) + frame))


def geneve(frame: bytes, options: int = 0) -> bytes:
    header = struct.pack("!BBHI", options, 0, 0x6558, 5 << 8) + bytes(4 * options)
    return bytes(UDP(sport=49152, dport=6081) / (header + frame))


def pptp(ip: bytes, ack: bool = False, compressed: bool = False) -> bytes:
    """PPTP's enhanced GRE (version 1, key = payload length and call id, a sequence number,
    an acknowledgment if asked), then PPP."""
    frame = ppp(ip, hdlc=not compressed, compressed=compressed)
    flags = 0x2000 | 0x1000 | 0x0001 | (0x0080 if ack else 0)
    extra = struct.pack("!HHI", len(frame), 7, 99) + (struct.pack("!I", 98) if ack else b"")
    return gre(frame, 0x880B, flags, extra)


def teredo(ip: bytes, origin: bool = True, auth: bool = False) -> bytes:
    """From a Teredo relay (port 3544) to a client: [authentication] [origin indication] IPv6."""
    head = b""
    if auth:
        head += struct.pack("!HBB", 0x0001, 3, 2) + b"abc" + b"xy" + bytes(8) + b"\x00"
    if origin:
        head += struct.pack("!HH4s", 0x0000, 0xFFFF ^ 51000, bytes(4))
    return bytes(UDP(sport=3544, dport=51000) / (head + ip))


def gtp_u(ip: bytes, extension: bool = False) -> bytes:
    """A G-PDU (GTPv1-U), with the optional field and a PDU session container if asked."""
    if extension:
        tail = struct.pack("!HBB", 0, 0, 0x85) + bytes([1, 0x10, 9, 0])
        return bytes(UDP(sport=2152, dport=2152) / (struct.pack("!BBHI", 0x34, 0xFF, len(tail) + len(ip), 0x1234) + tail + ip))
    return bytes(UDP(sport=2152, dport=2152) / (struct.pack("!BBHI", 0x30, 0xFF, len(ip), 0x1234) + ip))


def ayiya(ip: bytes) -> bytes:
    """An AYIYA forward message: a 16-byte identity, a 20-byte signature (SHA-1)."""
    nh = 41 if ip[0] >> 4 == 6 else 4
    header = struct.pack("!BBBBI", 0x41, 0x52, 0x11, nh, 1_700_000_000) + bytes(16) + bytes(20)
    return bytes(UDP(sport=5072, dport=5072) / (header + ip))


def mpls(ip: bytes, labels: int) -> bytes:
    """An MPLS label stack (the last entry marks the bottom), then the packet."""
    return b"".join(struct.pack("!I", ((100 + n) << 12) | ((n == labels - 1) << 8) | 64) for n in range(labels)) + ip


def over_ip(proto: int, payload: bytes, v6: bool = False) -> bytes:
    if v6:
        return bytes(IPv6(nh=proto, **OUTER6) / payload)
    return bytes(IP(proto=proto, **OUTER) / payload)


def over_udp(datagram: bytes, v6: bool = False) -> bytes:
    # scapy's UDP above already carries the ports; give it an IP header with its checksum.
    return bytes((IPv6(**OUTER6) if v6 else IP(**OUTER)) / UDP(datagram))


# (name, how one inner IP packet travels: ip bytes -> the outer IP packet)
TUNNELS = [
    ("GRE, Ethernet inside (gretap)", lambda ip: over_ip(47, gre(ethernet(ip), 0x6558))),
    ("GRE with checksum and key, IP inside", lambda ip: over_ip(47, gre(ip, 0x0800 if ip[0] >> 4 == 4 else 0x86DD, 0xA000,
                                                                         bytes(8)))),
    ("ERSPAN type I", lambda ip: over_ip(47, gre(ethernet(ip), 0x88BE))),
    ("ERSPAN type II", lambda ip: over_ip(47, erspan2(ethernet(ip, vlans=(100,))))),
    ("ERSPAN type III", lambda ip: over_ip(47, erspan3(ethernet(ip), subheader=False))),
    ("ERSPAN type III with subheader", lambda ip: over_ip(47, erspan3(ethernet(ip), subheader=True))),
    ("VXLAN", lambda ip: over_udp(vxlan(ethernet(ip)))),
    ("VXLAN over IPv6", lambda ip: over_udp(vxlan(ethernet(ip)), v6=True)),
    ("Geneve with options", lambda ip: over_udp(geneve(ethernet(ip), options=2))),
    ("IP in IP", lambda ip: over_ip(4 if ip[0] >> 4 == 4 else 41, ip)),
    ("IPv6 in IPv6 (GRE)", lambda ip: over_ip(47, gre(ip, 0x86DD if ip[0] >> 4 == 6 else 0x0800), v6=True)),
    ("VXLAN in GRE", lambda ip: over_ip(47, gre(over_udp(vxlan(ethernet(ip))), 0x0800))),
    ("PPTP (GRE version 1, PPP inside)", lambda ip: over_ip(47, pptp(ip))),
    ("PPTP with an acknowledgment, compressed PPP", lambda ip: over_ip(47, pptp(ip, ack=True, compressed=True))),
    ("Teredo with origin indication", lambda ip: over_udp(teredo(ip))),
    ("Teredo with authentication", lambda ip: over_udp(teredo(ip, origin=False, auth=True))),
    ("GTP-U", lambda ip: over_udp(gtp_u(ip))),
    ("GTP-U with an extension header, over IPv6", lambda ip: over_udp(gtp_u(ip, extension=True), v6=True)),
    ("AYIYA", lambda ip: over_udp(ayiya(ip))),
    ("MPLS in GRE", lambda ip: over_ip(47, gre(mpls(ip, 2), 0x8847))),
    ("MPLS in UDP", lambda ip: over_udp(bytes(UDP(sport=49152, dport=6635) / mpls(ip, 3)))),
]
#: Tunnels that carry IPv6 alone: the IPv4 packets (the DNS lookup) go as they are.
IPV6_ONLY = {"Teredo with origin indication", "Teredo with authentication"}


def mirrored(name: str, wrap, packets: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """The packets as frames, each in the tunnel (those it can carry)."""
    return [(ts, ethernet(wrap(ip) if name not in IPV6_ONLY or ip[0] >> 4 == 6 else ip)) for ts, ip in packets]


def in_tunnel(name: str, packets: list[tuple[int, bytes]]) -> int:
    return sum(name not in IPV6_ONLY or ip[0] >> 4 == 6 for _ts, ip in packets)


def session(v6: bool) -> list[tuple[int, bytes]]:
    kwargs = {"client": CLIENT6, "server": MS_SERVER6} if v6 else {}
    packets = dns_exchange(1_699_999_999.0, "smtp.office365.com", [("smtp.office365.com", "A", "52.96.10.20")])
    return packets + plain_smtp_session(Conversation(**kwargs)).packets


def results(path, **options):
    """(records, statistics) with and without the C hot path; both must agree."""
    (fast, fast_stats, fast_exit), (slow, slow_stats, slow_exit) = [
        (records, stats, code) for records, _events, stats, code in
        analyse_twice(path, [(fastpath.Prefilter, "available")], **options)]
    assert fast == slow and fast_stats == slow_stats and fast_exit == slow_exit
    return json.loads(fast), fast_stats


def without(stats: dict, *names: str) -> dict:
    return {k: v for k, v in stats.items() if k not in names}


@pytest.mark.parametrize("v6", [False, True], ids=["IPv4 inside", "IPv6 inside"])
@pytest.mark.parametrize("name, wrap", TUNNELS, ids=[t[0] for t in TUNNELS])
def test_a_session_in_a_tunnel_reads_as_captured_directly(tmp_path, name, wrap, v6):
    if name in IPV6_ONLY and not v6:
        pytest.skip("this tunnel carries IPv6 alone")
    packets = session(v6)
    direct = write_pcap(tmp_path / "direct.pcap", frames(packets, 1))
    tunneled = write_pcap(tmp_path / "mirrored.pcap", mirrored(name, wrap, packets))
    records, stats = results(str(direct))
    tunneled_records, tunneled_stats = results(str(tunneled))

    assert records and tunneled_records == records
    assert tunneled_stats["tunneled"] == in_tunnel(name, packets) > 20 and stats["tunneled"] == 0
    # The counters describe the packets inside: the same as captured directly.
    assert without(tunneled_stats, "tunneled", "bytes", "elapsed_s") == without(stats, "tunneled", "bytes", "elapsed_s")


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed here")
@pytest.mark.parametrize("name, wrap", TUNNELS, ids=[t[0] for t in TUNNELS])
def test_tshark_reads_the_same_replies_inside_the_tunnel(tmp_path, name, wrap):
    """The crafted tunnels are what Wireshark's dissectors take them to be: tshark finds the
    session's SMTP replies inside each, as smtpflow does."""
    packets = session(name in IPV6_ONLY)
    path = write_pcap(tmp_path / "mirrored.pcap", mirrored(name, wrap, packets))
    (record,) = results(str(path))[0]
    ours = [int(reply["code"]) for reply in record["smtp"]["replies"]]
    theirs = subprocess.run(["tshark", "-r", str(path), "-Y", "smtp.response.code", "-T", "fields", "-e", "smtp.response.code"],
                            capture_output=True, text=True, check=True).stdout.split()
    assert len(ours) > 5 and [int(code) for code in theirs] == ours


def test_what_is_not_a_tunnel_here_stays_outside(tmp_path):
    """GRE version 1 without PPTP's key, a PPTP acknowledgment alone, GRE carrying something
    else, a VXLAN header without its VNI flag, a GTP message that is not a G-PDU, Teredo whose
    IPv6 does not fill the datagram, AYIYA that is not a forward message, and tunnels nested
    past MAX_TUNNEL_DEPTH are counted as what they are, not opened; a DNS query from one of
    the UDP tunnels' ports is a DNS query."""
    ip = plain_smtp_session(Conversation()).packets[0][1]
    ip6 = plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6)).packets[0][1]
    nested = ip
    for _ in range(MAX_TUNNEL_DEPTH + 1):
        nested = over_ip(4, nested)
    lookup = dns_exchange(1_700_000_000.0, "smtp.office365.com", [("smtp.office365.com", "A", "52.96.10.20")])[0][1]
    query_from_gtp_port = bytes(IP(lookup[:20]) / UDP(sport=2152, dport=53) / lookup[28:])
    cases = [
        over_ip(47, gre(ppp(ip), 0x880B, flags=0x0001)),  # version 1, no key
        over_ip(47, gre(b"", 0x880B, flags=0x3081, extra=struct.pack("!HHII", 0, 7, 1, 2))),  # PPTP: an ack alone
        over_ip(47, gre(ethernet(ip), 0x8137)),  # IPX
        over_udp(bytes(UDP(sport=49152, dport=4789) / (bytes(8) + ethernet(ip)))),
        over_udp(bytes(UDP(sport=2152, dport=2152) / (struct.pack("!BBHI", 0x30, 0x01, len(ip), 1) + ip))),  # GTP echo
        over_udp(bytes(UDP(sport=3544, dport=51000) / (ip6 + b"\x00"))),  # Teredo, one byte too many
        over_udp(bytes(UDP(sport=5072, dport=5072) / (struct.pack("!BBBBI", 0x41, 0x52, 0x12, 4, 0) + bytes(36) + ip))),
        nested,
        query_from_gtp_port,
    ]
    path = write_pcap(tmp_path / "x.pcap", [(1_700_000_000 * 10**9 + n, ethernet(raw)) for n, raw in enumerate(cases)])
    records, stats = results(str(path))

    assert records == []
    assert stats["tunneled"] == 1  # the nested one, opened MAX_TUNNEL_DEPTH levels deep
    assert stats["other_ip"] == 4 and stats["udp"] == 5
    assert stats["dns"]["queries"] == 1


@pytest.mark.skipif(not fastpath.Prefilter.available, reason="the C hot path is not built here")
@pytest.mark.parametrize("name, wrap", TUNNELS, ids=[t[0] for t in TUNNELS])
def test_the_c_scan_opens_the_tunnels_itself(tmp_path, name, wrap):
    """Not only the same results (Python would decode what C leaves): C decodes every packet
    of the mirrored session itself, as it does captured directly."""
    from analyzer.decode import DecodeStats
    from analyzer.engine import Engine, Options

    packets = session(name in IPV6_ONLY)
    path = write_pcap(tmp_path / "mirrored.pcap", mirrored(name, wrap, packets))
    with open(path, "rb") as fh:
        buf = fh.read()
    stats = DecodeStats()
    prefilter = fastpath.Prefilter(Engine(Options()).selector, stats, build=True)
    _pos, hits, _status, counters = prefilter.pcap(buf, 24, False, False, 16, 1, 262144)
    prefilter.account(counters)

    assert len(hits) == len(packets) and all(len(hit) == 2 for hit in hits)
    assert stats.tunneled == in_tunnel(name, packets)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump is not installed here")
def test_the_live_kernel_filter_lets_mirrored_traffic_through(tmp_path):
    """smtpflow live filters in the kernel; BPF cannot look inside a tunnel, so tunnels pass
    whole (libpcap compiles the same filter for tcpdump -r)."""
    from analyzer.engine import Engine, Options
    from analyzer.livecapture import kernel_filter

    expression = kernel_filter(Engine(Options()))
    for name, wrap in TUNNELS:
        packets = session(name in IPV6_ONLY)
        path = write_pcap(tmp_path / "mirrored.pcap", mirrored(name, wrap, packets))
        kept = subprocess.run(["tcpdump", "-nr", str(path), expression], capture_output=True, text=True, check=True).stdout
        assert len(kept.splitlines()) == len(packets), name
    web = write_pcap(tmp_path / "web.pcap", frames(plain_smtp_session(Conversation(server="198.51.100.7", sport=443)).packets, 1))
    assert subprocess.run(["tcpdump", "-nr", str(web), expression], capture_output=True, text=True, check=True).stdout == ""


def _damaged_frames(rng):
    """Tunnel frames with bytes of their headers changed or their end cut: every tunnel kind,
    both IP versions inside, NFLOG records and IP fragments among them."""
    from crafting import nflog

    for name, wrap in TUNNELS:
        for v6 in (False, True):
            for ts, ip in session(v6)[:12]:
                frame = bytearray(ethernet(wrap(ip)))
                for _ in range(rng.randrange(4)):
                    frame[rng.randrange(min(len(frame), 120))] = rng.randrange(256)
                cut = len(frame) - rng.randrange(0, 40) if rng.random() < 0.3 else len(frame)
                yield ts, 1, bytes(frame), max(cut, 1)
    for ts, ip in session(False)[:12]:
        record = bytearray(nflog(ip, rng.choice(("little", "big"))))
        record[rng.randrange(len(record))] = rng.randrange(256)
        yield ts, 239, bytes(record), len(record)
    for pieces in (fragment(IP(raw), 24) for _ts, raw in session(False)[3:9]):
        for piece in pieces:
            frame = bytearray(ethernet(bytes(piece)))
            if rng.random() < 0.5:
                frame[14 + rng.randrange(28)] = rng.randrange(256)
            yield 1_700_000_000 * NS, 1, bytes(frame), len(frame)


@pytest.mark.skipif(not fastpath.SEGMENTS, reason="scans do not build packets here (SMTPFLOW_PURE_PYTHON=1, or a stale build)")
def test_damaged_tunnels_are_read_alike_in_c_and_python(tmp_path):
    """Slot for slot, what the C scan builds from a damaged tunnel frame is what the Python
    decoder builds (or both drop it), the counters agree, and nothing raises."""
    import random

    from analyzer.decode import Decoder
    from analyzer.engine import Engine, Options

    engine = Engine(Options())
    python = Decoder(engine.selector)
    scanned = Decoder(engine.selector)
    prefilter = fastpath.Prefilter(engine.selector, scanned.stats, build=True)
    decoded = 0
    for ts, linktype, frame, caplen in _damaged_frames(random.Random(3)):
        buf = frame[:caplen]
        chunk = struct.pack("<IIII", ts // NS, ts % NS // 1000, len(buf), len(frame)) + buf
        _pos, hits, _status, counters = prefilter.pcap(chunk, 0, False, False, 16, linktype, 262144)
        prefilter.account(counters)
        want = python.decode(ts // 1000 * 1000, linktype, buf, 0, len(buf), len(frame))
        got = None
        for hit in hits:
            if len(hit) == 2:
                decoded += 1
                got = hit[1]
            else:
                got = scanned.decode(hit[0], hit[1], chunk, hit[2], hit[3], hit[4])
        assert type(got) is type(want)
        if want is not None:
            assert {s: getattr(got, s) for s in type(want).__slots__} == {s: getattr(want, s) for s in type(want).__slots__}
    assert decoded > 100
    assert scanned.stats.as_dict() == python.stats.as_dict()
