"""Zeek-format logs (``conn.log``, ``smtp.log``, ``ssl.log``): TSV with Zeek's header lines.

Field names and types are Zeek's, so existing tooling (``zeek-cut``, SIEM ingest) reads
them. Values are escaped as Zeek escapes them: separators and non-printable bytes as
``\\xNN``; ``-`` for unset fields, ``(empty)`` for empty strings and sets.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Iterable

SEPARATOR = "\t"
SET_SEPARATOR = ","
EMPTY = "(empty)"
UNSET = "-"

CONN_FIELDS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("proto", "enum"), ("service", "string"), ("duration", "interval"),
    ("orig_bytes", "count"), ("resp_bytes", "count"), ("conn_state", "string"), ("local_orig", "bool"),
    ("local_resp", "bool"), ("missed_bytes", "count"), ("history", "string"), ("orig_pkts", "count"),
    ("orig_ip_bytes", "count"), ("resp_pkts", "count"), ("resp_ip_bytes", "count"),
    ("tunnel_parents", "set[string]"), ("ip_proto", "count"),
]
SMTP_FIELDS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("trans_depth", "count"), ("helo", "string"), ("mailfrom", "string"),
    ("rcptto", "set[string]"), ("date", "string"), ("from", "string"), ("to", "set[string]"), ("cc", "set[string]"),
    ("reply_to", "string"), ("msg_id", "string"), ("in_reply_to", "string"), ("subject", "string"),
    ("x_originating_ip", "addr"), ("first_received", "string"), ("second_received", "string"),
    ("last_reply", "string"), ("path", "vector[addr]"), ("user_agent", "string"), ("tls", "bool"),
    ("fuids", "vector[string]"),
]
SSL_FIELDS = [
    ("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"),
    ("id.resp_p", "port"), ("version", "string"), ("cipher", "string"), ("curve", "string"),
    ("server_name", "string"), ("resumed", "bool"), ("last_alert", "string"), ("next_protocol", "string"),
    ("established", "bool"), ("ssl_history", "string"), ("cert_chain_fps", "vector[string]"),
    ("client_cert_chain_fps", "vector[string]"), ("sni_matches_cert", "bool"),
]

#: Our TLS version names → Zeek's.
ZEEK_VERSIONS = {"SSLv2": "SSLv2", "SSLv3": "SSLv3", "TLSv1.0": "TLSv10", "TLSv1.1": "TLSv11", "TLSv1.2": "TLSv12", "TLSv1.3": "TLSv13"}


def escape(value: str, in_set: bool = False) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch == "\\":
            out.append("\\x5c")
        elif code < 0x20 or code == 0x7F or ch == SEPARATOR or (in_set and ch == SET_SEPARATOR):
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return "".join(out)


def render(value: Any, zeek_type: str) -> str:
    if value is None:
        return UNSET
    if zeek_type == "bool":
        return "T" if value else "F"
    if zeek_type in ("time", "interval"):
        return f"{float(value):.6f}"
    if zeek_type.startswith(("set[", "vector[")):
        items = list(value)
        if not items:
            return EMPTY
        return SET_SEPARATOR.join(escape(str(item), in_set=True) for item in items)
    text = str(value)
    if text == "":
        return EMPTY
    return escape(text)


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%d-%H-%M-%S")


def write_log(path: str, log_path: str, fields: list[tuple[str, str]], rows: Iterable[dict[str, Any]]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("#separator \\x09\n")
        fh.write(f"#set_separator{SEPARATOR}{SET_SEPARATOR}\n")
        fh.write(f"#empty_field{SEPARATOR}{EMPTY}\n")
        fh.write(f"#unset_field{SEPARATOR}{UNSET}\n")
        fh.write(f"#path{SEPARATOR}{log_path}\n")
        fh.write(f"#open{SEPARATOR}{_stamp(now)}\n")
        fh.write("#fields" + SEPARATOR + SEPARATOR.join(name for name, _ in fields) + "\n")
        fh.write("#types" + SEPARATOR + SEPARATOR.join(kind for _, kind in fields) + "\n")
        for row in rows:
            fh.write(SEPARATOR.join(render(row.get(name), kind) for name, kind in fields) + "\n")
        fh.write(f"#close{SEPARATOR}{_stamp(now)}\n")


def _ids(rec: dict[str, Any]) -> dict[str, Any]:
    return {"uid": rec["session_id"], "id.orig_h": rec["client"], "id.orig_p": rec["client_port"],
            "id.resp_h": rec["server"], "id.resp_p": rec["server_port"]}


def conn_rows(records: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for rec in records:
        tls = rec.get("tls") or {}
        services = []
        if rec.get("service") == "smtp" or rec.get("smtp"):
            services.append("smtp")
        if tls.get("attempted"):
            services.append("ssl")
        has_data = rec["duration"] > 0
        yield {
            **_ids(rec),
            "ts": rec["first_seen"],
            "proto": "tcp",
            "service": ",".join(services) or None,
            "duration": rec["duration"] if has_data else None,
            "orig_bytes": rec["bytes_client"] if has_data else None,
            "resp_bytes": rec["bytes_server"] if has_data else None,
            "conn_state": rec["conn_state"],
            "missed_bytes": rec["missed_bytes"],
            "history": rec["history"] or None,
            "orig_pkts": rec["packets_client"],
            "orig_ip_bytes": rec.get("ip_bytes_client"),
            "resp_pkts": rec["packets_server"],
            "resp_ip_bytes": rec.get("ip_bytes_server"),
            "tunnel_parents": None,
            "ip_proto": 6,
        }


def smtp_rows(records: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for rec in records:
        smtp = rec.get("smtp")
        if not smtp:
            continue
        tls_used = bool((rec.get("tls") or {}).get("attempted")) and (rec.get("tls") or {}).get("mode") == "starttls"
        path = [rec["server"], rec["client"]]
        transactions = smtp.get("transactions") or [{}]
        for depth, tx in enumerate(transactions, start=1):
            yield {
                **_ids(rec),
                "ts": tx.get("ts") or rec["first_seen"],
                "trans_depth": depth,
                "helo": smtp.get("helo"),
                "mailfrom": tx.get("mail_from"),
                "rcptto": tx.get("rcpt_to") or None,
                "last_reply": tx.get("last_reply") or smtp.get("last_reply"),
                "path": path,
                "tls": tls_used,
            }


def ssl_rows(records: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for rec in records:
        tls = rec.get("tls") or {}
        if not tls.get("attempted"):
            continue
        alerts = [a for a in tls.get("alerts") or [] if a.get("description")]
        yield {
            **_ids(rec),
            "ts": tls.get("ts") or rec["first_seen"],
            "version": ZEEK_VERSIONS.get(tls.get("version") or "", tls.get("version")),
            "cipher": tls.get("cipher"),
            "curve": tls.get("curve"),
            "server_name": tls.get("sni"),
            "resumed": bool(tls.get("resumed")),
            "last_alert": alerts[-1]["description"] if alerts else None,
            "next_protocol": tls.get("alpn") if isinstance(tls.get("alpn"), str) else None,
            "established": bool(tls.get("established")),
            "ssl_history": tls.get("history") or None,
            "cert_chain_fps": None,
            "client_cert_chain_fps": None,
            "sni_matches_cert": None,
        }


def write_zeek(analysis: Any, output: str) -> list[str]:
    if os.path.exists(output) and not os.path.isdir(output):
        from .safe import ExportError

        raise ExportError(f"{output}: exists and is not a directory")
    os.makedirs(output, exist_ok=True)
    records = analysis.records
    written = []
    for name, fields, rows in (("conn", CONN_FIELDS, conn_rows(records)), ("smtp", SMTP_FIELDS, smtp_rows(records)),
                               ("ssl", SSL_FIELDS, ssl_rows(records))):
        path = os.path.join(output, f"{name}.log")
        write_log(path, name, fields, rows)
        written.append(path)
    return written


def read_log(path: str) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """Parse a Zeek TSV log back into typed rows (used by tests and for comparisons)."""
    fields: list[str] = []
    types: list[str] = []
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if line.startswith("#fields"):
                fields = line.split(SEPARATOR)[1:]
            elif line.startswith("#types"):
                types = line.split(SEPARATOR)[1:]
            elif line.startswith("#") or not line:
                continue
            else:
                values = line.split(SEPARATOR)
                rows.append({name: _parse(value, kind) for name, kind, value in zip(fields, types, values)})
    return list(zip(fields, types)), rows


def _unescape(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text.startswith("\\x", i) and i + 4 <= len(text):
            try:
                out.append(chr(int(text[i + 2 : i + 4], 16)))
                i += 4
                continue
            except ValueError:
                pass
        out.append(text[i])
        i += 1
    return "".join(out)


def _parse(value: str, kind: str) -> Any:
    if value == UNSET:
        return None
    if kind.startswith(("set[", "vector[")):
        return [] if value == EMPTY else [_unescape(v) for v in value.split(SET_SEPARATOR)]
    if value == EMPTY:
        return ""
    if kind == "bool":
        return value == "T"
    if kind in ("count", "port", "int"):
        return int(value)
    if kind in ("time", "interval", "double"):
        return float(value)
    return _unescape(value)
