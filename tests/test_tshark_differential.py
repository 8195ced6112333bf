"""Differential check against tshark (through pyshark): SMTP reply codes and TLS alerts per session.

On the SMTP and TLS traces of the public Zeek corpus (``../shared/corpus/zeek``) and on the
bundled ``captures/*.pcap`` (no key logs: only what travels in clear is compared):

* the SMTP reply codes tshark dissects (``smtp.response.code``) against smtpflow's plaintext
  replies (``record["smtp"]["replies"]`` with ``encrypted`` false), in order;
* the TLS alerts tshark dissects (``tls.alert_message.desc``, numeric) against
  ``record["tls"]["alerts"]`` (the unencrypted ones), in order.

tshark sessions (``tcp.stream``) map to smtpflow's by their 4-tuple. smtpflow runs with
``ports="all"`` so it looks at every TCP session tshark might dissect. tshark is not ground
truth (it splits multi-line replies that span segments, and mis-parses them when those arrive
out of order), so every disagreement must be explained in
``tests/conformance/tshark_differences.toml``; an entry that no longer disagrees fails too.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tomllib
from collections import defaultdict
from functools import cache

import pytest

import analyzer
from analyzer.protocols.tls.constants import ALERT_DESCRIPTIONS

from conftest import ROOT, TESTS, ZEEK_CORPUS

pyshark = pytest.importorskip("pyshark", reason="pyshark is not installed")

DIFFERENCES_FILE = os.path.join(TESTS, "conformance", "tshark_differences.toml")

#: tshark's names for what is compared, by tshark major version: the SSL dissector (fields
#: ``ssl.*``) became the TLS dissector in 3.0; the SMTP and TCP fields have not changed.
TSHARK_FIELDS = {
    2: {"stream": "tcp.stream", "reply_code": "smtp.response.code", "alert": "ssl.alert_message.desc", "tls_layer": "ssl"},
    3: {"stream": "tcp.stream", "reply_code": "smtp.response.code", "alert": "tls.alert_message.desc", "tls_layer": "tls"},
    4: {"stream": "tcp.stream", "reply_code": "smtp.response.code", "alert": "tls.alert_message.desc", "tls_layer": "tls"},
}

ALERT_NUMBERS = {name: number for number, name in ALERT_DESCRIPTIONS.items()}


@cache
def tshark_fields() -> dict[str, str]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True, check=True).stdout
    major = int(re.match(r"TShark \(Wireshark\) (\d+)\.", version).group(1))
    if major not in TSHARK_FIELDS:
        pytest.skip(f"tshark {major}.x: its field names are not pinned in TSHARK_FIELDS")
    return TSHARK_FIELDS[major]


def traces() -> dict[str, str]:
    """Trace name (as in the differences file) → path: the corpus's SMTP/TLS traces, our captures."""
    found = {f"captures/{os.path.basename(p)}": p for p in sorted(glob.glob(os.path.join(ROOT, "captures", "*.pcap")))}
    patterns = ("smtp*.pcap*", "smtp/*.pcap*", "tls/*.pcap*", "http/connect-with-smtp.pcap")
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(ZEEK_CORPUS, pattern))):
            found[f"zeek/{os.path.relpath(path, ZEEK_CORPUS)}"] = path
    return found


def _json_values(node, key: str):
    """Every value of field ``key`` in a tshark JSON protocol tree (nested records, lists)."""
    if isinstance(node, dict):
        for name, value in node.items():
            if name == key:
                yield from value if isinstance(value, list) else [value]
            else:
                yield from _json_values(value, key)
    elif isinstance(node, list):
        for item in node:
            yield from _json_values(item, key)


def tshark_sessions(path: str) -> dict[int, dict]:
    """tcp.stream → {"tuple": (src, sport, dst, dport) of a packet, "codes": [...], "alerts": [...]}."""
    fields = tshark_fields()
    capture = pyshark.FileCapture(path, use_json=True, include_raw=False, keep_packets=False,
                                  display_filter=f"{fields['reply_code']} or {fields['alert']}")
    sessions: dict[int, dict] = defaultdict(lambda: {"codes": [], "alerts": []})
    try:
        for pkt in capture:
            ip = pkt.ip if "IP" in pkt else pkt.ipv6
            session = sessions[int(pkt.tcp.get_field(fields["stream"].split(".", 1)[1]))]
            session["tuple"] = (ip.src, int(pkt.tcp.srcport), ip.dst, int(pkt.tcp.dstport))
            for layer in pkt.layers:
                # pyshark's JSON layers keep tshark's parsed tree; one frame may hold several PDUs.
                for tree in [layer._all_fields] + [dup._all_fields for dup in layer.duplicate_layers]:
                    if layer.layer_name == "smtp":
                        session["codes"] += [int(v) for v in _json_values(tree, fields["reply_code"])]
                    elif layer.layer_name == fields["tls_layer"]:
                        session["alerts"] += [int(v) for v in _json_values(tree, fields["alert"])]
    finally:
        capture.close()
    return dict(sessions)


