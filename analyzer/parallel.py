"""Many files on many cores, or many machines: parallel reading, one session reconstruction.

What costs time on a gateway capture is reading and filtering: nearly every packet is web
or DNS traffic that smtpflow drops after looking at its headers. That part is spread over
workers, one file per task: each worker reads its file, decodes, and keeps only the records
the decoder finds relevant, returned as one compact byte string with the file's statistics.

The coordinator then merges the kept records of all files in timestamp order (the same
order the serial reader would produce) and runs the one engine over them. Sessions that
cross file boundaries (rotated ring files) are stitched exactly as in the serial run,
because the engine sees the same packets in the same order: results are identical by
construction, not by reconciliation.

Workers are processes on this machine (``workers=N``) or a Dask cluster (``client=``); a
Dask worker must be able to open the same paths (a shared filesystem).
"""

from __future__ import annotations

import heapq
import itertools
import os
import struct
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator

from .capture import CaptureError, CaptureSet, linktype_name
from .capture.linktypes import SUPPORTED_LINKTYPES
from .decode.fastpath import Prefilter
from .decode.packet import DecodeStats
from .capture.interrupt import STOP, held_off, shared_flag, start_worker, stop_reading_on_every_interrupt
from .capture.window import EARLIEST
from .diagnosis.jsontext import dump_record, load_record
from .diagnosis.records import Built
from .diagnosis.resets import merge_server_references
from .engine import Engine, Options, RunResult, _unsupported_linktypes, interruption_info, window_info

#: One kept record in a worker's result: ts_ns, linktype, wirelen, caplen, then the frame.
KEPT = struct.Struct("<qHII")
#: Sessions (built, or their facts) a shard process sends to the coordinator in one message.
SESSIONS_PER_MESSAGE = 256


@dataclass
class FileScan:
    """What one worker found in one file (picklable; small: only relevant packets)."""

    path: str
    order: int
    kept: bytes = b""
    count: int = 0
    first_ts: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    records: int = 0
    outside: int = 0  # records outside the time window
    skipped: bool = False  # it begins past the time window: not read
    interrupted: bool = False  # Ctrl-C stopped its reading (``capture.interrupt``) ...
    stopped_at: int | None = None  # ... after this time (None: before any record)
    unread: bool = False  # ... before it was reached
    secrets: list[str] = field(default_factory=list)  # key log text of its Decryption Secrets Blocks
    size: int = 0
    format: str | None = None
    linktypes: list[int] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scan_file(path: str, order: int, options: Options) -> FileScan:
    """Read one capture and keep what the engine would decode (runs in a worker)."""
    result = FileScan(path, order)
    captures = CaptureSet([path], options.window)
    result.errors = list(captures.errors)
    result.interrupted = captures.interrupted
    result.unread = bool(captures.unread)
    if not captures.readable or result.unread:
        result.damage = [d.describe() for d in captures.damage]
        return result
    # For its selector and decoder: the same rules as the coordinator's. Workers never decrypt
    # (the coordinator does), so they need no key log — a cluster node may not even have it.
    engine = Engine(replace(options, keylog=()) if options.keylog else options)
    result.errors += _unsupported_linktypes(captures)
    if Prefilter.available:
        captures.prefilter = Prefilter(engine.selector, engine.decoder.stats)
    captures.stop_time = lambda: engine.decoder.stats.last_ts  # after Ctrl-C: what it has read (see ``combine``)
    captures.on_secrets = lambda text, _path: result.secrets.append(text)  # the coordinator decrypts
    decode = engine.decoder.decode
    out = bytearray()
    pack = KEPT.pack
    count = 0
    for rec in captures:
        if decode(*rec) is None:
            continue
        ts, linktype, buf, start, end, wirelen = rec
        out += pack(ts, linktype, wirelen, end - start)
        out += buf[start:end]
        count += 1
        if result.first_ts is None:
            result.first_ts = ts
    result.kept = bytes(out)
    result.count = count
    result.stats = engine.decoder.stats.as_dict()
    result.records = captures.records
    result.outside = captures.outside
    result.skipped = bool(captures.skipped)
    result.interrupted = captures.interrupted
    result.stopped_at = captures.stopped_at
    result.size = captures.total_bytes
    result.format = captures.formats.get(path)
    result.linktypes = sorted(captures.linktypes_by_file.get(path, set()))
    result.damage = [d.describe() for d in captures.damage]
    return result


