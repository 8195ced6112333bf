"""A firewall's own log as the capture. pf's log (``tcpdump -i pflog0`` on pfSense, OPNsense,
OpenBSD) holds the packets a rule with ``log`` matched, each with the rule, the interface and
the action: a SYN pf logged as blocked was dropped there, by that firewall, and the session
says so (``record["firewall"]`` and its verdict) instead of "the SYNs passed this capture
point". Linux's NFLOG says which rule's prefix logged a packet, not what the rule did: the
verdict says that much and no more. (tests/test_lab_nflog.py: a real kernel's NFLOG.)"""

from __future__ import annotations

import json

import pytest

import analyzer
from analyzer.decode import firewall as firewall_module
from crafting import CLIENT6, MS_SERVER6, Conversation, frames, nflog, pflog, plain_smtp_session, write_pcap

MX = "52.101.68.10"  # an Exchange Online MX address (published range)


def unanswered_syns(conv: Conversation, tries: int = 3) -> Conversation:
    conv.syn()
    for n in range(1, tries):
        conv.syn(dt=2.0 ** n)
    return conv


def records(path, **options) -> list[dict]:
    return json.loads(json.dumps(list(analyzer.analyze(str(path), **options)._result.records)))


@pytest.mark.parametrize("header_len, af6", [(61, 28), (69, 28), (100, 24)], ids=["FreeBSD", "FreeBSD 14", "OpenBSD"])
@pytest.mark.parametrize("v6", [False, True], ids=["IPv4", "IPv6"])
def test_syns_pf_blocked_are_blocked_by_this_firewall(tmp_path, header_len, af6, v6):
    conv = unanswered_syns(Conversation(client=CLIENT6, server=MS_SERVER6, sport=25) if v6 else
                           Conversation(server=MX, sport=25))
    path = write_pcap(tmp_path / "pflog.pcap", [(ts, pflog(ip, header_len, af6, rule=12, interface=b"igb1", direction=2))
                                                 for ts, ip in conv.packets], 117)
    (record,) = records(path)

    assert record["outcome"] == "syn_unanswered" and record["syn_count"] == 3
    assert record["firewall"] == {"log": "pflog", "action": "block", "reason": "match", "rule": 12, "subrule": None,
                                  "ruleset": None, "interface": "igb1", "direction": "out", "prefix": None,
                                  "group": None, "packets": 3}
    verdict = record["verdict"]
    assert verdict["title"] == "Blocked by this firewall: pf rule 12 on igb1, outbound"
    assert "dropped here, by this firewall" in verdict["explanation"]
    assert "passed this capture point" not in verdict["explanation"] and "left this host" not in verdict["explanation"]
    assert "rule 12" in verdict["remediation"] and "pf logged 3 packet(s)" in verdict["evidence"][0]
    (finding,) = analyzer.analyze(str(path)).summary()["findings"]
    assert finding["title"] == verdict["title"] and "blocked by the firewall whose log this capture is" in finding["detail"]
    assert "passed this capture point" not in finding["detail"]


def test_the_same_syns_on_the_wire_are_dropped_further_along(tmp_path):
    conv = unanswered_syns(Conversation(server=MX, sport=25))
    (record,) = records(write_pcap(tmp_path / "wire.pcap", frames(conv.packets, 1)))
    assert record["outcome"] == "syn_unanswered" and record["firewall"] is None
    assert not record["verdict"]["title"].startswith("Blocked by this firewall")
    (finding,) = analyzer.analyze(str(tmp_path / "wire.pcap")).summary()["findings"]
    assert "the SYNs passed this capture point" in finding["detail"]


def test_a_session_pf_passed_and_logged_reads_as_it_went(tmp_path):
    conv = plain_smtp_session(Conversation(server=MX, sport=25))
    packets = [(ts, pflog(ip, action=0, rule=3, direction=2 if n % 2 == 0 else 1)) for n, (ts, ip) in enumerate(conv.packets)]
    (record,) = records(write_pcap(tmp_path / "pass.pcap", packets, 117))
    assert record["outcome"] == "completed"
    assert record["firewall"]["action"] == "pass" and record["firewall"]["packets"] == len(conv.packets)
    assert not record["verdict"]["title"].startswith("Blocked")


