"""Classic libpcap file format (tcpdump ``-w``): both byte orders, µs and ns resolution.

Layouts (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html)::

    file header (24 bytes): magic u32, version_major u16, version_minor u16,
                            thiszone i32, sigfigs u32, snaplen u32, linktype u32
    record header (16 bytes): ts_sec u32, ts_frac u32, caplen u32, wirelen u32

The "modified" pcap format written by some old Linux patches adds 8 bytes to each
record header (ifindex u32, protocol u16, pkt_type u8, pad u8); it is read too.
"""

from __future__ import annotations

import mmap
import struct
import threading
from typing import BinaryIO, Callable, Iterator

from .errors import READ_ERRORS, CaptureError, Damage
from .interrupt import STOP
from .window import ALL_TIME, LATEST

MAGIC_MICROSECONDS = 0xA1B2C3D4
MAGIC_NANOSECONDS = 0xA1B23C4D
MAGIC_MODIFIED = 0xA1B2CD34  # Alexey Kuznetzov's patched libpcap

FILE_HEADER = struct.Struct("IHHiIII")
FILE_HEADER_LEN = 24
RECORD_HEADER_LEN = 16
MODIFIED_RECORD_HEADER_LEN = 24

#: The link type field's low 28 bits are the type; the high bits may carry an FCS length.
LINKTYPE_MASK = 0x0FFFFFFF

#: A record longer than this is corruption, not a packet (Wireshark uses the same bound).
MAX_RECORD_LENGTH = 262_144

READ_CHUNK = 1 << 20
FIRST_READ_CHUNK = 1 << 16

#: One record as the capture layer hands it on: timestamp in integer nanoseconds, link
#: type, the buffer holding the frame, the frame's start and end offsets in that buffer,
#: and the original length on the wire. The frame is not copied out of the buffer: the
#: decoder looks at header bytes in place and copies only what it keeps.
Record = tuple[int, int, bytes, int, int, int]
#: With a decoding prefilter (``decode.fastpath``), plain TCP segments and DNS datagrams come
#: as ``(ts, TcpSegment)`` or ``(ts, UdpDatagram)`` instead: the scan decoded them already.


#: A mapped file is scanned this many bytes at a time; the pages behind are then given back,
#: so resident memory stays bounded however big the file (the page cache keeps them). Up to
#: about three windows are resident at once (behind, current, scanned ahead): at 32 MB they
#: were most of a gateway run's 154 MB; at 8 MB it takes 61 MB, no slower.
MAPPED_WINDOW = 8 << 20


#: The status of a prefilter scan that stopped at its cap of kept records (not at the window's
#: or the buffer's end): the reader calls it again from where it stopped.
SCAN_FULL = 3
#: The status of a prefilter scan that reached a record past the time window's stop: the
#: reader reads no further (see ``capture.window``).
SCAN_PAST = 4


def _nothing(_size: int) -> bytes:
    """``read`` of a mapped file: everything is in the buffer already."""
    return b""


#: What of a new read is copied behind the record it completes (see ``StreamBuffer``).
JOIN_BYTES = 64 << 10


