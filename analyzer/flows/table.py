"""The connection table: TCP segments and ICMP errors in, finished connections out.

Connections are keyed by the 4-tuple as the packet carries it; each connection is entered
under both directions' keys, so one dictionary look-up finds it whichever way a packet
flows. Idle connections are finalised and dropped as capture time passes, so memory is
bounded by the number of connections active at once, not by the length of the capture.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Callable, Final

from ..decode.packet import CHECKSUM_BAD, CHECKSUM_OK, IcmpError, TcpSegment
from ..decode.icmp import icmp_name
from ..decode.ip import address_text
from ..decode.tcp import TH_ACK, TH_RST, TH_SYN
from .limits import (
    ATTEMPT_TIMEOUT_S,
    CLOSED_LINGER_S,
    DUPLICATE_FRAME_WINDOW_NS,
    IDLE_TIMEOUT_S,
    MAX_ACTIVE_CONNECTIONS,
    MAX_CHECKSUM_HOSTS,
    MAX_ICMP_RECORDS,
    MAX_TABLE_BYTES,
    SWEEP_INTERVAL_S,
)
from .reassembly import BufferBudget
from .tcp import CLOSED, RESET, SYN_SENT, StreamAnalyzer, TcpConnection

NS: Final = 1_000_000_000

#: Ports Zeek's heuristic treats as "likely server" when a connection starts mid-stream or
#: with a SYN-ACK: the first packet's sender is then taken to be the responder.
LIKELY_SERVER_PORTS: Final = frozenset(
    {20, 21, 22, 23, 25, 53, 80, 88, 110, 111, 135, 139, 143, 389, 443, 445, 465, 514, 587, 636,
     993, 995, 1433, 1521, 2525, 3128, 3306, 3389, 5060, 5432, 8080, 8443}
)

AnalyzerFactory = Callable[[TcpConnection], StreamAnalyzer | None]
FinishedSink = Callable[[TcpConnection, bool], None]

#: What a new connection is taken to add, for the growth meter (``weigh``): itself and its
#: analyzer, as a mid-dialogue one holds (tests/test_memory.py).
NEW_CONNECTION_BYTES: Final = 10_000

#: ICMP errors kept that quote no known connection.
MAX_ORPHAN_ICMP: Final = 10_000
#: ICMP errors remembered to recognise one captured twice (DUPLICATE_FRAME_WINDOW_S).
MAX_RECENT_ICMP: Final = 4096

_B62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Two base-62 digits of n < 62 ** 2, the less significant first.
_B62_PAIRS: Final = tuple(_B62[n % 62] + _B62[n // 62] for n in range(62 * 62))


def session_uid(ts: int, orig: bytes, oport: int, resp: bytes, rport: int) -> str:
    """A Zeek-style connection id, but deterministic: the same capture always gives the same ids."""
    digest = hashlib.blake2b(
        ts.to_bytes(8, "big", signed=True) + orig + oport.to_bytes(2, "big") + resp + rport.to_bytes(2, "big"),
        digest_size=8,
    ).digest()
    # Eleven base-62 digits, the least significant first: two at a time (62 ** 11 > 2 ** 64).
    value, d1 = divmod(int.from_bytes(digest, "big"), 3844)
    value, d2 = divmod(value, 3844)
    value, d3 = divmod(value, 3844)
    value, d4 = divmod(value, 3844)
    value, d5 = divmod(value, 3844)
    return "".join(("C", _B62_PAIRS[d1], _B62_PAIRS[d2], _B62_PAIRS[d3], _B62_PAIRS[d4], _B62_PAIRS[d5], _B62[value]))


class ConnectionTable:
    """Bidirectional TCP connection tracking with expiry.

    ``on_finished(conn, at_capture_end)`` is called once per connection when it is
    finalised (closed and lingered, idle, replaced by a new attempt, pushed out of a full
    table — MAX_ACTIVE_CONNECTIONS, or MAX_TABLE_BYTES by the connections' own estimate,
    least recently active first — or at the end); once it returns, the connection's
    analyzer and reassemblers are released.
    ``checksums``: "auto" (drop segments with a wrong checksum from hosts known to send
    correct ones — offloaded checksums on the capturing host are kept), "verify" (drop
    every wrong one, as Zeek does) or "off".
    """

    def __init__(
        self,
        on_finished: FinishedSink,
        analyzer_factory: AnalyzerFactory | None = None,
        checksums: str = "auto",
        max_bytes: int | None = None,
    ) -> None:
        self.on_finished = on_finished
        self.analyzer_factory = analyzer_factory
        self.checksums = checksums
        self.conns: dict[tuple, TcpConnection] = {}
        self.active: OrderedDict[TcpConnection, None] = OrderedDict()  # least recently active first
        self.next_sweep = 0
        self.now = 0
        self.good_checksum_hosts: set[bytes] = set()
        self.orphan_icmp: list[dict] = []
        self.created = 0
        self.finalised = 0
        #: Connections finalised early because MAX_ACTIVE_CONNECTIONS were open at once, or
        #: (``evicted_for_memory``, counted in both) because together they held more than
        #: ``max_bytes``.
        self.evicted = 0
        self.evicted_for_memory = 0
        #: TCP segments and ICMP errors that were the same packet as the one before them,
        #: captured twice (DUPLICATE_FRAME_WINDOW_S).
        self.duplicate_frames = 0
        self._recent_icmp: OrderedDict[tuple, int] = OrderedDict()  # what an error said -> when, newest last
        #: Out-of-order bytes all connections may buffer together (MAX_OUT_OF_ORDER_BYTES_TOTAL),
        #: and the growth meter: past ``headroom``, the table weighs its connections.
        self.budget = BufferBudget()
        self.max_bytes = MAX_TABLE_BYTES if max_bytes is None else max_bytes
        self.headroom = self.max_bytes
        #: What the active connections held when last weighed (the sum of their ``weighed``),
        #: and those that got packets since: only they can hold something else now.
        self.held = 0
        self.touched: set[TcpConnection] = set()

    # -- packets ------------------------------------------------------------------------
    def tcp(self, seg: TcpSegment) -> None:
        ts = seg.ts
        if ts > self.now:
            self.now = ts
            if ts >= self.next_sweep:
                self.sweep(ts)
        src = seg.src
        key = (src, seg.sport, seg.dst, seg.dport)
        conn = self.conns.get(key)
        checksum = seg.checksum
        if checksum != CHECKSUM_OK and self.checksums != "off":
            if checksum == CHECKSUM_BAD and (self.checksums == "verify" or src in self.good_checksum_hosts):
                if conn is None:
                    conn = self._create(seg, key)
                conn.bad_checksum(key == conn.key, ts)
                self.touched.add(conn)
                return
        elif checksum == CHECKSUM_OK and len(self.good_checksum_hosts) < MAX_CHECKSUM_HOSTS:
            self.good_checksum_hosts.add(src)
        ident = seg.ident
        seq = seg.seq
        ack = seg.ack
        if conn is None:
            conn = self._create(seg, key)
            is_orig = key == conn.key
            ep = conn.orig if is_orig else conn.resp
        else:
            is_orig = key == conn.key
            ep = conn.orig if is_orig else conn.resp
            # The same packet captured a second time (see DUPLICATE_FRAME_WINDOW_S): ident (the
            # IPv4 id and the TCP checksum, which covers flags, window, options and payload),
            # sequence and acknowledgment numbers all repeat. Compared field by field: a
            # tuple per packet cost 3 % of an all-SMTP capture's time.
            if ident == ep.frame_ident and seq == ep.frame_seq and ack == ep.frame_ack and (
                ts - ep.frame_ts <= DUPLICATE_FRAME_WINDOW_NS
            ):
                self.duplicate_frames += 1
                conn.weird("duplicate_frame")
                return
            if seg.flags & TH_SYN and self._is_new_attempt(conn, seg, key):
                self._finalise(conn, False)
                conn = self._create(seg, key)
                is_orig = key == conn.key
                ep = conn.orig if is_orig else conn.resp
            else:
                self.active.move_to_end(conn)
        ep.frame_ident = ident
        ep.frame_seq = seq
        ep.frame_ack = ack
        ep.frame_ts = ts
        conn.process(seg, is_orig)
        self.touched.add(conn)
        if self.budget.growth > self.headroom:
            self.weigh()

    def observe(self, seg: TcpSegment) -> None:
        """A segment of a connection another shard follows (see ``analyzer.parallel``): only
        keep the clock and what it shows of its sender's checksums, as a serial run would."""
        self.observe_at(seg.ts, seg.src, seg.checksum)

    def observe_at(self, ts: int, src: bytes, checksum: int) -> None:
        """``observe``, from what the C scan hands on of such a segment."""
        if ts > self.now:
            self.now = ts
            if ts >= self.next_sweep:
                self.sweep(ts)
        if checksum == CHECKSUM_OK and len(self.good_checksum_hosts) < MAX_CHECKSUM_HOSTS:
            self.good_checksum_hosts.add(src)

    def icmp(self, err: IcmpError) -> None:
        """Tie an ICMP error to the connection whose packet it quotes."""
        # The same error captured twice, as for segments. Remembered by what it says, not as
        # "the last one": a split run's shards each see only their own connections' errors.
        seen = (err.src, err.dst, err.type, err.code, err.q_proto, err.q_src, err.q_dst, err.q_sport, err.q_dport, err.q_seq)
        recent = self._recent_icmp
        first = recent.get(seen)
        if first is not None and err.ts - first <= DUPLICATE_FRAME_WINDOW_NS:
            self.duplicate_frames += 1
            conn = self.conns.get((err.q_src, err.q_sport, err.q_dst, err.q_dport)) if err.q_proto == 6 else None
            if conn is not None:
                conn.weird("duplicate_frame")
            return
        recent[seen] = err.ts
        if len(recent) > MAX_RECENT_ICMP:
            recent.popitem(last=False)
        record = {
            "ts": err.ts,
            "type": err.type,
            "code": err.code,
            "name": icmp_name(err.version, err.type, err.code),
            "from": address_text(err.src),
            "ttl": err.ttl,
            "ip_version": err.version,
        }
        key = (err.q_src, err.q_sport, err.q_dst, err.q_dport)
        conn = self.conns.get(key) if err.q_proto == 6 else None
        if conn is None:
            record["quoted"] = f"{address_text(err.q_src)}:{err.q_sport} > {address_text(err.q_dst)}:{err.q_dport}"
            record["proto"] = "tcp" if err.q_proto == 6 else "udp"
            if len(self.orphan_icmp) < MAX_ORPHAN_ICMP:
                self.orphan_icmp.append(record)
            return
        if len(conn.icmp) < MAX_ICMP_RECORDS:
            conn.icmp.append(record)
        conn.last_ts = max(conn.last_ts, err.ts)
        self.active.move_to_end(conn)
        self.touched.add(conn)
        direction = "network" if err.src not in (conn.orig_addr, conn.resp_addr) else (
            "server" if err.src == conn.resp_addr else "client"
        )
        conn.event(err.ts, direction, "icmp", f"{record['name']} from {record['from']}")

    # -- connections --------------------------------------------------------------------
    def _create(self, seg: TcpSegment, key: tuple) -> TcpConnection:
        flags = seg.flags
        flip = False
        if not flags & TH_SYN or flags & TH_ACK:
            # Mid-stream or SYN-ACK first: guess the real responder from the ports (Zeek's rule).
            if seg.sport in LIKELY_SERVER_PORTS:
                if seg.dport in LIKELY_SERVER_PORTS:
                    flip = not flags & TH_SYN and seg.sport < seg.dport
                else:
                    flip = True
        if flip:
            orig, oport, resp, rport = seg.dst, seg.dport, seg.src, seg.sport
        else:
            orig, oport, resp, rport = seg.src, seg.sport, seg.dst, seg.dport
        if len(self.active) >= MAX_ACTIVE_CONNECTIONS:
            self._let_go(next(iter(self.active)), "connections")
        okey = (orig, oport, resp, rport)
        uid = session_uid(seg.ts, orig, oport, resp, rport)
        conn = TcpConnection(okey, uid, orig, oport, resp, rport, seg.ts, flip, self.budget)
        if self.analyzer_factory is not None:
            conn.analyzer = self.analyzer_factory(conn)
        self.conns[okey] = conn
        self.conns[(resp, rport, orig, oport)] = conn
        self.active[conn] = None
        self.created += 1
        self.budget.growth += NEW_CONNECTION_BYTES
        return conn

    def weigh(self) -> int:
        """Add up what the active connections hold (``TcpConnection.footprint``: weighed again
        only for those touched since the last weighing). Past 7/8 of ``max_bytes``, finalise
        the least recently active ones early (``end_reason`` "table_full") until no more than
        3/4 of it is held: so the next weighing waits for at least an eighth of the budget to
        be added (``budget.growth``, counted as connections are created, bytes delivered and
        events recorded). Returns the total held."""
        held = self.held
        for conn in self.touched:
            if conn.finished:
                continue
            size = conn.footprint()
            held += size - conn.weighed
            conn.weighed = size
        self.touched.clear()
        self.held = held
        if held > self.max_bytes * 7 // 8:
            target = self.max_bytes * 3 // 4
            active = self.active
            while self.held > target and active:
                self._let_go(next(iter(active)), "memory")  # takes its weight off self.held
        self.budget.growth = 0
        self.headroom = self.max_bytes - self.held
        return self.held

    def _let_go(self, conn: TcpConnection, cause: str) -> None:
        """Finalise ``conn`` early to make room (``cause``: "connections" or "memory"). One
        already over — closed or reset, waiting out CLOSED_LINGER_S for late packets — ends as
        it would have; an open one ends "table_full" and is counted as let go."""
        if conn.closed_ts is not None:
            conn.end_reason = "closed"
        else:
            conn.end_reason, conn.evicted_for, conn.evicted_at = "table_full", cause, self.now
            self.evicted += 1
            if cause == "memory":
                self.evicted_for_memory += 1
        self._finalise(conn, False)

    @staticmethod
    def _is_new_attempt(conn: TcpConnection, seg: TcpSegment, key: tuple) -> bool:
        """Does this segment start a new connection on the same 4-tuple?

        A SYN (without ACK) from the originator with a new initial sequence number is a new
        attempt: a retransmitted SYN reuses its ISN, a new ``connect()`` picks a new one.
        A SYN on a connection that is over (closed or reset) is one as well.
        """
        flags = seg.flags
        if not flags & TH_SYN or flags & (TH_ACK | TH_RST):
            return False
        is_orig = key == conn.key
        orig, resp = conn.orig, conn.resp
        if is_orig:
            if conn.isn is not None and seg.seq != conn.isn:
                return True
            if conn.isn is None and orig.seq_init and orig.state != SYN_SENT and seg.seq != orig.start_seq:
                return True
            return orig.state in (CLOSED, RESET) and resp.state in (CLOSED, RESET) and seg.seq != conn.isn
        # A SYN from the responder's side after the connection ended: the roles are new.
        return orig.state in (CLOSED, RESET) or resp.state in (CLOSED, RESET)

    def _finalise(self, conn: TcpConnection, at_end: bool) -> None:
        if conn.finished:
            return
        conn.finished = True
        self.held -= conn.weighed
        self.touched.discard(conn)
        for key in (conn.key, (conn.resp_addr, conn.resp_port, conn.orig_addr, conn.orig_port)):
            if self.conns.get(key) is conn:
                del self.conns[key]
        self.active.pop(conn, None)
        conn.flush(conn.last_ts)
        self.finalised += 1
        self.on_finished(conn, at_end)
        conn.release()

    def sweep(self, now: int) -> None:
        """Finalise connections idle past their timeout (least recently active first)."""
        self.next_sweep = now + SWEEP_INTERVAL_S * NS
        expired = []
        for conn in self.active:
            idle = now - conn.last_ts
            if idle < CLOSED_LINGER_S * NS:
                break  # everything after this one was active more recently
            if conn.closed_ts is not None or (conn.orig.state == SYN_SENT and idle >= ATTEMPT_TIMEOUT_S * NS):
                expired.append((conn, "closed" if conn.closed_ts is not None else "attempt_timeout"))
            elif idle >= IDLE_TIMEOUT_S * NS:
                expired.append((conn, "idle_timeout"))
        for conn, reason in expired:
            conn.end_reason = reason
            self._finalise(conn, False)

    def finish(self) -> None:
        """End of capture: finalise everything still in the table."""
        for conn in list(self.active):
            if conn.end_reason is None:
                conn.end_reason = "closed" if conn.closed_ts is not None else "capture_end"
            self._finalise(conn, True)

    def __len__(self) -> int:
        return len(self.active)
