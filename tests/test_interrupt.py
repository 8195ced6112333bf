"""Ctrl-C ends the reading, not the run (``capture.interrupt``): what was read is diagnosed and
written, with a warning and exit code 130, and equals the analysis of the capture up to the
time the reading stopped — serial, split over shards, or read by per-file workers."""

from __future__ import annotations

import gzip
import json
import os
import platform
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

from conftest import ROOT

CAPTURES = os.path.join(ROOT, "captures")

def generate(path: str, packets: int, smtp_share: float, seed: int) -> None:
    """The benchmark's own capture generator, in a process of its own (it holds much in memory)."""
    code = f"from generate import generate; generate({path!r}, {packets}, {smtp_share}, {seed})"
    subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "benchmarks"), check=True, timeout=300)

#: The number of the read(2) system call, to see a process waiting on its standard input.
READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(platform.machine())


def start(*args, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "analyzer", *args], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)


def smtpflow(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, cwd=ROOT, timeout=300)


def rows(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def pcap_records(path: str) -> tuple[bytes, list[tuple[int, bytes]]]:
    """The file header and (ts_ns, record bytes) of a little-endian microsecond pcap file."""
    data = open(path, "rb").read()
    assert data[:4] == b"\xd4\xc3\xb2\xa1", "these tests cut little-endian microsecond pcap files"
    pos, records = 24, []
    while pos < len(data):
        sec, usec, caplen, _ = struct.unpack_from("<IIII", data, pos)
        records.append((sec * 1_000_000_000 + usec * 1000, data[pos : pos + 16 + caplen]))
        pos += 16 + caplen
    return data[:24], records


def packets_in(path: str) -> int:
    """The records of a pcap file, counted header by header (the file is not held in memory)."""
    count = 0
    with open(path, "rb") as fh:
        fh.seek(24)
        while header := fh.read(16):
            fh.seek(struct.unpack("<IIII", header)[2], os.SEEK_CUR)
            count += 1
    return count


def waiting_on_stdin(pid: int) -> bool:
    """Whether the process sits in read(2) on file descriptor 0 (it took all it was given)."""
    try:
        fields = open(f"/proc/{pid}/syscall").read().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] == str(READ_SYSCALL) and int(fields[1], 16) == 0


def interrupt_when_waiting(proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not waiting_on_stdin(proc.pid):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "smtpflow never waited for more input"
        time.sleep(0.02)
    time.sleep(0.05)  # still waiting: it has read everything written so far
    assert waiting_on_stdin(proc.pid)
    proc.send_signal(signal.SIGINT)


def read_until(stderr: bytes) -> str:
    text = stderr.decode()
    assert "interrupted (Ctrl-C): the results cover the capture up to " in text, text
    return text.split("the capture up to ", 1)[1].split(" ", 1)[0]


# -- a pipe that never ends, cut by a real SIGINT at a known packet -----------------------------
@pytest.mark.skipif(READ_SYSCALL is None, reason="knows read(2)'s number only on x86-64 and ARM64")
@pytest.mark.parametrize("name,cut", [("gateway-mixed.pcap", 45), ("gateway-mixed.pcap", 130), ("starttls-auth-ok.pcap", 9),
                                      ("relay-denied-550.pcap", 21)])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_ctrl_c_on_a_pipe_gives_the_analysis_of_what_came(name, cut, compressed, tmp_path):
    header, records = pcap_records(os.path.join(CAPTURES, name))
    assert cut <= len(records)
    head = header + b"".join(rec for _ts, rec in records[:cut])
    reference = tmp_path / "first.pcap"
    reference.write_bytes(head)
    if compressed:  # gzip'ed on the fly: flushed, so that everything written can be inflated
        packer = zlib.compressobj(wbits=31)
        head = packer.compress(head) + packer.flush(zlib.Z_SYNC_FLUSH)
    proc = start("analyze", "-", "--format", "jsonl", "-q", stdin=subprocess.PIPE)
    try:
        proc.stdin.write(head)
        proc.stdin.flush()  # and the pipe stays open, as tcpdump's over ssh would
        interrupt_when_waiting(proc)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    expected = smtpflow("analyze", str(reference), "--format", "jsonl", "-q")
    assert expected.returncode == 0, expected.stderr
    assert rows(out) == rows(expected.stdout)
    assert rows(out), "every cut keeps a session"
    last = records[cut - 1][0]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(last // 1_000_000_000))
    assert read_until(err).startswith(stamp), err
    assert f"({cut:,} packet(s) read)" in err.decode()


@pytest.mark.skipif(READ_SYSCALL is None, reason="knows read(2)'s number only on x86-64 and ARM64")
def test_ctrl_c_before_any_capture_came_is_a_plain_interruption():
    proc = start("analyze", "-", "-q", stdin=subprocess.PIPE)
    try:
        interrupt_when_waiting(proc)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.decode().strip() == "smtpflow: interrupted"
    assert out == b""


# -- regular files, one process or several: the capture up to the stop time ---------------------
@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """An all-SMTP capture big enough to be interrupted in the middle (a few seconds' work)."""
    path = tmp_path_factory.mktemp("interrupt") / "relay.pcap"
    generate(str(path), 500_000, 1.0, 7)
    return str(path)


@pytest.fixture(scope="module")
def ring(relay, tmp_path_factory):
    """The same capture as rotated ring files."""
    directory = tmp_path_factory.mktemp("ring")
    subprocess.run(["editcap", "-c", "40000", relay, str(directory / "relay.pcap")], check=True, capture_output=True)
    return str(directory)


@pytest.fixture(scope="module")
def relay_pcapng(relay, tmp_path_factory):
    path = tmp_path_factory.mktemp("pcapng") / "relay.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", relay, str(path)], check=True, capture_output=True)
    return str(path)


