"""Crafted captures for edge cases a real stack won't produce on demand (scapy builds packets).

``Conversation`` writes a TCP dialogue packet by packet (correct sequence numbers, TTLs,
checksums); the writers put frames into pcap (either byte order, µs or ns) or pcapng (several
interfaces, each with its own link type and timestamp resolution) under any supported link
type. Nothing here touches a network: packets only ever go to files.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.inet6 import ICMPv6DestUnreach, IPv6, IPerror6, TCPerror as TCPerror6
from scapy.layers.dns import DNS, DNSQR, DNSRR

NS = 1_000_000_000

# Addresses inside Microsoft's published submission range (files only; nothing is sent).
MS_SERVER = "52.96.10.20"
MS_SERVER6 = "2603:1036:c00:14::2"
CLIENT = "192.0.2.10"
CLIENT6 = "2001:db8::10"
ROUTER = "192.0.2.1"


def ip_layer(src: str, dst: str, ttl: int):
    return IPv6(src=src, dst=dst, hlim=ttl) if ":" in src else IP(src=src, dst=dst, ttl=ttl)


@dataclass
class Conversation:
    """A TCP conversation between client and server; ``packets`` holds (ts_ns, ip bytes)."""

    client: str = CLIENT
    server: str = MS_SERVER
    cport: int = 50123
    sport: int = 587
    client_ttl: int = 64
    server_ttl: int = 118
    t: float = 1_700_000_000.0
    cseq: int = 1000
    sseq: int = 5000
    packets: list[tuple[int, bytes]] = field(default_factory=list)

    def _emit(self, from_client: bool, flags: str, payload: bytes = b"", seq: int | None = None, ack: int | None = None,
              ttl: int | None = None, dt: float = 0.001, window: int = 64240, options=None, src: str | None = None) -> None:
        self.t += dt
        if from_client:
            ip = ip_layer(src or self.client, self.server, ttl or self.client_ttl)
            tcp = TCP(sport=self.cport, dport=self.sport, flags=flags, seq=self.cseq if seq is None else seq,
                      ack=(self.sseq if ack is None else ack) if "A" in flags else 0, window=window, options=options or [])
        else:
            ip = ip_layer(src or self.server, self.client, ttl or self.server_ttl)
            tcp = TCP(sport=self.sport, dport=self.cport, flags=flags, seq=self.sseq if seq is None else seq,
                      ack=(self.cseq if ack is None else ack) if "A" in flags else 0, window=window, options=options or [])
        self.packets.append((int(round(self.t * NS)), bytes(ip / tcp / payload) if payload else bytes(ip / tcp)))

    # -- building blocks --------------------------------------------------------------------
    def syn(self, dt: float = 0.001) -> "Conversation":
        self._emit(True, "S", dt=dt, options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
        return self

    def synack(self, dt: float = 0.02, ttl: int | None = None) -> "Conversation":
        self._emit(False, "SA", ack=self.cseq + 1, dt=dt, ttl=ttl, options=[("MSS", 1400), ("WScale", 8)])
        return self

    def handshake(self, rtt: float = 0.02) -> "Conversation":
        self.syn()
        self.synack(rtt)
        self.cseq += 1
        self.sseq += 1
        self._emit(True, "A", dt=rtt / 10)
        return self

    def client_sends(self, data: bytes, dt: float = 0.005, push: bool = True) -> "Conversation":
        self._emit(True, "PA" if push else "A", data, dt=dt)
        self.cseq += len(data)
        return self

    def server_sends(self, data: bytes, dt: float = 0.02) -> "Conversation":
        self._emit(False, "PA", data, dt=dt)
        self.sseq += len(data)
        return self

    def client_ack(self, dt: float = 0.001) -> "Conversation":
        self._emit(True, "A", dt=dt)
        return self

    def server_ack(self, dt: float = 0.001) -> "Conversation":
        self._emit(False, "A", dt=dt)
        return self

    def smtp(self, lines: list[tuple[str, bytes]], dt: float = 0.01) -> "Conversation":
        """A dialogue: ("S", b"220 …\\r\\n"), ("C", b"EHLO …\\r\\n") …, each acked by the other side."""
        for who, data in lines:
            if who == "S":
                self.server_sends(data, dt)
                self.client_ack()
            else:
                self.client_sends(data, dt)
                self.server_ack()
        return self

    def close_by_client(self) -> "Conversation":
        self._emit(True, "FA", dt=0.001)
        self.cseq += 1
        self._emit(False, "FA", dt=0.001)
        self.sseq += 1
        self._emit(True, "A", dt=0.001)
        return self

    def close_by_server(self) -> "Conversation":
        self._emit(False, "FA", dt=0.001)
        self.sseq += 1
        self._emit(True, "FA", dt=0.001)
        self.cseq += 1
        self._emit(False, "A", dt=0.001)
        return self

    def server_rst(self, ttl: int | None = None, dt: float = 0.001, src: str | None = None) -> "Conversation":
        self._emit(False, "RA", seq=self.sseq, ack=self.cseq + (1 if self.sseq == 5000 else 0), ttl=ttl, dt=dt, src=src)
        return self

    def client_rst(self, dt: float = 0.001) -> "Conversation":
        self._emit(True, "R", dt=dt)
        return self

    def icmp_from_router(self, icmp_type: int = 3, code: int = 13, router: str = ROUTER, ttl: int = 64, dt: float = 0.001) -> "Conversation":
        """An ICMP error quoting the client's last SYN."""
        self.t += dt
        if ":" in self.client:
            quoted = IPerror6(src=self.client, dst=self.server, hlim=63) / TCPerror6(sport=self.cport, dport=self.sport, seq=self.cseq, flags="S")
            pkt = IPv6(src=router, dst=self.client, hlim=ttl) / ICMPv6DestUnreach(code=code) / quoted
        else:
            quoted = IPerror(src=self.client, dst=self.server, ttl=63) / TCPerror(sport=self.cport, dport=self.sport, seq=self.cseq, flags="S")
            pkt = IP(src=router, dst=self.client, ttl=ttl) / ICMP(type=icmp_type, code=code) / quoted
        self.packets.append((int(round(self.t * NS)), bytes(pkt)))
        return self

    def wait(self, seconds: float) -> "Conversation":
        self.t += seconds
        return self


