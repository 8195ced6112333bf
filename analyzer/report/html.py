"""A self-contained HTML report: the answer first, then sessions, timelines and transcripts.

One file (images embedded as data: URIs) that can be mailed to a colleague or to Microsoft
support; the PNGs are written beside it as well. Every string that came from the wire is
HTML-escaped, and the page carries a Content-Security-Policy that allows no script at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import itertools
import os
from collections.abc import Iterator
from typing import Any

from .. import __version__
from ..diagnosis.summary import MAX_SHOWN_FINDINGS, more_findings
from ..diagnosis.verdicts import failing_first
from . import plots
from .follow import transcript_text
from .terminal import decryption_line, window_line

MAX_TIMELINE_PAGES = 8
#: Sessions the page lists, with their transcripts; beyond, the failing ones come first and a
#: note points to the exports (a page of 50,000 transcripts helps nobody, nor any browser).
MAX_REPORT_SESSIONS = 2_000

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Roboto, sans-serif; margin: 2rem auto; max-width: 1200px; color: #111; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
.meta { color: #555; font-size: 0.9rem; }
.answer { border: 2px solid #333; border-radius: 8px; padding: 1rem 1.2rem; background: #fafafa; }
.answer .headline { font-size: 1.15rem; font-weight: 600; }
.badge { display: inline-block; padding: 0.05rem 0.55rem; border-radius: 999px; font-weight: 700; font-size: 0.85rem; color: #fff; }
.yes, .error { background: #D55E00; } .partly, .warning { background: #E69F00; color: #000; } .no, .ok { background: #009E73; }
.unknown, .info { background: #999; }
table { border-collapse: collapse; width: 100%; font-size: 0.88rem; } th, td { border-bottom: 1px solid #e4e4e4; padding: 0.35rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; white-space: nowrap; } code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; }
pre { background: #f7f7f7; border: 1px solid #e4e4e4; padding: 0.6rem; overflow-x: auto; font-size: 0.8rem; white-space: pre-wrap; word-break: break-word; }
details { margin: 0.3rem 0; } summary { cursor: pointer; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
.warn { background: #fff4e5; border-left: 4px solid #E69F00; padding: 0.4rem 0.8rem; }
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def e(value: Any) -> str:
    """Escape anything for HTML text and attribute context."""
    return html.escape("" if value is None else str(value), quote=True)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plots.plt.close(fig)
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _tls_cell(tls: dict[str, Any]) -> str:
    if not tls.get("attempted"):
        return "—"
    text = f"{tls.get('version') or 'TLS'} {tls.get('mode') or ''}".strip() if tls.get("established") else "failed"
    if tls.get("decrypted"):
        text += ", decrypted"
    elif tls.get("decryption_error"):
        text += f", not decrypted ({tls['decryption_error']})"
    return text


def render(analysis: Any, images: dict[str, bytes]) -> str:
    summary = analysis.summary()
    records = analysis.records
    listed = _listed(records)
    capture = analysis.capture
    dropped = summary.get("dropped_before_microsoft") or {}
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>smtpflow report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>smtpflow report</h1>",
        f'<p class="meta">{e(", ".join(capture.get("files") or []))} — {analysis.stats.get("packets", 0):,} packets, '
        f"{len(records)} session(s)"
        + (f", {e(_when(records[0]['first_seen']))} to {e(_when(listed.last_seen))} UTC" if records else "")
        + f". Generated {e(dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} by smtpflow {e(__version__)}.</p>",
    ]
    window = window_line(capture)
    if window:
        parts.append(f'<p class="meta">{e(window)}.</p>')
    for message in analysis.damage:
        parts.append(f'<p class="warn">Capture damaged: {e(message)} — results are partial.</p>')
    for message in list(analysis.errors) + list(analysis.warnings):
        parts.append(f'<p class="warn">{e(message)}</p>')
    decryption = analysis.stats.get("tls_decryption")
    if decryption:
        parts.append(f'<p class="meta">{e(decryption_line(decryption))}.</p>')

    answer = dropped.get("answer", "unknown")
    parts += [
        "<h2>Why does mail fail?</h2>",
        '<div class="answer">',
        f'<p class="headline">{e(summary.get("headline"))}</p>',
        f'<p>Is traffic dropped before it reaches Microsoft? <span class="badge {e(answer)}">{e(answer.upper())}</span> {e(dropped.get("detail"))}</p>',
        "</div>",
    ]
    findings = summary.get("findings") or []
    if findings:
        parts.append("<h3>Findings</h3><table><tr><th>severity</th><th>finding</th><th>detail</th><th>sessions</th></tr>")
        for finding in findings[:MAX_SHOWN_FINDINGS]:
            parts.append(
                f'<tr><td><span class="badge {e(finding["severity"])}">{e(finding["severity"])}</span></td>'
                f'<td>{e(finding["title"])}</td><td>{e(finding["detail"])}</td><td class="num">{finding["count"]}</td></tr>'
            )
        parts.append("</table>")
        if len(findings) > MAX_SHOWN_FINDINGS:
            parts.append(f'<p class="warn">{e(more_findings(len(findings) - MAX_SHOWN_FINDINGS))}</p>')
    if "overview" in images:
        parts += ["<h2>Overview</h2>", _img(images["overview"], "Capture overview")]

    parts.append("<h2>Sessions</h2>")
    if not records:
        parts.append("<p>No SMTP session was found in this capture.</p>")
    else:
        if listed.left_out:
            parts.append(f'<p class="warn">This page lists {len(listed.indices):,} of the {len(records):,} sessions'
                         f" ({'the failing ones first, ' if listed.failing else ''}at most {MAX_REPORT_SESSIONS:,}); "
                         "every session is in the exports (<code>smtpflow analyze FILE --format csv -o DIR</code>, "
                         "or <code>jsonl</code>).</p>")
        parts.append("<table><tr><th>#</th><th>start (UTC)</th><th>client → server</th><th>TCP</th><th>TLS</th><th>outcome</th><th>verdict and what to do</th></tr>")
        shown: list[tuple[int, dict[str, Any], list]] = []
        for index, rec, events in _with_events(analysis, listed.indices):
            shown.append((index, rec, events))
            verdict = rec.get("verdict") or {}
            server = f"{rec['server']}:{rec['server_port']}"
            if rec.get("server_name"):
                server = f"{rec['server_name']} ({server})"
            evidence = "".join(f"<li>{e(item)}</li>" for item in verdict.get("evidence") or [] if item)
            notes = "".join(f"<li>{e(item)}</li>" for item in verdict.get("notes") or [])
            parts.append(
                f'<tr id="s{index}"><td class="num">{index}</td><td>{e(_when(rec["first_seen"]))}</td>'
                f"<td>{e(rec['client'])}:{rec['client_port']} → {e(server)}" + (" <b>[Microsoft]</b>" if rec.get("microsoft") else "") + "</td>"
                f"<td><code>{e(rec['conn_state'])} {e(rec['history'])}</code></td>"
                f"<td>{e(_tls_cell(rec.get('tls') or {}))}</td>"
                f'<td><span class="badge {e(verdict.get("severity", "info"))}">{e(rec["outcome"])}</span></td>'
                f"<td><b>{e(verdict.get('title'))}</b><details><summary>explanation and remediation</summary>"
                f"<p>{e(verdict.get('explanation'))}</p><p><b>What to do:</b> {e(verdict.get('remediation'))}</p>"
                + (f"<p>Evidence:</p><ul>{evidence}</ul>" if evidence else "")
                + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else "")
                + f"<p class=\"meta\">session id <code>{e(rec['session_id'])}</code></p></details></td></tr>"
            )
        parts.append("</table>")

    timeline_keys = sorted(k for k in images if k.startswith("timeline"))
    if timeline_keys:
        parts.append("<h2>Timelines</h2>")
        for key in timeline_keys:
            parts.append(_img(images[key], key.replace("-", " ")))

    if records:
        parts.append("<h2>Transcripts</h2><p class=\"meta\">Each session as a dialogue: C → client to server, ← S server to client. Credentials are shown as [redacted].</p>")
        for index, rec, events in shown:
            text = transcript_text(rec, events)
            parts.append(f"<details><summary>#{index} {e(rec['client'])}:{rec['client_port']} → {e(rec['server'])}:{rec['server_port']} — {e(rec['outcome'])}</summary><pre>{e(text)}</pre></details>")

    dns = analysis._result.dns
    if dns:
        parts.append("<h2>DNS lookups</h2><table><tr><th>time (UTC)</th><th>name</th><th>type</th><th>result</th><th>answer</th></tr>")
        for tx in itertools.islice(dns, 500):  # a spilled store is read in order, not by index
            result = tx.get("rcode") or tx.get("status")
            answer = " → ".join((tx.get("cname_chain") or [])[1:] + (tx.get("addresses") or []))
            parts.append(f"<tr><td>{e(_when((tx.get('ts') or 0) / 1e9))}</td><td>{e(tx.get('qname'))}</td><td>{e(tx.get('qtype'))}</td><td>{e(result)}</td><td>{e(answer)}</td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(analysis: Any, out_dir: str) -> dict[str, str]:
    """Write report.html and the PNGs into ``out_dir``; return {name: path}."""
    os.makedirs(out_dir, exist_ok=True)
    events = analysis._result.events
    images: dict[str, bytes] = {"overview": _png(plots.plot_overview(analysis.records))}
    # The failing sessions' timeline, or everyone's when none failed: its pages in one pass.
    failing, lanes = plots.timeline_pages(analysis.records, failing=True, wanted=range(MAX_TIMELINE_PAGES))
    if not failing:
        _everyone, lanes = plots.timeline_pages(analysis.records, wanted=range(MAX_TIMELINE_PAGES))
    chosen = failing or len(analysis.records)
    for page in range(min(plots.pages_needed(range(chosen)), MAX_TIMELINE_PAGES)):
        fig = plots.draw_timeline(lanes.get(page, []), events, chosen, page, failing=bool(failing))
        images[f"timeline-{page + 1:02d}"] = _png(fig)
    written = {}
    for name, png in images.items():
        path = os.path.join(out_dir, f"{name}.png")
        with open(path, "wb") as fh:
            fh.write(png)
        written[name] = path
    page = os.path.join(out_dir, "report.html")
    with open(page, "w", encoding="utf-8") as fh:
        fh.write(render(analysis, images))
    written["report"] = page
    return written


class _Listing:
    """Which sessions the page lists (positions in the records), and what the page says of the rest."""

    def __init__(self, indices: list[int], failing: int, left_out: int, last_seen: float) -> None:
        self.indices = indices
        self.failing = failing
        self.left_out = left_out
        self.last_seen = last_seen


def _listed(records: Any) -> _Listing:
    """Every session when they are at most MAX_REPORT_SESSIONS; else the failing ones first,
    then the others, in capture order, up to that many (``failing_first``). One pass; only
    positions are kept."""
    last_seen = 0.0

    def numbered():
        nonlocal last_seen
        for index, rec in enumerate(records):
            last_seen = max(last_seen, rec["last_seen"])
            yield index, rec

    indices, total, failing = failing_first(numbered(), MAX_REPORT_SESSIONS, keep=lambda pair: pair[0])
    return _Listing(indices, failing, total - len(indices), last_seen)


def _with_events(analysis: Any, indices: list[int]) -> Iterator[tuple[int, dict[str, Any], list]]:
    """(position, record, events) of the listed sessions, reading records and events in step."""
    from ..diagnosis.store import EventsBySession

    wanted = set(indices)
    events = analysis._result.events
    pairs = events.pairs() if isinstance(events, EventsBySession) else None
    for index, rec in enumerate(analysis.records):
        session_events = next(pairs)[1] if pairs is not None else None
        if index in wanted:
            yield index, rec, session_events if pairs is not None else events.get(rec["session_id"], [])
