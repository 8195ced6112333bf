"""Streams (compressed files, standard input) read as they come, in reads of any size: records
cut by the end of a read, records longer than what is joined to them (``StreamBuffer``), block
headers cut in two — every record comes out whole, in order, as from the mapped file."""

from __future__ import annotations

import io
import random
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.capture.pcap import JOIN_BYTES, PcapReader
from analyzer.capture.pcapng import PcapngReader


class Dribble:
    """A stream that hands out ``sizes`` bytes per read1 (then what is asked), as a pipe does."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._pos = 0
        self._sizes = iter(sizes)

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._pos + size
        out, self._pos = self._data[self._pos : end], min(end, len(self._data))
        return out

    def read1(self, size: int = -1) -> bytes:
        want = next(self._sizes, size if size > 0 else len(self._data))
        return self.read(max(1, min(want, size if size > 0 else want)))


def pcap_file(frames: list[bytes]) -> bytes:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1)]
    for n, frame in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + n, n, len(frame), len(frame) + 3) + frame)
    return b"".join(out)


def pcapng_file(frames: list[bytes]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", btype, len(body) + 12) + body + struct.pack("<I", len(body) + 12)

    out = [block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)), block(1, struct.pack("<HHI", 1, 0, 262144))]
    for n, frame in enumerate(frames):
        units = (1_700_000_000 + n) * 1_000_000 + n
        out.append(block(6, struct.pack("<IIIII", 0, units >> 32, units & 0xFFFFFFFF, len(frame), len(frame) + 3) + frame))
    return b"".join(out)


def records(reader) -> list[tuple[int, bytes, int]]:
    return [(ts, bytes(buf[start:end]), wirelen) for ts, _lt, buf, start, end, wirelen in reader]


frame_sizes = st.lists(st.one_of(st.integers(14, 1600), st.integers(JOIN_BYTES - 40, JOIN_BYTES + 40),
                                 st.integers(2 * JOIN_BYTES, 200_000)), min_size=1, max_size=25)
read_sizes = st.lists(st.one_of(st.integers(1, 40), st.integers(1, 3000), st.integers(JOIN_BYTES - 20, 3 * JOIN_BYTES),
                                st.integers(1 << 20, 2 << 20)), max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=frame_sizes, reads=read_sizes, fmt=st.sampled_from(["pcap", "pcapng"]), seed=st.integers(0, 2**32))
def test_records_come_out_whole_whatever_the_reads(sizes, reads, fmt, seed):
    rng = random.Random(seed)
    frames = [rng.randbytes(size) for size in sizes]
    data = pcap_file(frames) if fmt == "pcap" else pcapng_file(frames)
    cls = PcapReader if fmt == "pcap" else PcapngReader
    expected = records(cls(io.BytesIO(data), "whole"))
    assert [frame for _ts, frame, _wire in expected] == frames
    reader = cls(Dribble(data, reads), "dribbled")
    assert records(reader) == expected
    assert reader.damage is None and reader.records == len(frames)


@settings(max_examples=60, deadline=None)
@given(sizes=frame_sizes, reads=read_sizes, cut=st.integers(1, 400_000), fmt=st.sampled_from(["pcap", "pcapng"]))
def test_a_stream_cut_anywhere_gives_every_record_before_the_cut(sizes, reads, cut, fmt):
    frames = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
    data = pcap_file(frames) if fmt == "pcap" else pcapng_file(frames)
    cut = min(cut, len(data) - 1)
    cls = PcapReader if fmt == "pcap" else PcapngReader
    if cut < (24 if fmt == "pcap" else 12):
        return  # the file header itself is cut: the reader refuses it, not a stream matter
    whole = records(cls(io.BytesIO(data[:cut]), "cut"))
    reader = cls(Dribble(data[:cut], reads), "cut dribbled")
    assert records(reader) == whole
    make = pcap_file if fmt == "pcap" else pcapng_file
    between_records = {len(make(frames[:n])) for n in range(len(frames))}
    if fmt == "pcapng":
        between_records.add(struct.unpack_from("<I", data, 4)[0])  # after the section header block
    if cut in between_records:  # a shorter capture, whole: nothing is cut
        assert reader.damage is None and len(whole) == sum(len(make(frames[:n])) <= cut for n in range(1, len(frames) + 1))
    else:
        assert reader.damage is not None
