"""Generate a gateway-like capture: mostly HTTPS and DNS, a small share of SMTP to Exchange Online.

    python benchmarks/generate.py OUT.pcap [--packets 1000000] [--smtp-share 0.02] [--seed 1]

Packets are built directly as bytes (Ethernet/IPv4/TCP or UDP with correct checksums) —
scapy would take longer than the benchmark itself. Sessions are interleaved in time like a
real capture: many connections overlap, and SMTP sessions (STARTTLS to smtp.office365.com on
587, plaintext to the MX on 25, some whose SYNs go unanswered) are spread through the file.
"""

from __future__ import annotations

import argparse
import heapq
import random
import struct
import sys

NS = 1_000_000_000
ETH = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00"
EXO_SUBMISSION = [(52, 96), (40, 97), (40, 99)]
EXO_MX = [(104, 47), (52, 101), (40, 107)]


def checksum(pseudo_sum: int, segment: bytes) -> int:
    body = int.from_bytes(segment, "big")
    if len(segment) & 1:
        body <<= 8
    total = (pseudo_sum + body) % 0xFFFF
    return (~total) & 0xFFFF or 0xFFFF


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int, ident: int) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst)
    csum = checksum(0, header)
    return header[:10] + struct.pack(">H", csum) + header[12:] + payload


def tcp_packet(src, dst, sport, dport, seq, ack, flags, payload=b"", ttl=64, ident=0, window=64240):
    header = struct.pack(">HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 0x50, flags, window, 0, 0)
    segment = header + payload
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 6 + len(segment)
    csum = checksum(pseudo, segment)
    segment = segment[:16] + struct.pack(">H", csum) + segment[18:]
    return ETH + ipv4(src, dst, 6, segment, ttl, ident)


def udp_packet(src, dst, sport, dport, payload, ttl=64, ident=0):
    header = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0)
    segment = header + payload
    pseudo = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + 17 + len(segment)
    csum = checksum(pseudo, segment)
    segment = segment[:6] + struct.pack(">H", csum) + segment[8:]
    return ETH + ipv4(src, dst, 17, segment, ttl, ident)


SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


class Flow:
    """A TCP conversation scripted as (delay, from_client, flags, payload) steps."""

    def __init__(self, client, server, cport, sport, steps, start, server_ttl=118):
        self.client, self.server, self.cport, self.sport = client, server, cport, sport
        self.steps = steps
        self.t = start
        self.cseq = random.getrandbits(32)
        self.sseq = random.getrandbits(32)
        self.server_ttl = server_ttl

    def packets(self):
        t = self.t
        cseq, sseq = self.cseq, self.sseq
        syn_seq = None
        for delay, from_client, flags, payload in self.steps:
            t += delay
            if from_client:
                if flags & SYN:
                    syn_seq = cseq if syn_seq is None else syn_seq  # a retransmitted SYN reuses its ISN
                    cseq = syn_seq
                pkt = tcp_packet(self.client, self.server, self.cport, self.sport, cseq, sseq, flags, payload)
                cseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
            else:
                pkt = tcp_packet(self.server, self.client, self.sport, self.cport, sseq, cseq, flags, payload, ttl=self.server_ttl)
                sseq += len(payload) + (1 if flags & (SYN | FIN) else 0)
            yield t, pkt


def real_tls_handshake() -> tuple[list[bytes], list[bytes]]:
    """A real TLS 1.2 handshake between Python's own client and server (memory BIOs, no network).

    Returns the client's and the server's flights as lists of byte strings, in order.
    """
    import datetime as dt
    import ssl
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "outlook.office365.com")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("smtp.office365.com")]), critical=False)
            .sign(key, hashes.SHA256()))
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        pem = fh.name
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pem)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="smtp.office365.com")
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client_flights, server_flights = [], []
    done = {client: False, server: False}
    for _ in range(20):
        for side in (client, server):
            if not done[side]:
                try:
                    side.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        moved = False
        for out_bio, in_bio, flights in ((c_out, s_in, client_flights), (s_out, c_in, server_flights)):
            data = out_bio.read()
            if data:
                flights.append(data)
                in_bio.write(data)
                moved = True
        if all(done.values()) and not moved:
            break
    return client_flights, server_flights


