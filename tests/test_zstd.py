"""zstd-compressed captures (``tcpdump -z zstd``, logrotate): read as the plain file is, frames
one after another, as a file or piped in; a file cut short or damaged gives what came before and
says where — although zstd's own decoder just stops giving data at a cut (``ZstdFrames``)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys

import pytest

import analyzer
from analyzer.capture import CaptureError, open_capture
from analyzer.capture.files import ZstdFrames
from conftest import ROOT

zstandard = pytest.importorskip("zstandard")

CAPTURES = os.path.join(ROOT, "captures")
SOME = ["gateway-mixed.pcap", "starttls-auth-ok.pcap", "ipv6-starttls-ok.pcap", "syn-dropped.pcap"]


def rows(analysis) -> list[str]:
    return [json.dumps(record, sort_keys=True, default=str) for record in analysis.records]


def compressed(data: bytes, **options) -> bytes:
    return zstandard.ZstdCompressor(**options).compress(data)


@pytest.mark.parametrize("name", SOME)
@pytest.mark.parametrize("options", [{}, {"level": 19, "write_checksum": True}, {"write_content_size": False}],
                         ids=["default", "checksum", "no-size"])
def test_a_zstd_capture_reads_as_the_plain_one(name, options, tmp_path):
    path = os.path.join(CAPTURES, name)
    packed = tmp_path / (name + ".zst")
    packed.write_bytes(compressed(open(path, "rb").read(), **options))
    analysis = analyzer.analyze(str(packed))
    assert analysis.capture["formats"][str(packed)] == "pcap (zstd)"
    assert rows(analysis) == rows(analyzer.analyze(path)) and analysis.records
    assert analysis.exit_code == 0


def test_frames_one_after_another_and_skippable_frames(tmp_path):
    """The file in three frames (one of them the stream's own metadata, skippable), as a tool
    that compresses as it goes writes it."""
    data = open(os.path.join(CAPTURES, "gateway-mixed.pcap"), "rb").read()
    third = len(data) // 3
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"notes"
    packed = tmp_path / "framed.pcap.zst"
    packed.write_bytes(compressed(data[:third]) + skippable + compressed(data[third : 2 * third], level=1)
                       + compressed(data[2 * third :], write_checksum=True))
    assert rows(analyzer.analyze(str(packed))) == rows(analyzer.analyze(os.path.join(CAPTURES, "gateway-mixed.pcap")))


@pytest.mark.skipif(shutil.which("zstd") is None, reason="the zstd command is not installed")
def test_what_the_zstd_command_writes(tmp_path):
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    out = tmp_path / "cli.pcap.zst"
    subprocess.run(["zstd", "-q", "-T2", "--long=24", "-o", str(out), path], check=True)
    assert rows(analyzer.analyze(str(out))) == rows(analyzer.analyze(path))


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    """A generated all-SMTP capture (the benchmark's generator): some 6 MB, many zstd blocks."""
    path = tmp_path_factory.mktemp("zstd") / "relay.pcap"
    code = f"from generate import generate; generate({str(path)!r}, 30_000, 1.0, 11)"
    subprocess.run([sys.executable, "-c", code], cwd=os.path.join(ROOT, "benchmarks"), check=True, timeout=300)
    return str(path)


def test_a_cut_zstd_file_gives_what_came_before_and_says_where(relay, tmp_path):
    packed = compressed(open(relay, "rb").read())
    total = analyzer.analyze(relay).stats["packets"]
    for fraction in (0.3, 0.6, 0.95):
        cut = tmp_path / f"cut-{fraction}.pcap.zst"
        cut.write_bytes(packed[: int(len(packed) * fraction)])
        analysis = analyzer.analyze(str(cut))
        assert analysis.exit_code == 3
        assert "zstd: the stream is cut short inside a frame" in analysis.damage[0]
        assert 0.8 * fraction * total < analysis.stats["packets"] < total


def test_a_zstd_file_with_no_whole_block_is_refused_with_the_reason(tmp_path):
    packed = compressed(open(os.path.join(CAPTURES, "syn-dropped.pcap"), "rb").read())
    cut = tmp_path / "tiny.pcap.zst"
    cut.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(CaptureError, match="cut short inside a frame"):
        open_capture(str(cut))


def test_a_damaged_zstd_file_gives_what_came_before(relay, tmp_path):
    packed = bytearray(compressed(open(relay, "rb").read(), write_checksum=True))
    packed[len(packed) * 2 // 3] ^= 0x5A
    damaged = tmp_path / "damaged.pcap.zst"
    damaged.write_bytes(bytes(packed))
    analysis = analyzer.analyze(str(damaged))
    assert analysis.exit_code == 3 and "zstd" in analysis.damage[0]
    assert analysis.stats["packets"] > 0.5 * analyzer.analyze(relay).stats["packets"]


def test_zstd_piped_in(tmp_path):
    path = os.path.join(CAPTURES, "gateway-mixed.pcap")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-", "--format", "jsonl", "-q"],
                         input=compressed(open(path, "rb").read()), capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [json.loads(line) for line in out.stdout.splitlines()] == json.loads(json.dumps(list(analyzer.analyze(path).records)))


# -- the frame follower, table-driven ---------------------------------------------------------------
FRAMES = {
    "compressed blocks": lambda rng: compressed(b"".join(rng.choice([b"EHLO a\r\n", b"250 ok\r\n"]) for _ in range(40_000))),
    "raw blocks (random bytes)": lambda rng: compressed(rng.randbytes(300_000)),
    "RLE blocks (zeros)": lambda rng: compressed(bytes(400_000)),
    "checksum, no size": lambda rng: compressed(rng.randbytes(1000) * 50, write_checksum=True, write_content_size=False),
    "empty frame": lambda rng: compressed(b""),
    "skippable": lambda rng: (0x184D2A5F).to_bytes(4, "little") + (3).to_bytes(4, "little") + b"abc",
}


@pytest.mark.parametrize("kind", FRAMES)
def test_frames_are_followed_to_their_very_end(kind):
    frame = FRAMES[kind](random.Random(kind))
    stream = frame + compressed(b"next")
    ends = {len(frame), len(stream)}
    for cut in sorted({*range(0, min(len(stream), 600)), *range(0, len(stream), 997), *ends, len(frame) - 1, len(stream) - 1}):
        follower = ZstdFrames()
        for start in range(0, cut, 4093):  # fed in pieces, as reads come
            follower.feed(stream[start : min(cut, start + 4093)])
        assert follower.between_frames == (cut in ends or cut == 0), cut
        assert not follower.broken


class Trickle:
    """A pipe that gives a few bytes per read."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data, self._pos, self._rng = data, 0, random.Random(seed)

    def read1(self, size: int = -1) -> bytes:
        take = min(self._rng.randint(1, 700), size if size > 0 else 700)
        out = self._data[self._pos : self._pos + take]
        self._pos += len(out)
        return out

    read = read1


@pytest.mark.parametrize("seed", range(3))
def test_a_trickling_pipe_is_read_to_its_end(relay, seed):
    """A read of the source that completes no block gives nothing yet: that is not the end."""
    from analyzer.capture.files import ZstdStream

    data = open(relay, "rb").read()[: 3 << 20]
    stream = ZstdStream(Trickle(compressed(data, level=1), seed), "pipe")
    parts = []
    while chunk := stream.read1(1 << 16):
        parts.append(chunk)
    assert b"".join(parts) == data
