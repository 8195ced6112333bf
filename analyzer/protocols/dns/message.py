"""DNS messages (RFC 1035 §4), sans-I/O: bytes in, a frozen :class:`DnsMessage` out.

Layout: a 12-byte header — id (2), flags (2), QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT (2 each) —
then the question section (name, QTYPE, QCLASS) and three sections of resource records
(name, TYPE (2), CLASS (2), TTL (4), RDLENGTH (2), RDATA). Names are sequences of labels,
possibly ending in a compression pointer (RFC 1035 §4.1.4) into earlier bytes.

Everything a packet controls is bounded by a named limit, and every malformed input raises
:class:`DnsParseError` — nothing else — so a hostile or cut-short datagram can never stop
an analysis. DNS over TCP (RFC 1035 §4.2.2, RFC 7766 §8) frames each message with a 2-byte
length; :class:`TcpFramer` turns stream bytes back into messages.
"""

from __future__ import annotations

import re
import struct
from typing import Final, NamedTuple

from ...decode.ip import address_text
from ..record import own_class_equality

HEADER_LEN: Final = 12
RR_FIXED_LEN: Final = 10  # TYPE, CLASS, TTL, RDLENGTH after the owner name

# -- limits ----------------------------------------------------------------------------
#: Octets in a name on the wire, length octets and the root label included (RFC 1035 §2.3.4).
MAX_NAME_LENGTH: Final = 255
#: 127 one-octet labels fill 255 octets: enforcing MAX_NAME_LENGTH enforces this too.
MAX_LABELS: Final = (MAX_NAME_LENGTH - 1) // 2
#: Compression pointers followed while reading one name: real compressors need one or two,
#: and the bound is what stops pointer loops.
MAX_POINTER_HOPS: Final = 32
#: Records decoded per section; further ones are walked over and counted in
#: ``DnsMessage.records_omitted`` (a 64 KiB message holds at most ~6000 records).
MAX_RECORDS_PER_SECTION: Final = 512
#: Largest message DNS can carry: the TCP length prefix is 16 bits.
MAX_MESSAGE_LEN: Final = 65535
TCP_LENGTH_PREFIX_LEN: Final = 2

# -- header flags (RFC 1035 §4.1.1; AD and CD from RFC 4035 §3.2) ---------------------
FLAG_QR: Final = 0x8000
OPCODE_SHIFT: Final = 11
OPCODE_MASK: Final = 0xF
FLAG_AA: Final = 0x0400
FLAG_TC: Final = 0x0200
FLAG_RD: Final = 0x0100
FLAG_RA: Final = 0x0080
FLAG_AD: Final = 0x0020
FLAG_CD: Final = 0x0010
RCODE_MASK: Final = 0x000F

# -- OPCODE (IANA "DNS OpCodes") -------------------------------------------------------
OPCODE_QUERY: Final = 0
OPCODE_IQUERY: Final = 1
OPCODE_STATUS: Final = 2
OPCODE_NOTIFY: Final = 4
OPCODE_UPDATE: Final = 5
OPCODE_DSO: Final = 6

OPCODE_NAMES: Final = {
    OPCODE_QUERY: "QUERY",
    OPCODE_IQUERY: "IQUERY",
    OPCODE_STATUS: "STATUS",
    OPCODE_NOTIFY: "NOTIFY",
    OPCODE_UPDATE: "UPDATE",
    OPCODE_DSO: "DSO",
}

# -- RCODE (RFC 1035 §4.1.1, RFC 2136, RFC 6891, IANA "DNS RCODEs") --------------------
RCODE_NOERROR: Final = 0
RCODE_FORMERR: Final = 1
RCODE_SERVFAIL: Final = 2
RCODE_NXDOMAIN: Final = 3
RCODE_NOTIMP: Final = 4
RCODE_REFUSED: Final = 5
RCODE_YXDOMAIN: Final = 6
RCODE_YXRRSET: Final = 7
RCODE_NXRRSET: Final = 8
RCODE_NOTAUTH: Final = 9
RCODE_NOTZONE: Final = 10
RCODE_DSOTYPENI: Final = 11
RCODE_BADVERS: Final = 16  # only reachable through the EDNS extended RCODE
RCODE_BADCOOKIE: Final = 23

