"""Opening capture files: format and compression sniffing, directories, several files in time order."""

from __future__ import annotations

import bz2
import glob
import heapq
import lzma
import mmap
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

from .errors import READ_ERRORS, CaptureError, Damage
from .gzipstream import GzipStream
from .interrupt import STOP, watch_input
from .pcap import READ_CHUNK, PcapReader, Record, byte_order_of
from .pcapng import PcapngReader, looks_like_pcapng
from .window import TimeWindow

GZIP_MAGIC = b"\x1f\x8b"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

#: The file name that means standard input: a capture piped in (``tcpdump -w - | smtpflow
#: analyze -``) is read once, as it comes, like any file (compressed or not).
STDIN = "-"

#: File name patterns taken from a directory (rotated tcpdump/dumpcap files included).
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap", ".dmp", ".gz", ".bz2", ".xz", ".zst")


@dataclass
class CaptureFile:
    """One opened capture: the record iterator plus what is known about the file."""

    path: str
    reader: PcapReader | PcapngReader
    compression: str | None
    raw: BinaryIO
    size: int
    #: Read only the records of this time window (set before iterating; None: all of them).
    window: TimeWindow | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @property
    def format(self) -> str:
        return self.reader.format

    @property
    def damage(self) -> Damage | None:
        return self.reader.damage

    @property
    def linktypes(self) -> set[int]:
        return self.reader.linktypes

    def position(self) -> int:
        """Bytes of the file on disk consumed so far (for progress bars); of standard input, the
        capture's bytes read (it has no size to compare with)."""
        if self.reader.mapped is not None or self.path == STDIN:
            return self.reader.bytes_read
        try:
            return self.raw.tell()
        except (OSError, ValueError):
            return self.size

    @property
    def outside(self) -> int:
        """Records read so far that were outside the time window."""
        return self.reader.outside

    @property
    def interrupted(self) -> bool:
        """Whether the reading stopped at the user's request (``capture.interrupt``)."""
        return self.reader.interrupted

    def __iter__(self) -> Iterator[Record]:
        if self.window is None:
            return iter(self.reader)
        return self._windowed(self.window)

    def _windowed(self, window: TimeWindow) -> Iterator[Record]:
        """The records of ``window``: the prefilter's scans apply it in bulk; this applies it to
        what they leave to Python (and to everything without them), and stops the reading
        at the first record past the window's stop."""
        since, until, stop = window.bounds
        reader = self.reader
        reader.bounds = window.bounds
        records = iter(reader)
        try:
            for rec in records:
                ts = rec[0]
                if since <= ts < until:
                    yield rec
                elif ts >= stop:
                    reader.past_window = True
                    return
                else:
                    reader.outside += 1
        finally:
            records.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            mapped = self.reader.mapped
            if mapped is not None:
                self.reader.mapped = None
                try:
                    mapped.close()
                except BufferError:
                    pass  # records still point into it: the garbage collector will unmap it
            try:
                self.raw.close()
            except OSError:
                pass


