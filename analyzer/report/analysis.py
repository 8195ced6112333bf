"""The object notebooks and scripts work with: a run's records as DataFrames, plus views."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from ..diagnosis.store import SessionStore
from ..engine import RunResult
from .follow import transcript_text
from .safe import dumps_json, json_line

if TYPE_CHECKING:  # pandas is imported when a DataFrame is first asked for, not before
    import pandas as pd


class SessionNotFound(KeyError):
    """No session matches the id (or id prefix, or row number) given."""


class Analysis:
    """The result of :func:`analyzer.analyze`.

    DataFrames (built on first use, joinable on ``session_id``):
    ``sessions`` (one row per TCP connection attempt: the JSON contract plus flattened
    ``tls_*``, ``smtp_*``, ``reply_*``, ``verdict_*`` columns), ``events`` (SYN, retries,
    SYN-ACK, RST, ICMP, TLS steps, SMTP commands and replies, one row each), ``replies``
    (every SMTP reply with the command it answered), ``tls`` (one row per TLS attempt) and
    ``dns`` (lookups of mail and Microsoft names, and every failed lookup).
    """

    def __init__(self, result: RunResult) -> None:
        self._result = result
        self.records: list[dict[str, Any]] = result.records
        self.capture: dict[str, Any] = result.capture
        self.stats: dict[str, Any] = result.stats
        self.errors: list[str] = result.errors
        self.warnings: list[str] = result.warnings
        self.damage: list[str] = result.damage

    # -- frames -------------------------------------------------------------------------------
    @cached_property
    def sessions(self) -> "pd.DataFrame":
        from . import frames

        return frames.sessions_frame(self.records)

    @cached_property
    def events(self) -> "pd.DataFrame":
        from . import frames

        return frames.events_frame(self.records, self._result.events)

    @cached_property
    def replies(self) -> "pd.DataFrame":
        from . import frames

        return frames.replies_frame(self.records)

    @cached_property
    def tls(self) -> "pd.DataFrame":
        from . import frames

        return frames.tls_frame(self.records)

    @cached_property
    def dns(self) -> "pd.DataFrame":
        from . import frames

        return frames.dns_frame(self._result.dns)

    # -- views ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The capture-level diagnosis: headline, dropped_before_microsoft, findings, outcomes."""
        return self._result.summary

    def record(self, session: str | int) -> dict[str, Any]:
        """The JSON record of a session, by id, unique id prefix, or row number."""
        if isinstance(session, int) or (isinstance(session, str) and session.isdigit() and not session.startswith("C")):
            index = int(session)
            if 0 <= index < len(self.records):
                return self.records[index]
            raise SessionNotFound(f"no session number {index} (there are {len(self.records)})")
        matches = [r for r in self.records if r["session_id"] == session]
        if not matches:
            matches = [r for r in self.records if r["session_id"].startswith(session)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise SessionNotFound(f"no session {session!r}")
        raise SessionNotFound(f"{session!r} matches {len(matches)} sessions; give more of the id")

    def session_events(self, session: str | int) -> list[tuple[int, str, str, str]]:
        return self._result.events.get(self.record(session)["session_id"], [])

    def follow(self, session: str | int) -> str:
        """The session as a timestamped, direction-tagged dialogue (credentials redacted)."""
        record = self.record(session)
        text = transcript_text(record, self._result.events.get(record["session_id"], []))
        return text

    # -- plots ------------------------------------------------------------------------------------
    def plot_timeline(self, *, failing: bool = False, microsoft: bool = False, server: str | None = None,
                      max_lanes: int = 40, page: int = 0, align: str = "auto"):
        """Swimlanes of sessions (see :func:`analyzer.report.plots.plot_timeline`); returns a Figure."""
        from . import plots

        return plots.plot_timeline(self.records, self._result.events, failing=failing, microsoft=microsoft,
                                   server=server, max_lanes=max_lanes, page=page, align=align)

    def plot_overview(self):
        """Outcomes over time, handshake RTT per server, reply codes, SYN retry gaps; returns a Figure."""
        from . import plots

        return plots.plot_overview(self.records)

    # -- exports ----------------------------------------------------------------------------------
    def to_html(self, directory: str) -> str:
        """Write ``report.html`` (self-contained) and its PNGs into ``directory``; return the page's path."""
        from .html import write_report

        return write_report(self, directory)["report"]

    def to_parquet(self, directory: str) -> list[str]:
        """One Parquet file per table (sessions, events, replies, tls, dns) in ``directory``."""
        from .exports import write_parquet

        return write_parquet(self, directory)

    def to_csv(self, directory: str) -> list[str]:
        from .exports import write_csv

        return write_csv(self, directory)

    def to_zeek(self, directory: str) -> list[str]:
        """conn.log, smtp.log and ssl.log in Zeek's TSV format."""
        from .zeeklogs import write_zeek

        return write_zeek(self, directory)

    def to_jsonl(self, path_or_file: Any) -> None:
        """One JSON object per session (the stable contract), one per line, in UTF-8."""
        if not hasattr(path_or_file, "write"):
            with open(path_or_file, "wb") as fh:
                _write_jsonl(self.records, fh.write)
            return
        binary = _utf8_buffer(path_or_file)
        if binary is None:  # a StringIO, or a file that encodes otherwise: text it takes
            write = path_or_file.write
            for record in self.records:
                write(dumps_json(record) + "\n")
            return
        path_or_file.flush()  # what was written as text before goes first
        _write_jsonl(self.records, binary.write, path_or_file.errors or "strict")
        binary.flush()

    @property
    def exit_code(self) -> int:
        """0 analysed; 3 analysed but a capture was damaged (results partial); 2 some input unreadable;
        130 (128 + SIGINT, as for any command Ctrl-C ends) the reading was stopped by Ctrl-C."""
        if self.capture.get("interrupted"):
            return 130
        if self.damage:
            return 3
        if self.errors:
            return 2
        return 0

    def __repr__(self) -> str:
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(self.summary().get("outcomes", {}).items()))
        return f"<Analysis: {len(self.records)} sessions ({outcomes or 'none'})>"


def _write_jsonl(records: Iterable[dict[str, Any]], write: Callable[[bytes], Any], errors: str = "strict") -> None:
    # Every key of a record is public (the contract in diagnosis/records.py): written as it is.
    if isinstance(records, SessionStore):
        lines = records.json_lines(errors)  # a spilled store of records keeps their JSON text
    else:
        lines = (json_line(record, errors) for record in records)
    for line in lines:
        write(line)


def _utf8_buffer(fh: Any) -> Any:
    """The binary file under a text file that writes UTF-8 (sys.stdout, open(..., "w")), or None."""
    buffer = getattr(fh, "buffer", None)
    encoding = getattr(fh, "encoding", None)
    if buffer is None or not encoding:
        return None
    try:
        return buffer if codecs.lookup(encoding).name == "utf-8" else None
    except LookupError:
        return None
