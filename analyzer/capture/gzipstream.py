"""Reading a gzip'ed capture (RFC 1952): its members inflated in turn, every byte before any
damage handed on.

Rotated captures are often compressed (``tcpdump -G … -z gzip``), and inflating costs more
than everything else smtpflow does with a gateway capture. ISA-L's inflate (the ``isal``
package's ``IgzipDecompressor``) is about three times zlib's speed, and is used where it is
installed; zlib otherwise (``ZlibInflate`` gives it the same interface).

As ``gzip`` does, the member header and trailer are read here around raw deflate data: so
the bytes of a member are handed on before its CRC-32 and length are checked (a damaged
member's data is salvaged, then reported), and zero bytes padding the file between or after
members are skipped. Each ``read`` returns what one inflate step gave: nothing inflated is
held back when the next step fails.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Callable

#: Window bits for raw deflate data (no zlib or gzip wrapper around it).
RAW_DEFLATE_WBITS = -15


class ZlibInflate:
    """zlib's raw inflate with the interface of ISA-L's ``IgzipDecompressor``: the input a
    step leaves (past ``max_length``) is kept for the next, and ``needs_input`` says when
    more must come."""

    __slots__ = ("_inflate", "_tail", "needs_input")

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(RAW_DEFLATE_WBITS)
        self._tail = b""
        self.needs_input = True

    def decompress(self, data: bytes, max_length: int) -> bytes:
        out = self._inflate.decompress(self._tail + data if self._tail else data, max_length)
        self._tail = self._inflate.unconsumed_tail
        # A step that stopped at max_length may have more to give without new input.
        self.needs_input = not self._tail and len(out) < max_length
        return out

    @property
    def eof(self) -> bool:
        return self._inflate.eof

    @property
    def unused_data(self) -> bytes:
        return self._inflate.unused_data


try:  # pragma: no cover - which branch runs depends on the installation
    from isal import igzip_lib, isal_zlib

    def _isal_inflate():
        return igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_DEFLATE)

    #: A new raw-deflate decompressor, and the CRC-32 to check its output with.
    NEW_INFLATE: Callable = _isal_inflate
    CRC32: Callable = isal_zlib.crc32
    INFLATE_ERRORS: tuple[type[BaseException], ...] = (igzip_lib.IsalError, isal_zlib.error, zlib.error)
except ImportError:  # pragma: no cover
    NEW_INFLATE = ZlibInflate
    CRC32 = zlib.crc32
    INFLATE_ERRORS = (zlib.error,)

GZIP_MAGIC = b"\x1f\x8b"
CM_DEFLATE = 8
# Header flags (RFC 1952 §2.3.1).
FHCRC, FEXTRA, FNAME, FCOMMENT = 0x02, 0x04, 0x08, 0x10
FIXED_HEADER = 10
TRAILER = struct.Struct("<II")  # CRC-32, ISIZE (the length mod 2**32)
#: Compressed bytes read from the file at a time.
RAW_CHUNK = 256 << 10
#: A member header may be no longer (its name and comment end with a NUL, which must come):
#: a file that never ends one is damaged, not a reason to hold all of it in memory.
MAX_HEADER_BYTES = 1 << 20
#: Decompressed bytes a read returns at most when its caller does not say.
DEFAULT_READ = 1 << 20
#: What a file cut inside a member raises (gzip's own words).
CUT_MESSAGE = "Compressed file ended before the end-of-stream marker was reached"


class BadGzip(OSError):
    """A member's header or trailer is wrong, or bytes after a member are not another one."""


def header_length(data: bytes) -> int:
    """How long the member header at the start of ``data`` is; 0 if more bytes are needed."""
    if data[:2] != GZIP_MAGIC[: len(data)]:
        raise BadGzip(f"Not a gzipped file ({data[:2]!r})")
    if len(data) < FIXED_HEADER:
        return 0
    if data[2] != CM_DEFLATE:
        raise BadGzip(f"Unknown compression method {data[2]}")
    flags = data[3]
    pos = FIXED_HEADER
    if flags & FEXTRA:
        if len(data) < pos + 2:
            return 0
        pos += 2 + int.from_bytes(data[pos: pos + 2], "little")
    for flag in (FNAME, FCOMMENT):
        if flags & flag:
            end = data.find(b"\0", pos)
            if end < 0:
                return 0
            pos = end + 1
    if flags & FHCRC:
        pos += 2
    return pos if len(data) >= pos else 0


class GzipStream:
    """``read(n)``: up to n decompressed bytes of the gzip file ``raw``; b"" at its end.

    ``new_inflate`` and ``crc32`` choose the backend (tests run both)."""

    def __init__(self, raw: BinaryIO, new_inflate: Callable | None = None, crc32: Callable | None = None) -> None:
        self._raw = raw
        self._read_raw = getattr(raw, "read1", None) or raw.read  # a pipe: what has come so far
        self._new_inflate = new_inflate or NEW_INFLATE
        self._crc32 = crc32 or CRC32
        self._input = b""  # compressed bytes not given to a decompressor yet
        self._member = None  # the decompressor of the member being read, else None
        self._crc = 0
        self._size = 0
        self._trailer_due = False
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = DEFAULT_READ
        while not self._ended and size:
            member = self._member
            if member is None:
                if self._trailer_due:  # checked once the member's last bytes were handed on
                    self._trailer_due = False
                    self._check_trailer()
                if not self._start_member():
                    return b""
                continue
            data = b""
            if member.needs_input:
                data, self._input = self._input or self._read_raw(RAW_CHUNK), b""
                if not data:
                    self._ended = True
                    raise EOFError(CUT_MESSAGE)
            try:
                out = member.decompress(data, size)
            except INFLATE_ERRORS:
                self._ended = True
                raise
            if out:
                self._crc = self._crc32(out, self._crc)
                self._size += len(out)
            if member.eof:
                self._input = member.unused_data  # all that came after the member's data
                self._member = None
                self._trailer_due = True
            if out:
                return out
        return b""

    def _more(self) -> bool:
        data = self._read_raw(RAW_CHUNK)
        self._input += data
        return bool(data)

    def _start_member(self) -> bool:
        """Skip padding and read the next member's header; False at the file's clean end."""
        while True:
            self._input = self._input.lstrip(b"\0")  # padding between or after members
            if self._input:
                try:
                    length = header_length(self._input)
                except BadGzip:
                    self._ended = True
                    raise
                if length:
                    self._input = self._input[length:]
                    self._member = self._new_inflate()
                    self._crc = self._size = 0
                    return True
                if len(self._input) > MAX_HEADER_BYTES:
                    self._ended = True
                    raise BadGzip(f"a member header longer than {MAX_HEADER_BYTES:,} bytes")
            if not self._more():
                self._ended = True
                if self._input:
                    raise EOFError(CUT_MESSAGE)  # inside a member's header
                return False

    def _check_trailer(self) -> None:
        """A member's CRC-32 and length, after its data."""
        while len(self._input) < TRAILER.size:
            if not self._more():
                self._ended = True
                raise EOFError(CUT_MESSAGE)
        crc, isize = TRAILER.unpack_from(self._input)
        self._input = self._input[TRAILER.size:]
        mine = self._crc & 0xFFFFFFFF
        if crc != mine:
            self._ended = True
            raise BadGzip(f"CRC check failed 0x{crc:x} != 0x{mine:x}")
        if isize != self._size & 0xFFFFFFFF:
            self._ended = True
            raise BadGzip("Incorrect length of data produced")

    def close(self) -> None:
        self._ended = True
        self._raw.close()
