"""--since/--until: only the packets of a time window are read, as if the capture had been cut
to it with ``editcap -A SINCE -B UNTIL`` (the reference: Wireshark's own tool)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import analyzer
from analyzer.capture.window import NS, WINDOW_SLACK_S, TimeError, TimeWindow, parse_time, time_text
from conftest import ROOT, analyse_twice

CAPTURES = os.path.join(ROOT, "captures")
#: Captures with several sessions spread over time, and some of one session each.
CUT_CAPTURES = ["gateway-mixed.pcap", "syn-dropped.pcap", "starttls-auth-ok.pcap", "relay-denied-550.pcap",
                "ipv6-starttls-ok.pcap", "dns-nxdomain.pcap", "rst-forged-by-router.pcap"]


# -- reading times ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, expected",
    [
        ("1764252300", 1764252300 * NS),
        ("1764252300.25", 1764252300 * NS + 250_000_000),
        ("1764252300.000000001", 1764252300 * NS + 1),
        ("2025-11-27T14:05:00Z", 1764252300 * NS),
        ("2025-11-27T14:05:00z", 1764252300 * NS),
        ("2025-11-27 14:05:00", 1764252300 * NS),  # no offset: UTC, as smtpflow prints times
        ("2025-11-27T14:05", 1764252300 * NS),
        ("2025-11-27T15:05:00+01:00", 1764252300 * NS),
        ("2025-11-27T14:05:00.123456789Z", 1764252300 * NS + 123_456_789),
        ("2025-11-27T14:05:00.5+00:00", 1764252300 * NS + 500_000_000),
        ("2025-11-27", 1764201600 * NS),
        ("  2025-11-27T14:05:00Z ", 1764252300 * NS),
    ],
)
def test_times_are_read_in_every_documented_form(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["yesterday", "", "14:05", "2025-13-01", "2025-11-27T25:00Z", "-5", "1e9",
                                  "1969-12-31T23:59:59Z", "99999999999", "2025-11-27T14:05:00+25:00"])
def test_what_is_not_a_time_is_refused_with_the_forms_accepted(text):
    with pytest.raises(TimeError) as caught:
        parse_time(text)
    assert "ISO 8601" in str(caught.value) or "out of range" in str(caught.value)


def test_times_are_shown_in_utc_iso_8601():
    assert time_text(1764252300 * NS) == "2025-11-27T14:05:00Z"
    assert time_text(1764252300 * NS + 250_000_000) == "2025-11-27T14:05:00.250000Z"


def test_a_window_takes_datetimes_numbers_and_text_and_refuses_an_empty_one():
    naive = dt.datetime(2025, 11, 27, 14, 5)
    aware = dt.datetime(2025, 11, 27, 15, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert TimeWindow.of(naive, None).since == TimeWindow.of(aware, None).since == 1764252300 * NS
    assert TimeWindow.of(1764252300, "2025-11-27T14:06Z") == TimeWindow(1764252300 * NS, 1764252360 * NS)
    assert TimeWindow.of(1764252300.5, None).since == 1764252300 * NS + 500_000_000
    assert TimeWindow.of(None, None) is None
    for bad in (True, float("nan"), object()):
        with pytest.raises(TimeError):
            TimeWindow.of(bad, None)
    with pytest.raises(TimeError, match="empty"):
        TimeWindow.of(1764252360, 1764252300)
    with pytest.raises(TimeError, match="empty"):
        TimeWindow.of(1764252300, 1764252300)
    since, until, stop = TimeWindow(10, 20).bounds
    assert (since, until, stop) == (10, 20, 20 + WINDOW_SLACK_S * NS)


# -- the reference: editcap ------------------------------------------------------------------
def _times(path: str) -> list[int]:
    """Every record's timestamp (ns) of a little-endian microsecond pcap."""
    with open(path, "rb") as fh:
        data = fh.read()
    assert struct.unpack_from("<I", data)[0] == 0xA1B2C3D4
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, caplen, _wirelen = struct.unpack_from("<IIII", data, pos)
        out.append(sec * NS + usec * 1000)
        pos += 16 + caplen
    return out


def _window_inside(path: str, first: float = 0.3, last: float = 0.7) -> tuple[str, str]:
    """A window over the middle of a capture, as editcap takes it (whole microseconds, UTC)."""
    times = _times(path)
    t0, t1 = min(times), max(times)
    since = t0 + int((t1 - t0) * first) // 1000 * 1000
    until = t0 + int((t1 - t0) * last) // 1000 * 1000
    return time_text(since), time_text(until)


def _editcap(path: str, since: str, until: str, out: str) -> str:
    subprocess.run(["editcap", "-F", "pcap", "-A", since, "-B", until, path, out], check=True, capture_output=True)
    return out


def _rows(analysis) -> list[str]:
    return [json.dumps(record, sort_keys=True) for record in analysis.records]


needs_editcap = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) is not installed")


