"""The reporting layer: DataFrame schemas, plots, exports (Zeek logs, Parquet), HTML, the browser.

Captures are crafted (tests/crafting.py) so every kind of session is present: completed,
SMTP error, dropped SYNs, forged RST, ICMP rejection, TLS.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, all_captures

import analyzer
from analyzer.diagnosis.verdicts import is_failing
from analyzer.report import plots
from analyzer.report.zeeklogs import read_log

from crafting import EXO_BANNER, Conversation, dns_exchange, frames, plain_smtp_session, self_signed_cert, send_flights, tls_exchange, write_pcap

HOSTILE = b"220 <script>alert('x')</script> \x1b[31mred\x1b[0m ESMTP\r\n"


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    t = 1_700_000_000.0
    packets = dns_exchange(t - 1, "smtp.office365.com", [("smtp.office365.com", "A", "52.96.10.20")])
    packets += plain_smtp_session(Conversation(cport=41001, sport=25, t=t)).packets
    packets += plain_smtp_session(Conversation(cport=41002, sport=25, t=t + 2), final=b"550 5.7.64 TenantAttribution; Relay Access Denied\r\n").packets
    dropped = Conversation(cport=41003, t=t + 4)
    for dt in (0, 1, 2, 4):
        dropped.syn(dt=dt)
    packets += dropped.packets
    icmp = Conversation(cport=41004, t=t + 20)
    icmp.syn()
    icmp.icmp_from_router(3, 13)
    packets += icmp.packets
    hostile = Conversation(cport=41005, server="198.51.100.9", sport=25, t=t + 22).handshake()
    hostile.smtp([("S", HOSTILE), ("C", b"QUIT\r\n"), ("S", b"221 <b>bye</b>\r\n")])
    hostile.close_by_client()
    packets += hostile.packets
    pem = self_signed_cert(tmp)
    tls = Conversation(cport=41006, t=t + 24).handshake()
    tls.smtp([("S", EXO_BANNER), ("C", b"EHLO x\r\n"), ("S", b"250-hi\r\n250 STARTTLS\r\n"), ("C", b"STARTTLS\r\n"), ("S", b"220 2.0.0 go\r\n")])
    send_flights(tls, tls_exchange(pem, app_data=[(True, b"EHLO x\r\n"), (False, b"250 ok\r\n")]))
    tls.close_by_client()
    packets += tls.packets
    packets += Conversation(cport=9, sport=9, t=t + 100, server="198.51.100.1").syn().packets
    return write_pcap(tmp / "mixed.pcap", frames(sorted(packets), 1))


@pytest.fixture(scope="module")
def analysis(capture):
    return analyzer.analyze(capture)


def test_sessions_frame_schema(analysis):
    df = analysis.sessions
    assert len(df) == 6
    assert str(df["first_seen"].dtype) == "datetime64[ns, UTC]"
    assert isinstance(df["outcome"].dtype, pd.CategoricalDtype)
    assert set(["syn_unanswered", "completed", "smtp_error"]) <= set(df["outcome"].cat.categories)
    assert str(df["server_port"].dtype) == "Int64" and str(df["microsoft"].dtype) == "boolean"
    assert str(df["handshake_rtt"].dtype) == "Float64"
    assert df["tls_version"].dtype.ordered
    assert list(df.columns[:6]) == ["session_id", "first_seen", "last_seen", "duration", "client", "client_port"]
    counts = df["outcome"].value_counts()
    assert counts["syn_unanswered"] == 1 and counts["rejected_icmp"] == 1 and counts["smtp_error"] == 1
    # Every JSON-contract field is a column.
    record = analysis.records[0]
    for key in ("session_id", "conn_state", "history", "syn_count", "rst_from", "icmp", "tls", "smtp", "verdict", "outcome_reason"):
        assert key in df.columns and key in record


def test_other_frames_join_on_session_id(analysis):
    ids = set(analysis.sessions["session_id"])
    for frame in (analysis.events, analysis.replies, analysis.tls):
        assert len(frame) > 0 and set(frame["session_id"]) <= ids
    ev = analysis.events
    assert isinstance(ev["kind"].dtype, pd.CategoricalDtype) and str(ev["ts"].dtype) == "datetime64[ns, UTC]"
    assert {"syn", "syn_retry", "syn_ack", "icmp", "smtp_reply", "smtp_command", "tls_client_hello"} <= set(ev["kind"].astype(str))
    assert str(analysis.replies["code"].dtype) == "Int64"
    assert analysis.dns["qname"].tolist() == ["smtp.office365.com"]


def test_empty_frames_keep_their_columns(tmp_path):
    path = write_pcap(tmp_path / "nothing.pcap", frames(dns_exchange(1_700_000_000.0, "www.example.com", [("www.example.com", "A", "93.184.216.34")]), 1))
    a = analyzer.analyze(path)
    assert a.sessions.empty and list(a.sessions.columns) == list(analyzer.analyze(path).sessions.columns)
    assert a.events.empty and "kind" in a.events.columns


def test_timeline_and_overview_render(analysis, tmp_path):
    for name, fig in (("timeline", analysis.plot_timeline()), ("failing", analysis.plot_timeline(failing=True)),
                      ("microsoft", analysis.plot_timeline(microsoft=True)), ("one", analysis.plot_timeline(server="198.51.100.9")),
                      ("overview", analysis.plot_overview())):
        for ext in ("png", "svg"):
            path = plots.save(fig, str(tmp_path / f"{name}.{ext}")) if ext == "svg" else None
            if ext == "png":
                fig.savefig(tmp_path / f"{name}.png", dpi=100)
        png = (tmp_path / f"{name}.png").read_bytes()
        width, height = struct.unpack(">II", png[16:24])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and width >= 800 and height >= 150
        assert (tmp_path / f"{name}.svg").stat().st_size > 5000


def test_timeline_paginates_many_sessions(tmp_path):
    packets = []
    for i in range(90):
        conv = Conversation(cport=30000 + i, t=1_700_000_000.0 + i)
        conv.syn()
        conv.server_rst(ttl=118, dt=0.01)
        packets += conv.packets
    a = analyzer.analyze(write_pcap(tmp_path / "many.pcap", frames(packets, 1)))
    assert len(a.records) == 90
    fig = a.plot_timeline(max_lanes=40, page=2)
    assert "page 3/3" in fig.axes[0].get_title(loc="left") and len(fig.axes[0].get_yticks()) == 10
    fig = a.plot_timeline(max_lanes=40, page=7)  # past the end: the last page
    assert "sessions 81–90 of 90, page 3/3" in fig.axes[0].get_title(loc="left")
    # One pass keeps the wanted pages' lanes and the last page's, nothing else.
    ids = [r["session_id"] for r in a.records]
    for wanted, kept in [((0,), {0: ids[:40], 2: ids[80:]}), ((1,), {1: ids[40:80], 2: ids[80:]}),
                         (range(8), {0: ids[:40], 1: ids[40:80], 2: ids[80:]}), ((), {2: ids[80:]})]:
        chosen, lanes = plots.timeline_pages(a.records, max_lanes=40, wanted=wanted)
        assert chosen == 90 and {page: [r["session_id"] for r in recs] for page, recs in lanes.items()} == kept


def test_plots_on_empty_input(tmp_path):
    for fig in (plots.plot_timeline([], {}), plots.plot_overview([])):
        assert "No sessions" in " ".join(t.get_text() for t in fig.texts)
        fig.savefig(tmp_path / "e.png")
        assert (tmp_path / "e.png").stat().st_size > 1000


def test_zeek_logs_parse_back_and_match_the_json(analysis, tmp_path):
    analysis.to_zeek(str(tmp_path))
    fields, conn = read_log(str(tmp_path / "conn.log"))
    assert fields[:6] == [("ts", "time"), ("uid", "string"), ("id.orig_h", "addr"), ("id.orig_p", "port"), ("id.resp_h", "addr"), ("id.resp_p", "port")]
    by_uid = {r["session_id"]: r for r in analysis.records}
    assert len(conn) == len(by_uid)
    for row in conn:
        rec = by_uid[row["uid"]]
        assert row["id.orig_h"] == rec["client"] and row["id.orig_p"] == rec["client_port"]
        assert row["id.resp_h"] == rec["server"] and row["id.resp_p"] == rec["server_port"]
        assert row["conn_state"] == rec["conn_state"] and row["history"] == rec["history"]
        assert row["orig_pkts"] == rec["packets_client"] and row["resp_pkts"] == rec["packets_server"]
        assert row["ts"] == pytest.approx(rec["first_seen"], abs=1e-6)
    _, smtp = read_log(str(tmp_path / "smtp.log"))
    hostile = [r for r in smtp if r["id.resp_h"] == "198.51.100.9"][0]
    assert hostile["last_reply"] == "221 <b>bye</b>"
    relay = [r for r in smtp if r["id.orig_p"] == 41002][0]
    assert relay["mailfrom"] == "printer@contoso.com" and relay["rcptto"] == ["user@contoso.com"]
    assert relay["last_reply"].startswith("550 5.7.64")
    _, ssl_rows = read_log(str(tmp_path / "ssl.log"))
    [row] = ssl_rows
    rec = by_uid[row["uid"]]
    assert row["version"] == "TLSv13" and row["established"] is True and row["server_name"] == rec["tls"]["sni"]
    raw = (tmp_path / "conn.log").read_text()
    assert raw.startswith("#separator \\x09\n#set_separator\t,\n") and "\n#close\t" in raw


@pytest.mark.skipif(shutil.which("zeek-cut") is None, reason="zeek-cut is not installed here")
def test_zeek_cut_reads_our_logs(analysis, tmp_path):  # pragma: no cover - only where Zeek is installed
    analysis.to_zeek(str(tmp_path))
    out = subprocess.run(["zeek-cut", "uid", "conn_state"], stdin=open(tmp_path / "conn.log"), capture_output=True, text=True)
    assert len(out.stdout.splitlines()) == len(analysis.records)


def test_parquet_round_trip(analysis, tmp_path):
    analysis.to_parquet(str(tmp_path))
    back = pd.read_parquet(tmp_path / "sessions.parquet")
    assert list(back["session_id"]) == list(analysis.sessions["session_id"])
    assert json.loads(back.loc[0, "verdict"])["title"] == analysis.records[0]["verdict"]["title"]
    for name in ("events", "replies", "tls", "dns"):
        assert (tmp_path / f"{name}.parquet").exists()


@pytest.mark.parametrize("spilled", [False, True])
def test_files_written_piece_by_piece_equal_the_whole_tables(monkeypatch, tmp_path, spilled):
    """CSV and Parquet are written EXPORT_CHUNK_SESSIONS sessions (EXPORT_CHUNK_DNS DNS
    transactions) at a time: cut into pieces of 4 (3), with the sessions kept in memory or
    spilled, they hold exactly the whole tables."""
    from analyzer.diagnosis import store
    from analyzer.report import exports

    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    if spilled:
        monkeypatch.setattr(store, "MAX_SESSIONS_IN_MEMORY", 0)
    a = analyzer.analyze(path)
    whole = {name: getattr(a, name) for name in exports.TABLES}  # the Analysis's own DataFrames
    a.to_csv(str(tmp_path / "whole"))
    monkeypatch.setattr(exports, "EXPORT_CHUNK_SESSIONS", 4)
    monkeypatch.setattr(exports, "EXPORT_CHUNK_DNS", 3)
    assert len(a.records) > 3 * 4 and len(a.dns) > 3 * 3
    a.to_csv(str(tmp_path / "pieces"))
    a.to_parquet(str(tmp_path / "parquet"))
    for name in exports.TABLES:
        assert (tmp_path / "pieces" / f"{name}.csv").read_bytes() == (tmp_path / "whole" / f"{name}.csv").read_bytes(), name
        back = pd.read_parquet(tmp_path / "parquet" / f"{name}.parquet")
        expected = exports.flat(whole[name])
        assert list(back.columns) == list(expected.columns) and len(back) == len(expected), name
        for col in expected.columns:  # categories become plain values in pieces with fewer of them
            assert [None if pd.isna(v) else v for v in back[col].astype(object)] == \
                   [None if pd.isna(v) else v for v in expected[col].astype(object)], (name, col)
    single = tmp_path / "one.csv"
    assert exports.write_csv(a, str(single)) == [str(single)]
    assert single.read_bytes() == (tmp_path / "whole" / "sessions.csv").read_bytes()


def test_csv_files_are_what_pandas_writes_of_the_frames(tmp_path):
    """CSV is written by the csv module from the tables' rows, not by pandas: for every capture
    we have, each file holds exactly what pandas' to_csv writes of the Analysis's DataFrame
    (nested fields as JSON: ``exports.flat``)."""
    from analyzer.report import exports

    paths = all_captures()
    assert len(paths) > 20
    for n, path in enumerate(paths):
        a = analyzer.analyze(path)
        out = tmp_path / str(n)
        a.to_csv(str(out))
        for name in exports.TABLES:
            expected = exports.flat(getattr(a, name)).to_csv(index=False, lineterminator="\n")
            assert (out / f"{name}.csv").read_text(encoding="utf-8") == expected, (path, name)


@pytest.mark.parametrize("fmt", ["csv", "zeek", "jsonl"])
def test_exports_other_than_parquet_do_without_pandas(fmt, tmp_path):
    """pandas takes 0.4 s to import: the CLI's CSV, Zeek and JSON exports never import it (the
    DataFrames and Parquet do)."""
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    out = str(tmp_path / ("out.jsonl" if fmt == "jsonl" else "out"))
    code = ("import sys; from analyzer.cli import main\n"
            f"try:\n    main(['analyze', '-q', {path!r}, '--format', {fmt!r}, '-o', {out!r}])\n"
            "except SystemExit as exit:\n    assert exit.code in (0, 1, 2, None), exit.code\n"
            "print('pandas' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False", done.stderr
    assert os.listdir(out) if fmt != "jsonl" else os.path.getsize(out) > 0


def test_dns_rows_spilled_to_disk_give_the_same_outputs(monkeypatch, tmp_path):
    """Past DNS_ROWS_IN_MEMORY the DNS rows wait in a temporary file: every output is the same."""
    from analyzer import engine

    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    kept = analyzer.analyze(path)
    monkeypatch.setattr(engine, "DNS_ROWS_IN_MEMORY", 1)
    spilled = analyzer.analyze(path)
    assert spilled._result.dns.spilled and not kept._result.dns.spilled and len(kept.dns) > 3
    pd.testing.assert_frame_equal(spilled.dns, kept.dns)
    assert spilled.summary() == kept.summary()
    for a, name in ((kept, "kept"), (spilled, "spilled")):
        a.to_csv(str(tmp_path / name))
        a.to_html(str(tmp_path / f"{name}-html"))
    assert (tmp_path / "spilled" / "dns.csv").read_bytes() == (tmp_path / "kept" / "dns.csv").read_bytes()
    assert (tmp_path / "spilled-html" / "report.html").read_text().split("<h2>DNS lookups</h2>")[1] == \
        (tmp_path / "kept-html" / "report.html").read_text().split("<h2>DNS lookups</h2>")[1]


def test_html_report_of_many_sessions_lists_the_failing_first(monkeypatch, tmp_path):
    """Past MAX_REPORT_SESSIONS the page lists the failing sessions first, says how many are
    left out and where they are; spilled or not, the page is the same."""
    import re

    from analyzer.diagnosis import store
    from analyzer.report import html

    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    a = analyzer.analyze(path)
    failing = [n for n, rec in enumerate(a.records) if is_failing(rec)]
    monkeypatch.setattr(html, "MAX_REPORT_SESSIONS", len(failing) - 1)
    page = (tmp_path / "cut").joinpath("report.html")
    a.to_html(str(tmp_path / "cut"))
    text = page.read_text()
    rows = [int(n) for n in re.findall(r'<tr id="s(\d+)">', text)]
    assert rows == failing[:len(failing) - 1]
    assert text.count("<details><summary>#") == len(rows)
    assert f"This page lists {len(rows)} of the {len(a.records)} sessions (the failing ones first" in text
    monkeypatch.setattr(html, "MAX_REPORT_SESSIONS", len(failing) + 2)
    a.to_html(str(tmp_path / "more"))
    rows = [int(n) for n in re.findall(r'<tr id="s(\d+)">', (tmp_path / "more" / "report.html").read_text())]
    others = [n for n in range(len(a.records)) if n not in failing][:2]
    assert rows == sorted(failing + others)
    monkeypatch.setattr(html, "MAX_REPORT_SESSIONS", 2000)
    monkeypatch.setattr(store, "MAX_SESSIONS_IN_MEMORY", 0)
    spilled = analyzer.analyze(path)
    assert spilled.records.spilled
    pages = []
    for run, where in ((a, "kept"), (spilled, "spilled")):
        run.to_html(str(tmp_path / where))
        pages.append(re.sub(r"Generated [^.]*\.", "", (tmp_path / where / "report.html").read_text()))
        assert "This page lists" not in pages[-1] and pages[-1].count('<tr id="s') == len(a.records)
    assert pages[0] == pages[1]
    for image in ("overview.png", "timeline-01.png"):
        assert (tmp_path / "kept" / image).read_bytes() == (tmp_path / "spilled" / image).read_bytes()


def test_csv_and_jsonl_exports(analysis, capture, tmp_path):
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--format", "csv", capture], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.splitlines()[0].startswith("session_id,first_seen")
    analysis.to_jsonl(str(tmp_path / "s.jsonl"))
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    assert [json.loads(line)["session_id"] for line in lines] == [r["session_id"] for r in analysis.records]


UTC_COLUMNS = [
    # (what, unit, integer times; None for a missing one)
    ("microseconds, one missing", "us", [1_700_000_000_073_833, 1_700_000_001_000_000, None]),
    ("whole seconds", "us", [1_700_000_000_000_000, 1_700_000_001_000_000]),
    ("nanoseconds", "ns", [1_700_000_000_073_833_001, 1_700_000_001_000_000_000]),
    ("nanoseconds that are microseconds", "ns", [1_700_000_000_073_833_000, 1_700_000_001_000_000_000]),
    ("milliseconds", "ns", [1_700_000_000_073_000_000, 1_700_000_001_000_000_000]),
    ("midnight", "ns", [1_700_006_400_000_000_000]),
    ("all missing", "us", [None, None]),
    ("before 1970", "us", [-1_000_000_123_456, 0]),
]


@pytest.mark.parametrize("what, unit, values", UTC_COLUMNS, ids=[w for w, _, _ in UTC_COLUMNS])
def test_csv_datetimes_read_as_pandas_writes_them(what, unit, values):
    """CSV files format UTC datetimes with numpy (exports._utc_cells); the text is pandas' own."""
    from analyzer.report import exports, frames

    scale = 1000 if unit == "us" else 1
    rows = [(None if value is None else value * scale, n) for n, value in enumerate(values)]
    kinds = {"when": "utc_ns", "n": "int"}
    out = io.StringIO()
    exports._write_csv_rows(out, rows, kinds, header=True)
    assert out.getvalue() == exports.flat(frames.table(rows, kinds)).to_csv(index=False, lineterminator="\n")


