"""Time smtpflow against tcpdump, tshark, scapy and pyshark on the same captures, in one run.

    python benchmarks/run.py [--packets 1000000] [--relay-packets 200000] [--sessions-packets 2000000]
                             [--scale-gigabytes 2] [--out benchmarks/RESULTS.md]

Two captures are generated (``benchmarks/generate.py``): a gateway capture (~2 % SMTP to
Exchange Online, the rest HTTPS and DNS) and a busy-relay capture (all SMTP). Every tool
runs as a child process, started by a small launcher (``LAUNCHER``); wall time and the child's
peak RSS (``wait4``; its floor is the launcher's ~8 MB) are measured. The
slow readers (scapy full dissection, pyshark) run on a prefix of the file and their rate is
reported as measured there — extrapolating them to a million packets would take hours.
Results are printed and written to ``RESULTS.md`` with the machine they came from.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import shutil
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, "work")
PY = sys.executable


#: Starts the measured command from a fresh, small process and reports its wait4 peak RSS on
#: the pipe whose fd is its first argument. Linux carries the old memory's high-water mark across exec (and Python's subprocess
#: starts children with vfork), so a command started straight from this process — grown by
#: the memory-at-scale run — would report this process's RSS instead of its own.
LAUNCHER = """
import os, sys
import time
report = int(sys.argv[1])
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execvp(sys.argv[2], sys.argv[2:])
_pid, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - started
os.write(report, b"%d %d %r" % (usage.ru_maxrss, os.waitstatus_to_exitcode(status), elapsed))
"""


def measure_once(argv: list[str], env: dict | None = None) -> tuple[float, int, int]:
    """Run a command; return (seconds from its fork to its end, peak RSS in KiB, exit code)."""
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([PY, "-c", LAUNCHER, str(write_end), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        report = fh.read()
    proc.wait()
    if not report:
        raise RuntimeError(f"the benchmark launcher failed on {argv[0]} (exit {proc.returncode})")
    rss, code, elapsed = report.split()
    return float(elapsed), int(rss), int(code)


#: Runs per tool (the median counts), unless one run takes longer than REPEAT_BUDGET_S.
REPEATS = 5
REPEAT_BUDGET_S = 10.0


def measure(argv: list[str], env: dict | None = None) -> tuple[float, int, int]:
    """The median of up to REPEATS runs (one for slow tools): shared machines are noisy."""
    runs = [measure_once(argv, env)]
    while len(runs) < REPEATS and runs[0][0] < REPEAT_BUDGET_S:
        runs.append(measure_once(argv, env))
    runs.sort()
    seconds, _, code = runs[len(runs) // 2]
    return seconds, max(r[1] for r in runs), code


def memory_at_scale(gigabytes: float) -> str:
    """``benchmarks/scale.py``'s table, from a fresh process started by the launcher: run here,
    it counted this process's memory too (generating the captures leaves hundreds of MB)."""
    import tempfile

    read_end, write_end = os.pipe()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([PY, "-c", LAUNCHER, str(write_end), PY, os.path.join(HERE, "scale.py"), "--gigabytes",
                                 f"{gigabytes:g}", "--every", "500000"], stdout=out, stderr=subprocess.DEVNULL, pass_fds=(write_end,))
        os.close(write_end)
        with os.fdopen(read_end, "rb") as fh:
            fh.read()
        proc.wait()
        out.seek(0)
        lines = out.read().rstrip("\n").splitlines()
    return "\n".join(lines[:-1])  # the table, without the count of records at the end


def prefix(src: str, dst: str, count: int) -> int:
    """Copy the first ``count`` records of a classic pcap into ``dst``."""
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fout.write(fin.read(24))
        n = 0
        while n < count:
            head = fin.read(16)
            if len(head) < 16:
                break
            caplen = struct.unpack("<IIII", head)[2]
            fout.write(head + fin.read(caplen))
            n += 1
    return n


