"""What open connections hold, and the table's budget for it (flows/limits.MAX_TABLE_BYTES).

Every connection is bounded on its own, but thousands of them kept busy by a capture (each
holding a partial 250 KB handshake message, or 2,000 events) would add up to gigabytes. The
table weighs its connections with ``TcpConnection.footprint`` and finalises the least
recently active ones past its budget. These tests check the estimate against tracemalloc,
state by state, and the budget against connections that would exceed it.
"""

from __future__ import annotations

import gc
import os
import struct
import tracemalloc

import pytest

import analyzer.flows.table as table_module
from analyzer.capture import CaptureSet
from analyzer.capture.linktypes import LINKTYPE_RAW
from analyzer.engine import Engine, Options
from analyzer.flows.limits import MAX_EVENT_DETAIL
from analyzer.protocols.session import MAX_RECIPIENTS, MAX_STORED_TEXT

from conftest import ROOT
from crafting import self_signed_cert, tls_exchange

NS = 1_000_000_000
SYN, ACK, PSH = 0x02, 0x10, 0x08
SERVER = bytes([52, 96, 10, 20])  # in Microsoft's published submission range


def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_tcp(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"") -> bytes:
    """An IPv4/TCP packet with correct checksums (raw IP link type), built without scapy:
    these tests need tens of thousands of packets."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, 64240, 0, 0) + payload
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + tcp


def _opening(dialogue: list[tuple[bool, bytes]]) -> list[tuple[bool, int, bytes]]:
    steps = [(True, SYN, b""), (False, SYN | ACK, b""), (True, ACK, b"")]
    return steps + [(from_client, PSH | ACK, data) for from_client, data in dialogue]


GREETING = [
    (False, b"220 mx.contoso.example Microsoft ESMTP MAIL Service ready\r\n"),
    (True, b"EHLO client.example\r\n"),
    (False, b"250-mx.contoso.example Hello\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"),
]


def _handshake_flights():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return tls_exchange(self_signed_cert(tmp))


def _partial_handshake() -> list[tuple[bool, int, bytes]]:
    """After STARTTLS, the server starts a Certificate message announced at 250 KB and sends
    200 KB of it: the TLS parser holds it, waiting for the rest."""
    body = bytes([11]) + (250 * 1024).to_bytes(3, "big")
    stream = b""
    for i in range(13):
        fragment = (body if i == 0 else b"") + bytes(16384 - (4 if i == 0 else 0))
        stream += struct.pack("!BHH", 22, 0x0303, len(fragment)) + fragment
    steps = _opening(GREETING + [(True, b"STARTTLS\r\n"), (False, b"220 2.0.0 SMTP server ready\r\n")])
    return steps + [(False, ACK, stream[i : i + 1400]) for i in range(0, len(stream), 1400)]


def _starttls() -> list[tuple[bool, int, bytes]]:
    steps = _opening(GREETING + [(True, b"STARTTLS\r\n"), (False, b"220 2.0.0 SMTP server ready\r\n")])
    for from_client, flight in _handshake_flights():
        steps += [(from_client, PSH | ACK, flight[i : i + 1400]) for i in range(0, len(flight), 1400)]
    return steps


def _recipients() -> list[tuple[bool, int, bytes]]:
    dialogue = GREETING + [(True, b"MAIL FROM:<app@contoso.example>\r\n"), (False, b"250 2.1.0 Sender OK\r\n")]
    for i in range(150):
        dialogue += [(True, b"RCPT TO:<user%d@fabrikam.example>\r\n" % i), (False, b"250 2.1.5 Recipient OK\r\n")]
    return _opening(dialogue)


#: Connection states, each as the steps that leave a connection in it (never closed).
STATES = {
    "syn_only": lambda: [(True, SYN, b"")],
    "mid_dialogue": lambda: _opening(GREETING + [(True, b"MAIL FROM:<app@contoso.example>\r\n"), (False, b"250 2.1.0 Sender OK\r\n")]),
    "tls_established": _starttls,
    "partial_handshake": _partial_handshake,
    "many_events": lambda: _opening(GREETING + [(True, b"NOOP\r\n"), (False, b"250 2.0.0 OK\r\n")] * 200),
    "many_recipients": _recipients,
    "long_replies": lambda: _opening(GREETING + [(True, b"NOOP\r\n"), (False, (b"250-" + b"x" * 3000 + b"\r\n") * 9 + b"250 OK\r\n")] * 20),
    "partial_long_line": lambda: _opening(GREETING + [(True, b"MAIL FROM:<" + b"x" * 8000)]),
}


def interleaved(count: int, steps: list[tuple[bool, int, bytes]], first_port: int = 40000) -> list[tuple]:
    """Records of ``count`` connections taking ``steps`` in turn, so that all are open at once."""
    records = []
    seqs = [[1000, 5000] for _ in range(count)]
    ts = 1_700_000_000 * NS
    for from_client, flags, payload in steps:
        for n in range(count):
            client = bytes([192, 0, 2 + n // 250, 1 + n % 250])
            port = first_port + n
            cseq, sseq = seqs[n]
            if from_client:
                frame = raw_tcp(client, SERVER, port, 587, cseq, sseq, flags, payload)
                seqs[n][0] += len(payload) + (1 if flags & SYN else 0)
            else:
                frame = raw_tcp(SERVER, client, 587, port, sseq, cseq, flags, payload)
                seqs[n][1] += len(payload) + (1 if flags & SYN else 0)
            ts += 20_000
            records.append((ts, LINKTYPE_RAW, frame, 0, len(frame), len(frame)))
    return records


@pytest.mark.parametrize("state", STATES)
def test_footprint_estimates_what_a_connection_holds(state):
    """tracemalloc's count of what 30 connections in each state hold (after a first run has
    imported everything it needs) and the sum of their footprints agree within 25 %."""
    records = interleaved(30, STATES[state]())
    warm = Engine(Options())
    warm.feed(records)
    warm.finish()
    warm.result()
    warm.close()
    del warm
    engine = Engine(Options())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine.feed(records)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    active = list(engine.table.active)
    assert len(active) == 30 and engine.table.evicted == 0
    estimate = sum(conn.footprint() for conn in active)
    assert 0.8 <= estimate / held <= 1.25, (state, estimate, held)


KEYED_CAPTURES = ["starttls-auth-ok", "implicit-tls-465-ok", "sendas-denied-554", "tls10-accepted-421"]


@pytest.mark.parametrize("name", KEYED_CAPTURES)
def test_footprint_of_a_decrypted_session(name):
    """With a key log the session also holds secrets, ciphers and the SMTP parser of the
    dialogue inside TLS: a bundled capture, stopped just before its end, is estimated within
    25 % too (what tracemalloc counts includes its DNS rows, if any)."""
    path = os.path.join(ROOT, "captures", f"{name}.pcap")
    options = Options(keylog=os.path.join(ROOT, "captures", f"{name}.keys"))
    records = [(ts, lt, bytes(buf[start:end]), 0, end - start, wl) for ts, lt, buf, start, end, wl in CaptureSet([path])]
    warm = Engine(options)
    warm.feed(records)
    warm.finish()
    warm.result()
    warm.close()
    del warm
    engine = Engine(options)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine.feed(records[:-3])
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    (conn,) = engine.table.active
    assert conn.analyzer.tls.decrypter is not None
    assert 0.8 <= conn.footprint() / held <= 1.25, (name, conn.footprint(), held)


def test_connections_past_the_budget_are_finalised_early(monkeypatch):
    """30 partial handshakes hold about 7.5 MB; with a budget of 2 MB, the table never holds
    much more than that, the least recently active connections being finalised early and
    their sessions reported as such (not lost)."""
    budget = 2 * 1024 * 1024
    monkeypatch.setattr(table_module, "MAX_TABLE_BYTES", budget)
    records = interleaved(30, _partial_handshake())
    engine = Engine(Options())
    table = engine.table
    assert table.max_bytes == budget
    largest = 0
    for record in records:
        engine.feed([record])
        largest = max(largest, sum(conn.footprint() for conn in table.active))
    # Between weighings the table grows by at most its headroom (an eighth of the budget at
    # least, once it has had to evict) plus one segment's worth.
    assert largest <= budget + 64 * 1024
    assert table.evicted_for_memory > 0 and table.evicted == table.evicted_for_memory
    engine.finish()
    result = engine.result()
    early = [r for r in result.records if r["end_reason"] == "table_full"]
    assert len(early) == table.evicted_for_memory
    assert all(r["outcome"] == "incomplete" for r in early)
    assert all("memory budget" in r["outcome_reason"] for r in early)
    assert result.stats["connections_evicted_for_memory"] == table.evicted_for_memory
    assert any("held more than 2 MB" in warning for warning in result.warnings)


@pytest.mark.parametrize("capture", ["partial handshakes", "gateway-mixed.pcap", "pipelining-bdat.pcap"])
def test_weighing_only_the_touched_connections_adds_up_to_all(monkeypatch, capture):
    """The table weighs again only the connections touched since it last weighed: at every
    weighing (here after every packet, under a budget that forces evictions), what it holds is
    the sum of every active connection's footprint."""
    budget = 1024 * 1024
    monkeypatch.setattr(table_module, "MAX_TABLE_BYTES", budget)
    if capture == "partial handshakes":
        records = interleaved(12, _partial_handshake())
    else:
        records = CaptureSet([os.path.join(ROOT, "captures", capture)])  # read as fed: records point into the file
    engine = Engine(Options())
    table = engine.table
    weighed = 0
    for record in records:
        engine.feed([record])
        held = table.weigh()
        assert held == sum(conn.footprint() for conn in table.active)
        weighed += 1
    assert weighed > 20
    if capture == "partial handshakes":
        assert table.evicted_for_memory > 0
    engine.finish()
    assert table.held == 0 and not table.touched