def dns_exchange(t: float, qname: str, answers: list[tuple[str, str, str]], client: str = CLIENT, server: str = "192.0.2.53",
                 rcode: int = 0, qtype: str = "A", sport: int = 40000, txid: int = 0x1234) -> list[tuple[int, bytes]]:
    """A UDP DNS query and its response; ``answers`` = [(name, type, data)]."""
    query = IP(src=client, dst=server) / UDP(sport=sport, dport=53) / DNS(id=txid, rd=1, qd=[DNSQR(qname=qname, qtype=qtype)])
    rrs = [DNSRR(rrname=name, type=rtype, ttl=60, rdata=data) for name, rtype, data in answers]
    response = IP(src=server, dst=client) / UDP(sport=53, dport=sport) / DNS(
        id=txid, qr=1, rd=1, ra=1, rcode=rcode, qd=[DNSQR(qname=qname, qtype=qtype)], an=rrs
    )
    return [(int(t * NS), bytes(query)), (int((t + 0.01) * NS), bytes(response))]


# -- link layers --------------------------------------------------------------------------------
def ethernet(ip: bytes, vlans: tuple[int, ...] = (), outer_tpid: int = 0x8100) -> bytes:
    version = ip[0] >> 4
    etype = 0x86DD if version == 6 else 0x0800
    head = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb"
    tags = b""
    for i, vid in enumerate(vlans):
        tpid = outer_tpid if i == 0 and len(vlans) > 1 else 0x8100
        tags += struct.pack(">HH", tpid, vid)
    return head + tags + struct.pack(">H", etype) + ip


def linux_sll(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHH8sH", 0, 1, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00", etype) + ip


def linux_sll2(ip: bytes) -> bytes:
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    return struct.pack(">HHIHBB8s", etype, 0, 2, 1, 0, 6, b"\x00\x11\x22\x33\x44\x55\x00\x00") + ip


