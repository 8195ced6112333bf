"""The pipeline: capture → decode → flows → protocols → diagnosis, as one synchronous loop.

:class:`Engine` owns one instance of each layer. ``feed`` runs the hot loop over capture
records; finished connections are turned into plain *session facts* at once (their
reassembly buffers and parsers are freed), and ``result`` builds the session records with
capture-wide context (DNS answers, other sessions to the same server) at the end.
Nothing here is asynchronous: the engine runs the same in a script, a test or a notebook.
"""

from __future__ import annotations

import contextlib
import gc
import time
from array import array
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from .capture import STDIN, CaptureError, CaptureSet, expand_inputs, linktype_name
from .capture.linktypes import SUPPORTED_LINKTYPES
from .capture.window import TimeWindow, time_text
from .decode import DEFAULT_SMTP_PORTS, Decoder, Selector
from .decode.fastpath import Prefilter
from .decode.packet import DecodeStats
from .decode.udp import DNS_PORT
from .diagnosis.microsoft import MicrosoftDirectory, UserEndpoint
from .diagnosis.records import Built, RecordBuilder, collect, first_seen_key, merge_built
from .diagnosis.resets import ServerTtls, add_server_reference
from .diagnosis.store import EventsBySession, SessionStore, session_weight
from .diagnosis.summary import Tally, summarize
from .dispatch import dispatch
from .flows import ConnectionTable, TcpConnection
from .flows.limits import MAX_ACTIVE_CONNECTIONS
from .flows.table import MAX_ORPHAN_ICMP
from .protocols.dns import DnsTracker
from .protocols.session import MailSession
from .protocols.tls import GrowingKeyLog, KeyLog


#: DNS rows (kept transactions, up to the tracker's MAX_TRANSACTIONS) held as objects; past it
#: they wait in a temporary file like sessions (``diagnosis.store``). A row holds about 3 KB:
#: 50,000 lookups of mail names held 150 MB.
DNS_ROWS_IN_MEMORY = 8192


@dataclass(frozen=True)
class Options:
    """What to analyse and how.

    ``ports``: TCP ports to follow (None = every TCP connection, ``--ports all``).
    ``endpoints``: user-declared Microsoft/mail endpoints (networks or host names).
    ``checksums``: "auto", "verify" (Zeek's behaviour) or "off" (Zeek's ``-C``).
    ``reveal_username``: show AUTH user names (never passwords).
    ``keylog``: NSS key log files (``SSLKEYLOGFILE``) to decrypt TLS with, or a loaded
    :class:`~analyzer.protocols.tls.KeyLog`; files are re-read as they grow (live capture).
    ``table_memory_mb``: what the connections open at once may hold together, in MB (None:
    ``flows.limits.MAX_TABLE_BYTES``, 128 MB); past it the least recently active are let go.
    ``window``: read only the packets of this time window (``capture.window``), as if the
    capture had been cut to it (``editcap -A -B``).
    """

    ports: frozenset[int] | None = DEFAULT_SMTP_PORTS
    endpoints: tuple[UserEndpoint, ...] = ()
    checksums: str = "auto"
    reveal_username: bool = False
    use_published_ranges: bool = True
    keylog: tuple[str, ...] | KeyLog = ()
    table_memory_mb: int | None = None
    window: TimeWindow | None = None


@dataclass
class RunResult:
    """Everything one run produced, before any presentation."""

    #: In first-seen order: a list, or past MAX_SESSIONS_IN_MEMORY sessions a SessionStore
    #: (a read-only sequence whose items are read back from a temporary file one at a time).
    records: Sequence[dict[str, Any]]
    summary: dict[str, Any]
    dns: list[dict[str, Any]]
    capture: dict[str, Any]
    stats: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)
    orphan_icmp: list[dict[str, Any]] = field(default_factory=list)
    #: Things the user should know that do not make the results partial (the key log's fit).
    warnings: list[str] = field(default_factory=list)
    #: Notable events per session id: (ts ns, direction, kind, detail), in time order
    #: (a dict, or an EventsBySession mapping when the records are spilled).
    events: Mapping[str, list[tuple[int, str, str, str]]] = field(default_factory=dict)


