"""pandas DataFrames of a run: sessions, events, replies, tls, dns — all joinable on ``session_id``.

Dtypes are chosen for analysis: UTC datetimes, categoricals for enumerations (with every
possible value as a category, so groupbys show zero counts), nullable integers and booleans.
Column order is fixed (``*_COLUMNS`` below) so notebooks and exports stay stable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..diagnosis.outcome import OUTCOMES
from ..diagnosis.store import EventsBySession

if TYPE_CHECKING:
    import pandas as pd

NS = 1_000_000_000

CONN_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH", "SHR", "OTH")
SEVERITIES = ("ok", "info", "warning", "error")
TLS_VERSIONS = ("SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3")
DIRECTIONS = ("client", "server", "network", "middlebox")

#: The sessions frame: the JSON contract's fields, then flattened conveniences.
CONTRACT_COLUMNS = [
    "session_id", "first_seen", "last_seen", "duration", "client", "client_port", "server", "server_port",
    "ip_version", "server_name", "conn_state", "history", "syn_count", "syn_retry_gaps", "handshake_rtt",
    "rst_from", "rst", "icmp", "firewall", "packets_client", "packets_server", "bytes_client", "bytes_server", "ip_bytes_client",
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


#: How each column is typed (and, in ``exports``, written to CSV): "int" (nullable Int64),
#: "float" (Float64), "bool" (boolean), "str" (string), "category", ("category", values,
#: ordered) (every possible value a category, then those seen), "utc_s" (epoch seconds as
#: UTC datetimes), "utc_ns" (epoch nanoseconds as UTC datetimes), "object" (lists and dicts).
Kind = Any

_OUTCOME = ("category", tuple(OUTCOMES), False)
_TLS_VERSION = ("category", TLS_VERSIONS, True)
_TLS_MODE = ("category", ("starttls", "implicit"), False)

SESSION_KINDS: dict[str, Kind] = {
    "session_id": "str", "first_seen": "utc_s", "last_seen": "utc_s", "duration": "float", "client": "str",
    "client_port": "int", "server": "str", "server_port": "int", "ip_version": "int", "server_name": "str",
    "conn_state": ("category", CONN_STATES, False), "history": "str", "syn_count": "int", "syn_retry_gaps": "object",
    "handshake_rtt": "float", "rst_from": ("category", ("server", "client", "middlebox"), False), "rst": "object",
    "icmp": "object", "firewall": "object", "packets_client": "int", "packets_server": "int", "bytes_client": "int", "bytes_server": "int",
    "ip_bytes_client": "int", "ip_bytes_server": "int", "missed_bytes": "int",
    "service": ("category", ("smtp", "tls", "text"), False), "microsoft": "bool",
    "microsoft_service": ("category", ("submission", "mx"), False), "microsoft_evidence": "object", "tls": "object",
    "smtp": "object", "outcome": _OUTCOME, "outcome_reason": "str", "verdict": "object",
    "tls_mode": _TLS_MODE, "tls_attempted": "bool", "tls_established": "bool", "tls_version": _TLS_VERSION,
    "tls_client_max_version": _TLS_VERSION, "tls_sni": "str", "tls_cipher": "str", "tls_alert": "str",
    "tls_alert_from": ("category", ("client", "server"), False), "smtp_banner": "str", "smtp_helo": "str",
    "smtp_auth_mechanism": "str", "smtp_auth_result": "str", "smtp_mail_from": "str", "smtp_rcpt_count": "int",
    "smtp_last_reply": "str", "reply_code": "int", "reply_enhanced": "str", "reply_text": "str", "reply_command": "str",
    "icmp_type": "int", "icmp_code": "int", "icmp_from": "str", "verdict_title": "str",
    "verdict_severity": ("category", SEVERITIES, True), "verdict_explanation": "str", "verdict_remediation": "str",
}
EVENT_KINDS: dict[str, Kind] = {
    "session_id": "str", "ts": "utc_ns", "offset": "float", "direction": ("category", DIRECTIONS, False),
    "kind": "category", "detail": "str", "server": "str", "server_port": "int",
}
REPLY_KINDS: dict[str, Kind] = {
    "session_id": "str", "ts": "utc_s", "code": "int", "enhanced": "str", "text": "str", "command": "str",
    "encrypted": "bool", "decrypted": "bool", "server": "str", "server_port": "int", "server_name": "str",
}
TLS_KINDS: dict[str, Kind] = {
    "session_id": "str", "mode": _TLS_MODE, "attempted": "bool", "established": "bool", "version": _TLS_VERSION,
    "client_max_version": _TLS_VERSION, "sni": "str", "cipher": "str", "alert": "str", "alert_from": "str",
    "alert_encrypted": "bool", "history": "str", "last_step": "str", "failure": "str", "failure_inferred": "bool",
    "server": "str", "server_port": "int",
}
DNS_KINDS: dict[str, Kind] = {
    "ts": "utc_ns", "client": "str", "client_port": "int", "server": "str", "server_port": "int",
    "transport": ("category", ("udp", "tcp"), False), "id": "int", "qname": "str", "qtype": "str",
    "status": "category", "rcode": "str", "cname_chain": "object", "addresses": "object", "mx": "object",
    "answers": "object", "response_ts": "utc_ns", "rtt": "float", "retransmissions": "int", "truncated": "bool",
    "authoritative": "bool", "authority_soa": "object", "icmp": "object",
}
assert list(SESSION_KINDS) == SESSION_COLUMNS and list(EVENT_KINDS) == EVENT_COLUMNS
assert list(REPLY_KINDS) == REPLY_COLUMNS and list(TLS_KINDS) == TLS_COLUMNS and list(DNS_KINDS) == DNS_COLUMNS
#: Each table's kinds, by table name.
KINDS = {"sessions": SESSION_KINDS, "events": EVENT_KINDS, "replies": REPLY_KINDS, "tls": TLS_KINDS, "dns": DNS_KINDS}


def _utc(seconds: Sequence[float | None]) -> pd.Series:
    """Epoch seconds (records round them to the microsecond) as exact UTC datetimes: read as
    float seconds, 1764000000.073833 became …00.073832989."""
    import pandas as pd

    micros = (pd.to_numeric(pd.Series(seconds, dtype=object), errors="coerce") * 1_000_000).round().astype("Int64")
    return pd.to_datetime(micros, unit="us", utc=True).astype("datetime64[ns, UTC]")


def _utc_ns(nanoseconds: Sequence[int | None]) -> pd.Series:
    """Epoch nanoseconds (ints, None for none) as UTC datetimes, to the nanosecond."""
    import pandas as pd

    return pd.Series(pd.to_datetime(pd.array(list(nanoseconds), dtype="Int64"), unit="ns", utc=True))


def _category(values: Sequence[Any], categories: tuple[str, ...], ordered: bool = False) -> pd.Series:
    import pandas as pd

    known = list(categories) + sorted({v for v in values if v is not None and v == v and v not in categories})
    return pd.Series(pd.Categorical(values, categories=known, ordered=ordered))


def _column(values: list[Any], kind: Kind) -> Any:
    import pandas as pd

    if kind == "str":
        return pd.array(values, dtype="string")
    if kind == "int":
        return pd.array(values, dtype="Int64")
    if kind == "float":
        return pd.array(values, dtype="Float64")
    if kind == "bool":
        return pd.array(values, dtype="boolean")
    if kind == "utc_s":
        return _utc(values)
    if kind == "utc_ns":
        return _utc_ns(values)
    if kind == "category":
        return pd.Series(values, dtype=object).astype("category")
    if kind == "object":
        return pd.Series(values, dtype=object)
    _, categories, ordered = kind
    return _category(values, categories, ordered)


def table(rows: Sequence[Sequence[Any]], kinds: dict[str, Kind]) -> pd.DataFrame:
    """A frame of ``rows`` (value sequences in the order of ``kinds``), each column typed by its kind."""
    import pandas as pd

    columns = list(zip(*rows)) if rows else [()] * len(kinds)
    data = {name: _column(list(values), kind) for (name, kind), values in zip(kinds.items(), columns)}
    df = pd.DataFrame(data, columns=list(kinds))
    df.index = pd.RangeIndex(len(rows))
    return df


# -- rows: what each table holds of a record, in its column order ---------------------------------
def session_rows(records: Iterable[dict[str, Any]]) -> list[tuple]:
    rows = []
    for rec in records:
        tls = rec.get("tls") or {}
        smtp = rec.get("smtp") or {}
        reply = rec.get("decisive_reply") or {}
        icmp = rec.get("icmp") or {}
        verdict = rec.get("verdict") or {}
        rows.append((
            *(rec.get(key) for key in CONTRACT_COLUMNS),
            tls.get("mode"), tls.get("attempted"), tls.get("established"), tls.get("version"),
            tls.get("client_max_version"), tls.get("sni"), tls.get("cipher"), tls.get("alert"), tls.get("alert_from"),
            smtp.get("banner"), smtp.get("helo"), smtp.get("auth_mechanism"), smtp.get("auth_result"),
            smtp.get("mail_from"), len(smtp.get("rcpt_to") or []) if smtp else None, smtp.get("last_reply"),
            reply.get("code"), reply.get("enhanced"), reply.get("text"), reply.get("command"),
            icmp.get("type"), icmp.get("code"), icmp.get("from"),
            verdict.get("title"), verdict.get("severity"), verdict.get("explanation"), verdict.get("remediation"),
        ))
    return rows


def event_rows(records: Sequence[dict[str, Any]], events: Mapping[str, list[tuple[int, str, str, str]]]) -> list[tuple]:
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
        server, port = rec["server"], rec["server_port"]
        for ts, direction, kind, detail in evs:
            rows.append((sid, ts, (ts - start) / NS, direction, kind, detail, server, port))
    return rows


def reply_rows(records: Iterable[dict[str, Any]]) -> list[tuple]:
    rows = []
    for rec in records:
        for reply in (rec.get("smtp") or {}).get("replies") or []:
            rows.append((rec["session_id"], reply.get("ts"), reply.get("code"), reply.get("enhanced"), reply.get("text"),
                         reply.get("command"), reply.get("encrypted"), reply.get("decrypted"), rec["server"], rec["server_port"],
                         rec.get("server_name")))
    return rows


def tls_rows(records: Iterable[dict[str, Any]]) -> list[tuple]:
    rows = []
    keys = TLS_COLUMNS[1:-2]
    for rec in records:
        tls = rec.get("tls") or {}
        if tls.get("attempted"):
            rows.append((rec["session_id"], *(tls.get(key) for key in keys), rec["server"], rec["server_port"]))
    return rows


def dns_rows(transactions: Iterable[dict[str, Any]]) -> list[tuple]:
    return [tuple(tx.get(key) for key in DNS_COLUMNS) for tx in transactions]


# -- the frames ---------------------------------------------------------------------------------
def sessions_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return table(session_rows(records), SESSION_KINDS)


def events_frame(records: Sequence[dict[str, Any]], events: Mapping[str, list[tuple[int, str, str, str]]]) -> pd.DataFrame:
    return table(event_rows(records, events), EVENT_KINDS)


def replies_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return table(reply_rows(records), REPLY_KINDS)


def tls_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return table(tls_rows(records), TLS_KINDS)


def dns_frame(transactions: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return table(dns_rows(transactions), DNS_KINDS)
