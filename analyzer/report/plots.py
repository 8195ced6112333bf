"""matplotlib views of a run: a timeline of sessions (swimlanes) and a capture overview.

Colours are the Okabe–Ito palette (readable by colour-blind people); every marker also has a
distinct shape, so nothing is told by colour alone. Both functions return a Figure (save it
as PNG or SVG with ``fig.savefig(path)``); with no sessions they draw a figure that says so.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any, Iterable, Iterator, Mapping

# The backend is the caller's choice: Jupyter's inline backend in a notebook, Agg in the CLI
# (analyzer.cli selects it), whatever the user configured elsewhere.
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..diagnosis.verdicts import is_failing
from .safe import printable

NS = 1_000_000_000

# Okabe–Ito
BLACK, ORANGE, SKY, GREEN, YELLOW, BLUE, VERMILLION, PURPLE, GREY = (
    "#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#999999"
)

OUTCOME_COLOURS = {
    "completed": GREEN,
    "incomplete": GREY,
    "closed_early": YELLOW,
    "smtp_error": VERMILLION,
    "tls_failed": ORANGE,
    "syn_unanswered": BLACK,
    "rejected_rst": PURPLE,
    "rejected_icmp": BLUE,
    "reset_by_middlebox": PURPLE,
}
REPLY_CLASS_COLOURS = {2: GREEN, 3: SKY, 4: ORANGE, 5: VERMILLION}

#: (label, marker, colour, size) per event kind drawn on a lane.
MARKERS = {
    "syn": ("SYN", "o", BLACK, 30),
    "syn_retry": ("SYN retry", "x", BLACK, 45),
    "syn_ack": ("SYN-ACK", "^", GREEN, 40),
    "rst_server": ("RST from server", "s", PURPLE, 45),
    "rst_middlebox": ("RST forged on the path", "D", VERMILLION, 55),
    "rst_client": ("RST from client", "s", GREY, 30),
    "icmp": ("ICMP error", "*", BLUE, 90),
    "tls_client_hello": ("TLS ClientHello", ">", SKY, 40),
    "tls_server_hello": ("TLS ServerHello", "<", SKY, 40),
    "tls_alert": ("TLS alert", "X", ORANGE, 70),
    "starttls": ("STARTTLS accepted", "P", SKY, 50),
    "fin": ("FIN", "|", GREY, 60),
}

MAX_LANES = 40


def _events_for(record: dict[str, Any], events: list[tuple[int, str, str, str]]):
    """(seconds, marker key, label) for the events a lane shows."""
    out = []
    middlebox = record.get("rst_from") == "middlebox"
    for ts, direction, kind, detail in events:
        key = None
        if kind in ("syn", "syn_retry", "syn_ack", "icmp", "tls_client_hello", "tls_server_hello", "tls_alert", "starttls", "fin"):
            key = kind
        elif kind == "rst":
            key = "rst_client" if direction == "client" else ("rst_middlebox" if middlebox else "rst_server")
        elif kind == "smtp_reply":
            code = detail[:3]
            if code.isdigit():
                out.append((ts / NS, f"reply{code[0]}", detail))
            continue
        if key is not None:
            out.append((ts / NS, key, detail))
    return out


def _lane_label(rec: dict[str, Any]) -> str:
    name = rec.get("server_name") or rec["server"]
    return printable(f"{rec['client']}:{rec['client_port']} → {name}:{rec['server_port']}")


def select(records: Iterable[dict[str, Any]], failing: bool = False, microsoft: bool = False, server: str | None = None) -> list[dict[str, Any]]:
    """Filter sessions for a timeline: only failing ones, only Microsoft's, only one server."""
    return list(selected(records, failing, microsoft, server))


def selected(records: Iterable[dict[str, Any]], failing: bool = False, microsoft: bool = False,
             server: str | None = None) -> Iterator[dict[str, Any]]:
    """:func:`select`, one record at a time (a spilled run's records are never all in memory)."""
    for rec in records:
        if failing and not is_failing(rec):
            continue
        if microsoft and not rec.get("microsoft"):
            continue
        if server and server not in (rec["server"], rec.get("server_name")):
            continue
        yield rec