RCODE_NAMES: Final = {
    RCODE_NOERROR: "NOERROR",
    RCODE_FORMERR: "FORMERR",
    RCODE_SERVFAIL: "SERVFAIL",
    RCODE_NXDOMAIN: "NXDOMAIN",
    RCODE_NOTIMP: "NOTIMP",
    RCODE_REFUSED: "REFUSED",
    RCODE_YXDOMAIN: "YXDOMAIN",
    RCODE_YXRRSET: "YXRRSET",
    RCODE_NXRRSET: "NXRRSET",
    RCODE_NOTAUTH: "NOTAUTH",
    RCODE_NOTZONE: "NOTZONE",
    RCODE_DSOTYPENI: "DSOTYPENI",
    RCODE_BADVERS: "BADVERS",
    RCODE_BADCOOKIE: "BADCOOKIE",
}

# -- TYPE / QTYPE (RFC 1035 §3.2.2–3, IANA "Resource Record (RR) TYPEs") --------------
QTYPE_A: Final = 1
QTYPE_NS: Final = 2
QTYPE_CNAME: Final = 5
QTYPE_SOA: Final = 6
QTYPE_NULL: Final = 10
QTYPE_PTR: Final = 12
QTYPE_HINFO: Final = 13
QTYPE_MX: Final = 15
QTYPE_TXT: Final = 16
QTYPE_AAAA: Final = 28
QTYPE_SRV: Final = 33
QTYPE_NAPTR: Final = 35
QTYPE_DNAME: Final = 39
QTYPE_OPT: Final = 41
QTYPE_DS: Final = 43
QTYPE_RRSIG: Final = 46
QTYPE_NSEC: Final = 47
QTYPE_DNSKEY: Final = 48
QTYPE_NSEC3: Final = 50
QTYPE_TLSA: Final = 52
QTYPE_SVCB: Final = 64
QTYPE_HTTPS: Final = 65
QTYPE_SPF: Final = 99
QTYPE_IXFR: Final = 251
QTYPE_AXFR: Final = 252
QTYPE_ANY: Final = 255
QTYPE_CAA: Final = 257

QTYPE_NAMES: Final = {
    QTYPE_A: "A",
    QTYPE_NS: "NS",
    QTYPE_CNAME: "CNAME",
    QTYPE_SOA: "SOA",
    QTYPE_NULL: "NULL",
    QTYPE_PTR: "PTR",
    QTYPE_HINFO: "HINFO",
    QTYPE_MX: "MX",
    QTYPE_TXT: "TXT",
    QTYPE_AAAA: "AAAA",
    QTYPE_SRV: "SRV",
    QTYPE_NAPTR: "NAPTR",
    QTYPE_DNAME: "DNAME",
    QTYPE_OPT: "OPT",
    QTYPE_DS: "DS",
    QTYPE_RRSIG: "RRSIG",
    QTYPE_NSEC: "NSEC",
    QTYPE_DNSKEY: "DNSKEY",
    QTYPE_NSEC3: "NSEC3",
    QTYPE_TLSA: "TLSA",
    QTYPE_SVCB: "SVCB",
    QTYPE_HTTPS: "HTTPS",
    QTYPE_SPF: "SPF",
    QTYPE_IXFR: "IXFR",
    QTYPE_AXFR: "AXFR",
    QTYPE_ANY: "ANY",
    QTYPE_CAA: "CAA",
}

# -- CLASS (RFC 1035 §3.2.4) -----------------------------------------------------------
CLASS_IN: Final = 1
CLASS_CH: Final = 3
CLASS_HS: Final = 4
CLASS_NONE: Final = 254
CLASS_ANY: Final = 255


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode, f"RCODE{rcode}")


def qtype_name(qtype: int) -> str:
    """Mnemonic, or the RFC 3597 generic form ``TYPE<n>``."""
    return QTYPE_NAMES.get(qtype, f"TYPE{qtype}")


def opcode_name(opcode: int) -> str:
    return OPCODE_NAMES.get(opcode, f"OPCODE{opcode}")


class DnsParseError(ValueError):
    """The bytes are not a well-formed DNS message."""


# -- records -----------------------------------------------------------------------------
class DnsHeader(NamedTuple):
    id: int
    qr: bool
    opcode: int
    aa: bool
    tc: bool
    rd: bool
    ra: bool
    ad: bool
    cd: bool
    rcode: int  # the header's 4 bits; see DnsMessage.rcode for the EDNS-extended value
    qdcount: int
    ancount: int
    nscount: int
    arcount: int


class Question(NamedTuple):
    name: str
    qtype: int
    qclass: int


class MxRdata(NamedTuple):
    preference: int
    exchange: str


class SoaRdata(NamedTuple):
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int  # the negative-caching TTL (RFC 2308 §4)


class TxtRdata(NamedTuple):
    strings: tuple[str, ...]

    @property
    def text(self) -> str:
        # Consumers such as SPF (RFC 7208 §3.3) join the character-strings without separator.
        return "".join(self.strings)


