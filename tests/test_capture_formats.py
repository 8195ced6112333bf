"""The capture layer: every file format and link type gives the same sessions; damage is salvaged.

One crafted SMTP session (and a dropped-SYN attempt) is written in every supported form —
pcap in both byte orders, µs and ns, pcapng with several interfaces and resolutions, gzip,
Ethernet with VLAN stacks, PPPoE, Linux cooked v1/v2, raw IP, BSD loopback — and each must
analyse to the same records.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import struct
import sys

import pytest

import analyzer
from analyzer.capture import CaptureError, CaptureSet, open_capture

from crafting import (
    CLIENT6,
    MS_SERVER6,
    Conversation,
    bsd_loop,
    bsd_null,
    cisco_hdlc,
    dot11,
    pflog,
    pktap,
    ethernet,
    frames,
    linux_sll,
    linux_sll2,
    nflog,
    plain_smtp_session,
    ppp,
    pppoe,
    write_pcap,
    write_pcapng,
)

NS = 1_000_000_000


def reference_packets():
    """A dropped attempt (4 SYNs, exponential back-off), then a complete SMTP session."""
    dropped = Conversation(cport=50200, sport=587)
    for dt in (0.0, 1.0, 2.0, 4.0):
        dropped.syn(dt=dt)
    conv = plain_smtp_session(Conversation(sport=25, t=dropped.t + 10))
    return dropped.packets + conv.packets


def essentials(analysis):
    return [
        (r["client"], r["client_port"], r["server"], r["server_port"], r["conn_state"], r["history"], r["syn_count"],
         r["outcome"], [x["code"] for x in (r.get("smtp") or {}).get("replies", [])], round(r["first_seen"], 5))
        for r in analysis.records
    ]


@pytest.fixture(scope="module")
def expected(tmp_path_factory):
    path = tmp_path_factory.mktemp("ref") / "ref.pcap"
    write_pcap(path, frames(reference_packets(), 1))
    result = essentials(analyzer.analyze(str(path)))
    assert result[0][7] == "syn_unanswered" and result[1][7] == "completed"
    assert result[0][6] == 4
    return result


LINK_VARIANTS = {
    "ethernet": (1, ethernet),
    "vlan": (1, lambda ip: ethernet(ip, vlans=(100,))),
    "qinq-8021ad": (1, lambda ip: ethernet(ip, vlans=(200, 100), outer_tpid=0x88A8)),
    "pppoe": (1, pppoe),
    "sll": (113, linux_sll),
    "sll2": (276, linux_sll2),
    "raw-101": (101, lambda ip: ip),
    "raw-ipv4-228": (228, lambda ip: ip),
    "null-le": (0, lambda ip: bsd_null(ip, "little")),
    "null-be": (0, lambda ip: bsd_null(ip, "big")),
    "loop-108": (108, bsd_loop),
    "ppp-9": (9, ppp),
    "ppp-9-no-address-compressed": (9, lambda ip: ppp(ip, hdlc=False, compressed=True)),
    "ppp-hdlc-50": (50, ppp),
    "cisco-hdlc-104": (104, cisco_hdlc),
    "pflog-117-freebsd": (117, pflog),
    "pflog-117-openbsd": (117, lambda ip: pflog(ip, header_len=100, af6=24)),
    "pktap-258-ethernet": (258, lambda ip: pktap(ethernet(ip))),
    "pktap-258-null": (258, lambda ip: pktap(bsd_null(ip, "little"), linktype=0)),
    "wifi-105": (105, lambda ip: dot11(ip, radiotap=False, qos=False)),
    "wifi-radiotap-127": (127, dot11),
    "wifi-radiotap-127-wds-ht-control": (127, lambda ip: dot11(ip, wds=True, htc=True)),
    "mpls-219": (219, lambda ip: struct.pack("!II", 100 << 12 | 64, 101 << 12 | 1 << 8 | 64) + ip),
    "ethernet-vlan-mpls": (1, lambda ip: bytes(12) + struct.pack("!HHHI", 0x8100, 100, 0x8847, 100 << 12 | 1 << 8 | 64) + ip),
    "nflog-239-le": (239, nflog),
    "nflog-239-be": (239, lambda ip: nflog(ip, "big")),
}


@pytest.mark.parametrize("name", sorted(LINK_VARIANTS))
def test_link_types_give_the_same_sessions(tmp_path, expected, name):
    linktype, wrap = LINK_VARIANTS[name]
    path = tmp_path / f"{name}.pcap"
    write_pcap(path, [(ts, wrap(ip)) for ts, ip in reference_packets()], linktype)
    assert essentials(analyzer.analyze(str(path))) == expected


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
@pytest.mark.parametrize("compress", [False, True])
def test_pcap_byte_orders_resolutions_and_gzip(tmp_path, expected, endian, nano, compress):
    path = tmp_path / ("x.pcap.gz" if compress else "x.pcap")
    write_pcap(path, frames(reference_packets(), 1), nano=nano, endian=endian, compress=compress)
    assert essentials(analyzer.analyze(str(path))) == expected


def test_nanosecond_timestamps_are_exact(tmp_path):
    conv = Conversation()
    conv.syn()
    ts = 1_700_000_000_123_456_789
    path = tmp_path / "ns.pcap"
    write_pcap(path, [(ts, ethernet(conv.packets[0][1]))], nano=True)
    first = next(iter(CaptureSet([str(path)])))
    assert first[0] == ts


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_several_interfaces_link_types_and_resolutions(tmp_path, expected, endian):
    """Packets alternate between an Ethernet interface in µs and an SLL2 one in 2^-30 s units."""
    packets = reference_packets()
    interfaces = [(1, 6), (276, 0x80 | 30), (228, 9)]
    out = []
    for i, (ts, ip) in enumerate(packets):
        ifid = i % 3
        wrap = {0: ethernet, 1: linux_sll2, 2: lambda x: x}[ifid]
        out.append((ifid, ts, wrap(ip)))
    path = tmp_path / "multi.pcapng"
    write_pcapng(path, interfaces, out, endian=endian)
    got = essentials(analyzer.analyze(str(path)))
    # 2^-30 s units round timestamps to ~1 ns: compare all but the last digit of first_seen.
    assert [g[:-1] for g in got] == [e[:-1] for e in expected]
    assert [round(g[-1], 5) for g in got] == [round(e[-1], 5) for e in expected]


def test_ipv6_session(tmp_path):
    conv = plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6, sport=587))
    path = tmp_path / "v6.pcap"
    write_pcap(path, frames(conv.packets, 276), 276)
    a = analyzer.analyze(str(path))
    [rec] = a.records
    assert rec["ip_version"] == 6 and rec["server"] == MS_SERVER6 and rec["outcome"] == "completed"
    assert rec["microsoft"] and rec["microsoft_service"] == "submission"


def test_several_files_are_read_in_time_order_and_sessions_stitched(tmp_path, expected):
    """A session cut across two rotated files is one session, as in the concatenated file."""
    packets = frames(reference_packets(), 1)
    half = len(packets) // 2
    first = write_pcap(tmp_path / "ring_00001.pcap", packets[:half])
    second = write_pcap(tmp_path / "ring_00002.pcap", packets[half:])
    assert essentials(analyzer.analyze([second, first])) == expected
    assert essentials(analyzer.analyze(str(tmp_path))) == expected  # a directory
    assert essentials(analyzer.analyze(str(tmp_path / "ring_*.pcap"))) == expected  # a glob


def test_a_directory_takes_rotated_files_by_content_whatever_their_names(tmp_path, expected):
    """`tcpdump -w trace -C N` writes trace, trace1, trace2 … with no extension: a directory
    takes them by their first bytes (gzip-compressed too), and leaves other files alone."""
    packets = frames(reference_packets(), 1)
    third = len(packets) // 3
    write_pcap(tmp_path / "trace", packets[:third])
    write_pcap(tmp_path / "trace1", packets[third : 2 * third])
    write_pcap(tmp_path / "trace2", packets[2 * third :], compress=True)
    (tmp_path / "notes").write_text("capture of the relay, Tuesday\n")
    (tmp_path / ".trace3").write_bytes((tmp_path / "trace1").read_bytes())  # hidden: not taken
    assert essentials(analyzer.analyze(str(tmp_path))) == expected


def test_interleaved_files_are_merged_by_timestamp(tmp_path, expected):
    packets = frames(reference_packets(), 1)
    a = write_pcap(tmp_path / "a.pcap", packets[0::2])
    b = write_pcap(tmp_path / "b.pcap", packets[1::2])
    assert essentials(analyzer.analyze([a, b])) == expected


# -- damage and bad input ---------------------------------------------------------------------------
def _smtp_file(tmp_path):
    return write_pcap(tmp_path / "good.pcap", frames(reference_packets(), 1))


@pytest.mark.parametrize("cut", [30, 200, 1000, 2500, -7])
def test_truncated_file_yields_what_it_can_and_says_where(tmp_path, cut):
    data = open(_smtp_file(tmp_path), "rb").read()
    cut = cut if cut > 0 else len(data) + cut
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    a = analyzer.analyze(str(path))
    assert a.exit_code == 3
    assert len(a.damage) == 1 and "damaged at byte" in a.damage[0] and str(path) in a.damage[0]
    if cut > 2500:
        assert a.records and a.records[-1]["client_port"] == 50123


def test_corrupt_record_length(tmp_path):
    data = bytearray(open(_smtp_file(tmp_path), "rb").read())
    # Corrupt the 5th record's caplen field to an absurd value.
    pos = 24
    for _ in range(4):
        caplen = int.from_bytes(data[pos + 8 : pos + 12], "little")
        pos += 16 + caplen
    data[pos + 8 : pos + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(bytes(data))
    a = analyzer.analyze(str(path))
    assert a.exit_code == 3
    assert "impossible" in a.damage[0]


def test_truncated_gzip(tmp_path):
    raw = open(_smtp_file(tmp_path), "rb").read()
    packed = gzip.compress(raw)
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    a = analyzer.analyze(str(path))
    assert a.exit_code == 3


def test_pcapng_bad_block_length(tmp_path):
    packets = [(0, ts, ethernet(ip)) for ts, ip in reference_packets()]
    path = write_pcapng(tmp_path / "x.pcapng", [(1, 6)], packets)
    data = bytearray(open(path, "rb").read())
    data[-4:] = b"\x00\x00\x00\x00"  # the last block's trailing length no longer matches
    open(path, "wb").write(bytes(data))
    a = analyzer.analyze(path)
    assert a.exit_code == 3 and "trailer" in a.damage[0]
    assert len(a.records) == 2


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "file is empty"),
        (b'{"not": "a capture"}', "not a pcap or pcapng capture (looks like JSON)"),
        (b"hello world, just text\n", "looks like text"),
        (b"\x28\xb5\x2f\xfd\x00\x00", "zstd"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "header is truncated"),
    ],
)
def test_not_a_capture(tmp_path, content, message):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError) as info:
        open_capture(str(path))
    assert message in str(info.value)


def test_unsupported_link_type_is_named(tmp_path):
    path = write_pcap(tmp_path / "zigbee.pcap", [(NS, b"\x00" * 40)], linktype=195)
    with pytest.raises(CaptureError) as info:
        analyzer.analyze(path)
    assert "unsupported link type 195 (IEEE802_15_4" in str(info.value)


def test_wifi_frames_that_carry_no_readable_packet(tmp_path):
    """Beacons and other management or control frames, null data, encrypted data (WPA) and
    fragments are counted as not IP; a cut header or a radiotap header that is not one, as
    malformed. None of them makes a session."""
    ip = plain_smtp_session(Conversation()).packets[2][1]
    beacon = struct.pack("<BBH", 0x80, 0, 0) + bytes(22) + bytes(12)
    ack = struct.pack("<BBH", 0xD4, 0, 0) + bytes(6)
    fragment = bytearray(dot11(ip, radiotap=False))
    fragment[1] |= 0x04  # more fragments
    later_fragment = bytearray(dot11(ip, radiotap=False))
    later_fragment[22] |= 0x01  # fragment number 1
    qos_null = dot11(ip, radiotap=False, subtype=0x0C)
    encrypted = dot11(ip, radiotap=False, protected=True)
    not_packets = [beacon + bytes(8), ack + bytes(20), qos_null, encrypted, bytes(fragment), bytes(later_fragment)]
    cut = dot11(ip, radiotap=False)[:30]
    radiotap = struct.pack("<BBHI", 0, 0, 8, 0)
    plain = write_pcap(tmp_path / "105.pcap", [(NS + n, f) for n, f in enumerate(not_packets + [cut])], linktype=105)
    behind_radiotap = write_pcap(tmp_path / "127.pcap", [(NS + n, radiotap + f) for n, f in enumerate(not_packets + [cut])]
                                 + [(2 * NS, b"\x01" + dot11(ip)[1:])], linktype=127)
    for path, malformed in ((plain, 1), (behind_radiotap, 2)):
        a = analyzer.analyze(path)
        assert len(a.sessions) == 0
        assert (a.stats["non_ip"], a.stats["malformed"], a.stats["packets"]) == (6, malformed, 6 + malformed)


def test_missing_file_and_directory_errors(tmp_path):
    with pytest.raises(CaptureError, match="no such file"):
        analyzer.analyze(str(tmp_path / "nope.pcap"))
    with pytest.raises(CaptureError, match="holds no capture files"):
        analyzer.analyze(str(tmp_path))


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, timeout=120, **kw)


def test_cli_exit_codes_and_one_line_errors(tmp_path):
    good = _smtp_file(tmp_path)
    assert _cli("analyze", good).returncode == 0
    bad = tmp_path / "bad.pcap"
    bad.write_text("not a capture\n")
    result = _cli("analyze", str(bad))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    missing = _cli("analyze", str(tmp_path / "missing.pcap"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    data = open(good, "rb").read()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-7])
    result = _cli("analyze", "--format", "jsonl", str(cut))
    assert result.returncode == 3
    assert "results are partial" in result.stderr
    assert result.stdout.count("\n") == 2  # both sessions salvaged
    usage = _cli("analyze", "--ports", "99999", good)
    assert usage.returncode == 2 and "--ports" in usage.stderr


def test_the_command_quick_exit_loses_no_output(tmp_path, capsys):
    """The command ends without the interpreter's teardown (cli.run): everything it wrote to a
    pipe and to files is still whole, as from main() in this process, and so are exit codes."""
    from analyzer.cli import main

    captures = os.path.join(os.path.dirname(__file__), "..", "captures")
    assert main(["analyze", "--format", "jsonl", captures]) == 0
    expected = capsys.readouterr().out
    assert len(expected) > 64 * 1024  # more than any pipe or stdio buffer holds at once
    buffered = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}  # as for users
    piped = _cli("analyze", "--format", "jsonl", captures, env=buffered)
    assert piped.returncode == 0 and piped.stdout == expected
    written = _cli("analyze", "--format", "jsonl", "-o", str(tmp_path / "out.jsonl"), captures, env=buffered)
    assert written.returncode == 0 and (tmp_path / "out.jsonl").read_text(encoding="utf-8") == expected
    assert _cli("analyze", str(tmp_path / "missing.pcap"), env=buffered).returncode == 2


def test_fragments_are_counted_not_crashed_on(tmp_path):
    from scapy.layers.inet import IP, TCP, fragment

    big = IP(src="192.0.2.10", dst="52.96.10.20") / TCP(sport=50000, dport=587, flags="PA") / (b"x" * 3000)
    pieces = fragment(big, fragsize=1000)
    path = write_pcap(tmp_path / "frag.pcap", [(NS + i, ethernet(bytes(p))) for i, p in enumerate(pieces)])
    a = analyzer.analyze(path)
    assert a.stats["fragments"] == len(pieces)
    assert a.exit_code == 0


def test_snaplen_cut_packets_are_gaps_not_garbage(tmp_path):
    conv = plain_smtp_session()
    path = write_pcap(tmp_path / "snap.pcap", frames(conv.packets, 1), snaplen=80)
    a = analyzer.analyze(str(path))
    [rec] = a.records
    assert rec["conn_state"] == "SF"
    assert rec["missed_bytes"] > 0


@pytest.mark.skipif(not os.path.exists("/usr/sbin/tcpdump") and not os.path.exists("/usr/bin/tcpdump"), reason="tcpdump not installed")
def test_tcpdump_reads_what_we_write(tmp_path):
    """Our crafted files are real captures: libpcap itself reads them."""
    path = _smtp_file(tmp_path)
    out = subprocess.run(["tcpdump", "-nn", "-r", path], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert out.stdout.count("\n") == len(reference_packets())


@pytest.mark.parametrize("name", ["ppp-9", "ppp-9-no-address-compressed", "ppp-hdlc-50", "cisco-hdlc-104", "nflog-239-le",
                                  "nflog-239-be", "pflog-117-freebsd", "pflog-117-openbsd", "pktap-258-ethernet",
                                  "pktap-258-null", "mpls-219", "wifi-105", "wifi-radiotap-127-wds-ht-control"])
def test_other_link_types_carry_ipv6_too(tmp_path, name):
    linktype, wrap = LINK_VARIANTS[name]
    packets = plain_smtp_session(Conversation(client=CLIENT6, server=MS_SERVER6)).packets
    raw = write_pcap(tmp_path / "raw.pcap", packets, 101)
    wrapped = write_pcap(tmp_path / f"{name}.pcap", [(ts, wrap(ip)) for ts, ip in packets], linktype)
    sessions = essentials(analyzer.analyze(str(raw)))
    assert sessions and sessions[0][2] == MS_SERVER6
    assert essentials(analyzer.analyze(str(wrapped))) == sessions
