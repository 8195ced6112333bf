"""DNS wire format (analyzer.protocols.dns.message): hand-built messages, scapy cross-checks, fuzzing."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR, DNSRRMX, DNSRRSOA, dns_compress

from analyzer.protocols.dns import message as m
from analyzer.protocols.dns.message import (
    DnsMessage,
    DnsParseError,
    MxRdata,
    OpaqueRdata,
    SoaRdata,
    TcpFramer,
    TxtRdata,
    parse_message,
)


# -- hand building ------------------------------------------------------------------------
def name(text: str) -> bytes:
    """Uncompressed wire form of a dotted name ("" or "." is the root)."""
    out = b""
    for label in text.strip(".").split(".") if text.strip(".") else []:
        raw = label.encode()
        out += bytes([len(raw)]) + raw
    return out + b"\x00"


def txt(*strings: bytes) -> bytes:
    return b"".join(bytes([len(x)]) + x for x in strings)


def ptr(offset: int) -> bytes:
    return struct.pack("!H", 0xC000 | offset)


def header(msg_id=0x1234, flags=0x0100, qd=1, an=0, ns=0, ar=0) -> bytes:
    return struct.pack("!6H", msg_id, flags, qd, an, ns, ar)


def question(owner: bytes, qtype=m.QTYPE_A, qclass=m.CLASS_IN) -> bytes:
    return owner + struct.pack("!HH", qtype, qclass)


def rr(owner: bytes, rtype: int, rdata: bytes, ttl=300, rclass=m.CLASS_IN) -> bytes:
    return owner + struct.pack("!HHIH", rtype, rclass, ttl, len(rdata)) + rdata


RESPONSE = 0x8180  # QR, RD, RA, NOERROR
Q_OFFSET = m.HEADER_LEN  # the question name starts right after the header


def cname_chain_message() -> bytes:
    """smtp.office365.com → smtp.ms-acdc.office.com → lhr-efz.ms-acdc.office.com → A, with pointers."""
    qname = name("smtp.office365.com")
    msg = header(0xBEEF, RESPONSE, qd=1, an=3) + question(qname)
    # "office.com" is new; ms-acdc.office.com is spelled once, then pointed at.
    first_target_at = len(msg) + 2 + 10
    target1 = b"\x04smtp\x07ms-acdc\x06office\x03com\x00"
    msg += rr(ptr(Q_OFFSET), m.QTYPE_CNAME, target1, ttl=60)
    ms_acdc_at = first_target_at + 5  # skip "\x04smtp"
    owner2_at = len(msg)
    msg += rr(ptr(first_target_at), m.QTYPE_CNAME, b"\x07lhr-efz" + ptr(ms_acdc_at), ttl=58)
    final_at = owner2_at + 2 + 10
    msg += rr(ptr(final_at), m.QTYPE_A, bytes([52, 96, 164, 146]), ttl=8)
    return msg


# -- well-formed messages -----------------------------------------------------------------
def test_query_header_and_question():
    msg = parse_message(header(0xABCD, 0x0120, qd=1) + question(name("smtp.office365.com")))
    assert isinstance(msg, DnsMessage)
    h = msg.header
    assert (h.id, h.qr, h.opcode, h.rd, h.ad, h.rcode) == (0xABCD, False, m.OPCODE_QUERY, True, True, 0)
    assert msg.question == m.Question("smtp.office365.com", m.QTYPE_A, m.CLASS_IN)
    assert msg.answers == msg.authority == msg.additional == ()
    assert msg.edns_udp_size is None and msg.records_omitted == 0


def test_cname_chain_with_compression_pointers():
    msg = parse_message(cname_chain_message())
    assert msg.id == 0xBEEF and msg.is_response
    assert [(r.name, r.type_name, r.ttl, r.data) for r in msg.answers] == [
        ("smtp.office365.com", "CNAME", 60, "smtp.ms-acdc.office.com"),
        ("smtp.ms-acdc.office.com", "CNAME", 58, "lhr-efz.ms-acdc.office.com"),
        ("lhr-efz.ms-acdc.office.com", "A", 8, "52.96.164.146"),
    ]


def test_case_is_preserved():
    # Resolvers randomise case ("0x20"); the message layer reports what was on the wire.
    msg = parse_message(header() + question(name("SmTp.OFFICE365.com")))
    assert msg.question.name == "SmTp.OFFICE365.com"


@pytest.mark.parametrize(
    "rtype, rdata, expected, text",
    [
        (m.QTYPE_A, bytes([40, 107, 1, 2]), "40.107.1.2", "40.107.1.2"),
        (m.QTYPE_AAAA, bytes.fromhex("2a010111f40000000000000000000001"), "2a01:111:f400::1", "2a01:111:f400::1"),
        (m.QTYPE_AAAA, bytes.fromhex("26031036000000000000000000000002"), "2603:1036::2", "2603:1036::2"),
        (m.QTYPE_CNAME, name("outlook.ms-acdc.office.com"), "outlook.ms-acdc.office.com", "outlook.ms-acdc.office.com"),
        (m.QTYPE_NS, name("ns1-proddns.glbdns.o365filtering.com"), "ns1-proddns.glbdns.o365filtering.com", None),
        (m.QTYPE_PTR, name("mail-db8eur05.outbound.protection.outlook.com"), "mail-db8eur05.outbound.protection.outlook.com", None),
        (m.QTYPE_MX, b"\x00\x0a" + name("contoso-com.mail.protection.outlook.com"),
         MxRdata(10, "contoso-com.mail.protection.outlook.com"), "10 contoso-com.mail.protection.outlook.com"),
        (m.QTYPE_MX, b"\x00\x00" + name("."), MxRdata(0, "."), "0 ."),  # RFC 7505 null MX
        (m.QTYPE_TXT, txt(b"v=spf1 include:spf.pro", b"tection.outlook.com -all"),
         TxtRdata(("v=spf1 include:spf.pro", "tection.outlook.com -all")), "v=spf1 include:spf.protection.outlook.com -all"),
        (m.QTYPE_TXT, b"\x00", TxtRdata(("",)), ""),
        (m.QTYPE_TXT, b"\x02\xff\xfe", TxtRdata(("\ufffd\ufffd",)), "\ufffd\ufffd"),
        (m.QTYPE_SOA, name("ns1.contoso.com") + name("hostmaster.contoso.com") + struct.pack("!5I", 2024, 3600, 600, 86400, 300),
         SoaRdata("ns1.contoso.com", "hostmaster.contoso.com", 2024, 3600, 600, 86400, 300),
         "ns1.contoso.com hostmaster.contoso.com 2024 3600 600 86400 300"),
        (m.QTYPE_HTTPS, b"\x00\x01\x00", OpaqueRdata(3), "\\# 3"),
        (m.QTYPE_TLSA, b"", OpaqueRdata(0), "\\# 0"),
    ],
    ids=lambda v: m.qtype_name(v) if isinstance(v, int) else None,
)
def test_rdata_decoding(rtype, rdata, expected, text):
    msg = parse_message(header(flags=RESPONSE, an=1) + question(name("x.example")) + rr(ptr(Q_OFFSET), rtype, rdata))
    (record,) = msg.answers
    assert record.rtype == rtype and record.data == expected
    if text is not None:
        assert record.data_text == text


def test_names_in_rdata_may_point_into_earlier_names():
    qname = name("contoso.com")
    msg = header(flags=RESPONSE, an=1) + question(qname, m.QTYPE_MX)
    msg += rr(ptr(Q_OFFSET), m.QTYPE_MX, b"\x00\x00\x0bcontoso-com\x04mail\x0aprotection\x07outlook\x03com\x00")
    # A second answer whose owner points into the middle of the first exchange name.
    exchange_at = len(header() + question(qname, m.QTYPE_MX)) + 2 + 10 + 2
    msg = msg[:6] + b"\x00\x02" + msg[8:]
    msg += rr(ptr(exchange_at + 12), m.QTYPE_CNAME, ptr(Q_OFFSET))
    answers = parse_message(msg).answers
    assert answers[0].data == MxRdata(0, "contoso-com.mail.protection.outlook.com")
    assert (answers[1].name, answers[1].data) == ("mail.protection.outlook.com", "contoso.com")


@pytest.mark.parametrize("code, label", sorted(m.RCODE_NAMES.items()))
def test_every_rcode(code, label):
    low, high = code & 0xF, code >> 4
    body = header(flags=0x8180 | low, an=0, ar=1 if high else 0) + question(name("contoso.com"))
    if high:  # extended RCODE: upper 8 bits in the OPT TTL (RFC 6891 §6.1.3)
        body += rr(name("."), m.QTYPE_OPT, b"", ttl=high << 24, rclass=1232)
    msg = parse_message(body)
    assert msg.rcode == code and m.rcode_name(msg.rcode) == label
    assert msg.header.rcode == low


def test_rcode_and_type_names():
    assert [m.rcode_name(c) for c in range(6)] == ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"]
    assert (m.RCODE_NXDOMAIN, m.QTYPE_A, m.QTYPE_AAAA, m.QTYPE_MX, m.QTYPE_CNAME) == (3, 1, 28, 15, 5)
    assert m.rcode_name(12) == "RCODE12"
    assert m.qtype_name(65280) == "TYPE65280"
    assert m.opcode_name(m.OPCODE_NOTIFY) == "NOTIFY" and m.opcode_name(9) == "OPCODE9"


def test_edns_opt_record():
    body = header(ar=1) + question(name("smtp.office365.com")) + rr(name("."), m.QTYPE_OPT, b"", ttl=0x8000, rclass=1232)
    msg = parse_message(body)
    assert msg.edns_udp_size == 1232 and msg.rcode == 0


@pytest.mark.parametrize(
    "flag, attribute",
    [(m.FLAG_QR, "qr"), (m.FLAG_AA, "aa"), (m.FLAG_TC, "tc"), (m.FLAG_RD, "rd"),
     (m.FLAG_RA, "ra"), (m.FLAG_AD, "ad"), (m.FLAG_CD, "cd")],
)
def test_header_flags(flag, attribute):
    parsed = parse_message(header(flags=flag) + question(name("a.b"))).header
    flags = {attr: getattr(parsed, attr) for attr in ("qr", "aa", "tc", "rd", "ra", "ad", "cd")}
    assert flags == {attr: attr == attribute for attr in flags}


def test_opcode():
    assert parse_message(header(flags=m.OPCODE_UPDATE << m.OPCODE_SHIFT) + question(name("a.b"))).header.opcode == m.OPCODE_UPDATE


@pytest.mark.parametrize(
    "wire, text",
    [
        (b"\x00", "."),
        (b"\x03a.b\x03com\x00", "a\\.b.com"),
        (b"\x04a\\ b\x00", "a\\\\\\032b"),
        (b"\x02\x00\xff\x00", "\\000\\255"),
        (b"\x01*\x07example\x00", "*.example"),
        (b"\x05_smtp\x04_tcp\x00", "_smtp._tcp"),
    ],
)
def test_name_presentation(wire, text):
    assert parse_message(header() + question(wire)).question.name == text


def test_longest_names_at_the_limits():
    # 255 octets on the wire: 4 labels of 63 + 1 of 1 … exactly MAX_NAME_LENGTH.
    labels = ["a" * 63] * 3 + ["b" * 61]
    wire = name(".".join(labels))
    assert len(wire) == m.MAX_NAME_LENGTH
    assert parse_message(header() + question(wire)).question.name == ".".join(labels)
    # MAX_LABELS one-octet labels are also exactly 255 octets.
    wire = name(".".join(["x"] * m.MAX_LABELS))
    assert len(wire) == m.MAX_NAME_LENGTH
    assert parse_message(header() + question(wire)).question.name.count("x") == m.MAX_LABELS


def pointer_chain(hops: int) -> bytes:
    """A question name reached through ``hops`` pointers in a row (the last lands on a root label)."""
    start = m.HEADER_LEN + 2 + 4  # after the question (a 2-byte pointer plus type/class)
    tail = b"\x00"
    for i in range(hops - 1):
        tail += ptr(start + (0 if i == 0 else 1 + 2 * (i - 1)))
    last = start if hops == 1 else start + 1 + 2 * (hops - 2)
    return header() + ptr(last) + struct.pack("!HH", 1, 1) + tail


def test_pointer_hops_limit():
    assert parse_message(pointer_chain(m.MAX_POINTER_HOPS)).question.name == "."
    with pytest.raises(DnsParseError, match="loop"):
        parse_message(pointer_chain(m.MAX_POINTER_HOPS + 1))


def test_records_beyond_the_section_limit_are_walked_over_and_counted():
    count = m.MAX_RECORDS_PER_SECTION + 40
    body = header(flags=RESPONSE, an=count, ar=1) + question(name("big.example"))
    for i in range(count):
        body += rr(ptr(Q_OFFSET), m.QTYPE_A, bytes([10, 0, i >> 8, i & 0xFF]))
    body += rr(name("."), m.QTYPE_OPT, b"", rclass=4096)
    msg = parse_message(body)
    assert len(msg.answers) == m.MAX_RECORDS_PER_SECTION
    assert msg.answers[-1].data == f"10.0.{(count - 41) >> 8}.{(count - 41) & 0xFF}"
    assert msg.records_omitted == 40
    assert msg.edns_udp_size == 4096  # the additional section after the omitted records is still read


def test_trailing_bytes_are_ignored():
    assert parse_message(header() + question(name("a.b")) + b"\xde\xad").question.name == "a.b"


def test_bytearray_and_memoryview_input():
    wire = cname_chain_message()
    assert parse_message(bytearray(wire)) == parse_message(memoryview(wire)) == parse_message(wire)


# -- malformed messages: always DnsParseError ---------------------------------------------
TOO_LONG = name(".".join(["a" * 63] * 4))  # 257 octets
OK_Q = question(name("a.b"))

MALFORMED = {
    "empty": b"",
    "short header": header()[:11],
    "question cut in name": header() + b"\x03ab",
    "question cut in type": header() + name("a.b") + b"\x00",
    "no question at all": header(qd=1),
    "pointer to itself": header() + ptr(Q_OFFSET) + b"\x00\x01\x00\x01",
    "two pointers in a loop": header(qd=2) + ptr(Q_OFFSET + 6) + b"\x00\x01\x00\x01" + ptr(Q_OFFSET) + b"\x00\x01\x00\x01",
    "label then loop": header() + b"\x01a" + ptr(Q_OFFSET) + b"\x00\x01\x00\x01",
    "pointer past the end": header() + ptr(0x3FFF) + b"\x00\x01\x00\x01",
    "pointer cut short": header() + b"\xc0",
    "label past the end": header() + b"\x3fabc",
    "name longer than 255": header() + question(TOO_LONG),
    "128 labels": header() + question(name(".".join(["x"] * 128))),
    "name grown by pointers beyond 255": header(qd=2) + question(name(".".join(["a" * 63] * 3 + ["c" * 61])))
    + question(b"\x05bbbbb" + ptr(Q_OFFSET)),
    "extended label type 0x40": header() + b"\x41a\x00\x00\x01\x00\x01",
    "reserved label type 0x80": header() + b"\x81a\x00\x00\x01\x00\x01",
    "answer missing": header(an=1) + OK_Q,
    "answer fixed part cut": header(an=1) + OK_Q + name("a.b") + b"\x00\x01\x00\x01\x00",
    "rdata past the end": header(an=1) + OK_Q + name("a.b") + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x01\x02",
    "A with 5 octets": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_A, b"\x01\x02\x03\x04\x05"),
    "AAAA with 4 octets": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_AAAA, b"\x01\x02\x03\x04"),
    "CNAME shorter than rdata": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_CNAME, name("c.d") + b"\x00"),
    "CNAME name runs out of rdata": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_CNAME, b"\x05abc"),
    "MX too short": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_MX, b"\x00\x0a"),
    "TXT string past rdata": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_TXT, b"\x05abc"),
    "SOA without numbers": header(an=1) + OK_Q + rr(name("a.b"), m.QTYPE_SOA, name("ns.a.b") + name("h.a.b")),
    "authority count too high": header(an=0, ns=2) + OK_Q + rr(name("a.b"), m.QTYPE_NS, name("ns.a.b")),
    "additional cut": header(ar=1) + OK_Q + b"\x00\x00\x29",
}


@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_raises_dns_parse_error(wire):
    with pytest.raises(DnsParseError):
        parse_message(wire)


def test_every_proper_prefix_of_a_message_is_rejected():
    wire = cname_chain_message()
    for cut in range(len(wire)):
        with pytest.raises(DnsParseError):
            parse_message(wire[:cut])


def test_parse_header_salvages_a_cut_message():
    wire = cname_chain_message()[:40]
    header_only = m.parse_header(wire)
    assert (header_only.id, header_only.qr, header_only.ancount) == (0xBEEF, True, 3)


# -- cross-check with scapy's DNS layer ---------------------------------------------------
SCAPY_MESSAGES = {
    "query A": DNS(id=1, rd=1, qd=[DNSQR(qname="smtp.office365.com", qtype="A")]),
    "query AAAA": DNS(id=2, rd=1, qd=[DNSQR(qname="smtp.office365.com", qtype="AAAA")]),
    "outlook chain": DNS(
        id=3, qr=1, rd=1, ra=1, qd=[DNSQR(qname="outlook.office365.com")],
        an=[
            DNSRR(rrname="outlook.office365.com", type="CNAME", ttl=289, rdata="outlook.cloud.microsoft"),
            DNSRR(rrname="outlook.cloud.microsoft", type="CNAME", ttl=286, rdata="acdcatm.outlook.mira.tm.svc.cloud.microsoft"),
            DNSRR(rrname="acdcatm.outlook.mira.tm.svc.cloud.microsoft", type="CNAME", ttl=60, rdata="outlook.ms-acdc.office.com"),
            DNSRR(rrname="outlook.ms-acdc.office.com", type="CNAME", ttl=58, rdata="MDW-efz.ms-acdc.office.com"),
            DNSRR(rrname="MDW-efz.ms-acdc.office.com", type="A", ttl=8, rdata="52.96.164.146"),
            DNSRR(rrname="MDW-efz.ms-acdc.office.com", type="A", ttl=8, rdata="52.96.79.50"),
        ],
    ),
    "AAAA answer": DNS(
        id=4, qr=1, qd=[DNSQR(qname="smtp.office365.com", qtype="AAAA")],
        an=[DNSRR(rrname="smtp.office365.com", type="AAAA", rdata="2603:1036:c00:14::2")],
    ),
    "MX with glue": DNS(
        id=5, qr=1, aa=1, qd=[DNSQR(qname="contoso.com", qtype="MX")],
        an=[DNSRRMX(rrname="contoso.com", preference=0, exchange="contoso-com.mail.protection.outlook.com")],
        ar=[DNSRR(rrname="contoso-com.mail.protection.outlook.com", type="A", rdata="104.47.53.36")],
    ),
    "TXT": DNS(
        id=6, qr=1, qd=[DNSQR(qname="contoso.com", qtype="TXT")],
        an=[DNSRR(rrname="contoso.com", type="TXT", rdata=["v=spf1 include:spf.protection.outlook.com -all"])],
    ),
    "NXDOMAIN with SOA": DNS(
        id=7, qr=1, rcode=3, qd=[DNSQR(qname="contoso-com.mail.protection.outlook.com")],
        ns=[DNSRRSOA(rrname="outlook.com", mname="ns1-proddns.glbdns.o365filtering.com",
                     rname="msnhst.microsoft.com", serial=1, minimum=60)],
    ),
    "SERVFAIL": DNS(id=8, qr=1, rcode=2, qd=[DNSQR(qname="smtp.office365.com")]),
}

def _scapy_name(value) -> str:
    text = value.decode() if isinstance(value, bytes) else str(value)
    return text.rstrip(".") or "."


def _scapy_view(pkt: DNS) -> dict:
    """What scapy reads from a message, in this module's vocabulary."""
    pkt = DNS(bytes(pkt))

    def records(section):
        out = []
        for r in section or []:
            rtype = m.qtype_name(r.type)
            if rtype == "CNAME":
                data = _scapy_name(r.rdata)
            elif rtype == "MX":
                data = MxRdata(r.preference, _scapy_name(r.exchange))
            elif rtype == "SOA":
                data = (_scapy_name(r.mname), _scapy_name(r.rname), r.serial, r.minimum)
            elif rtype == "TXT":
                data = TxtRdata(tuple(s.decode() for s in r.rdata))
            else:
                data = str(r.rdata)
            out.append((_scapy_name(r.rrname), r.type, r.ttl, data))
        return out

    return {
        "id": pkt.id, "qr": bool(pkt.qr), "aa": bool(pkt.aa), "rcode": pkt.rcode,
        "questions": [(_scapy_name(q.qname), q.qtype) for q in pkt.qd or []],
        "answers": records(pkt.an), "authority": records(pkt.ns), "additional": records(pkt.ar),
    }


