"""The session record: one JSON object per TCP connection attempt — smtpflow's stable contract.

Fields (``--format jsonl`` and the columns of ``Analysis.sessions``):

=====================  ====================================================================
session_id             deterministic Zeek-style id (same capture → same ids)
client, client_port    the originator (the side that sent the SYN)
server, server_port    the responder
ip_version             4 or 6
server_name            what the capture says the server is called (DNS, SNI, banner)
first_seen, last_seen  epoch seconds (float; nanosecond timestamps are kept internally)
duration               seconds
conn_state, history    Zeek's codes and history letters
syn_count              SYN transmissions of this attempt (1 = no retry)
syn_retry_gaps         seconds between consecutive SYNs
handshake_rtt          SYN → SYN-ACK, seconds (the round trip from the capture point)
rst_from               "server", "client", "middlebox" or null (who sent the first RST)
rst                    details of that RST (ttl, hops, evidence) or null
icmp                   {type, code, name, from, admin_prohibited} of the first ICMP error, or null
firewall               what the firewall logged of it, when the capture is its log: {log
                       (pflog, nflog), action, reason, rule, subrule, ruleset, interface,
                       direction (pf's), prefix, group (NFLOG's), packets} — the first block,
                       else the first packet logged — or null
packets_client/server  packets each way; bytes_client/server payload bytes each way
ip_bytes_client/server IP-level bytes each way (Zeek's orig_ip_bytes/resp_ip_bytes)
missed_bytes           bytes the capture missed (content gaps)
service                what the connection spoke: smtp, tls, text, or null (no data)
microsoft              true when any evidence says the server is Exchange Online
microsoft_evidence     [{source, detail}]: published_range, dns, sni, banner, ehlo, certificate, user_endpoint
microsoft_service      "submission" (smtp.office365.com) / "mx" (tenant MX) / null
tls                    {mode, attempted, established, version, client_max_version, sni, cipher, alert, alert_from, …}
smtp                   {banner, ehlo, auth_mechanism, replies: [{code, enhanced, text, command, encrypted, ts}], …}
outcome                see :mod:`analyzer.diagnosis.outcome`
outcome_reason         one line saying why
verdict                {title, explanation, remediation, severity, evidence, notes?}
notes                  what the protocol layer noticed (implicit_tls_on_starttls_port, …)
weirds                 {name: count} of oddities, Zeek-style: bad_TCP_checksum, duplicate_frame
                       (the same packet captured twice, e.g. on ``any`` of a forwarding host:
                       followed once), SMTP's, …
end_reason             why smtpflow stopped following it: closed, attempt_timeout,
                       idle_timeout, table_full (too many connections open at once, or
                       holding more than --table-memory together),
                       capture_end, or null (a new attempt on the same ports replaced it)
=====================  ====================================================================
"""

from __future__ import annotations

import heapq
import itertools
from array import array
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter, truediv
from typing import Any, Final

from ..decode.icmp import is_admin_prohibited
from ..decode.ip import address_text
from .microsoft import MicrosoftDirectory
from .outcome import decide, decisive_reply
from .resets import ServerTtls, classify_reset
from .store import SessionStore, session_weight
from .summary import Tally
from .verdicts import verdict

NS: Final = 1_000_000_000

TLS_KEYS: Final = ("mode", "attempted", "established", "version", "client_max_version", "sni", "cipher", "alert", "alert_from")


#: A built session: its record, ``(session id, its events in time order)``, its weight in a store.
Built = tuple[dict[str, Any], tuple[str, list[Any]], int]


#: Below 2**32 s (the year 2106) a time's float is good to 0.24 µs or better (see ``seconds``).
PLAIN_SECONDS_BELOW_NS: Final = 2**32 * NS


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else seconds(ns)


def seconds(ns: int) -> float:
    """``round(ns / NS, 6)``, the same float, without its cost where the answer is plain.

    ``round(x, 6)`` writes ``x`` out in decimal to round it (a tenth of building a record).
    The microseconds rounded from the integer, divided by a million, are the same float — the
    one nearest that decimal — except where ``ns / NS`` lies close to the middle between two
    microseconds: an epoch time's float is only good to about 0.24 µs, so its decimal may round
    the other way. Those (and negative times) still go through ``round``."""
    micros, rest = divmod(ns, 1000)
    if 250 <= rest <= 750 or not 0 <= ns < PLAIN_SECONDS_BELOW_NS:
        # Python's int division, correctly rounded: compiled, ``ns / NS`` would make ns a
        # float first (an epoch time in ns has more digits than a float holds), rounding twice.
        return round(truediv(ns, NS), 6)
    return (micros + (rest > 500)) / 1_000_000