def interrupted_run(*args, when) -> subprocess.CompletedProcess:
    """Run smtpflow and send it SIGINT once ``when(pid)`` says so."""
    proc = start("analyze", *args, "--format", "jsonl", "-q")
    try:
        deadline = time.monotonic() + 120
        while not when(proc.pid):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def worked(seconds: float):
    """Once the process has used this much CPU: as far into the capture on any machine."""
    return lambda pid: cpu_seconds(pid) >= seconds


def pool_workers(pid: int) -> list[int]:
    """The worker processes (spawned) of a smtpflow process."""
    try:
        children = open(f"/proc/{pid}/task/{pid}/children").read().split()
    except OSError:
        return []
    workers = []
    for child in children:
        try:
            if b"spawn_main" in open(f"/proc/{child}/cmdline", "rb").read():
                workers.append(int(child))
        except OSError:
            pass
    return workers


def cpu_seconds(pid: int) -> float:
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers_reading(pid: int) -> bool:
    """A worker has worked past its start-up (imports take about 0.4 s): it is reading a file."""
    return any(cpu_seconds(worker) >= 0.7 for worker in pool_workers(pid))


def workers_done():
    """The workers have read every file and left: the coordinator is diagnosing."""
    seen = {"workers": False, "since": None}

    def when(pid: int) -> bool:
        if pool_workers(pid):
            seen["workers"] = True
            return False
        if not seen["workers"]:
            return False
        seen["since"] = seen["since"] or time.monotonic()
        return time.monotonic() - seen["since"] >= 0.5

    return when


def up_to(path: str, until: str) -> list[dict]:
    """The serial analysis of the capture cut after ``until`` (a time smtpflow printed)."""
    seconds, _, fraction = until.rstrip("Z").partition(".")
    import calendar

    whole = calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S"))
    ns = whole * 1_000_000_000 + int((fraction or "0").ljust(9, "0")) + 1
    out = smtpflow("analyze", path, "--workers", "1", "--until", f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}",
                   "--format", "jsonl", "-q")
    assert out.returncode == 0, out.stderr
    return rows(out.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["serial", "serial pcapng", "shards", "file workers reading", "file workers done"])
def test_ctrl_c_on_files_gives_the_capture_up_to_the_stop(how, relay, ring, relay_pcapng):
    if how == "serial":
        out = interrupted_run(relay, "--workers", "1", when=worked(1.2))
    elif how == "serial pcapng":
        out = interrupted_run(relay_pcapng, "--workers", "1", when=worked(1.2))
    elif how == "shards":  # each process reads every packet but follows half the sessions: sooner
        out = interrupted_run(relay, "--workers", "2", when=worked(0.7))
    elif how == "file workers reading":
        out = interrupted_run(ring, "--workers", "2", when=workers_reading)
    else:
        out = interrupted_run(ring, "--workers", "2", when=workers_done())
    assert out.returncode == 130, out.stderr
    until = read_until(out.stderr)
    got = rows(out.stdout)
    assert got, "something was read before the interruption"
    assert got == up_to(relay, until)
    total = packets_in(relay)
    read = int(out.stderr.decode().split(" packet(s) read)")[0].rsplit("(", 1)[1].replace(",", ""))
    if how == "file workers done":
        assert read == total, "the workers had read everything"
        assert "file(s) beginning after it were left out" in out.stderr.decode()
    else:
        assert read < total, "the interruption left part of the capture unread"


# -- the Python API (a notebook's "interrupt the kernel" is a SIGINT too) -----------------------
API_SCRIPT = """
import json, sys
import analyzer
try:
    a = analyzer.analyze(sys.argv[1], workers=1, stop_on_interrupt=sys.argv[2] == "stop")
except KeyboardInterrupt:
    print("KeyboardInterrupt")
    sys.exit(0)
print(json.dumps({"capture": a.capture, "exit_code": a.exit_code, "warnings": a.warnings}))
for record in a.records:
    print(json.dumps(record))
"""


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stop", "default"])
def test_the_api_stops_the_reading_only_when_asked(mode, relay):
    proc = subprocess.Popen([sys.executable, "-c", API_SCRIPT, relay, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT)
    deadline = time.monotonic() + 120
    while cpu_seconds(proc.pid) < 1.5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    if mode == "default":
        assert out.strip() == b"KeyboardInterrupt"
        return
    head, *lines = out.splitlines()
    summary = json.loads(head)
    assert summary["capture"]["interrupted"] is True
    assert summary["exit_code"] == 130
    assert summary["warnings"][0].startswith("interrupted (Ctrl-C): the results cover the capture up to ")
    got = [json.loads(line) for line in lines]
    assert got and got == up_to(relay, summary["capture"]["read_until"])


@pytest.mark.slow
def test_a_second_ctrl_c_interrupts_at_once(relay):
    """The first Ctrl-C waits for the diagnosis; a second one ends the process as Python would."""
    proc = start("analyze", relay, "--workers", "1", "--format", "jsonl", "-q")
    deadline = time.monotonic() + 120
    while cpu_seconds(proc.pid) < 2.0:  # some thousands of sessions read: their diagnosis takes a while
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)  # two signals at once would be one: the second comes while the sessions are diagnosed
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.decode().strip() == "smtpflow: interrupted"
    assert out == b""
