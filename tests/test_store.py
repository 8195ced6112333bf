"""Sessions waiting for the end of the capture: in memory up to a limit, on disk beyond it.

The store itself is tested table-driven in both states; then whole runs — every capture,
every output format, a capture split across processes — are compared with everything kept
in memory and with everything spilled: they must not differ in a byte.
"""

from __future__ import annotations

import gc
import io
import json
import os
import pickle
import random
import subprocess
import sys

import pytest

import analyzer
from analyzer.cli import main
from analyzer.diagnosis import store as store_module
from analyzer.diagnosis.store import EventsBySession, LatestSessions, SessionStore, SpillError, session_weight
from conftest import ROOT, all_captures

ITEMS = [{"uid": f"C{n:03d}", "events": [(n, "orig", "syn", "x" * n)], "blob": bytes(range(n % 256))} for n in range(40)]


def stores(limit_items: int, monkeypatch=None) -> SessionStore:
    return SessionStore(ITEMS, limit=limit_items)


@pytest.mark.parametrize("limit, spilled", [(100, False), (40, False), (39, True), (0, True)])
def test_a_store_reads_back_what_was_put_in_either_way(limit, spilled):
    s = SessionStore(ITEMS, limit=limit)
    assert s.spilled is spilled
    assert len(s) == len(ITEMS)
    assert list(s) == ITEMS
    assert s == ITEMS and ITEMS == list(s)
    assert s[0] == ITEMS[0] and s[-1] == ITEMS[-1] and s[17] == ITEMS[17]
    assert s[5:9] == ITEMS[5:9] and s[::-7] == ITEMS[::-7]
    with pytest.raises(IndexError):
        s[len(ITEMS)]
    with pytest.raises(IndexError):
        s[-len(ITEMS) - 1]
    assert ITEMS[3] in s and s.index(ITEMS[8]) == 8
    # Two readers at once do not disturb each other (positional reads, no shared offset).
    pairs = list(zip(s, reversed(s)))
    assert pairs == list(zip(ITEMS, reversed(ITEMS)))


@pytest.mark.parametrize("limit", [100, 0])
@pytest.mark.parametrize("order", [
    "stored", "reversed", "shuffled", "runs",
])
def test_in_order_reads_any_permutation(limit, order):
    s = SessionStore(ITEMS, limit=limit)
    n = len(ITEMS)
    positions = {
        "stored": list(range(n)),
        "reversed": list(range(n))[::-1],
        "shuffled": random.Random(7).sample(range(n), n),
        # runs stored one after the other, out of order: read a run at a time
        "runs": [i for start in (20, 0, 30, 10) for i in range(start, start + 10)],
    }[order]
    assert sorted(positions) == list(range(n))
    assert list(s.in_order(positions)) == [ITEMS[i] for i in positions]
    # The store is unchanged, and still grows.
    assert list(s) == ITEMS
    s.append({"uid": "late"})
    assert s[-1] == {"uid": "late"} and list(s.in_order([n, 0])) == [{"uid": "late"}, ITEMS[0]]


def test_in_order_reads_a_run_at_once():
    """Consecutive stored items are read with one system call, not one each."""
    s = SessionStore(ITEMS, limit=0)
    calls = []
    real = s._read

    def counting(start, stop):
        calls.append((start, stop))
        return real(start, stop)

    s._read = counting
    n = len(ITEMS)
    order = list(range(10, n)) + list(range(10))
    assert list(s.in_order(order)) == [ITEMS[i] for i in order]
    assert calls == [(10, n), (0, 10)]


@pytest.mark.parametrize("limit", [100, 0])
def test_reorder_and_append_after_reorder(limit):
    s = SessionStore(ITEMS, limit=limit)
    order = sorted(range(len(ITEMS)), key=lambda n: (n % 7, -n))
    s.reorder(order)
    assert list(s) == [ITEMS[n] for n in order]
    s.append({"uid": "late"})
    assert s[-1] == {"uid": "late"} and len(s) == len(ITEMS) + 1
    with pytest.raises(ValueError):
        s.reorder([0] * len(s))
    with pytest.raises(ValueError):
        s.reorder([0, 1])


