"""One TCP connection attempt, tracked the way Zeek tracks it, plus what troubleshooting needs.

Theory of operation
-------------------
Each side of a connection is an :class:`Endpoint` with a state from Zeek's TCP model
(INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED, CLOSED, RESET). Every packet
updates the sender's endpoint: sequence bookkeeping, the ``history`` letters, then the
state transition for its flags. ``conn_state`` is derived from the two endpoint states at
the end, exactly as Zeek's ``Conn::conn_state`` does, so users of Zeek read the same codes.

On top of Zeek's model the connection keeps what a mail admin needs and Zeek throws away:
every SYN transmission with its time (retry gaps tell a firewall drop from a slow server),
the SYN-ACK round trip, each RST with the IP TTL it arrived with (to tell a server's RST
from one forged on the path), ICMP errors quoting this connection, and a bounded list of
notable events. Payload goes through a per-direction :class:`Reassembler` to whatever
stream analyzer the protocol layer attached.
"""

from __future__ import annotations

from functools import partial
from sys import getsizeof
from typing import Callable, Final, Protocol

from ..decode.packet import TcpSegment
from ..decode.tcp import TH_ACK, TH_FIN, TH_RST, TH_SYN
from .limits import MAX_EVENT_DETAIL, MAX_EVENTS_PER_SESSION, MAX_HISTORY_LENGTH, MAX_RST_RECORDS, MAX_SYN_RECORDS
from .reassembly import MASK32, BufferBudget, Reassembler, seq_delta

# Endpoint states (Zeek's TCP_ENDPOINT_*).
INACTIVE: Final = 0
SYN_SENT: Final = 1
SYN_ACK_SENT: Final = 2
PARTIAL: Final = 3
ESTABLISHED: Final = 4
CLOSED: Final = 5
RESET: Final = 6
STATE_NAMES: Final = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED", "RESET")

#: Sequence jumps larger than this on a SYN or RST are not believed (Zeek's TOO_LARGE_SEQ_DELTA).
TOO_LARGE_SEQ_DELTA: Final = 1_048_576

# History bits: each letter that may appear once per direction has a bit.
HIST_SYN: Final = 0x1
HIST_FIN: Final = 0x2
HIST_RST: Final = 0x4
HIST_FIN_RST: Final = 0x8
HIST_DATA: Final = 0x10
HIST_ACK: Final = 0x20
HIST_MULTI_FLAG: Final = 0x40

#: Letters recorded on a logarithmic scale: first at 1 event, then 10, 100 …
SCALED_BASE: Final = 10

_CONTROL_FLAGS: Final = TH_SYN | TH_FIN | TH_RST | TH_ACK
#: Take ``TcpConnection._in_order`` for the common segment (tests turn it off to compare).
SHORTCUT = True

# What ``TcpConnection.footprint`` counts, measured with tracemalloc (tests/test_memory.py
# checks the estimate against it): a connection with its endpoints, history, SYN/RST/ICMP
# records and reassemblers; an event, beside its detail string; a segment waiting out of
# order, beside its bytes.
CONNECTION_BYTES: Final = 2500
EVENT_BYTES: Final = 70
PENDING_SEGMENT_BYTES: Final = 120
#: An analyzer that cannot weigh itself (no ``footprint`` method) is taken to hold this much.
ANALYZER_BYTES: Final = 8000
#: What an event is taken to add to the memory of the layers above, for the table's growth
#: meter (``BufferBudget.growth``): itself, and a reply, recipient or transaction it may stand for.
EVENT_GROWTH_FACTOR: Final = 3


class StreamAnalyzer(Protocol):
    """What the flow layer feeds: reassembled bytes per direction (implemented by protocols)."""

    def data(self, from_client: bool, data: bytes, ts: int) -> None: ...

    def gap(self, from_client: bool, length: int, ts: int) -> None: ...

    def end_of_stream(self, from_client: bool, ts: int) -> None: ...

    def finish(self, ts: int) -> None: ...

    def footprint(self) -> int:
        """An estimate of the memory the analyzer holds, in bytes (see ``TcpConnection.footprint``;
        optional: without it, ANALYZER_BYTES)."""
        ...