CELL_COLUMNS = [
    # (what, kind, values as records hold them): the csv module's cells against pandas' text
    ("seconds read as float, rounded to the microsecond", "utc_s", [1764000000.073833, 1700000000.000001, 1699999999.999999, None]),
    ("seconds, whole and half microseconds", "utc_s", [1700000000, 1700000000.0000005, 1700000000.0000015]),
    ("nanoseconds with a gap", "utc_ns", [1_700_000_000_073_833_001, None, 0]),
    ("floats: ints, tiny, huge, NaN", "float", [0, 0.000044, 1.5e300, float("nan"), None, 12345678.0]),
    ("ints from bools and floats", "int", [True, 25, 25.0, None]),
    ("booleans from ints", "bool", [1, 0, None]),
    ("booleans", "bool", [True, False, None]),
    ("strings of anything", "str", ["a,b", 'say "hi"', "two\nlines", 5, None, ""]),
    ("nested values", "object", [{"a": [1, 2]}, [], (3,), None, "plain"]),
]


@pytest.mark.parametrize("what, kind, values", CELL_COLUMNS, ids=[w for w, _, _ in CELL_COLUMNS])
def test_csv_cells_are_what_pandas_writes(what, kind, values):
    """The CSV writer's conversion of each kind (exports._csv_rows) gives pandas' text for the
    typed frame column (frames.table), value by value."""
    from analyzer.report import exports, frames

    kinds = {"value": kind, "n": "int"}
    rows = [(value, n) for n, value in enumerate(values)]
    out = io.StringIO()
    exports._write_csv_rows(out, rows, kinds, header=True)
    expected = exports.flat(frames.table(rows, kinds)).to_csv(index=False, lineterminator="\n")
    assert out.getvalue() == expected


