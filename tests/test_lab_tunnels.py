"""Real tunnels: Linux's vxlan, geneve and gretap devices carry a real SMTP dialogue (kernel TCP, a
Python server and client) between two network namespaces. The capture of the underlay link
holds it encapsulated; the capture of the tunnel device holds the frames inside. smtpflow
reads the same session from both.

Needs root and network namespaces; skipped with the reason otherwise (and per tunnel kind
when this kernel lacks it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import analyzer  # noqa: E402
from tests.lab.netns import Capture, LabError, requires_root_and_netns, run  # noqa: E402

SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 25)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); f = c.makefile("rb")
c.sendall(b"220 mail.example.test ESMTP ready\r\n")
for reply in (b"250 mail.example.test\r\n", b"550 5.7.1 Relaying denied\r\n", b"221 2.0.0 Bye\r\n"):
    if not f.readline(): break
    c.sendall(reply)
c.close()
"""

CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], 25), timeout=10); f = c.makefile("rb")
f.readline()
for line in (b"EHLO client.example.test\r\n", b"MAIL FROM:<a@example.test>\r\n", b"QUIT\r\n"):
    c.sendall(line); f.readline()
c.close()
"""

# (kind, the `ip link add … type …` arguments for side A and side B)
TUNNELS = {
    "vxlan": (["vxlan", "id", "42", "remote", "198.18.0.2", "dstport", "4789", "dev", "vA"],
              ["vxlan", "id", "42", "remote", "198.18.0.1", "dstport", "4789", "dev", "vB"]),
    "geneve": (["geneve", "id", "42", "remote", "198.18.0.2"], ["geneve", "id", "42", "remote", "198.18.0.1"]),
    "gretap": (["gretap", "local", "198.18.0.1", "remote", "198.18.0.2", "key", "7"],
               ["gretap", "local", "198.18.0.2", "remote", "198.18.0.1", "key", "7"]),
}


def _view(record: dict) -> tuple:
    replies = [(r["code"], r["command"]) for r in (record["smtp"] or {}).get("replies", [])]
    return (record["client"], record["server"], record["server_port"], record["conn_state"], record["history"],
            record["packets_client"], record["packets_server"], record["bytes_client"], record["bytes_server"],
            record["outcome"], str(replies))


@requires_root_and_netns()
@pytest.mark.netns
@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(TUNNELS))
def test_a_session_through_a_real_tunnel_reads_the_same_from_the_underlay(tmp_path, kind):
    a, b = f"sf-{os.getpid()}-tun-a", f"sf-{os.getpid()}-tun-b"
    server = None
    try:
        for ns in (a, b):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "link", "add", "vA", "netns", a, "type", "veth", "peer", "name", "vB", "netns", b])
        run(["ip", "-n", a, "addr", "add", "198.18.0.1/24", "dev", "vA"])
        run(["ip", "-n", b, "addr", "add", "198.18.0.2/24", "dev", "vB"])
        for ns, dev in ((a, "vA"), (b, "vB")):
            run(["ip", "-n", ns, "link", "set", dev, "up"])
        side_a, side_b = TUNNELS[kind]
        try:
            run(["ip", "-n", a, "link", "add", "t0", "type", *side_a])
            run(["ip", "-n", b, "link", "add", "t0", "type", *side_b])
        except LabError as exc:
            pytest.skip(f"this kernel has no {kind} devices: {exc}")
        for ns, address in ((a, "10.77.0.1/24"), (b, "10.77.0.2/24")):
            run(["ip", "-n", ns, "addr", "add", address, "dev", "t0"])
            run(["ip", "-n", ns, "link", "set", "t0", "up"])

        underlay, inner = tmp_path / "underlay.pcap", tmp_path / "inner.pcap"
        server = subprocess.Popen(["ip", "netns", "exec", b, sys.executable, "-c", SERVER, "10.77.0.2"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert server.stdout.readline().strip() == b"ready"
        with Capture(a, underlay, "vA"), Capture(a, inner, "t0"):
            run(["ip", "netns", "exec", a, sys.executable, "-c", CLIENT, "10.77.0.2"], timeout=30)
            server.wait(timeout=10)
            time.sleep(0.3)  # the last ACK into both captures
    finally:
        if server is not None and server.poll() is None:
            server.kill()
        for ns in (a, b):
            run(["ip", "netns", "delete", ns], check=False)

    direct = analyzer.analyze(str(inner), ports=[25])
    mirrored = analyzer.analyze(str(underlay), ports=[25])
    assert [_view(r) for r in direct.records] == [_view(r) for r in mirrored.records]
    record = mirrored.records[0]
    assert (record["client"], record["server"], record["outcome"]) == ("10.77.0.1", "10.77.0.2", "smtp_error")
    assert mirrored.stats["tunneled"] > 0 and direct.stats["tunneled"] == 0