class Engine:
    """One instance of each layer, fed capture records (see the module docstring).

    ``shard=(index, count)``: follow only the TCP connections ``dispatch.shard_of`` gives this index
    (every index reads the DNS datagrams for the names; index 0 alone keeps DNS's rows);
    ``analyzer.parallel.run_sharded`` runs one engine per shard over the same capture and
    merges their sessions, with the results of a single engine.
    """

    def __init__(self, options: Options | None = None, shard: tuple[int, int] | None = None) -> None:
        self.options = options = options or Options()
        self.shard = shard
        #: TLS secrets (raises KeyLogError for a key log file that cannot be used at all).
        self.keylog: KeyLog | None = (
            options.keylog if isinstance(options.keylog, KeyLog) else GrowingKeyLog(options.keylog) if options.keylog else None
        )
        self.directory = MicrosoftDirectory(options.endpoints, options.use_published_ranges)
        ports = None if options.ports is None else frozenset(options.ports) | {DNS_PORT}
        self.selector = Selector(ports, self.directory.networks, self.directory.dns_interest())
        self.decoder = Decoder(self.selector, verify_checksums=options.checksums != "off")
        # A split run's other shards read DNS too, for the names their records need; shard 0
        # keeps the rows (``analyzer.parallel``).
        primary = shard is None or shard[0] == 0
        self.dns = DnsTracker(interesting=self.directory.is_interesting_name,
                              rows=SessionStore(limit=DNS_ROWS_IN_MEMORY) if primary else None, keep_rows=primary)
        table_bytes = None if options.table_memory_mb is None else options.table_memory_mb * 1024 * 1024
        self.table = ConnectionTable(self._finished, self._attach, options.checksums, table_bytes)
        #: Finished sessions' facts, waiting for ``result`` (spilled to disk past a limit),
        #: and their servers' TTLs, gathered as they come (so ``result`` reads facts once).
        self.facts: SessionStore = SessionStore()
        #: Each stored session's first_seen_key, in the store's order: the records are built in
        #: their final order from it (None where the store keeps only the latest: live capture).
        self.first_seen: array | None = array("d")
        self.server_ttls: ServerTtls = {}
        #: Called with each session's facts as soon as it is finished (live capture uses it).
        self.on_finished: Callable[[dict[str, Any]], None] | None = None
        self.packets_seen = 0
        self.elapsed = 0.0
        self.kept = 0  # finished sessions stored
        self.last_collection = 0  # sessions stored at the last full collection
        self.next_collection = FULL_COLLECTION_SESSIONS

    def read_from(self, captures: CaptureSet, stop: Any = None) -> None:
        """Set ``captures`` up to be read by this engine: the C scan dropping what it would drop,
        the TLS secrets the files carry handed to it, and, after Ctrl-C (``capture.interrupt``),
        the reading stopping after the latest time it had read — with a shard's ``stop``
        (``parallel.StopAgreement``'s member), after the latest any shard had read."""
        if Prefilter.available:
            captures.prefilter = self.prefilter()
        captures.on_secrets = self.take_secrets
        if stop is None:
            captures.stop_time = lambda: self.decoder.stats.last_ts
        else:
            captures.stop_time = lambda: stop.agree(self.decoder.stats.last_ts)

    def take_secrets(self, text: str, path: str) -> None:
        """TLS key log lines a capture carries (a pcapng Decryption Secrets Block, as
        ``editcap --inject-secrets`` writes them): the sessions that follow are decrypted with
        them, as with ``--keylog``."""
        if self.keylog is None:
            self.keylog = KeyLog()
        self.keylog.add_text(text, f"{path} (its decryption secrets block)")

    # -- wiring between the layers ----------------------------------------------------------
    def _attach(self, conn: TcpConnection):
        if DNS_PORT in (conn.orig_port, conn.resp_port):
            return self.dns.tcp_analyzer(conn)
        return MailSession(conn, reveal_username=self.options.reveal_username, keylog=self.keylog)

    def _finished(self, conn: TcpConnection, at_end: bool) -> None:
        firewall = self.decoder.firewall_log.take(conn.orig_addr, conn.orig_port, conn.resp_addr, conn.resp_port)
        if DNS_PORT in (conn.orig_port, conn.resp_port):
            return  # DNS over TCP: its content lives in the DNS table, not among mail sessions
        facts = conn.facts(at_end)
        facts["firewall"] = firewall
        analyzer = conn.analyzer
        if isinstance(analyzer, MailSession):
            facts["app"] = analyzer.summary()
            facts["held_bytes"] = conn.event_bytes + analyzer.facts.stored
        else:
            facts["app"] = {}
            facts["held_bytes"] = conn.event_bytes
        self._keep(facts)
        if self.on_finished is not None:
            self.on_finished(facts)

    def _keep(self, facts: dict[str, Any]) -> None:
        """Store a finished session's facts and count its server's TTL."""
        self.facts.append(facts, session_weight(facts.get("held_bytes", 0)))
        if self.first_seen is not None:
            self.first_seen.append(first_seen_key(facts))
        add_server_reference(self.server_ttls, facts)
        self.kept += 1
        if self.kept >= self.next_collection:
            self.next_collection = self.kept + self._collect()

    def _collect(self) -> int:
        """A full collection, if the collector is off for the run (cycle_collector_off); returns
        the sessions to wait until the next: FULL_COLLECTION_SESSIONS after one that found
        cycles, twice the last interval (up to MAX_COLLECTION_INTERVAL) after one that did not."""
        if gc.isenabled():
            return FULL_COLLECTION_SESSIONS
        found = gc.collect()
        interval = self.next_collection - self.last_collection
        self.last_collection = self.kept
        return FULL_COLLECTION_SESSIONS if found else min(interval * 2, MAX_COLLECTION_INTERVAL)

    def prefilter(self) -> Prefilter:
        """The C scan for this engine's readers: it drops what the decoder would drop and
        builds the TCP segments and DNS datagrams it keeps itself (``feed`` takes both kinds
        of record; with a shard, only those of its own connections)."""
        return Prefilter(self.selector, self.decoder.stats, build=True, verify_checksums=self.decoder.verify_checksums,
                         shard=self.shard)

    # -- the hot loop -------------------------------------------------------------------------
    def feed(self, records: Iterable[tuple]) -> None:
        """Run the packets through the layers (``dispatch``, compiled). With a shard, every
        packet is still decoded (so the statistics are whole), but only this shard's connections
        are followed; the others only advance the table's clock and checksum knowledge."""
        index, shards = self.shard or (0, 1)
        started = time.perf_counter()
        self.packets_seen += dispatch(records, self.decoder.decode, self.table, self.dns, index, shards)
        self.elapsed += time.perf_counter() - started

    def absorb(self, facts: Iterable[dict[str, Any]], created: int, orphan_icmp: list[dict[str, Any]], evicted: int = 0,
               evicted_for_memory: int = 0, duplicate_frames: int = 0) -> None:
        """Take in what another shard's engine found (after both have finished)."""
        self.table.evicted += evicted
        self.table.evicted_for_memory += evicted_for_memory
        self.table.duplicate_frames += duplicate_frames
        for session in facts:
            self._keep(session)
        self.table.created += created
        if orphan_icmp:
            orphans = self.table.orphan_icmp
            orphans.extend(orphan_icmp)
            orphans.sort(key=lambda record: record["ts"])
            del orphans[MAX_ORPHAN_ICMP:]

    def close(self) -> None:
        """After ``result``: the connection table's callbacks refer back to this engine, so
        without this its session facts would wait for the cycle collector to be freed."""
        self.table.on_finished = _ignore_finished
        self.table.analyzer_factory = None

    def finish(self) -> None:
        self.table.finish()
        end = self.decoder.stats.last_ts
        if end is not None:
            self.dns.finish(end)

    def build_records(self) -> Iterator[Built]:
        """This engine's sessions, built in the records' order (``RecordBuilder.build_ordered``)."""
        builder = RecordBuilder(self.directory, self.dns, self.decoder.stats.last_ts)
        return builder.build_ordered(self.facts, self.server_ttls, self.first_seen)

    def result(self, capture: dict[str, Any] | None = None, errors: list[str] | None = None, damage: list[str] | None = None,
               built_elsewhere: Sequence[Iterable[Built]] = ()) -> RunResult:
        """The run's result. ``built_elsewhere``: the sessions other shards built themselves
        (``analyzer.parallel``), each in the records' order: merged with this engine's."""
        stats = self.decoder.stats
        tally = Tally()
        own = self.build_records()
        built, by_session = collect(merge_built([own, *built_elsewhere]) if built_elsewhere else own, tally)
        records: Sequence[dict[str, Any]]
        events: Mapping[str, list[tuple[int, str, str, str]]]
        if built.spilled:
            records, events = built, EventsBySession(by_session)
        else:
            records, events = list(built), dict(by_session)
        dns = self.dns.transactions()
        summary = summarize(records, dns, tally)
        run_stats = stats.as_dict()
        run_stats["connections"] = self.table.created
        run_stats["elapsed_s"] = round(self.elapsed, 3)
        run_stats["dns"] = self.dns.stats()
        table = self.table
        run_stats["connections_evicted"] = table.evicted
        run_stats["connections_evicted_for_memory"] = table.evicted_for_memory
        duplicates = table.duplicate_frames + run_stats["dns"].get("duplicate_frames", 0)
        run_stats["duplicate_frames"] = duplicates
        warnings: list[str] = []
        interrupted = interruption_warning(capture or {}, stats.packets)
        if interrupted:
            warnings.append(interrupted)
        if duplicates:
            warnings.append(
                f"{duplicates:,} packet(s) were captured twice (on two interfaces: a capture on 'any' of a host that "
                "forwards them, or overlapping captures of one link): each was read once (weird 'duplicate_frame' "
                "in the sessions concerned)")
        if table.evicted:
            causes = []
            if table.evicted > table.evicted_for_memory:
                causes.append(f"more than {MAX_ACTIVE_CONNECTIONS:,} were open at once")
            if table.evicted_for_memory:
                causes.append(f"those open at once held more than {table.max_bytes // 2**20:,} MB "
                              f"({table.evicted_for_memory:,} finalised for that)")
            warnings.append(
                f"{table.evicted:,} connection(s) were followed only in part: {' and '.join(causes)}, and the least "
                "recently active ones were finalised early (end_reason 'table_full'; what they had shown decides "
                "their outcome — a SYN unanswered for a second or more is 'syn_unanswered' — and 'incomplete' "
                "where it needed more)")
        if self.keylog is not None:
            run_stats["tls_decryption"] = decryption = _decryption_stats(records)
            warnings += _keylog_warnings(self.keylog, decryption)
        return RunResult(
            records=records,
            summary=summary,
            dns=dns,
            capture=capture or {},
            stats=run_stats,
            errors=list(errors or []),
            warnings=warnings,
            damage=list(damage or []),
            orphan_icmp=list(self.table.orphan_icmp),
            events=events,
        )