class StreamBuffer:
    """Where a stream's reader goes on when its buffer runs out (compressed files, standard input).

    A record is nearly always cut by the end of a read, and joining the rest of the buffer to
    the whole next read copied every byte once more (a sixth of a gzip'ed capture's time). Only
    the next JOIN_BYTES (or what the cut record still needs) are joined to the rest; once the
    reader is past the cut record, it goes on in the read's own bytes, uncopied."""

    __slots__ = ("_read", "_chunk", "_pending", "_joined", "_taken")

    def __init__(self, read) -> None:
        self._read = read
        self._chunk = FIRST_READ_CHUNK  # small first read: peeking at a file's first record stays cheap
        self._pending: bytes | None = None  # the last read, of which the joint holds the start
        self._joined = 0  # where, in the joint, that read's bytes begin
        self._taken = 0  # how much of it the joint holds

    def more(self, buf, pos: int, base: int, need: int) -> tuple | None:
        """``(buf, pos, base)`` holding ``buf[pos:]`` and what follows (at least ``need`` bytes
        more, when the stream has them); None at the stream's end. ``base``: the stream offset of
        the buffer's first byte."""
        pending, self._pending = self._pending, None
        if pending is not None:
            if pos >= self._joined:  # past the cut record: on in the read itself
                return pending, pos - self._joined, base + self._joined
            more = pending[self._taken :]  # a record longer than the joint: join the rest of the read
        else:
            more = self._read(max(self._chunk, need))
            self._chunk = READ_CHUNK
            if not more:
                return None
        if pos == len(buf):
            return more, 0, base + pos
        rest = buf[pos:]
        take = max(JOIN_BYTES, need)
        if len(more) <= take:
            return rest + more, 0, base + pos
        self._pending, self._joined, self._taken = more, len(rest), take
        return rest + more[:take], 0, base + pos


class ScanAhead:
    """The prefilter's scan of the next window of a mapped file, run in a helper thread while
    the caller decodes this window's packets: the C scan releases the GIL, so a second core
    reads (and page-faults) ahead."""

    def __init__(self, scan, buf, pos: int, *args) -> None:
        self.pos = pos
        self._outcome: tuple = ()
        self._thread = threading.Thread(target=self._run, args=(scan, buf, pos, *args), daemon=True, name="smtpflow-scan")
        self._thread.start()

    def _run(self, scan, *args) -> None:
        try:
            self._outcome = (scan(*args), None)
        except BaseException as exc:  # handed to the caller's thread
            self._outcome = (None, exc)

    def result(self) -> tuple:
        self._thread.join()
        value, error = self._outcome
        if error is not None:
            raise error
        return value


def release_pages(mapped: mmap.mmap, start: int, end: int) -> int:
    """Drop the pages of ``mapped`` in [start, end) from this process; return the new start.

    The mapping is read-only and file-backed, so a page touched again is simply read back."""
    page = mmap.PAGESIZE
    start -= start % page
    end -= end % page
    if end > start:
        try:
            mapped.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError, AttributeError):
            pass
    return end


class Windows:
    """How a reader hands its buffer to the prefilter. A mapped file is scanned window by
    window: the pages behind the reader are released, and the next window is scanned in a
    helper thread while the caller decodes this one. Anything else is scanned whole."""

    def __init__(self, mapped: mmap.mmap | None) -> None:
        self.mapped = mapped
        self.released = 0
        self._ahead: ScanAhead | None = None

    def limit(self, pos: int) -> int:
        """Where a scan starting at ``pos`` stops (-1: the buffer's end)."""
        if self.mapped is None:
            return -1
        if pos - self.released >= MAPPED_WINDOW:
            self.released = release_pages(self.mapped, self.released, pos)
        return pos + MAPPED_WINDOW

    def drop_ahead(self) -> None:
        """Forget the next window's scan (its time bounds have changed): it is done again."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            try:
                ahead.result()
            except Exception:  # noqa: BLE001 - the scan is done again, and fails again if it must
                pass

    def scan(self, scan, buf, pos: int, *args, limit: int, min_left: int) -> tuple:
        """``scan(buf, pos, *args, limit)``, or its result from the helper thread; then start
        the next window's scan if this one ended at its limit with ``min_left`` bytes to go."""
        ahead, self._ahead = self._ahead, None
        result = ahead.result() if ahead is not None and ahead.pos == pos else scan(buf, pos, *args, limit)
        new_pos = result[0]
        if (0 <= limit <= new_pos or (limit >= 0 and result[2] == SCAN_FULL)) and len(buf) - new_pos >= min_left:
            self._ahead = ScanAhead(scan, buf, new_pos, *args, new_pos + MAPPED_WINDOW)
        return result

    @staticmethod
    def hand_on(reader, prefilter, scanned: tuple, buf, base: int, pos: int, count: int, limit: int):
        """Account for a scan's result (``reader.records``, ``reader.bytes_read``) and yield
        what it kept: records in ``buf``, and the packets it decoded itself as they are.
        Returns (records read so far, new position, whether to scan again at once: the
        window, or the scan's share of it, is done — not the file)."""
        new_pos, hits, status, counters = scanned
        dropped = prefilter.account(counters)
        outside = counters[-1]  # records outside the time window: counted, not decoded
        reader.outside += outside
        if status == SCAN_PAST:
            reader.past_window = True
        if new_pos == pos:
            return count, pos, False  # nothing whole to scan here: the reader goes record by record
        count += dropped + outside + len(hits)
        reader.records = count
        reader.bytes_read = base + new_pos
        for hit in hits:
            if len(hit) != 5:
                yield hit  # (ts, TcpSegment or UdpDatagram), or another shard's (ts, src, checksum)
            else:
                ts, lt, start, end, wirelen = hit
                yield ts, lt, buf, start, end, wirelen
        return count, new_pos, 0 <= limit <= new_pos or status == SCAN_FULL


