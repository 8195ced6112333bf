"""The session reconstructor: TCP states, retransmissions and reordering, RST origin, ICMP.

Crafted packets (scapy) cover what a real stack won't do on demand: segments reordered,
overlapping retransmissions, forged RSTs with the wrong TTL, ICMP errors from routers.
"""

from __future__ import annotations

import os
import random

import pytest

import analyzer
from conftest import ROOT
from analyzer.flows.reassembly import Reassembler

from crafting import (
    CLIENT6,
    EXO_BANNER,
    MS_SERVER6,
    Conversation,
    frames,
    plain_smtp_session,
    write_pcap,
)

NS = 1_000_000_000


def analyse(tmp_path, packets, name="x.pcap", **options):
    path = write_pcap(tmp_path / name, frames(sorted(packets), 1))
    return analyzer.analyze(path, **options)


def only(analysis):
    assert len(analysis.records) == 1, [r["session_id"] for r in analysis.records]
    return analysis.records[0]


# -- reassembly, directly ------------------------------------------------------------------------
def _collect():
    out: list[bytes] = []
    gaps: list[int] = []
    reasm = Reassembler(1001, lambda data, ts: out.append(data), lambda length, ts: gaps.append(length))
    return reasm, out, gaps


def test_reassembly_in_order_out_of_order_and_overlaps():
    reasm, out, gaps = _collect()
    reasm.segment(1001, b"hello ", 0)
    reasm.segment(1013, b"world", 0)  # early: buffered
    reasm.segment(1007, b"ther", 0)  # leaves "e" missing
    assert b"".join(out) == b"hello ther"
    reasm.segment(1009, b"ere ", 0)  # overlaps "er", fills the hole, releases "world"
    assert b"".join(out) == b"hello there world"
    reasm.segment(1001, b"hello there", 0)  # a full retransmission
    assert b"".join(out) == b"hello there world"
    assert gaps == [] and reasm.overlaps >= 1


def test_reassembly_sequence_wraparound():
    out: list[bytes] = []
    reasm = Reassembler(0xFFFFFFFE, lambda d, ts: out.append(d), lambda n, ts: None)
    reasm.segment(0xFFFFFFFE, b"ab", 0)
    reasm.segment(0x00000002, b"ef", 0)
    reasm.segment(0x00000000, b"cd", 0)
    assert b"".join(out) == b"abcdef"


def test_reassembly_hole_acked_by_peer_becomes_a_gap_once_settled():
    reasm, out, gaps = _collect()
    reasm.segment(1001, b"abc", 0)
    reasm.segment(1010, b"xyz", 0)
    reasm.acked(1013, 0)
    assert gaps == []  # an ACK may overtake its data in a capture: wait
    assert reasm.settle(0) == 6
    assert gaps == [6] and b"".join(out) == b"abcxyz"


def test_reassembly_ack_before_its_data_is_not_a_gap():
    reasm, out, gaps = _collect()
    reasm.segment(1001, b"abc", 0)
    reasm.acked(1007, 0)  # the capture shows the ACK first …
    reasm.segment(1004, b"def", 0)  # … then the data it acknowledges
    assert gaps == [] and b"".join(out) == b"abcdef"
    assert reasm.settle(0) == 0


def test_reassembly_sender_moving_past_an_acked_hole_settles_it():
    reasm, out, gaps = _collect()
    reasm.segment(1001, b"abc", 0)
    reasm.acked(1007, 0)
    reasm.segment(1007, b"ghi", 0)
    assert gaps == [3] and b"".join(out) == b"abcghi"


def test_reassembly_buffer_is_bounded():
    reasm, out, gaps = _collect()
    for i in range(2000):  # every segment beyond a never-filled hole
        reasm.segment(1001 + 10 + i * 1000, b"z" * 1000, 0)
    assert reasm.pending_bytes <= 256 * 1024 and len(reasm.pending) <= 512
    assert gaps  # it gave up waiting for the hole
    assert reasm.delivered > 0


