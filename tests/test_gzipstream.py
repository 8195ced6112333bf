"""capture/gzipstream.py against Python's gzip module: the same bytes out of every kind of gzip
file, whole or damaged (every byte before the damage, then the error), with ISA-L's inflate
and with zlib's."""

from __future__ import annotations

import gzip
import io
import os
import random
import struct
import subprocess
import zlib

import pytest

from analyzer.capture.gzipstream import CUT_MESSAGE, INFLATE_ERRORS, BadGzip, GzipStream, ZlibInflate
from conftest import ROOT

try:
    from isal import igzip_lib, isal_zlib
except ImportError:  # pragma: no cover - where no isal wheel exists
    igzip_lib = isal_zlib = None


def _isal():
    return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_DEFLATE)


#: (a new raw inflate, its CRC-32) for each backend.
BACKENDS = [pytest.param((ZlibInflate, zlib.crc32), id="zlib"),
            pytest.param((_isal, isal_zlib and isal_zlib.crc32), id="isal",
                         marks=pytest.mark.skipif(isal_zlib is None, reason="isal is not installed"))]


def stream(raw, backend) -> GzipStream:
    new_inflate, crc32 = backend
    return GzipStream(raw, new_inflate, crc32)
DATA = open(os.path.join(ROOT, "captures", "gateway-mixed.pcap"), "rb").read()


def member(data: bytes, flags: int = 0, level: int = 6) -> bytes:
    """A gzip member with the header fields ``flags`` asks for (FHCRC, FEXTRA, FNAME, FCOMMENT)."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    header = b"\x1f\x8b\x08" + bytes([flags]) + b"\x00\x00\x00\x00\x00\xff"
    if flags & 0x04:
        header += struct.pack("<H", 6) + b"AB\x02\x00xy"
    if flags & 0x08:
        header += b"capture.pcap\x00"
    if flags & 0x10:
        header += b"a comment\x00"
    if flags & 0x02:
        header += struct.pack("<H", zlib.crc32(header) & 0xFFFF)
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def drain(stream, seed: int = 0) -> tuple[bytes, BaseException | None]:
    """Read with sizes as the capture readers use them (12, 64 KiB, 1 MiB …) until the end or
    an error; what came, and the error."""
    sizes = random.Random(seed)
    out = []
    try:
        while True:
            data = stream.read(sizes.choice([1, 12, 4096, 65536, 1 << 20]))
            if not data:
                return b"".join(out), None
            out.append(data)
    except (EOFError, OSError, *INFLATE_ERRORS) as exc:
        return b"".join(out), exc


WHOLE = {
    "plain": member(DATA),
    "every header field": member(DATA, 0x02 | 0x04 | 0x08 | 0x10),
    "name only (gzip FILE)": member(DATA, 0x08),
    "stored blocks": member(DATA, level=0),
    "two members (cat a.gz b.gz)": member(DATA) + member(DATA[:1000], 0x08),
    "an empty member first": member(b"") + member(DATA),
    "zero padding after": member(DATA) + b"\x00" * 512,
    "zero padding between": member(DATA) + b"\x00" * 3 + member(DATA),
    "gzip.compress": gzip.compress(DATA),
    "empty file's member": member(b""),
}


@pytest.mark.parametrize("inflate", BACKENDS)
@pytest.mark.parametrize("name", sorted(WHOLE))
def test_whole_files_give_what_gzip_gives(inflate, name):
    packed = WHOLE[name]
    for seed in range(3):
        got, error = drain(stream(io.BytesIO(packed), inflate), seed)
        assert error is None
        assert got == gzip.decompress(packed)


def _damaged() -> dict[str, bytes]:
    packed = member(DATA)
    flipped = bytearray(packed)
    flipped[len(packed) // 3] ^= 0x40
    out = {f"cut at {n}": packed[:n] for n in (2, 5, 11, 40, len(packed) // 3, len(packed) // 2, len(packed) - 8, len(packed) - 3)}
    out["a flipped bit"] = bytes(flipped)
    out["a wrong CRC"] = packed[:-8] + b"\0\0\0\0" + packed[-4:]
    out["a wrong length"] = packed[:-4] + b"\1\0\0\0"
    out["garbage after"] = packed + b"garbage"
    out["a second member cut"] = packed + member(DATA)[:500]
    return out


DAMAGED = _damaged()


@pytest.mark.parametrize("inflate", BACKENDS)
@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damage_comes_after_every_byte_before_it(inflate, name):
    """What came before the damage is the data's beginning, and at least as much of it as
    gzip.GzipFile read one step at a time gives; then the error."""
    packed = DAMAGED[name]
    reference = gzip.GzipFile(fileobj=io.BytesIO(packed))
    expected = []
    try:
        while chunk := reference.read1(65536):
            expected.append(chunk)
    except (EOFError, OSError, zlib.error):
        pass
    expected_bytes = b"".join(expected)
    for seed in range(3):
        got, error = drain(stream(io.BytesIO(packed), inflate), seed)
        assert error is not None, "damage must be reported"
        assert len(got) >= len(expected_bytes)
        if name != "a flipped bit":  # a flipped bit may inflate to other bytes before its CRC fails
            assert DATA.startswith(got[: len(DATA)]) or got.startswith(DATA)
        if name.startswith("cut"):
            assert isinstance(error, EOFError) and str(error) == CUT_MESSAGE
        if name in ("a wrong CRC", "a wrong length", "garbage after"):
            assert isinstance(error, BadGzip)
            assert got == DATA  # the member's data was handed on before its trailer was read


@pytest.mark.parametrize("inflate", BACKENDS)
def test_reading_from_a_pipe_as_it_comes(inflate):
    """From a pipe, read1 gives what has come so far: the stream still comes out whole."""
    packed = member(DATA, 0x08) + member(DATA)
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=write_end)
    os.close(write_end)
    try:
        writer.stdin.write(packed)
        writer.stdin.close()
        with open(read_end, "rb") as pipe:
            got, error = drain(stream(pipe, inflate))
    finally:
        writer.wait()
    assert error is None and got == DATA + DATA


def test_the_gzip_tool_s_files_are_read(tmp_path):
    """A file written by gzip(1) itself, with its name and time in the header."""
    path = tmp_path / "capture.pcap"
    path.write_bytes(DATA)
    subprocess.run(["gzip", "-9", str(path)], check=True)
    with open(tmp_path / "capture.pcap.gz", "rb") as fh:
        got, error = drain(GzipStream(fh))
    assert error is None and got == DATA


def test_a_header_that_never_ends_is_damage_not_memory():
    """FNAME without its NUL, then megabytes: refused once past MAX_HEADER_BYTES, not buffered."""
    from analyzer.capture.gzipstream import MAX_HEADER_BYTES

    endless = b"\x1f\x8b\x08\x08\x00\x00\x00\x00\x00\xff" + b"n" * (MAX_HEADER_BYTES + (1 << 20))
    got, error = drain(GzipStream(io.BytesIO(endless)))
    assert got == b"" and isinstance(error, BadGzip) and "header longer" in str(error)
