"""Making strings from the wire safe to show: terminals (no control sequences) and JSON."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

#: C0 controls (but tab), DEL, C1 controls, and the Unicode bidi overrides that can disguise text.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class ExportError(ValueError):
    """An export cannot be written as asked (missing or wrong output path)."""


def printable(text: Any) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``), never executed."""
    if text is None:
        return ""
    s = str(text)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", s)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for what records may hold besides JSON types."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