@needs_editcap
@pytest.mark.parametrize("name", CUT_CAPTURES)
def test_a_window_reads_what_editcap_cuts(name, tmp_path):
    path = os.path.join(CAPTURES, name)
    since, until = _window_inside(path)
    cut = _editcap(path, since, until, str(tmp_path / "cut.pcap"))
    windowed = analyzer.analyze(path, since=since, until=until)
    reference = analyzer.analyze(cut)
    assert _rows(windowed) == _rows(reference)
    assert windowed.stats["packets"] == reference.stats["packets"] == len(_times(cut))
    assert windowed.stats["packets"] + windowed.capture["outside_window"] == len(_times(path))
    assert windowed.dns.to_dict("records") == reference.dns.to_dict("records")
    assert windowed.capture["window"] == {"since": since, "until": until}


@needs_editcap
def test_the_window_holds_sessions_cut_at_both_ends(tmp_path):
    """The mixed gateway capture's window cuts sessions in the middle: those read as the cut file
    reads them (a connection whose start is missing), not as the whole capture would."""
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path, 0.45, 0.55)
    windowed = analyzer.analyze(path, since=since, until=until)
    whole = analyzer.analyze(path)
    reference = analyzer.analyze(_editcap(path, since, until, str(tmp_path / "cut.pcap")))
    assert _rows(windowed) == _rows(reference) != _rows(whole)
    assert windowed.records, "the window should hold part of some session"


@needs_editcap
@pytest.mark.parametrize("kind", ["pcapng", "gzip", "nanoseconds"])
def test_a_window_reads_other_formats_as_editcap_cuts_them(kind, tmp_path):
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path)
    if kind == "pcapng":
        source = str(tmp_path / "gw.pcapng")
        subprocess.run(["editcap", "-F", "pcapng", path, source], check=True, capture_output=True)
    elif kind == "nanoseconds":
        source = str(tmp_path / "gw-ns.pcap")
        subprocess.run(["editcap", "-F", "nsecpcap", path, source], check=True, capture_output=True)
    else:
        source = str(tmp_path / "gw.pcap.gz")
        with open(path, "rb") as src, gzip.open(source, "wb") as dst:
            dst.write(src.read())
    windowed = analyzer.analyze(source, since=since, until=until)
    reference = analyzer.analyze(_editcap(path, since, until, str(tmp_path / "cut.pcap")))
    assert _rows(windowed) == _rows(reference)
    assert windowed.stats["packets"] == reference.stats["packets"]


@needs_editcap
def test_the_c_scan_and_python_cut_alike(tmp_path):
    """Without the C hot path every record goes through the Python readers: same window."""
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path)
    reference = analyzer.analyze(_editcap(path, since, until, str(tmp_path / "cut.pcap")))
    env = dict(os.environ, SMTPFLOW_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path, "--since", since, "--until", until,
                          "--format", "jsonl", "-q"], capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    pure = [json.dumps(json.loads(line), sort_keys=True) for line in out.stdout.splitlines()]
    assert pure == _rows(reference)


@needs_editcap
def test_split_and_parallel_runs_read_the_same_window(tmp_path):
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path)
    serial = analyzer.analyze(path, since=since, until=until)
    split = analyzer.analyze(path, since=since, until=until, workers=2)  # one capture, split by connection
    assert _rows(split) == _rows(serial)
    # Two rotated files, read by two worker processes and merged.
    first, second = _rotated(path, tmp_path)
    both = analyzer.analyze([first, second], since=since, until=until, workers=2)
    assert _rows(both) == _rows(serial)
    assert both.capture["outside_window"] == serial.capture["outside_window"]


# -- reading stops past the window ------------------------------------------------------------
def _records(path: str) -> list[tuple[int, int, bytes]]:
    with open(path, "rb") as fh:
        data = fh.read()
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, usec, caplen, wirelen = struct.unpack_from("<IIII", data, pos)
        out.append((sec * 1_000_000 + usec, wirelen, data[pos + 16: pos + 16 + caplen]))
        pos += 16 + caplen
    return out