def _strictly_equal(a, b) -> bool:
    """Equal, and of the same types all the way down (a tuple is not a list here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_strictly_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strictly_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("path", all_captures(), ids=os.path.basename)
def test_records_hold_only_json_types(path):
    """The records' store keeps them as JSON text past its limit: that reads back the same
    record only if it holds nothing JSON would change (tuples, bytes, non-string keys, NaN)."""
    from analyzer.diagnosis.jsontext import dump_record, load_record

    for record in analyzer.analyze(path)._result.records:  # (some captures hold none: DNS alone)
        assert _strictly_equal(load_record(dump_record(record)), record), (path, record["session_id"])


JSON_RECORDS = [
    {"session_id": f"C{n:03d}", "n": n, "f": n / 7, "ok": n % 2 == 0, "none": None, "text": "é\u202e" * n,
     "nested": {"list": [n, {"x": [None]}], "empty": {}}}
    for n in range(30)
]
# orjson declines an integer beyond 64 bits: that record is pickled and still reads back.
JSON_RECORDS[7]["n"] = 2 ** 70


@pytest.mark.parametrize("limit", [100, 0])
def test_a_store_of_records_keeps_their_json_text(limit):
    from analyzer.diagnosis.jsontext import json_line

    s = SessionStore(JSON_RECORDS, limit=limit, json_records=True)
    assert s.spilled == (limit == 0)
    assert all(_strictly_equal(a, b) for a, b in zip(s, JSON_RECORDS)) and len(s) == len(JSON_RECORDS)
    assert _strictly_equal(s[7], JSON_RECORDS[7])
    lines = list(s.json_lines())
    assert lines == [json_line(r) for r in JSON_RECORDS]
    assert json.loads(lines[7])["n"] == 2 ** 70
    if limit == 0:
        # Kept as JSON (but the one pickled), read back by the JSON reader, not by pickle.
        s._flush()
        stored = [os.pread(s._file.fileno(), s._lengths[i], s._offsets[i]) for i in range(len(s))]
        assert [blob[:1] for blob in stored] == [b"{"] * 7 + [b"\x80"] + [b"{"] * 22
        assert stored[3] + b"\n" == lines[3]
    again = pickle.loads(pickle.dumps(s))
    assert again.json_records and list(again.json_lines()) == lines


def test_weights_spill_sooner():
    s = SessionStore(limit=10)
    for item in ITEMS[:3]:
        s.append(item, weight=3)
    assert not s.spilled  # 9
    s.append(ITEMS[3], weight=2)
    assert s.spilled and list(s) == ITEMS[:4]
    assert session_weight(0) == session_weight(store_module.BYTES_PER_WEIGHT - 1) == 1
    assert session_weight(4_000_000) == 1 + 4_000_000 // store_module.BYTES_PER_WEIGHT


def test_dicts_with_a_known_key_order_are_stored_by_their_values(monkeypatch):
    """A spilled store keeps a dict whose keys come in an order seen before as its values and the
    order's number: read back, every item is what was put in (key order included), whatever
    mixes of orders, nested values and other kinds of item; past MAX_KEY_LAYOUTS orders, dicts
    are pickled whole."""
    monkeypatch.setattr(store_module, "MAX_KEY_LAYOUTS", 3)
    rng = random.Random(5)
    orders = [("uid", "events", "blob"), ("blob", "uid", "events"), ("uid",), (), ("a", "b"), ("b", "a")]
    items: list = []
    for n in range(300):
        keys = rng.choice(orders)
        item = {key: ITEMS[n % 40][key] if key in ITEMS[0] else {"n": n, key: [n, (n, None)]} for key in keys}
        items.append(item if n % 7 else ("C%d" % n, [(n, "client", "syn", "")]))
    s = SessionStore(items, limit=0)
    back = list(s)
    assert back == items
    assert [list(b) for b in back if isinstance(b, dict)] == [list(i) for i in items if isinstance(i, dict)]
    same_keys = {key: value for key, value in ITEMS[0].items()}
    whole = len(pickle.dumps(same_keys, pickle.HIGHEST_PROTOCOL))
    facts = SessionStore([dict(same_keys) for _ in range(10)], limit=0)
    assert facts.spilled_bytes < 10 * whole  # the keys are not stored with each
    assert list(facts) == [same_keys] * 10


def test_reads_and_writes_in_small_buffers(monkeypatch):
    """Items bigger than the read-ahead, and write buffers flushed mid-way, read back whole."""
    monkeypatch.setattr(store_module, "READ_AHEAD_BYTES", 100)
    monkeypatch.setattr(store_module, "WRITE_BUFFER_BYTES", 150)
    big = [{"n": n, "payload": os.urandom(n * 37)} for n in range(60)]
    s = SessionStore(big, limit=0)
    assert s.spilled_bytes > 150 * 10
    assert list(s) == big and s[59] == big[59] and s[1:4] == big[1:4]


def test_pickling_and_closing():
    s = SessionStore(ITEMS, limit=0)
    copy = pickle.loads(pickle.dumps(s))
    assert list(copy) == ITEMS and copy.spilled
    s.close()
    assert len(s) == 0 and list(s) == [] and not s.spilled
    assert "in memory" in repr(s) and "spilled" in repr(copy)


def test_an_unusable_spill_directory_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SMTPFLOW_SPILL_DIR", str(tmp_path / "missing"))
    s = SessionStore(ITEMS[:2], limit=2)
    with pytest.raises(SpillError, match="SMTPFLOW_SPILL_DIR"):
        s.append(ITEMS[2])


def test_spill_directory_choice(monkeypatch, tmp_path):
    monkeypatch.delenv("SMTPFLOW_SPILL_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    assert store_module.spill_directory() == str(tmp_path)
    monkeypatch.setenv("SMTPFLOW_SPILL_DIR", "/elsewhere")
    assert store_module.spill_directory() == "/elsewhere"
    monkeypatch.delenv("SMTPFLOW_SPILL_DIR")
    monkeypatch.delenv("TMPDIR")
    assert store_module.spill_directory() != "/tmp" or not os.path.isdir("/var/tmp")


def test_events_by_session_and_latest_sessions():
    pairs = SessionStore([(item["uid"], item["events"]) for item in ITEMS], limit=0)
    events = EventsBySession(pairs)
    assert len(events) == len(ITEMS) and list(events)[:2] == ["C000", "C001"]
    assert events["C017"] == ITEMS[17]["events"] and events.get("nope") is None
    assert dict(events) == {item["uid"]: item["events"] for item in ITEMS}
    assert [uid for uid, _ in events.pairs()] == list(events)
    latest = LatestSessions(maxlen=3)
    for item in ITEMS:
        latest.append(item, weight=5)
    assert list(latest) == ITEMS[-3:]


# -- whole runs, kept in memory or spilled -----------------------------------------------------
def run_both(monkeypatch, path, **options):
    """(in memory, all spilled) analyses of ``path``."""
    kept = analyzer.analyze(path, **options)
    with monkeypatch.context() as m:
        m.setattr(store_module, "MAX_SESSIONS_IN_MEMORY", 0)
        spilled = analyzer.analyze(path, **options)
    return kept, spilled


def canonical(a) -> tuple:
    stats = {k: v for k, v in a.stats.items() if k != "elapsed_s"}
    return (json.dumps(list(a.records), sort_keys=True, default=str), json.dumps(dict(a._result.events), sort_keys=True, default=str),
            json.dumps(a.summary(), sort_keys=True, default=str), stats, a.exit_code)


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: os.path.relpath(p, os.path.dirname(ROOT)))
def test_spilling_changes_no_result(monkeypatch, path):
    kept, spilled = run_both(monkeypatch, path, ports="all")
    assert isinstance(kept.records, list) and isinstance(kept._result.events, dict)
    if kept.records:
        assert isinstance(spilled.records, SessionStore) and spilled.records.spilled
        assert isinstance(spilled._result.events, EventsBySession)
    assert canonical(spilled) == canonical(kept)


def test_every_view_and_export_is_the_same_when_spilled(monkeypatch, tmp_path):
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    kept, spilled = run_both(monkeypatch, path)
    assert len(kept.records) > 10
    for name in ("sessions", "events", "replies", "tls", "dns"):
        assert getattr(spilled, name).equals(getattr(kept, name)), name
    from analyzer.report import frames

    some = [r for r in kept.records if r["outcome"] != "completed"][::-1]  # not the run's order
    assert frames.events_frame(some, spilled._result.events).equals(frames.events_frame(some, kept._result.events))
    for a, where in ((kept, tmp_path / "kept"), (spilled, tmp_path / "spilled")):
        a.to_csv(str(where / "csv"))
        a.to_zeek(str(where / "zeek"))
        a.to_jsonl(str(where / "sessions.jsonl"))
    def content(path):  # Zeek logs say when they were written (#open, #close): not content
        return [line for line in path.read_bytes().splitlines() if not line.startswith((b"#open", b"#close"))]

    for relative in ["sessions.jsonl"] + [f"csv/{t}.csv" for t in ("sessions", "events", "replies", "tls")] + \
            [f"zeek/{log}" for log in ("conn.log", "smtp.log", "ssl.log")]:
        assert content(tmp_path / "spilled" / relative) == content(tmp_path / "kept" / relative), relative
    failing = next(r for r in kept.records if r["verdict"]["severity"] == "error")
    assert spilled.follow(failing["session_id"]) == kept.follow(failing["session_id"])
    assert spilled.follow(3) == kept.follow(3)
    assert spilled.session_events(failing["session_id"][:6]) == kept.session_events(failing["session_id"][:6])


def test_cli_output_is_the_same_when_spilled(monkeypatch, capsys):
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    outputs = []
    for limit in (store_module.MAX_SESSIONS_IN_MEMORY, 0):
        monkeypatch.setattr(store_module, "MAX_SESSIONS_IN_MEMORY", limit)
        for fmt in ("table", "jsonl"):
            assert main(["analyze", path, "--format", fmt]) == 0
            outputs.append(capsys.readouterr().out)
    assert outputs[:2] == outputs[2:] and "Sessions" in outputs[0]


def test_cli_reports_an_unusable_spill_directory(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(store_module, "MAX_SESSIONS_IN_MEMORY", 0)
    monkeypatch.setenv("SMTPFLOW_SPILL_DIR", str(tmp_path / "missing"))
    code = main(["analyze", os.path.join(ROOT, "captures", "gateway-mixed.pcap"), "--format", "jsonl"])
    err = capsys.readouterr().err
    assert code != 0 and "SMTPFLOW_SPILL_DIR" in err and "Traceback" not in err


def test_a_split_capture_spills_in_every_process(monkeypatch):
    """Shard processes send their sessions in batches; the coordinator stores them as they come."""
    from analyzer import parallel

    if not parallel.can_shard():
        pytest.skip("splitting one capture across processes needs fork")
    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    kept = analyzer.analyze(path)
    monkeypatch.setattr(store_module, "MAX_SESSIONS_IN_MEMORY", 2)
    monkeypatch.setattr(parallel, "SESSIONS_PER_MESSAGE", 3)
    split = analyzer.analyze(path, workers=2)
    assert split.capture.get("shards") == 2 and split.records.spilled
    assert canonical(split)[:3] == canonical(kept)[:3]


def test_facts_spill_while_reading(monkeypatch, tmp_path):
    """The engine's facts go to disk as sessions finish, not at the end."""
    from analyzer.capture import CaptureSet
    from analyzer.engine import Engine
    from analyzer.report.analysis import Analysis
    from crafting import Conversation, frames, plain_smtp_session, write_pcap

    packets = []
    for i in range(12):  # two minutes apart: each one is over (and swept) before the next ends
        packets += plain_smtp_session(Conversation(cport=40000 + i, t=1_700_000_000.0 + 120 * i)).packets
    path = write_pcap(tmp_path / "spaced.pcap", frames(sorted(packets), 1))
    monkeypatch.setattr(store_module, "MAX_SESSIONS_IN_MEMORY", 4)
    engine = Engine()
    engine.feed(CaptureSet([str(path)]))
    assert engine.facts.spilled and len(engine.facts) >= 10
    engine.finish()
    result = engine.result()
    assert result.records.spilled and len(result.records) == len(engine.facts) == 12
    out = io.StringIO()
    Analysis(result).to_jsonl(out)
    assert out.getvalue().count('"outcome":"completed"') == 12


