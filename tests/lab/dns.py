"""A tiny DNS responder for the lab: answers from a fixed table, like a LAN resolver would.

It plays the client's recursive resolver (RA set, not authoritative) and knows the shapes of the
Microsoft names the scenarios use: ``smtp.office365.com`` answered through a CNAME chain ending at
a site-specific ``<SITE>-efz.ms-acdc.office.com`` name with A/AAAA of the lab server, tenant MX
hosts with plain A records. Selected names can be answered NXDOMAIN, SERVFAIL, REFUSED, or not at
all. Standard library only; run in a namespace with ``python -m tests.lab.dns`` (JSON config on
stdin, prints READY once listening, stops on SIGTERM).
"""

from __future__ import annotations

import ipaddress
import json
import os
import select
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field

# RFC 1035 / 3596 constants
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_SOA, TYPE_MX, TYPE_TXT, TYPE_AAAA = 1, 2, 5, 6, 15, 16, 28
TYPE_NAMES = {"A": TYPE_A, "NS": TYPE_NS, "CNAME": TYPE_CNAME, "SOA": TYPE_SOA, "MX": TYPE_MX,
              "TXT": TYPE_TXT, "AAAA": TYPE_AAAA}
CLASS_IN = 1
RCODE = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5}
FLAG_QR, FLAG_AA, FLAG_TC, FLAG_RD, FLAG_RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
MAX_CNAME_CHAIN = 8

#: The default table: Microsoft 365 names pointing at the lab server's service addresses.
DEFAULT_SOA = {
    "office.com": "ns1-bn.ms-acdc.office.com. hostmaster.microsoft.com. 2026112701 3600 600 604800 300",
    "office365.com": "ns1-bn.ms-acdc.office.com. hostmaster.microsoft.com. 2026112701 3600 600 604800 300",
    "outlook.com": "ns1-01.azure-dns.com. azuredns-hostmaster.microsoft.com. 1 3600 300 2419200 300",
    "contoso.com": "ns1.contoso.com. hostmaster.contoso.com. 2026112701 3600 600 604800 300",
}


def default_records(exo: tuple[str, str], mx: tuple[str, str], relay: tuple[str, str]) -> dict:
    """The lab zone: ``exo``/``mx``/``relay`` are (IPv4, IPv6) of the lab's services."""
    return {
        # Shape of the real chain (observed for outlook.office365.com; the middle link for smtp
        # is modelled on it): name → ms-acdc alias → site front door with a very short TTL.
        "smtp.office365.com": [("CNAME", "smtp.ms-acdc.office.com", 174)],
        "smtp.ms-acdc.office.com": [("CNAME", "SYD-efz.ms-acdc.office.com", 60)],
        "syd-efz.ms-acdc.office.com": [("A", exo[0], 8), ("AAAA", exo[1], 8)],
        "contoso-com.mail.protection.outlook.com": [("A", mx[0], 10)],
        "contoso.com": [("MX", "0 contoso-com.mail.protection.outlook.com", 3600)],
        "relay.contoso.com": [("A", relay[0], 3600), ("AAAA", relay[1], 3600)],
    }


# --- wire format ----------------------------------------------------------------------------

class DNSFormatError(ValueError):
    pass


