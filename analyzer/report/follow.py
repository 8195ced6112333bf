"""A session as a dialogue: direction-tagged, timestamped, like Wireshark's Follow TCP Stream.

Built from the session's notable events (TCP control packets, ICMP, TLS handshake steps,
SMTP commands and replies). Credentials were redacted before they became events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .safe import printable

NS = 1_000_000_000

ARROWS = {"client": "C →", "server": "← S", "network": "⚠ N", "middlebox": "⚠ M"}

LABELS = {
    "syn": "SYN",
    "syn_retry": "SYN (retransmitted)",
    "syn_ack": "SYN-ACK",
    "syn_ack_retry": "SYN-ACK (retransmitted)",
    "rst": "RST",
    "fin": "FIN",
    "icmp": "ICMP",
    "gap": "content gap",
    "zero_window": "zero window",
    "starttls": "STARTTLS accepted",
    "smtp_body": "DATA",
}


def transcript_lines(record: dict[str, Any], events: list[tuple[int, str, str, str]]) -> list[tuple[str, str, str, str]]:
    """Rows (time offset, direction arrow, label, detail) of one session, all strings made safe."""
    rows = []
    start = events[0][0] if events else int(record["first_seen"] * NS)
    rst_from = record.get("rst_from")
    for ts, direction, kind, detail in events:
        arrow = ARROWS.get(direction, direction)
        if kind == "rst" and direction == "server" and rst_from == "middlebox":
            arrow = ARROWS["middlebox"]
            detail = (detail + ", " if detail else "") + "forged: not from the server"
        if kind in ("smtp_command", "smtp_reply"):
            label = ""
        elif kind.startswith("tls_"):
            label = "TLS " + kind[4:].replace("_", " ")
        else:
            label = LABELS.get(kind, kind.replace("_", " "))
        rows.append((f"+{(ts - start) / NS:10.6f}", arrow, label, printable(detail)))
    return rows


def transcript_text(record: dict[str, Any], events: list[tuple[int, str, str, str]]) -> str:
    """The whole transcript as plain text, with a header naming the session and its verdict."""
    verdict = record.get("verdict") or {}
    name = f" ({record['server_name']})" if record.get("server_name") else ""
    started = dt.datetime.fromtimestamp(record["first_seen"], dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    head = [
        f"Session {record['session_id']}  {record['client']}:{record['client_port']} → {record['server']}:{record['server_port']}{printable(name)}",
        f"Started {started}; {record['conn_state']} {record['history']}; outcome {record['outcome']}",
        f"Verdict: {printable(verdict.get('title', ''))}",
        "",
    ]
    body = []
    for offset, arrow, label, detail in transcript_lines(record, events):
        text = f"{label}  {detail}" if label and detail else (label or detail)
        body.append(f"{offset}  {arrow}  {text}")
    dropped = record.get("events_dropped")
    if dropped:
        body.append(f"… {dropped} more events not kept (limit per session)")
    return "\n".join(head + body) + "\n"