def test_the_budget_is_the_users_to_set(tmp_path):
    """--table-memory (and the config file's table_memory_mb, and analyze()'s argument) sets
    the budget: 50 partial handshakes (12 MB) are let go early under 4 MB, not under 128 MB."""
    import subprocess
    import sys

    import analyzer
    from crafting import write_pcap

    records = interleaved(50, _partial_handshake())
    path = write_pcap(tmp_path / "held.pcap", [(ts, frame) for ts, _lt, frame, _s, _e, _w in records], linktype=LINKTYPE_RAW)
    early = {}
    for label, extra in (("flag", ["--table-memory", "4"]), ("default", [])):
        out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-q", "--format", "jsonl", *extra, path],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        early[label] = out.stdout.count('"end_reason":"table_full"')
    config = tmp_path / "smtpflow.toml"
    config.write_text("table_memory_mb = 4\n")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-q", "--format", "jsonl", "--config", str(config), path],
                         capture_output=True, text=True, timeout=120)
    early["config"] = out.stdout.count('"end_reason":"table_full"')
    run = analyzer.analyze(path, table_memory_mb=4)
    early["api"] = sum(r["end_reason"] == "table_full" for r in run.records)
    assert early["default"] == 0
    assert early["flag"] == early["config"] == early["api"] > 0


