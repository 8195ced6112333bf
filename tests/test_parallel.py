"""Many files: rotated captures stitched like the concatenated file; workers and Dask give the same results."""

from __future__ import annotations

import json
import os

import pytest

import analyzer
from conftest import ROOT

from crafting import Conversation, dns_exchange, frames, plain_smtp_session, write_pcap


def fingerprint(a) -> tuple[str, dict]:
    stats = {k: v for k, v in a.stats.items() if k not in ("elapsed_s",)}
    return json.dumps(list(a.records), sort_keys=True, default=str), stats


def rotated(tmp_path, cuts=(7, 23, 41, 60, 88)):
    """One gateway-like capture written whole, and cut into ring files at arbitrary packets
    (several cuts fall inside sessions)."""
    packets = []
    t = 1_700_000_000.0
    for i in range(8):
        packets += dns_exchange(t + i * 3, "smtp.office365.com", [("smtp.office365.com", "A", f"52.96.10.{i + 1}")], txid=i)
        conv = plain_smtp_session(Conversation(cport=42000 + i, t=t + i * 3 + 0.1, server=f"52.96.10.{i + 1}", sport=587))
        packets += conv.packets
    dropped = Conversation(cport=43000, t=t + 1)
    for dt in (0, 1, 2, 4):
        dropped.syn(dt=dt)
    packets += dropped.packets
    packets += Conversation(cport=44000, t=t + 40, server="198.51.100.1").syn().packets
    allf = frames(sorted(packets), 1)
    whole = write_pcap(tmp_path / "whole.pcap", allf)
    ring = tmp_path / "ring"
    ring.mkdir()
    bounds = [0, *cuts, len(allf)]
    for n, (a, b) in enumerate(zip(bounds, bounds[1:])):
        write_pcap(ring / f"trace_{n:05d}.pcap", allf[a:b])
    return whole, str(ring)


def test_rotated_files_equal_the_concatenated_capture(tmp_path):
    whole, ring = rotated(tmp_path)
    serial_whole = analyzer.analyze(whole)
    serial_ring = analyzer.analyze(ring)
    assert len(serial_whole.records) == 10
    assert fingerprint(serial_ring)[0] == fingerprint(serial_whole)[0]


def test_workers_give_identical_results(tmp_path):
    _whole, ring = rotated(tmp_path)
    serial = analyzer.analyze(ring)
    parallel = analyzer.analyze(ring, workers=2)
    assert parallel.capture.get("workers") is True
    assert fingerprint(parallel) == fingerprint(serial)


def test_workers_on_the_bundled_captures(tmp_path):
    captures = os.path.join(ROOT, "captures")
    serial = analyzer.analyze(captures)
    parallel = analyzer.analyze(captures, workers=2)
    assert fingerprint(parallel) == fingerprint(serial)