class OpaqueRdata(NamedTuple):
    """A type this module does not decode: only its size is kept."""

    length: int


#: A/AAAA: address text; CNAME/NS/PTR: a name; the rest their own dataclass.
Rdata = str | MxRdata | SoaRdata | TxtRdata | OpaqueRdata


class ResourceRecord(NamedTuple):
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: Rdata

    @property
    def type_name(self) -> str:
        return qtype_name(self.rtype)

    @property
    def data_text(self) -> str:
        """Presentation form of the rdata, as a zone file or ``dig`` shows it."""
        data = self.data
        if isinstance(data, str):
            return data
        if isinstance(data, MxRdata):
            return f"{data.preference} {data.exchange}"
        if isinstance(data, TxtRdata):
            return data.text
        if isinstance(data, SoaRdata):
            return f"{data.mname} {data.rname} {data.serial} {data.refresh} {data.retry} {data.expire} {data.minimum}"
        return f"\\# {data.length}"  # RFC 3597 generic form, data omitted


class DnsMessage(NamedTuple):
    header: DnsHeader
    questions: tuple[Question, ...]
    answers: tuple[ResourceRecord, ...]
    authority: tuple[ResourceRecord, ...]
    additional: tuple[ResourceRecord, ...]
    rcode: int  # header RCODE extended by the OPT record's upper 8 bits (RFC 6891 §6.1.3)
    edns_udp_size: int | None  # requestor's UDP payload size from OPT, None without EDNS
    records_omitted: int  # records beyond MAX_RECORDS_PER_SECTION, walked over but not kept

    @property
    def id(self) -> int:
        return self.header.id

    @property
    def is_response(self) -> bool:
        return self.header.qr

    @property
    def question(self) -> Question | None:
        return self.questions[0] if self.questions else None


own_class_equality(DnsHeader, Question, MxRdata, SoaRdata, TxtRdata, OpaqueRdata, ResourceRecord, DnsMessage)


# -- parsing -----------------------------------------------------------------------------
_HEADER: Final = struct.Struct("!6H")
_RR_FIXED: Final = struct.Struct("!HHIH")
_QUESTION_FIXED: Final = struct.Struct("!HH")
_MX_PREFERENCE: Final = struct.Struct("!H")
_SOA_NUMBERS: Final = struct.Struct("!5I")

# Presentation escapes (RFC 1035 §5.1, RFC 4343 §2.1): a dot or backslash inside a label,
# and octets outside printable ASCII, must not be confused with label separators or text.
_NEEDS_ESCAPE: Final = re.compile(rb"[^\x21-\x7e]|[.\\]")


def _escape(match: re.Match) -> bytes:
    octet = match.group()[0]
    if octet in b".\\":
        return b"\\" + match.group()
    return b"\\%03d" % octet


def _label_text(label: bytes) -> str:
    if _NEEDS_ESCAPE.search(label):
        label = _NEEDS_ESCAPE.sub(_escape, label)
    return label.decode("ascii")


def _read_name(data: bytes, offset: int, seen: dict[int, tuple[str, int]]) -> tuple[str, int]:
    """Read the (possibly compressed) name at ``offset``; return it and the offset after it.

    ``seen`` maps offsets of labels already decoded in this message to the name they start
    (text, wire length): a compression pointer to one of them ends the walk at once.
    """
    end = len(data)
    labels: list[tuple[int, bytes]] = []  # (offset, raw label)
    wire_len = 1  # the root label's length octet
    hops = 0
    resume = -1  # where parsing continues once the first pointer was followed
    pos = offset
    suffix_text, suffix_len = ".", 1
    while True:
        if pos >= end:
            raise DnsParseError(f"name at offset {offset} runs past the end of the message")
        length = data[pos]
        kind = length & 0xC0
        if kind == 0:
            if length == 0:
                pos += 1
                break
            label_end = pos + 1 + length
            if label_end > end:
                raise DnsParseError(f"label at offset {pos} runs past the end of the message")
            wire_len += length + 1
            if wire_len > MAX_NAME_LENGTH:
                raise DnsParseError(f"name at offset {offset} is longer than {MAX_NAME_LENGTH} octets")
            labels.append((pos, data[pos + 1 : label_end]))
            pos = label_end
        elif kind == 0xC0:
            if pos + 1 >= end:
                raise DnsParseError(f"compression pointer at offset {pos} is cut short")
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DnsParseError(f"name at offset {offset} follows more than {MAX_POINTER_HOPS} compression pointers (loop)")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= end:
                raise DnsParseError(f"compression pointer at offset {pos} points past the end of the message")
            if resume < 0:
                resume = pos + 2
            known = seen.get(target)
            if known is not None:
                suffix_text, suffix_len = known
                wire_len += suffix_len - 1
                if wire_len > MAX_NAME_LENGTH:
                    raise DnsParseError(f"name at offset {offset} is longer than {MAX_NAME_LENGTH} octets")
                break
            pos = target
        else:  # 0x40 (extended label, RFC 6891 §5) and 0x80 are not in use
            raise DnsParseError(f"unsupported label type 0x{kind:02x} at offset {pos}")
    text, text_len = suffix_text, suffix_len
    for label_at, label in reversed(labels):
        text = _label_text(label) + ("." + text if text != "." else "")
        text_len += len(label) + 1
        seen[label_at] = (text, text_len)
    return text, (resume if resume >= 0 else pos)


