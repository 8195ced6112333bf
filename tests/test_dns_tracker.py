"""DNS transactions (analyzer.protocols.dns.tracker): pairing, failures, names behind addresses."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRMX, DNSRRSOA, dns_compress
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from analyzer.capture import CaptureSet
from analyzer.capture.linktypes import LINKTYPE_ETHERNET
from analyzer.decode import Decoder, IcmpError, Selector, TcpSegment, UdpDatagram
from analyzer.decode.ip import IPPROTO_UDP
from analyzer.flows import ConnectionTable, TcpConnection
from analyzer.protocols.dns import tracker as tracker_module
from analyzer.protocols.dns import (
    MAX_PENDING_QUERIES,
    QUERY_TIMEOUT_S,
    UNANSWERED_GRACE_S,
    DnsTracker,
    is_failure,
    is_microsoft_mail_name,
)

NS = 1_000_000_000
T0 = 1_760_000_000 * NS
MS = 1_000_000
CLIENT = bytes([192, 168, 1, 20])
RESOLVER = bytes([192, 168, 1, 1])
CLIENT6 = ipaddress.IPv6Address("2001:db8::20").packed
RESOLVER6 = ipaddress.IPv6Address("2001:db8::53").packed

TX_KEYS = [
    "ts", "client", "client_port", "server", "server_port", "transport", "id", "qname", "qtype",
    "status", "rcode", "answers", "cname_chain", "addresses", "mx", "response_ts", "rtt",
    "retransmissions", "truncated", "authoritative", "authority_soa", "icmp",
]

# outlook.office365.com as resolved via 1.1.1.1 (../shared/reference/exchange-online.md §6).
OUTLOOK_CHAIN = [
    DNSRR(rrname="outlook.office365.com", type="CNAME", ttl=289, rdata="outlook.cloud.microsoft"),
    DNSRR(rrname="outlook.cloud.microsoft", type="CNAME", ttl=286, rdata="acdcatm.outlook.mira.tm.svc.cloud.microsoft"),
    DNSRR(rrname="acdcatm.outlook.mira.tm.svc.cloud.microsoft", type="CNAME", ttl=60, rdata="outlook.ms-acdc.office.com"),
    DNSRR(rrname="outlook.ms-acdc.office.com", type="CNAME", ttl=58, rdata="MDW-efz.ms-acdc.office.com"),
    DNSRR(rrname="MDW-efz.ms-acdc.office.com", type="A", ttl=8, rdata="52.96.164.146"),
    DNSRR(rrname="MDW-efz.ms-acdc.office.com", type="A", ttl=8, rdata="52.96.79.50"),
]
OUTLOOK_NAMES = [
    "outlook.office365.com", "outlook.cloud.microsoft", "acdcatm.outlook.mira.tm.svc.cloud.microsoft",
    "outlook.ms-acdc.office.com", "mdw-efz.ms-acdc.office.com",
]
# smtp.office365.com ends at a <SITE>-efz.ms-acdc.office.com name; the intermediate name is illustrative.
SMTP_CHAIN = [
    DNSRR(rrname="smtp.office365.com", type="CNAME", ttl=300, rdata="smtp.ms-acdc.office.com"),
    DNSRR(rrname="smtp.ms-acdc.office.com", type="CNAME", ttl=60, rdata="LHR-efz.ms-acdc.office.com"),
    DNSRR(rrname="LHR-efz.ms-acdc.office.com", type="A", ttl=8, rdata="52.96.164.146"),
]


def query(msg_id: int, qname: str, qtype: str = "A") -> bytes:
    return bytes(DNS(id=msg_id, rd=1, qd=[DNSQR(qname=qname, qtype=qtype)]))


def response(msg_id: int, qname: str, qtype: str = "A", an=(), ns=(), ar=(), rcode=0, aa=0, tc=0) -> bytes:
    msg = DNS(id=msg_id, qr=1, rd=1, ra=1, aa=aa, tc=tc, rcode=rcode, qd=[DNSQR(qname=qname, qtype=qtype)],
              an=list(an), ns=list(ns), ar=list(ar))
    return bytes(dns_compress(msg))


def up(ts: int, payload: bytes, port: int = 40000, client: bytes = CLIENT, server: bytes = RESOLVER) -> UdpDatagram:
    return UdpDatagram(ts, 4 if len(client) == 4 else 6, client, server, 64, port, 53, payload)


def down(ts: int, payload: bytes, port: int = 40000, client: bytes = CLIENT, server: bytes = RESOLVER) -> UdpDatagram:
    return UdpDatagram(ts, 4 if len(client) == 4 else 6, server, client, 64, 53, port, payload)


def only(tracker: DnsTracker) -> dict:
    (tx,) = tracker.transactions()
    return tx


# -- pairing ---------------------------------------------------------------------------------
def test_query_and_response_pair_into_one_transaction():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(0x1111, "smtp.office365.com")))
    tracker.udp(down(T0 + 23 * MS, response(0x1111, "smtp.office365.com", an=SMTP_CHAIN)))
    tx = only(tracker)
    assert list(tx) == TX_KEYS
    json.dumps(tx)  # one pandas row, JSON-serialisable
    assert tx == {
        "ts": T0, "client": "192.168.1.20", "client_port": 40000, "server": "192.168.1.1", "server_port": 53,
        "transport": "udp", "id": 0x1111, "qname": "smtp.office365.com", "qtype": "A",
        "status": "answered", "rcode": "NOERROR",
        "answers": [
            {"name": "smtp.office365.com", "type": "CNAME", "ttl": 300, "data": "smtp.ms-acdc.office.com"},
            {"name": "smtp.ms-acdc.office.com", "type": "CNAME", "ttl": 60, "data": "lhr-efz.ms-acdc.office.com"},
            {"name": "lhr-efz.ms-acdc.office.com", "type": "A", "ttl": 8, "data": "52.96.164.146"},
        ],
        "cname_chain": ["smtp.office365.com", "smtp.ms-acdc.office.com", "lhr-efz.ms-acdc.office.com"],
        "addresses": ["52.96.164.146"], "mx": [], "response_ts": T0 + 23 * MS, "rtt": pytest.approx(0.023),
        "retransmissions": 0, "truncated": False, "authoritative": False, "authority_soa": None, "icmp": None,
    }
    assert not is_failure(tx)
    assert tracker.stats()["pending"] == 0


def test_retransmission_counts_and_duplicate_answer_is_not_a_new_transaction():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(7, "smtp.office365.com")))
    tracker.udp(up(T0 + 1 * NS, query(7, "smtp.office365.com")))
    tracker.udp(up(T0 + 2 * NS, query(7, "smtp.office365.com")))
    tracker.udp(down(T0 + 2 * NS + 5 * MS, response(7, "smtp.office365.com", an=SMTP_CHAIN)))
    tracker.udp(down(T0 + 2 * NS + 6 * MS, response(7, "smtp.office365.com", an=SMTP_CHAIN)))
    tx = only(tracker)
    assert tx["retransmissions"] == 2
    assert tx["rtt"] == pytest.approx(2.005)  # what the client waited, from the first transmission
    stats = tracker.stats()
    assert (stats["queries"], stats["retransmissions"], stats["duplicate_responses"], stats["unsolicited_responses"]) == (1, 2, 1, 0)


def test_a_and_aaaa_in_parallel_on_one_socket():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(100, "smtp.office365.com", "A")))
    tracker.udp(up(T0 + 1, query(101, "smtp.office365.com", "AAAA")))
    aaaa = DNSRR(rrname="smtp.office365.com", type="AAAA", rdata="2603:1036:c00:14::2")
    tracker.udp(down(T0 + 9 * MS, response(101, "smtp.office365.com", "AAAA", an=[aaaa])))
    tracker.udp(down(T0 + 10 * MS, response(100, "smtp.office365.com", an=SMTP_CHAIN)))
    a, quad = tracker.transactions()
    assert (a["qtype"], a["addresses"]) == ("A", ["52.96.164.146"])
    assert (quad["qtype"], quad["addresses"]) == ("AAAA", ["2603:1036:c00:14::2"])


def test_case_randomised_names_match_and_are_reported_lower_case():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(9, "SmTp.OfFiCe365.CoM")))
    tracker.udp(down(T0 + MS, response(9, "SmTp.OfFiCe365.CoM", an=[
        DNSRR(rrname="SmTp.OfFiCe365.CoM", type="A", rdata="52.96.79.50")])))
    tx = only(tracker)
    assert (tx["status"], tx["qname"], tx["addresses"]) == ("answered", "smtp.office365.com", ["52.96.79.50"])


def test_ipv6_transport_addresses_are_text():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(3, "outlook.office365.com"), client=CLIENT6, server=RESOLVER6))
    tracker.udp(down(T0 + MS, response(3, "outlook.office365.com", an=OUTLOOK_CHAIN), client=CLIENT6, server=RESOLVER6))
    tx = only(tracker)
    assert (tx["client"], tx["server"]) == ("2001:db8::20", "2001:db8::53")
    assert tx["cname_chain"] == OUTLOOK_NAMES
    assert tx["addresses"] == ["52.96.164.146", "52.96.79.50"]


def test_response_for_another_name_does_not_answer_the_query():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(5, "smtp.office365.com")))
    tracker.udp(down(T0 + MS, response(5, "evil.example", an=[DNSRR(rrname="evil.example", rdata="203.0.113.9")])))
    stats = tracker.stats()
    assert (stats["mismatched_responses"], stats["unsolicited_responses"], stats["pending"]) == (1, 1, 1)
    tx = only(tracker)
    assert (tx["qname"], tx["ts"], tx["rtt"], tx["status"]) == ("evil.example", T0 + MS, None, "answered")


def test_unsolicited_response_is_recorded_at_its_own_time():
    tracker = DnsTracker()
    tracker.udp(down(T0, response(77, "smtp.office365.com", an=SMTP_CHAIN)))
    tx = only(tracker)
    assert (tx["ts"], tx["response_ts"], tx["rtt"], tx["client"], tx["server"]) == (T0, T0, None, "192.168.1.20", "192.168.1.1")
    assert tracker.stats()["unsolicited_responses"] == 1
    assert tracker.names_for(bytes([52, 96, 164, 146]))[0]["name"] == "smtp.office365.com"


def test_damaged_response_still_answers_its_query_with_its_rcode():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(12, "contoso-com.mail.protection.outlook.com")))
    wire = response(12, "contoso-com.mail.protection.outlook.com", rcode=2, an=[
        DNSRR(rrname="contoso-com.mail.protection.outlook.com", rdata="104.47.53.36")])
    tracker.udp(down(T0 + MS, wire[:-3]))  # snaplen cut inside the answer
    tx = only(tracker)
    assert (tx["status"], tx["rcode"], tx["answers"], tx["cname_chain"]) == ("answered", "SERVFAIL", [], ["contoso-com.mail.protection.outlook.com"])
    assert is_failure(tx)
    assert tracker.stats()["malformed"] == 1


def test_garbage_on_port_53_is_counted_and_ignored():
    tracker = DnsTracker()
    tracker.udp(up(T0, b"\x16\x03\x01"))
    tracker.udp(up(T0, b"\x00" * 12))  # a query without question
    assert tracker.transactions() == []
    assert (tracker.stats()["malformed"], tracker.stats()["no_question"]) == (1, 1)


def test_other_opcodes_are_not_transactions():
    tracker = DnsTracker()
    tracker.udp(up(T0, bytes(DNS(id=1, opcode=5, qd=[DNSQR(qname="contoso.com", qtype="SOA")]))))
    assert tracker.stats()["other_opcodes"] == 1 and tracker.stats()["pending"] == 0


# -- failures -------------------------------------------------------------------------------
NXDOMAIN_SOA = DNSRRSOA(rrname="outlook.com", ttl=3600, mname="ns1-proddns.glbdns.o365filtering.com",
                        rname="msnhst.microsoft.com", serial=2024103100, minimum=60)


@pytest.mark.parametrize("rcode, label", [(3, "NXDOMAIN"), (2, "SERVFAIL"), (5, "REFUSED"), (1, "FORMERR"), (4, "NOTIMP")])
def test_error_rcodes_are_kept_failures_even_when_not_interesting(rcode, label):
    tracker = DnsTracker(interesting=lambda name: False)
    tracker.udp(up(T0, query(21, "contso-com.mail.protection.outlook.com")))
    tracker.udp(down(T0 + 30 * MS, response(21, "contso-com.mail.protection.outlook.com", rcode=rcode,
                                            ns=[NXDOMAIN_SOA] if rcode == 3 else [])))
    tx = only(tracker)
    assert (tx["status"], tx["rcode"], tx["addresses"]) == ("answered", label, [])
    assert is_failure(tx)
    if rcode == 3:
        assert tx["authority_soa"] == {"zone": "outlook.com", "mname": "ns1-proddns.glbdns.o365filtering.com",
                                       "serial": 2024103100, "negative_ttl": 60}


def test_refused_without_question_section_pairs_by_id():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(0x5151, "smtp.office365.com")))
    tracker.udp(down(T0 + MS, bytes(DNS(id=0x5151, qr=1, rcode=5, qd=[]))))
    tx = only(tracker)
    assert (tx["qname"], tx["status"], tx["rcode"]) == ("smtp.office365.com", "answered", "REFUSED")


def test_noerror_without_addresses_is_not_a_failure():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(4, "smtp.office365.com", "AAAA")))
    tracker.udp(down(T0 + MS, response(4, "smtp.office365.com", "AAAA")))
    tx = only(tracker)
    assert tx["addresses"] == [] and not is_failure(tx)


def test_query_unanswered_after_timeout_measured_from_last_transmission():
    timeout = int(QUERY_TIMEOUT_S * NS)
    tracker = DnsTracker(interesting=lambda name: False)
    tracker.udp(up(T0, query(1, "smtp.office365.com")))
    tracker.udp(up(T0 + 5 * NS, query(1, "smtp.office365.com")))
    tracker.expire(T0 + timeout)
    assert tracker.transactions() == [] and tracker.stats()["pending"] == 1
    tracker.expire(T0 + 5 * NS + timeout - 1)
    assert tracker.transactions() == []
    tracker.expire(T0 + 5 * NS + timeout)
    tx = only(tracker)
    assert (tx["status"], tx["rcode"], tx["rtt"], tx["response_ts"], tx["retransmissions"]) == ("unanswered", None, None, None, 1)
    assert is_failure(tx)
    # A late answer now has nothing to answer.
    tracker.udp(down(T0 + 20 * NS, response(1, "smtp.office365.com", an=SMTP_CHAIN)))
    assert tracker.stats()["unsolicited_responses"] == 1


def test_capture_end_versus_unanswered():
    grace = int(UNANSWERED_GRACE_S * NS)
    tracker = DnsTracker()
    tracker.udp(up(T0, query(1, "old.example")))
    tracker.udp(up(T0 + 10 * NS - grace + 1, query(2, "recent.example")))
    tracker.finish(T0 + 10 * NS)
    old, recent = tracker.transactions()
    assert (old["qname"], old["status"], is_failure(old)) == ("old.example", "unanswered", True)
    assert (recent["qname"], recent["status"], is_failure(recent)) == ("recent.example", "capture_end", False)
    assert tracker.stats()["pending"] == 0


def icmp_error(ts: int, icmp_type: int = 3, code: int = 3, reporter: bytes = RESOLVER, port: int = 40000) -> IcmpError:
    return IcmpError(ts, 4, reporter, CLIENT, 64, icmp_type, code, IPPROTO_UDP, CLIENT, RESOLVER, port, 53, None)


def test_icmp_port_unreachable_rejects_the_queries_of_that_flow():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(1, "smtp.office365.com", "A")))
    tracker.udp(up(T0 + 1, query(2, "smtp.office365.com", "AAAA")))
    tracker.udp(up(T0 + 2, query(3, "smtp.office365.com", "A"), port=40001))
    tracker.icmp_unreachable(icmp_error(T0 + MS))
    rejected = [tx for tx in tracker.transactions() if tx["status"] == "rejected_icmp"]
    assert [tx["id"] for tx in rejected] == [1, 2]
    assert rejected[0]["icmp"] == {"ts": T0 + MS, "type": 3, "code": 3, "reporter": "192.168.1.1", "description": "port unreachable"}
    assert all(is_failure(tx) for tx in rejected)
    assert tracker.stats()["pending"] == 1  # the query from port 40001 is untouched


def test_icmp_that_is_not_unreachable_is_ignored():
    tracker = DnsTracker()
    tracker.udp(up(T0, query(1, "smtp.office365.com")))
    tracker.icmp_unreachable(icmp_error(T0 + MS, icmp_type=11, code=0, reporter=bytes([10, 9, 9, 9])))
    assert tracker.stats()["pending"] == 1 and tracker.transactions() == []


# -- names behind addresses -------------------------------------------------------------------
def test_names_for_follows_the_cname_chain_and_respects_time():
    tracker = DnsTracker()
    address = bytes([52, 96, 164, 146])
    assert tracker.names_for(address) == []
    tracker.udp(up(T0, query(1, "smtp.office365.com")))
    tracker.udp(down(T0 + 20 * MS, response(1, "smtp.office365.com", an=SMTP_CHAIN)))
    tracker.udp(up(T0 + 5 * NS, query(2, "outlook.office365.com")))
    tracker.udp(down(T0 + 5 * NS + 20 * MS, response(2, "outlook.office365.com", an=OUTLOOK_CHAIN)))
    smtp = {"name": "smtp.office365.com", "ts": T0 + 20 * MS, "mx_of": None,
            "chain": ["smtp.office365.com", "smtp.ms-acdc.office.com", "lhr-efz.ms-acdc.office.com"]}
    outlook = {"name": "outlook.office365.com", "chain": OUTLOOK_NAMES, "ts": T0 + 5 * NS + 20 * MS, "mx_of": None}
    assert tracker.names_for(address) == [outlook, smtp]  # most recent first
    assert tracker.names_for(address, before_ns=T0 + 1 * NS) == [smtp]
    assert tracker.names_for(address, before_ns=T0 + 20 * MS - 1) == []
    assert tracker.names_for("52.96.164.146") == tracker.names_for(address)
    assert [e["name"] for e in tracker.names_for(bytes([52, 96, 79, 50]))] == ["outlook.office365.com"]
    # Re-resolving later does not hide the earlier answer from an earlier session.
    tracker.udp(up(T0 + 60 * NS, query(3, "smtp.office365.com")))
    tracker.udp(down(T0 + 60 * NS + MS, response(3, "smtp.office365.com", an=SMTP_CHAIN)))
    assert tracker.names_for(address, before_ns=T0 + 1 * NS) == [smtp]
    assert tracker.names_for(address)[0]["ts"] == T0 + 60 * NS + MS


def test_looking_up_addresses_dns_never_named_keeps_nothing():
    """A scan asks for the names of thousands of addresses no answer gave: no index is kept
    for them (it would grow with every address), and an address named later is found."""
    tracker = DnsTracker()
    for n in range(1000):
        assert tracker.names_for(bytes([52, 96, n // 256, n % 256])) == []
    assert tracker._index == {}
    tracker.udp(up(T0, query(1, "smtp.office365.com")))
    tracker.udp(down(T0 + 20 * MS, response(1, "smtp.office365.com", an=SMTP_CHAIN)))
    assert [e["name"] for e in tracker.names_for(bytes([52, 96, 164, 146]))] == ["smtp.office365.com"]
    assert list(tracker._index) == ["52.96.164.146"]


def test_names_for_ipv6_answers():
    tracker = DnsTracker()
    aaaa = DNSRR(rrname="smtp.office365.com", type="AAAA", rdata="2603:1036:c00:14::2")
    tracker.udp(down(T0, response(4, "smtp.office365.com", "AAAA", an=[aaaa])))
    (entry,) = tracker.names_for(ipaddress.IPv6Address("2603:1036:c00:14::2").packed)
    assert entry["chain"] == ["smtp.office365.com"]


def test_mx_lookup_with_glue():
    tracker = DnsTracker(interesting=lambda name: False)
    tracker.udp(up(T0, query(8, "contoso.com", "MX")))
    tracker.udp(down(T0 + MS, response(8, "contoso.com", "MX", aa=1, an=[
        DNSRRMX(rrname="contoso.com", preference=10, exchange="backup.contoso.com"),
        DNSRRMX(rrname="contoso.com", preference=0, exchange="contoso-com.mail.protection.outlook.com"),
    ], ar=[DNSRR(rrname="contoso-com.mail.protection.outlook.com", rdata="104.47.53.36")])))
    tx = only(tracker)  # MX queries are kept whatever the filter says
    assert tx["mx"] == [{"preference": 0, "exchange": "contoso-com.mail.protection.outlook.com"},
                        {"preference": 10, "exchange": "backup.contoso.com"}]
    assert tx["authoritative"] is True
    assert tracker.names_for(bytes([104, 47, 53, 36])) == [{
        "name": "contoso-com.mail.protection.outlook.com", "chain": ["contoso-com.mail.protection.outlook.com"],
        "ts": T0 + MS, "mx_of": "contoso.com",
    }]


def test_interesting_filter_keeps_mail_names_and_skips_the_rest():
    tracker = DnsTracker(interesting=is_microsoft_mail_name)
    tracker.udp(down(T0, response(1, "www.example.org", an=[DNSRR(rrname="www.example.org", rdata="93.184.216.34")])))
    alias = [DNSRR(rrname="smtp.contoso.com", type="CNAME", rdata="smtp.office365.com")] + SMTP_CHAIN
    tracker.udp(down(T0 + 1, response(2, "smtp.contoso.com", an=alias)))
    tracker.udp(down(T0 + 2, response(3, "contoso-com.mail.protection.outlook.com", an=[
        DNSRR(rrname="contoso-com.mail.protection.outlook.com", rdata="104.47.53.36")])))
    assert [tx["qname"] for tx in tracker.transactions()] == ["smtp.contoso.com", "contoso-com.mail.protection.outlook.com"]
    # Answers about names of no interest are not parsed (the gateway hot path), so they do not
    # feed the address map; the alias that leads to Microsoft does.
    assert tracker.names_for(bytes([93, 184, 216, 34])) == []
    assert tracker.stats()["ignored_messages"] == 1


@pytest.mark.parametrize(
    "name, expected",
    [("smtp.office365.com", True), ("outlook.office365.com", True), ("contoso-com.mail.protection.outlook.com", True),
     ("contoso-com.a1b2.mx.microsoft", True), ("lhr-efz.ms-acdc.office.com", True), ("outlook.cloud.microsoft", True),
     ("www.office.com", False), ("notoffice365.com", False), ("example.org", False)],
)
def test_is_microsoft_mail_name(name, expected):
    assert is_microsoft_mail_name(name) is expected


def test_cname_loop_ends_the_chain():
    tracker = DnsTracker()
    tracker.udp(down(T0, response(1, "a.example", an=[
        DNSRR(rrname="a.example", type="CNAME", rdata="b.example"),
        DNSRR(rrname="b.example", type="CNAME", rdata="a.example")])))
    assert only(tracker)["cname_chain"] == ["a.example", "b.example"]


# -- bounded state ----------------------------------------------------------------------------
def test_flood_of_unanswered_queries_keeps_pending_bounded():
    tracker = DnsTracker()
    extra = 500
    for i in range(MAX_PENDING_QUERIES + extra):
        tracker.udp(up(T0 + i, query(i & 0xFFFF, f"h{i}.flood.example"), port=1024 + (i >> 16)))
    stats = tracker.stats()
    assert stats["pending"] == MAX_PENDING_QUERIES
    assert stats["pending_evicted"] == extra
    tracker.finish(T0 + 60 * NS)
    assert tracker.stats()["unanswered"] == MAX_PENDING_QUERIES


@pytest.mark.parametrize("spacing_ms, unanswered", [(20, True), (1, False)])
def test_queries_let_go_for_room_are_unanswered_once_they_waited(monkeypatch, spacing_ms, unanswered):
    """A full pending table lets its oldest query go: one that waited UNANSWERED_GRACE_S or more
    is a row, unanswered (a resolver outage at a thousand lookups a second fills the table
    before QUERY_TIMEOUT_S); a younger one is only counted."""
    monkeypatch.setattr(tracker_module, "MAX_PENDING_QUERIES", 100)
    tracker = DnsTracker(interesting=lambda name: name.endswith("outlook.com"))
    for i in range(300):
        tracker.udp(up(T0 + i * spacing_ms * MS, query(i, f"t{i}.mail.protection.outlook.com"), port=2000 + i))
    stats = tracker.stats()
    assert stats["pending"] == 100
    rows = tracker.transactions()
    if unanswered:  # the oldest had waited 100 x 20 ms = 2 s
        assert stats["pending_evicted"] == 0 and len(rows) == 200
        assert {tx["status"] for tx in rows} == {"unanswered"} and rows[0]["qname"] == "t0.mail.protection.outlook.com"
    else:  # 0.1 s: it may yet be answered
        assert stats["pending_evicted"] == 200 and rows == []


def test_a_response_with_hundreds_of_records_keeps_a_bounded_row():
    """200 A records for smtp.office365.com: the row keeps MAX_ANSWERS_PER_TRANSACTION of
    them (answers and addresses), the rest are counted; the address map still learns all."""
    name = "smtp.office365.com"
    records = [DNSRR(rrname=name, rdata=f"52.96.{i >> 8}.{i & 255}") for i in range(200)]
    tracker = DnsTracker()
    tracker.udp(up(T0, query(0x2222, name)))
    tracker.udp(down(T0 + MS, response(0x2222, name, an=records)))
    tx = only(tracker)
    cap = tracker_module.MAX_ANSWERS_PER_TRANSACTION
    assert len(tx["answers"]) == len(tx["addresses"]) == cap
    assert tx["addresses"][-1] == f"52.96.0.{cap - 1}"
    assert tracker.stats()["answers_cut"] == 200 - cap
    assert tracker.names_for(bytes([52, 96, 0, 199]))[0]["name"] == name


def test_flood_of_answers_keeps_transactions_and_address_map_bounded(monkeypatch):
    monkeypatch.setattr(tracker_module, "MAX_TRANSACTIONS", 300)
    monkeypatch.setattr(tracker_module, "MAX_ADDRESS_NAMES", 200)
    tracker = DnsTracker()
    for i in range(1000):
        name = f"h{i}.flood.example"
        tracker.udp(down(T0 + i, response(i, name, an=[DNSRR(rrname=name, rdata=f"10.1.{i >> 8}.{i & 255}")])))
    stats = tracker.stats()
    assert (stats["transactions"], stats["transactions_dropped"]) == (300, 700)
    assert (stats["address_names"], stats["address_names_evicted"]) == (200, 800)
    assert tracker.names_for(bytes([10, 1, 0, 0])) == []  # the least recently updated went first
    assert tracker.names_for(bytes([10, 1, 3, 231]))[0]["name"] == "h999.flood.example"


def test_address_names_refreshed_by_an_answer_are_evicted_last(monkeypatch):
    monkeypatch.setattr(tracker_module, "MAX_ADDRESS_NAMES", 3)
    tracker = DnsTracker()

    def answer(i: int, name: str, address: str) -> None:
        tracker.udp(down(T0 + i, response(i, name, an=[DNSRR(rrname=name, rdata=address)])))

    answer(0, "a.example", "10.0.0.1")
    answer(1, "b.example", "10.0.0.2")
    answer(2, "c.example", "10.0.0.3")
    answer(3, "a.example", "10.0.0.1")  # a is now the most recently updated: b goes first
    answer(4, "d.example", "10.0.0.4")
    assert tracker.names_for(bytes([10, 0, 0, 2])) == []
    assert [entry["name"] for entry in tracker.names_for(bytes([10, 0, 0, 1]))] == ["a.example"]
    answer(5, "e.example", "10.0.0.5")
    assert tracker.names_for(bytes([10, 0, 0, 3])) == [] and tracker.names_for(bytes([10, 0, 0, 1]))
    assert tracker.stats()["address_names_evicted"] == 2


def _names_by_walking_every_name(tracker: DnsTracker, text: str, before: int | None) -> list[dict]:
    """names_for as it was written first: every name of the address, its latest answer at or
    before the time, sorted by time (stable: names in the order the address learnt them)."""
    found = []
    for name in tracker._by_address.get(text, ()):
        for ts, chain, mx_of, _arrival in reversed(tracker._pairs[(text, name)]):
            if before is None or ts <= before:
                found.append({"name": name, "chain": list(chain), "ts": ts, "mx_of": mx_of})
                break
    found.sort(key=lambda entry: entry["ts"], reverse=True)
    return found


@pytest.mark.parametrize("seed", range(6))
def test_names_for_reads_an_index_that_says_what_walking_every_name_says(monkeypatch, seed):
    """names_for reads a per-address index sorted by time (a session then costs the same
    whatever the number of names its address has). Against the walk over every name, on
    random answers: shared addresses, same-time answers, names answered again (past
    MAX_ANSWERS_PER_NAME), evictions (MAX_ADDRESS_NAMES), questions between answers."""
    import random

    monkeypatch.setattr(tracker_module, "MAX_ADDRESS_NAMES", 60)
    rng = random.Random(seed)
    tracker = DnsTracker()
    addresses = [f"52.101.0.{n}" for n in range(5)]
    names = [f"t{n}.mail.protection.outlook.com" for n in range(40)]
    ts = T0
    asked = 0
    for _ in range(400):
        ts += rng.choice([0, 0, MS, 5 * MS])  # answers at the same time too
        name = rng.choice(names)
        chain = (name,) if rng.random() < 0.7 else (f"alias-{name}", name)
        tracker._learn(rng.choice(addresses), name, chain, ts, rng.choice([None, "contoso.com"]))  # as an answer does
        if rng.random() < 0.3:
            address = rng.choice(addresses)
            before = rng.choice([None, ts, ts - rng.randrange(0, 200) * MS])
            assert tracker.names_for(address, before) == _names_by_walking_every_name(tracker, address, before)
            asked += 1
    for address in addresses:
        for before in (None, T0, T0 + 50 * MS, ts):
            assert tracker.names_for(address, before) == _names_by_walking_every_name(tracker, address, before)
    first = next(tracker.iter_names(addresses[0]), None)
    assert first == (tracker.names_for(addresses[0]) or [None])[0]
    assert asked > 50 and tracker.stats()["address_names_evicted"] > 0


def test_rows_kept_in_a_store_on_disk_come_out_as_from_a_list():
    """The engine gives the tracker a SessionStore for its rows (spilled past a limit): the
    transactions, ordered by query time though they end in another order, are the same."""
    from analyzer.diagnosis.store import SessionStore

    def run(tracker: DnsTracker) -> DnsTracker:
        for i in range(12):
            tracker.udp(up(T0 + i * MS, query(i, f"h{i}.office365.com"), port=40000 + i))
        for i in reversed(range(1, 12)):  # answered last query first; h0 never
            name = f"h{i}.office365.com"
            tracker.udp(down(T0 + (24 - i) * MS, response(i, name, an=[DNSRR(rrname=name, rdata="10.9.0.1")]), port=40000 + i))
        tracker.finish(T0 + 3600 * NS)
        return tracker

    in_list = run(DnsTracker()).transactions()
    store = SessionStore(limit=4)
    in_store = run(DnsTracker(rows=store))
    rows = in_store.transactions()
    assert store.spilled and rows is store
    assert [tx["qname"] for tx in in_list] == [f"h{i}.office365.com" for i in range(12)]
    assert in_list[0]["status"] == "unanswered" and in_list[1]["status"] == "answered"
    assert list(rows) == in_list and list(in_store.transactions()) == in_list  # a second call: the same


def test_failures_of_other_names_cannot_crowd_out_mail_lookups(monkeypatch):
    """An application retrying a misspelt name: its NXDOMAIN rows are kept as context, up to
    MAX_OTHER_FAILURES; the failing lookups of mail names that follow are kept all the same."""
    monkeypatch.setattr(tracker_module, "MAX_OTHER_FAILURES", 100)
    tracker = DnsTracker(interesting=lambda name: name.endswith("office365.com"))
    for i in range(300):
        name = f"h{i}.misspelt.example"
        tracker.udp(up(T0 + i * MS, query(i, name)))
        tracker.udp(down(T0 + i * MS + 1, response(i, name, rcode=3)))
    for i in range(300, 310):
        tracker.udp(up(T0 + i * MS, query(i, "smtp.office365.com")))
        tracker.udp(down(T0 + i * MS + 1, response(i, "smtp.office365.com", rcode=2)))
    rows = tracker.transactions()
    other = [tx for tx in rows if tx["qname"].endswith("misspelt.example")]
    mail = [tx for tx in rows if tx["qname"] == "smtp.office365.com"]
    assert len(other) == 100 and len(mail) == 10
    assert all(tx["rcode"] == "SERVFAIL" for tx in mail)
    assert tracker.stats()["transactions_dropped"] == 200


def test_repeated_answers_per_name_are_bounded():
    tracker = DnsTracker()
    for i in range(50):
        tracker.udp(down(T0 + i * NS, response(i, "smtp.office365.com", an=SMTP_CHAIN)))
    assert tracker.stats()["address_names"] == 1
    # The first answer and the newest few are kept: a session long after the first lookup
    # still finds the name; the answers in between are forgotten.
    assert tracker.names_for(bytes([52, 96, 164, 146]), before_ns=T0 + 10 * NS)[0]["ts"] == T0
    assert tracker.names_for(bytes([52, 96, 164, 146]))[0]["ts"] == T0 + 49 * NS
    assert tracker.names_for(bytes([52, 96, 164, 146]), before_ns=T0 - 1) == []


# -- DNS over TCP -----------------------------------------------------------------------------
def framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(2, "big") + payload


def tcp_packets(client_chunks: list[bytes], server_chunks: list[bytes], close: bool = True) -> list[tuple[int, bytes]]:
    """A whole DNS-over-TCP connection as timestamped Ethernet frames."""
    c, s = "192.168.1.20", "192.168.1.1"
    cport, cseq, sseq = 51000, 1000, 9000
    frames = []
    t = T0

    def add(pkt):
        nonlocal t
        frames.append((t, bytes(Ether() / pkt)))
        t += MS

    add(IP(src=c, dst=s) / TCP(sport=cport, dport=53, flags="S", seq=cseq))
    add(IP(src=s, dst=c) / TCP(sport=53, dport=cport, flags="SA", seq=sseq, ack=cseq + 1))
    cseq += 1
    sseq += 1
    add(IP(src=c, dst=s) / TCP(sport=cport, dport=53, flags="A", seq=cseq, ack=sseq))
    for chunk in client_chunks:
        add(IP(src=c, dst=s) / TCP(sport=cport, dport=53, flags="PA", seq=cseq, ack=sseq) / chunk)
        cseq += len(chunk)
    for chunk in server_chunks:
        add(IP(src=s, dst=c) / TCP(sport=53, dport=cport, flags="PA", seq=sseq, ack=cseq) / chunk)
        sseq += len(chunk)
    if close:
        add(IP(src=c, dst=s) / TCP(sport=cport, dport=53, flags="FA", seq=cseq, ack=sseq))
        add(IP(src=s, dst=c) / TCP(sport=53, dport=cport, flags="FA", seq=sseq, ack=cseq + 1))
        add(IP(src=c, dst=s) / TCP(sport=cport, dport=53, flags="A", seq=cseq + 1, ack=sseq + 1))
    return frames


def run_tcp(tracker: DnsTracker, frames) -> None:
    """Through the real decoder, connection table and reassembler."""
    decoder = Decoder(Selector(ports={53}))
    table = ConnectionTable(lambda conn, at_end: None, analyzer_factory=tracker.tcp_analyzer)
    for ts, frame in frames:
        seg = decoder.decode(ts, LINKTYPE_ETHERNET, frame, 0, len(frame), len(frame))
        assert isinstance(seg, TcpSegment)
        table.tcp(seg)
    table.finish()


def split(data: bytes, cuts) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


TCP_QUERY = query(0x7777, "contoso.com", "MX")
TCP_RESPONSE = response(0x7777, "contoso.com", "MX", an=[
    DNSRRMX(rrname="contoso.com", preference=0, exchange="contoso-com.mail.protection.outlook.com")])


def test_tcp_messages_split_across_segments():
    tracker = DnsTracker()
    client = framed(TCP_QUERY)
    server = framed(TCP_RESPONSE)
    run_tcp(tracker, tcp_packets(split(client, [1, 9]), split(server, [1, 2, 30])))
    tx = only(tracker)
    assert (tx["transport"], tx["status"], tx["client_port"], tx["server_port"]) == ("tcp", "answered", 51000, 53)
    assert tx["mx"] == [{"preference": 0, "exchange": "contoso-com.mail.protection.outlook.com"}]
    assert tracker.stats()["tcp_messages"] == 2


def test_tcp_connection_closed_without_answer_is_unanswered():
    tracker = DnsTracker()
    run_tcp(tracker, tcp_packets([framed(TCP_QUERY)], [framed(TCP_RESPONSE)[:20]]))
    tx = only(tracker)
    assert tx["status"] == "unanswered"
    assert tracker.stats()["tcp_incomplete"] == 1


def tcp_conn() -> TcpConnection:
    return TcpConnection((CLIENT, 51000, RESOLVER, 53), "Ctest", CLIENT, 51000, RESOLVER, 53, T0, False)


def test_tcp_gap_stops_that_direction():
    tracker = DnsTracker()
    stream = tracker.tcp_analyzer(tcp_conn())
    stream.data(True, framed(TCP_QUERY), T0)
    stream.gap(False, 100, T0 + 1)
    stream.data(False, framed(TCP_RESPONSE), T0 + 2)  # cannot be trusted to start at a message
    stream.finish(T0 + 3)
    assert tracker.stats()["tcp_gaps"] == 1 and tracker.stats()["pending"] == 1


def _tcp_transactions(pieces_client: list[bytes], pieces_server: list[bytes]) -> list[dict]:
    tracker = DnsTracker()
    stream = tracker.tcp_analyzer(tcp_conn())
    for piece in pieces_client:  # one timestamp per direction: a message is timed by its last piece
        stream.data(True, piece, T0)
    for piece in pieces_server:
        stream.data(False, piece, T0 + MS)
    stream.end_of_stream(True, T0 + 2 * MS)
    stream.end_of_stream(False, T0 + 2 * MS)
    stream.finish(T0 + 2 * MS)
    return tracker.transactions()


PIPELINED_CLIENT = framed(TCP_QUERY) + framed(query(0x7778, "smtp.office365.com"))
PIPELINED_SERVER = framed(response(0x7778, "smtp.office365.com", an=SMTP_CHAIN)) + framed(TCP_RESPONSE)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, len(PIPELINED_CLIENT)), max_size=10),
       st.lists(st.integers(0, len(PIPELINED_SERVER)), max_size=10))
def test_any_split_of_tcp_framing_gives_the_same_transactions(client_cuts, server_cuts):
    whole = _tcp_transactions([PIPELINED_CLIENT], [PIPELINED_SERVER])
    assert [tx["status"] for tx in whole] == ["answered", "answered"]
    assert _tcp_transactions(split(PIPELINED_CLIENT, client_cuts), split(PIPELINED_SERVER, server_cuts)) == whole


# -- real capture files -----------------------------------------------------------------------
def run_pcap(tracker: DnsTracker, path) -> int:
    decoder = Decoder(Selector())
    last = 0
    for rec in CaptureSet([str(path)]):
        pkt = decoder.decode(*rec)
        if isinstance(pkt, UdpDatagram):
            tracker.udp(pkt)
        elif isinstance(pkt, IcmpError):
            tracker.icmp_unreachable(pkt)
        last = rec[0]
    return last


def test_end_to_end_pcap(tmp_path):
    c, r, r2 = "192.168.1.20", "192.168.1.1", "192.168.1.2"
    c6, r6 = "2001:db8::20", "2001:db8::53"
    base = 1_760_000_000.0
    packets = [
        (0.000, IP(src=c, dst=r) / UDP(sport=40000, dport=53) / DNS(id=1, rd=1, qd=[DNSQR(qname="smtp.office365.com")])),
        (0.021, IP(src=r, dst=c) / UDP(sport=53, dport=40000) / DNS(id=1, qr=1, rd=1, ra=1, qd=[DNSQR(qname="smtp.office365.com")], an=SMTP_CHAIN)),
        (0.030, IPv6(src=c6, dst=r6) / UDP(sport=40002, dport=53) / DNS(id=2, rd=1, qd=[DNSQR(qname="smtp.office365.com", qtype="AAAA")])),
        (0.050, IPv6(src=r6, dst=c6) / UDP(sport=53, dport=40002) / DNS(id=2, qr=1, rd=1, ra=1, qd=[DNSQR(qname="smtp.office365.com", qtype="AAAA")],
                                                                         an=[DNSRR(rrname="smtp.office365.com", type="AAAA", rdata="2603:1036:c00:14::2")])),
        (1.000, IP(src=c, dst=r) / UDP(sport=40001, dport=53) / DNS(id=3, rd=1, qd=[DNSQR(qname="smtp-legacy.office365.co")])),
        (1.040, IP(src=r, dst=c) / UDP(sport=53, dport=40001) / DNS(id=3, qr=1, rcode=3, qd=[DNSQR(qname="smtp-legacy.office365.co")])),
        (2.000, IP(src=c, dst=r2) / UDP(sport=40003, dport=53) / DNS(id=4, rd=1, qd=[DNSQR(qname="contoso.com", qtype="MX")])),
        (2.001, IP(src=r2, dst=c) / ICMP(type=3, code=3) / IP(src=c, dst=r2) / UDP(sport=40003, dport=53)
         / DNS(id=4, rd=1, qd=[DNSQR(qname="contoso.com", qtype="MX")])),
        (3.000, IP(src=c, dst=r) / UDP(sport=40004, dport=53) / DNS(id=5, rd=1, qd=[DNSQR(qname="outlook.office365.com")])),
        (30.000, IP(src=c, dst=r) / TCP(sport=50000, dport=443, flags="A")),  # later traffic: the capture goes on
    ]
    frames = []
    for offset, pkt in packets:
        frame = Ether() / pkt
        frame.time = base + offset
        frames.append(frame)
    path = tmp_path / "dns.pcap"
    wrpcap(str(path), frames)

    tracker = DnsTracker(interesting=is_microsoft_mail_name)
    last = run_pcap(tracker, path)
    tracker.finish(last)
    txs = tracker.transactions()
    assert [(tx["qname"], tx["qtype"], tx["status"], tx["rcode"]) for tx in txs] == [
        ("smtp.office365.com", "A", "answered", "NOERROR"),
        ("smtp.office365.com", "AAAA", "answered", "NOERROR"),
        ("smtp-legacy.office365.co", "A", "answered", "NXDOMAIN"),
        ("contoso.com", "MX", "rejected_icmp", None),
        ("outlook.office365.com", "A", "unanswered", None),
    ]
    assert txs[0]["rtt"] == pytest.approx(0.021, abs=1e-6)
    assert (txs[1]["client"], txs[1]["addresses"]) == ("2001:db8::20", ["2603:1036:c00:14::2"])
    assert txs[3]["icmp"]["reporter"] == "192.168.1.2"
    assert [is_failure(tx) for tx in txs] == [False, False, True, True, True]
    session_start = int((base + 5) * NS)
    (entry,) = tracker.names_for(bytes([52, 96, 164, 146]), before_ns=session_start)
    assert entry["chain"] == ["smtp.office365.com", "smtp.ms-acdc.office.com", "lhr-efz.ms-acdc.office.com"]
    json.dumps(txs)


ZEEK = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "zeek"  # /work/shared next to the checkout


@pytest.mark.skipif(not (ZEEK / "smtp.pcap").exists(), reason=f"public trace corpus {ZEEK} not present")
def test_zeek_smtp_trace_dns_lookup_before_the_session():
    tracker = DnsTracker()
    run_pcap(tracker, ZEEK / "smtp.pcap")
    expected = json.loads((ZEEK / "expected.json").read_text())["traces"]["smtp.pcap"]
    (udp_conn,) = [c for c in expected["connections"] if c.get("proto") == "udp" and c.get("resp_p") == 53]
    tx = only(tracker)
    assert (tx["client"], tx["client_port"], tx["server"], tx["server_port"]) == (
        udp_conn["orig_h"], udp_conn["orig_p"], udp_conn["resp_h"], udp_conn["resp_p"])
    assert (tx["qname"], tx["qtype"], tx["status"], tx["rcode"]) == ("mail.patriots.in", "A", "answered", "NOERROR")
    assert tx["cname_chain"] == ["mail.patriots.in", "patriots.in"]
    (smtp,) = [s for s in expected["smtp"] if s["orig_h"] == tx["client"]]
    assert tx["addresses"] == [smtp["resp_h"]]  # the mail server the session then connected to
    first_reply_ns = int(min(r["ts"] for r in expected["smtp_replies"] if r["resp_h"] == smtp["resp_h"]) * NS)
    (entry,) = tracker.names_for(ipaddress.ip_address(smtp["resp_h"]).packed, before_ns=first_reply_ns)
    assert entry["name"] == "mail.patriots.in" and entry["chain"] == ["mail.patriots.in", "patriots.in"]
    assert 0 < tx["rtt"] < 1