TLS_CLIENT, TLS_SERVER = [], []


def tls_record(ctype: int, size: int) -> bytes:
    return struct.pack(">BHH", ctype, 0x0303, size) + bytes(size)


def smtp_starttls_steps():
    rtt = 0.02
    steps = [(0, True, SYN, b""), (rtt, False, SYN | ACK, b""), (0.001, True, ACK, b"")]
    steps += [
        (0.05, False, PSH | ACK, b"220 SY5P282CA0097.outlook.office365.com Microsoft ESMTP MAIL Service ready at Sun, 23 Nov 2025 11:12:20 +0000 [08DE2A6028D26C22]\r\n"),
        (0.01, True, PSH | ACK, b"EHLO printer.contoso.com\r\n"),
        (rtt, False, PSH | ACK, b"250-SY5P282CA0097.outlook.office365.com Hello [203.0.113.7]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 SMTPUTF8\r\n"),
        (0.01, True, PSH | ACK, b"STARTTLS\r\n"),
        (rtt, False, PSH | ACK, b"220 2.0.0 SMTP server ready\r\n"),
    ]
    # The real handshake's flights, alternating client and server, cut to fit segments.
    flights = [(True, f) for f in TLS_CLIENT[:1]] + [(False, f) for f in TLS_SERVER[:1]] + [(True, f) for f in TLS_CLIENT[1:2]] + [(False, f) for f in TLS_SERVER[1:2]]
    for from_client, flight in flights:
        for i in range(0, len(flight), 1400):
            steps.append((0.005 if from_client else rtt, from_client, PSH | ACK, flight[i : i + 1400]))
    for _ in range(random.randint(6, 14)):
        steps.append((0.02, True, PSH | ACK, tls_record(23, random.randint(40, 1400))))
        steps.append((rtt, False, PSH | ACK, tls_record(23, random.randint(30, 120))))
    steps += [(0.01, True, FIN | ACK, b""), (rtt, False, FIN | ACK, b""), (0.001, True, ACK, b"")]
    return steps


def smtp_plain_steps():
    rtt = 0.03
    steps = [(0, True, SYN, b""), (rtt, False, SYN | ACK, b""), (0.001, True, ACK, b"")]
    dialogue = [
        (False, b"220 CH3PEPF00000015.mail.protection.outlook.com Microsoft ESMTP MAIL Service ready\r\n"),
        (True, b"EHLO relay.contoso.com\r\n"), (False, b"250-CH3PEPF00000015 Hello\r\n250 CHUNKING\r\n"),
        (True, b"MAIL FROM:<app@contoso.com>\r\n"), (False, b"250 2.1.0 Sender OK\r\n"),
        (True, b"RCPT TO:<someone@fabrikam.com>\r\n"),
        (False, random.choice([b"250 2.1.5 Recipient OK\r\n", b"550 5.7.64 TenantAttribution; Relay Access Denied\r\n"])),
        (True, b"QUIT\r\n"), (False, b"221 2.0.0 Service closing transmission channel\r\n"),
    ]
    for from_client, data in dialogue:
        steps.append((0.01 if from_client else rtt, from_client, PSH | ACK, data))
    steps += [(0.01, True, FIN | ACK, b""), (rtt, False, FIN | ACK, b""), (0.001, True, ACK, b"")]
    return steps


def dropped_steps():
    return [(0, True, SYN, b""), (1.0, True, SYN, b""), (2.0, True, SYN, b""), (4.0, True, SYN, b"")]


def https_steps():
    rtt = random.uniform(0.005, 0.08)
    steps = [(0, True, SYN, b""), (rtt, False, SYN | ACK, b""), (0.001, True, ACK, b""),
             (0.001, True, PSH | ACK, tls_record(22, 510)), (rtt, False, PSH | ACK, tls_record(22, 3000)[:1400])]
    for _ in range(random.randint(10, 60)):
        if random.random() < 0.3:
            steps.append((random.uniform(0.001, 0.05), True, PSH | ACK, tls_record(23, random.randint(50, 900))))
        else:
            steps.append((random.uniform(0.0005, 0.01), False, ACK, bytes(1400)))
        if random.random() < 0.5:
            steps.append((0.0005, True, ACK, b""))
    steps += [(0.01, True, FIN | ACK, b""), (rtt, False, FIN | ACK, b""), (0.001, True, ACK, b"")]
    return steps