def _our_view(msg: DnsMessage) -> dict:
    def records(section):
        out = []
        for r in section:
            data = r.data
            if isinstance(data, SoaRdata):
                data = (data.mname, data.rname, data.serial, data.minimum)
            out.append((r.name, r.rtype, r.ttl, data))
        return out

    return {
        "id": msg.id, "qr": msg.header.qr, "aa": msg.header.aa, "rcode": msg.rcode,
        "questions": [(q.name, q.qtype) for q in msg.questions],
        "answers": records(msg.answers), "authority": records(msg.authority), "additional": records(msg.additional),
    }


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
@pytest.mark.parametrize("pkt", SCAPY_MESSAGES.values(), ids=SCAPY_MESSAGES.keys())
def test_agrees_with_scapy(pkt, compressed):
    wire = bytes(dns_compress(pkt)) if compressed else bytes(pkt)
    if compressed and pkt.an:
        assert len(wire) < len(bytes(pkt))  # pointers were really used
    assert _our_view(parse_message(wire)) == _scapy_view(DNS(wire))


# -- properties ---------------------------------------------------------------------------
VALID = [cname_chain_message()] + [bytes(dns_compress(p)) for p in SCAPY_MESSAGES.values()]


def _parse_outcome(data: bytes):
    try:
        return parse_message(data)
    except DnsParseError as exc:
        return exc


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_give_a_message_or_dns_parse_error(data):
    assert isinstance(_parse_outcome(data), (DnsMessage, DnsParseError))


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(VALID), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
       st.integers(0, 400))
