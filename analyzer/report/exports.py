"""File exports: CSV and Parquet tables (and Zeek logs, see :mod:`.zeeklogs`).

Nested fields of the JSON contract (``tls``, ``smtp``, ``verdict`` …) are written as JSON
strings in CSV and Parquet, so every tool reads them (DuckDB: ``json_extract``).
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .safe import ExportError, dumps_json

if TYPE_CHECKING:
    import pandas as pd

# numpy and pandas are imported where they are used: a CSV export needs no pandas (its import
# took 0.4 s of every export), and a Zeek one neither.

TABLES = ("sessions", "events", "replies", "tls", "dns")


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """Nested (object) columns as JSON strings; everything else unchanged."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None else dumps_json(v) if isinstance(v, (dict, list, tuple)) else v)
    return out


#: Nanoseconds in a second, millisecond, microsecond: the precisions pandas chooses between
#: when it writes a column of datetimes (as many decimals as the column needs).
_PRECISIONS = ((1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us"), (1, "ns"))


#: Sessions turned into DataFrames at a time when writing files: the tables of a long capture
#: are written piece by piece (CSV rows appended, Parquet row groups), never whole in memory.
#: On 57,000 sessions, 2,000 at a time added 67 MB to the peak, 500 at a time 35 MB (and 9 %
#: to the time).
EXPORT_CHUNK_SESSIONS = 500

#: DNS transactions turned into a DataFrame at a time: 50,000 rows with their answers as one
#: frame added 210 MB to the peak.
EXPORT_CHUNK_DNS = 2000


def row_chunks(analysis: Any) -> Iterator[dict[str, list[tuple]]]:
    """Each table's rows (``frames.session_rows`` …) for EXPORT_CHUNK_SESSIONS sessions at a
    time, in order; then the dns table's, EXPORT_CHUNK_DNS transactions at a time."""
    from . import frames
    from ..diagnosis.store import EventsBySession

    records = iter(analysis.records)
    events = analysis._result.events
    pairs = events.pairs() if isinstance(events, EventsBySession) else None
    first = True
    while (chunk := list(itertools.islice(records, EXPORT_CHUNK_SESSIONS))) or first:
        first = False
        chunk_events = dict(itertools.islice(pairs, len(chunk))) if pairs is not None else events
        yield {"sessions": frames.session_rows(chunk), "events": frames.event_rows(chunk, chunk_events),
               "replies": frames.reply_rows(chunk), "tls": frames.tls_rows(chunk)}
    transactions = iter(analysis._result.dns)  # may be spilled: read in order, not by index
    first = True
    while (rows := list(itertools.islice(transactions, EXPORT_CHUNK_DNS))) or first:
        first = False
        yield {"dns": frames.dns_rows(rows)}


def table_chunks(analysis: Any) -> Iterator[dict[str, pd.DataFrame]]:
    """``row_chunks`` as DataFrames. Concatenated, each equals the Analysis's own DataFrame."""
    from . import frames

    for chunk in row_chunks(analysis):
        yield {name: frames.table(rows, frames.KINDS[name]) for name, rows in chunk.items()}


# -- CSV, written by the csv module from the rows: the same bytes as pandas' to_csv of the
# DataFrames (tests compare them), without building frames (two thirds of an export's time).
#: The kinds whose values are converted before the csv module writes them (str() of what it is
#: given, "" for None): strings and categories go as they are.
_CONVERTED_KINDS = frozenset({"int", "float", "bool", "object", "utc_s", "utc_ns"})


def _utc_cells(values: list[Any], seconds: bool) -> list[str | None]:
    """A column of epoch times as the text pandas' to_csv writes for UTC datetimes
    (``2025-11-24 16:00:00.073833+00:00``: decimals by the column's precision, see _PRECISIONS),
    formatted by numpy: ``seconds`` floats rounded to the microsecond as ``frames._utc`` reads
    them, or nanoseconds."""
    import numpy as np

    missing = np.array([v is None or v != v for v in values], dtype=bool)
    if seconds:
        ns = np.array([0.0 if gone else v for v, gone in zip(values, missing)], dtype=np.float64)
        ns = np.round(ns * 1_000_000).astype(np.int64) * 1000
    else:
        ns = np.array([0 if gone else v for v, gone in zip(values, missing)], dtype=np.int64)
    present = ns[~missing]
    unit = next(unit for step, unit in _PRECISIONS if not (present % step).any())
    text = np.datetime_as_string(ns.view("datetime64[ns]"), unit=unit).tolist()
    return [None if gone else value.replace("T", " ", 1) + "+00:00" for value, gone in zip(text, missing)]


def _csv_rows(rows: list[tuple], kinds: dict[str, Any]) -> Iterable[Any]:
    """``rows`` as the csv module should write them for pandas' text. Converted a column at a
    time, each kind's rule written out in its own comprehension (a call per cell took a fifth
    of a CSV export's time)."""
    if not rows:
        return rows
    kinds_in_order = list(kinds.values())
    if not any(kind in _CONVERTED_KINDS for kind in kinds_in_order):
        return rows
    columns: list[Any] = list(zip(*rows))
    for i, kind in enumerate(kinds_in_order):
        values = columns[i]
        if kind == "utc_s" or kind == "utc_ns":
            columns[i] = _utc_cells(list(values), kind == "utc_s")
        elif kind == "int":
            columns[i] = [v if v is None or v.__class__ is int else int(v) for v in values]
        elif kind == "float":
            columns[i] = [None if v is None or v != v else v if v.__class__ is float else float(v) for v in values]
        elif kind == "bool":
            columns[i] = [v if v is None or v.__class__ is bool else bool(v) for v in values]
        elif kind == "object":
            columns[i] = [dumps_json(v) if isinstance(v, (dict, list, tuple)) else v for v in values]
    return zip(*columns)


def _write_csv_rows(fh: Any, rows: list[tuple], kinds: dict[str, Any], header: bool) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    if header:
        writer.writerow(kinds)
    writer.writerows(_csv_rows(rows, kinds))


def write_csv(analysis: Any, output: str | None) -> list[str]:
    from .frames import KINDS

    if output is None or output.endswith(".csv"):
        target = sys.stdout if output is None else open(output, "w", encoding="utf-8", newline="")  # noqa: SIM115
        try:
            header = True
            for chunk in row_chunks(analysis):
                if "sessions" in chunk:
                    _write_csv_rows(target, chunk["sessions"], KINDS["sessions"], header)
                    header = False
        finally:
            if target is not sys.stdout:
                target.close()
        return [] if output is None else [output]
    os.makedirs(output, exist_ok=True)
    paths = {name: os.path.join(output, f"{name}.csv") for name in TABLES}
    started: set[str] = set()
    for chunk in row_chunks(analysis):
        for name, rows in chunk.items():
            with open(paths[name], "a" if name in started else "w", encoding="utf-8", newline="") as fh:
                _write_csv_rows(fh, rows, KINDS[name], name not in started)
            started.add(name)
    return [paths[name] for name in TABLES]


def write_parquet(analysis: Any, output: str | None) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if output is None:
        raise ExportError("--format parquet needs -o DIRECTORY (one .parquet file per table)")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ExportError(f"{output}: exists and is not a directory")
    os.makedirs(output, exist_ok=True)
    paths = {name: os.path.join(output, f"{name}.parquet") for name in TABLES}
    writers: dict[str, Any] = {}
    try:
        for chunk in table_chunks(analysis):
            for name, df in chunk.items():
                table = pa.Table.from_pandas(flat(df), preserve_index=False)
                writer = writers.get(name)
                if writer is None:
                    # A column with no value in the first piece has no type yet: JSON text it is.
                    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_null(f.type) else f for f in table.schema],
                                       metadata=table.schema.metadata)
                    writer = writers[name] = pq.ParquetWriter(paths[name], schema)
                writer.write_table(table.cast(writer.schema))
    finally:
        for writer in writers.values():
            writer.close()
    return [paths[name] for name in TABLES]


def write(analysis: Any, fmt: str, output: str | None) -> list[str]:
    if fmt == "csv":
        return write_csv(analysis, output)
    if fmt == "parquet":
        return write_parquet(analysis, output)
    if fmt == "zeek":
        from .zeeklogs import write_zeek

        if output is None:
            raise ExportError("--format zeek needs -o DIRECTORY (conn.log, smtp.log, ssl.log)")
        return write_zeek(analysis, output)
    raise ExportError(f"unknown format {fmt}")