def _ignore_finished(conn: TcpConnection, at_end: bool) -> None:
    """The table's sink once its engine is closed."""


def _decryption_stats(records: Iterable[dict[str, Any]]) -> dict[str, int]:
    from .protocols.tls.decrypt import NO_KEY  # cryptography: only when decrypting

    counts = {"tls_sessions": 0, "decrypted": 0, "no_key": 0, "failed": 0}
    for record in records:
        tls = record.get("tls") or {}
        if not tls.get("attempted"):
            continue
        counts["tls_sessions"] += 1
        counts["decrypted"] += bool(tls.get("decrypted"))
        error = tls.get("decryption_error")
        if error == NO_KEY:
            counts["no_key"] += 1
        elif error is not None:
            counts["failed"] += 1
    return counts


def _keylog_warnings(keylog: KeyLog, decryption: dict[str, int]) -> list[str]:
    """What the user should know about the key log: unusable lines, keys matching nothing."""
    warnings = []
    if keylog.problem_count:
        shown = "; ".join(keylog.problems[:3])
        more = f" (and {keylog.problem_count - 3} more)" if keylog.problem_count > 3 else ""
        warnings.append(f"key log: {keylog.problem_count} line(s) not used: {shown}{more}")
    if decryption["tls_sessions"] and not decryption["decrypted"] and decryption["no_key"] == decryption["tls_sessions"]:
        warnings.append(
            f"key log: none of the {decryption['tls_sessions']} TLS session(s) has its secrets in "
            f"{', '.join(keylog.sources) or 'the key log'} (was it written by the client of these sessions?)"
        )
    return warnings