class _Salvaging:
    """A decompressing stream whose ``read`` returns every byte decompressed before an error.

    ``BZ2File.read(n)`` (and lzma's) drops what it already decompressed when the stream
    breaks later in the same call, so a truncated ``.bz2`` would yield no record at all.
    Reading with ``read1`` keeps those bytes; the error is raised by the next read. (gzip has
    its own reader, ``gzipstream.GzipStream``.)
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self._error: BaseException | None = None

    def read(self, size: int = -1) -> bytes:
        if self._error is not None:
            error, self._error = self._error, None
            try:
                raise error
            finally:
                del error  # this frame, in the error's traceback, must not hold it (a cycle)
        parts: list[bytes] = []
        got = 0
        while size < 0 or got < size:
            try:
                chunk = self._stream.read1(size - got if size >= 0 else READ_CHUNK)
            except READ_ERRORS as exc:
                if not parts:
                    raise
                # Kept without its traceback: its frames hold this reader, which holds it, a
                # cycle that only the collector (off while a run lasts) would free.
                self._error = exc.with_traceback(None)
                break
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


def _decompressing(raw: BinaryIO, head: bytes, path: str) -> tuple[BinaryIO, str | None]:
    if head.startswith(GZIP_MAGIC):
        return GzipStream(raw), "gzip"  # type: ignore[return-value]
    if head.startswith(BZIP2_MAGIC):
        return _Salvaging(bz2.BZ2File(raw, mode="rb")), "bzip2"  # type: ignore[return-value]
    if head.startswith(XZ_MAGIC):
        return _Salvaging(lzma.LZMAFile(raw, mode="rb")), "xz"  # type: ignore[return-value]
    if head.startswith(ZSTD_MAGIC):
        return _Salvaging(ZstdStream(raw, path)), "zstd"  # type: ignore[return-value]
    return raw, None


class BadZstd(OSError):
    """A zstd stream that cannot be decompressed further (a READ_ERRORS error: damage)."""


ZSTD_FRAME_MAGIC = 0xFD2FB528
ZSTD_SKIPPABLE_MAGICS = range(0x184D2A50, 0x184D2A60)
ZSTD_BLOCK_RLE, ZSTD_BLOCK_RESERVED = 1, 3


class ZstdFrames:
    """Follows a zstd stream's frames by their headers alone (RFC 8878: frame header, then blocks
    of a stated size, the last one flagged, then an optional checksum; skippable frames have a
    size), without decompressing anything: whether the stream stops between frames or inside
    one — the decompressor itself just gives no more when a file was cut short."""

    def __init__(self) -> None:
        self._state = "magic"
        self._want = 4
        self._head = b""
        self._skip = 0
        self._then = "magic"  # what follows the bytes being skipped
        self._checksum = False
        self.broken = False  # not a frame layout this follows (the decompressor says what is wrong)

    @property
    def between_frames(self) -> bool:
        return self.broken or (self._state == "magic" and not self._head and not self._skip)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.broken:
            if self._skip:
                take = min(self._skip, end - pos)
                self._skip -= take
                pos += take
                if not self._skip:
                    self._enter(self._then)
                continue
            take = min(self._want - len(self._head), end - pos)
            self._head += data[pos : pos + take]
            pos += take
            if len(self._head) == self._want:
                head, self._head = self._head, b""
                self._step(head)

    def _enter(self, state: str) -> None:
        self._state, self._want = state, {"magic": 4, "block": 3, "checksum": 4}[state]

    def _skip_then(self, count: int, then: str) -> None:
        if count:
            self._skip, self._then = count, then
        else:
            self._enter(then)

    def _step(self, head: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(head, "little")
            if magic == ZSTD_FRAME_MAGIC:
                self._state, self._want = "descriptor", 1
            elif magic in ZSTD_SKIPPABLE_MAGICS:
                self._state, self._want = "skippable", 4
            else:
                self.broken = True
        elif state == "descriptor":
            descriptor = head[0]
            single = descriptor & 0x20
            size_field = (descriptor >> 6) & 3
            rest = (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] + ((1 if single else 0), 2, 4, 8)[size_field]
            self._checksum = bool(descriptor & 0x04)
            self._skip_then(rest, "block")
        elif state == "block":
            header = int.from_bytes(head, "little")
            kind, size = (header >> 1) & 3, header >> 3
            if kind == ZSTD_BLOCK_RESERVED:
                self.broken = True
                return
            after = "block" if not header & 1 else "checksum" if self._checksum else "magic"
            self._skip_then(1 if kind == ZSTD_BLOCK_RLE else size, after)
        elif state == "checksum":
            self._enter("magic")
        elif state == "skippable":
            self._skip_then(int.from_bytes(head, "little"), "magic")


class _Followed:
    """A raw stream whose bytes are also shown to a ``ZstdFrames``."""

    def __init__(self, raw: BinaryIO, frames: ZstdFrames) -> None:
        self._read = getattr(raw, "read1", None) or raw.read  # a pipe: what has come so far
        self._frames = frames

    def read(self, size: int = -1) -> bytes:
        data = self._read(size)
        self._frames.feed(data)
        return data


class ZstdStream:
    """A zstd-compressed capture (``tcpdump -z zstd``, logrotate's zstd), with the ``zstandard``
    package: frames one after another, read ``size`` bytes at most at a time (however well the
    data compresses), with a window of at most zstd's default decoding limit (128 MiB; a file
    written with ``--long`` beyond it is refused as damage). zstd decodes whole blocks: a file
    cut short loses the block it was cut in, then says so (``ZstdFrames``)."""

    def __init__(self, raw: BinaryIO, path: str) -> None:
        try:
            import zstandard
        except ImportError:
            raise CaptureError(f"{path}: compressed with zstd, which needs the 'zstandard' package (pip install "
                               f"zstandard); or pipe it in: zstd -dc {path} | smtpflow analyze -") from None
        self._errors = zstandard.ZstdError
        self._frames = ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(_Followed(raw, self._frames), read_size=READ_CHUNK,
                                                                  read_across_frames=True, closefd=False)

    def read1(self, size: int = -1) -> bytes:
        """Some bytes (reading the source until a block is whole), or b"" at the stream's end."""
        try:
            data = self._reader.read1(READ_CHUNK if size < 0 else size)
        except self._errors as exc:
            raise BadZstd(f"zstd: {exc}") from None
        if not data and not self._frames.between_frames:
            raise BadZstd("zstd: the stream is cut short inside a frame (its last block is lost)")
        return data

    def close(self) -> None:
        self._reader.close()