def test_damaged_real_messages_give_a_message_or_dns_parse_error(wire, edits, cut):
    data = bytearray(wire)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    outcome = _parse_outcome(bytes(data[:cut]))
    assert isinstance(outcome, (DnsMessage, DnsParseError))


# -- DNS over TCP framing ------------------------------------------------------------------
def framed(messages: list[bytes]) -> bytes:
    return b"".join(struct.pack("!H", len(x)) + x for x in messages)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(VALID + [b""]), min_size=1, max_size=5), st.data())
def test_any_split_of_tcp_framing_gives_the_same_messages(messages, data):
    stream = framed(messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    framer = TcpFramer()
    out = []
    previous = 0
    for cut in cuts + [len(stream)]:
        out += framer.feed(stream[previous:cut])
        previous = cut
    assert out == messages
    assert not framer.incomplete


def test_tcp_framer_holds_an_incomplete_message():
    framer = TcpFramer()
    wire = cname_chain_message()
    assert framer.feed(framed([wire])[:-1]) == []
    assert framer.buffered == len(wire) + 1 and framer.incomplete
    assert framer.feed(b"") == []
    assert framer.feed(framed([wire])[-1:]) == [wire]
    assert framer.buffered == 0 and not framer.incomplete


def test_tcp_framer_skips_oversized_messages_without_buffering_them():
    framer = TcpFramer(max_message_len=100)
    big = b"\x00" * 300
    small = cname_chain_message()[:90]
    stream = framed([small, big, small])
    out = []
    for i in range(0, len(stream), 7):
        out += framer.feed(stream[i : i + 7])
        assert framer.buffered <= 100 + 2  # the 300-byte message is never held
    assert out == [small, small] and not framer.incomplete
    assert framer.oversized == 1