class RecordBuilder:
    """Turns session facts into records, with capture-wide context (DNS, other sessions)."""

    def __init__(self, directory: MicrosoftDirectory, dns: Any = None, capture_end: int | None = None) -> None:
        self.directory = directory
        self.dns = dns
        self.capture_end = capture_end

    def build_ordered(self, all_facts: Sequence[dict[str, Any]], refs: ServerTtls,
                      first_seen: array | None = None) -> Iterator[Built]:
        """Each session's record, its ``(session id, events in time order)`` and its weight (for
        a store), in the records' order: (first_seen, session_id). ``refs``: the sessions'
        server TTLs, counted as they finished (:func:`~.resets.add_server_reference`).

        ``first_seen``: each stored session's :func:`first_seen_key`, counted as it was stored
        (else read from the facts first). The facts are read once more, one session at a time,
        in the records' order (a :class:`SessionStore` reads runs of them at once): the stores
        spill to disk past their limit, so any number of sessions is built in bounded memory,
        and nothing needs sorting afterwards."""
        if not isinstance(all_facts, SessionStore):
            all_facts = list(all_facts)  # live capture's deque of the latest: indexing it is slow
        if first_seen is None or len(first_seen) != len(all_facts):
            first_seen = array("d", (first_seen_key(facts) for facts in all_facts))
        order = session_order(first_seen, all_facts)
        ordered = all_facts.in_order(order) if isinstance(all_facts, SessionStore) else (all_facts[i] for i in order)
        for facts in ordered:
            record = self.build(facts, refs)
            yield record, (facts["uid"], sorted(facts["events"], key=itemgetter(0))), session_weight(facts.get("held_bytes", 0))

    def build(self, facts: dict[str, Any], refs: ServerTtls) -> dict[str, Any]:
        app = facts.get("app") or {}
        server = address_text(facts["resp_addr"])
        # What DNS said of the address, most recent first, read only as far as needed: the
        # first entry names the server, and the evidence stops at the first Microsoft name.
        names = self.dns.iter_names(facts["resp_addr"], facts["first_ts"] + NS) if self.dns is not None else iter(())
        latest = next(names, None)
        evidence, role = self.directory.evidence(server, () if latest is None else itertools.chain((latest,), names), app)
        microsoft = bool(evidence)
        # "Exchange Online is far away" holds only for addresses Microsoft really publishes.
        published = any(e["source"] == "published_range" for e in evidence)
        reset = classify_reset(facts, refs, published)
        syn_times = facts.get("syn_times") or []
        gaps = [round((b - a) / NS, 3) for a, b in zip(syn_times, syn_times[1:])]
        icmp = None
        if facts.get("icmp"):
            first = facts["icmp"][0]
            icmp = {
                "type": first["type"],
                "code": first["code"],
                "name": first["name"],
                "from": first["from"],
                "admin_prohibited": is_admin_prohibited(first["ip_version"], first["type"], first["code"]),
                "ts": _seconds(first["ts"]),
            }
        tls_summary = app.get("tls") or {}
        tls = {key: tls_summary.get(key) for key in TLS_KEYS}
        tls["attempted"] = bool(tls.get("attempted"))
        tls["established"] = bool(tls.get("established"))
        for key, value in tls_summary.items():
            if key not in tls and key != "started_ts":
                tls[key] = value
        smtp_facts = app.get("smtp")
        smtp = None
        if smtp_facts is not None:
            smtp = dict(smtp_facts)
            smtp["replies"] = [dict(r, ts=_seconds(r["ts"])) for r in smtp_facts.get("replies", [])]
            smtp["transactions"] = [dict(t, ts=_seconds(t.get("ts"))) for t in smtp_facts.get("transactions", [])]
        server_name = None
        if latest is not None:
            server_name = latest.get("name")
        elif tls.get("sni"):
            server_name = tls["sni"]
        elif smtp and smtp.get("server_host"):
            server_name = smtp["server_host"]
        record: dict[str, Any] = {
            "session_id": facts["uid"],
            "client": address_text(facts["orig_addr"]),
            "client_port": facts["orig_port"],
            "server": server,
            "server_port": facts["resp_port"],
            "ip_version": facts["ip_version"],
            "server_name": server_name,
            "first_seen": _seconds(facts["first_ts"]),
            "last_seen": _seconds(facts["last_ts"]),
            "duration": seconds(facts["last_ts"] - facts["first_ts"]),
            "conn_state": facts["conn_state"],
            "history": facts["history"],
            "syn_count": len(syn_times),
            "syn_retry_gaps": gaps,
            "handshake_rtt": _seconds(facts.get("handshake_rtt")),
            "rst_from": reset.get("rst_from") if reset else None,
            "rst": _rst_record(reset),
            "icmp": icmp,
            "firewall": facts.get("firewall"),
            "packets_client": facts.get("orig_pkts", 0),
            "packets_server": facts.get("resp_pkts", 0),
            "bytes_client": facts.get("orig_bytes", 0),
            "bytes_server": facts.get("resp_bytes", 0),
            "ip_bytes_client": facts.get("orig_ip_bytes", 0),
            "ip_bytes_server": facts.get("resp_ip_bytes", 0),
            "missed_bytes": facts.get("missed_bytes", 0),
            "service": app.get("service"),
            "microsoft": microsoft,
            "microsoft_evidence": evidence,
            "microsoft_service": role,
            "tls": tls,
            "smtp": smtp,
        }
        outcome, reason = decide(facts, app, reset, self.capture_end)
        record["outcome"] = outcome
        record["outcome_reason"] = reason
        if smtp is not None:
            record["decisive_reply"] = decisive_reply(smtp.get("replies") or [])
        else:
            record["decisive_reply"] = None
        record["verdict"] = verdict(record, facts, app, reset)
        record["notes"] = list(app.get("notes") or [])
        record["weirds"] = dict(facts.get("weirds") or {}) | ((smtp or {}).get("weirds") or {})
        record["end_reason"] = facts.get("end_reason")
        return record