SCAPY_RAW = "from scapy.utils import RawPcapReader\nn=0\nfor _ in RawPcapReader({path!r}): n+=1\n"
SCAPY_FULL = "import scapy.all\nfrom scapy.utils import PcapReader\nn=0\nfor p in PcapReader({path!r}):\n    n+=1\n    p.summary()\n"
PYSHARK = "import pyshark\ncap=pyshark.FileCapture({path!r}, keep_packets=False)\nn=0\nfor p in cap:\n    n+=1\ncap.close()\n"


PURE_PYTHON = dict(os.environ, SMTPFLOW_PURE_PYTHON="1")


def tools(path: str, small: str, tiny: str) -> list[tuple[str, list[str], str, dict | None]]:
    """(name, argv, which file, environment) for every tool. ``which`` is full / small / tiny."""
    smtpflow = shutil.which("smtpflow", path=os.path.dirname(PY)) or "smtpflow"
    return [
        ("smtpflow analyze (jsonl)", [smtpflow, "analyze", "-q", "--format", "jsonl", path], "full", None),
        ("smtpflow, pure Python (no compiled code)", [smtpflow, "analyze", "-q", "--format", "jsonl", path], "full", PURE_PYTHON),
        ("tcpdump -r -w /dev/null", ["tcpdump", "-r", path, "-w", "/dev/null"], "full", None),
        ("tshark -Y smtp.response.code -T fields", ["tshark", "-n", "-r", path, "-Y", "smtp.response.code", "-T", "fields", "-e", "smtp.response.code"], "full", None),
        ("tshark -T fields (4 fields)", ["tshark", "-n", "-r", path, "-T", "fields", "-e", "frame.number", "-e", "ip.src", "-e", "tcp.flags", "-e", "smtp.response.code"], "full", None),
        ("scapy RawPcapReader (no dissection)", [PY, "-c", SCAPY_RAW.format(path=path)], "full", None),
        ("scapy PcapReader (full dissection)", [PY, "-c", SCAPY_FULL.format(path=small)], "small", None),
        ("pyshark FileCapture", [PY, "-c", PYSHARK.format(path=tiny)], "tiny", None),
    ]


def count_packets(path: str) -> int:
    n = 0
    with open(path, "rb") as fh:
        fh.read(24)
        while True:
            head = fh.read(16)
            if len(head) < 16:
                return n
            fh.seek(struct.unpack("<IIII", head)[2], 1)
            n += 1


def bench(label: str, path: str, small_n: int, tiny_n: int) -> list[dict]:
    small = path + f".first{small_n}.pcap"
    tiny = path + f".first{tiny_n}.pcap"
    prefix(path, small, small_n)
    prefix(path, tiny, tiny_n)
    sizes = {"full": os.path.getsize(path), "small": os.path.getsize(small), "tiny": os.path.getsize(tiny)}
    counts = {"full": count_packets(path), "small": count_packets(small), "tiny": count_packets(tiny)}
    results = []
    for name, argv, which, env in tools(path, small, tiny):
        if shutil.which(argv[0]) is None and not os.path.exists(argv[0]):
            print(f"  {name}: not installed, skipped", file=sys.stderr)
            continue
        seconds, rss, code = measure(argv, env)
        packets = counts[which]
        results.append({
            "capture": label, "tool": name, "packets": packets, "seconds": seconds,
            "pps": packets / seconds, "mbps": sizes[which] / seconds / 1e6, "rss_mib": rss / 1024, "exit": code,
            "on": "whole file" if which == "full" else f"first {packets:,} packets",
        })
        print(f"  {name:42s} {packets / seconds:>12,.0f} packets/s  {sizes[which] / seconds / 1e6:7.1f} MB/s  "
              f"peak RSS {rss / 1024:7.1f} MiB  ({results[-1]['on']}, exit {code})", file=sys.stderr)
    return results


