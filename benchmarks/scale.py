"""Memory at scale: several GB of gateway traffic through the engine, RSS sampled as it goes.

    python benchmarks/scale.py [--gigabytes 4] [--smtp-share 0.02] [--every 1000000] [--keep-sessions N] [--seed 1]

A child process generates a steady gateway capture — mostly HTTPS and DNS, SMTP sessions to
Exchange Online at a constant rate (STARTTLS on 587, plaintext on 25, some with dropped
SYNs) — with the packet builders of ``generate.py``, but scheduled second by second so
that only the flows in progress are in memory, and streams it through a FIFO: nothing
touches the disk however many gigabytes are asked for. This process reads the FIFO with
the pcap reader and the C prefilter and feeds ``analyzer.engine.Engine``, sampling its
resident memory every ``--every`` packets together with the connections in the table and
the sessions finished so far.

What should be seen: the connection table holding only the active connections, whatever
the volume. RSS still grows with what the results need — the facts of finished sessions
(the records are built from them at the end) until MAX_SESSIONS_IN_MEMORY of them, after
which they go to a temporary file (``analyzer/diagnosis/store.py``), and the DNS transactions
about mail names (capped by the DNS tracker's MAX_TRANSACTIONS) — and the last line says by
how much per finished session. ``--keep-sessions N`` keeps only the last N sessions' facts, as
live capture does (``analyzer/livecapture.py``): then RSS shows the engine's working memory plus the
DNS transactions. Not part of the test suite: this is a benchmark.
"""

from __future__ import annotations

import argparse
import collections
import heapq
import multiprocessing
import os
import random
import resource
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import generate as gen  # noqa: E402 - the packet builders of the throughput benchmark

#: Capture-time seconds of traffic scheduled at a time, and the traffic rate (as generate.py:
#: a million packets in ten minutes of a busy gateway).
WINDOW_S = 1.0
PACKETS_PER_SECOND = 1_000_000 / 600
START = 1_764_000_000.0


def traffic(gigabytes: float, smtp_share: float, seed: int):
    """Yield (ts, frame) in time order until ``gigabytes`` of pcap records were produced."""
    random.seed(seed)
    if not gen.TLS_CLIENT:
        client, server = gen.real_tls_handshake()
        gen.TLS_CLIENT.extend(client)
        gen.TLS_SERVER.extend(server)
    clients = [bytes([10, 0, random.randint(0, 15), random.randint(1, 254)]) for _ in range(400)]
    resolver = bytes([10, 0, 0, 53])
    # Flows started per second, sized like generate.py's mix (~60 packets per HTTPS flow, ~35 per SMTP one).
    rates = {
        "https": PACKETS_PER_SECOND * (1 - smtp_share) * 0.85 / 60,
        "smtp": PACKETS_PER_SECOND * smtp_share / 35,
        "dns": PACKETS_PER_SECOND * (1 - smtp_share) * 0.15 / 2,
    }
    heap: list = []
    order = 0

    def push(ts: float, frame: bytes, packets=None) -> None:
        nonlocal order
        heapq.heappush(heap, (ts, order, frame, packets))
        order += 1

    def add_flow(flow) -> None:
        packets = flow.packets()
        first = next(packets, None)
        if first is not None:
            push(first[0], first[1], packets)

    budget = gigabytes * 1e9
    produced = 0
    t = START
    while produced < budget:
        for kind, rate in rates.items():
            count = int(rate * WINDOW_S) + (random.random() < (rate * WINDOW_S) % 1)
            for _ in range(count):
                start = t + random.uniform(0, WINDOW_S)
                client = random.choice(clients)
                cport = random.randint(30000, 65000)
                if kind == "dns":
                    for ts, frame in gen.dns_pair(client, resolver, start, cport, random.getrandbits(16)):
                        push(ts, frame)
                elif kind == "https":
                    server = bytes([random.choice([13, 23, 104, 151, 142, 172]), random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)])
                    add_flow(gen.Flow(client, server, cport, 443, gen.https_steps(), start))
                else:
                    pick = random.random()
                    if pick < 0.6:
                        a, b = random.choice(gen.EXO_SUBMISSION)
                        add_flow(gen.Flow(client, bytes([a, b, random.randint(0, 255), random.randint(1, 254)]), cport, 587, gen.smtp_starttls_steps(), start))
                    elif pick < 0.85:
                        a, b = random.choice(gen.EXO_MX)
                        add_flow(gen.Flow(client, bytes([a, b, random.randint(0, 127), random.randint(1, 254)]), cport, 25, gen.smtp_plain_steps(), start))
                    else:
                        add_flow(gen.Flow(client, bytes([52, 96, random.randint(0, 255), random.randint(1, 254)]), cport, 587, gen.dropped_steps(), start))
        t += WINDOW_S
        while heap and heap[0][0] < t and produced < budget:
            ts, _order, frame, packets = heapq.heappop(heap)
            produced += 16 + len(frame)
            yield ts, frame
            if packets is not None:
                nxt = next(packets, None)
                if nxt is not None:
                    push(nxt[0], nxt[1], packets)


