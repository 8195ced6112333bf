"""A firewall's own capture: iptables hands packets to NFLOG, tcpdump -i nflog:N writes them
(link type NFLOG, TLVs in the host's byte order). Real kernel, real tcpdump: smtpflow reads
the same SMTP session from it as from a capture of the interface.

Needs root and network namespaces; skipped with the reason otherwise.
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

DIALOGUE = r"""
import socket
s = socket.socket(); s.bind(("127.0.0.1", 25)); s.listen(1)
c = socket.create_connection(("127.0.0.1", 25), timeout=10)
a, _ = s.accept()
a.sendall(b"220 mail.example.test ESMTP\r\n"); c.recv(100)
c.sendall(b"EHLO client\r\n"); a.recv(100)
a.sendall(b"250 mail.example.test\r\n"); c.recv(100)
c.sendall(b"QUIT\r\n"); a.recv(100)
a.sendall(b"221 Bye\r\n"); c.recv(100)
c.close(); a.close()
"""


@requires_root_and_netns()
@pytest.mark.netns
@pytest.mark.timeout(60)
def test_an_nflog_capture_reads_like_the_interface(tmp_path):
    ns = f"sf-{os.getpid()}-nflog"
    logged, direct = tmp_path / "nflog.pcap", tmp_path / "lo.pcap"
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        try:
            run(["ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "tcp", "--dport", "25", "-j", "NFLOG",
                 "--nflog-group", "5", "--nflog-prefix", "smtp-out"])
            run(["ip", "netns", "exec", ns, "iptables", "-A", "OUTPUT", "-p", "tcp", "--sport", "25", "-j", "NFLOG",
                 "--nflog-group", "5", "--nflog-prefix", "smtp-in"])
        except LabError as exc:
            pytest.skip(f"no NFLOG target here: {exc}")
        with Capture(ns, logged, "nflog:5"), Capture(ns, direct, "lo"):
            time.sleep(0.5)  # tcpdump says "listening" before the kernel delivers to its nflog socket
            run(["ip", "netns", "exec", ns, sys.executable, "-c", DIALOGUE], timeout=30)
            time.sleep(1.5)  # the kernel hands logged packets over in batches, at least once a second
    finally:
        run(["ip", "netns", "delete", ns], check=False)

    assert b"NFLOG" in subprocess.run(["tcpdump", "-r", str(logged), "-c", "1"], capture_output=True).stderr
    from_nflog = analyzer.analyze(str(logged)).records
    from_lo = analyzer.analyze(str(direct)).records
    keys = ("client", "server", "server_port", "conn_state", "history", "packets_client", "packets_server", "outcome")
    assert [tuple(r[k] for k in keys) for r in from_nflog] == [tuple(r[k] for k in keys) for r in from_lo]
    assert from_nflog[0]["smtp"]["banner"].startswith("220 mail.example.test") and from_nflog[0]["outcome"] == "completed"
    # What the firewall's log says of the session: its group, the prefix of the rule that
    # logged the client's first packet, every packet of both directions.
    firewall = from_nflog[0]["firewall"]
    assert (firewall["log"], firewall["group"], firewall["prefix"], firewall["action"]) == ("nflog", 5, "smtp-out", None)
    assert firewall["packets"] == from_nflog[0]["packets_client"] + from_nflog[0]["packets_server"]
    assert from_lo[0]["firewall"] is None