def byte_order_of(magic_bytes: bytes) -> tuple[str, int] | None:
    """Return (struct byte-order prefix, magic) if ``magic_bytes`` opens a pcap file."""
    if len(magic_bytes) < 4:
        return None
    for order in ("<", ">"):
        (magic,) = struct.unpack(order + "I", magic_bytes[:4])
        if magic in (MAGIC_MICROSECONDS, MAGIC_NANOSECONDS, MAGIC_MODIFIED):
            return order, magic
    return None


class EarlyEnd:
    """How a reader's reading ends before the file does (the pcap and pcapng readers share it):
    damage, or the user's Ctrl-C (``capture.interrupt``)."""

    path: str
    bounds: tuple[int, int, int]
    interrupted: bool
    stop_time: Callable[[], int | None] | None
    records: int
    damage: Damage | None

    def _interrupt(self, windows: Windows) -> int | None:
        """The reading is to stop (Ctrl-C): read on only up to the time all agree on (the scans
        take it as a window's stop, so one done ahead without it is dropped); return the
        timestamp to stop at, or None to stop at once."""
        windows.drop_ahead()
        self.interrupted = True
        cut = self.stop_time() if self.stop_time is not None else None
        if cut is None:
            return None
        since, until, stop = self.bounds
        self.bounds = (since, min(until, cut + 1), min(stop, cut + 1))
        return cut + 1

    def _damaged(self, offset: int, count: int, reason: str) -> None:
        self.records = count
        if STOP.requested:  # a pipe cut off by Ctrl-C ends anywhere: not damage
            self.interrupted = True
            return
        self.damage = Damage(self.path, offset, count, reason)


