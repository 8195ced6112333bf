"""The kernel's own fragments: a DNS server answers with some 2.5 KB over a link whose MTU is
1280, so Linux sends the answer in pieces (IPv4 and IPv6); tcpdump captures them. smtpflow
pairs the lookup with its answer, every address in it.

Needs root and network namespaces; skipped with the reason otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import analyzer  # noqa: E402
from tests.lab.netns import Capture, requires_root_and_netns, run  # noqa: E402

ADDRESSES = [f"52.96.{i // 250}.{i % 250 + 1}" for i in range(150)]

SERVER_AND_CLIENT = r"""
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
answer = open(sys.argv[2], "rb").read()
server = socket.socket(family, socket.SOCK_DGRAM); server.bind((sys.argv[1], 53))
client = socket.socket(family, socket.SOCK_DGRAM); client.settimeout(5)
client.sendto(open(sys.argv[3], "rb").read(), (sys.argv[1], 53))
query, peer = server.recvfrom(512)
server.sendto(query[:2] + answer[2:], peer)
got = client.recv(65535)
assert len(got) == len(answer), (len(got), len(answer))
"""


@requires_root_and_netns()
@pytest.mark.netns
@pytest.mark.timeout(60)
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_the_kernels_fragments_of_a_large_dns_answer(tmp_path, address):
    from scapy.layers.dns import DNS, DNSQR, DNSRR

    question = DNSQR(qname="smtp.office365.com")
    query = tmp_path / "query"
    query.write_bytes(bytes(DNS(id=7, rd=1, qd=question)))
    answer = tmp_path / "answer"
    answer.write_bytes(bytes(DNS(id=7, qr=1, rd=1, ra=1, qd=question,
                                 an=[DNSRR(rrname="smtp.office365.com", type="A", ttl=60, rdata=a) for a in ADDRESSES])))
    ns = f"sf-{os.getpid()}-frag"
    pcap = tmp_path / "lo.pcap"
    try:
        run(["ip", "netns", "add", ns])
        run(["ip", "-n", ns, "link", "set", "lo", "mtu", "1280", "up"])
        with Capture(ns, pcap, "lo"):
            run(["ip", "netns", "exec", ns, sys.executable, "-c", SERVER_AND_CLIENT, address, str(answer), str(query)])
            time.sleep(0.3)
    finally:
        run(["ip", "netns", "delete", ns], check=False)

    analysis = analyzer.analyze(str(pcap))
    assert analysis.stats["fragments"] >= 2 and analysis.stats["reassembled"] == 1  # the kernel did cut it
    rows = analysis.dns.to_dict("records")
    assert [(r["qname"], r["status"]) for r in rows] == [("smtp.office365.com", "answered")]
    assert list(rows[0]["addresses"]) == ADDRESSES[:32]