class _Prefixed:
    """A stream that cannot seek back (standard input), with the bytes already read from it
    put back in front: the first bytes tell its format, then the readers read them again."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        head = self._head
        if not head:
            return self._stream.read(size)
        if 0 <= size <= len(head):
            self._head = head[size:]
            return head[:size]
        self._head = b""
        return head + self._stream.read(-1 if size < 0 else size - len(head))

    def read1(self, size: int = -1) -> bytes:
        """What has come so far (at least a byte, unless the stream ended): a capture piped in
        is read as it comes, not held back until a whole chunk has arrived."""
        head = self._head
        if not head:
            return self._stream.read1(size)  # type: ignore[attr-defined]
        if 0 <= size < len(head):
            self._head = head[size:]
            return head[:size]
        self._head = b""
        return head

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()


def open_capture(path: str) -> CaptureFile:
    """Open ``path`` as pcap or pcapng, gzip/bzip2/xz-compressed or not; ``-`` (STDIN) is
    standard input.

    Raises CaptureError with a one-line reason when the file cannot be read as a capture.
    """
    if path == STDIN:
        return _open_stdin()
    if os.path.isdir(path):
        raise CaptureError(f"{path}: is a directory (pass the directory to `analyze` to read all captures in it)")
    if os.path.exists(path) and not os.path.isfile(path):
        # Opening a FIFO blocks until a writer comes, and each file is read twice (its first
        # timestamp, then its records): pipes and devices cannot be read by name.
        raise CaptureError(f"{path}: not a regular file (a pipe or a device); save the capture to a file first, "
                           "or pipe it to smtpflow as standard input, named -")
    try:
        raw: BinaryIO = open(path, "rb")
    except FileNotFoundError:
        raise CaptureError(f"{path}: no such file") from None
    except PermissionError:
        raise CaptureError(f"{path}: permission denied") from None
    except OSError as exc:
        raise CaptureError(f"{path}: cannot open: {exc.strerror or exc}") from None
    try:
        size = os.fstat(raw.fileno()).st_size
        head = raw.read(8)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return _open_stream(path, raw, raw, head, size)


#: What a pipe into smtpflow is asked to hold (Linux, F_SETPIPE_SZ; 64 KiB by default): each
#: read then takes up to this much of a fast writer's output instead of 64 KiB at a time.
PIPE_BYTES = 1 << 20


def _widen_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass  # not a pipe, not Linux, or above the system's limit (/proc/sys/fs/pipe-max-size)


def _open_stdin() -> CaptureFile:
    import sys

    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        raise CaptureError("-: there is no standard input to read a capture from") from None
    if os.isatty(fd):
        raise CaptureError("-: standard input is a terminal; pipe a capture to it (tcpdump -w - … | smtpflow analyze -)")
    _widen_pipe(fd)
    raw: BinaryIO = open(fd, "rb", closefd=False)  # standard input stays open for the process
    watch_input(fd)  # Ctrl-C ends a pipe that may never end by itself
    try:
        head = raw.read(8)
    except OSError as exc:
        raise CaptureError(f"-: cannot read standard input: {exc.strerror or exc}") from None
    if not head and STOP.requested:
        raise KeyboardInterrupt  # interrupted before any capture came: nothing to diagnose
    return _open_stream(STDIN, raw, _Prefixed(head, raw), head, 0)  # type: ignore[arg-type]


def _open_stream(path: str, raw: BinaryIO, source: BinaryIO, head: bytes, size: int) -> CaptureFile:
    """The capture in ``source`` (``raw``, read from its start), whose first bytes are ``head``."""
    try:
        stream, compression = _decompressing(source, head, path)
        try:  # the readers read the file header: a broken stream can end or fail within it
            inner = stream.read(12)
            if not inner:
                raise CaptureError(f"{path}: file is empty" if path != STDIN else "-: standard input is empty (no capture came through it)")
            if looks_like_pcapng(inner):
                reader: PcapReader | PcapngReader = PcapngReader(stream, path, head=inner)
            elif byte_order_of(inner) is not None:
                reader = PcapReader(stream, path, head=inner)
            else:
                what = _guess_content(inner)
                raise CaptureError(f"{path}: not a pcap or pcapng capture{what}")
        except READ_ERRORS as exc:
            raise CaptureError(f"{path}: {compression or 'file'} stream is unreadable: {exc}") from None
    except CaptureError:
        raw.close()
        raise
    if compression is None and size > 0:
        try:
            mapped = mmap.mmap(raw.fileno(), 0, access=mmap.ACCESS_READ)
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            reader.mapped = mapped
        except (OSError, ValueError, AttributeError):
            pass  # a pipe, a special file: read it in chunks
    return CaptureFile(path=path, reader=reader, compression=compression, raw=raw, size=size)


def _guess_content(head: bytes) -> str:
    if head[:1] in (b"{", b"["):
        return " (looks like JSON)"
    if head.startswith(b"%PDF"):
        return " (looks like a PDF)"
    if head.startswith(b"PK"):
        return " (looks like a zip archive)"
    if head.startswith(b"\x7fELF"):
        return " (looks like a program)"
    if all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return " (looks like text)"
    return ""


def expand_inputs(paths: Iterable[str]) -> list[str]:
    """Expand directories and glob patterns into a sorted list of capture file paths.

    A directory contributes the capture files directly inside it (rotated ring-buffer
    files included), ordered by name; the reader merges them by timestamp. A file is taken
    by its name (``*.pcap``, ``trace.pcap1`` …) or, whatever its name, by its first bytes:
    ``tcpdump -w trace -C 100`` writes ``trace``, ``trace1``, ``trace2`` …
    """
    result: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            names = sorted(
                full
                for name in os.listdir(path)
                if not name.startswith(".") and os.path.isfile(full := os.path.join(path, name))
                and (_looks_like_capture_name(name) or _starts_like_capture(full))
            )
            if not names:
                raise CaptureError(f"{path}: directory holds no capture files (pcap, pcapng, or compressed)")
            result.extend(names)
        elif any(ch in path for ch in "*?[") and not os.path.exists(path):
            matches = sorted(glob.glob(path))
            if not matches:
                raise CaptureError(f"{path}: pattern matches no files")
            result.extend(matches)
        else:
            result.append(path)
    return result


def _starts_like_capture(path: str) -> bool:
    """Do the file's first bytes open a pcap or pcapng capture, or a compressed stream?"""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return False
    return (byte_order_of(head) is not None or looks_like_pcapng(head)
            or head.startswith((GZIP_MAGIC, BZIP2_MAGIC, XZ_MAGIC, ZSTD_MAGIC)))


