"""Making strings from the wire safe to show: terminals (no control sequences) and JSON."""

from __future__ import annotations

import re
from typing import Any

# The records' JSON encoding lives with the records (diagnosis); the views use it from here.
from ..diagnosis.jsontext import dumps_json, json_default, json_line  # noqa: F401

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


