"""The same packet captured twice: a capture on ``any`` of a host that forwards it (in on one
interface, out on the other, the TTL one lower), or two captures of one link read together.

Each copy after the first is counted (weird ``duplicate_frame``, run stat
``duplicate_frames``, a warning) and not followed again, so SYN counts, retransmissions,
packet counts and verdicts are those of the traffic, not of the capture setup. A real
retransmission is still one: it carries a new IPv4 id (and usually new timestamps), or comes
later than ``DUPLICATE_FRAME_WINDOW_S``. The real-stack version of this (a router namespace
captured on ``any``) is in tests/test_lab_duplicates.py.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

import analyzer
from analyzer.flows.limits import DUPLICATE_FRAME_WINDOW_S
from crafting import CLIENT6, MS_SERVER6, Conversation, dns_exchange, frames, plain_smtp_session, write_pcap

NS = 1_000_000_000


def numbered(packets: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
    """Give every IPv4 packet its own id, as real stacks do (scapy sends id 1 throughout)."""
    out = []
    for n, (ts, raw) in enumerate(packets):
        if raw[0] >> 4 == 4:
            pkt = IP(raw)
            pkt.id = 1000 + n
            del pkt.chksum
            raw = bytes(pkt)
        out.append((ts, raw))
    return out


def copy(raw: bytes, *, hops: int = 1, ip_id: int | None = None, window: int | None = None) -> bytes:
    """The packet as a router passes it on: TTL (hop limit) lower, IP checksum redone; the
    TCP segment unchanged unless told (a new IPv4 id or window: a different transmission)."""
    pkt = IP(raw) if raw[0] >> 4 == 4 else IPv6(raw)
    if isinstance(pkt, IP):
        pkt.ttl -= hops
        if ip_id is not None:
            pkt.id = ip_id
        del pkt.chksum
    else:
        pkt.hlim -= hops
    if window is not None:
        pkt.payload.window = window
        del pkt.payload.chksum
    return bytes(pkt)


def analyse(tmp_path, packets, **options):
    path = write_pcap(tmp_path / "x.pcap", frames(sorted(packets), 1))
    return analyzer.analyze(str(path), **options)


def without_weird(record: dict) -> dict:
    record = dict(record)
    record["weirds"] = {k: v for k, v in record["weirds"].items() if k != "duplicate_frame"}
    return record


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("workers", [1, 2])
def test_every_packet_captured_twice_gives_the_records_of_one_capture(tmp_path, version, workers):
    kwargs = {"client": CLIENT6, "server": MS_SERVER6} if version == 6 else {}
    once = numbered(plain_smtp_session(Conversation(**kwargs)).packets)
    twice = [(ts + offset, copy(raw) if offset else raw) for ts, raw in once for offset in (0, 20_000)]
    (tmp_path / "once").mkdir()
    alone = analyse(tmp_path / "once", once)
    both = analyse(tmp_path, twice, workers=workers)

    assert [without_weird(r) for r in both.records] == alone.records
    record = both.records[0]
    assert record["weirds"]["duplicate_frame"] == len(once)
    assert record["syn_count"] == 1 and "t" not in record["history"].lower()
    assert both.stats["duplicate_frames"] == len(once) and alone.stats["duplicate_frames"] == 0
    assert any("captured twice" in w for w in both.warnings) and not alone.warnings


# (case, the copy of the client's second data segment, how long after it, is it a duplicate?)
COPIES = [
    ("forwarded copy", lambda raw: copy(raw), 0.00002, True),
    ("copy late in the window", lambda raw: copy(raw), DUPLICATE_FRAME_WINDOW_S * 0.9, True),
    ("same bytes after the window", lambda raw: copy(raw, hops=0), DUPLICATE_FRAME_WINDOW_S * 1.5, False),
    ("retransmission: new IPv4 id", lambda raw: copy(raw, hops=0, ip_id=7), 0.00002, False),
    ("another segment: new window", lambda raw: copy(raw, hops=0, window=1000), 0.00002, False),
]


@pytest.mark.parametrize("case, make_copy, after, duplicate", COPIES, ids=[c[0] for c in COPIES])
def test_only_the_same_packet_soon_after_is_a_copy(tmp_path, case, make_copy, after, duplicate):
    conv = Conversation()
    conv.handshake().server_sends(b"220 ready\r\n").client_sends(b"EHLO a\r\n").client_sends(b"MAIL FROM:<a@b>\r\n", dt=0.0001)
    packets = numbered(conv.packets)
    ts, raw = packets[-1]
    # The copy lands before anything else of the connection (here: before the server's answer).
    conv.server_sends(b"250 ok\r\n250 ok\r\n", dt=0.5).close_by_client()
    rest = numbered(conv.packets)[len(packets):]
    record = analyse(tmp_path, packets + [(ts + int(after * NS), make_copy(raw))] + rest).records[0]
    from_client = sum(IP(raw).src == conv.client for _ts, raw in packets + rest)

    assert record["weirds"].get("duplicate_frame", 0) == (1 if duplicate else 0)
    assert ("T" in record["history"]) != duplicate  # otherwise a retransmission
    assert record["packets_client"] == from_client + (0 if duplicate else 1)


def test_a_syn_retried_by_a_stack_that_sends_id_zero_is_still_a_retry(tmp_path):
    conv = Conversation()
    conv.syn()
    first_ts, syn = conv.packets[0]
    pkt = IP(syn)
    pkt.id = 0
    del pkt.chksum
    syn = bytes(pkt)
    packets = [(first_ts, syn), (first_ts + NS, syn), (first_ts + 3 * NS, syn)]
    record = analyse(tmp_path, packets).records[0]

    assert record["syn_count"] == 3
    assert "duplicate_frame" not in record["weirds"]


@pytest.mark.parametrize("workers", [1, 2])
def test_icmp_errors_and_dns_messages_captured_twice_are_read_once(tmp_path, workers):
    """An ICMP error from a router further out and the DNS lookup before the connection, each
    forwarded (so captured twice): one error in the session, no retransmitted query."""
    conv = Conversation(t=1_700_000_000.5)
    conv.syn().icmp_from_router(dt=0.03)
    once = numbered(dns_exchange(1_700_000_000.0, "smtp.office365.com", [("smtp.office365.com", "A", conv.server)])
                    + conv.packets)
    twice = [(ts + offset, copy(raw) if offset else raw) for ts, raw in once for offset in (0, 20_000)]
    (tmp_path / "once").mkdir()
    alone = analyse(tmp_path / "once", once)
    both = analyse(tmp_path, twice, workers=workers)

    assert [without_weird(r) for r in both.records] == alone.records
    assert both.records[0]["outcome"] == "rejected_icmp"
    assert both.records[0]["weirds"]["duplicate_frame"] == 2  # the SYN's copy and the error's
    assert [kind for _ts, _d, kind, _t in both.session_events(0)] == [kind for _ts, _d, kind, _t in alone.session_events(0)]
    assert both.dns.to_dict("records") == alone.dns.to_dict("records")
    assert both.dns["retransmissions"].tolist() == [0]
    # The answer's copy counts among the duplicate responses (a resolver may answer a query
    # and its retransmissions at once, with the same bytes), not as a copy.
    assert both.stats["dns"]["duplicate_frames"] == 1 and both.stats["dns"]["duplicate_responses"] == 1
    assert both.stats["duplicate_frames"] == len(once) - 1
