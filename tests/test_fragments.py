"""IP fragments put back together: a DNS answer larger than the path's MTU, a server's
segment fragmented by a router (DF cleared). Crafted with scapy here, table-driven; the
kernel's own fragments are in tests/test_lab_fragments.py.
"""

from __future__ import annotations

import random

import pytest
from scapy.layers.dns import DNS, DNSQR, DNSRR
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrFragment, fragment6

import analyzer
from analyzer.decode import fastpath, fragments as fragments_module
from analyzer.decode.fragments import FragmentTable
from conftest import analyse_twice
from crafting import CLIENT6, MS_SERVER6, Conversation, frames, plain_smtp_session, write_pcap

NS = 1_000_000_000
T0 = 1_700_000_000
ADDRESSES = [f"52.96.{i // 250}.{i % 250 + 1}" for i in range(150)]  # an answer of some 2.5 KB


def dns_lookup(v6: bool, fragsize: int = 500, order: str = "in order") -> list[tuple[int, bytes]]:
    client, server = ("2001:db8::10", "2001:db8::53") if v6 else ("192.0.2.10", "192.0.2.53")
    ip = IPv6 if v6 else IP
    question = DNSQR(qname="smtp.office365.com")
    query = ip(src=client, dst=server) / UDP(sport=40000, dport=53) / DNS(id=7, rd=1, qd=question)
    rrs = [DNSRR(rrname="smtp.office365.com", type="A", ttl=60, rdata=a) for a in ADDRESSES]
    answer = DNS(id=7, qr=1, rd=1, ra=1, qd=question, an=rrs)
    if v6:
        pieces = fragment6(IPv6(src=server, dst=client) / IPv6ExtHdrFragment(id=99) / UDP(sport=53, dport=40000) / answer,
                           fragsize + 48)
    else:
        pieces = fragment(IP(src=server, dst=client, id=99) / UDP(sport=53, dport=40000) / answer, fragsize)
    pieces = [bytes(p) for p in pieces]
    if order == "reversed":
        pieces.reverse()
    elif order == "shuffled":
        random.Random(5).shuffle(pieces)
    packets = [(T0 * NS, bytes(query))]
    return packets + [(T0 * NS + (n + 1) * 1_000_000, raw) for n, raw in enumerate(pieces)]


def results(tmp_path, packets, name="x.pcap"):
    path = write_pcap(tmp_path / name, frames(packets, 1))
    (fast, _e, fast_stats, _c), (slow, _e2, slow_stats, _c2) = analyse_twice(str(path), [(fastpath.Prefilter, "available")])
    assert fast == slow and fast_stats == slow_stats  # the C scan leaves fragments to Python
    return analyzer.analyze(str(path)), fast_stats


@pytest.mark.parametrize("order", ["in order", "reversed", "shuffled"])
@pytest.mark.parametrize("v6", [False, True], ids=["IPv4", "IPv6"])
def test_a_fragmented_dns_answer_answers_its_query(tmp_path, v6, order):
    packets = dns_lookup(v6, order=order)
    analysis, stats = results(tmp_path, packets)
    rows = analysis.dns.to_dict("records")

    assert [(r["qname"], r["status"]) for r in rows] == [("smtp.office365.com", "answered")]
    assert list(rows[0]["addresses"]) == ADDRESSES[:32]  # a row keeps 32
    assert stats["fragments"] == len(packets) - 1 and stats["reassembled"] == 1
    assert stats["ip_versions"][6 if v6 else 4] == len(packets)  # what the capture holds


def _fragment_segments(packets, fragsize):
    """Every packet of the server's with payload, fragmented (a router that clears DF)."""
    out = []
    for ts, raw in packets:
        pkt = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
        if pkt.src == Conversation.server and isinstance(pkt, IP) and len(raw) > fragsize + 60:
            pieces = fragment(pkt, fragsize)
            out += [(ts + n, bytes(p)) for n, p in enumerate(pieces)]
        elif isinstance(pkt, IPv6) and pkt.src == MS_SERVER6 and len(raw) > fragsize + 80:
            header = IPv6(src=pkt.src, dst=pkt.dst, hlim=pkt.hlim)
            pieces = fragment6(header / IPv6ExtHdrFragment(id=ts % 2**32) / pkt.payload, fragsize + 48)
            out += [(ts + n, bytes(p)) for n, p in enumerate(pieces)]
        else:
            out.append((ts, raw))
    return out