def _skip_name(data: bytes, pos: int) -> int:
    """Offset after the name at ``pos``, without decoding it (for omitted records)."""
    end = len(data)
    while pos < end:
        length = data[pos]
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length & 0xC0:
            raise DnsParseError(f"unsupported label type 0x{length & 0xC0:02x} at offset {pos}")
        pos += 1 + length
        if length == 0:
            return pos
    raise DnsParseError("name runs past the end of the message")


def _rdata_name(data: bytes, start: int, rdend: int, seen: dict) -> str:
    name, after = _read_name(data, start, seen)
    if after != rdend:
        raise DnsParseError(f"name in rdata at offset {start} does not fill RDLENGTH")
    return name


def _read_rdata(data: bytes, rtype: int, start: int, rdend: int, seen: dict) -> Rdata:
    length = rdend - start
    if rtype == QTYPE_A or rtype == QTYPE_AAAA:
        if length != (4 if rtype == QTYPE_A else 16):
            raise DnsParseError(f"{qtype_name(rtype)} record at offset {start} has RDLENGTH {length}")
        return address_text(data[start:rdend])
    if rtype == QTYPE_CNAME or rtype == QTYPE_NS or rtype == QTYPE_PTR:
        return _rdata_name(data, start, rdend, seen)
    if rtype == QTYPE_MX:
        if length < 3:
            raise DnsParseError(f"MX record at offset {start} is too short")
        (preference,) = _MX_PREFERENCE.unpack_from(data, start)
        return MxRdata(preference, _rdata_name(data, start + 2, rdend, seen))
    if rtype == QTYPE_TXT:
        strings = []
        pos = start
        while pos < rdend:
            string_end = pos + 1 + data[pos]
            if string_end > rdend:
                raise DnsParseError(f"TXT string at offset {pos} runs past RDLENGTH")
            strings.append(data[pos + 1 : string_end].decode("utf-8", "replace"))
            pos = string_end
        return TxtRdata(tuple(strings))
    if rtype == QTYPE_SOA:
        mname, pos = _read_name(data, start, seen)
        rname, pos = _read_name(data, pos, seen)
        if pos + _SOA_NUMBERS.size != rdend:
            raise DnsParseError(f"SOA record at offset {start} does not fill RDLENGTH")
        return SoaRdata(mname, rname, *_SOA_NUMBERS.unpack_from(data, pos))
    return OpaqueRdata(length)


def _read_record(data: bytes, pos: int, seen: dict) -> tuple[ResourceRecord, int]:
    name, pos = _read_name(data, pos, seen)
    if pos + RR_FIXED_LEN > len(data):
        raise DnsParseError(f"resource record at offset {pos} is cut short")
    rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
    start = pos + RR_FIXED_LEN
    rdend = start + rdlength
    if rdend > len(data):
        raise DnsParseError(f"rdata at offset {start} runs past the end of the message")
    return ResourceRecord(name, rtype, rclass, ttl, _read_rdata(data, rtype, start, rdend, seen)), rdend


def _skip_record(data: bytes, pos: int) -> int:
    pos = _skip_name(data, pos)
    if pos + RR_FIXED_LEN > len(data):
        raise DnsParseError(f"resource record at offset {pos} is cut short")
    rdend = pos + RR_FIXED_LEN + _RR_FIXED.unpack_from(data, pos)[3]
    if rdend > len(data):
        raise DnsParseError(f"rdata at offset {pos + RR_FIXED_LEN} runs past the end of the message")
    return rdend


def _read_section(data: bytes, pos: int, count: int, seen: dict) -> tuple[tuple[ResourceRecord, ...], int]:
    records = []
    for _ in range(min(count, MAX_RECORDS_PER_SECTION)):
        record, pos = _read_record(data, pos, seen)
        records.append(record)
    for _ in range(count - MAX_RECORDS_PER_SECTION):
        pos = _skip_record(data, pos)
    return tuple(records), pos