def ratios(results: list[dict]) -> list[str]:
    lines = []
    by = {r["tool"]: r for r in results}
    ours = by.get("smtpflow analyze (jsonl)")
    if not ours:
        return lines
    for name, r in by.items():
        if name == ours["tool"]:
            continue
        lines.append(f"| smtpflow vs {name} | {ours['pps'] / r['pps']:.2f}× |")
    return lines


def same_answers(path: str) -> str:
    """Do smtpflow and tshark find the same clear-text SMTP replies? (Speed means nothing if
    the answers differ.) One table row: the reply codes each found, and whether they agree."""
    import collections
    import json

    smtpflow = shutil.which("smtpflow", path=os.path.dirname(PY)) or "smtpflow"
    ours: collections.Counter = collections.Counter()
    out = subprocess.run([smtpflow, "analyze", "-q", "--format", "jsonl", path], capture_output=True, text=True, check=False)
    for line in out.stdout.splitlines():
        for reply in (json.loads(line).get("smtp") or {}).get("replies") or []:
            if not reply.get("encrypted"):
                ours[reply["code"]] += 1
    theirs: collections.Counter = collections.Counter()
    if shutil.which("tshark"):
        out = subprocess.run(["tshark", "-n", "-r", path, "-Y", "smtp.response.code", "-T", "fields", "-e", "smtp.response.code"],
                             capture_output=True, text=True, check=False)
        for line in out.stdout.split():
            theirs.update(int(code) for code in line.split(",") if code.isdigit())
    def text(counts):
        return ", ".join(f"{code}×{n:,}" for code, n in sorted(counts.items())) or "none"
    return f"| {os.path.basename(path)} | {text(ours)} | {text(theirs)} | {'yes' if ours == theirs else 'NO'} |"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = []
    for argv in (["tcpdump", "--version"], ["tshark", "--version"]):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
            versions.append(out.strip())
        except (OSError, IndexError, subprocess.SubprocessError):
            pass
    try:
        import pyshark  # noqa: F401
        import scapy

        versions.append(f"scapy {scapy.__version__}")
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()} {platform.release()}; " + "; ".join(versions)


BURN = "x = 0\nfor i in range(15_000_000):\n    x += i * i\n"


def parallel_throughput() -> float:
    """How much two CPU-bound processes at once get done, relative to one (2.0 = two real cores)."""
    alone, _, _ = measure_once([PY, "-c", BURN])
    started = time.perf_counter()
    procs = [subprocess.Popen([PY, "-c", BURN]) for _ in range(2)]
    for proc in procs:
        proc.wait()
    together = time.perf_counter() - started
    return 2 * alone / together


def reading_modes(gateway: str) -> list[str]:
    """The gateway capture read other ways: gzip'ed (against zcat piped into tcpdump, and
    tshark reading the .gz itself), piped in on standard input, and only its first minute
    (``--until``: the rest is not read)."""
    gz = gateway + ".gz"
    if not os.path.exists(gz):
        print(f"compressing {gateway} …", file=sys.stderr)
        subprocess.run(f"gzip -6 -c {shlex.quote(gateway)} > {shlex.quote(gz)}", shell=True, check=True)
    smtpflow = shutil.which("smtpflow", path=os.path.dirname(PY)) or "smtpflow"
    with open(gateway, "rb") as fh:
        fh.seek(24)
        first = struct.unpack("<I", fh.read(4))[0]
    packets = count_packets(gateway)
    q_gz, q_file, q_tool = shlex.quote(gz), shlex.quote(gateway), shlex.quote(smtpflow)
    runs = [
        ("smtpflow analyze FILE.gz (jsonl)", [smtpflow, "analyze", "-q", "--format", "jsonl", gz], packets),
        ("zcat FILE.gz | tcpdump -r - -w /dev/null", ["sh", "-c", f"zcat {q_gz} | tcpdump -r - -w /dev/null 2>/dev/null"], packets),
        ("tshark -r FILE.gz -Y smtp.response.code -T fields", ["tshark", "-n", "-r", gz, "-Y", "smtp.response.code", "-T", "fields",
                                                              "-e", "smtp.response.code"], packets),
        ("cat FILE | smtpflow analyze - (jsonl)", ["sh", "-c", f"cat {q_file} | {q_tool} analyze - -q --format jsonl"], packets),
        ("cat FILE | tcpdump -r - -w /dev/null", ["sh", "-c", f"cat {q_file} | tcpdump -r - -w /dev/null 2>/dev/null"], packets),
        ("smtpflow analyze FILE --until (its first minute)", [smtpflow, "analyze", "-q", "--format", "jsonl", gateway,
                                                              "--until", str(first + 60)], None),
    ]
    rows = []
    for name, argv, whole in runs:
        print(f"reading modes: {name} …", file=sys.stderr)
        seconds, rss, code = measure(argv)
        rate = f"{whole / seconds:,.0f}" if whole else "—"
        cell = name.replace("|", "\\|")  # a pipe inside a Markdown table cell
        rows.append(f"| {cell} | {seconds:.2f} | {rate} | {rss / 1024:.0f} | {code} |")
    return ["", f"The gateway capture read other ways ({packets:,} packets; gzip -6 makes it "
            f"{os.path.getsize(gz) / 2**20:,.0f} MiB, but generated traffic compresses far better than real): "
            "gzip'ed, piped in, and only its first minute of ten (the command's peak RSS; a pipeline's "
            "is its largest process's):", "",
            "| run | seconds | packets/s | peak RSS (MiB) | exit |", "|---|---:|---:|---:|---:|"] + rows