ProgressCallback = Callable[[int, int, int], None]  # (bytes done, bytes total, packets)


#: Inputs at least this big are split across processes by connection when ``workers`` is
#: "auto" (smaller ones finish before a second process has started).
SHARD_MIN_BYTES = 32 * 1024 * 1024
#: Most processes "auto" uses: each one decodes every packet, so more gain less.
MAX_AUTO_SHARDS = 4
#: "auto" splits one capture by connection only when at least this share of its packets is
#: followed in Python (a relay's SMTP). Below it (a gateway's 2 % SMTP) every process
#: re-reading the whole file costs more than the halved Python work gains.
SHARD_MIN_KEPT_SHARE = 0.10
#: Packets read from the start of the capture to measure that share (fewer when this many of
#: them are kept: that is enough to know).
SHARD_SAMPLE_PACKETS = 50_000
SHARD_SAMPLE_KEPT = 4_096


def run(paths: list[str] | str, options: Options | None = None, progress: ProgressCallback | None = None,
        workers: int | str = 1, client: Any = None) -> RunResult:
    """Analyse capture files. Raises CaptureError when no input at all can be read.

    ``workers``: processes to use — several files are read in parallel, one capture is split
    by connection; "auto" uses the cores for inputs worth it. ``client`` (a Dask
    ``distributed.Client``) reads the files on a cluster. See :mod:`analyzer.parallel`: the
    results are the same as with one process.
    """
    if isinstance(paths, str):
        paths = [paths]
    files = expand_inputs(paths)
    options = options or Options()
    if options.keylog and not isinstance(options.keylog, KeyLog):
        options = replace(options, keylog=GrowingKeyLog(options.keylog))  # a bad key log fails before any reading
    if client is not None:
        refuse_stdin_on_cluster(files)
    if STDIN in files:  # standard input can be read once, by this process
        workers = 1
    if workers == "auto":
        workers = _auto_workers(files, options)
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive number or 'auto', not {workers!r}")
    if client is not None or (workers > 1 and len(files) > 1):
        from . import parallel

        if client is not None:
            return parallel.run_dask(files, options, client)
        return parallel.run_local(files, options, min(workers, len(files)), progress)
    with cycle_collector_off():
        result = None
        if workers > 1:
            from . import parallel

            if parallel.can_shard():
                result = parallel.run_sharded(files, options, workers, progress)
        if result is None:
            result = run_serial(files, options, progress)
    if result.capture.get("bytes", 0) >= TRIM_AFTER_BYTES:
        return_freed_memory()
    return result