def _records(scan: FileScan) -> Iterator[tuple]:
    data = scan.kept
    pos = 0
    size = KEPT.size
    while pos < len(data):
        ts, linktype, wirelen, caplen = KEPT.unpack_from(data, pos)
        start = pos + size
        yield ts, linktype, data, start, start + caplen, wirelen
        pos = start + caplen


def merge(scans: list[FileScan]) -> Iterator[tuple]:
    """Kept records of all files in the serial reader's order: by timestamp, ties by file order."""
    streams = [_records(s) for s in sorted(scans, key=lambda s: s.order)]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda rec: rec[0])  # stable: equal times keep file order


def combine(scans: list[FileScan], options: Options, files: list[str]) -> RunResult:
    """Run the engine over the merged kept records; statistics are the workers'."""
    engine = Engine(options)
    stats = DecodeStats()
    errors: list[str] = []
    damage: list[str] = []
    for scan in sorted(scans, key=lambda s: s.order):
        errors += scan.errors
        damage += scan.damage
        for text in scan.secrets:  # the workers read the files; the keys they found decrypt here
            engine.take_secrets(text, scan.path)
        if scan.stats:
            other = DecodeStats()
            for key, value in scan.stats.items():
                setattr(other, key, dict(value) if isinstance(value, dict) else value)
            stats.merge(other)
    readable = [s for s in scans if s.format is not None]
    if not readable and errors:
        raise CaptureError(errors[0] if len(errors) == 1 else "; ".join(errors))
    stop = _KeptRecords(scans, engine)
    engine.feed(stop.records(merge(readable)))
    interrupted, cut = stop.interrupted, stop.cut
    engine.finish()
    engine.decoder.stats = stats  # the workers saw every packet; the engine only the kept ones
    if cut is not None and stats.last_ts is not None and stats.last_ts > cut:
        stats.last_ts = cut  # the capture ends there for the diagnosis (a SYN unanswered until then …)
    linktypes = sorted({lt for s in readable for lt in s.linktypes})
    capture_info = {
        "files": files,
        "formats": {s.path: s.format for s in readable},
        "linktypes": linktypes,
        "linktype_names": [linktype_name(lt) for lt in linktypes],
        "records": sum(s.records for s in readable),
        "bytes": sum(s.size for s in readable),
        "workers": True,
        **window_info(options.window, sum(s.outside for s in readable), [s.path for s in readable if s.skipped]),
        **interruption_info(interrupted, [s.path for s in scans if s.unread or (cut is not None and s.first_ts is not None
                                                                                and s.first_ts > cut)], cut),
    }
    named = {lt for s in readable if s.linktypes and not set(s.linktypes) & SUPPORTED_LINKTYPES for lt in s.linktypes}
    for lt, count in sorted(stats.unsupported_linktypes.items()):
        if lt in named:
            continue  # already named for a whole file, as in a serial run
        message = f"{count} packet(s) with unsupported link type {lt} ({linktype_name(lt)}) were skipped"
        if message not in errors:
            errors.append(message)
    result = engine.result(capture_info, errors, damage)
    engine.close()
    return result


class _KeptRecords:
    """The workers' kept records as the coordinator's engine takes them, up to where Ctrl-C
    (``capture.interrupt``) stopped the reading: each worker stopped where it was in its own
    file, so the results are those of the capture up to the earliest of those times (what every
    file was read up to) — or, for a request while the engine goes over the records, up to the
    latest time it had taken."""

    def __init__(self, scans: list[FileScan], engine: Engine) -> None:
        self.engine = engine
        self.interrupted = any(s.interrupted for s in scans)
        #: A request made once every worker had read its file came too late to stop any reading:
        #: what was read is diagnosed whole.
        self.late = STOP.requested and not self.interrupted
        self.cut: int | None = None
        if self.interrupted:
            self.cut = min((s.stopped_at for s in scans if s.interrupted and not s.unread and s.stopped_at is not None),
                           default=None)

    def records(self, merged: Iterator[tuple]) -> Iterator[tuple]:
        if self.interrupted and self.cut is None:
            return  # stopped before anything was read
        cut = self.cut
        for rec in merged:
            if STOP.requested and not self.interrupted and not self.late:
                self.interrupted = True
                taken = self.engine.decoder.stats.last_ts
                if taken is None:
                    return
                cut = self.cut = taken if cut is None else min(cut, taken)
            if cut is not None and rec[0] > cut:
                continue  # merged by time, but one file's stamps may go back: all of them are looked at
            yield rec