MEMORY_TRIM_SCRIPT = """
import os
from analyzer.engine import return_freed_memory

def resident_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

before = resident_mb()
blocks = [bytes(1000) + i.to_bytes(4, "little") for i in range(60_000)]  # malloc'd, not pymalloc's
survivors = [bytes(200) + i.to_bytes(4, "little") for i in range(0, 60_000, 50)]  # between them
grown = resident_mb()
del blocks
freed = resident_mb()
return_freed_memory()
print(before, grown, freed, resident_mb(), len(survivors))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or os.confstr("CS_GNU_LIBC_VERSION") is None,
                    reason="measures resident memory through /proc, and malloc_trim is glibc's")
def test_memory_a_run_freed_goes_back_to_the_system():
    """After a big run, what the connections and facts freed is handed back before the output
    (engine.return_freed_memory): without it, freed blocks between live ones stay resident.
    Measured in a fresh interpreter: in the test process, the heap earlier tests freed could take
    the blocks in without growing at all."""
    out = subprocess.run([sys.executable, "-c", MEMORY_TRIM_SCRIPT], capture_output=True, text=True, check=True, cwd=ROOT)
    before, grown, freed, trimmed, survivors = (float(x) for x in out.stdout.split())
    assert grown - before > 40  # the blocks took about 60 MB
    assert freed > before + 0.8 * (grown - before)  # freed, yet still resident
    assert trimmed < before + 0.3 * (grown - before)
    assert survivors == 1200


# -- the cycle collector is off while a run lasts -------------------------------------------------
def _cycles_left_by(path: str) -> int:
    """Objects only the cycle collector could free after a whole run (analysis and output)."""
    from analyzer.engine import run
    from analyzer.report.analysis import Analysis

    gc.collect()
    gc.disable()
    try:
        result = run([path])
        Analysis(result).to_jsonl(io.StringIO())
        del result
        return gc.collect()
    finally:
        gc.enable()


def test_runs_leave_no_reference_cycles_whatever_their_sessions():
    """engine.cycle_collector_off turns the collector off for a run: everything a connection or a
    session makes must be freed by reference counting. What a run leaves to the collector is
    the engine's own few objects, the same for one session as for many."""
    paths = all_captures()
    assert len(paths) > 20
    _cycles_left_by(paths[0])  # imports and caches settle
    baseline = _cycles_left_by(os.path.join(ROOT, "captures", "banner-554.pcap"))
    for path in paths:
        assert _cycles_left_by(path) == baseline, path


