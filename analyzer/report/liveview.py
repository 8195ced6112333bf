"""What ``smtpflow live`` shows while it runs: counters, sessions in flight, failures as they happen.

On a terminal a rich live display is redrawn about once a second, with each failure printed
above it as a permanent line. Without a terminal (``smtpflow live … | tee``) only the
failure lines and a periodic counter line are printed, so the output reads well in a log.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from ..diagnosis.verdicts import is_failing
from .safe import printable
from .terminal import OUTCOME_STYLES

#: Seconds between two counter lines when not on a terminal.
PLAIN_STATUS_EVERY_S = 30


def failure_line(record: dict[str, Any]) -> str:
    verdict = record.get("verdict") or {}
    when = dt.datetime.fromtimestamp(record["last_seen"], dt.timezone.utc).strftime("%H:%M:%S")
    server = f"{record['server']}:{record['server_port']}"
    if record.get("server_name"):
        server = f"{record['server_name']} ({server})"
    level = "FAIL" if verdict.get("severity") == "error" else "WARN"
    return printable(f"{when}  {level}  {record['client']}:{record['client_port']} → {server}  {record['outcome']}  {verdict.get('title', '')}")


def counters_line(stats: dict[str, Any]) -> str:
    dropped = stats["kernel_dropped"]
    rate = stats["packets"] / max(stats["elapsed_s"], 1e-3)
    return (
        f"{stats['elapsed_s']:.0f} s: {stats['packets']:,} packets captured ({rate:,.0f}/s), {stats['kept']:,} kept, "
        f"{dropped:,} dropped by the kernel{' — RESULTS ARE INCOMPLETE' if dropped else ''}; "
        f"{stats['sessions']} session(s) ended, {stats['failures']} with a problem, {stats['active']} open"
    )


class LiveView:
    """Hooks for :class:`analyzer.livecapture.LiveCapture`: ``on_session`` and ``on_tick``."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.quiet = quiet
        self.interactive = self.console.is_terminal and not quiet
        self.live = None
        self._last_plain = time.monotonic()

    def start(self, capture: Any) -> None:
        # Like tcpdump's "listening on", always said (on stderr): scripts wait for it.
        names = ", ".join(i["name"] for i in capture.stats["interfaces"])
        print(printable(f"smtpflow: capturing on {names}; kernel filter: {capture.filter}"), file=sys.stderr, flush=True)
        if self.interactive:
            from rich.live import Live

            self.live = Live(self._render(capture), console=self.console, refresh_per_second=2, transient=True)
            self.live.start()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def on_session(self, record: dict[str, Any]) -> None:
        if not is_failing(record):
            return
        line = Text(failure_line(record), style=OUTCOME_STYLES.get(record["outcome"], ""))
        self.console.print(line, soft_wrap=True)

    def on_tick(self, capture: Any) -> None:
        if self.live is not None:
            self.live.update(self._render(capture))
        elif not self.quiet and time.monotonic() - self._last_plain >= PLAIN_STATUS_EVERY_S:
            self._last_plain = time.monotonic()
            self.console.print(Text(counters_line(capture.stats)), soft_wrap=True)

    def _render(self, capture: Any):
        stats = capture.stats
        head = Text(counters_line(stats), style="bold red" if stats["kernel_dropped"] else "bold")
        table = Table(title="sessions in flight", title_justify="left", show_edge=False, header_style="bold")
        for column in ("client → server", "TCP", "TLS", "last reply"):
            table.add_column(column, overflow="fold")
        conns = list(capture.engine.table.active)[-12:]
        for conn in reversed(conns):
            from ..decode.ip import address_text

            analyzer = conn.analyzer
            tls = ""
            last = ""
            if analyzer is not None and hasattr(analyzer, "facts"):
                if analyzer.tls is not None:
                    summary = analyzer.tls.summary()
                    tls = (summary.get("version") or "TLS") + (" ✔" if summary.get("established") else " …")
                last = analyzer.facts.last_reply or ""
            table.add_row(
                printable(f"{address_text(conn.orig_addr)}:{conn.orig_port} → {address_text(conn.resp_addr)}:{conn.resp_port}"),
                f"{conn.conn_state()} {conn.history_string()[:12]}",
                printable(tls),
                printable(last[:50]),
            )
        recent = Table(title="recently ended", title_justify="left", show_edge=False, header_style="bold")
        for column in ("client → server", "outcome", "verdict"):
            recent.add_column(column, overflow="fold")
        for record in list(capture.recent)[-8:]:
            recent.add_row(
                printable(f"{record['client']}:{record['client_port']} → {record.get('server_name') or record['server']}:{record['server_port']}"),
                Text(record["outcome"], style=OUTCOME_STYLES.get(record["outcome"], "")),
                printable((record.get("verdict") or {}).get("title", "")),
            )
        return Group(head, table, recent)