def empty_figure(message: str, title: str) -> Figure:
    fig = plt.figure(figsize=(8, 2.5))
    fig.text(0.5, 0.55, message, ha="center", va="center", fontsize=13)
    fig.suptitle(title, fontsize=12)
    return fig


def plot_timeline(
    records: list[dict[str, Any]],
    events: dict[str, list[tuple[int, str, str, str]]],
    *,
    failing: bool = False,
    microsoft: bool = False,
    server: str | None = None,
    max_lanes: int = MAX_LANES,
    page: int = 0,
    align: str = "auto",
) -> Figure:
    """One swimlane per session: SYNs and retries, SYN-ACK, RSTs, ICMP, TLS steps, SMTP replies.

    More sessions than ``max_lanes`` are paginated (``page`` 0, 1, …); the title says which.
    ``align``: "capture" puts every lane on the capture's clock; "session" starts every lane at
    its own first packet (on a scale that is linear up to 0.1 s and logarithmic beyond, so a
    20 ms handshake and a 7 s series of SYN retries are both readable); "auto" picks "session"
    when sessions are short compared with the time they are spread over.
    """
    page = max(page, 0)
    chosen, lanes = timeline_pages(records, failing, microsoft, server, max_lanes, wanted=(page,))
    pages = (chosen + max_lanes - 1) // max_lanes
    page = max(0, min(page, pages - 1))
    return draw_timeline(lanes.get(page, []), events, chosen, page, failing=failing, microsoft=microsoft,
                         max_lanes=max_lanes, align=align)


def timeline_pages(records: Iterable[dict[str, Any]], failing: bool = False, microsoft: bool = False,
                   server: str | None = None, max_lanes: int = MAX_LANES,
                   wanted: Iterable[int] = (0,)) -> tuple[int, dict[int, list[dict[str, Any]]]]:
    """In one pass over the records: how many sessions the timeline shows, and the lanes of
    the ``wanted`` pages, plus those of the last page (shown when a wanted one is past it)."""
    wanted = set(wanted)
    chosen = 0
    lanes: dict[int, list[dict[str, Any]]] = {}
    for rec in selected(records, failing, microsoft, server):
        page = chosen // max_lanes
        if chosen % max_lanes == 0 and page - 1 not in wanted:
            lanes.pop(page - 1, None)  # only the latest page beyond the wanted ones is kept
        lanes.setdefault(page, []).append(rec)
        chosen += 1
    return chosen, lanes


