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
    return json.dumps(a.records, sort_keys=True, default=str), stats


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
