"""Live capture: the same pipeline as for files, fed from interfaces as traffic flows.

:class:`LiveCapture` reads packets from the kernel (``capture.live``, BPF-filtered), keeps
them in a ring of pcapng files if asked (``capture.ring``), runs them through the engine,
and reports every session as soon as it ends or times out. Memory stays bounded however
long it runs: connections are expired by the flow table, and only the most recent
``MAX_LIVE_SESSIONS`` finished sessions are kept for the summary (the count of all is kept).

From Python (a notebook included)::

    cap = analyzer.live("eth0", duration=300)   # starts in a background thread
    cap.analysis().sessions                     # what has been seen so far
    final = cap.stop()                          # stop now; the final Analysis

From the shell: ``smtpflow live -i eth0 …`` (see ``analyzer/cli.py``).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any, Callable, Iterable

from .capture.live import LiveSource, check_filter
from .capture.ring import RingWriter
from .decode.tunnel import AYIYA_PORT, GENEVE_PORT, GTP_U_PORT, MPLS_UDP_PORT, TEREDO_PORT, VXLAN_PORT
from .diagnosis.records import RecordBuilder
from .diagnosis.store import LatestSessions
from .diagnosis.verdicts import is_failing
from .engine import Engine, Options

NS = 1_000_000_000

#: Finished sessions kept in memory for the summary and the DataFrames of a live run.
MAX_LIVE_SESSIONS = 20_000
#: How often (seconds of wall time) kernel counters are read and idle connections swept.
HOUSEKEEPING_S = 1.0
#: Longest wait for packets before the loop checks for a stop request.
POLL_S = 0.2
#: At stop, how long to keep reading what the kernel had already queued.
DRAIN_S = 10.0

WEB_PORTS = (80, 443, 110, 143, 993, 995)
#: Tunnels the decoder opens (decode/tunnel.py); BPF cannot look inside them.
TUNNEL_FILTER = ("(ip proto 47 or ip proto 4 or ip proto 41 or ip6 proto 47 or ip6 proto 4 or ip6 proto 41"
                 f" or (udp and (port {VXLAN_PORT} or port {GENEVE_PORT} or port {MPLS_UDP_PORT} or port {TEREDO_PORT}"
                 f" or port {GTP_U_PORT} or port {AYIYA_PORT})))")


def kernel_filter(engine: Engine, user_filter: str | None = None) -> str:
    """The BPF expression that keeps only what smtpflow needs, ANDed with the user's filter.

    SMTP ports (or every TCP port with ``--ports all``), TCP to the endpoint networks (except
    their web and mailbox ports), DNS, ICMP/ICMPv6 errors, and tunnels (mirrored traffic).
    """
    ports = engine.options.ports
    parts = []
    if ports is None:
        parts.append("tcp")
    else:
        parts.append("(tcp and (" + " or ".join(f"port {p}" for p in sorted(ports)) + "))")
    nets = engine.directory.networks
    if nets and ports is not None:
        web = " or ".join(f"port {p}" for p in WEB_PORTS)
        parts.append("(tcp and (" + " or ".join(f"net {n}" for n in nets) + f") and not ({web}))")
    parts.append("port 53")
    parts.append("(icmp and not (icmp[icmptype] == icmp-echo or icmp[icmptype] == icmp-echoreply))")
    parts.append("icmp6")
    # Mirrored traffic (ERSPAN, GRE, VXLAN, Geneve, IP in IP): what is inside is judged later.
    parts.append(TUNNEL_FILTER)
    expression = " or ".join(parts)
    if user_filter:
        expression = f"({expression}) and ({user_filter})"
    return expression


class LiveCapture:
    """Capture, reconstruct and diagnose live. Call :meth:`run` (blocking) or :meth:`start`.

    ``on_session(record)`` is called for every session as it ends (the JSON record, built
    with what is known so far); ``on_tick(self)`` about once a second.
    """

    def __init__(
        self,
        interfaces: str | Iterable[str],
        *,
        options: Options | None = None,
        bpf: str | None = None,
        duration: float | None = None,
        count: int | None = None,
        ring_dir: str | None = None,
        ring_size_mb: float = 100.0,
        ring_files: int = 10,
        ring_seconds: float | None = None,
        on_session: Callable[[dict], None] | None = None,
        on_tick: Callable[["LiveCapture"], None] | None = None,
    ) -> None:
        self.interfaces = [interfaces] if isinstance(interfaces, str) else list(interfaces)
        self.engine = Engine(options)
        self.engine.facts = LatestSessions(maxlen=MAX_LIVE_SESSIONS)  # type: ignore[assignment]
        self.engine.first_seen = None  # the latest sessions are sorted when the run ends
        self.engine.on_finished = self._finished
        self.user_filter = bpf
        if bpf:
            check_filter(bpf)
        self.filter = kernel_filter(self.engine, bpf)
        self.duration = duration
        self.count = count
        self.ring_args = (ring_dir, ring_size_mb, ring_files, ring_seconds)
        self.on_session = on_session
        self.on_tick = on_tick
        self.source: LiveSource | None = None
        self.ring: RingWriter | None = None
        self.started = 0.0
        self.stopped_reason: str | None = None
        self.packets = 0
        self.sessions_total = 0
        self.failures = 0
        self.recent: collections.deque[dict] = collections.deque(maxlen=50)
        self._builder = RecordBuilder(self.engine.directory, self.engine.dns, None)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.interface_problems: list[str] = []

    # -- session notifications ------------------------------------------------------------
    def _finished(self, facts: dict) -> None:
        self.sessions_total += 1
        record = self._builder.build(facts, self.engine.server_ttls)  # the engine counted this session's TTL
        if is_failing(record):
            self.failures += 1
        self.recent.append(record)
        if self.on_session is not None:
            self.on_session(record)

    # -- the loop ----------------------------------------------------------------------------
    def open(self) -> None:
        self.source = LiveSource(self.interfaces, self.filter)
        self.source.open()
        self.interface_problems = list(self.source.skipped)
        ring_dir, size_mb, files, seconds = self.ring_args
        if ring_dir:
            names = [(s.name, s.linktype) for s in self.source.interfaces]
            self.ring = RingWriter(ring_dir, names, size_mb, files, seconds)

    def run(self) -> "Any":
        """Capture until stopped (duration, count, :meth:`stop`, all interfaces down); return the Analysis."""
        if self.source is None:
            self.open()
        assert self.source is not None
        self.started = time.monotonic()
        next_housekeeping = self.started + HOUSEKEEPING_S
        try:
            while not self._stop.is_set():
                self._take(self.source.read(POLL_S))
                now = time.monotonic()
                if self.count is not None and self.packets >= self.count:
                    self.stopped_reason = f"{self.count} packets captured"
                    break
                if self.duration is not None and now - self.started >= self.duration:
                    self.stopped_reason = f"{self.duration:g} s elapsed"
                    break
                if all(s.down for s in self.source.interfaces):
                    self.stopped_reason = "every interface went down"
                    break
                if now >= next_housekeeping:
                    next_housekeeping = now + HOUSEKEEPING_S
                    self._housekeeping()
        except KeyboardInterrupt:
            self.stopped_reason = "interrupted"
        finally:
            if self.stopped_reason is None:
                self.stopped_reason = "stopped"
            if self.count is None or self.packets < self.count:
                self._drain()
            self._close()
        return self.analysis()

    def _drain(self) -> None:
        """Read what the kernel already queued for us: captured packets are not thrown away at stop."""
        assert self.source is not None
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline:
            batch = self.source.read(0)
            if not batch:
                return
            self._take(batch)

    def _take(self, batch: list) -> None:
        """Write a batch of packets to the ring and through the engine (up to ``count``)."""
        if not batch:
            return
        if self.count is not None:
            batch = batch[: max(0, self.count - self.packets)]
        with self._lock:
            if self.ring is not None:
                for ts, _lt, frame, _s, _e, wirelen, iface in batch:
                    self.ring.write(ts, iface, frame, wirelen)
            self.engine.feed(rec[:6] for rec in batch)
        self.packets += len(batch)

    def _housekeeping(self) -> None:
        assert self.source is not None
        self.source.kernel_stats()
        with self._lock:
            # Capture time only moves when packets come; on a quiet link, wall time expires sessions.
            self.engine.table.sweep(time.time_ns())
            self.engine.dns.expire(time.time_ns())
            if self.ring is not None:
                self.ring.flush()
        if self.on_tick is not None:
            self.on_tick(self)

    def _close(self) -> None:
        with self._lock:
            if self.source is not None:
                self.source.close()
            if self.ring is not None:
                self.ring.close()
            self.engine.finish()

    # -- background use (notebooks) ---------------------------------------------------------------
    def start(self) -> "LiveCapture":
        """Run in a background thread; returns at once. Stop with :meth:`stop`."""
        self.open()

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 - kept for the caller
                self.error = exc

        self._thread = threading.Thread(target=target, name="smtpflow-live", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> "Any":
        """Stop capturing (flush, finalise every session) and return the final Analysis."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.analysis()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the capture to end by itself (duration/count); True if it did."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self) -> "LiveCapture":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- results ------------------------------------------------------------------------------------
    @property
    def stats(self) -> dict[str, Any]:
        interfaces = [] if self.source is None else [vars(s).copy() for s in self.source.interfaces]
        return {
            "packets": self.packets,
            "kept": self.engine.decoder.stats.relevant,
            "kernel_dropped": sum(i["kernel_dropped"] for i in interfaces),
            "kernel_seen": sum(i["kernel_seen"] for i in interfaces),
            "sessions": self.sessions_total,
            "failures": self.failures,
            "active": len(self.engine.table),
            "interfaces": interfaces,
            "ring_files": list(self.ring.written) if self.ring is not None else [],
            "elapsed_s": round(time.monotonic() - self.started, 3) if self.started else 0.0,
            "stopped": self.stopped_reason,
        }

    def analysis(self) -> "Any":
        """An Analysis of the sessions finished so far (all of them once stopped)."""
        from .report.analysis import Analysis

        with self._lock:
            capture = {"files": [f"live:{name}" for name in self.interfaces], "interfaces": self.stats["interfaces"],
                       "filter": self.filter, "ring_files": self.stats["ring_files"]}
            # What makes the results partial (exit code 3, like a damaged file): packets lost.
            partial = []
            for iface in capture["interfaces"]:
                if iface["down"]:
                    partial.append(f"interface {iface['name']} stopped delivering packets: {iface['down']}")
                if iface["kernel_dropped"]:
                    partial.append(f"the kernel dropped {iface['kernel_dropped']:,} packet(s) on {iface['name']}: the results miss them")
            result = self.engine.result(capture, list(self.interface_problems), partial)
        result.stats["live"] = self.stats
        return Analysis(result)