def test_collector_is_off_during_a_run_with_a_full_collection_every_so_many_sessions(monkeypatch):
    from analyzer import engine as engine_module

    seen = []
    feed = engine_module.Engine.feed
    monkeypatch.setattr(engine_module.Engine, "feed", lambda self, records: (seen.append(gc.isenabled()), feed(self, records))[1])
    monkeypatch.setattr(engine_module, "FULL_COLLECTION_SESSIONS", 2)
    collections = []
    callback = lambda phase, info: collections.append(info["generation"]) if phase == "start" else None  # noqa: E731
    gc.collect()  # what earlier tests left: the run's own collections then find nothing
    gc.callbacks.append(callback)
    try:
        result = engine_module.run([os.path.join(ROOT, "captures", "gateway-mixed.pcap")])
    finally:
        gc.callbacks.remove(callback)
    assert seen == [False] and gc.isenabled()
    assert len(result.records) >= 6
    # Real collections find nothing here (the run leaves no cycles): each interval doubles.
    assert collections.count(2) == len([n for n in (2, 6, 14, 30, 62) if n <= len(result.records)])


def test_collections_come_sooner_again_once_one_finds_cycles(monkeypatch):
    """The interval between full collections doubles while they find nothing, and falls back
    to FULL_COLLECTION_SESSIONS when one finds cycles (up to MAX_COLLECTION_INTERVAL)."""
    from analyzer import engine as engine_module

    monkeypatch.setattr(engine_module, "FULL_COLLECTION_SESSIONS", 2)
    monkeypatch.setattr(engine_module, "MAX_COLLECTION_INTERVAL", 8)
    engine = engine_module.Engine()
    found = iter([0, 0, 5, 0, 0, 0, 0])
    at = []
    monkeypatch.setattr(engine_module.gc, "collect", lambda: (at.append(engine.kept), next(found))[1])
    with engine_module.cycle_collector_off():
        for n in range(40):
            engine._keep({"uid": f"s{n}", "first_ts": n, "resp_addr": b"\x0a\x00\x00\x01", "events": []})
    # 2, then +4 (nothing found), +8 (nothing), then cycles found: +2, then +4, +8, +8 (the cap).
    assert at == [2, 6, 14, 16, 20, 28, 36]