def write_pcap(path: str, gigabytes: float, smtp_share: float, seed: int) -> None:
    """The child process: write the traffic as a classic pcap into ``path`` (a FIFO)."""
    pack = struct.Struct("<IIII").pack
    with open(path, "wb", buffering=1 << 20) as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for ts, frame in traffic(gigabytes, smtp_share, seed):
            sec = int(ts)
            usec = min(int((ts - sec) * 1_000_000), 999_999)
            out.write(pack(sec, usec, len(frame), len(frame)))
            out.write(frame)


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(gigabytes: float, smtp_share: float, seed: int, every: int, keep_sessions: int | None = None) -> list[dict]:
    """Stream the traffic through the engine; return the samples (the last one after the end)."""
    from analyzer.capture.pcap import PcapReader
    from analyzer.decode.fastpath import Prefilter
    from analyzer.diagnosis.store import LatestSessions
    from analyzer.engine import Engine

    workdir = tempfile.mkdtemp(prefix="smtpflow-scale-")
    fifo = os.path.join(workdir, "gateway.pcap")
    os.mkfifo(fifo)
    writer = multiprocessing.get_context("fork").Process(target=write_pcap, args=(fifo, gigabytes, smtp_share, seed), daemon=True)
    writer.start()
    samples: list[dict] = []
    try:
        with open(fifo, "rb") as fh:
            engine = Engine()
            finished = collections.Counter()
            engine.on_finished = lambda _facts: finished.update(("sessions",))
            if keep_sessions is not None:
                engine.facts = LatestSessions(maxlen=keep_sessions)  # type: ignore[assignment]
            reader = PcapReader(fh, fifo)
            if Prefilter.available:
                reader.prefilter = Prefilter(engine.selector, engine.decoder.stats)
            started = time.perf_counter()

            def sample() -> None:
                samples.append({
                    "packets": engine.decoder.stats.packets,
                    "gigabytes": reader.bytes_read / 1e9,
                    "rss_mib": rss_mib(),
                    "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                    "active_connections": len(engine.table),
                    "sessions_finished": finished["sessions"],
                    "dns_transactions": engine.dns.stats()["transactions"],
                    "seconds": time.perf_counter() - started,
                })

            def sampled(records):
                mark = every
                for rec in records:
                    yield rec
                    if engine.decoder.stats.packets >= mark:
                        sample()
                        mark += every

            engine.feed(sampled(reader))
            engine.finish()
            result = engine.result()
            sample()
            samples[-1]["records"] = len(result.records)
    finally:
        writer.join(30)
        os.unlink(fifo)
        os.rmdir(workdir)
    return samples


def report(samples: list[dict]) -> str:
    lines = [f"{'packets':>12} {'GB read':>8} {'RSS MiB':>8} {'peak MiB':>9} {'active conns':>13} {'sessions done':>14} "
             f"{'DNS txns':>9} {'seconds':>8}"]
    for s in samples:
        lines.append(f"{s['packets']:>12,} {s['gigabytes']:>8.2f} {s['rss_mib']:>8.1f} {s['peak_mib']:>9.1f} "
                     f"{s['active_connections']:>13,} {s['sessions_finished']:>14,} {s['dns_transactions']:>9,} {s['seconds']:>8.1f}")
    if len(samples) >= 3:
        # From the second sample on the table is in steady state (the last one is after the end).
        first, last = samples[1], samples[-2]
        grown = last["rss_mib"] - first["rss_mib"]
        sessions = last["sessions_finished"] - first["sessions_finished"]
        lines.append(f"from {first['packets']:,} to {last['packets']:,} packets: RSS {grown:+.1f} MiB for {sessions:,} more finished "
                     f"sessions ({grown * 2**20 / max(sessions, 1):,.0f} B each, DNS transactions included); active connections "
                     f"{min(s['active_connections'] for s in samples[1:-1]):,}-{max(s['active_connections'] for s in samples[1:-1]):,}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=4.0, help="pcap volume to stream (default 4)")
    parser.add_argument("--smtp-share", type=float, default=0.02, help="share of packets that are SMTP (default 0.02)")
    parser.add_argument("--every", type=int, default=1_000_000, help="sample RSS every this many packets")
    parser.add_argument("--keep-sessions", type=int, metavar="N", help="keep only the last N sessions' facts (as live capture does)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    samples = measure(args.gigabytes, args.smtp_share, args.seed, args.every, args.keep_sessions)
    print(report(samples))
    print(f"{samples[-1]['records']:,} session records at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