JSON_VALUES = [
    # (what, value): what session records and exports may hold
    ("text and nesting", {"a": "é \u2028 \x01 \"q\"", "b": [1, 2.5, None, True], "c": {"d": []}}),
    ("tiny and large floats", {"rtt": 0.000044, "big": 1.5e300, "neg": -0.0, "ts": 1764000000.073833}),
    ("tuples, sets, bytes", {"t": (1, 2), "s": {3}, "b": b"\x00\xff"}),
    ("dates", {"d": __import__("datetime").datetime(2026, 11, 27, 12, 0, tzinfo=__import__("datetime").timezone.utc)}),
    ("keys that are not strings", {1: "one", 2.5: "x", None: "n", False: "f"}),
    ("an integer beyond 64 bits", {"n": 2**70}),
]


@pytest.mark.parametrize("what, value", JSON_VALUES, ids=[w for w, _ in JSON_VALUES])
def test_compact_json_says_what_the_standard_encoder_says(what, value):
    """dumps_json (orjson when installed) and json.dumps read back the same, and compactly."""
    from analyzer.diagnosis.jsontext import _COMPACT, dumps_json, json_default

    text = dumps_json(value)
    assert json.loads(text) == json.loads(json.dumps(value, default=json_default, ensure_ascii=False))
    assert ", " not in text.replace('", "', "") and ": " not in text.replace('": "', "")
    assert json.loads(_COMPACT.encode(value)) == json.loads(text)