def collect(built: Iterable[Built], tally: Tally | None = None) -> tuple[SessionStore, SessionStore]:
    """Built sessions into a store of records and one of ``(session id, events)``, each
    record also added to ``tally``."""
    records, events = SessionStore(json_records=True), SessionStore()
    for record, session_events, weight in built:
        records.append(record, weight)
        events.append(session_events, weight)
        if tally is not None:
            tally.add(record)
    return records, events


def record_order(built: Built) -> tuple[float, str]:
    """What the records are sorted by: first_seen, then session_id (:func:`session_order`)."""
    record = built[0]
    return record["first_seen"], record["session_id"]


def merge_built(streams: Iterable[Iterable[Built]]) -> Iterator[Built]:
    """Several processes' built sessions, each stream in the records' order, as one stream in
    that order: what one process building all of them would give."""
    return heapq.merge(*streams, key=record_order)


def first_seen_key(facts: dict[str, Any]) -> float:
    """What the records are sorted by first: their ``first_seen`` (so equal for two sessions
    that began in the same microsecond, whose order the session id then decides)."""
    return seconds(facts["first_ts"])  # as _seconds, never None


def session_order(first_seen: array, all_facts: Sequence[dict[str, Any]]) -> list[int]:
    """Positions by (first_seen, session_id): sorted on the numbers alone, then the rare runs
    of equal first_seen by id (reading only those sessions back)."""
    order = sorted(range(len(first_seen)), key=first_seen.__getitem__)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and first_seen[order[end]] == first_seen[order[start]]:
            end += 1
        if end - start > 1:
            order[start:end] = sorted(order[start:end], key=lambda n: all_facts[n]["uid"])
        start = end
    return order


def _rst_record(reset: dict[str, Any] | None) -> dict[str, Any] | None:
    if reset is None:
        return None
    out = {key: reset.get(key) for key in ("ttl", "hops", "initial_ttl", "server_ttl", "server_hops", "evidence")}
    out["ts"] = _seconds(reset.get("ts"))
    return out