def parse_header(data: bytes) -> DnsHeader:
    """The fixed header alone; lets callers salvage id and RCODE from a damaged message."""
    if len(data) < HEADER_LEN:
        raise DnsParseError(f"message of {len(data)} bytes is shorter than the {HEADER_LEN}-byte header")
    msg_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data, 0)
    return DnsHeader(
        msg_id,
        bool(flags & FLAG_QR),
        (flags >> OPCODE_SHIFT) & OPCODE_MASK,
        bool(flags & FLAG_AA),
        bool(flags & FLAG_TC),
        bool(flags & FLAG_RD),
        bool(flags & FLAG_RA),
        bool(flags & FLAG_AD),
        bool(flags & FLAG_CD),
        flags & RCODE_MASK,
        qdcount,
        ancount,
        nscount,
        arcount,
    )


def parse_message(message: bytes | bytearray | memoryview) -> DnsMessage:
    """Parse one DNS message. Raises :class:`DnsParseError`, and only that, on malformed input.

    Bytes after the last declared record are ignored, as resolvers do.
    """
    data = message if isinstance(message, bytes) else bytes(message)
    header = parse_header(data)
    pos = HEADER_LEN
    seen: dict[int, tuple[str, int]] = {}
    questions = []
    for _ in range(min(header.qdcount, MAX_RECORDS_PER_SECTION)):
        name, pos = _read_name(data, pos, seen)
        if pos + _QUESTION_FIXED.size > len(data):
            raise DnsParseError(f"question at offset {pos} is cut short")
        qtype, qclass = _QUESTION_FIXED.unpack_from(data, pos)
        pos += _QUESTION_FIXED.size
        questions.append(Question(name, qtype, qclass))
    for _ in range(header.qdcount - MAX_RECORDS_PER_SECTION):
        pos = _skip_name(data, pos) + _QUESTION_FIXED.size
        if pos > len(data):
            raise DnsParseError("question section runs past the end of the message")
    answers, pos = _read_section(data, pos, header.ancount, seen)
    authority, pos = _read_section(data, pos, header.nscount, seen)
    additional, pos = _read_section(data, pos, header.arcount, seen)

    rcode = header.rcode
    edns_udp_size = None
    for record in additional:
        if record.rtype == QTYPE_OPT:
            # OPT reuses CLASS for the UDP payload size and TTL for EXTENDED-RCODE/VERSION/flags.
            edns_udp_size = record.rclass
            rcode |= (record.ttl >> 24) << 4
            break
    omitted = sum(max(0, count - MAX_RECORDS_PER_SECTION) for count in (
        header.qdcount, header.ancount, header.nscount, header.arcount))
    return DnsMessage(header, tuple(questions), answers, authority, additional, rcode, edns_udp_size, omitted)


class TcpFramer:
    """Splits one direction of a DNS-over-TCP stream into messages (2-byte length prefix).

    Sans-I/O: ``feed(bytes)`` returns the messages completed by those bytes. At most one
    incomplete message is held; one announced longer than ``max_message_len`` is skipped
    (and counted in ``oversized``) instead of being buffered.
    """

    __slots__ = ("max_message_len", "oversized", "_buffer", "_skip")

    def __init__(self, max_message_len: int = MAX_MESSAGE_LEN) -> None:
        self.max_message_len = max_message_len
        self.oversized = 0
        self._buffer = bytearray()
        self._skip = 0  # bytes of an oversized message still to discard

    @property
    def buffered(self) -> int:
        """Bytes held in memory for a message not yet complete."""
        return len(self._buffer)

    @property
    def incomplete(self) -> bool:
        """True between message boundaries (a message, kept or skipped, is unfinished)."""
        return bool(self._buffer or self._skip)

    def feed(self, data: bytes) -> list[bytes]:
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        buffer = self._buffer
        buffer += data
        messages = []
        pos = 0
        while len(buffer) - pos >= TCP_LENGTH_PREFIX_LEN:
            length = (buffer[pos] << 8) | buffer[pos + 1]
            start = pos + TCP_LENGTH_PREFIX_LEN
            if length > self.max_message_len:
                self.oversized += 1
                available = len(buffer) - start
                pos = start + min(length, available)
                self._skip = length - min(length, available)
                continue
            if len(buffer) - start < length:
                break
            messages.append(bytes(buffer[start : start + length]))
            pos = start + length
        del buffer[:pos]
        return messages
