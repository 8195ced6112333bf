"""Capture layer: reading pcap/pcapng files (compressed or not) as a stream of raw records.

Nothing here looks inside a frame: records carry a timestamp in integer nanoseconds, the
link type and the frame's place in a read buffer. Decoding starts in :mod:`analyzer.decode`.
"""

from .errors import CaptureError, Damage, UnsupportedLinkType
from .files import STDIN, CaptureFile, CaptureSet, expand_inputs, open_capture
from .linktypes import SUPPORTED_LINKTYPES, linktype_name

__all__ = [
    "CaptureError",
    "CaptureFile",
    "CaptureSet",
    "Damage",
    "STDIN",
    "SUPPORTED_LINKTYPES",
    "UnsupportedLinkType",
    "expand_inputs",
    "linktype_name",
    "open_capture",
]