@pytest.mark.parametrize("v6", [False, True], ids=["IPv4", "IPv6"])
def test_a_session_whose_segments_were_fragmented_reads_as_the_whole_one(tmp_path, v6):
    kwargs = {"client": CLIENT6, "server": MS_SERVER6} if v6 else {}
    whole = plain_smtp_session(Conversation(**kwargs)).packets
    cut = _fragment_segments(whole, 48)
    assert len(cut) > len(whole)
    (tmp_path / "w").mkdir()
    direct, _ = results(tmp_path / "w", whole)
    pieces, stats = results(tmp_path, cut)

    assert pieces.records == direct.records
    assert stats["reassembled"] == len(whole) - (len(cut) - stats["fragments"])


# (case, what happens to the fragments of the answer, is it answered?)
DAMAGE = [
    ("one piece missing", lambda pieces: pieces[:3] + pieces[4:], False),
    ("a piece twice (a copy)", lambda pieces: pieces[:3] + [pieces[3], pieces[3]] + pieces[4:], True),
    ("the first piece last", lambda pieces: pieces[1:] + pieces[:1], True),
    ("overlapping pieces that disagree", lambda pieces: pieces[:-1] + [_altered(pieces[2]), pieces[-1]], False),
    ("the last piece after the timeout", lambda pieces: pieces[:-1] + [(pieces[-1][0] + 31 * NS, pieces[-1][1])], False),
]


def _altered(piece):
    ts, raw = piece
    pkt = IP(raw)
    pkt.load = bytes(b ^ 0xFF for b in pkt.load)
    del pkt.chksum
    return ts, bytes(pkt)


@pytest.mark.parametrize("case, damage, answered", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_fragments_never_make_a_wrong_datagram(tmp_path, case, damage, answered):
    query, *pieces = dns_lookup(False)
    analysis, stats = results(tmp_path, [query] + damage(pieces))
    status = analysis.dns["status"].tolist()
    assert status == ["answered" if answered else "capture_end"] or (not answered and status == ["unanswered"]), status
    assert stats["reassembled"] == (1 if answered else 0)


def test_the_table_keeps_its_limits(monkeypatch):
    """Datagrams that never complete are let go: the oldest past MAX_PENDING_DATAGRAMS or
    MAX_FRAGMENT_BYTES_TOTAL, and any past FRAGMENT_TIMEOUT_S."""
    monkeypatch.setattr(fragments_module, "MAX_PENDING_DATAGRAMS", 10)
    monkeypatch.setattr(fragments_module, "MAX_FRAGMENT_BYTES_TOTAL", 5000)
    table = FragmentTable()
    for n in range(50):
        assert table.add(n, ("k", n), 0, True, bytes(400), b"h") is None
        assert len(table._pending) <= 10 and table.held <= 5000
    assert table.dropped == 40
    # A datagram whose last piece comes in time is whole; one whose last piece is late is not.
    assert table.add(100, ("a",), 0, True, b"abcd", b"H") is None
    assert table.add(100 + NS, ("a",), 4, False, b"efgh", None) == b"Habcdefgh"
    assert table.add(200, ("b",), 0, True, b"abcd", b"H") is None
    assert table.add(200 + 31 * NS, ("b",), 4, False, b"efgh", None) is None
    assert len(table._pending) == 1 and table.held == 4  # only the late piece waits, alone


def test_impossible_pieces_are_refused():
    table = FragmentTable()
    assert table.add(0, ("x",), 65_000, True, bytes(1000), None) is None  # past 64 KB
    assert table.add(0, ("y",), 0, False, b"abcd", b"H") == b"Habcd"
    assert table.add(0, ("z",), 8, False, b"abcd", None) is None
    assert table.add(0, ("z",), 16, True, b"abcd", None) is None  # beyond the end the last piece set
    assert table.dropped == 2 and table.held == 0