def run_local(files: list[str], options: Options, workers: int, progress=None) -> RunResult:
    """Scan files in ``workers`` processes on this machine; ``progress`` hears of each file read
    (in the files' order), as ``engine.run``'s does of bytes."""
    import concurrent.futures
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited locks or threads
    stop = context.RawValue("b", 0)  # set by Ctrl-C (capture.interrupt): also for workers started after it
    try:
        with shared_flag(stop), concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=start_worker, initargs=(stop,)
        ) as pool:
            with held_off():  # the workers are started here: they take Ctrl-C once they can (start_worker)
                results = pool.map(scan_file, files, range(len(files)), [replace(options, keylog=())] * len(files))
            scans = list(results if progress is None else _telling(results, files, progress))
    except concurrent.futures.process.BrokenProcessPool:
        if STOP.requested:  # Ctrl-C reached a worker before it could take it as a request to stop
            raise KeyboardInterrupt from None
        raise
    return combine(scans, options, files)


def _telling(scans: Iterable[FileScan], files: list[str], progress) -> Iterator[FileScan]:
    sizes = {}
    for path in files:
        try:
            sizes[path] = os.path.getsize(path)
        except OSError:
            sizes[path] = 0
    total = sum(sizes.values())
    done = packets = 0
    for scan in scans:
        done += sizes.get(scan.path, 0)
        packets += scan.stats.get("packets", 0)
        progress(done, total, packets)
        yield scan


def run_dask(files: list[str], options: Options, client: Any) -> RunResult:
    """Scan files as Dask tasks (``client`` is a ``distributed.Client``)."""
    futures = client.map(scan_file, files, list(range(len(files))), [replace(options, keylog=())] * len(files), pure=False)
    scans = client.gather(futures)
    return combine(list(scans), options, files)


def expand(paths: Iterable[str]) -> list[str]:
    from .capture import expand_inputs

    return expand_inputs(list(paths))


# -- one capture, several processes: connections split by shard ------------------------------
#: How long a shard waits, after Ctrl-C, for the others to say how far they had read.
STOP_AGREEMENT_TIMEOUT_S = 30.0


class StopAgreement:
    """After Ctrl-C, the shards of a split run read the capture up to the same time: the latest
    any of them had read when it stopped (or when it finished, for one done by then). Every
    shard reads every packet, so each then stops after the same record, and the run's results
    are those of a serial run of the capture up to that time."""

    def __init__(self, ctx, shards: int) -> None:
        self.latest = ctx.Array("q", shards, lock=False)  # per shard: the latest capture time read
        self.told = ctx.Array("b", shards, lock=False)  # per shard: 1 once it has said so

    def member(self, index: int) -> StopMember:
        return StopMember(self, index)


@dataclass
class StopMember:
    """One shard's side of a ``StopAgreement``."""

    agreement: StopAgreement
    index: int

    def read_all(self, latest: int | None) -> None:
        """The shard read everything: how far it went still counts if another is asked to stop
        (one that stopped has said how far it had read already)."""
        if not self.agreement.told[self.index]:
            self._tell(latest)

    def agree(self, latest: int | None) -> int | None:
        """Asked to stop, having read up to ``latest``: the time all shards read up to (None:
        nothing read by any)."""
        import time

        self._tell(latest)
        told = self.agreement.told
        deadline = time.monotonic() + STOP_AGREEMENT_TIMEOUT_S
        while not all(told) and time.monotonic() < deadline:
            time.sleep(0.002)
        times = [ts for ts, said in zip(self.agreement.latest, told) if said and ts != EARLIEST]
        return max(times, default=None)

    def _tell(self, latest: int | None) -> None:
        self.agreement.latest[self.index] = EARLIEST if latest is None else latest
        self.agreement.told[self.index] = 1