def _ours(record: dict) -> dict[str, list[int]]:
    replies = (record.get("smtp") or {}).get("replies") or []
    alerts = (record.get("tls") or {}).get("alerts") or []
    return {
        "codes": [r["code"] for r in replies if not r["encrypted"]],
        "alerts": [ALERT_NUMBERS.get(a["description"], -1) for a in alerts if not a["encrypted"]],
    }


def _label(client: str, cport: int, server: str, sport: int) -> str:
    return f"{client}:{cport} > {server}:{sport}"


@cache
def compare(name: str) -> tuple[list[tuple[str, str, str, list, list]], int, int]:
    """Disagreements (trace, session, field, tshark's values, smtpflow's), sessions and values compared."""
    path = traces()[name]
    fields = tshark_fields()
    theirs = tshark_sessions(path)
    ours: dict[frozenset, list[dict]] = defaultdict(list)
    for record in analyzer.analyze(path, ports="all").records:
        ours[frozenset([(record["client"], record["client_port"]), (record["server"], record["server_port"])])].append(record)
    pairs = []
    for stream in sorted(theirs):  # tcp.stream numbers follow first appearance, as do our records
        src, sport, dst, dport = theirs[stream]["tuple"]
        matches = ours.get(frozenset([(src, sport), (dst, dport)]))
        record = matches.pop(0) if matches else None
        # Without a record of ours, the side sending replies is the server.
        label = _label(record["client"], record["client_port"], record["server"], record["server_port"]) if record else (
            _label(dst, dport, src, sport) if theirs[stream]["codes"] else _label(src, sport, dst, dport))
        pairs.append((label, theirs[stream], _ours(record) if record else {"codes": [], "alerts": []}))
    for records in ours.values():  # sessions tshark dissected nothing in
        for record in records:
            mine = _ours(record)
            if mine["codes"] or mine["alerts"]:
                label = _label(record["client"], record["client_port"], record["server"], record["server_port"])
                pairs.append((label, {"codes": [], "alerts": []}, mine))
    disagreements, values = [], 0
    for label, tshark, mine in pairs:
        for key, field in (("codes", fields["reply_code"]), ("alerts", fields["alert"])):
            values += max(len(tshark[key]), len(mine[key]))
            if tshark[key] != mine[key]:
                disagreements.append((name, label, field, tshark[key], mine[key]))
    return disagreements, len(pairs), values


def _listed() -> set[tuple[str, str, str]]:
    with open(DIFFERENCES_FILE, "rb") as fh:
        entries = tomllib.load(fh)["difference"]
    for entry in entries:
        assert set(entry) == {"trace", "session", "field", "reason"} and entry["reason"].strip(), entry
    return {(e["trace"], e["session"], e["field"]) for e in entries}


def _checked_traces() -> list[str]:
    names = sorted(traces())
    if not any(name.startswith("zeek/") for name in names):
        pytest.skip(f"the public Zeek corpus is not available at {ZEEK_CORPUS} (a user's clone has no ../shared)")
    return names


def test_every_disagreement_with_tshark_is_explained(capsys):
    names = _checked_traces()
    listed = _listed()
    disagreements, sessions, values = [], 0, 0
    for name in names:
        found, n_sessions, n_values = compare(name)
        disagreements += found
        sessions += n_sessions
        values += n_values
    with capsys.disabled():
        print(f"\ntshark differential: {len(names)} traces, {sessions} sessions, {values} reply codes and alerts; "
              f"{len(disagreements)} disagreements (all explained in {os.path.relpath(DIFFERENCES_FILE, ROOT)})")
    unexplained = [d for d in disagreements if d[:3] not in listed]
    assert not unexplained, "disagreements with tshark missing from tests/conformance/tshark_differences.toml:\n" + "\n".join(
        f"  {trace}  {session}  {field}: tshark {theirs}, smtpflow {mine}" for trace, session, field, theirs, mine in unexplained)
    assert sessions >= 40 and values >= 200, "too little was compared: are tshark's field names right?"


def test_no_stale_tshark_differences():
    names = _checked_traces()
    listed = _listed()
    assert {trace for trace, _s, _f in listed} <= set(names), "entries for traces that are not checked"
    occurring = {d[:3] for name in names for d in compare(name)[0]}
    stale = listed - occurring
    assert not stale, f"tests/conformance/tshark_differences.toml lists differences that no longer occur: {sorted(stale)}"