def test_within_the_budget_nothing_is_finalised_early():
    """The same connections, under the real budget: all followed to the end of the capture."""
    records = interleaved(30, _partial_handshake())
    engine = Engine(Options())
    engine.feed(records)
    engine.finish()
    result = engine.result()
    assert engine.table.evicted == 0 and not result.warnings
    assert {r["end_reason"] for r in result.records} == {"capture_end"}


def test_stored_texts_and_event_details_are_cut():
    """Replies of 27 KB, a 8 KB partial command line: what the facts and events keep is cut
    to MAX_STORED_TEXT / MAX_EVENT_DETAIL characters, marked with an ellipsis."""
    engine = Engine(Options())
    engine.feed(interleaved(1, STATES["long_replies"]()))
    engine.finish()
    (record,) = engine.result().records
    long_texts = [reply["text"] for reply in record["smtp"]["replies"] if len(reply["text"]) > 100]
    assert long_texts and all(len(text) == MAX_STORED_TEXT and text.endswith("...") for text in long_texts)
    engine = Engine(Options())
    engine.feed(interleaved(1, STATES["long_replies"]()))
    engine.finish()
    result = engine.result()
    details = [detail for events in result.events.values() for _ts, _dir, _kind, detail in events]
    assert max(len(detail) for detail in details) == MAX_EVENT_DETAIL


def test_recipients_are_bounded_per_session_across_transactions():
    """1,500 recipients in 250 transactions (MAIL, 6 RCPT, RSET repeated): the session keeps
    MAX_RECIPIENTS of them in its rcpt_to, and as many in its (first MAX_TRANSACTIONS)
    transactions' lists together."""
    dialogue = list(GREETING)
    for i in range(250):
        dialogue += [(True, b"MAIL FROM:<a@contoso.example>\r\n"), (False, b"250 2.1.0 Sender OK\r\n")]
        for j in range(6):
            dialogue += [(True, b"RCPT TO:<u%d.%d@fabrikam.example>\r\n" % (i, j)), (False, b"250 2.1.5 Recipient OK\r\n")]
        dialogue += [(True, b"RSET\r\n"), (False, b"250 2.0.0 Resetting\r\n")]
    engine = Engine(Options())
    engine.feed(interleaved(1, _opening(dialogue)))
    engine.finish()
    (record,) = engine.result().records
    smtp = record["smtp"]
    assert len(smtp["rcpt_to"]) == MAX_RECIPIENTS
    assert sum(len(t["rcpt_to"]) for t in smtp["transactions"]) == MAX_RECIPIENTS


def test_heavy_sessions_weigh_more_in_the_store():
    """A session holding 200 replies counts for many in the store of finished sessions, so
    the store spills to disk sooner (diagnosis/store.session_weight)."""
    from analyzer.diagnosis.store import session_weight

    weights = {}
    for state in ("mid_dialogue", "many_events"):
        engine = Engine(Options())
        engine.feed(interleaved(1, STATES[state]()))
        engine.finish()
        (facts,) = list(engine.facts)
        weights[state] = session_weight(facts["held_bytes"])
    assert weights["mid_dialogue"] == 1
    assert weights["many_events"] >= 10