def can_shard() -> bool:
    """Sharding forks worker processes that inherit the loaded engine (POSIX only)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def run_sharded(files: list[str], options: Options, shards: int, progress=None) -> RunResult:
    """Analyse the capture in ``shards`` processes, each following the TCP connections that
    ``dispatch.shard_of`` gives it; this process (shard 0) also keeps DNS's rows. Every process
    reads and decodes every packet, so the clock, the statistics, the checksum knowledge and
    what DNS said of each address are those of one engine: the results are identical.

    Once all have read the capture, they exchange their sessions' server TTLs (the records'
    context: ``diagnosis.resets``), each builds its own sessions' records, and this process
    merges them in the records' order as they come (:func:`~.diagnosis.records.merge_built`).
    Where shard 0 read DNS over TCP (whose names only it knows), the others send their sessions'
    facts instead and it builds every record."""
    import multiprocessing
    import warnings

    from .engine import run_serial

    ctx = multiprocessing.get_context("fork")
    agreement = StopAgreement(ctx, shards)
    workers = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+): the child uses none of them
        for index in range(1, shards):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_shard_worker, args=(files, options, index, shards, theirs, agreement.member(index)),
                               daemon=True, name=f"smtpflow-shard-{index}")
            proc.start()
            theirs.close()
            workers.append((proc, mine))

    def others(engine: Engine) -> list[Iterator[Built]]:
        for proc, conn in workers:
            refs, created, orphan_icmp, evicted, evicted_for_memory, duplicate_frames = _expect(proc, conn, "context")
            merge_server_references(engine.server_ttls, refs)
            engine.absorb((), created, orphan_icmp, evicted, evicted_for_memory, duplicate_frames)
        if engine.dns.stats()["tcp_messages"]:  # names only this process learnt: it builds every record
            for proc, conn in workers:
                conn.send(("facts",))
                while (facts := _expect(proc, conn, "facts", "done")) is not None:
                    engine.absorb(facts[0], 0, [])
            return []
        for proc, conn in workers:
            conn.send(("build", engine.server_ttls))
        return [_built_by(proc, conn) for proc, conn in workers]

    try:
        result = run_serial(files, options, progress, shard=(0, shards), others=others, stop=agreement.member(0))
        result.capture["shards"] = shards
        return result
    finally:
        for proc, conn in workers:
            conn.close()
            if proc.is_alive():
                proc.terminate()
            proc.join()


def _expect(proc, conn, status: str, end: str | None = None) -> Any:
    """The next message from a shard: its payload when it is ``status``, None when it is
    ``end``; a shard's failure or end is raised."""
    try:
        received, *payload = conn.recv()
    except EOFError:
        proc.join()
        raise RuntimeError(f"shard process {proc.name} ended without a result (exit code {proc.exitcode})") from None
    if received == status:
        return payload
    if received == end:
        return None
    if received == "error":
        raise RuntimeError(f"shard process {proc.name} failed: {payload[0]}")
    raise RuntimeError(f"shard process {proc.name} sent {received!r}, not {status!r}")  # pragma: no cover - a bug


def _built_by(proc, conn) -> Iterator[Built]:
    """A shard's sessions, built by it, in the records' order, as its messages come."""
    while (batch := _expect(proc, conn, "built", "done")) is not None:
        for record, events, weight in batch[0]:
            yield load_record(record), events, weight


def _shard_worker(files: list[str], options: Options, index: int, shards: int, conn, stop: StopMember) -> None:
    stop_reading_on_every_interrupt()  # Ctrl-C stops this shard's reading; the coordinator ends the run
    try:
        captures = CaptureSet(files, options.window)
        engine = Engine(options, shard=(index, shards))
        engine.read_from(captures, stop)
        if captures.readable:
            engine.feed(captures)
        stop.read_all(engine.decoder.stats.last_ts)
        engine.finish()
        table = engine.table
        conn.send(("context", engine.server_ttls, table.created, table.orphan_icmp, table.evicted, table.evicted_for_memory,
                   table.duplicate_frames))
        asked, *payload = conn.recv()
        # Sessions go in batches, taken by the coordinator as it needs them (stored or merged
        # as they come), so neither process ever holds one message with every session in it.
        if asked == "build":
            engine.server_ttls = payload[0]  # every shard's: the context of every record
            built = engine.build_records()
            while batch := [(dump_record(record), events, weight)
                            for record, events, weight in itertools.islice(built, SESSIONS_PER_MESSAGE)]:
                conn.send(("built", batch))
        else:
            sessions = iter(engine.facts)
            while batch := list(itertools.islice(sessions, SESSIONS_PER_MESSAGE)):
                conn.send(("facts", batch))
        message: tuple = ("done",)
    except (EOFError, BrokenPipeError):
        return  # the coordinator is gone (it failed, or was interrupted): nobody to tell
    except BaseException as exc:  # noqa: BLE001 - reported by the coordinator
        message = ("error", f"{type(exc).__name__}: {exc}")
    try:
        conn.send(message)
    except OSError:
        pass
    finally:
        conn.close()