def test_reassembly_shares_one_budget_and_the_one_asking_for_more_gives_way():
    """Reassemblers of one table share MAX_OUT_OF_ORDER_BYTES_TOTAL: the connection whose
    segment pushes the total past it gives up its own holes (gaps); the others keep theirs."""
    from analyzer.flows.reassembly import BufferBudget

    budget = BufferBudget(limit=100)
    streams = []
    for _ in range(2):
        out: list[bytes] = []
        gaps: list[int] = []
        streams.append((Reassembler(1001, lambda d, ts, out=out: out.append(d), lambda n, ts, gaps=gaps: gaps.append(n), budget), out, gaps))
    (a, a_out, a_gaps), (b, b_out, b_gaps) = streams
    a.segment(1011, b"x" * 80, 0)  # 10 bytes missing before it: 80 buffered
    assert budget.used == 80 and a_out == [] and a.pending_bytes == 80
    b.segment(1006, b"y" * 30, 0)  # 30 more: 110 > 100, and b is the one asking
    assert b_gaps == [5] and b_out == [b"y" * 30] and b.pending_bytes == 0
    assert a.pending_bytes == 80 and a_gaps == [] and budget.used == 80
    a.segment(1001, b"z" * 10, 0)  # a's hole filled: everything delivered, the budget freed
    assert b"".join(a_out) == b"z" * 10 + b"x" * 80 and budget.used == 0
    b.segment(1046, b"w" * 20, 0)  # within the budget again: buffered as usual
    assert budget.used == 20 and b.pending_bytes == 20
    b.flush(0)
    assert budget.used == 0 and b_gaps == [5, 10]


def test_a_table_gives_its_connections_one_budget(tmp_path):
    from analyzer.capture import CaptureSet
    from analyzer.engine import Engine

    engine = Engine()
    engine.feed(CaptureSet([os.path.join(ROOT, "captures", "gateway-mixed.pcap")]))
    conns = list(engine.table.active)
    reassemblers = [ep.reassembler for c in conns for ep in (c.orig, c.resp) if ep.reassembler is not None]
    assert reassemblers and all(r.budget is engine.table.budget for r in reassemblers)
    engine.finish()
    assert engine.table.budget.used == 0


def test_reassembly_far_jump_is_dropped_not_buffered():
    reasm, out, gaps = _collect()
    reasm.segment(1001 + 100 * 1024 * 1024, b"junk", 0)
    assert reasm.pending_bytes == 0 and reasm.dropped == 1


# -- TCP connection states (Zeek's codes) ------------------------------------------------------
def test_sf_with_data_both_ways(tmp_path):
    rec = only(analyse(tmp_path, plain_smtp_session().packets))
    assert rec["conn_state"] == "SF" and rec["history"] == "ShAdDaFf"
    assert rec["outcome"] == "completed"
    assert rec["handshake_rtt"] == pytest.approx(0.02, abs=1e-6)
    assert rec["bytes_client"] > 0 and rec["bytes_server"] > 0


def test_s0_syn_retries_with_gaps(tmp_path):
    conv = Conversation()
    for dt in (0, 1, 2, 4, 8):
        conv.syn(dt=dt)
    later = Conversation(cport=1, sport=9999, t=conv.t + 30).syn()  # the capture goes on
    rec = analyse(tmp_path, conv.packets + later.packets).records[0]
    assert rec["conn_state"] == "S0" and rec["history"] == "S"
    assert rec["syn_count"] == 5
    assert rec["syn_retry_gaps"] == pytest.approx([1.0, 2.0, 4.0, 8.0], abs=1e-3)
    assert rec["outcome"] == "syn_unanswered"
    assert "exponential" in " ".join(rec["verdict"]["evidence"])


def test_linear_syn_retries_are_recognised(tmp_path):
    conv = Conversation()
    for dt in (0, 1, 1, 1, 1, 1, 1):
        conv.syn(dt=dt)
    later = Conversation(cport=1, sport=9999, t=conv.t + 30).syn()  # the capture goes on
    rec = analyse(tmp_path, conv.packets + later.packets).records[0]
    assert rec["syn_count"] == 7 and rec["outcome"] == "syn_unanswered"
    assert "linear" in " ".join(rec["verdict"]["evidence"])


def test_syn_at_capture_end_is_incomplete(tmp_path):
    rec = only(analyse(tmp_path, Conversation().syn().packets))
    assert rec["outcome"] == "incomplete"


def test_new_isn_is_a_new_attempt(tmp_path):
    conv = Conversation()
    conv.syn()
    conv.syn(dt=1)
    conv.cseq += 777777
    conv.syn(dt=30)
    conv.wait(10)
    a = analyse(tmp_path, conv.packets)
    assert [r["syn_count"] for r in a.records] == [2, 1]


