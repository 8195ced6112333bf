"""The TLS observer against Zeek's own ssl.log baselines for the public Zeek trace corpus.

Traces are read in place from ``../shared/corpus/zeek`` (never copied into the repository);
the stream comes through the project's own capture → decode → flows layers. Run with ``-s``
to see the agreement table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyzer.capture import CaptureSet
from analyzer.decode import Decoder, Selector, TcpSegment
from analyzer.flows import ConnectionTable
from analyzer.protocols.tls import TlsSession

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "zeek"
EXPECTED = CORPUS / "expected.json"

pytestmark = pytest.mark.skipif(not EXPECTED.is_file(), reason=f"Zeek corpus not present at {CORPUS}")

#: Traces where TLS starts after a plaintext STARTTLS / AUTH TLS exchange.
STARTTLS_TRACES = {"tls/smtp-starttls.pcap", "tls/imap-starttls.pcap", "tls/pop3-starttls.pcap", "ftp/ftp-auth-tls.pcap"}

#: A TLS handshake record header: type 22, version 3.0–3.4.
TLS_HANDSHAKE_START = re.compile(rb"\x16\x03[\x00-\x04]")

#: Fields compared: Zeek ssl.log field -> our summary key.
FIELDS = {
    "version": "version",
    "cipher": "cipher",
    "curve": "curve",
    "server_name": "sni",
    "established": "established",
    "last_alert": "alert",
    "ssl_history": "history",
    "resumed": "resumed",
    "next_protocol": "alpn",
}

_NO_SERVER_HELLO = (
    "By design: the server answered the ClientHello with a fatal alert, so there was no ServerHello "
    "and nothing to resume. Zeek's `resumed` defaults to F; ours is None (unknown) until a ServerHello "
    "decides it."
)

#: Every disagreement, per (trace, Zeek field), with the reason it is right or tolerated.
KNOWN_DIFFERENCES = {
    ("tls/tls1.2-late-protocol-error.pcap", "ssl_history"): (
        "The client's ChangeCipherSpec record header is corrupted (version 0xffff, length 65281). Zeek "
        "raises an analyzer violation and stops parsing both directions (CsxnG); we stop only the "
        "client's direction (NotTls) and still record the server's valid ChangeCipherSpec: CsxnGi. "
        "Both agree the handshake was not established."
    ),
    ("tls/tls-1.2-handshake-failure.pcap", "resumed"): _NO_SERVER_HELLO,
    ("tls/tls13draft16-chrome55.0.2879.0-canary-aborted.pcap", "resumed"): _NO_SERVER_HELLO,
}


class _Adapter:
    """Connects a flow-layer connection to a TlsSession (the session layer's job in the product)."""

    def __init__(self, conn, starttls: bool) -> None:
        self.conn = conn
        self.tls = TlsSession()
        self.waiting = {True: starttls, False: starttls}
        self.held = {True: b"", False: b""}

    def data(self, from_client: bool, data: bytes, ts: int) -> None:
        if self.waiting[from_client]:
            # STARTTLS: plaintext until the first TLS handshake record of this direction.
            held = self.held[from_client] + bytes(data)
            match = TLS_HANDSHAKE_START.search(held)
            if match is None:
                self.held[from_client] = held[-2:]
                return
            self.waiting[from_client] = False
            data = held[match.start() :]
        self.tls.receive(from_client, data, ts)

    def gap(self, from_client: bool, length: int, ts: int) -> None:
        self.tls.gap(from_client, length, ts)

    def end_of_stream(self, from_client: bool, ts: int) -> None:
        self.tls.end_of_stream(from_client, ts)

    def finish(self, ts: int) -> None:
        reset_by = None
        if self.conn.rsts:
            reset_by = "client" if self.conn.rsts[0][1] else "server"
        self.tls.finish(ts, reset_by)


def _analyse(trace: str) -> dict[tuple[int, int], dict]:
    finished = []
    table = ConnectionTable(
        # The summary is taken in the callback: the table releases the analyzer once it returns.
        lambda conn, at_end: finished.append(((conn.orig_port, conn.resp_port), conn.analyzer.tls.summary())),
        lambda conn: _Adapter(conn, trace in STARTTLS_TRACES),
        checksums="off",
    )
    decoder = Decoder(Selector(None))
    for rec in CaptureSet([str(CORPUS / trace)]):
        pkt = decoder.decode(*rec)
        if isinstance(pkt, TcpSegment):
            table.tcp(pkt)
    table.finish()
    return dict(finished)


def _zeek_value(field: str, value):
    if field == "version" and value is not None:
        # Zeek writes TLSv12, TLSv13-draft16; we write TLSv1.2, and TLSv1.3 for every draft.
        match = re.fullmatch(r"TLSv1(\d)(-draft\d+)?", value)
        return f"TLSv1.{match.group(1)}" if match else value
    return value


def _our_value(key: str, summary: dict):
    value = summary[key]
    if key == "alpn":
        return value if isinstance(value, str) else None  # Zeek logs only the server's choice
    return value


def _expected_rows() -> list[tuple[str, dict]]:
    traces = json.loads(EXPECTED.read_text())["traces"]
    return [(trace, row) for trace, info in traces.items() for row in info.get("ssl") or []]


@pytest.fixture(scope="module")
def comparison() -> list[tuple[str, int, str, object, object]]:
    """(trace, orig_port, zeek_field, zeek_value, our_value) for every compared field."""
    results: dict[str, dict] = {}
    rows = []
    for trace, row in _expected_rows():
        if trace not in results:
            results[trace] = _analyse(trace)
        summary = results[trace].get((row["orig_p"], row["resp_p"]))
        assert summary is not None, f"{trace}: no connection {row['orig_p']} -> {row['resp_p']}"
        for zeek_field, our_key in FIELDS.items():
            rows.append((trace, row["orig_p"], zeek_field, _zeek_value(zeek_field, row[zeek_field]), _our_value(our_key, summary)))
    return rows


def test_agreement_with_zeek(comparison) -> None:
    agree = sum(1 for *_, zeek, ours in comparison if zeek == ours)
    print(f"\n{'trace':55} {'orig_p':>6} {'field':14} {'zeek':28} {'smtpflow':28}")
    for trace, port, field, zeek, ours in comparison:
        mark = "" if zeek == ours else "  <-- differs"
        print(f"{trace:55} {port:>6} {field:14} {str(zeek):28} {str(ours):28}{mark}")
    per_field = {}
    for _trace, _port, field, zeek, ours in comparison:
        ok, total = per_field.get(field, (0, 0))
        per_field[field] = (ok + (zeek == ours), total + 1)
    print("\n" + ", ".join(f"{f}: {ok}/{total}" for f, (ok, total) in per_field.items()))
    print(f"agreement: {agree}/{len(comparison)} = {agree / len(comparison):.1%}")
    assert agree / len(comparison) >= 0.90


def test_every_difference_is_explained(comparison) -> None:
    differing = {(trace, field) for trace, _port, field, zeek, ours in comparison if zeek != ours}
    unexplained = sorted(differing - KNOWN_DIFFERENCES.keys())
    stale = sorted(KNOWN_DIFFERENCES.keys() - differing)
    details = [row for row in comparison if (row[0], row[2]) in unexplained]
    assert not unexplained, f"disagreements without a reason in KNOWN_DIFFERENCES: {details}"
    assert not stale, f"KNOWN_DIFFERENCES entries that no longer differ: {stale}"


def test_fields_zeek_leaves_out_are_still_reported() -> None:
    """What Zeek's log cannot say: TLS 1.3's hidden outcome, the failing party, the cause."""
    ff52 = _analyse("tls/tls13draft16-ff52.a01.pcap")
    rejected = ff52[(36778, 443)]
    assert rejected["failure"].startswith("the client sent a fatal unknown_ca alert")
    assert rejected["alert_from"] == "client" and rejected["failure_inferred"] is False
    accepted = ff52[(36782, 443)]
    assert accepted["established"] and accepted["established_inferred"]
    sslv2 = _analyse("tls/ssl.v3.pcap")[(58868, 443)]
    assert sslv2["history"].startswith("C") and sslv2["client_versions"] == ["TLSv1.0"]