def many_sessions(packets: int) -> list[str]:
    """Peak RSS of whole command-line runs on a capture with tens of thousands of sessions:
    what must stay bounded is the results' memory, which grows with sessions, not packets."""
    import tempfile

    from generate import generate

    path = os.path.join(WORK, f"sessions-{packets}.pcap")
    if not os.path.exists(path):
        print(f"generating {path} …", file=sys.stderr)
        generate(path, packets, 1.0, 3)
    from analyzer.diagnosis.store import MAX_SESSIONS_IN_MEMORY

    sessions = None
    rows = []
    with tempfile.TemporaryDirectory(prefix="smtpflow-bench-") as out:
        for workers in ("auto", "1"):
            for fmt, target in (("jsonl", os.path.join(out, "sessions.jsonl")), ("csv", os.path.join(out, f"csv-{workers}"))):
                print(f"many sessions, --format {fmt} --workers {workers} …", file=sys.stderr)
                seconds, rss, code = measure_once([PY, "-m", "analyzer", "analyze", path, "--format", fmt, "-o", target, "-q",
                                                   "--workers", workers])
                if fmt == "jsonl" and code == 0:
                    with open(target, encoding="utf-8") as fh:
                        sessions = sum(1 for _ in fh)
                rows.append(f"| `--format {fmt} --workers {workers}` | {seconds:.1f} | {rss / 1024:.0f} | {code} |")
    return ["", f"Many sessions: `smtpflow analyze` on an all-SMTP capture of {packets:,} generated packets and "
            f"{sessions or 0:,} sessions (`--workers auto`, the default, splits it across the cores). Past "
            f"{MAX_SESSIONS_IN_MEMORY:,} finished sessions they are spilled to a temporary file, and the outputs are "
            "written piece by piece:", "",
            "| run | seconds | peak RSS (MiB) | exit |", "|---|---:|---:|---:|"] + rows