def dns_pair(client, resolver, t, sport, txid):
    if random.random() < 0.03:  # a few lookups of mail names, most of them web names
        name = random.choice([b"\x04smtp\x09office365\x03com\x00", b"\x04mail\x07contoso\x03com\x00"])
    else:
        name = random.choice([b"\x03www\x07example\x03com\x00", b"\x03cdn\x06akamai\x03net\x00", b"\x03api\x06github\x03com\x00",
                              b"\x05login\x0fmicrosoftonline\x03com\x00", b"\x03www\x06google\x03com\x00"])
    query = struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    answer = struct.pack(">HHHHHH", txid, 0x8180, 1, 1, 0, 0) + name + b"\x00\x01\x00\x01" + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([93, 184, 216, 34])
    return [(t, udp_packet(client, resolver, sport, 53, query)), (t + 0.0005, udp_packet(resolver, client, 53, sport, answer))]


def generate(path: str, packets: int, smtp_share: float, seed: int, duration: float = 600.0) -> dict:
    random.seed(seed)
    if not TLS_CLIENT:
        client, server = real_tls_handshake()
        TLS_CLIENT.extend(client)
        TLS_SERVER.extend(server)
    clients = [bytes([10, 0, random.randint(0, 15), random.randint(1, 254)]) for _ in range(400)]
    resolver = bytes([10, 0, 0, 53])
    start = 1_764_000_000.0
    heap: list = []
    counter = 0
    emitted = {"smtp": 0, "other": 0}

    def add_flow(flow):
        nonlocal counter
        gen = flow.packets()
        first = next(gen, None)
        if first is not None:
            heapq.heappush(heap, (first[0], counter, first[1], gen, flow))
            counter += 1

    # Plan: estimate packets per flow type to hit the share, then schedule flows over the duration.
    per_https, per_smtp = 60, 35
    smtp_flows = max(1, int(packets * smtp_share / per_smtp))
    https_flows = max(1, int(packets * (1 - smtp_share) * 0.85 / per_https))
    dns_pairs = int(packets * (1 - smtp_share) * 0.15 / 2)
    for _ in range(https_flows):
        server = bytes([random.choice([13, 23, 104, 151, 142, 172]), random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)])
        add_flow(Flow(random.choice(clients), server, random.randint(30000, 65000), 443, https_steps(), start + random.uniform(0, duration)))
    for _ in range(smtp_flows):
        kind = random.random()
        client = random.choice(clients)
        t = start + random.uniform(0, duration)
        if kind < 0.6:
            a, b = random.choice(EXO_SUBMISSION)
            add_flow(Flow(client, bytes([a, b, random.randint(0, 255), random.randint(1, 254)]), random.randint(30000, 65000), 587, smtp_starttls_steps(), t))
        elif kind < 0.85:
            a, b = random.choice(EXO_MX)
            add_flow(Flow(client, bytes([a, b, random.randint(0, 127), random.randint(1, 254)]), random.randint(30000, 65000), 25, smtp_plain_steps(), t))
        else:
            add_flow(Flow(client, bytes([52, 96, random.randint(0, 255), random.randint(1, 254)]), random.randint(30000, 65000), 587, dropped_steps(), t))
    dns_packets = []
    for i in range(dns_pairs):
        dns_packets += dns_pair(random.choice(clients), resolver, start + random.uniform(0, duration), random.randint(1024, 65000), i & 0xFFFF)
    dns_packets.sort()

    written = 0
    dns_index = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        write = fh.write
        pack = struct.pack
        while (heap or dns_index < len(dns_packets)) and written < packets:
            if dns_index < len(dns_packets) and (not heap or dns_packets[dns_index][0] <= heap[0][0]):
                t, pkt = dns_packets[dns_index]
                dns_index += 1
                emitted["other"] += 1
            else:
                t, order, pkt, gen, flow = heapq.heappop(heap)
                emitted["smtp" if flow.sport in (25, 587) else "other"] += 1
                nxt = next(gen, None)
                if nxt is not None:
                    heapq.heappush(heap, (nxt[0], order, nxt[1], gen, flow))
            sec = int(t)
            usec = int(round((t - sec) * 1_000_000))
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            write(pack("<IIII", sec, usec, len(pkt), len(pkt)))
            write(pkt)
            written += 1
    return {"packets": written, "smtp_packets": emitted["smtp"], "smtp_flows": smtp_flows, "https_flows": https_flows, "dns_pairs": dns_pairs}