def test_rej_rst_from_server(tmp_path):
    conv = Conversation(server_ttl=118)
    conv.syn()
    conv.server_rst(dt=0.02)
    a = analyse(tmp_path, conv.packets + Conversation(cport=50999).handshake().packets)
    rec = [r for r in a.records if r["client_port"] == 50123][0]
    assert rec["conn_state"] == "REJ" and rec["history"] == "Sr"
    # The RST's TTL (118) matches the server's SYN-ACK in the other session: the server's own.
    assert rec["rst_from"] == "server" and rec["outcome"] == "rejected_rst"


def test_forged_rst_at_connect_compared_with_other_sessions(tmp_path):
    good = Conversation(cport=50001, server_ttl=117).handshake()  # the server is 11 hops away (128 - 117)
    forged = Conversation(cport=50002, t=good.t + 5)
    forged.syn()
    forged.server_rst(ttl=63, dt=0.001)  # one hop away, initial 64: the router
    a = analyse(tmp_path, good.packets + forged.packets)
    rec = [r for r in a.records if r["client_port"] == 50002][0]
    assert rec["rst_from"] == "middlebox" and rec["outcome"] == "reset_by_middlebox"
    assert rec["rst"]["ttl"] == 63 and rec["rst"]["server_ttl"] == 117
    assert "TTL 63" in rec["verdict"]["evidence"][0]


def test_forged_rst_mid_session(tmp_path):
    conv = Conversation(server_ttl=116).handshake()
    conv.smtp([("S", EXO_BANNER), ("C", b"EHLO x\r\n")])
    conv.server_rst(ttl=64)
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["conn_state"] == "RSTR"
    assert rec["rst_from"] == "middlebox" and rec["outcome"] == "reset_by_middlebox"


def test_rst_without_reference_near_to_microsoft_is_a_middlebox(tmp_path):
    conv = Conversation()  # the server is in Microsoft's published range
    conv.syn()
    conv.server_rst(ttl=64)
    conv.wait(5)
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["microsoft"] and rec["rst_from"] == "middlebox"


def test_rst_without_reference_to_other_server_is_the_servers(tmp_path):
    conv = Conversation(server="198.51.100.25", sport=25)
    conv.syn()
    conv.server_rst(ttl=64)
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["rst_from"] == "server" and rec["outcome"] == "rejected_rst"
    assert rec["rst"]["evidence"].endswith("taken to be the server's")


def test_client_rst_after_server_close_is_normal(tmp_path):
    conv = Conversation().handshake()
    conv.smtp([("S", EXO_BANNER), ("C", b"QUIT\r\n"), ("S", b"221 2.0.0 bye\r\n")])
    conv._emit(False, "FA", dt=0.001)
    conv.client_rst()
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["outcome"] == "completed" and rec["rst_from"] == "client"


def test_rsto_and_rstos0(tmp_path):
    conv = Conversation().handshake()
    conv.client_rst()
    assert only(analyse(tmp_path, conv.packets, "a.pcap"))["conn_state"] == "RSTO"
    conv = Conversation()
    conv.syn()
    conv.client_rst(dt=2)
    rec = only(analyse(tmp_path, conv.packets, "b.pcap"))
    assert rec["conn_state"] == "RSTOS0" and rec["history"] == "SR"