@pytest.mark.parametrize("damage", ["cut", "flipped", "cut-xz"])
def test_damaged_compressed_captures_leave_no_reference_cycles(tmp_path, damage):
    """A broken compressed stream's error waits in the reader for its next read: kept with its
    traceback, its frames (and the packets they held) formed a cycle with the reader."""
    import gzip
    import lzma

    with open(os.path.join(ROOT, "captures", "gateway-mixed.pcap"), "rb") as fh:
        raw = fh.read()
    packed = lzma.compress(raw) if damage == "cut-xz" else gzip.compress(raw)
    if damage == "flipped":
        packed = bytearray(packed)
        packed[len(packed) * 2 // 3] ^= 0xFF
        packed = bytes(packed)
    else:
        packed = packed[: len(packed) * 2 // 3]
    path = tmp_path / ("damaged.pcap.xz" if damage == "cut-xz" else "damaged.pcap.gz")
    path.write_bytes(packed)
    _cycles_left_by(os.path.join(ROOT, "captures", "banner-554.pcap"))
    baseline = _cycles_left_by(os.path.join(ROOT, "captures", "banner-554.pcap"))
    result = analyzer.analyze(str(path))
    assert result.damage and result.records  # salvaged, and reported damaged
    assert _cycles_left_by(str(path)) == baseline


def test_command_line_moves_the_run_out_of_the_collectors_sight(capsys):
    """The smtpflow command freezes what the run made (its process ends after the output): the
    first collection after the run must not go over every record and event. A notebook's
    ``analyzer.analyze`` leaves the collector as it was."""
    from analyzer.engine import run

    path = os.path.join(ROOT, "captures", "gateway-mixed.pcap")
    gc.unfreeze()
    try:
        run([path])
        assert gc.get_freeze_count() == 0 and gc.isenabled()
        assert main(["analyze", path, "--format", "jsonl"]) == 0
        assert len(capsys.readouterr().out.splitlines()) >= 6
        assert gc.get_freeze_count() > 1000 and gc.isenabled()
        # What the output made afterwards is still collected as usual.
        assert gc.get_count()[0] < 1000
    finally:
        gc.unfreeze()