def test_workers_keep_damage_and_errors(tmp_path):
    _whole, ring = rotated(tmp_path)
    files = sorted(os.listdir(ring))
    victim = os.path.join(ring, files[2])
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[:-9])
    (tmp_path / "ring" / "notes.pcap").write_text("not a capture\n")
    serial = analyzer.analyze(ring)
    parallel = analyzer.analyze(ring, workers=3)
    assert serial.exit_code == parallel.exit_code == 3
    assert serial.damage == parallel.damage and serial.errors == parallel.errors
    assert fingerprint(parallel)[0] == fingerprint(serial)[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_dask_local_cluster_gives_identical_results(tmp_path):
    distributed = pytest.importorskip("distributed")
    _whole, ring = rotated(tmp_path)
    serial = analyzer.analyze(ring)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            on_dask = analyzer.analyze(ring, client=client)
    assert fingerprint(on_dask) == fingerprint(serial)


# -- one capture split by connection across processes ---------------------------------------------
def whole_result(a):
    """Everything a run produced: records, statistics, DNS transactions, orphan ICMP, events."""
    records, stats = fingerprint(a)
    result = a._result
    return records, stats, json.dumps([result.dns, result.orphan_icmp, dict(result.events)], sort_keys=True, default=str)


@pytest.mark.parametrize("shards", [2, 3])
def test_one_capture_split_by_connection_gives_identical_results(shards):
    """Every bundled capture (and Zeek's SMTP captures where present) analysed in several
    processes, each following some of the connections, equals the single-process analysis."""
    import glob

    from conftest import ZEEK_CORPUS

    paths = sorted(glob.glob(os.path.join(ROOT, "captures", "*.pcap*")))
    if os.path.isdir(ZEEK_CORPUS):
        paths += sorted(glob.glob(os.path.join(ZEEK_CORPUS, "**", "*smtp*.pcap*"), recursive=True))
    several = 0
    for path in paths:
        serial = analyzer.analyze(path)
        sharded = analyzer.analyze(path, workers=shards)
        assert sharded.capture["shards"] == shards
        assert whole_result(sharded) == whole_result(serial), path
        several += len(serial.records) > 1
    assert several >= 3  # captures whose sessions really were split


def test_split_keeps_cross_connection_knowledge(tmp_path):
    """What one connection teaches the table reaches the others, whichever process follows
    them: a host known for good checksums has its corrupt segment dropped ('auto'), an idle
    connection expires on the capture's clock (advanced by other connections' packets), an
    ICMP error finds the connection it quotes."""
    from scapy.all import IP, TCP

    from analyzer.dispatch import shard_of

    t = 1_700_000_000.0
    packets = []
    ports = []
    for i in range(12):  # connections in every shard
        conv = plain_smtp_session(Conversation(cport=45000 + i, t=t + i * 0.5, sport=587))
        ports.append(45000 + i)
        packets += conv.packets
    quiet = Conversation(cport=46000, t=t + 1, sport=587).handshake()
    quiet.server_sends(b"220 mx ESMTP\r\n", dt=0.01)
    packets += quiet.packets
    packets += plain_smtp_session(Conversation(cport=46001, t=t + 4000, sport=587)).packets
    # Another server: good segments on one connection, then a corrupt SYN-ACK (its only packet)
    # on a connection that another process follows, for every process count tried below.
    from ipaddress import ip_address

    other, client_raw = "52.96.10.99", ip_address(quiet.client).packed
    other_raw = ip_address(other).packed
    good_port = 47000
    bad_port = next(p for p in range(47001, 48000)
                    if all(shard_of(client_raw, p, other_raw, 587, n) != shard_of(client_raw, good_port, other_raw, 587, n) for n in (2, 3, 4)))
    packets += plain_smtp_session(Conversation(cport=good_port, server=other, t=t + 4000.5, sport=587)).packets
    bad = Conversation(cport=bad_port, server=other, t=t + 4001, sport=587).handshake()  # SYN, SYN-ACK, ACK
    ts, raw = bad.packets[1]
    corrupt = IP(raw)
    corrupt[TCP].chksum ^= 0x5A5A
    packets += [bad.packets[0], (ts, bytes(corrupt)), bad.packets[2]]
    refused = Conversation(cport=46003, t=t + 4002, sport=587).syn().icmp_from_router()
    packets += refused.packets
    path = write_pcap(tmp_path / "x.pcap", frames(sorted(packets), 1))

    c, s_ = client_raw, ip_address(quiet.server).packed
    assert len({shard_of(c, port, s_, 587, 2) for port in ports}) == 2
    serial = analyzer.analyze(str(path))
    by_port = {r["client_port"]: r for r in serial.records}
    assert by_port[46000]["outcome"] == "incomplete" and "long time" in by_port[46000]["outcome_reason"]
    assert "c" in by_port[bad_port]["history"]  # the corrupt SYN-ACK was dropped: its sender is known for good ones
    assert by_port[46003]["outcome"] == "rejected_icmp"
    for shards in (2, 3, 4):
        assert whole_result(analyzer.analyze(str(path), workers=shards)) == whole_result(serial), shards


def test_auto_splits_a_capture_only_when_python_follows_much_of_it(tmp_path, monkeypatch):
    """--workers auto: a big capture that is mostly other traffic stays in one process (each
    process would re-read it all for little Python work); one that is mostly SMTP is split."""
    from analyzer import engine

    monkeypatch.setattr(engine, "SHARD_MIN_BYTES", 0)  # these captures are small
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    web = []
    for i in range(300):
        web += Conversation(server="198.51.100.7", sport=443, cport=30000 + i, t=1_700_000_000.0 + i * 0.01).handshake().packets
    smtp = plain_smtp_session(Conversation(t=1_700_000_001.0)).packets
    gateway = write_pcap(tmp_path / "gateway.pcap", frames(sorted(web + smtp), 1))
    relay = write_pcap(tmp_path / "relay.pcap", frames(sorted(smtp), 1))
    options = engine.Options()
    if engine.Prefilter.available:  # without the C scan every packet is Python's: always split
        assert engine._kept_share(gateway, options) < engine.SHARD_MIN_KEPT_SHARE
        assert engine._auto_workers([gateway], options) == 1
    assert engine._kept_share(relay, options) >= engine.SHARD_MIN_KEPT_SHARE
    assert engine._auto_workers([relay], options) == 2
    assert engine._auto_workers([gateway, relay], options) == 2  # several files: read in parallel


def test_workers_tell_the_progress_bar_of_each_file_read(tmp_path):
    from analyzer.engine import Options, run

    _whole, ring = rotated(tmp_path)
    calls = []
    result = run([ring], Options(), lambda *args: calls.append(args), workers=2)
    files = sorted(os.listdir(ring))
    sizes = [os.path.getsize(os.path.join(ring, name)) for name in files]
    assert [done for done, _total, _packets in calls] == [sum(sizes[: n + 1]) for n in range(len(files))]
    assert {total for _done, total, _packets in calls} == {sum(sizes)}
    assert calls[-1][2] == result.stats["packets"]


def _dns_named_sessions(tmp_path, over_tcp: bool) -> str:
    """Sessions to two servers in every shard, each named only by a DNS answer that came
    before them: over UDP, or (``over_tcp``) over TCP, a connection only shard 0 follows."""
    from scapy.all import DNS, DNSQR, DNSRR

    t = 1_700_000_000.0
    packets = []
    answers = [("smtp.office365.com", "A", "52.96.10.7"), ("contoso-com.mail.protection.outlook.com", "A", "52.101.8.9")]
    if over_tcp:
        resolver = Conversation(cport=53000, server="192.0.2.53", sport=53, t=t).handshake()
        for i, (name, rtype, data) in enumerate(answers):
            query = bytes(DNS(id=i, rd=1, qd=[DNSQR(qname=name, qtype=rtype)]))
            answer = bytes(DNS(id=i, qr=1, rd=1, ra=1, qd=[DNSQR(qname=name, qtype=rtype)],
                               an=[DNSRR(rrname=name, type=rtype, ttl=60, rdata=data)]))
            resolver.client_sends(len(query).to_bytes(2, "big") + query)
            resolver.server_sends(len(answer).to_bytes(2, "big") + answer)
        packets += resolver.close_by_client().packets
    else:
        for i, answer in enumerate(answers):
            packets += dns_exchange(t + i * 0.1, answer[0], [answer], txid=i, sport=40000 + i)
    for i in range(16):
        server = answers[i % 2][2]
        packets += plain_smtp_session(Conversation(cport=45000 + i, t=t + 1 + i * 0.5, server=server, sport=587)).packets
    return str(write_pcap(tmp_path / ("tcp.pcap" if over_tcp else "udp.pcap"), frames(sorted(packets), 1)))


@pytest.mark.parametrize("over_tcp", [False, True])
def test_every_shard_builds_its_records_with_what_dns_said(tmp_path, monkeypatch, over_tcp):
    """Shards build their own sessions' records, with every shard's server TTLs and the names
    DNS gave (each reads the DNS datagrams). Names learnt over TCP only shard 0 knows: then the
    others send their sessions' facts and it builds every record. The results are the serial
    run's either way."""
    from analyzer import parallel

    if not parallel.can_shard():
        pytest.skip("splitting one capture across processes needs fork")
    path = _dns_named_sessions(tmp_path, over_tcp)
    serial = analyzer.analyze(path)
    names = {r["server_name"] for r in serial.records if r["server_port"] == 587}
    assert names == {"smtp.office365.com", "contoso-com.mail.protection.outlook.com"}
    built_by_shards = []
    monkeypatch.setattr(parallel, "_built_by", lambda proc, conn, f=parallel._built_by: built_by_shards.append(proc.name) or f(proc, conn))
    for shards in (2, 3):
        built_by_shards.clear()
        assert whole_result(analyzer.analyze(path, workers=shards)) == whole_result(serial), shards
        assert len(built_by_shards) == (0 if over_tcp else shards - 1)
