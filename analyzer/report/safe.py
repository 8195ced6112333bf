"""Making strings from the wire safe to show: terminals (no control sequences) and JSON."""

from __future__ import annotations

import datetime as _dt
import json
import re
from typing import Any

try:  # a compiled encoder, four times faster than json's on session records
    import orjson
except ImportError:  # pragma: no cover - which branch runs depends on the installation
    orjson = None

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


def dumps_json(value: Any) -> str:
    """Compact JSON text (no spaces after separators, non-ASCII kept as is) with ``json_default``
    for the rest: orjson's when it is installed, else the standard library's. The two agree
    on every value records hold, except how tiny floats are written (``1e-05`` / ``0.00001``)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=json_default, option=_ORJSON_OPTIONS).decode("utf-8")
        except TypeError:
            pass  # an integer beyond 64 bits, say: the standard encoder takes anything JSON can hold
    return _COMPACT.encode(value)


if orjson is not None:
    # Keys that are not strings become strings, and dates and dataclasses go to json_default: as json does.
    _ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_COMPACT = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))