def _looks_like_capture_name(name: str) -> bool:
    lower = name.lower()
    if lower.startswith("."):
        return False
    if lower.endswith(CAPTURE_SUFFIXES):
        return True
    # tcpdump -C appends a number to the file name: trace.pcap1, trace.pcap2 …
    stem = lower.rstrip("0123456789")
    return stem != lower and stem.endswith((".pcap", ".pcapng", ".cap"))


class CaptureSet:
    """Several capture files read as one stream of records in timestamp order.

    Files are opened lazily: a file is opened only once the merged stream reaches its
    first timestamp, so a directory of a thousand rotated ring-buffer files keeps one or
    two files open at a time, while captures that overlap in time (two interfaces) are
    interleaved record by record. Sessions that cross file boundaries simply continue.
    Standard input (``-``) can be read only once: it is opened at once and read from its
    first record when the stream starts.
    """

    def __init__(self, paths: list[str], window: TimeWindow | None = None) -> None:
        self.paths = list(paths)
        #: Only the records of this time window are read (``capture.window``); files whose
        #: first record is past its stop are not read at all (``skipped``).
        self.window = window
        self.skipped: list[str] = []
        self.outside = 0  # records read that were outside the window
        #: The reading was stopped by the user (Ctrl-C, ``capture.interrupt``): every file is
        #: then read up to the time ``stop_time()`` gives (set by the layer above: the latest
        #: time read so far, by this process or by all those reading the capture; without it,
        #: or when it gives None, the reading stops at once), and the files beginning after it
        #: are not read at all (``unread``). ``stopped_at``: that time.
        self.interrupted = False
        self.unread: list[str] = []
        self.stop_time = None
        self.stopped_at: int | None = None
        self._stop_known = False
        #: Set by the layer above: ``on_secrets(text, path)`` for the TLS key log text of each
        #: pcapng Decryption Secrets Block, as the file is read (before the packets after it).
        self.on_secrets = None
        self.errors: list[str] = []
        self.damage: list[Damage] = []
        self.formats: dict[str, str] = {}
        self.linktypes: set[int] = set()
        self.records = 0
        self.linktypes_by_file: dict[str, set[int]] = {}
        #: Handed to every reader opened: drops irrelevant records in bulk (decode.fastpath).
        self.prefilter = None
        self._pending: list[tuple[int, int, str]] = []  # (first_ts, order, path)
        self._streams: list[tuple[int, CaptureFile]] = []  # (order, standard input), read once
        self._open: list[CaptureFile] = []
        self._finished_bytes = 0
        self.total_bytes = 0
        for order, path in enumerate(self.paths):
            if path == STDIN and self._streams:
                self.errors.append("-: standard input is given more than once")
                continue
            try:
                cap = open_capture(path)
            except CaptureError as exc:
                self.errors.append(str(exc))
                continue
            if path == STDIN:
                self.formats[path] = cap.format + (f" ({cap.compression})" if cap.compression else "")
                self.linktypes_by_file[path] = set(cap.linktypes)
                self._streams.append((order, cap))
                continue
            try:
                first = next(iter(cap), None)
            finally:
                cap.close()
            self.formats[path] = cap.format + (f" ({cap.compression})" if cap.compression else "")
            if first is None and cap.interrupted:  # Ctrl-C came before this file was reached
                self.interrupted = True
                self.unread.append(path)
                continue
            if first is not None and window is not None and first[0] >= window.bounds[2]:
                self.skipped.append(path)  # it begins past the window: nothing of it to read
                continue
            self.total_bytes += cap.size
            self.linktypes_by_file[path] = set(cap.linktypes)
            if first is None:
                if cap.damage is not None:
                    self.damage.append(cap.damage)
                continue
            self._pending.append((first[0], order, path))
        self._pending.sort()

    @property
    def readable(self) -> int:
        return len(self.formats)

    def position(self) -> int:
        return self._finished_bytes + sum(cap.position() for cap in self._open)

    def _finish(self, cap: CaptureFile) -> None:
        if cap.path == STDIN:
            self.total_bytes += cap.reader.bytes_read  # known only once read
        self._finished_bytes += cap.size
        self.linktypes |= cap.linktypes
        self.records += cap.reader.records
        self.outside += cap.outside
        if cap.interrupted or STOP.requested:
            self.interrupted = True
            self._stop_time()  # a pipe cut off by Ctrl-C ends without asking: the time is known here
        if cap.damage is not None:
            self.damage.append(cap.damage)
        cap.close()
        if cap in self._open:
            self._open.remove(cap)

    def _stop_time(self) -> int | None:
        """After Ctrl-C: the time every file is read up to (asked once, the same for all)."""
        if not self._stop_known:
            self._stop_known = True
            self.stopped_at = self.stop_time() if self.stop_time is not None else None
        return self.stopped_at

    def _reading(self, cap: CaptureFile) -> CaptureFile:
        """``cap``, about to be read: with this set's prefilter and window, and counted open."""
        cap.reader.prefilter = self.prefilter
        cap.reader.stop_time = self._stop_time
        if self.on_secrets is not None and isinstance(cap.reader, PcapngReader):
            on_secrets, path = self.on_secrets, cap.path
            cap.reader.on_secrets = lambda data: on_secrets(data.decode("utf-8", "replace"), path)
        cap.window = self.window
        self._open.append(cap)
        return cap

    def __iter__(self) -> Iterator[Record]:
        pending = list(self._pending)
        heap: list[tuple[int, int, Record, Iterator[Record], CaptureFile]] = []
        push, pop = heapq.heappush, heapq.heappop

        def start(cap: CaptureFile, order: int) -> None:
            """Read a file's first record onto the heap (or finish it, if it has none)."""
            it = iter(self._reading(cap))
            rec = next(it, None)
            if rec is None:
                self._finish(cap)
            else:
                push(heap, (rec[0], order, rec, it, cap))

        def open_next() -> None:
            _ts, order, path = pending.pop(0)
            try:
                cap = open_capture(path)
            except CaptureError as exc:  # changed or vanished since it was checked
                self.errors.append(str(exc))
                return
            start(cap, order)

        streams, self._streams = self._streams, []
        if len(pending) + len(streams) == 1:  # the common case: one file, no heap
            cap = self._reading(streams[0][1] if streams else open_capture(pending[0][2]))
            try:
                yield from cap
            finally:
                self._finish(cap)
            return
        for order, cap in streams:  # read from its first record: its first timestamp is not known yet
            start(cap, order)
        try:
            while heap or pending:
                if STOP.requested and not self.interrupted:
                    # Ctrl-C: the files are read up to the stop time (each reader stops there by
                    # itself); those beginning after it are not opened.
                    self.interrupted = True
                    cut = self._stop_time()
                    self.unread += [path for first, _order, path in pending if cut is None or first > cut]
                    pending = [entry for entry in pending if cut is not None and entry[0] <= cut]
                    if cut is None:
                        break
                if not heap:
                    open_next()
                    continue
                ts = heap[0][0]
                while pending and pending[0][0] <= ts:
                    open_next()
                _ts, order, rec, it, cap = pop(heap)
                yield rec
                nxt = next(it, None)
                if nxt is None:
                    self._finish(cap)
                else:
                    push(heap, (nxt[0], order, nxt, it, cap))
        finally:
            for cap in list(self._open):
                self._finish(cap)
