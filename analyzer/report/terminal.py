"""The terminal view: the capture-level answer first, then findings, then one row per session.

Colour only on a terminal (rich decides; ``NO_COLOR`` is honoured). Every string from the
wire goes through :func:`~analyzer.report.safe.printable` and into ``rich.text.Text``
objects (the sessions tables: the plain text of one, laid out by ``grid.py``), so neither
control sequences nor rich markup from a packet can reach the screen.
"""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any, Iterable

from rich import box
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..diagnosis.summary import MAX_SHOWN_FINDINGS, more_findings
from ..diagnosis.verdicts import failing_first, is_failing
from .grid import Column, paragraph, print_table
from .safe import printable

OUTCOME_STYLES = {
    "completed": "green",
    "incomplete": "cyan",
    "closed_early": "yellow",
    "smtp_error": "red",
    "tls_failed": "red",
    "syn_unanswered": "bold red",
    "rejected_rst": "red",
    "rejected_icmp": "red",
    "reset_by_middlebox": "bold magenta",
}
SEVERITY_MARKS = {"error": ("✖ error  ", "bold red"), "warning": ("▲ warning", "yellow"), "info": ("● info   ", "cyan"), "ok": ("✔ ok     ", "green")}
ANSWER_STYLES = {"yes": "bold red", "partly": "bold yellow", "no": "bold green", "unknown": "dim"}


def _t(value: Any, style: str = "") -> Text:
    return Text(printable(value), style=style)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%H:%M:%S.%f")[:-3]


def render_summary(console: Console, summary: dict[str, Any], capture: dict[str, Any], stats: dict[str, Any]) -> None:
    dropped = summary.get("dropped_before_microsoft") or {}
    answer = dropped.get("answer", "unknown")
    body = [
        _t(summary.get("headline", ""), "bold"),
        Text(""),
        Text.assemble(("Is traffic dropped before it reaches Microsoft? ", ""), (answer.upper(), ANSWER_STYLES.get(answer, "")), (" — ", ""), (printable(dropped.get("detail", "")), "")),
    ]
    console.print(Panel(Group(*body), title="Diagnosis", title_align="left", box=box.ROUNDED))
    findings = summary.get("findings") or []
    if findings:
        table = Table(box=None, show_header=False, pad_edge=False, expand=False)
        table.add_column(no_wrap=True)
        table.add_column()
        for finding in findings[:MAX_SHOWN_FINDINGS]:
            mark, style = SEVERITY_MARKS.get(finding["severity"], (finding["severity"], ""))
            table.add_row(Text(mark, style=style), Text.assemble((printable(finding["title"]), "bold"), "\n", printable(finding["detail"])))
        console.print(Text("Findings", style="bold underline"))
        console.print(table)
        if len(findings) > MAX_SHOWN_FINDINGS:
            console.print(Text(more_findings(len(findings) - MAX_SHOWN_FINDINGS), style="yellow"))



def window_line(capture: dict[str, Any]) -> str | None:
    """What a run's time window (``--since``/``--until``) read and left out, in one line; None
    without one."""
    span = _window_span(capture)
    if span is None:
        return None
    left = _window_left_out(capture)
    return f"Time window: only the packets {span} were read" + (f" ({left})" if left else "")


def _window_span(capture: dict[str, Any]) -> str | None:
    window = capture.get("window")
    if not window:
        return None
    since, until = window.get("since"), window.get("until")
    return f"from {since} to {until}" if since and until else f"from {since} on" if since else f"before {until}"


def _window_left_out(capture: dict[str, Any]) -> str:
    outside = capture.get("outside_window") or 0
    skipped = capture.get("skipped_files") or []
    left = []
    if outside:
        left.append(f"{outside:,} packet(s) outside it were left out")
    if skipped:
        left.append(f"{len(skipped):,} file(s) beginning after it were not read")
    return "; ".join(left)


def decryption_line(decryption: dict[str, int]) -> str:
    """One line on what the key log decrypted (run statistics' ``tls_decryption``)."""
    line = f"TLS decryption: {decryption['decrypted']} of {decryption['tls_sessions']} TLS session(s) decrypted with the key log"
    others = []
    if decryption.get("no_key"):
        others.append(f"{decryption['no_key']} without keys in it")
    if decryption.get("failed"):
        others.append(f"{decryption['failed']} failed (see tls.decryption_error)")
    return line + (f"; {', '.join(others)}" if others else "")


