"""File exports: CSV and Parquet tables (and Zeek logs, see :mod:`.zeeklogs`).

Nested fields of the JSON contract (``tls``, ``smtp``, ``verdict`` …) are written as JSON
strings in CSV and Parquet, so every tool reads them (DuckDB: ``json_extract``).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pandas as pd

from .safe import ExportError, json_default

TABLES = ("sessions", "events", "replies", "tls", "dns")


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """Nested (object) columns as JSON strings; everything else unchanged."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: None if v is None else json.dumps(v, default=json_default, ensure_ascii=False) if isinstance(v, (dict, list, tuple)) else v)
    return out


def tables(analysis: Any) -> dict[str, pd.DataFrame]:
    return {name: getattr(analysis, name) for name in TABLES}


def write_csv(analysis: Any, output: str | None) -> list[str]:
    if output is None:
        flat(analysis.sessions).to_csv(sys.stdout, index=False)
        return []
    if output.endswith(".csv"):
        flat(analysis.sessions).to_csv(output, index=False)
        return [output]
    os.makedirs(output, exist_ok=True)
    written = []
    for name, df in tables(analysis).items():
        path = os.path.join(output, f"{name}.csv")
        flat(df).to_csv(path, index=False)
        written.append(path)
    return written


def write_parquet(analysis: Any, output: str | None) -> list[str]:
    if output is None:
        raise ExportError("--format parquet needs -o DIRECTORY (one .parquet file per table)")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ExportError(f"{output}: exists and is not a directory")
    os.makedirs(output, exist_ok=True)
    written = []
    for name, df in tables(analysis).items():
        path = os.path.join(output, f"{name}.parquet")
        flat(df).to_parquet(path, engine="pyarrow", index=False)
        written.append(path)
    return written


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