class PcapReader(EarlyEnd):
    """Streams records out of a classic pcap file object."""

    format = "pcap"

    def __init__(self, fileobj: BinaryIO, path: str, head: bytes = b"") -> None:
        self.path = path
        self._file = fileobj
        header = head + fileobj.read(max(0, FILE_HEADER_LEN - len(head)))
        found = byte_order_of(header)
        if found is None:
            raise CaptureError(f"{path}: not a pcap file")
        if len(header) < FILE_HEADER_LEN:
            raise CaptureError(f"{path}: pcap file header is truncated ({len(header)} of 24 bytes)")
        self._order, magic = found
        _, major, minor, _, _, snaplen, network = struct.unpack(self._order + "IHHiIII", header[:24])
        self.version = (major, minor)
        self.snaplen = snaplen
        self.linktype = network & LINKTYPE_MASK
        self.linktypes = {self.linktype}
        self.nanosecond = magic == MAGIC_NANOSECONDS
        self._record_header_len = MODIFIED_RECORD_HEADER_LEN if magic == MAGIC_MODIFIED else RECORD_HEADER_LEN
        self._rest = header[FILE_HEADER_LEN:]
        self.damage: Damage | None = None
        self.records = 0
        self.bytes_read = FILE_HEADER_LEN
        #: Set by the layer above to drop irrelevant records in bulk (see decode.fastpath).
        self.prefilter = None
        #: The whole file mapped in memory (uncompressed regular files): no reads, no copies.
        self.mapped = None
        #: A time window's (since, until, stop), set by the layer above (``capture.window``);
        #: the prefilter's scans apply it (records outside are counted in ``outside``, and one
        #: at or past ``stop`` sets ``past_window`` and ends the reading).
        self.bounds = ALL_TIME
        self.outside = 0
        self.past_window = False
        #: Set when the user asked the reading to stop (Ctrl-C: ``capture.interrupt``); it then
        #: stops after the records up to the time ``stop_time()`` gives (None: at once).
        self.interrupted = False
        self.stop_time = None

    def __iter__(self) -> Iterator[Record]:
        # What has come so far of a pipe (standard input): it may never end. Files read whole.
        read = getattr(self._file, "read1", None) or self._file.read
        unpack_from = struct.Struct(self._order + "IIII").unpack_from
        hlen = self._record_header_len
        scale = 1 if self.nanosecond else 1000
        frac_limit = 1_000_000_000 if self.nanosecond else 1_000_000
        linktype = self.linktype
        max_len = max(MAX_RECORD_LENGTH, self.snaplen if self.snaplen < (1 << 26) else 0)
        buf = self._rest
        pos = 0
        base = FILE_HEADER_LEN  # stream offset of buf[0]
        windows = Windows(self.mapped)
        if self.mapped is not None:
            buf, pos, base = self.mapped, FILE_HEADER_LEN, 0
            read = _nothing
        count = 0
        stream = StreamBuffer(read)
        prefilter = self.prefilter
        big = self._order == ">"
        stop_at = LATEST  # after Ctrl-C: the first timestamp not read any more
        try:
            while True:
                if STOP.requested and not self.interrupted:  # Ctrl-C: the capture ends at a common time
                    stop_at = self._interrupt(windows)
                    if stop_at is None:
                        return
                limit = windows.limit(pos)
                if prefilter is not None and len(buf) - pos >= hlen:
                    # Whole runs of records in one call; what it leaves (a record cut by the
                    # buffer's end, or a broken one) is handled record by record below.
                    scanned = windows.scan(prefilter.pcap, buf, pos, big, self.nanosecond, hlen, linktype, max_len,
                                           self.bounds, limit=limit, min_left=hlen)
                    count, pos, again = yield from windows.hand_on(self, prefilter, scanned, buf, base, pos, count, limit)
                    if self.past_window:
                        return
                    if again:
                        continue
                if len(buf) - pos < hlen:
                    got = stream.more(buf, pos, base, hlen - (len(buf) - pos))
                    if got is None:
                        if len(buf) - pos:
                            self._damaged(base + pos, count, "the last record header is cut short")
                        return
                    buf, pos, base = got
                    continue
                sec, frac, caplen, wirelen = unpack_from(buf, pos)
                if caplen > max_len or frac >= frac_limit:
                    reason = (
                        f"record length {caplen} is impossible" if caplen > max_len
                        else f"timestamp fraction {frac} is out of range"
                    )
                    self._damaged(base + pos, count, reason)
                    return
                start = pos + hlen
                end = start + caplen
                if end > len(buf):
                    got = stream.more(buf, pos, base, end - len(buf))
                    if got is None:
                        self._damaged(base + pos, count, f"the last packet is cut short ({len(buf) - start} of {caplen} bytes)")
                        return
                    buf, pos, base = got
                    continue
                ts = sec * 1_000_000_000 + frac * scale
                if ts >= stop_at:
                    return
                count += 1
                self.records = count
                self.bytes_read = base + end
                yield ts, linktype, buf, start, end, wirelen
                pos = end
        except READ_ERRORS as exc:  # truncated or corrupt compressed stream
            self._damaged(base + pos, count, f"read error: {exc}")