def read_name(msg: bytes, off: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at ``off``; returns (name, offset after it)."""
    labels: list[str] = []
    end = None
    for _ in range(128):  # bounds pointer loops
        if off >= len(msg):
            raise DNSFormatError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise DNSFormatError("truncated pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            continue
        if n == 0:
            return ".".join(labels), (end if end is not None else off + 1)
        labels.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n
    raise DNSFormatError("name too long or pointer loop")


class Writer:
    """Builds a message, compressing names against those already written."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.names: dict[str, int] = {}

    def name(self, name: str) -> None:
        labels = [x for x in name.rstrip(".").split(".") if x]
        for i in range(len(labels)):
            key = ".".join(labels[i:]).lower()
            if key in self.names:
                self.buf += struct.pack("!H", 0xC000 | self.names[key])
                return
            if len(self.buf) < 0x3FFF:
                self.names[key] = len(self.buf)
            raw = labels[i].encode("ascii")
            self.buf += bytes([len(raw)]) + raw
        self.buf += b"\0"

    def rr(self, owner: str, rtype: int, ttl: int, rdata_fn) -> None:
        self.name(owner)
        self.buf += struct.pack("!HHI", rtype, CLASS_IN, ttl)
        at = len(self.buf)
        self.buf += b"\0\0"
        rdata_fn(self)
        struct.pack_into("!H", self.buf, at, len(self.buf) - at - 2)


def _rdata(rtype: int, value: str):
    def write(w: Writer) -> None:
        if rtype == TYPE_A:
            w.buf += ipaddress.IPv4Address(value).packed
        elif rtype == TYPE_AAAA:
            w.buf += ipaddress.IPv6Address(value).packed
        elif rtype in (TYPE_CNAME, TYPE_NS):
            w.name(value)
        elif rtype == TYPE_MX:
            pref, host = value.split()
            w.buf += struct.pack("!H", int(pref))
            w.name(host)
        elif rtype == TYPE_SOA:
            mname, rname, *nums = value.split()
            w.name(mname)
            w.name(rname)
            w.buf += struct.pack("!IIIII", *(int(x) for x in nums))
        elif rtype == TYPE_TXT:
            raw = value.encode()
            w.buf += bytes([len(raw)]) + raw
    return write


@dataclass
class Zone:
    """What the responder knows. ``failures`` maps a name to NXDOMAIN/SERVFAIL/REFUSED/DROP."""

    records: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    soa: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SOA))

    def __post_init__(self) -> None:
        self.records = {k.lower().rstrip("."): [tuple(r) for r in v] for k, v in self.records.items()}
        self.failures = {k.lower().rstrip("."): v.upper() for k, v in self.failures.items()}

    def _soa_for(self, name: str) -> tuple[str, str] | None:
        labels = name.split(".")
        for i in range(len(labels)):
            zone = ".".join(labels[i:])
            if zone in self.soa:
                return zone, self.soa[zone]
        return None

    def answer(self, query: bytes) -> bytes | None:
        """The response to ``query`` (None: stay silent)."""
        if len(query) < 12:
            return None
        qid, flags, qdcount = struct.unpack("!HHH", query[:6])
        if flags & FLAG_QR or qdcount != 1:
            return None
        try:
            qname, off = read_name(query, 12)
            qtype, qclass = struct.unpack("!HH", query[off:off + 4])
        except (DNSFormatError, struct.error):
            return struct.pack("!HHHHHH", qid, FLAG_QR | FLAG_RA | RCODE["FORMERR"], 0, 0, 0, 0)
        key = qname.lower().rstrip(".")
        failure = self.failures.get(key)
        if failure == "DROP":
            return None

        answers: list[tuple[str, int, int, str]] = []
        rcode = RCODE.get(failure, 0) if failure else 0
        authority = None
        if not failure:
            name, owner = key, qname
            for _ in range(MAX_CNAME_CHAIN):
                rrs = self.records.get(name)
                if rrs is None:
                    rcode = RCODE["NXDOMAIN"]
                    break
                cname = [r for r in rrs if r[0] == "CNAME"]
                if cname and qtype != TYPE_CNAME:
                    target = cname[0][1]
                    answers.append((owner, TYPE_CNAME, cname[0][2], target))
                    name, owner = target.lower().rstrip("."), target
                    continue
                answers += [(owner, TYPE_NAMES[r[0]], r[2], r[1]) for r in rrs
                            if TYPE_NAMES[r[0]] == qtype]
                break
            if rcode == RCODE["NXDOMAIN"] or not [a for a in answers if a[1] == qtype]:
                authority = self._soa_for(name)
        elif failure == "NXDOMAIN":
            authority = self._soa_for(key)

        w = Writer()
        rflags = FLAG_QR | (flags & (0x7800 | FLAG_RD)) | FLAG_RA | rcode
        w.buf += struct.pack("!HHHHHH", qid, rflags, 1, len(answers), 1 if authority else 0, 0)
        w.name(qname)
        w.buf += struct.pack("!HH", qtype, qclass)
        for owner, rtype, ttl, value in answers:
            w.rr(owner, rtype, ttl, _rdata(rtype, value))
        if authority:
            w.rr(authority[0], TYPE_SOA, 300, _rdata(TYPE_SOA, authority[1]))
        return bytes(w.buf)