def test_midstream_pickup_flips_roles_by_port(tmp_path):
    conv = Conversation(sport=25).handshake()
    conv.smtp([("S", EXO_BANNER), ("C", b"EHLO x\r\n"), ("S", b"250 hello\r\n"), ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")])
    conv.close_by_client()
    packets = conv.packets[3:]  # starts in the middle: the first packet is the server's banner
    rec = only(analyse(tmp_path, packets))
    assert rec["server_port"] == 25 and rec["history"].startswith("^")
    assert rec["conn_state"] in ("SF", "OTH")


def test_retransmitted_and_reordered_data_reassembled(tmp_path):
    conv = Conversation(sport=25).handshake()
    lines = [("S", EXO_BANNER), ("C", b"EHLO client\r\n"), ("S", b"250 hello\r\n"), ("C", b"MAIL FROM:<a@b>\r\n"),
             ("S", b"550 5.7.1 Unable to relay\r\n"), ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")]
    conv.smtp(lines)
    conv.close_by_client()
    packets = list(conv.packets)
    head, body = packets[:3], packets[3:]
    # Swap neighbours, and resend a few data segments (retransmissions), keeping timestamps sorted.
    shuffled = body[:]
    rng = random.Random(7)
    for i in range(0, len(shuffled) - 1, 3):
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    for i in rng.sample(range(len(body)), 4):
        shuffled.insert(i, body[i])
    times = sorted(ts for ts, _ in shuffled)
    mangled = head + [(t, ip) for t, (_, ip) in zip(times, shuffled)]
    path = write_pcap(tmp_path / "m.pcap", frames(mangled, 1))
    rec = only(analyzer.analyze(path))
    codes = [r["code"] for r in rec["smtp"]["replies"]]
    assert codes == [220, 250, 550, 221]
    assert rec["outcome"] == "smtp_error" and rec["decisive_reply"]["enhanced"] == "5.7.1"
    assert "T" in rec["history"] or "t" in rec["history"]


def test_missing_segment_is_a_gap_and_parsing_resumes(tmp_path):
    conv = Conversation(sport=25).handshake()
    conv.smtp([("S", EXO_BANNER), ("C", b"EHLO client\r\n"), ("S", b"250-hello\r\n250 PIPELINING\r\n"),
               ("C", b"MAIL FROM:<a@b>\r\n"), ("S", b"250 ok\r\n"), ("C", b"RCPT TO:<c@d>\r\n"), ("S", b"550 5.1.1 unknown\r\n")])
    conv.close_by_client()
    # Drop the client's EHLO segment: the server's ACK proves it was sent.
    ehlo = [i for i, (_, ip) in enumerate(conv.packets) if b"EHLO" in ip][0]
    del conv.packets[ehlo]
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["missed_bytes"] == len(b"EHLO client\r\n")
    assert "G" in rec["history"]
    assert rec["decisive_reply"]["code"] == 550


def test_zero_window_is_recorded(tmp_path):
    conv = Conversation().handshake()
    conv._emit(False, "A", window=0)
    conv.close_by_client()
    rec = only(analyse(tmp_path, conv.packets))
    assert "w" in rec["history"]


# -- ICMP ------------------------------------------------------------------------------------------
def test_icmp_admin_prohibited_tied_to_its_session(tmp_path):
    conv = Conversation()
    conv.syn()
    conv.icmp_from_router(3, 13)
    conv.wait(5)
    other = Conversation(cport=50999, t=conv.t).handshake()
    a = analyse(tmp_path, conv.packets + other.packets)
    rec = [r for r in a.records if r["client_port"] == 50123][0]
    assert rec["outcome"] == "rejected_icmp"
    assert rec["icmp"]["type"] == 3 and rec["icmp"]["code"] == 13 and rec["icmp"]["from"] == "192.0.2.1"
    assert rec["icmp"]["admin_prohibited"] is True
    assert "administratively prohibited" in rec["verdict"]["title"]
    assert [r for r in a.records if r["client_port"] == 50999][0]["icmp"] is None


def test_icmpv6_admin_prohibited(tmp_path):
    conv = Conversation(client=CLIENT6, server=MS_SERVER6)
    conv.syn()
    conv.icmp_from_router(code=1, router="2001:db8::1")
    conv.wait(5)
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["outcome"] == "rejected_icmp" and rec["icmp"]["admin_prohibited"]


def test_icmp_net_unreachable(tmp_path):
    conv = Conversation()
    conv.syn()
    conv.icmp_from_router(3, 0)
    rec = only(analyse(tmp_path, conv.packets))
    assert rec["outcome"] == "rejected_icmp" and not rec["icmp"]["admin_prohibited"]
    assert "could not be reached" in rec["verdict"]["title"]


# -- bounded state -----------------------------------------------------------------------------------
def test_idle_sessions_are_expired_so_the_table_stays_small(tmp_path):
    from analyzer.engine import Engine
    from analyzer.capture import CaptureSet

    packets = []
    t = 1_700_000_000.0
    for i in range(300):
        conv = Conversation(cport=20000 + i, t=t + i * 30)  # a new attempt every 30 s
        conv.syn()
        packets += conv.packets
    path = write_pcap(tmp_path / "long.pcap", frames(packets, 1))
    engine = Engine()
    peak = 0
    for rec in CaptureSet([path]):
        engine.feed([rec])
        peak = max(peak, len(engine.table))
    engine.finish()
    assert len(engine.facts) == 300
    assert peak <= 10  # only the attempts of the last few minutes are held


def test_a_full_table_lets_go_of_the_least_recently_active(tmp_path, monkeypatch):
    """More than MAX_ACTIVE_CONNECTIONS open at once (a flood): the least recently active
    attempts are finalised early as 'incomplete' (end_reason table_full), the table never
    holds more, the others are followed to the end, and the run says so."""
    from analyzer.capture import CaptureSet
    from analyzer.engine import Engine
    from analyzer.flows import limits, table

    monkeypatch.setattr(table, "MAX_ACTIVE_CONNECTIONS", 5)
    monkeypatch.setattr(limits, "MAX_ACTIVE_CONNECTIONS", 5)
    t = 1_700_000_000.0
    packets = []
    for i in range(12):  # a burst of attempts, none answered
        packets += Conversation(cport=20000 + i, t=t + i * 0.01).syn().packets
    keeper = Conversation(cport=30000, t=t + 0.2).handshake()  # then a session, start to end
    keeper.smtp([("S", b"220 mx.example ESMTP\r\n"), ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")]).close_by_client()
    packets += keeper.packets
    path = write_pcap(tmp_path / "flood.pcap", frames(sorted(packets), 1))
    engine = Engine()
    peak = 0
    for rec in CaptureSet([str(path)]):
        engine.feed([rec])
        peak = max(peak, len(engine.table))
    engine.finish()
    result = engine.result()
    assert peak == 5 and result.stats["connections_evicted"] == engine.table.evicted == 12 - 4
    by_port = {r["client_port"]: r for r in result.records}
    evicted = [r for r in result.records if r["end_reason"] == "table_full"]
    assert len(evicted) == 8 and all(r["outcome"] == "incomplete" and "open at once" in r["outcome_reason"] for r in evicted)
    assert by_port[30000]["outcome"] == "completed" and by_port[30000]["end_reason"] != "table_full"
    assert [r["client_port"] for r in evicted] == list(range(20000, 20008))
    assert any("followed only in part" in w for w in result.warnings)


def test_a_full_table_lets_go_of_what_it_must_with_what_it_knows(tmp_path, monkeypatch):
    """Let go early, a connection already over (here refused by a RST, waiting out the linger
    for late packets) ends as it would have, uncounted; a SYN left unanswered for a second or
    more, or retransmitted, is unanswered all the same (the reason says smtpflow stopped
    following it); a younger lone SYN stays 'incomplete'."""
    from analyzer.capture import CaptureSet
    from analyzer.engine import Engine
    from analyzer.flows import limits, table

    monkeypatch.setattr(table, "MAX_ACTIVE_CONNECTIONS", 3)
    monkeypatch.setattr(limits, "MAX_ACTIVE_CONNECTIONS", 3)
    t = 1_700_000_000.0
    packets = Conversation(cport=20000, t=t).syn().server_rst().packets  # refused at once, let go at 4.9 s
    packets += Conversation(cport=20001, t=t + 0.1).syn().packets  # let go 5 s later
    packets += Conversation(cport=20002, t=t + 0.2).syn().syn(dt=1.0).packets  # retransmitted, let go 4 s later
    packets += Conversation(cport=20003, t=t + 4.9).syn().packets  # let go 0.4 s later
    for i, start in enumerate((5.1, 5.2, 5.3, 5.4)):  # newcomers that push the others out (and 21000)
        packets += Conversation(cport=21000 + i, t=t + start).syn().packets
    path = write_pcap(tmp_path / "full.pcap", frames(sorted(packets), 1))
    engine = Engine()
    engine.feed(CaptureSet([str(path)]))
    engine.finish()
    result = engine.result()
    by_port = {r["client_port"]: r for r in result.records}
    refused, waited, retried, young = (by_port[p] for p in (20000, 20001, 20002, 20003))
    assert (refused["outcome"], refused["end_reason"]) == ("rejected_rst", "closed")
    assert (waited["outcome"], waited["end_reason"]) == ("syn_unanswered", "table_full")
    assert "in the 5.0 s smtpflow followed it" in waited["outcome_reason"] and "open at once" in waited["outcome_reason"]
    assert (retried["outcome"], retried["end_reason"]) == ("syn_unanswered", "table_full") and retried["syn_count"] == 2
    assert (young["outcome"], young["end_reason"]) == ("incomplete", "table_full")
    early = [r for r in result.records if r["end_reason"] == "table_full"]
    assert [r["client_port"] for r in early] == [20001, 20002, 20003, 21000]  # not the refused one
    assert result.stats["connections_evicted"] == engine.table.evicted == 4
