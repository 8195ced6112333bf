"""``smtpflow live`` on a gateway between network namespaces, with real servers and clients.

Each scenario runs in a client — router — server topology (tests/lab); smtpflow captures on the
router's client-side interface, exactly where an admin would run it. The sessions it reports
live must carry the facts the scenario guarantees, a failure must be printed as it happens,
and the ring of pcapng files it leaves must give the same result when analysed offline.
A load test floods the gateway and checks that drops are counted, not hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

import analyzer
from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lab.netns import requires_root_and_netns  # noqa: E402

pytestmark = [requires_root_and_netns(), pytest.mark.netns, pytest.mark.slow]

SCENARIOS = ["starttls-auth-ok", "syn-dropped", "rst-forged-by-router", "icmp-admin-prohibited", "starttls-required-530"]


def _check(record: dict, expected: dict, where: str) -> None:
    from test_captures import check_session

    check_session(record, expected, where)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", SCENARIOS)
def test_live_capture_diagnoses_and_rings_replay(tmp_path, name):
    from tests.lab.live import LiveProcess
    from tests.lab.scenarios import SCENARIOS as LAB, run_with_capture

    holder = {}

    def factory(topo):
        holder["live"] = LiveProcess(topo.router, "lan0", tmp_path)
        return holder["live"]

    run_with_capture(name, factory, tmp_path / "lab")
    live = holder["live"]
    assert live.returncode == 0, (live.stdout, live.stderr)
    records = [json.loads(line) for line in live.jsonl.read_text().splitlines()]
    expected = []
    for session in LAB[name].sessions:
        expected += [session] * session.get("count", 1)
    assert len(records) == len(expected), [(r["server"], r["outcome"]) for r in records]
    remaining = list(records)
    for exp in expected:
        candidates = [r for r in remaining if r["server"] == exp["server"] and r["server_port"] == exp["server_port"]]
        for rec in candidates:
            try:
                _check(rec, exp, f"{name} live")
            except AssertionError:
                continue
            remaining.remove(rec)
            break
        else:
            _check(candidates[0], exp, f"{name} live")
    # Failures are printed as they happen, one line each (stdout is not a terminal here).
    failing = [r for r in records if r["verdict"]["severity"] in ("error", "warning")]
    lines = [line for line in live.stdout.splitlines() if "  FAIL  " in line or "  WARN  " in line]
    assert len(lines) == len(failing), live.stdout
    for rec in failing:
        assert any(f"{rec['client']}:{rec['client_port']}" in line and rec["outcome"] in line for line in lines)
    assert "capture stopped" in live.stderr and "dropped by the kernel" in live.stderr
    # The ring files replay offline to the very same records.
    offline = analyzer.analyze(str(live.ring))
    assert json.dumps(list(offline.records), sort_keys=True) == json.dumps(records, sort_keys=True)


SENDER = textwrap.dedent(
    """
    import socket, struct, sys, time
    count, dst_mac, src_mac = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), bytes.fromhex(sys.argv[3])
    def csum(data):
        total = int.from_bytes(data + (b"\\0" if len(data) % 2 else b""), "big") % 0xFFFF
        return (~total) & 0xFFFF
    src, dst = socket.inet_aton("10.25.1.2"), socket.inet_aton("10.25.2.10")
    frames = []
    for i in range(4096):
        tcp = struct.pack(">HHIIBBHHH", 20000 + i, 25, 1000 + i, 0, 0x50, 0x02, 64240, 0, 0)
        pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack(">H", csum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i, 0, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack(">H", csum(ip)) + ip[12:]
        frames.append(dst_mac + src_mac + b"\\x08\\x00" + ip + tcp)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    sent = 0
    start = time.monotonic()
    while sent < count and time.monotonic() - start < 20:
        s.send(frames[sent % len(frames)])
        sent += 1
    print(sent)
    """
)


@pytest.mark.timeout(240)
def test_load_drops_are_reported_not_hidden(tmp_path):
    """Bursts of SYNs to port 25 from the client: every packet is either captured or counted as dropped."""
    from tests.lab.live import LiveProcess
    from tests.lab.netns import MAC, Topology

    with Topology() as topo:
        topo.settle()
        with LiveProcess(topo.router, "lan0", tmp_path, extra=["--quiet"]) as live:
            proc = topo.exec(topo.client, [sys.executable, "-c", SENDER, "150000", MAC["lan0"].replace(":", ""), MAC["client"].replace(":", "")],
                             timeout=60)
            sent = int(proc.stdout.decode().strip())
    assert live.returncode in (0, 3), live.stderr
    summary = [line for line in live.stderr.splitlines() if "capture stopped" in line][0]
    numbers = [int(word.replace(",", "")) for word in summary.split(";")[1].split() if word.replace(",", "").isdigit()]
    captured, dropped, passed = numbers
    # The kernel's own count: everything its filter passed was either read or counted as dropped.
    assert captured + dropped == passed, summary
    # And every SYN the sender put on the wire passed the filter (the server's answers come on top).
    assert passed >= sent, (sent, summary)
    if dropped:
        assert live.returncode == 3 and "the kernel dropped" in live.stderr
    records = [json.loads(line) for line in live.jsonl.read_text().splitlines()]
    assert len(records) >= min(captured, 4096) * 0.9  # the sessions were reconstructed


@pytest.mark.timeout(120)
def test_interface_going_down_keeps_the_results_so_far(tmp_path):
    from tests.lab.live import LiveProcess
    from tests.lab.netns import MAC, Topology

    with Topology() as topo:
        topo.settle()
        with LiveProcess(topo.router, "lan0", tmp_path) as live:
            topo.exec(topo.client, [sys.executable, "-c", SENDER, "200", MAC["lan0"].replace(":", ""), MAC["client"].replace(":", "")], timeout=60)
            import time

            time.sleep(1.5)
            topo.exec(topo.router, ["ip", "link", "set", "lan0", "down"])
            time.sleep(2.5)
    assert live.returncode == 3, (live.returncode, live.stderr)
    assert "every interface went down" in live.stderr
    assert "stopped delivering packets" in live.stderr
    records = [json.loads(line) for line in live.jsonl.read_text().splitlines()]
    assert len(records) >= 150  # the SYNs seen before the link went down became sessions


@pytest.mark.timeout(120)
def test_python_api_in_a_background_thread(tmp_path):
    """analyzer.live() returns at once; .analysis() while running; .stop() gives the final Analysis."""
    from tests.lab.netns import MAC, Topology, in_netns

    with Topology() as topo:
        topo.settle()
        capture = in_netns(topo.router, lambda: analyzer.live("lan0", ring_dir=str(tmp_path / "ring")))
        try:
            topo.exec(topo.client, [sys.executable, "-c", SENDER, "300", MAC["lan0"].replace(":", ""), MAC["client"].replace(":", "")], timeout=60)
            import time

            time.sleep(1.5)
            running = capture.analysis()
            assert capture.stats["packets"] >= 300
        finally:
            final = capture.stop()
    assert len(final.sessions) >= 300 and len(final.sessions) >= len(running.sessions)
    assert set(final.sessions["outcome"].astype(str)) <= {"syn_unanswered", "rejected_rst", "incomplete"}
    offline = analyzer.analyze(str(tmp_path / "ring"))
    assert len(offline.records) == len(final.records)

