"""Session records as JSON text: the one encoding the exports write and the records' store keeps.

A record holds only what JSON holds (objects with string keys, arrays, strings, integers,
floats, booleans, null; ``tests/test_store.py`` checks every capture's), so its JSON text
reads back equal: past ``MAX_SESSIONS_IN_MEMORY`` the store keeps records as the very bytes
``--format jsonl`` writes, and the export copies them.
"""

from __future__ import annotations

import datetime as _dt
import json
import pickle
from typing import Any

try:  # a compiled encoder, four times faster than json's on session records
    import orjson
except ImportError:  # pragma: no cover - which branch runs depends on the installation
    orjson = None


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for what records may hold besides JSON types."""
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_COMPACT = json.JSONEncoder(default=json_default, ensure_ascii=False, separators=(",", ":"))
if orjson is not None:
    # Keys that are not strings become strings, and dates and dataclasses go to json_default: as json does.
    _ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
    _ORJSON_LINE = _ORJSON_OPTIONS | orjson.OPT_APPEND_NEWLINE


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


def json_line(value: Any, errors: str = "strict") -> bytes:
    """``dumps_json(value)`` and a newline, in UTF-8 (``errors`` as the text file's): orjson
    writes those bytes itself, a third faster than making text that a file then encodes."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=json_default, option=_ORJSON_LINE)
        except TypeError:
            pass
    return (_COMPACT.encode(value) + "\n").encode("utf-8", errors)


# -- the records' store: JSON where orjson writes it, else pickle --------------------------------
_PICKLED = 0x80  # the first byte of a pickle (protocol 2 and later); JSON text never starts so


def dump_record(record: dict[str, Any]) -> bytes:
    """A record as stored: its JSON text (what ``json_line`` writes, without the newline), or
    a pickle where orjson declines it (an integer beyond 64 bits) or is not installed."""
    if orjson is not None:
        try:
            return orjson.dumps(record, default=json_default, option=_ORJSON_OPTIONS)
        except TypeError:
            pass
    return pickle.dumps(record, pickle.HIGHEST_PROTOCOL)


def load_record(blob: bytes | memoryview) -> dict[str, Any]:
    if blob[0] == _PICKLED:
        return pickle.loads(blob)
    return orjson.loads(blob)


def stored_json_line(blob: bytes | memoryview, errors: str = "strict") -> bytes:
    """What ``json_line`` writes of the record stored as ``blob``, mostly without reading it."""
    if blob[0] == _PICKLED:
        return json_line(pickle.loads(blob), errors)
    return bytes(blob) + b"\n"
