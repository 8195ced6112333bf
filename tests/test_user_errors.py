"""Every mistake a user can make gets one clear line on stderr, no traceback, the documented exit code.

README, "Exit codes": 2 for bad usage or an input that is missing, unreadable or not a
capture; 3 when a capture was damaged (results partial, stderr says where it broke); 0 when
analysed. The CLI runs as ``python -m analyzer`` in a subprocess, with no configuration file
of the machine's own (``XDG_CONFIG_HOME`` points at an empty directory).

A reported bug in a message is first written here as ``xfail(strict=True)`` asserting what
it should say; the fix then removes the mark.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT
from crafting import Conversation, frames, plain_smtp_session, write_pcap

OK_CAPTURE = os.path.join(ROOT, "captures", "relay-denied-550.pcap")


def smtpflow(tmp_path, *args: str, user_caps: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SMTPFLOW_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "no-config")
    argv = [sys.executable, "-m", "analyzer", *args]
    if not user_caps:  # root without the capabilities that let it read any file
        argv = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *argv]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one line on stderr containing every needle, no traceback anywhere."""
    report = f"exit {result.returncode}\nstderr:\n{result.stderr}\nstdout:\n{result.stdout[:2000]}"
    assert "Traceback" not in result.stderr + result.stdout, report
    assert result.returncode == code, report
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smtpflow: "), report
    for needle in needles:
        assert needle in lines[0], report
    return lines[0]


# -- inputs that are not there, not readable, or not captures -------------------------------------
def test_missing_file(tmp_path):
    missing = str(tmp_path / "nope.pcap")
    assert_one_line(smtpflow(tmp_path, "analyze", missing), 2, missing, "no such file")


def test_directory_without_captures(tmp_path):
    (tmp_path / "notes.txt").write_text("not a capture")
    assert_one_line(smtpflow(tmp_path, "analyze", str(tmp_path)), 2, str(tmp_path), "no capture files")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to read as a user who may not")
def test_unreadable_file(tmp_path):
    path = tmp_path / "secret.pcap"
    shutil.copy(OK_CAPTURE, path)
    path.chmod(0)
    assert_one_line(smtpflow(tmp_path, "analyze", str(path), user_caps=False), 2, str(path), "permission denied")


def test_fifo_is_refused_instead_of_blocking(tmp_path):
    fifo = tmp_path / "live.pcap"
    os.mkfifo(fifo)  # no writer: opening it would block forever
    assert_one_line(smtpflow(tmp_path, "analyze", str(fifo)), 2, str(fifo), "not a regular file")