def test_jsonl_of_every_bundled_capture_reads_back_as_the_records():
    from analyzer.report.safe import json_default

    import glob

    for path in sorted(glob.glob(os.path.join(ROOT, "captures", "*.pcap"))):
        run = analyzer.analyze(path)
        records = run.records
        buffer = io.StringIO()
        run.to_jsonl(buffer)
        lines = buffer.getvalue().splitlines()
        assert len(lines) == len(records), path
        for line, record in zip(lines, records):
            public = {k: v for k, v in record.items() if not k.startswith("_")}
            assert json.loads(line) == json.loads(json.dumps(public, default=json_default)), path


def test_html_report_escapes_the_wire(analysis, tmp_path):
    page = analysis.to_html(str(tmp_path))
    html_text = open(page, encoding="utf-8").read()
    assert "<script>" not in html_text and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html_text
    assert "<b>bye</b>" not in html_text and "&lt;b&gt;bye&lt;/b&gt;" in html_text
    assert "\x1b" not in html_text
    assert "Content-Security-Policy" in html_text and "default-src 'none'" in html_text
    assert html_text.index("Why does mail fail?") < html_text.index("<h2>Sessions</h2>") < html_text.index("<h2>Transcripts</h2>")
    assert (tmp_path / "overview.png").stat().st_size > 10_000 and (tmp_path / "timeline-01.png").stat().st_size > 10_000


