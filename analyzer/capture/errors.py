"""Errors and damage reports raised or recorded while reading capture files."""

from __future__ import annotations

import lzma
from dataclasses import dataclass

from .gzipstream import INFLATE_ERRORS

#: What reading a capture stream raises when a file, or its compression, is truncated or corrupt.
READ_ERRORS = (EOFError, OSError, lzma.LZMAError, *INFLATE_ERRORS)


class CaptureError(Exception):
    """A file cannot be read as a capture at all (missing, unreadable, not a capture)."""


class UnsupportedLinkType(CaptureError):
    """The capture uses a link-layer type smtpflow cannot decode."""


@dataclass(frozen=True)
class Damage:
    """Where and why a capture file stopped being readable.

    Everything before ``offset`` was read; records after it are lost.
    ``offset`` counts bytes of the (decompressed) capture stream.
    """

    path: str
    offset: int
    record: int
    reason: str

    def describe(self) -> str:
        return (
            f"{self.path}: capture damaged at byte {self.offset} "
            f"(after {self.record} readable records): {self.reason}"
        )