def held_open(count: int) -> list[str]:
    """Peak RSS of whole runs on captures whose connections, all open at once, each hold as
    much as a connection can: what MAX_TABLE_BYTES is for."""
    from generate import held_open as write_held_open

    from analyzer.flows.limits import MAX_TABLE_BYTES

    rows = []
    for kind, each, what in (("handshake", 250, "waits for the rest of a 250 KB TLS Certificate message"),
                             ("recipients", 260, "has sent 300 RCPT commands, each answered")):
        path = os.path.join(WORK, f"held-open-{kind}-{count}.pcap")
        if not os.path.exists(path):
            print(f"generating {path} …", file=sys.stderr)
            write_held_open(path, count, kind)
        print(f"held open: {kind} …", file=sys.stderr)
        out = os.path.join(WORK, "held-open.jsonl")
        seconds, rss, code = measure_once([PY, "-m", "analyzer", "analyze", path, "--format", "jsonl", "-o", out, "-q"])
        early = sessions = 0
        if code == 0:
            with open(out, encoding="utf-8") as fh:
                for line in fh:
                    sessions += 1
                    early += '"end_reason":"table_full"' in line
            os.unlink(out)
        rows.append(f"| each {what} (about {each} KB) | {os.path.getsize(path) / 2**20:.0f} MB | {count * each / 1024:.0f} MB | "
                    f"{seconds:.1f} | {rss / 1024:.0f} | {sessions:,} ({early:,} `table_full`) | {code} |")
    return ["", f"Connections held open: {count:,} connections at once, each holding as much as a connection can. "
            f"Together they would hold the 'unbounded' column; the table keeps at most {MAX_TABLE_BYTES // 2**20} MB "
            "(`MAX_TABLE_BYTES`), letting the least recently active go early (`end_reason` `table_full`; a connection "
            "let go and seen again is followed anew, so there are more sessions than connections):", "",
            "| connections | capture | unbounded | seconds | peak RSS (MiB) | sessions | exit |", "|---|---:|---:|---:|---:|---:|---:|"] + rows


def floods(lookups: int, attempts: int) -> list[str]:
    """Whole runs on captures that are nothing but what a table must bound: DNS lookups of mail
    names (every one a kept row) and a scan of port 25 (every SYN a connection), against tshark."""
    from generate import dns_lookups, shared_addresses, syn_scan

    tenants = lookups // 3
    rows = []
    for name, count, write, what, formats in (
        ("dns-lookups", lookups, dns_lookups, f"{lookups:,} DNS lookups of distinct tenants' MX hosts, 4 addresses each",
         ("jsonl", "csv")),
        ("shared-addresses", tenants, shared_addresses,
         f"{tenants:,} tenants' MX hosts on the same 4 addresses, a session to each", ("jsonl",)),
        ("syn-scan", attempts, syn_scan, f"a scan of port 25: {attempts:,} SYNs at 2,000/s, one in three refused",
         ("jsonl", "table")),
    ):
        path = os.path.join(WORK, f"{name}-{count}.pcap")
        if not os.path.exists(path):
            print(f"generating {path} …", file=sys.stderr)
            write(path, count)
        packets = count_packets(path)
        print(f"floods: {name} …", file=sys.stderr)
        tshark_s, _, _ = measure_once(["tshark", "-r", path, "-Y", "smtp.response.code", "-T", "fields", "-e", "smtp.response.code"])
        for fmt in formats:
            out = os.path.join(WORK, f"{name}-out")
            argv = [PY, "-m", "analyzer", "analyze", path, "-q", "--format", fmt]
            argv += ["-o", out] if fmt != "table" else []
            seconds, rss, code = measure_once(argv)
            subprocess.run(["rm", "-rf", out], check=False)
            rows.append(f"| {what} | {packets:,} | `--format {fmt}` | {seconds:.1f} | {tshark_s:.1f} | {rss / 1024:.0f} | {code} |")
    return ["", "Floods: captures of nothing but what the tables must bound (peak RSS of the whole command; "
            "tshark -Y smtp.response.code on the same file for scale):", "",
            "| capture | packets | run | seconds | tshark seconds | peak RSS (MiB) | exit |", "|---|---:|---|---:|---:|---:|---:|"] + rows


