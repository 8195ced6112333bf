"""A capture piped in: ``tcpdump -w - … | smtpflow analyze -`` (or zstd -dc, ssh …) reads
standard input once, as it comes, with the same results as the file."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time

import pytest

from conftest import ROOT

CAPTURES = os.path.join(ROOT, "captures")
GATEWAY = os.path.join(CAPTURES, "gateway-mixed.pcap")


def smtpflow(*args, stdin=subprocess.DEVNULL, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], stdin=stdin, capture_output=True, cwd=ROOT,
                          timeout=timeout)


def rows(out: bytes) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def from_file(*paths: str) -> list[dict]:
    out = smtpflow("analyze", *paths, "--format", "jsonl", "-q")
    assert out.returncode == 0, out.stderr
    return rows(out.stdout)


@pytest.mark.parametrize("name", ["gateway-mixed.pcap", "starttls-auth-ok.pcap", "ipv6-starttls-ok.pcap", "syn-dropped.pcap"])
def test_a_capture_on_standard_input_reads_as_the_file(name):
    path = os.path.join(CAPTURES, name)
    with open(path, "rb") as fh:
        out = smtpflow("analyze", "-", "--format", "jsonl", "-q", "--workers", "2", stdin=fh)
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == from_file(path)
    assert rows(out.stdout), "every one of these captures holds a session"


@pytest.mark.parametrize("kind", ["gzip", "pcapng"])
def test_compressed_and_pcapng_input_on_standard_input(kind, tmp_path):
    if kind == "gzip":
        data = gzip.compress(open(GATEWAY, "rb").read())
    else:
        converted = tmp_path / "gw.pcapng"
        subprocess.run(["editcap", "-F", "pcapng", GATEWAY, str(converted)], check=True, capture_output=True)
        data = converted.read_bytes()
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-", "--format", "jsonl", "-q"], input=data,
                         capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert rows(out.stdout) == from_file(GATEWAY)


def _records(path: str) -> tuple[bytes, list[bytes]]:
    with open(path, "rb") as fh:
        data = fh.read()
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        out.append(data[pos: pos + 16 + caplen])
        pos += 16 + caplen
    return data[:24], out


def test_standard_input_is_merged_with_files_in_time_order(tmp_path):
    """Two halves of a capture, one piped in, one a file: the result of the whole capture."""
    header, records = _records(GATEWAY)
    half = len(records) // 2
    first, second = tmp_path / "first.pcap", tmp_path / "second.pcap"
    first.write_bytes(header + b"".join(records[:half]))
    second.write_bytes(header + b"".join(records[half:]))
    whole = from_file(GATEWAY)
    for piped, named in ((first, second), (second, first)):
        with open(piped, "rb") as fh:
            out = smtpflow("analyze", str(named), "-", "--format", "jsonl", "-q", stdin=fh)
        assert out.returncode == 0, out.stderr
        assert rows(out.stdout) == whole


def test_a_window_stops_reading_a_pipe_that_never_ends():
    """--until on a pipe whose writer keeps it open: smtpflow reads until a packet a minute past
    the window, then answers, without waiting for the end of the stream."""
    header, records = _records(GATEWAY)
    later = []
    for record in records[:5]:
        sec = struct.unpack_from("<I", record)[0] + 3600
        later.append(struct.pack("<I", sec) + record[4:])
    last_sec, last_usec = struct.unpack_from("<II", records[-1])
    until = f"{last_sec}.{last_usec:06d}001"
    writer = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdout.buffer.write(sys.stdin.buffer.read()); sys.stdout.flush(); time.sleep(60)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        writer.stdin.write(header + b"".join(records) + b"".join(later))
        writer.stdin.close()
        started = time.monotonic()
        out = smtpflow("analyze", "-", "--until", until, "--format", "jsonl", "-q", stdin=writer.stdout, timeout=50)
        assert writer.poll() is None, "the writer is still there: the stream has not ended"
        assert out.returncode == 0, out.stderr
        assert rows(out.stdout) == from_file(GATEWAY)
        assert time.monotonic() - started < 50
    finally:
        writer.kill()
        writer.wait()


@pytest.mark.parametrize(
    "args, data, message",
    [
        (["analyze", "-"], b"", "-: standard input is empty"),
        (["analyze", "-"], b"hello, this is not a capture\n", "-: not a pcap or pcapng capture (looks like text)"),
        (["analyze", "-", "-"], None, "standard input is given more than once"),
        (["analyze", "-", "--dask", "tcp://127.0.0.1:1"], None, "cannot be read on a Dask cluster"),
    ],
)
def test_standard_input_mistakes_are_one_line(args, data, message):
    if data is None:
        data = open(GATEWAY, "rb").read()
    out = subprocess.run([sys.executable, "-m", "analyzer", *args], input=data, capture_output=True, cwd=ROOT, timeout=60)
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_named_pipe_points_to_standard_input(tmp_path):
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)
    out = smtpflow("analyze", str(fifo))
    assert out.returncode == 2
    assert b"pipe it to smtpflow as standard input, named -" in out.stderr


def test_progress_counts_every_packet_read_not_only_those_handed_on(tmp_path):
    """The progress bar hears of bytes and packets as the reading goes, also on a gateway capture
    where the C scan hands Python only a few records in a hundred."""
    from analyzer.capture import CaptureSet
    from analyzer.engine import PROGRESS_CHECK, Engine, Options, _with_progress

    path = tmp_path / "gateway.pcap"
    code = f"from generate import generate; generate({str(path)!r}, 100_000, 0.02, 3)"
    subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "benchmarks"), check=True, timeout=300)
    engine = Engine(Options())
    captures = CaptureSet([str(path)])
    captures.prefilter = engine.prefilter()
    calls = []
    handed_on = 0
    for _rec in _with_progress(captures, lambda *args: calls.append(args), engine.decoder.stats, interval=0):
        handed_on += 1
    size = os.path.getsize(path)
    *during, last = calls
    assert last == (size, size, engine.decoder.stats.packets)
    assert engine.decoder.stats.packets > 20 * handed_on, "a gateway capture: most packets are dropped in C"
    assert len(during) == handed_on // PROGRESS_CHECK
    assert all(a[0] <= b[0] and a[2] <= b[2] for a, b in zip(during, during[1:]))
    assert during[-1][2] > 20 * (PROGRESS_CHECK * len(during)), "packets read, not records handed on"
    assert 0 < during[0][0] < during[-1][0] <= size


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="F_SETPIPE_SZ is Linux's")
def test_the_pipe_is_widened_for_fast_writers():
    """A pipe holds 64 KiB by default: smtpflow asks for PIPE_BYTES, so each read can take that
    much of a fast writer's output (a gateway capture piped in read in 0.74 s instead of 1.3 s)."""
    import fcntl

    from analyzer.capture.files import PIPE_BYTES

    if int(open("/proc/sys/fs/pipe-max-size").read()) < PIPE_BYTES:
        pytest.skip("this system caps pipes below PIPE_BYTES")
    proc = subprocess.Popen([sys.executable, "-m", "analyzer", "analyze", "-", "-q"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        before = fcntl.fcntl(proc.stdin.fileno(), fcntl.F_GETPIPE_SZ)
        deadline = time.monotonic() + 60
        while fcntl.fcntl(proc.stdin.fileno(), fcntl.F_GETPIPE_SZ) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert before < PIPE_BYTES == fcntl.fcntl(proc.stdin.fileno(), fcntl.F_GETPIPE_SZ)
    finally:
        proc.kill()
        proc.wait()