def _zip(path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(OK_CAPTURE, "capture.pcap")


NOT_CAPTURES = {
    "notes.txt": (lambda p: p.write_text("EHLO example.com\r\nMAIL FROM:<a@b>\r\n"), "(looks like text)"),
    "sessions.json": (lambda p: p.write_text('{"session_id": "C1"}\n'), "(looks like JSON)"),
    "captures.zip": (_zip, "(looks like a zip archive)"),
    "program": (lambda p: shutil.copy(sys.executable, p), "(looks like a program)"),
    "empty.pcap": (lambda p: p.write_bytes(b""), "file is empty"),
}


@pytest.mark.parametrize("name", sorted(NOT_CAPTURES))
def test_not_a_capture(tmp_path, name):
    make, says = NOT_CAPTURES[name]
    path = tmp_path / name
    make(path)
    line = assert_one_line(smtpflow(tmp_path, "analyze", str(path)), 2, str(path), says)
    if name != "empty.pcap":
        assert "not a pcap or pcapng capture" in line


# -- damaged captures: partial results, exit 3, where it broke ------------------------------------
def test_truncated_capture_gives_partial_results(tmp_path):
    data = open(OK_CAPTURE, "rb").read()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: len(data) * 2 // 3])
    result = smtpflow(tmp_path, "analyze", "--format", "jsonl", str(path))
    assert_one_line(result, 3, str(path), "damaged at byte", "results are partial")
    assert result.stdout.count("session_id") == 1  # the session before the break is there


def test_truncated_gzip_gives_partial_results(tmp_path):
    packed = gzip.compress(open(OK_CAPTURE, "rb").read())
    path = tmp_path / "cut.pcap.gz"
    path.write_bytes(packed[: len(packed) * 2 // 3])
    result = smtpflow(tmp_path, "analyze", "--format", "jsonl", str(path))
    assert_one_line(result, 3, str(path), "damaged at byte", "Compressed file ended", "results are partial")
    assert result.stdout.count("session_id") == 1


def test_gzip_cut_inside_the_file_header(tmp_path):
    path = tmp_path / "stub.pcap.gz"
    path.write_bytes(gzip.compress(open(OK_CAPTURE, "rb").read())[:16])
    assert_one_line(smtpflow(tmp_path, "analyze", str(path)), 2, str(path), "gzip stream is unreadable")


# -- captures smtpflow can read but that hold nothing for it ----------------------------------------
def test_an_unsupported_file_beside_a_good_one_is_named_once(tmp_path):
    conv = plain_smtp_session()
    zigbee = write_pcap(tmp_path / "zigbee.pcap", [(ts, bytes(8) + ip) for ts, ip in conv.packets], linktype=195)
    result = smtpflow(tmp_path, "analyze", "--format", "jsonl", zigbee, OK_CAPTURE)
    assert result.returncode == 2 and "Traceback" not in result.stderr  # an input could not be read
    assert '"outcome":"smtp_error"' in result.stdout  # the other one was
    lines = [line for line in result.stderr.splitlines() if "link type 195" in line]
    assert len(lines) == 1 and zigbee in lines[0], result.stderr


def test_unsupported_link_type_is_named(tmp_path):
    conv = plain_smtp_session()
    path = write_pcap(tmp_path / "zigbee.pcap", [(ts, bytes(8) + ip) for ts, ip in conv.packets], linktype=195)
    assert_one_line(smtpflow(tmp_path, "analyze", path), 2, path, "unsupported link type 195", "IEEE802_15_4")


def test_empty_capture_says_it_holds_no_packets(tmp_path):
    path = write_pcap(tmp_path / "header-only.pcap", [])
    result = smtpflow(tmp_path, "analyze", path)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "holds no packets" in result.stdout


def _web_only_capture(tmp_path) -> str:
    conv = Conversation(server="93.184.216.34", sport=443).handshake()
    conv.client_sends(b"\x16\x03\x01\x00\x05hello")
    return write_pcap(tmp_path / "web.pcap", frames(conv.packets))


def test_no_smtp_says_what_was_seen_instead(tmp_path):
    result = smtpflow(tmp_path, "analyze", _web_only_capture(tmp_path))
    assert result.returncode == 0 and "Traceback" not in result.stderr
    text = " ".join(result.stdout.split())
    assert "No SMTP session found" in text and "Seen instead: 4 TCP packets" in text and "--ports all" in text


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_no_smtp_in_a_machine_format_is_said_on_stderr(tmp_path, fmt):
    result = smtpflow(tmp_path, "analyze", "--format", fmt, _web_only_capture(tmp_path))
    assert result.returncode == 0
    assert "No SMTP session found" in result.stderr and "TCP packets" in result.stderr


# -- bad options ------------------------------------------------------------------------------------
@pytest.mark.parametrize("ports, says", [
    ("0", "port 0 is out of range"),
    ("70000", "port 70000 is out of range"),
    (",", "no ports given"),
    ("abc", "'abc' is not a port number"),
    ("25-30", "'25-30' is not a port number"),
])
def test_bad_ports(tmp_path, ports, says):
    line = assert_one_line(smtpflow(tmp_path, "analyze", "--ports", ports, OK_CAPTURE), 2, "--ports", says)
    assert "give e.g. 25,587 or all" in line


@pytest.mark.parametrize("endpoint, says", [
    ("300.1.2.3/8", "'300.1.2.3/8' is neither a network, an address nor a host name"),
    ("10.0.0.0/33", "'10.0.0.0/33' is neither a network, an address nor a host name"),
    ("", "empty endpoint"),
    ("=relay", "empty endpoint"),
])
def test_bad_endpoint(tmp_path, endpoint, says):
    assert_one_line(smtpflow(tmp_path, "analyze", "--endpoint", endpoint, OK_CAPTURE), 2, "--endpoint", says)


CONFIGS = {
    "invalid-toml": ("ports = [25\n", "not valid TOML"),
    "unknown-key": ("portz = [25]\n", "unknown setting(s) portz"),
    "bad-checksums": ('checksums = "maybe"\n', "checksums must be auto, verify or off"),
    "table-memory-zero": ("table_memory_mb = 0\n", "table_memory_mb must be a whole number of megabytes"),
    "table-memory-text": ('table_memory_mb = "lots"\n', "table_memory_mb must be a whole number of megabytes"),
}


def test_config_file_missing(tmp_path):
    missing = str(tmp_path / "smtpflow.toml")
    assert_one_line(smtpflow(tmp_path, "analyze", "--config", missing, OK_CAPTURE), 2, missing, "no such configuration file")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_file_invalid(tmp_path, name):
    text, says = CONFIGS[name]
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    assert_one_line(smtpflow(tmp_path, "analyze", "--config", str(path), OK_CAPTURE), 2, str(path), says)


@pytest.mark.parametrize("text", ['ports = "sometimes"\n', 'endpoints = ["300.0.0.0/8"]\n'])
def test_config_file_bad_values_name_the_file(tmp_path, text):
    path = tmp_path / "smtpflow.toml"
    path.write_text(text)
    line = assert_one_line(smtpflow(tmp_path, "analyze", "--config", str(path), OK_CAPTURE), 2, str(path))
    assert "--ports" not in line and "--endpoint" not in line


# -- outputs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "zeek"])
def test_output_directory_format_given_a_file(tmp_path, fmt):
    target = tmp_path / "sessions.out"
    target.write_text("")
    assert_one_line(smtpflow(tmp_path, "analyze", "--format", fmt, "-o", str(target), OK_CAPTURE), 2,
                    str(target), "exists and is not a directory")


def test_parquet_without_output_directory(tmp_path):
    assert_one_line(smtpflow(tmp_path, "analyze", "--format", "parquet", OK_CAPTURE), 2, "--format parquet needs -o DIRECTORY")


def test_output_file_in_a_missing_directory(tmp_path):
    target = str(tmp_path / "nowhere" / "sessions.jsonl")
    assert_one_line(smtpflow(tmp_path, "analyze", "--format", "jsonl", "-o", target, OK_CAPTURE), 2, target, "No such file or directory")


def test_follow_unknown_session(tmp_path):
    assert_one_line(smtpflow(tmp_path, "follow", OK_CAPTURE, "99"), 2, "no session number 99", OK_CAPTURE)