def draw_timeline(shown: list[dict[str, Any]], events: Mapping[str, list[tuple[int, str, str, str]]], chosen: int, page: int, *,
                  failing: bool = False, microsoft: bool = False, max_lanes: int = MAX_LANES, align: str = "auto") -> Figure:
    """The swimlanes of one page of :func:`plot_timeline`: ``shown`` are its sessions, ``chosen``
    how many the whole timeline has."""
    title = "Session timeline" + (" — failing sessions" if failing else "") + (" — Microsoft endpoints" if microsoft else "")
    if not chosen:
        return empty_figure("No sessions to show", title)
    pages = (chosen + max_lanes - 1) // max_lanes
    t0 = min(r["first_seen"] for r in shown)
    t_end = max(r["last_seen"] for r in shown)
    span = max(t_end - t0, 1e-3)
    if align == "auto":
        durations = sorted(r["last_seen"] - r["first_seen"] for r in shown)
        align = "session" if len(shown) > 1 and durations[len(durations) // 2] < 0.02 * span else "capture"
    per_session = align == "session"
    if per_session:
        span = max(max(r["last_seen"] - r["first_seen"] for r in shown), 0.2)
    height = 1.6 + 0.42 * len(shown)
    fig, ax = plt.subplots(figsize=(13, height))
    used: dict[str, str] = {}
    for lane, rec in enumerate(shown):
        y = len(shown) - 1 - lane
        base = rec["first_seen"] if per_session else t0
        colour = OUTCOME_COLOURS.get(rec["outcome"], GREY)
        ax.hlines(y, rec["first_seen"] - base, rec["last_seen"] - base, colors=colour, linewidth=3, alpha=0.35)
        labelled_codes = 0
        for when, key, detail in _events_for(rec, events.get(rec["session_id"], [])):
            x = max(when - base, 0.0)
            if key.startswith("reply"):
                cls = int(key[-1])
                ax.scatter([x], [y], marker="o", s=36, color=REPLY_CLASS_COLOURS.get(cls, GREY), edgecolors=BLACK, linewidths=0.4, zorder=3)
                used[f"reply{cls}"] = f"SMTP reply {cls}xx"
                if cls in (4, 5) and labelled_codes < 3:
                    code = " ".join(detail.split()[:2]) if len(detail.split()) > 1 and detail.split()[1][:1].isdigit() else detail[:3]
                    ax.annotate(printable(code), (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
                    labelled_codes += 1
                continue
            label, marker, mcolour, size = MARKERS[key]
            ax.scatter([x], [y], marker=marker, s=size, color=mcolour, zorder=4)
            used[key] = label
        verdict = (rec.get("verdict") or {}).get("title") or rec["outcome"]
        verdict = verdict if len(verdict) <= 58 else verdict[:57] + "…"
        ax.annotate(printable(verdict), (rec["last_seen"] - base, y), textcoords="offset points", xytext=(8, -3), fontsize=7.5, color=BLACK)
    ax.set_yticks(range(len(shown)))
    ax.set_yticklabels([_lane_label(r) for r in reversed(shown)], fontsize=8)
    ax.set_ylim(-0.8, len(shown) - 0.2)
    start = dt.datetime.fromtimestamp(t0, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    if per_session:
        ax.set_xscale("symlog", linthresh=0.1, linscale=0.6)
        ax.set_xlim(0, span * 30)
        ax.set_xlabel(f"seconds since each session's first packet (linear to 0.1 s, then logarithmic); first session at {start}")
    else:
        ax.set_xlim(-0.02 * span, span * 1.5)
        ax.set_xlabel(f"seconds since {start}")
    paging = f" (sessions {page * max_lanes + 1}–{page * max_lanes + len(shown)} of {chosen}, page {page + 1}/{pages})" if pages > 1 else ""
    ax.set_title(title + paging, fontsize=12, loc="left")
    ax.grid(axis="x", alpha=0.3)
    handles = []
    for key, label in used.items():
        if key.startswith("reply"):
            handles.append(Line2D([], [], marker="o", linestyle="", color=REPLY_CLASS_COLOURS.get(int(key[-1]), GREY), markeredgecolor=BLACK, label=label))
        else:
            _label, marker, mcolour, _size = MARKERS[key]
            handles.append(Line2D([], [], marker=marker, linestyle="", color=mcolour, label=label))
    outcomes = sorted({r["outcome"] for r in shown})
    handles += [Line2D([], [], color=OUTCOME_COLOURS.get(o, GREY), linewidth=4, alpha=0.5, label=f"outcome: {o}") for o in outcomes]
    columns = 5
    rows = (len(handles) + columns - 1) // columns
    legend_inches = 0.25 * rows + 0.35
    fig.set_size_inches(13, height + legend_inches)
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, legend_inches / (height + legend_inches), 1, 1))
    return fig


def plot_overview(records: Iterable[dict[str, Any]], bins: int = 30) -> Figure:
    """Four panels: outcomes over time, handshake RTT per server, reply codes, SYN retry gaps."""
    # One pass over the records (a spilled run reads them from disk): keep only the numbers.
    starts: list[tuple[float, str]] = []
    per_server: dict[str, list[float]] = {}
    codes: Counter[str] = Counter()
    gaps: Counter[float] = Counter()
    for rec in records:
        starts.append((rec["first_seen"], rec["outcome"]))
        if rec.get("handshake_rtt") is not None:
            per_server.setdefault(printable(rec.get("server_name") or rec["server"]), []).append(rec["handshake_rtt"] * 1000)
        for reply in (rec.get("smtp") or {}).get("replies") or []:
            codes[f"{reply['code']} {reply.get('enhanced') or ''}".strip()] += 1
        for gap in rec.get("syn_retry_gaps") or []:
            gaps[round(gap, 1)] += 1
    if not starts:
        return empty_figure("No sessions in this capture", "Capture overview")
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    (a1, a2), (a3, a4) = axes

    # Outcomes over time.
    t0 = min(first for first, _ in starts)
    t1 = max(first for first, _ in starts)
    width = max((t1 - t0) / bins, 1e-3)
    seen = {outcome for _, outcome in starts}
    outcomes = [o for o in OUTCOME_COLOURS if o in seen]
    bottoms = [0] * bins
    for outcome in outcomes:
        counts = [0] * bins
        for first, what in starts:
            if what == outcome:
                counts[min(int((first - t0) / width), bins - 1)] += 1
        a1.bar([i * width for i in range(bins)], counts, width=width, bottom=bottoms, align="edge", color=OUTCOME_COLOURS[outcome], label=outcome, edgecolor="white", linewidth=0.3)
        bottoms = [b + c for b, c in zip(bottoms, counts)]
    a1.set_title("How connection attempts ended, over time")
    a1.set_xlabel(f"seconds since {dt.datetime.fromtimestamp(t0, dt.timezone.utc):%H:%M:%S} UTC")
    a1.set_ylabel("connection attempts")
    a1.legend(fontsize=8)

    # Handshake RTT per server.
    if per_server:
        names = sorted(per_server, key=lambda n: -len(per_server[n]))[:12]
        a2.boxplot([per_server[n] for n in names], orientation="horizontal")
        a2.set_yticks(range(1, len(names) + 1))
        a2.set_yticklabels(names, fontsize=7)
        a2.set_xlabel("milliseconds from SYN to SYN-ACK")
    else:
        a2.text(0.5, 0.5, "no completed TCP handshake", ha="center", va="center", transform=a2.transAxes)
    a2.set_title("How quickly servers answered the connection (handshake round trip)")

    # Reply codes by count.
    if codes:
        common = codes.most_common(15)
        labels = [c for c, _ in common][::-1]
        values = [n for _, n in common][::-1]
        colours = [REPLY_CLASS_COLOURS.get(int(label[0]), GREY) for label in labels]
        a3.barh(labels, values, color=colours, edgecolor=BLACK, linewidth=0.3)
        a3.set_xlabel("replies")
    else:
        a3.text(0.5, 0.5, "no SMTP reply visible (none, or all inside TLS)", ha="center", va="center", transform=a3.transAxes)
    a3.set_title("SMTP replies seen, by code (green ok · orange temporary · red permanent)")

    # SYN retry gaps.
    if gaps:
        values = sorted(gaps)
        a4.bar([f"{v:g} s" for v in values], [gaps[v] for v in values], color=BLACK, alpha=0.8)
        a4.set_xlabel("wait before a SYN was sent again")
        a4.set_ylabel("retransmitted SYNs")
    else:
        a4.text(0.5, 0.5, "no SYN was retransmitted", ha="center", va="center", transform=a4.transAxes)
    a4.set_title("SYN retries (1 s, 2 s, 4 s … = nobody answered)")
    fig.suptitle("Capture overview", fontsize=14)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str, dpi: int = 110) -> str:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def pages_needed(records: Iterable[dict[str, Any]], max_lanes: int = MAX_LANES) -> int:
    n = sum(1 for _ in records)
    return max(1, (n + max_lanes - 1) // max_lanes)