def test_terminal_never_passes_control_sequences(capture):
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", capture], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0
    assert "\x1b" not in out.stdout  # not a TTY: no colour, and the banner's ESC is shown escaped
    follow = subprocess.run([sys.executable, "-m", "analyzer", "follow", capture, "4"], capture_output=True, text=True, timeout=120)
    assert "\x1b" not in follow.stdout and "\\x1b[31mred" in follow.stdout


@pytest.mark.parametrize("width", [60, 80, 100, 160])
def test_sessions_table_fits_the_terminal_without_breaking_words(width):
    """At any width the table stays inside the terminal and keeps outcome names whole."""
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": str(width)})
    assert out.returncode == 0
    assert max(len(line) for line in out.stdout.splitlines()) <= width
    table = out.stdout[out.stdout.index("Sessions"):]
    assert table.count("syn_unanswered") == 9 and table.count("completed") >= 3
    assert "smtp.office365.com" in table


@pytest.mark.parametrize("per_table", [1000, 2])
@pytest.mark.parametrize("width", [80, 200])
def test_failed_sessions_keep_the_numbers_follow_uses(monkeypatch, per_table, width):
    """--failed lists the failing sessions under their numbers in the whole list (the ones
    `smtpflow follow N` takes), however many tables the list is printed in."""
    from rich.console import Console

    from analyzer.report import terminal

    monkeypatch.setattr(terminal, "SESSIONS_PER_TABLE", per_table)
    a = analyzer.analyze(os.path.join(ROOT, "captures", "gateway-mixed.pcap"))
    failing = [n for n, rec in enumerate(a.records) if is_failing(rec)]
    assert 0 < len(failing) < len(a.records) and failing != list(range(len(failing)))
    for only_failed, expected in ((True, failing), (False, list(range(len(a.records))))):
        console = Console(width=width, record=True, no_color=True)
        terminal.render_analysis(console, a, only_failed=only_failed)
        text = console.export_text()
        listed = text[text.index("Sessions"):]
        assert _listed_numbers(text) == expected
        header = "client → server" if width >= terminal.WIDE_TABLE_MIN_WIDTH else "outcome and verdict"
        assert listed.count(header) == -(-len(expected) // per_table)


def _listed_numbers(text: str) -> list[int]:
    listed = text[text.index("Sessions"):]
    return [int(line.split()[0]) for line in listed.splitlines()[1:] if line.split() and line.split()[0].isdigit()]


def test_table_lists_at_most_its_limit_failing_sessions_first(monkeypatch):
    """Past MAX_TABLE_SESSIONS (or --rows N) the table lists the failing sessions first, then
    the others, in capture order, under their follow numbers, and says how many it left out."""
    from rich.console import Console

    from analyzer.report import terminal

    a = analyzer.analyze(os.path.join(ROOT, "captures", "gateway-mixed.pcap"))
    failing = [n for n, rec in enumerate(a.records) if is_failing(rec)]
    others = [n for n in range(len(a.records)) if n not in failing]
    assert len(failing) > 3 and others and failing != list(range(len(failing)))

    def shown(**kwargs) -> tuple[list[int], str]:
        console = Console(width=200, record=True, no_color=True)
        terminal.render_analysis(console, a, **kwargs)
        text = console.export_text()
        return _listed_numbers(text), " ".join(text.split())

    numbers, text = shown(limit=3)
    assert numbers == failing[:3] and f"lists 3 of {len(a.records)} sessions (the failing ones first" in text
    numbers, text = shown(limit=len(failing) + 1)
    assert numbers == sorted(failing + others[:1])
    numbers, text = shown(limit=2, only_failed=True)
    assert numbers == failing[:2] and f"lists 2 of {len(failing)} sessions (at most 2" in text
    numbers, text = shown(limit=0)
    assert numbers == list(range(len(a.records))) and "lists" not in text
    monkeypatch.setattr(terminal, "MAX_TABLE_SESSIONS", 4)
    numbers, text = shown()
    assert numbers == failing[:4] and "--rows 0 lists all" in text
    numbers, text = shown(limit=len(a.records))
    assert numbers == list(range(len(a.records))) and "lists" not in text


def test_views_show_the_largest_findings_and_say_how_many_they_leave_out(monkeypatch, tmp_path):
    """Past MAX_SHOWN_FINDINGS the terminal and the HTML report show the first findings (the
    most severe and largest) and say how many they left out; the summary keeps them all."""
    from rich.console import Console

    from analyzer.diagnosis import summary as summary_module
    from analyzer.report import html, terminal

    a = analyzer.analyze(os.path.join(ROOT, "captures"))
    findings = a.summary()["findings"]
    assert len(findings) > 10
    for module in (terminal, html):
        monkeypatch.setattr(module, "MAX_SHOWN_FINDINGS", 5)
    console = Console(width=200, record=True, no_color=True)
    terminal.render_analysis(console, a)
    text = " ".join(console.export_text().split())
    assert f"and {len(findings) - 5:,} more finding(s)" in text
    shown = [f["title"] for f in findings if f["title"] in text]
    assert shown[:5] == [f["title"] for f in findings[:5]]
    page = open(a.to_html(str(tmp_path / "report")), encoding="utf-8").read()
    assert page.count('<tr><td><span class="badge') == 5 and f"and {len(findings) - 5:,} more finding(s)" in page
    assert len(a.summary()["findings"]) == len(findings)
    monkeypatch.setattr(terminal, "MAX_SHOWN_FINDINGS", summary_module.MAX_SHOWN_FINDINGS)
    console = Console(width=200, record=True, no_color=True)
    terminal.render_analysis(console, a)
    assert "more finding(s)" not in console.export_text()


def test_rows_option_on_the_command_line(tmp_path):
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path, "--rows", "2", "-q"],
                         capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0 and "lists 2 of" in " ".join(out.stdout.split())
    assert len(_listed_numbers(out.stdout)) == 2
    bad = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path, "--rows", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--rows" in bad.stderr and "Traceback" not in bad.stderr


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_report_renders_in_headless_chromium(analysis, tmp_path):
    page = analysis.to_html(str(tmp_path / "report"))
    shot = tmp_path / "screenshot.png"
    profile = tmp_path / "profile"
    cmd = [
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
        "--enable-logging=stderr", "--v=0", "--window-size=1280,2400", f"--screenshot={shot}", f"file://{page}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 20_000, out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Content Security Policy" in line]
    assert not console, console
    dom = subprocess.run([c for c in cmd if not c.startswith("--screenshot")] + ["--dump-dom"], capture_output=True, text=True, timeout=120)
    assert "Why does mail fail?" in dom.stdout and "smtpflow report" in dom.stdout


