"""Smoke tests of the capture lab (tests/lab): it records real traffic, and its parts behave.

The recording test needs root and network namespaces and is skipped with the reason otherwise.
It checks the pcap with tools other than the lab's own reader: ``tcpdump -r`` and scapy.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # `pytest` (not `python -m pytest`) doesn't put the root there
    sys.path.insert(0, str(ROOT))

from tests.lab.clients import LAB_PASSWORD, LAB_USER  # noqa: E402
from tests.lab.dns import TYPE_AAAA, Zone, build_query, default_records, parse_addresses  # noqa: E402
from tests.lab.netns import SERVICE_ADDRESSES, requires_root_and_netns  # noqa: E402
from tests.lab.scenarios import SCENARIOS  # noqa: E402

EXO4 = SERVICE_ADDRESSES["exo"][0]
OUTCOMES = {"syn_unanswered", "rejected_rst", "rejected_icmp", "reset_by_middlebox", "tls_failed",
            "smtp_error", "closed_early", "completed", "incomplete"}
SESSION_FIELDS = {"server", "server_port", "conn_state", "outcome", "syn_count_min", "rst_from",
                  "icmp", "tls", "smtp_replies", "encrypted_replies", "credentials", "count",
                  "expected_with_keys", "lab"}


@requires_root_and_netns()
@pytest.mark.netns
@pytest.mark.timeout(120)
def test_records_a_real_starttls_session(tmp_path):
    from scapy.all import IP, TCP, Raw, rdpcap

    from tests.lab.scenarios import record

    result = record("starttls-auth-ok", tmp_path)

    assert result.problems == []
    assert result.pcap_path == tmp_path / "starttls-auth-ok.pcap"
    # tcpdump itself can read the file and sees the handshake.
    out = subprocess.run(["tcpdump", "-nr", str(result.pcap_path), "tcp port 587"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert f"> {EXO4}.587: Flags [S]," in out
    assert f"{EXO4}.587 > " in out and "Flags [S.]," in out

    packets = rdpcap(str(result.pcap_path))
    tcp = [p for p in packets if p.haslayer(TCP) and 587 in (p[TCP].sport, p[TCP].dport)]
    syn = [p for p in tcp if int(p[TCP].flags) & 0x12 == 0x02]
    synack = [p for p in tcp if int(p[TCP].flags) & 0x12 == 0x12]
    assert len(syn) == 1 and len(synack) == 1
    assert syn[0][IP].ttl == 64 and synack[0][IP].ttl == 127   # Windows-like server, one hop
    from_server = b"".join(bytes(p[Raw].load) for p in tcp
                           if p[TCP].sport == 587 and p.haslayer(Raw))
    assert from_server.startswith(b"220 SY5P282CA0097.outlook.office365.com Microsoft ESMTP MAIL "
                                  b"Service ready at ")
    assert b"250-STARTTLS\r\n" in from_server and b"220 2.0.0 SMTP server ready\r\n" in from_server
    # The credentials travel inside TLS only; the key log exists for decrypting them.
    from_client = b"".join(bytes(p[Raw].load) for p in tcp
                           if p[TCP].dport == 587 and p.haslayer(Raw))
    assert b"cHJpbnRlckBjb250b3NvLmNvbQ" not in from_client   # base64 of the user name
    assert result.keylog_path is not None
    assert "CLIENT_RANDOM " in result.keylog_path.read_text()
    replies = [r["code"] for r in result.clients[0]["replies"]]
    assert replies == [220, 250, 220, 250, 334, 334, 235, 250, 250, 354, 250, 221]


def test_lab_dns_answers_the_microsoft_shapes():
    scapy_dns = pytest.importorskip("scapy.layers.dns")
    zone = Zone(records=default_records(("10.25.2.10", "fd25:0:0:2::10"),
                                        ("10.25.2.25", "fd25:0:0:2::25"),
                                        ("10.25.2.30", "fd25:0:0:2::30")),
                failures={"smtp-nameast.outlook.com": "NXDOMAIN", "down.office365.com": "SERVFAIL",
                          "silent.office365.com": "DROP"})

    def ask(name, qtype="A"):
        q = scapy_dns.DNS(id=0x2525, rd=1, qd=scapy_dns.DNSQR(qname=name, qtype=qtype))
        raw = zone.answer(bytes(q))
        return None if raw is None else scapy_dns.DNS(raw)

    r = ask("smtp.office365.com")
    assert r.id == 0x2525 and r.qr == 1 and r.ra == 1 and r.rcode == 0
    chain = [(r.an[i].rrname, r.an[i].rdata) for i in range(r.ancount)]
    assert chain == [(b"smtp.office365.com.", b"smtp.ms-acdc.office.com."),
                     (b"smtp.ms-acdc.office.com.", b"SYD-efz.ms-acdc.office.com."),
                     (b"SYD-efz.ms-acdc.office.com.", "10.25.2.10")]
    assert ask("smtp.office365.com", "AAAA").an[2].rdata == "fd25:0:0:2::10"
    mx_aaaa = ask("contoso-com.mail.protection.outlook.com", "AAAA")
    assert mx_aaaa.rcode == 0 and mx_aaaa.ancount == 0 and mx_aaaa.nscount == 1   # NODATA + SOA
    assert ask("smtp-nameast.outlook.com").rcode == 3
    assert ask("down.office365.com").rcode == 2
    assert ask("silent.office365.com") is None
    # The lab's own stub resolver reads what the responder writes (CNAME chain skipped).
    assert parse_addresses(zone.answer(build_query(7, "smtp.office365.com", TYPE_AAAA))) == (
        0, ["fd25:0:0:2::10"])


def test_scenario_facts_use_the_analyzer_vocabulary():
    assert len(SCENARIOS) == 25
    for name, sc in SCENARIOS.items():
        assert sc.description and sc.how and sc.verdict, name
        for s in sc.sessions:
            assert set(s) <= SESSION_FIELDS, (name, set(s) - SESSION_FIELDS)
            assert s["outcome"] in OUTCOMES, name
            assert s.get("expected_with_keys", "smtp_error") in OUTCOMES, name
            if s.get("credentials"):
                assert s["credentials"] == {"username": LAB_USER, "password": LAB_PASSWORD}
        if any(s.get("encrypted_replies") for s in sc.sessions):
            assert sc.writes_keylog, name


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_bundled_captures_match_the_manifest():
    import json

    manifest = ROOT / "captures" / "manifest.json"
    if not manifest.exists():
        pytest.skip("captures/manifest.json not generated yet")
    doc = json.loads(manifest.read_text())
    names = {e["file"] for e in doc["captures"]}
    assert names == {f"{n}.pcap" for n in SCENARIOS}
    for e in doc["captures"]:
        pcap = ROOT / "captures" / e["file"]
        assert pcap.stat().st_size <= 200_000, e["file"]
        if e["keylog"]:
            assert (ROOT / "captures" / e["keylog"]).exists(), e["keylog"]
        # Facts marked FromCapture vary between recordings; everything else is the table's.
        from tests.lab.scenarios import FromCapture

        table = SCENARIOS[e["file"][:-5]].sessions
        assert len(e["sessions"]) == len(table), e["file"]
        for got, want in zip(e["sessions"], table):
            assert {k: v for k, v in got.items() if not isinstance(want.get(k), FromCapture)} == \
                {k: v for k, v in want.items() if not isinstance(v, FromCapture)}, e["file"]