#: Below this many columns the sessions table stacks its fields in two columns.
WIDE_TABLE_MIN_WIDTH = 120


#: Sessions per printed table: a longer list is printed as several tables, one at a time, so
#: listing a relay's day of sessions does not hold them all (each table repeats its header).
SESSIONS_PER_TABLE = 1000
#: Sessions the table lists by default: past it, the failing ones first (a terminal table of
#: 300,000 sessions took rich three minutes to lay out, and nobody reads it). ``--rows 0``
#: lists every one; the exports always hold them all.
MAX_TABLE_SESSIONS = 2000


def render_sessions(console: Console, records: Iterable[dict[str, Any]], only_failed: bool = False,
                    limit: int | None = None) -> int:
    """One row per session, numbered as ``smtpflow follow`` numbers them (also when only the
    failing ones are shown), in tables of SESSIONS_PER_TABLE rows. At most ``limit`` rows
    (default MAX_TABLE_SESSIONS; 0: no limit): past it the failing sessions are listed first,
    then the others, in capture order, and a note says how many were left out. Returns the
    rows shown."""
    limit = MAX_TABLE_SESSIONS if limit is None else limit
    render = _render_sessions_narrow if console.width < WIDE_TABLE_MIN_WIDTH else _render_sessions_wide
    rows: Iterable[tuple[int, dict[str, Any]]] = (
        (index, rec) for index, rec in enumerate(records) if not only_failed or is_failing(rec))
    left_out = 0
    if limit:
        rows, total, failing = failing_first(rows, limit)
        left_out = total - len(rows)
    shown = 0
    rows = iter(rows)
    while chunk := list(itertools.islice(rows, SESSIONS_PER_TABLE)):
        if not shown:
            console.print(Text("Sessions", style="bold underline"))
        render(console, chunk)
        shown += len(chunk)
    if left_out:
        console.print(Text(
            f"This table lists {shown:,} of {shown + left_out:,} sessions ({'the failing ones first, ' if failing and not only_failed else ''}"
            f"at most {limit:,}; --rows N changes that, --rows 0 lists all). Every session is in the exports: "
            "--format jsonl, or --format csv -o DIR.", style="yellow"))
    return shown


WIDE_COLUMNS = (
    Column("#", justify="right", wrap=False),
    Column("start (UTC)", wrap=False),
    Column("client → server"),
    Column("conn", wrap=False),
    Column("outcome", wrap=False),
    Column("verdict"),
    Column("detail"),
)
NARROW_COLUMNS = (
    Column("#", justify="right", wrap=False),
    Column("session", ratio=2, overflow="ellipsis"),
    Column("outcome and verdict", ratio=3, overflow="ellipsis"),
)


def _render_sessions_wide(console: Console, rows: list[tuple[int, dict[str, Any]]]) -> None:
    cells = []
    for index, rec in rows:
        server = f"{rec['server']}:{rec['server_port']}"
        if rec.get("server_name"):
            server = f"{rec['server_name']} ({server})"
        who = paragraph(printable(f"{rec['client']}:{rec['client_port']}"), " → ", (printable(server), "bold"))
        if rec.get("microsoft"):
            who.append((" [MS]", "blue"))
        verdict = rec.get("verdict") or {}
        cells.append((
            [[(str(index), "")]],
            [[(_clock(rec.get("first_seen")), "")]],
            [who],
            [[(f"{rec['conn_state']} {rec['history']}", "")]],
            [[(rec["outcome"], OUTCOME_STYLES.get(rec["outcome"], ""))]],
            [[(printable(verdict.get("title", "")), "")]],
            [[(printable(_detail(rec)), "")]],
        ))
    print_table(console, WIDE_COLUMNS, cells)


def _render_sessions_narrow(console: Console, rows: list[tuple[int, dict[str, Any]]]) -> None:
    """A narrow terminal: who and when on the left, outcome, verdict and detail on the right."""
    cells = []
    for index, rec in rows:
        server = f"{rec['server']}:{rec['server_port']}"
        if rec.get("server_name"):
            server = f"{rec['server_name']} {server}"
        who = [
            paragraph(printable(f"{rec['client']}:{rec['client_port']}"), " →"),
            paragraph((printable(server), "bold"), (" [MS]", "blue") if rec.get("microsoft") else ""),
            paragraph((_clock(rec.get("first_seen")) + f"  {rec['conn_state']} {rec['history']}", "dim")),
        ]
        verdict = rec.get("verdict") or {}
        what = [paragraph((rec["outcome"], OUTCOME_STYLES.get(rec["outcome"], ""))), paragraph(printable(verdict.get("title", "")))]
        detail = _detail(rec)
        if detail:
            what.append(paragraph((printable(detail), "dim")))
        cells.append(([[(str(index), "")]], who, what))
    print_table(console, NARROW_COLUMNS, cells, expand=True, lines_between=True)