class Endpoint:
    """One side of a connection (Zeek's TCP_Endpoint, reduced to what is used)."""

    __slots__ = (
        "is_orig", "state", "prev_state", "start_seq", "last_seq", "ack_seq", "seq_init",
        "hist_bits", "hist_last_syn", "hist_last_fin", "hist_last_rst",
        "rxmit", "rxmit_next", "gap_events", "gap_next", "zero_windows", "zero_next", "bad_sums", "bad_next",
        "fin_count", "rst_count", "fin_seq", "pkts", "ip_bytes", "ttl_min", "ttl_max", "window_scale",
        "reassembler", "first_ts", "last_ts", "close_ts", "frame_ident", "frame_seq", "frame_ack", "frame_ts",
    )

    def __init__(self, is_orig: bool) -> None:
        self.is_orig = is_orig
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.start_seq = 0
        self.last_seq = 0
        self.ack_seq = 0
        self.seq_init = False
        self.hist_bits = 0
        self.hist_last_syn: int | None = None
        self.hist_last_fin: int | None = None
        self.hist_last_rst: int | None = None
        self.rxmit = 0
        self.rxmit_next = 1
        self.gap_events = 0
        self.gap_next = 1
        self.zero_windows = 0
        self.zero_next = 1
        self.bad_sums = 0
        self.bad_next = 1
        self.fin_count = 0
        self.rst_count = 0
        self.fin_seq: int | None = None
        self.pkts = 0
        self.ip_bytes = 0
        self.ttl_min: int | None = None
        self.ttl_max: int | None = None
        self.window_scale = 0
        self.reassembler: Reassembler | None = None
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.close_ts: int | None = None  # first FIN or RST from this side
        #: The last segment followed from this side — its ident (``TcpSegment.ident``), sequence
        #: and acknowledgment numbers, and time — to recognise the same packet captured twice
        #: (DUPLICATE_FRAME_WINDOW_S). -1: none yet (an ident is never negative).
        self.frame_ident = -1
        self.frame_seq = 0
        self.frame_ack = 0
        self.frame_ts = 0

    def set_state(self, state: int) -> None:
        self.prev_state = self.state
        self.state = state

    def init_seq(self, start: int, last: int) -> None:
        self.start_seq = start & MASK32
        self.ack_seq = start & MASK32
        self.last_seq = last & MASK32
        self.seq_init = True

    def size(self, peer_state: int) -> int:
        """Payload bytes sent, from sequence numbers (Zeek's TCP_Endpoint::Size)."""
        if not self.seq_init:
            return 0
        if (
            self.prev_state == SYN_SENT
            and self.state == RESET
            and peer_state == INACTIVE
            and seq_delta(self.ack_seq, self.start_seq) <= 1
        ):
            return 0  # a half-open connection discovered and aborted: its numbers mean nothing
        last = seq_delta(self.last_seq, self.start_seq)
        acked = seq_delta(self.ack_seq, self.start_seq)
        size = max(last, acked, 0)
        if size > 0:
            size -= 1  # the SYN's sequence number
        if self.fin_count and size > 0:
            size -= 1  # the FIN's
        return size