def bsd_null(ip: bytes, byteorder: str = "little", af6: int = 30) -> bytes:
    family = af6 if ip[0] >> 4 == 6 else 2
    return family.to_bytes(4, byteorder) + ip


def bsd_loop(ip: bytes) -> bytes:
    family = 24 if ip[0] >> 4 == 6 else 2
    return family.to_bytes(4, "big") + ip


def pppoe(ip: bytes) -> bytes:
    proto = 0x0057 if ip[0] >> 4 == 6 else 0x0021
    body = struct.pack(">BBHH", 0x11, 0, 1, len(ip) + 2) + struct.pack(">H", proto) + ip
    return b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb" + struct.pack(">H", 0x8864) + body


def ppp(ip: bytes, hdlc: bool = True, compressed: bool = False) -> bytes:
    """PPP (linktype 9 or 50): [address 0xFF, control 0x03], then the protocol (one byte when
    compressed)."""
    proto = 0x57 if ip[0] >> 4 == 6 else 0x21
    return (b"\xff\x03" if hdlc else b"") + (bytes([proto]) if compressed else struct.pack(">H", proto)) + ip


def dot11(ip: bytes, radiotap: bool = True, qos: bool = True, wds: bool = False, htc: bool = False,
          protected: bool = False, subtype: int | None = None) -> bytes:
    """An 802.11 data frame carrying ``ip`` (link type 127 behind a radiotap header, else
    105): to the AP (or between two, ``wds``: four addresses), QoS data with an HT control
    field if asked, LLC/SNAP, then the packet."""
    flags = (0x03 if wds else 0x01) | (0x80 if htc else 0) | (0x40 if protected else 0)
    subtype = (0x08 if qos else 0x00) if subtype is None else subtype
    header = struct.pack("<BBH", (subtype << 4) | (2 << 2), flags, 44) + bytes.fromhex("001122334455" "66778899aabb" "001122334455")
    header += struct.pack("<H", 0x0120) + (bytes.fromhex("66778899aabc") if wds else b"")
    if subtype & 0x08:
        header += b"\x05\x00" + (b"\x00\x00\x00\x80" if htc else b"")
    etype = 0x86DD if ip[0] >> 4 == 6 else 0x0800
    frame = header + b"\xaa\xaa\x03\x00\x00\x00" + struct.pack(">H", etype) + ip
    if not radiotap:
        return frame
    # radiotap: version 0, length 12, present: flags (bit 1) and rate (bit 2); flags 0, rate 2 Mb/s
    return struct.pack("<BBHI", 0, 0, 12, 0x06) + b"\x00\x04\x00\x00" + frame


def pflog(ip: bytes, header_len: int = 61, af6: int = 28, action: int = 1, reason: int = 0, rule: int = 12,
          interface: bytes = b"em0", direction: int = 2, ruleset: bytes = b"") -> bytes:
    """pf's log (link type 117): a pfloghdr of ``header_len`` bytes (61 FreeBSD, 69 newer
    FreeBSD, 100 OpenBSD; AF_INET6 is 28 on FreeBSD, 24 on OpenBSD) — by default "blocked
    (action 1) by rule 12 on em0, outbound" — padded to 4 bytes, then the packet."""
    family = af6 if ip[0] >> 4 == 6 else 2
    header = (struct.pack("<BBBB16s16s", header_len, family, action, reason, interface, ruleset)
              + struct.pack(">II", rule, 0xFFFFFFFF) + struct.pack("<IiIiB", 0, -1, 0, -1, direction))
    header = header[:header_len].ljust((header_len + 3) & ~3, b"\x00")
    return header + ip


def pktap(frame: bytes, linktype: int = 1) -> bytes:
    """Apple's pktap (link type 258): a 108-byte header naming the frame's link type."""
    header = struct.pack("<III24s", 108, 1, linktype, b"en0").ljust(108, b"\x00")
    return header + frame