def test_frame_datetimes_are_the_exact_capture_times():
    """Datetimes are built from integer microseconds (records) and nanoseconds (events, DNS),
    never from float seconds: 1764000000.073833 read as a float became …00.073832989."""
    from analyzer.report import frames

    seconds = pd.Series([1764000000.073833, 1764000000.0, None, 1764000001.999999])
    assert [None if pd.isna(t) else t.value for t in frames._utc(seconds)] == \
        [1764000000_073833_000, 1764000000_000000_000, None, 1764000001_999999_000]
    nanoseconds = pd.Series([1764000000_073833_123, None], dtype="object")
    assert [None if pd.isna(t) else t.value for t in frames._utc_ns(nanoseconds)] == [1764000000_073833_123, None]
    for path in (os.path.join(ROOT, "captures", "gateway-mixed.pcap"), os.path.join(ROOT, "captures", "dns-nxdomain.pcap")):
        a = analyzer.analyze(path)
        micros = [round(r["first_seen"] * 1_000_000) for r in a.records]
        assert [t.value // 1000 for t in a.sessions["first_seen"]] == micros
        assert all(t.value % 1000 == 0 for t in a.sessions["first_seen"])
        events = [ts for r in a.records for ts, *_ in sorted(a._result.events[r["session_id"]])]
        assert sorted(t.value for t in a.events["ts"]) == sorted(events)
        assert sorted(t.value for t in a.dns["ts"]) == sorted(tx["ts"] for tx in a._result.dns)


def test_the_live_function_stays_a_function_once_its_module_is_loaded():
    """analyzer.live() imports the module that does the work on first use. That module was
    analyzer/live.py, and importing a submodule binds its name in the package: the function
    became the module, and a second analyzer.live() in a notebook failed ("'module' object is
    not callable")."""
    import importlib

    for name in ("analyzer.livecapture", "analyzer.capture.live"):
        importlib.import_module(name)
    assert callable(analyzer.live) and analyzer.live.__name__ == "live"
    assert callable(analyzer.analyze)


@pytest.mark.parametrize("text, width, shown", [
    ("220 2.0.0 SMTP server ready", 40, "220 2.0.0 SMTP server ready"),  # fits: as it is
    ("221 2.0.0 Service closing transmission channel", 40, "221 2.0.0 Service closing transmission …"),
    ("221 2.0.0 Service closing transmission channel", 20, "221 2.0.0 Service …"),
    ("250 " + "y" * 60, 40, "250 " + "y" * 35 + "…"),  # no word ends in the second half: cut
    ("x" * 50, 10, "x" * 9 + "…"),
    ("a" * 10, 10, "a" * 10),
])
def test_the_last_reply_is_shortened_after_a_whole_word(text, width, shown):
    from analyzer.report.terminal import shortened

    assert shortened(text, width) == shown and len(shortened(text, width)) <= width