# --- a stub resolver (for clients that must query from a given source address) --------------

def build_query(qid: int, name: str, qtype: int) -> bytes:
    w = Writer()
    w.buf += struct.pack("!HHHHHH", qid, FLAG_RD, 1, 0, 0, 0)
    w.name(name)
    w.buf += struct.pack("!HH", qtype, CLASS_IN)
    return bytes(w.buf)


def parse_addresses(msg: bytes) -> tuple[int, list[str]]:
    """(rcode, A/AAAA addresses in the answer section) of a response."""
    rcode = struct.unpack("!H", msg[2:4])[0] & 0xF
    qd, an = struct.unpack("!HH", msg[4:8])
    off = 12
    for _ in range(qd):
        off = read_name(msg, off)[1] + 4
    out = []
    for _ in range(an):
        off = read_name(msg, off)[1]
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        rdata = msg[off + 10:off + 10 + rdlen]
        if rtype == TYPE_A:
            out.append(str(ipaddress.IPv4Address(rdata)))
        elif rtype == TYPE_AAAA:
            out.append(str(ipaddress.IPv6Address(rdata)))
        off += 10 + rdlen
    return rcode, out


def resolve_from(source: str, server: str, name: str, timeout: float = 2.0) -> dict:
    """Ask ``server`` for A and AAAA of ``name`` from ``source``, both queries at once like glibc.

    Returns {"A": (rcode, addrs), "AAAA": (rcode, addrs)}; a missing answer is (None, []).
    """
    fam = socket.AF_INET6 if ":" in server else socket.AF_INET
    result: dict = {"A": (None, []), "AAAA": (None, [])}
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.settimeout(timeout)
        ids = {}
        for qtype, label in ((TYPE_A, "A"), (TYPE_AAAA, "AAAA")):
            qid = int.from_bytes(os.urandom(2), "big")
            ids[qid] = label
            s.sendto(build_query(qid, name, qtype), (server, 53))
        while ids:
            try:
                data, _ = s.recvfrom(4096)
            except socket.timeout:
                break
            qid = struct.unpack("!H", data[:2])[0]
            if qid in ids:
                result[ids.pop(qid)] = parse_addresses(data)
    return result


# --- server ---------------------------------------------------------------------------------

def serve(listen: list[tuple[str, int]], zone: Zone, log=sys.stderr) -> None:
    socks = []
    for addr, port in listen:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        socks.append(s)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    print("READY", flush=True)
    while not stop:
        try:
            ready, _, _ = select.select(socks, [], [], 0.5)
        except InterruptedError:
            continue
        for s in ready:
            data, peer = s.recvfrom(4096)
            reply = zone.answer(data)
            try:
                qname, _ = read_name(data, 12)
            except DNSFormatError:
                qname = "?"
            print(f"dns: {peer[0]} asked {qname}: "
                  f"{'no answer' if reply is None else 'rcode %d' % (reply[3] & 0xF)}",
                  file=log, flush=True)
            if reply is not None:
                s.sendto(reply, peer)


def main() -> None:
    cfg = json.load(sys.stdin)
    zone = Zone(records=cfg.get("records", {}), failures=cfg.get("failures", {}))
    serve([tuple(x) for x in cfg["listen"]], zone)


if __name__ == "__main__":
    main()