def cisco_hdlc(ip: bytes) -> bytes:
    """Cisco HDLC (linktype 104): address, control, EtherType."""
    return struct.pack(">BBH", 0x0F, 0x00, 0x86DD if ip[0] >> 4 == 6 else 0x0800) + ip


def nflog(ip: bytes, byteorder: str = "little", prefix: bytes = b"smtp", group: int = 5) -> bytes:
    """Linux NFLOG (linktype 239): header, then TLVs in the capturing host's byte order — a
    prefix string (type 10) and the packet (NFULA_PAYLOAD, 9), each padded to 4 bytes."""
    def tlv(kind: int, value: bytes) -> bytes:
        body = (4 + len(value)).to_bytes(2, byteorder) + kind.to_bytes(2, byteorder) + value
        return body + bytes(-len(body) % 4)
    family = 10 if ip[0] >> 4 == 6 else 2
    return bytes([family, 0]) + struct.pack(">H", group) + (tlv(10, prefix + b"\0") if prefix else b"") + tlv(9, ip)


LINKS = {
    1: ethernet,
    113: linux_sll,
    276: linux_sll2,
    101: lambda ip: ip,
    228: lambda ip: ip,
    0: bsd_null,
    108: bsd_loop,
}


# -- file writers -------------------------------------------------------------------------------
def write_pcap(path, frames: list[tuple[int, bytes]], linktype: int = 1, nano: bool = False, endian: str = "<",
               snaplen: int = 262144, compress: bool = False) -> str:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in frames:
        sec, frac = divmod(ts, NS)
        if not nano:
            frac //= 1000
        cap = frame[:snaplen]
        out.append(struct.pack(endian + "IIII", sec, frac, len(cap), len(frame)) + cap)
    data = b"".join(out)
    if compress:
        data = gzip.compress(data)
    with open(path, "wb") as fh:
        fh.write(data)
    return str(path)


def _block(endian: str, btype: int, body: bytes) -> bytes:
    pad = (-len(body)) % 4
    length = 12 + len(body) + pad
    return struct.pack(endian + "II", btype, length) + body + b"\x00" * pad + struct.pack(endian + "I", length)


def write_pcapng(path, interfaces: list[tuple[int, int]], packets: list[tuple[int, int, bytes]], endian: str = "<",
                 extra_blocks: bool = True) -> str:
    """``interfaces`` = [(linktype, tsresol)], ``packets`` = [(interface index, ts_ns, frame)].

    ``tsresol`` follows pcapng: 6 = µs, 9 = ns, 0x80 | n = 2^-n seconds.
    """
    out = [_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    resolutions = []
    for linktype, tsresol in interfaces:
        opts = struct.pack(endian + "HH", 9, 1) + bytes([tsresol]) + b"\x00\x00\x00" + struct.pack(endian + "HH", 0, 0)
        out.append(_block(endian, 1, struct.pack(endian + "HHI", linktype, 0, 0) + opts))
        resolutions.append(tsresol)
    if extra_blocks:  # an unknown block type and a name resolution block, both to be skipped
        out.append(_block(endian, 0x0BADBEEF, b"ignore me"))
        out.append(_block(endian, 4, struct.pack(endian + "HH", 0, 0)))
    for ifid, ts, frame in packets:
        res = resolutions[ifid]
        if res & 0x80:
            units = (ts << (res & 0x7F)) // NS
        else:
            units = ts // (10 ** (9 - res))
        body = struct.pack(endian + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame)) + frame
        out.append(_block(endian, 6, body))
    with open(path, "wb") as fh:
        fh.write(b"".join(out))
    return str(path)


def frames(packets: list[tuple[int, bytes]], linktype: int = 1) -> list[tuple[int, bytes]]:
    wrap = LINKS[linktype]
    return [(ts, wrap(ip)) for ts, ip in packets]


# -- ready-made dialogues --------------------------------------------------------------------------
EXO_BANNER = b"220 SY5P282CA0097.outlook.office365.com Microsoft ESMTP MAIL Service ready at Sun, 23 Nov 2025 11:12:20 +0000 [08DE2A6028D26C22]\r\n"
EXO_EHLO = (
    b"250-SY5P282CA0097.outlook.office365.com Hello [192.0.2.10]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n"
    b"250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n"
)