def _write(path: str, records, cut_last: bool = False) -> str:
    with open(os.path.join(CAPTURES, "gateway-mixed.pcap"), "rb") as fh:
        header = fh.read(24)
    with open(path, "wb") as fh:
        fh.write(header)
        for n, (usec, wirelen, frame) in enumerate(records):
            blob = struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), wirelen) + frame
            if cut_last and n == len(records) - 1:
                blob = blob[: len(blob) // 2]  # the file ends inside its last record: damage
            fh.write(blob)
    return path


def _rotated(path: str, tmp_path) -> tuple[str, str]:
    records = _records(path)
    half = len(records) // 2
    return (_write(str(tmp_path / "trace.pcap"), records[:half]), _write(str(tmp_path / "trace.pcap1"), records[half:]))


def test_reading_stops_a_minute_past_the_window():
    """Packets an hour later, the file damaged at its end: a window over the first hour stops
    reading before it gets there (no damage seen), in C and in Python alike."""
    records = _records(os.path.join(CAPTURES, "gateway-mixed.pcap"))
    later = [(usec + 3600 * 1_000_000, wirelen, frame) for usec, wirelen, frame in records]
    path = _write(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"smtpflow-window-{os.getpid()}.pcap"),
                  records + later, cut_last=True)
    try:
        end = time_text((records[-1][0] + 1) * 1000)
        whole = analyzer.analyze(path)
        assert whole.damage, "the damaged end is read without a window"
        windowed = analyzer.analyze(path, until=end)
        assert not windowed.damage
        assert _rows(windowed) == _rows(analyzer.analyze(os.path.join(CAPTURES, "gateway-mixed.pcap")))
        assert windowed.capture["outside_window"] == 0  # it stopped at the first later packet
        env = dict(os.environ, SMTPFLOW_PURE_PYTHON="1")
        pure = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path, "--until", end, "--format", "jsonl", "-q"],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        assert pure.returncode == 0 and "damaged" not in pure.stderr and "cut short" not in pure.stderr
        # A window ending less than a minute before the later packets reads them (and the damage).
        near = time_text((records[0][0] + 3600 * 1_000_000 - 30 * 1_000_000) * 1000)
        assert analyzer.analyze(path, until=near).damage
    finally:
        os.unlink(path)


def test_a_file_beginning_past_the_window_is_not_read(tmp_path):
    """Rotated files: the second begins an hour later and is broken after its first record; a
    window over the first file never opens it for reading."""
    records = _records(os.path.join(CAPTURES, "gateway-mixed.pcap"))
    first = _write(str(tmp_path / "ring_00001.pcap"), records)
    later = [(usec + 3600 * 1_000_000, wirelen, frame) for usec, wirelen, frame in records[:3]]
    second = _write(str(tmp_path / "ring_00002.pcap"), later, cut_last=True)
    end = time_text((records[-1][0] + 1) * 1000)
    windowed = analyzer.analyze(str(tmp_path), until=end)
    assert windowed.capture["skipped_files"] == [second]
    assert not windowed.damage
    assert _rows(windowed) == _rows(analyzer.analyze(first))
    assert analyzer.analyze(str(tmp_path)).damage  # read whole, the second file's end is damage


# -- the command line ------------------------------------------------------------------------
def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True, cwd=ROOT)


def test_the_command_line_says_what_the_window_left_out():
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path)
    out = _cli("analyze", path, "--since", since, "--until", until)
    assert out.returncode == 0, out.stderr
    assert f"only the packets from {since} to {until} were read" in " ".join(out.stdout.split())
    empty = _cli("analyze", path, "--since", "2099-01-01", "--format", "jsonl")
    assert empty.returncode == 0 and empty.stdout == ""
    assert "No packet of the capture is in the time window" in empty.stderr
    assert "packet(s) outside it were left out" in empty.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--since", "yesterday"], "argument --since: 'yesterday' is not a time"),
        (["--until", "2025-11-27T99:00"], "argument --until"),
        (["--since", "2026-01-02", "--until", "2026-01-01"], "the window is empty"),
    ],
)
def test_a_bad_window_is_a_usage_error(args, message):
    out = _cli("analyze", os.path.join(CAPTURES, "syn-dropped.pcap"), *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_follow_and_report_take_the_window_too(tmp_path):
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    since, until = _window_inside(path)
    windowed = analyzer.analyze(path, since=since, until=until)
    first = windowed.records[0]
    follow = _cli("follow", path, first["session_id"], "--since", since, "--until", until)
    assert follow.returncode == 0, follow.stderr
    report = _cli("report", path, "-o", str(tmp_path / "rep"), "--since", since, "--until", until, "-q")
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "rep" / "report.html").read_text()
    assert f"only the packets from {since} to {until} were read" in page


# -- C and Python alike, on any window ---------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(CUT_CAPTURES + ["pipelining-bdat.pcap", "implicit-tls-465-ok.pcap"]),
       pcapng=st.booleans(), first=st.floats(0, 1), length=st.floats(0, 1), exact=st.booleans())
def test_the_c_scan_and_the_python_readers_keep_the_same_packets(tmp_path_factory, name, pcapng, first, length, exact):
    """Random windows, their ends on a packet's very timestamp or between two: the C scan's
    bulk cut and the Python readers' give the same records, events and counters."""
    from analyzer.decode import fastpath

    path = os.path.join(CAPTURES, name)
    times = sorted(set(_times(path)))
    since = times[int(first * (len(times) - 1))]
    until = times[min(len(times) - 1, int((first + length) * (len(times) - 1)))] + (0 if exact else 1)
    if until <= since:
        until = since + 1
    if pcapng:
        converted = str(tmp_path_factory.mktemp("ng") / "c.pcapng")
        subprocess.run(["editcap", "-F", "pcapng", path, converted], check=True, capture_output=True)
        path = converted
    as_text = "{}.{:09d}".format  # seconds since the epoch, to the nanosecond
    fast, plain = analyse_twice(path, [(fastpath.Prefilter, "available")], since=as_text(since // NS, since % NS),
                                until=as_text(until // NS, until % NS))
    assert fast == plain