def test_a_block_among_logged_passes_is_the_one_told(tmp_path):
    conv = unanswered_syns(Conversation(server=MX, sport=25))
    actions = [0, 1, 1]  # the first try passed a rule that logs, the retries hit a block
    packets = [(ts, pflog(ip, action=action, rule=7 + action)) for (ts, ip), action in zip(conv.packets, actions)]
    (record,) = records(write_pcap(tmp_path / "mixed.pcap", packets, 117))
    assert (record["firewall"]["action"], record["firewall"]["rule"], record["firewall"]["packets"]) == ("block", 8, 3)


def test_split_runs_keep_what_pf_logged(tmp_path):
    """Every process of a split run reads every packet: the sessions each follows carry
    their log entries as a serial run's do."""
    packets = []
    for n in range(12):
        conv = unanswered_syns(Conversation(server=MX, sport=25, cport=40000 + n, t=1_700_000_000.0 + n))
        packets += [(ts, pflog(ip, rule=n)) for ts, ip in conv.packets]
    path = write_pcap(tmp_path / "many.pcap", sorted(packets), 117)
    serial = records(path, workers=1)
    assert records(path, workers=2) == serial
    assert sorted(r["firewall"]["rule"] for r in serial) == list(range(12))


def test_the_log_table_is_bounded():
    log = firewall_module.FirewallLog(limit=3)
    record = pflog(bytes([0x45]) + bytes(19))
    for n in range(10):
        log.add((b"\x0a\x00\x00\x01", 40000 + n, b"\x34\x65\x44\x0a", 25), "pflog", record, 0, len(record))
    assert len(log) == 3 and log.forgotten == 7
    # Each keeps the log header alone, a copy: never a view of the capture's buffer.
    assert all(type(entry[1]) is bytes and len(entry[1]) == 61 for entry in log._entries.values())
    assert log.take(b"\x0a\x00\x00\x01", 40009, b"\x34\x65\x44\x0a", 25)["packets"] == 1
    assert log.take(b"\x0a\x00\x00\x01", 40000, b"\x34\x65\x44\x0a", 25) is None
    assert len(log) == 2


@pytest.mark.parametrize("byteorder", ["little", "big"])
@pytest.mark.parametrize("prefix", [b"smtp-drop", b""], ids=["prefix", "no prefix"])
def test_syns_in_a_linux_firewall_log_are_logged_there(tmp_path, byteorder, prefix):
    conv = unanswered_syns(Conversation(server=MX, sport=25))
    packets = [(ts, nflog(ip, byteorder, prefix=prefix, group=7)) for ts, ip in conv.packets]
    path = write_pcap(tmp_path / "nflog.pcap", packets, 239)
    (record,) = records(path)
    assert record["outcome"] == "syn_unanswered"
    assert record["firewall"] == {"log": "nflog", "action": None, "reason": None, "rule": None, "subrule": None,
                                  "ruleset": None, "interface": None, "direction": None,
                                  "prefix": prefix.decode() or None, "group": 7, "packets": 3}
    verdict = record["verdict"]
    named = "prefix 'smtp-drop'" if prefix else "group 7"
    assert verdict["title"] == f"No answer on port 25: logged by this firewall ({named})"
    assert "not what it did" in verdict["explanation"] and "passed this capture point" not in verdict["explanation"]
    assert ("grep -n -- 'smtp-drop'" if prefix else "grep -n 'group 7'") in verdict["remediation"]
    (finding,) = analyzer.analyze(str(path)).summary()["findings"]
    assert "the log does not say whether that firewall dropped them" in finding["detail"]


def test_a_session_in_a_linux_firewall_log_reads_as_it_went(tmp_path):
    conv = plain_smtp_session(Conversation(server=MX, sport=25))
    (record,) = records(write_pcap(tmp_path / "nflog.pcap", [(ts, nflog(ip)) for ts, ip in conv.packets], 239))
    assert record["outcome"] == "completed" and record["verdict"]["severity"] == "ok"
    assert (record["firewall"]["log"], record["firewall"]["prefix"], record["firewall"]["packets"]) == (
        "nflog", "smtp", len(conv.packets))