def plain_smtp_session(conv: Conversation | None = None, final: bytes = b"250 2.6.0 Queued mail for delivery\r\n") -> Conversation:
    """A complete plaintext SMTP session (banner to 221) with a clean close."""
    conv = conv or Conversation(sport=25)
    conv.handshake()
    conv.smtp([
        ("S", EXO_BANNER), ("C", b"EHLO client.example.org\r\n"), ("S", EXO_EHLO),
        ("C", b"MAIL FROM:<printer@contoso.com>\r\n"), ("S", b"250 2.1.0 Sender OK\r\n"),
        ("C", b"RCPT TO:<user@contoso.com>\r\n"), ("S", b"250 2.1.5 Recipient OK\r\n"),
        ("C", b"DATA\r\n"), ("S", b"354 Start mail input; end with <CRLF>.<CRLF>\r\n"),
        ("C", b"Subject: test\r\n\r\nhello\r\n.\r\n"), ("S", final),
        ("C", b"QUIT\r\n"), ("S", b"221 2.0.0 Service closing transmission channel\r\n"),
    ])
    conv.close_by_client()
    return conv


# -- real TLS bytes (Python's ssl over memory BIOs: no network) ------------------------------------
def self_signed_cert(tmp_dir, names=("smtp.office365.com",), days: int = 30):
    """A throw-away certificate and key (PEM file path) for the given host names."""
    import datetime as dt
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = os.path.join(str(tmp_dir), f"cert-{names[0]}.pem")
    with open(path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return path


def tls_exchange(pem: str, client_min=None, client_max=None, server_min=None, server_max=None, verify: bool = False,
                 sni: str = "smtp.office365.com", app_data: list[tuple[bool, bytes]] = (), seclevel0: bool = False):
    """Run a real TLS handshake between Python's client and server in memory.

    Returns the bytes each side sent, in order, as [(from_client, bytes)], alerts included when
    the handshake fails, then ``app_data`` encrypted (if it succeeded).
    """
    import ssl

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pem)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        client_ctx.load_default_certs()  # does not contain our throw-away CA: verification fails
    else:
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
    if seclevel0:
        for ctx in (server_ctx, client_ctx):
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    for ctx, lo, hi in ((client_ctx, client_min, client_max), (server_ctx, server_min, server_max)):
        if lo is not None:
            ctx.minimum_version = lo
        if hi is not None:
            ctx.maximum_version = hi
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=sni)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    flights: list[tuple[bool, bytes]] = []
    done = {True: False, False: False}
    failed = False
    for _ in range(20):
        for is_client, side in ((True, client), (False, server)):
            if done[is_client] or failed:
                continue
            try:
                side.do_handshake()
                done[is_client] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                failed = True
        moved = False
        for is_client, out_bio, in_bio in ((True, c_out, s_in), (False, s_out, c_in)):
            data = out_bio.read()
            if data:
                flights.append((is_client, data))
                in_bio.write(data)
                moved = True
        if (all(done.values()) or failed) and not moved:
            break
    if all(done.values()) and not failed:
        for from_client, plain in app_data:
            side, out_bio, in_bio, reader = (client, c_out, s_in, server) if from_client else (server, s_out, c_in, client)
            side.write(plain)
            data = out_bio.read()
            flights.append((from_client, data))
            in_bio.write(data)
            try:
                reader.read(65536)
            except ssl.SSLError:
                pass
    return flights


def send_flights(conv: Conversation, flights) -> Conversation:
    """Put TLS flights on the wire of a conversation, segment-sized, each acked."""
    for from_client, data in flights:
        for i in range(0, len(data), 1400):
            piece = data[i : i + 1400]
            if from_client:
                conv.client_sends(piece, dt=0.002)
            else:
                conv.server_sends(piece, dt=0.01)
        if from_client:
            conv.server_ack()
        else:
            conv.client_ack()
    return conv