def _native_state() -> str:
    """Whether the smtpflow that was timed ran its compiled modules (as a child process would)."""
    code = "import analyzer.native as n; print('in use' if n.IN_USE else 'not in use: ' + n.REASON)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="gateway capture size")
    parser.add_argument("--relay-packets", type=int, default=200_000, help="all-SMTP capture size")
    parser.add_argument("--scale-gigabytes", type=float, default=2.0, help="volume streamed by the memory-at-scale run (0: skip)")
    parser.add_argument("--sessions-packets", type=int, default=2_000_000,
                        help="size of the many-sessions capture for the peak-memory run (0: skip)")
    parser.add_argument("--held-open", type=int, default=2000,
                        help="connections in the held-open captures for the table's memory budget (0: skip)")
    parser.add_argument("--dns-lookups", type=int, default=60_000, help="lookups in the DNS flood capture (0: skip)")
    parser.add_argument("--scan-attempts", type=int, default=300_000, help="SYNs in the port-scan capture (0: skip)")
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    args = parser.parse_args(argv)
    os.makedirs(WORK, exist_ok=True)
    sys.path.insert(0, HERE)
    from generate import generate

    gateway = os.path.join(WORK, f"gateway-{args.packets}.pcap")
    relay = os.path.join(WORK, f"relay-{args.relay_packets}.pcap")
    if not os.path.exists(gateway):
        print(f"generating {gateway} …", file=sys.stderr)
        generate(gateway, args.packets, 0.02, 1)
    if not os.path.exists(relay):
        print(f"generating {relay} …", file=sys.stderr)
        generate(relay, args.relay_packets, 1.0, 2)
    print("gateway capture (~2 % SMTP):", file=sys.stderr)
    results = bench("gateway", gateway, 20_000, 2_000)
    print("busy relay capture (all SMTP):", file=sys.stderr)
    results += bench("relay", relay, 20_000, 2_000)

    lines = [
        "# Benchmark results",
        "",
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `make bench` (`benchmarks/run.py`) on: {machine()}.",
        f"Each tool ran as a child process, up to {REPEATS} times (the median counts; tools slower than {REPEAT_BUDGET_S:g} s once); "
        "peak RSS is the child's (`wait4`). Slow readers ran on a prefix of the file.",
        f"smtpflow's compiled modules (mypyc, `analyzer/native.py`): {_native_state()}.",
        "",
        "| capture | tool | measured on | packets/s | MB/s | peak RSS (MiB) |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['capture']} | {r['tool']} | {r['on']} | {r['pps']:,.0f} | {r['mbps']:.1f} | {r['rss_mib']:.0f} |")
    for label in ("gateway", "relay"):
        lines += ["", f"Ratios on the {label} capture (packets/s of smtpflow ÷ packets/s of the other tool):", "", "| comparison | ratio |", "|---|---:|"]
        lines += ratios([r for r in results if r["capture"] == label])
    speedup = parallel_throughput()
    lines += ["", f"Two CPU-bound processes at once ran at {speedup:.2f}× the throughput of one on this machine "
              f"({os.cpu_count()} CPUs reported): parallel work (`--workers`, the read-ahead thread) gains only what that allows."]
    if args.scale_gigabytes > 0:
        print(f"memory at scale ({args.scale_gigabytes:g} GB streamed) …", file=sys.stderr)
        lines += ["", f"Memory at scale (`benchmarks/scale.py --gigabytes {args.scale_gigabytes:g}`): a steady gateway capture "
                  "streamed through the engine, RSS sampled as it goes.", "", "```", memory_at_scale(args.scale_gigabytes), "```"]
    lines += reading_modes(gateway)
    if args.sessions_packets > 0:
        lines += many_sessions(args.sessions_packets)
    if args.held_open > 0:
        lines += held_open(args.held_open)
    if args.dns_lookups > 0 and args.scan_attempts > 0:
        lines += floods(args.dns_lookups, args.scan_attempts)
    # After the memory run, which measures this process: the outputs compared here are big.
    lines += ["", "The same answers? Clear-text SMTP replies found by smtpflow and by `tshark -Y smtp.response.code`:", "",
              "| capture | smtpflow | tshark | same |", "|---|---|---|---|"]
    lines += [same_answers(path) for path in (gateway, relay)]
    text = "\n".join(lines) + "\n"
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