#: After reading this much, the memory the run freed is handed back to the system before the
#: results are written: otherwise pandas (CSV, Parquet) would add its own on top of it.
TRIM_AFTER_BYTES = 64 << 20


def return_freed_memory() -> None:
    """Hand the C allocator's free memory back to the system (glibc's ``malloc_trim``).

    What connections and session facts freed mostly stays with the process, in pieces between
    what is still alive; glibc can release the whole free pages among them. Elsewhere (musl,
    macOS) there is no such call and nothing is done."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


#: While a run lasts, the cycle collector is off: a connection breaks its own reference cycles
#: when it ends (``TcpConnection.release``), so reference counting frees everything, and each
#: automatic collection went over every session kept in memory again (6 % of a relay
#: capture's time; with Python's default thresholds, a fifth of any run). A full collection
#: still runs every FULL_COLLECTION_SESSIONS finished sessions, so a cycle made somewhere
#: after all cannot pile up (a test checks that a run leaves none per session). One that finds
#: nothing doubles the interval to the next, up to MAX_COLLECTION_INTERVAL sessions: each goes
#: over everything alive (0.17 s for a table full of connections), and a scan of 300,000 SYNs
#: spent 7 % of its time in 15 collections that freed nothing.
FULL_COLLECTION_SESSIONS = 20_000
MAX_COLLECTION_INTERVAL = 320_000


@contextlib.contextmanager
def cycle_collector_off():
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _auto_workers(files: list[str], options: Options) -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if cores < 2:
        return 1
    total = 0
    for path in files:
        try:
            size = os.path.getsize(path)
        except OSError:
            continue
        total += size * (4 if path.endswith((".gz", ".bz2", ".xz", ".zst")) else 1)  # compressed ones hold more
    if total < SHARD_MIN_BYTES:
        return 1
    if len(files) == 1 and _kept_share(files[0], options) < SHARD_MIN_KEPT_SHARE:
        return 1  # one capture, mostly traffic the C scan drops: splitting it would only re-read it
    return min(cores, MAX_AUTO_SHARDS)


def _kept_share(path: str, options: Options) -> float:
    """The share of the first ``SHARD_SAMPLE_PACKETS`` packets of a capture that Python would
    follow (what the C scan keeps); 1.0 when that cannot be measured."""
    if not Prefilter.available:
        return 1.0  # every packet is decoded in Python: splitting always helps
    engine = Engine(replace(options, keylog=()))
    captures = CaptureSet([path], options.window)
    if not captures.readable:
        return 1.0
    stats = engine.decoder.stats
    # Decoding scans count what they decode (stats.relevant) with what they drop, a whole
    # window at a time; only the few records they leave to Python are counted here.
    captures.prefilter = Prefilter(engine.selector, stats, build=True, verify_checksums=False)
    undecoded = 0
    records = iter(captures)
    try:
        for record in records:
            undecoded += len(record) == 6
            if stats.packets + undecoded >= SHARD_SAMPLE_PACKETS or stats.relevant + undecoded >= SHARD_SAMPLE_KEPT:
                break
    finally:
        records.close()
    seen = stats.packets + undecoded
    return (stats.relevant + undecoded) / seen if seen else 1.0


def run_serial(files: list[str], options: Options, progress: ProgressCallback | None = None,
               shard: tuple[int, int] | None = None, others: Callable[[Engine], Sequence[Iterable[Built]]] | None = None,
               stop: Any = None) -> RunResult:
    """One engine over the files. ``shard``: follow only that shard's connections, then let
    ``others(engine)`` take in what the other shards found (``Engine.absorb``), or return the
    sessions they built themselves (``Engine.result``'s ``built_elsewhere``). After Ctrl-C
    (``capture.interrupt``) the reading stops after the latest time read so far; with a
    ``stop`` (``parallel.StopAgreement``'s member), after the latest any shard had read."""
    captures = CaptureSet(files, options.window)
    if not captures.readable:
        if captures.errors:
            raise CaptureError(captures.errors[0] if len(captures.errors) == 1 else "; ".join(captures.errors))
        if captures.damage:
            raise CaptureError(captures.damage[0].describe())
    unsupported = _unsupported_linktypes(captures)
    engine = Engine(options, shard)
    engine.read_from(captures, stop)
    if captures.readable:
        records: Iterable[tuple] = captures
        if progress is not None:
            records = _with_progress(captures, progress, engine.decoder.stats)
        engine.feed(records)
    if stop is not None:
        stop.read_all(engine.decoder.stats.last_ts)
    engine.finish()
    built_elsewhere = others(engine) if others is not None else ()
    capture_info = {
        "files": files,
        "formats": captures.formats,
        "linktypes": sorted(captures.linktypes),
        "linktype_names": [linktype_name(lt) for lt in sorted(captures.linktypes)],
        "records": captures.records,
        "bytes": captures.total_bytes,
        **window_info(options.window, captures.outside, captures.skipped),
        **interruption_info(captures.interrupted, captures.unread, captures.stopped_at),
    }
    errors = list(captures.errors) + unsupported
    # Link types already named for a whole file are not named again packet by packet.
    named = {lt for lts in captures.linktypes_by_file.values() if lts and not lts & SUPPORTED_LINKTYPES for lt in lts}
    for lt, count in sorted(engine.decoder.stats.unsupported_linktypes.items()):
        if lt in named:
            continue
        message = f"{count} packet(s) with unsupported link type {lt} ({linktype_name(lt)}) were skipped"
        if message not in errors:
            errors.append(message)
    result = engine.result(capture_info, errors, [d.describe() for d in captures.damage], built_elsewhere)
    engine.close()
    return result


def refuse_stdin_on_cluster(files: list[str]) -> None:
    """Dask workers read the files themselves: standard input is not theirs to read."""
    if STDIN in files:
        raise CaptureError("-: standard input cannot be read on a Dask cluster; save the capture where the workers can read it")


def window_info(window: TimeWindow | None, outside: int, skipped: list[str]) -> dict[str, Any]:
    """What the capture summary says of a time window: its ends (ISO 8601, UTC), the records
    read outside it, and the files not read at all (they begin past it). Nothing without one."""
    if window is None:
        return {}
    return {"window": window.describe(), "outside_window": outside, "skipped_files": list(skipped)}


def interruption_info(interrupted: bool, unread: list[str], stopped_at: int | None) -> dict[str, Any]:
    """What the capture summary says of a reading stopped by Ctrl-C (``capture.interrupt``):
    that it was, the capture time it was read up to (ISO 8601, UTC; None if nothing had been
    read), and the files not reached then. Nothing for a reading that ended by itself."""
    if not interrupted:
        return {}
    return {"interrupted": True, "read_until": None if stopped_at is None else time_text(stopped_at),
            "unread_files": list(unread)}


def refuse_empty_interruption(capture: Mapping[str, Any]) -> None:
    """A Ctrl-C that came before any packet was read leaves nothing to diagnose: it interrupts."""
    if capture.get("interrupted") and capture.get("read_until") is None:
        raise KeyboardInterrupt


def interruption_warning(capture: Mapping[str, Any], packets: int) -> str | None:
    """The warning a reading stopped by Ctrl-C gets: what the results cover."""
    if not capture.get("interrupted"):
        return None
    until = capture.get("read_until")
    upto = f"the capture up to {until}" if until else "no packet (nothing had been read)"
    unread = capture.get("unread_files") or []
    rest = f"; {len(unread):,} file(s) beginning after it were left out" if unread else ""
    return (f"interrupted (Ctrl-C): the results cover {upto} ({packets:,} packet(s) read){rest}; "
            "sessions still open then read as if the capture had ended there")


def _unsupported_linktypes(captures: CaptureSet) -> list[str]:
    """Messages for files whose every interface has a link type smtpflow cannot decode.

    Raises CaptureError when that is true of every readable file: there is nothing to analyse.
    """
    messages = []
    for path, linktypes in captures.linktypes_by_file.items():
        if linktypes and not linktypes & SUPPORTED_LINKTYPES:
            names = ", ".join(f"{lt} ({linktype_name(lt)})" for lt in sorted(linktypes))
            messages.append(
                f"{path}: unsupported link type {names}; smtpflow reads Ethernet (incl. VLAN, PPPoE, MPLS), "
                "Linux cooked SLL/SLL2, raw IP, BSD loopback, PPP, Cisco HDLC, MPLS, 802.11 (radiotap), Linux NFLOG, "
                "pf's pflog and Apple's pktap captures"
            )
    if messages and len(messages) == captures.readable:
        raise CaptureError(messages[0] if len(messages) == 1 else "; ".join(messages))
    return messages


#: The progress callback hears how far the reading is about this often (seconds), looked at
#: every PROGRESS_CHECK records handed on: the C scan hands on only what Python follows, a few
#: records in a hundred on a gateway, so counting them alone left a bar still for gigabytes.
PROGRESS_INTERVAL_S = 0.2
PROGRESS_CHECK = 64


def _with_progress(captures: CaptureSet, progress: ProgressCallback, stats: DecodeStats,
                   interval: float = PROGRESS_INTERVAL_S):
    """The records, and ``progress(bytes read, bytes in all, packets read)`` as they go (the
    packets the scans counted, not only those handed on)."""
    clock = time.monotonic
    due = clock() + interval
    count = 0
    for rec in captures:
        count += 1
        if not count % PROGRESS_CHECK and clock() >= due:
            due = clock() + interval
            progress(captures.position(), captures.total_bytes, stats.packets)
        yield rec
    progress(captures.total_bytes, captures.total_bytes, stats.packets)
