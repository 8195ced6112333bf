"""A ring of pcapng files: what a live capture saw, kept for re-analysis offline.

Files rotate by size (and optionally by age) and only the newest ``files`` are kept, like
dumpcap's ring buffer (``-b filesize: -b files:``). Names sort in time order
(``smtpflow_00001_20261127T073000.pcapng``), so ``smtpflow analyze DIR`` reads them back in
order and stitches sessions across the boundaries. Each file starts with a section header
and one interface description per interface (its link type, name, and nanosecond
timestamps), so every file can be read on its own.
"""

from __future__ import annotations

import os
import struct
import time
from typing import BinaryIO

BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_EPB = 0x00000006
OPT_ENDOFOPT = 0
OPT_IF_NAME = 2
OPT_IF_TSRESOL = 9
OPT_SHB_USERAPPL = 4


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * ((-len(value)) % 4)


def _block(btype: int, body: bytes) -> bytes:
    body += b"\x00" * ((-len(body)) % 4)
    length = 12 + len(body)
    return struct.pack("<II", btype, length) + body + struct.pack("<I", length)


class RingWriter:
    """Writes records into rotating pcapng files in ``directory``."""

    def __init__(self, directory: str, interfaces: list[tuple[str, int]], size_mb: float = 100.0,
                 files: int = 10, seconds: float | None = None, prefix: str = "smtpflow") -> None:
        if files < 1:
            raise ValueError("the ring needs at least one file")
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.interfaces = interfaces  # (name, linktype)
        self.max_bytes = int(size_mb * 1024 * 1024)
        self.max_files = files
        self.seconds = seconds
        self.prefix = prefix
        self.written: list[str] = []
        self.sequence = 0
        self._fh: BinaryIO | None = None
        self._size = 0
        self._opened_at = 0.0
        self.packets = 0

    def _header(self) -> bytes:
        shb = struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + _option(OPT_SHB_USERAPPL, b"smtpflow live") + _option(OPT_ENDOFOPT, b"")
        out = _block(BT_SHB, shb)
        for name, linktype in self.interfaces:
            opts = _option(OPT_IF_NAME, name.encode()) + _option(OPT_IF_TSRESOL, bytes([9])) + _option(OPT_ENDOFOPT, b"")
            out += _block(BT_IDB, struct.pack("<HHI", linktype, 0, 262144) + opts)
        return out

    def _rotate(self) -> None:
        self.close()
        self.sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = os.path.join(self.directory, f"{self.prefix}_{self.sequence:05d}_{stamp}.pcapng")
        self._fh = open(path, "wb")
        header = self._header()
        self._fh.write(header)
        self._size = len(header)
        self._opened_at = time.monotonic()
        self.written.append(path)
        while len(self.written) > self.max_files:
            old = self.written.pop(0)
            try:
                os.remove(old)
            except OSError:
                pass

    def write(self, ts_ns: int, iface: int, frame: bytes, wirelen: int) -> None:
        if (
            self._fh is None
            or self._size >= self.max_bytes
            or (self.seconds is not None and time.monotonic() - self._opened_at >= self.seconds)
        ):
            self._rotate()
        body = struct.pack("<IIIII", iface, ts_ns >> 32, ts_ns & 0xFFFFFFFF, len(frame), wirelen) + frame
        block = _block(BT_EPB, body)
        assert self._fh is not None
        self._fh.write(block)
        self._size += len(block)
        self.packets += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