#: How much of the last reply a session's detail shows (its code, and the start of its text).
LAST_REPLY_WIDTH = 40


def shortened(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters: cut after a whole word, if one ends in the
    second half, and marked with an ellipsis: "221 2.0.0 Service closing transmission …", not
    "221 2.0.0 Service closing transmission c"."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    return (text[:cut + 1] if cut >= width // 2 else text[:width - 1]) + "…"


def _detail(rec: dict[str, Any]) -> str:
    parts = []
    if rec.get("syn_count", 0) > 1:
        parts.append(f"{rec['syn_count']} SYNs")
    if rec.get("rst_from"):
        parts.append(f"RST from {rec['rst_from']}")
    icmp = rec.get("icmp")
    if icmp:
        parts.append(f"ICMP {icmp['name']} from {icmp['from']}")
    tls = rec.get("tls") or {}
    if tls.get("attempted"):
        if tls.get("established"):
            parts.append(f"{tls.get('version') or 'TLS'} {tls.get('mode') or ''}".strip())
        else:
            parts.append("TLS failed" + (f": {tls['alert']}" if tls.get("alert") else ""))
        if tls.get("decrypted"):
            parts.append("decrypted")
        elif tls.get("decryption_error"):
            parts.append("not decrypted")
    reply = rec.get("decisive_reply")
    if reply:
        parts.append(f"{reply['code']} {reply.get('enhanced') or ''}".strip())
    elif (rec.get("smtp") or {}).get("last_reply"):
        parts.append("last: " + shortened(rec["smtp"]["last_reply"], LAST_REPLY_WIDTH))
    return "; ".join(parts)


def render_analysis(console: Console, analysis: Any, only_failed: bool = False, show_sessions: bool = True,
                    limit: int | None = None) -> None:
    capture = analysis.capture
    stats = analysis.stats
    files = capture.get("files") or []
    header = Text.assemble(
        ("smtpflow ", "bold"),
        printable(", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")),
        f"  —  {stats.get('packets', 0):,} packets, {len(analysis.records):,} session(s)",
    )
    console.print(header)
    for message in analysis.damage:
        console.print(_t("warning: " + message + " — results are partial", "yellow"))
    for message in analysis.errors:
        console.print(_t("error: " + message, "red"))
    for message in analysis.warnings:
        console.print(_t("warning: " + message, "yellow"))
    window = window_line(capture)
    if window:
        console.print(_t(window, "dim"))
    decryption = stats.get("tls_decryption")
    if decryption:
        console.print(_t(decryption_line(decryption), "dim"))
    render_summary(console, analysis.summary(), capture, stats)
    if show_sessions and analysis.records and render_sessions(console, analysis.records, only_failed, limit):
        console.print(Text("Use `smtpflow follow FILE SESSION` (a number or an id) to see one session as a dialogue.", style="dim"))
    elif not analysis.records:
        console.print(Text(nothing_found(analysis), style="yellow"))


def nothing_found(analysis: Any) -> str:
    stats = analysis.stats
    if not stats.get("packets"):
        span = _window_span(analysis.capture)
        if span is not None:
            left = _window_left_out(analysis.capture)
            return f"No packet of the capture is in the time window (the packets {span})" + (f": {left}." if left else ".")
        return "The capture holds no packets."
    seen = []
    for key, label in (("tcp", "TCP"), ("udp", "UDP"), ("icmp", "ICMP"), ("non_ip", "non-IP"), ("fragments", "fragments")):
        if stats.get(key):
            seen.append(f"{stats[key]:,} {label}")
    dns = (stats.get("dns") or {})
    return (
        "No SMTP session found (ports 25, 465, 587, 2525 and Microsoft's ranges were looked at; use --ports all or "
        f"--ports N,M for others). Seen instead: {', '.join(seen) or 'nothing decodable'} packets."
        + (" DNS lookups were found: see --format jsonl or the dns table." if dns.get("transactions") else "")
    )


def render_transcript(console: Console, text: str) -> None:
    console.print(Text(text))