def held_open(path: str, count: int, kind: str) -> int:
    """A capture of ``count`` SMTP connections to Exchange Online, all open at once, each left
    holding as much as a connection can: "handshake" — after STARTTLS the server has sent
    200 KB of a Certificate message announced at 250 KB; "recipients" — 300 RCPT commands and
    their replies. Returns the number of packets written."""
    opening = [(True, SYN, b""), (False, SYN | ACK, b""), (True, ACK, b""),
               (False, PSH | ACK, b"220 mx.contoso.example Microsoft ESMTP MAIL Service ready\r\n"),
               (True, PSH | ACK, b"EHLO client.example\r\n"),
               (False, PSH | ACK, b"250-mx.contoso.example Hello\r\n250-PIPELINING\r\n250 STARTTLS\r\n")]
    if kind == "handshake":
        body = bytes([11]) + (250 * 1024).to_bytes(3, "big")
        stream = b""
        for i in range(13):
            fragment = (body if i == 0 else b"") + bytes(16384 - (4 if i == 0 else 0))
            stream += struct.pack(">BHH", 22, 0x0303, len(fragment)) + fragment
        steps = opening + [(True, PSH | ACK, b"STARTTLS\r\n"), (False, PSH | ACK, b"220 2.0.0 SMTP server ready\r\n")]
        steps += [(False, ACK, stream[i : i + 1400]) for i in range(0, len(stream), 1400)]
    elif kind == "recipients":
        steps = opening + [(True, PSH | ACK, b"MAIL FROM:<app@contoso.com>\r\n"), (False, PSH | ACK, b"250 2.1.0 Sender OK\r\n")]
        for i in range(300):
            steps += [(True, PSH | ACK, b"RCPT TO:<user%d@fabrikam.com>\r\n" % i), (False, PSH | ACK, b"250 2.1.5 Recipient OK\r\n")]
    else:
        raise ValueError(kind)
    server = bytes([52, 96, 1, 1])
    seqs = [[1000, 5000] for _ in range(count)]
    t = 1_700_000_000 * NS
    written = 0
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for from_client, flags, payload in steps:
            for n in range(count):
                client = bytes([10, 20, n >> 8 & 255, n & 255])
                cseq, sseq = seqs[n]
                if from_client:
                    frame = tcp_packet(client, server, 20000 + n, 587, cseq, sseq, flags, payload)
                    seqs[n][0] += len(payload) + (1 if flags & SYN else 0)
                else:
                    frame = tcp_packet(server, client, 587, 20000 + n, sseq, cseq, flags, payload)
                    seqs[n][1] += len(payload) + (1 if flags & SYN else 0)
                t += 20_000
                out.write(struct.pack("<IIII", t // NS, t % NS // 1000, len(frame), len(frame)) + frame)
                written += 1
    return written


def tenant_lookup(i: int, addresses: list[bytes]) -> tuple[bytes, bytes]:
    """The DNS query for tenant ``i``'s MX host (<tenant>.mail.protection.outlook.com) and its
    answer, with an A record for each of ``addresses``."""
    label = b"tenant%06d-com" % i
    name = bytes([len(label)]) + label + b"\x04mail\x0aprotection\x07outlook\x03com\x00"
    query = struct.pack(">HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + name + b"\x00\x01\x00\x01"
    answers = b"".join(b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + address for address in addresses)
    answer = struct.pack(">HHHHHH", i & 0xFFFF, 0x8180, 1, len(addresses), 0, 0) + name + b"\x00\x01\x00\x01" + answers
    return query, answer


def dns_lookups(path: str, count: int) -> int:
    """A capture of ``count`` DNS lookups of distinct tenants' MX hosts
    (<tenant>.mail.protection.outlook.com), each answered with four addresses: every one is a
    row smtpflow keeps, and every address a name it remembers. Returns the packets written."""
    rng = random.Random(5)
    t = 1_700_000_000.0
    written = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i in range(count):
            client, resolver = bytes([10, 0, (i >> 8) & 255, i & 255]), bytes([10, 255, 0, 53])
            sport = 1024 + i % 60000
            query, answer = tenant_lookup(i, [bytes([52, 101, rng.randrange(256), rng.randrange(256)]) for _ in range(4)])
            for ts, frame in ((t, udp_packet(client, resolver, sport, 53, query)), (t + 0.0005, udp_packet(resolver, client, 53, sport, answer))):
                fh.write(struct.pack("<IIII", int(ts), int(round(ts % 1 * 1e6)) % 1_000_000, len(frame), len(frame)) + frame)
                written += 1
            t += 0.001
    return written


def shared_addresses(path: str, tenants: int) -> int:
    """A relay writing to ``tenants`` tenants of Exchange Online: it looks up each one's MX host
    (<tenant>.mail.protection.outlook.com), all answered with the same four addresses, then
    connects to one of them (SYN, refused by a RST: only the lookups matter here). Every
    session's address has thousands of names. Returns the packets written."""
    addresses = [bytes([52, 101, 0, k]) for k in range(4)]
    client, resolver = bytes([10, 0, 0, 2]), bytes([10, 255, 0, 53])
    t = 1_700_000_000 * NS
    written = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i in range(tenants):
            sport = 1024 + i % 60000
            query, answer = tenant_lookup(i, addresses)
            server = addresses[i % 4]
            frames = [(t, udp_packet(client, resolver, sport, 53, query)),
                      (t + 200_000, udp_packet(resolver, client, 53, sport, answer)),
                      (t + 400_000, tcp_packet(client, server, sport, 25, 1000, 0, SYN)),
                      (t + 600_000, tcp_packet(server, client, 25, sport, 0, 1001, RST | ACK, ttl=110))]
            for ts, frame in frames:
                fh.write(struct.pack("<IIII", ts // NS, ts % NS // 1000, len(frame), len(frame)) + frame)
                written += 1
            t += 1_000_000
    return written


def syn_scan(path: str, count: int) -> int:
    """A host trying port 25 of ``count`` addresses in Exchange Online's ranges, 2,000 a second:
    two in three SYNs go unanswered, the third is refused by a RST. Returns the packets written."""
    client = bytes([192, 168, 7, 7])
    t = 1_700_000_000 * NS
    written = 0
    with open(path, "wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for i in range(count):
            server = bytes([52, 100 + (i >> 16) % 4, (i >> 8) & 255, i & 255])
            sport = 1024 + i % 60000
            frames = [(t, tcp_packet(client, server, sport, 25, 1000, 0, SYN))]
            if i % 3 == 0:
                frames.append((t + 200_000, tcp_packet(server, client, 25, sport, 0, 1001, RST | ACK, ttl=110)))
            for ts, frame in frames:
                fh.write(struct.pack("<IIII", ts // NS, ts % NS // 1000, len(frame), len(frame)) + frame)
                written += 1
            t += 500_000
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--packets", type=int, default=1_000_000)
    parser.add_argument("--smtp-share", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    info = generate(args.out, args.packets, args.smtp_share, args.seed)
    print(f"{args.out}: {info['packets']:,} packets, {info['smtp_packets']:,} SMTP ({info['smtp_packets'] / max(info['packets'], 1):.1%}), "
          f"{info['smtp_flows']} SMTP flows, {info['https_flows']} HTTPS flows, {info['dns_pairs']} DNS exchanges", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