class TcpConnection:
    """A TCP connection attempt between an originator (client) and a responder (server)."""

    __slots__ = (
        "key", "uid", "orig_addr", "orig_port", "resp_addr", "resp_port", "ip_version",
        "orig", "resp", "history", "hist_seen", "flipped", "first_ts", "last_ts",
        "syn_times", "isn", "synack_ts", "synack_ttl", "handshake_rtt", "ack_rtt",
        "rsts", "icmp", "events", "events_dropped", "analyzer", "finished", "end_reason",
        "weirds", "closed_ts", "budget", "event_bytes", "evicted_for", "evicted_at", "weighed",
    )

    def __init__(self, key: tuple, uid: str, orig_addr: bytes, orig_port: int, resp_addr: bytes, resp_port: int, ts: int, flipped: bool,
                 budget: BufferBudget | None = None) -> None:
        self.key = key
        #: Out-of-order bytes and the growth meter, shared with the table's other connections.
        self.budget = budget if budget is not None else BufferBudget()
        self.uid = uid
        self.orig_addr = orig_addr
        self.orig_port = orig_port
        self.resp_addr = resp_addr
        self.resp_port = resp_port
        self.ip_version = 4 if len(orig_addr) == 4 else 6
        self.orig = Endpoint(True)
        self.resp = Endpoint(False)
        self.history: list[str] = ["^"] if flipped else []
        self.hist_seen = 0
        self.flipped = flipped
        self.first_ts = ts
        self.last_ts = ts
        self.syn_times: list[int] = []
        self.isn: int | None = None
        self.synack_ts: int | None = None
        self.synack_ttl: int | None = None
        self.handshake_rtt: int | None = None  # SYN -> SYN-ACK, ns
        self.ack_rtt: int | None = None  # SYN-ACK -> client's ACK, ns
        self.rsts: list[tuple[int, bool, int, int]] = []  # (ts, from_orig, ttl, rel_seq)
        self.icmp: list[dict] = []
        self.events: list[tuple[int, str, str, str]] = []
        self.events_dropped = 0
        self.event_bytes = 0  # what the events hold, by footprint()'s measure
        self.analyzer: StreamAnalyzer | None = None
        self.finished = False
        self.end_reason: str | None = None
        #: With end_reason "table_full": what the table was full of, "connections" or "memory",
        #: and the capture's time then.
        self.evicted_for: str | None = None
        self.evicted_at: int | None = None
        self.weighed = 0  # footprint() when the table last weighed this connection
        self.weirds: dict[str, int] = {}
        self.closed_ts: int | None = None

    # -- events -------------------------------------------------------------------------
    def event(self, ts: int, direction: str, kind: str, detail: str = "") -> None:
        """Record a notable event (bounded; the overflow is counted)."""
        if len(self.events) < MAX_EVENTS_PER_SESSION:
            if len(detail) > MAX_EVENT_DETAIL:
                detail = detail[: MAX_EVENT_DETAIL - 3] + "..."
            self.events.append((ts, direction, kind, detail))
            size = EVENT_BYTES + getsizeof(detail)
            self.event_bytes += size
            self.budget.growth += size * EVENT_GROWTH_FACTOR
        else:
            self.events_dropped += 1

    def weird(self, name: str) -> None:
        self.weirds[name] = self.weirds.get(name, 0) + 1

    # -- history ------------------------------------------------------------------------
    def _add(self, ep: Endpoint, letter: str) -> None:
        if len(self.history) < MAX_HISTORY_LENGTH:
            self.history.append(letter if ep.is_orig else letter.lower())

    def _check(self, ep: Endpoint, bit: int, letter: str) -> bool:
        """Add ``letter`` the first time ``bit`` is seen for ``ep``; True if seen before."""
        if ep.hist_bits & bit:
            return True
        ep.hist_bits |= bit
        self._add(ep, letter)
        return False

    def _scaled(self, ep: Endpoint, letter: str, count_attr: str, next_attr: str) -> None:
        count = getattr(ep, count_attr) + 1
        setattr(ep, count_attr, count)
        threshold = getattr(ep, next_attr)
        if count == threshold:
            self._add(ep, letter)
            setattr(ep, next_attr, threshold * SCALED_BASE)

    def _update_history(self, ep: Endpoint, flags: int, rel_seq: int, length: int) -> None:
        bits = (flags & TH_SYN != 0) + (flags & TH_FIN != 0) + (flags & TH_RST != 0)
        if bits > 1:
            if flags & TH_FIN and flags & TH_RST:
                self._check(ep, HIST_FIN_RST, "I")
            else:
                self._check(ep, HIST_MULTI_FLAG, "Q")
        elif bits == 1:
            if flags & TH_SYN:
                letter = "H" if flags & TH_ACK else "S"
                if self._check(ep, HIST_SYN, letter) and rel_seq != ep.hist_last_syn:
                    self._add(ep, letter)
                ep.hist_last_syn = rel_seq
            elif flags & TH_FIN:
                if self._check(ep, HIST_FIN, "F") and rel_seq + length != ep.hist_last_fin:
                    self._add(ep, "F")
                ep.hist_last_fin = rel_seq + length
            else:
                if self._check(ep, HIST_RST, "R") and rel_seq != ep.hist_last_rst:
                    self._add(ep, "R")
                ep.hist_last_rst = rel_seq
        elif length:
            self._check(ep, HIST_DATA, "D")
        elif flags & TH_ACK:
            self._check(ep, HIST_ACK, "A")

    def bad_checksum(self, is_orig: bool, ts: int) -> None:
        """A segment whose checksum is wrong: the receiver dropped it, and so do we (Zeek's ``C``)."""
        ep = self.orig if is_orig else self.resp
        self._scaled(ep, "C", "bad_sums", "bad_next")
        self.weird("bad_TCP_checksum")

    # -- the packet path ----------------------------------------------------------------
    def process(self, seg: TcpSegment, is_orig: bool) -> None:
        ep, peer = (self.orig, self.resp) if is_orig else (self.resp, self.orig)
        flags = seg.flags
        if flags & _CONTROL_FLAGS == TH_ACK and ep.state == ESTABLISHED and peer.state == ESTABLISHED and SHORTCUT:
            if self._in_order(seg, ep, peer, is_orig):
                return
        ts = seg.ts
        length = seg.length
        seq = seg.seq
        seg_ack = seg.ack
        self.last_ts = ts
        if ep.first_ts is None:
            ep.first_ts = ts
        ep.last_ts = ts
        ep.pkts += 1
        ep.ip_bytes += seg.ip_len
        ttl = seg.ttl
        if not flags & TH_RST:
            if ep.ttl_min is None or ttl < ep.ttl_min:
                ep.ttl_min = ttl
            if ep.ttl_max is None or ttl > ep.ttl_max:
                ep.ttl_max = ttl

        syn = flags & TH_SYN
        fin = flags & TH_FIN
        rst = flags & TH_RST
        ack = flags & TH_ACK
        seg_len = length + (1 if syn else 0) + (1 if fin else 0)
        if rst:
            seg_len -= length
        end_seq = (seq + seg_len) & MASK32

        # Data from this side means the peer's acknowledged holes will not be filled any more.
        if length and peer.reassembler is not None and peer.reassembler.ack_target is not None:
            if peer.reassembler.settle(ts):
                self._gap_seen(peer, ts)

        self._init_endpoint(ep, flags, seq, end_seq)
        rel_seq = seq_delta(seq, ep.start_seq)
        self._update_history(ep, flags, rel_seq, length)

        if seg.win == 0 and not rst and not syn and peer.state != CLOSED and ep.state != RESET:
            self._scaled(ep, "W", "zero_windows", "zero_next")
            if ep.zero_windows == 1:
                self.event(ts, _direction(is_orig), "zero_window", "receive window advertised as 0")

        if syn:
            self._on_syn(ep, seg, is_orig, ts, ttl)
        if (fin or rst) and ep.close_ts is None:
            ep.close_ts = ts
        if fin:
            ep.fin_count += 1
            ep.fin_seq = (seq + seg_len) & MASK32
            if ep.fin_count == 1:
                self.event(ts, _direction(is_orig), "fin", "")
        if rst:
            ep.rst_count += 1
            if len(self.rsts) < MAX_RST_RECORDS:
                self.rsts.append((ts, is_orig, ttl, rel_seq))
            if ep.rst_count == 1:
                self.event(ts, _direction(is_orig), "rst", f"TTL {ttl}")

        if ack:
            if peer.state == INACTIVE and not peer.seq_init:
                peer.init_seq(seg_ack - 1, seg_ack - 1)
            elif not rst and seq_delta(seg_ack, peer.ack_seq) > 0:
                if not (seg_ack == 0 and seq_delta(seg_ack, peer.ack_seq) > TOO_LARGE_SEQ_DELTA):
                    peer.ack_seq = seg_ack
            if is_orig and self.synack_ts is not None and self.ack_rtt is None and not syn:
                self.ack_rtt = ts - self.synack_ts

        delta_last = self._update_last_seq(ep, end_seq, flags, length)
        self._transition(ep, peer, is_orig, flags, length, seq, seg_ack, delta_last)

        # Content: the peer's ACK may reveal a hole the capture missed; then this side's data.
        if ack and not rst and peer.reassembler is not None and peer.fin_count == 0 and peer.rst_count == 0:
            peer.reassembler.acked(seg_ack, ts)
        if length and not rst:
            reasm = ep.reassembler
            if reasm is None:
                reasm = self._start_reassembly(ep, is_orig, seq, syn)
            data_seq = (seq + 1) & MASK32 if syn else seq
            gaps_before = reasm.gaps
            reasm.segment(data_seq, seg.payload, ts, length)
            if reasm.gaps != gaps_before:
                self._gap_seen(ep, ts)
        if fin:
            reasm = ep.reassembler
            if reasm is None and self.analyzer is not None:
                reasm = self._start_reassembly(ep, is_orig, (seq - length) & MASK32 if length else seq, syn)
            if reasm is not None:
                reasm.fin_off = reasm.offset_of((seq + length) & MASK32)
                if reasm.fin_off <= reasm.next_off and not reasm.ended:
                    reasm.ended = True
                    if self.analyzer is not None:
                        self.analyzer.end_of_stream(is_orig, ts)

    def _in_order(self, seg: TcpSegment, ep: Endpoint, peer: Endpoint, is_orig: bool) -> bool:
        """The common case in one pass: an ACK or in-order data on an established connection
        that adds no history letter, event or hole. Its effects are exactly those ``process``
        would have had; returns False, having changed nothing, for any other segment."""
        length = seg.length
        if not seg.win or not ep.hist_bits & (HIST_DATA if length else HIST_ACK):
            return False  # a zero window or a first letter: the full path records them
        seq = seg.seq
        end_seq = (seq + length) & MASK32
        delta = seq_delta(end_seq, ep.last_seq)
        reasm = ep.reassembler
        peer_reasm = peer.reassembler
        if length:
            if (
                delta <= 0  # a retransmission
                or reasm is None
                or reasm.pending
                or reasm.ack_target is not None
                or seq != (reasm.base + reasm.next_off) & MASK32
                or len(seg.payload) != length  # cut by the snaplen
                or (peer_reasm is not None and peer_reasm.ack_target is not None)
            ):
                return False
        ts = seg.ts
        self.last_ts = ts
        ep.last_ts = ts
        ep.pkts += 1
        ep.ip_bytes += seg.ip_len
        ttl = seg.ttl
        if ep.ttl_min is None or ttl < ep.ttl_min:
            ep.ttl_min = ttl
        if ep.ttl_max is None or ttl > ep.ttl_max:
            ep.ttl_max = ttl
        ack = seg.ack
        moved = seq_delta(ack, peer.ack_seq)
        if moved > 0 and not (ack == 0 and moved > TOO_LARGE_SEQ_DELTA):
            peer.ack_seq = ack
        if is_orig and self.ack_rtt is None and self.synack_ts is not None:
            self.ack_rtt = ts - self.synack_ts
        if delta > 0:
            ep.last_seq = end_seq
        if peer_reasm is not None and peer.fin_count == 0 and peer.rst_count == 0:
            peer_reasm.acked(ack, ts)
        if length:
            reasm._take(seg.payload, length, ts)  # type: ignore[union-attr]
        return True

    def _on_syn(self, ep: Endpoint, seg: TcpSegment, is_orig: bool, ts: int, ttl: int) -> None:
        flags = seg.flags
        opts = seg.options or {}
        if "wscale" in opts:
            ep.window_scale = opts["wscale"]  # type: ignore[assignment]
        if is_orig and not flags & TH_ACK:
            if self.isn is None:
                self.isn = seg.seq
            if len(self.syn_times) < MAX_SYN_RECORDS:
                self.syn_times.append(ts)
            if len(self.syn_times) == 1:
                detail = _syn_detail(opts)
                self.event(ts, "client", "syn", detail)
            else:
                gap = (ts - self.syn_times[-2]) / 1e9 if len(self.syn_times) >= 2 else 0.0
                self.event(ts, "client", "syn_retry", f"transmission {len(self.syn_times)}, {gap:.3f} s after the previous one")
        elif not is_orig and flags & TH_ACK:
            if self.synack_ts is None:
                self.synack_ts = ts
                self.synack_ttl = ttl
                if self.syn_times:
                    before = [t for t in self.syn_times if t <= ts]
                    if before:
                        self.handshake_rtt = ts - before[-1]
                self.event(ts, "server", "syn_ack", f"TTL {ttl}" + (", " + _syn_detail(opts) if opts else ""))
            else:
                self.event(ts, "server", "syn_ack_retry", f"TTL {ttl}")

    def _start_reassembly(self, ep: Endpoint, is_orig: bool, seq: int, syn: int) -> Reassembler:
        analyzer = self.analyzer
        deliver: Callable[[bytes, int], None] = _ignore
        gap: Callable[[int, int], None] = _ignore
        if analyzer is not None:
            # partial, not a closure: one Python frame fewer for every delivered segment
            deliver = partial(analyzer.data, is_orig)
            gap = partial(analyzer.gap, is_orig)
        base = (ep.start_seq + 1) & MASK32 if ep.seq_init else ((seq + 1) & MASK32 if syn else seq)
        reasm = Reassembler(base, deliver, gap, self.budget)
        ep.reassembler = reasm
        return reasm

    def _gap_seen(self, ep: Endpoint, ts: int) -> None:
        self._scaled(ep, "G", "gap_events", "gap_next")
        if ep.gap_events == 1:
            self.event(ts, _direction(ep.is_orig), "gap", "bytes missing from the capture")

    # -- Zeek's sequence bookkeeping ------------------------------------------------------
    @staticmethod
    def _init_endpoint(ep: Endpoint, flags: int, seq: int, end_seq: int) -> None:
        state = ep.state
        if state == INACTIVE:
            if not ep.seq_init or flags & TH_SYN:
                if flags & TH_SYN:
                    ep.init_seq(seq, end_seq)
                else:
                    # Midstream: pretend a SYN preceded, keeping relative numbering consistent.
                    ep.init_seq(seq - 1, seq)
        elif state in (SYN_SENT, SYN_ACK_SENT):
            if flags & TH_SYN and seq != ep.start_seq:
                ep.init_seq(seq, end_seq)
        elif state in (ESTABLISHED, PARTIAL):
            if flags & TH_SYN:
                ep.init_seq(seq, end_seq)
        elif state == RESET:
            if flags & TH_SYN and ep.prev_state == INACTIVE:
                ep.init_seq(seq, end_seq)

    def _update_last_seq(self, ep: Endpoint, end_seq: int, flags: int, length: int) -> int:
        delta = seq_delta(end_seq, ep.last_seq)
        if flags & (TH_SYN | TH_RST) and (delta > TOO_LARGE_SEQ_DELTA or delta < -TOO_LARGE_SEQ_DELTA):
            pass
        elif flags & TH_FIN and ep.last_seq == (ep.start_seq + 1) & MASK32:
            ep.last_seq = end_seq
        elif ep.state == RESET:
            pass
        elif delta > 0:
            ep.last_seq = end_seq
        elif length > 0:
            self._scaled(ep, "T", "rxmit", "rxmit_next")
        return delta

    # -- Zeek's endpoint state machine ----------------------------------------------------
    def _transition(self, ep: Endpoint, peer: Endpoint, is_orig: bool, flags: int, length: int, seq: int, ack_seq: int, delta_last: int) -> None:
        state = ep.state
        syn = flags & TH_SYN
        fin = flags & TH_FIN
        rst = flags & TH_RST
        ack = flags & TH_ACK
        if state == INACTIVE:
            if syn:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if ack else SYN_SENT)
                else:
                    if not ack:
                        self.weird("simultaneous_open")
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    ep.set_state(ESTABLISHED)
            if fin:
                ep.set_state(CLOSED)
            if rst:
                ep.set_state(RESET)
            if ep.state == INACTIVE:
                if not is_orig and length == 0 and self.orig.state == SYN_SENT:
                    pass  # a bare ACK before the SYN-ACK: some stacks do this; not a partial connection
                elif ack and peer.state == ESTABLISHED:
                    ep.set_state(ESTABLISHED)  # the SYN was missed, the SYN-ACK was not
                else:
                    ep.set_state(PARTIAL)
        elif state in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                ep.set_state(CLOSED)
            if rst:
                ep.set_state(RESET)
            elif length > 0:
                self.weird("data_before_established")
        elif state in (ESTABLISHED, PARTIAL):
            if syn and state == PARTIAL and peer.state == INACTIVE and not ack:
                ep.set_state(SYN_SENT)
            if fin and not rst:
                ep.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    # The peer sent FIN then RST: that was a normal termination after all.
                    peer.set_state(CLOSED)
            if rst:
                ep.set_state(RESET)
        elif state == CLOSED:
            if rst and peer.state != CLOSED:
                ep.set_state(RESET)
        # RESET: nothing changes any more.
        if ep.state in (CLOSED, RESET) and self.closed_ts is None and (
            peer.state in (CLOSED, RESET, INACTIVE) or ep.state == RESET
        ):
            self.closed_ts = self.last_ts

    # -- results ------------------------------------------------------------------------
    def conn_state(self) -> str:
        """Zeek's conn_state code, from the two endpoint states."""
        os_, rs = self.orig.state, self.resp.state
        o_inactive = os_ in (INACTIVE, PARTIAL)
        r_inactive = rs in (INACTIVE, PARTIAL)
        if rs == RESET:
            if os_ in (SYN_SENT, SYN_ACK_SENT) or (
                os_ == RESET and self.orig.size(rs) == 0 and self.resp.size(os_) == 0
            ):
                return "REJ"
            if o_inactive:
                return "RSTRH"
            return "RSTR"
        if os_ == RESET:
            if r_inactive:
                history = "".join(self.history)
                if _is_rstos0(history):
                    return "RSTOS0"
                return "OTH"
            return "RSTO"
        if rs == CLOSED and os_ == CLOSED:
            return "SF"
        if os_ == CLOSED:
            return "SH" if r_inactive else "S2"
        if rs == CLOSED:
            return "SHR" if o_inactive else "S3"
        if os_ == SYN_SENT and rs == INACTIVE:
            return "S0"
        if os_ == ESTABLISHED and rs == ESTABLISHED:
            return "S1"
        return "OTH"

    def facts(self, at_capture_end: bool) -> dict:
        """Everything the layers above need once the connection is gone, as plain data."""
        orig, resp = self.orig, self.resp
        return {
            "uid": self.uid,
            "ip_version": self.ip_version,
            "orig_addr": self.orig_addr,
            "orig_port": self.orig_port,
            "resp_addr": self.resp_addr,
            "resp_port": self.resp_port,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "conn_state": self.conn_state(),
            "history": self.history_string(),
            "flipped": self.flipped,
            "orig_state": STATE_NAMES[orig.state],
            "resp_state": STATE_NAMES[resp.state],
            "orig_pkts": orig.pkts,
            "resp_pkts": resp.pkts,
            "orig_ip_bytes": orig.ip_bytes,
            "resp_ip_bytes": resp.ip_bytes,
            "orig_bytes": orig.size(resp.state),
            "resp_bytes": resp.size(orig.state),
            "missed_bytes": self.missed_bytes(),
            "orig_ttl": (orig.ttl_min, orig.ttl_max),
            "resp_ttl": (resp.ttl_min, resp.ttl_max),
            "orig_fin": orig.fin_count > 0,
            "resp_fin": resp.fin_count > 0,
            "orig_close_ts": orig.close_ts,
            "resp_close_ts": resp.close_ts,
            "orig_rst": orig.rst_count > 0,
            "resp_rst": resp.rst_count > 0,
            "orig_zero_windows": orig.zero_windows,
            "resp_zero_windows": resp.zero_windows,
            "retransmissions": orig.rxmit + resp.rxmit,
            "bad_checksums": orig.bad_sums + resp.bad_sums,
            "syn_times": list(self.syn_times),
            "synack_ts": self.synack_ts,
            "synack_ttl": self.synack_ttl,
            "handshake_rtt": self.handshake_rtt,
            "ack_rtt": self.ack_rtt,
            "rsts": list(self.rsts),
            "icmp": list(self.icmp),
            "closed_ts": self.closed_ts,
            "end_reason": self.end_reason,
            "evicted_for": self.evicted_for,
            "evicted_at": self.evicted_at,
            "at_capture_end": at_capture_end,
            "weirds": dict(self.weirds),
            "events": list(self.events),
            "events_dropped": self.events_dropped,
        }

    def history_string(self) -> str:
        return "".join(self.history)

    @property
    def established(self) -> bool:
        """Did the three-way handshake (or a midstream pickup) bring the connection up?"""
        return self.synack_ts is not None or (self.orig.state not in (INACTIVE, SYN_SENT, SYN_ACK_SENT) and self.resp.state not in (INACTIVE,))

    def missed_bytes(self) -> int:
        total = 0
        for ep in (self.orig, self.resp):
            if ep.reassembler is not None:
                total += ep.reassembler.missed
        return total

    def footprint(self) -> int:
        """An estimate of the memory this connection holds, in bytes, its analyzer's included
        (the table keeps the sum under MAX_TABLE_BYTES)."""
        size = CONNECTION_BYTES + self.event_bytes
        for ep in (self.orig, self.resp):
            reasm = ep.reassembler
            if reasm is not None and reasm.pending:
                size += reasm.pending_bytes + PENDING_SEGMENT_BYTES * len(reasm.pending)
        analyzer = self.analyzer
        if analyzer is not None:
            weigh = getattr(analyzer, "footprint", None)  # optional for analyzers from elsewhere
            size += weigh() if weigh is not None else ANALYZER_BYTES
        return size

    def release(self) -> None:
        """Once finalised: drop the analyzer and the reassemblers, which refer back to this
        connection, so that its memory is freed at once rather than by the cycle collector."""
        self.analyzer = None
        self.orig.reassembler = self.resp.reassembler = None

    def flush(self, ts: int) -> None:
        """Deliver buffered bytes and tell the analyzer the connection is over."""
        for is_orig, ep in ((True, self.orig), (False, self.resp)):
            reasm = ep.reassembler
            if reasm is None:
                continue
            gaps = reasm.gaps
            reasm.flush(ts)
            if reasm.gaps != gaps:
                self._gap_seen(ep, ts)
            if not reasm.ended and (ep.fin_count or ep.rst_count) and self.analyzer is not None:
                reasm.ended = True
                self.analyzer.end_of_stream(is_orig, ts)
        if self.analyzer is not None:
            self.analyzer.finish(ts)


def _direction(is_orig: bool) -> str:
    return "client" if is_orig else "server"


def _syn_detail(opts: dict) -> str:
    parts = []
    if "mss" in opts:
        parts.append(f"MSS {opts['mss']}")
    if "wscale" in opts:
        parts.append(f"wscale {opts['wscale']}")
    if opts.get("sack_permitted"):
        parts.append("SACK")
    if "timestamp" in opts:
        parts.append("TS")
    return ", ".join(parts)


def _is_rstos0(history: str) -> bool:
    """Zeek's /^?S[^HAFGIQ]*R.*/ test: an originator SYN, then its RST, no handshake in between."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False


def _ignore(what: object, ts: int) -> None:
    """What a connection without an analyzer does with its bytes and gaps."""
    return None
