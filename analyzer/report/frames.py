"""pandas DataFrames of a run: sessions, events, replies, tls, dns — all joinable on ``session_id``.

Dtypes are chosen for analysis: UTC datetimes, categoricals for enumerations (with every
possible value as a category, so groupbys show zero counts), nullable integers and booleans.
Column order is fixed (``*_COLUMNS`` below) so notebooks and exports stay stable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from ..diagnosis.outcome import OUTCOMES
from ..diagnosis.store import EventsBySession

NS = 1_000_000_000

CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")
SEVERITIES = ("ok", "info", "warning", "error")
TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
DIRECTIONS = ("client", "server", "network", "middlebox")

#: The sessions frame: the JSON contract's fields, then flattened conveniences.
CONTRACT_COLUMNS = [
    "session_id", "first_seen", "last_seen", "duration", "client", "client_port", "server", "server_port",
    "ip_version", "server_name", "conn_state", "history", "syn_count", "syn_retry_gaps", "handshake_rtt",
    "rst_from", "rst", "icmp", "packets_client", "packets_server", "bytes_client", "bytes_server", "ip_bytes_client",
    "ip_bytes_server", "missed_bytes", "service", "microsoft", "microsoft_service", "microsoft_evidence", "tls", "smtp",
    "outcome", "outcome_reason", "verdict",
]
FLAT_COLUMNS = [
    "tls_mode", "tls_attempted", "tls_established", "tls_version", "tls_client_max_version", "tls_sni",
    "tls_cipher", "tls_alert", "tls_alert_from", "smtp_banner", "smtp_helo", "smtp_auth_mechanism",
    "smtp_auth_result", "smtp_mail_from", "smtp_rcpt_count", "smtp_last_reply", "reply_code", "reply_enhanced",
    "reply_text", "reply_command", "icmp_type", "icmp_code", "icmp_from", "verdict_title", "verdict_severity",
    "verdict_explanation", "verdict_remediation",
]
SESSION_COLUMNS = CONTRACT_COLUMNS + FLAT_COLUMNS

EVENT_COLUMNS = ["session_id", "ts", "offset", "direction", "kind", "detail", "server", "server_port"]
REPLY_COLUMNS = ["session_id", "ts", "code", "enhanced", "text", "command", "encrypted", "decrypted", "server", "server_port", "server_name"]
TLS_COLUMNS = [
    "session_id", "mode", "attempted", "established", "version", "client_max_version", "sni", "cipher", "alert",
    "alert_from", "alert_encrypted", "history", "last_step", "failure", "failure_inferred", "server", "server_port",
]
DNS_COLUMNS = [
    "ts", "client", "client_port", "server", "server_port", "transport", "id", "qname", "qtype", "status", "rcode",
    "cname_chain", "addresses", "mx", "answers", "response_ts", "rtt", "retransmissions", "truncated",
    "authoritative", "authority_soa", "icmp",
]


def _utc(seconds: pd.Series) -> pd.Series:
    """Epoch seconds (records round them to the microsecond) as exact UTC datetimes: read as
    float seconds, 1764000000.073833 became …00.073832989."""
    micros = (pd.to_numeric(seconds, errors="coerce") * 1_000_000).round().astype("Int64")
    return pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")


def _utc_ns(nanoseconds: Sequence[int | None]) -> pd.Series:
    """Epoch nanoseconds (ints, None for none) as UTC datetimes, to the nanosecond. Give the
    values, not a DataFrame column: a column with a None in it holds floats, which lose them."""
    return pd.Series(pd.to_datetime(pd.array(list(nanoseconds), dtype="Int64"), unit="ns", utc=True))


def _category(values: pd.Series, categories: tuple[str, ...], ordered: bool = False) -> pd.Series:
    known = list(categories) + sorted({v for v in values.dropna().unique() if v not in categories})
    return pd.Series(pd.Categorical(values, categories=known, ordered=ordered), index=values.index)


def sessions_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        tls = rec.get("tls") or {}
        smtp = rec.get("smtp") or {}
        reply = rec.get("decisive_reply") or {}
        icmp = rec.get("icmp") or {}
        verdict = rec.get("verdict") or {}
        row = {key: rec.get(key) for key in CONTRACT_COLUMNS}
        row.update(
            tls_mode=tls.get("mode"),
            tls_attempted=tls.get("attempted"),
            tls_established=tls.get("established"),
            tls_version=tls.get("version"),
            tls_client_max_version=tls.get("client_max_version"),
            tls_sni=tls.get("sni"),
            tls_cipher=tls.get("cipher"),
            tls_alert=tls.get("alert"),
            tls_alert_from=tls.get("alert_from"),
            smtp_banner=smtp.get("banner"),
            smtp_helo=smtp.get("helo"),
            smtp_auth_mechanism=smtp.get("auth_mechanism"),
            smtp_auth_result=smtp.get("auth_result"),
            smtp_mail_from=smtp.get("mail_from"),
            smtp_rcpt_count=len(smtp.get("rcpt_to") or []) if smtp else None,
            smtp_last_reply=smtp.get("last_reply"),
            reply_code=reply.get("code"),
            reply_enhanced=reply.get("enhanced"),
            reply_text=reply.get("text"),
            reply_command=reply.get("command"),
            icmp_type=icmp.get("type"),
            icmp_code=icmp.get("code"),
            icmp_from=icmp.get("from"),
            verdict_title=verdict.get("title"),
            verdict_severity=verdict.get("severity"),
            verdict_explanation=verdict.get("explanation"),
            verdict_remediation=verdict.get("remediation"),
        )
        rows.append(row)
    df = pd.DataFrame(rows, columns=SESSION_COLUMNS)
    df["first_seen"] = _utc(df["first_seen"])
    df["last_seen"] = _utc(df["last_seen"])
    for col in ("client_port", "server_port", "ip_version", "syn_count", "packets_client", "packets_server",
                "bytes_client", "bytes_server", "ip_bytes_client", "ip_bytes_server", "missed_bytes", "smtp_rcpt_count", "reply_code", "icmp_type", "icmp_code"):
        df[col] = pd.array(df[col], dtype="Int64")
    for col in ("duration", "handshake_rtt"):
        df[col] = pd.array(df[col], dtype="Float64")
    for col in ("microsoft", "tls_attempted", "tls_established"):
        df[col] = pd.array(df[col], dtype="boolean")
    for col in ("session_id", "client", "server", "server_name", "history", "outcome_reason", "tls_sni", "tls_cipher",
                "smtp_banner", "smtp_helo", "smtp_mail_from", "smtp_last_reply", "reply_enhanced", "reply_text",
                "reply_command", "icmp_from", "verdict_title", "verdict_explanation", "verdict_remediation",
                "smtp_auth_mechanism", "smtp_auth_result"):
        df[col] = df[col].astype("string")
    df["outcome"] = _category(df["outcome"], OUTCOMES)
    df["conn_state"] = _category(df["conn_state"], CONN_STATES)
    df["rst_from"] = _category(df["rst_from"], ("server", "client", "middlebox"))
    df["service"] = _category(df["service"], ("smtp", "tls", "text"))
    df["microsoft_service"] = _category(df["microsoft_service"], ("submission", "mx"))
    df["tls_mode"] = _category(df["tls_mode"], ("starttls", "implicit"))
    df["tls_version"] = _category(df["tls_version"], TLS_VERSIONS, ordered=True)
    df["tls_client_max_version"] = _category(df["tls_client_max_version"], TLS_VERSIONS, ordered=True)
    df["tls_alert"] = df["tls_alert"].astype("string")
    df["tls_alert_from"] = _category(df["tls_alert_from"], ("client", "server"))
    df["verdict_severity"] = _category(df["verdict_severity"], SEVERITIES, ordered=True)
    return df


def events_frame(records: Sequence[dict[str, Any]], events: Mapping[str, list[tuple[int, str, str, str]]]) -> pd.DataFrame:
    rows = []
    # A spilled run's events are stored in record order: read them alongside, with no id index
    # (given other records than the run's own, in their order, it looks them up by id instead).
    pairs = events.pairs() if isinstance(events, EventsBySession) else None
    for rec in records:
        sid = rec["session_id"]
        if pairs is not None:
            stored_sid, evs = next(pairs, (None, None))
            if stored_sid != sid:
                pairs = None
        if pairs is None:
            evs = events.get(sid) or []
        start = int(round(rec["first_seen"] * NS))
        for ts, direction, kind, detail in evs:
            rows.append((sid, ts, (ts - start) / NS, direction, kind, detail, rec["server"], rec["server_port"]))
    df = pd.DataFrame(rows, columns=EVENT_COLUMNS)
    df["ts"] = _utc_ns([row[1] for row in rows])
    df["offset"] = pd.array(df["offset"], dtype="Float64")
    df["direction"] = _category(df["direction"], DIRECTIONS)
    df["kind"] = df["kind"].astype("category")
    for col in ("session_id", "detail", "server"):
        df[col] = df[col].astype("string")
    df["server_port"] = pd.array(df["server_port"], dtype="Int64")
    return df


def replies_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        for reply in (rec.get("smtp") or {}).get("replies") or []:
            rows.append((rec["session_id"], reply.get("ts"), reply.get("code"), reply.get("enhanced"), reply.get("text"),
                         reply.get("command"), reply.get("encrypted"), reply.get("decrypted"), rec["server"], rec["server_port"],
                         rec.get("server_name")))
    df = pd.DataFrame(rows, columns=REPLY_COLUMNS)
    df["ts"] = _utc(df["ts"])
    df["code"] = pd.array(df["code"], dtype="Int64")
    df["server_port"] = pd.array(df["server_port"], dtype="Int64")
    for col in ("encrypted", "decrypted"):
        df[col] = pd.array(df[col], dtype="boolean")
    for col in ("session_id", "enhanced", "text", "command", "server", "server_name"):
        df[col] = df[col].astype("string")
    return df


def tls_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for rec in records:
        tls = rec.get("tls") or {}
        if not tls.get("attempted"):
            continue
        row = {key: tls.get(key) for key in TLS_COLUMNS[1:-2]}
        row.update(session_id=rec["session_id"], server=rec["server"], server_port=rec["server_port"])
        rows.append(row)
    df = pd.DataFrame(rows, columns=TLS_COLUMNS)
    for col in ("attempted", "established", "alert_encrypted", "failure_inferred"):
        df[col] = pd.array(df[col], dtype="boolean")
    df["version"] = _category(df["version"], TLS_VERSIONS, ordered=True)
    df["client_max_version"] = _category(df["client_max_version"], TLS_VERSIONS, ordered=True)
    df["mode"] = _category(df["mode"], ("starttls", "implicit"))
    df["server_port"] = pd.array(df["server_port"], dtype="Int64")
    for col in ("session_id", "sni", "cipher", "alert", "alert_from", "history", "last_step", "failure", "server"):
        df[col] = df[col].astype("string")
    return df


def dns_frame(transactions: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{key: tx.get(key) for key in DNS_COLUMNS} for tx in transactions]
    df = pd.DataFrame(rows, columns=DNS_COLUMNS)
    df["ts"] = _utc_ns([tx.get("ts") for tx in transactions])
    df["response_ts"] = _utc_ns([tx.get("response_ts") for tx in transactions])
    for col in ("client_port", "server_port", "id", "retransmissions"):
        df[col] = pd.array(df[col], dtype="Int64")
    df["rtt"] = pd.array(df["rtt"], dtype="Float64")
    df["truncated"] = pd.array(df["truncated"], dtype="boolean")
    df["authoritative"] = pd.array(df["authoritative"], dtype="boolean")
    df["status"] = df["status"].astype("category")
    df["transport"] = _category(df["transport"], ("udp", "tcp"))
    for col in ("client", "server", "qname", "qtype", "rcode"):
        df[col] = df[col].astype("string")
    return df
