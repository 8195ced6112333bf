"""Per-direction TCP stream reassembly: in-order bytes out, holes and overlaps accounted.

Sequence numbers are mapped to 64-bit stream offsets (0 = first byte after the SYN), so
wrap-around is handled once, here. Segments that arrive early are buffered up to named
limits; retransmissions and overlaps deliver only bytes not yet delivered. A hole that the
peer has acknowledged (the capture missed it) or that outgrows the buffer becomes a gap:
the sink is told how many bytes are missing and delivery continues after it.

An acknowledgement above a hole is not acted on at once: captures taken away from either
host (a gateway, a multi-queue NIC) often show an ACK a moment before the data it covers.
The hole is settled — declared a gap — only when the conversation has moved on: the sender
sends beyond it, the peer sends data of its own, or the connection ends.
"""

from __future__ import annotations

from typing import Callable, Final

from .limits import MAX_OUT_OF_ORDER_BYTES, MAX_OUT_OF_ORDER_BYTES_TOTAL, MAX_OUT_OF_ORDER_SEGMENTS, MAX_SEQUENCE_JUMP

MASK32: Final = 0xFFFFFFFF

DataSink = Callable[[bytes, int], None]
GapSink = Callable[[int, int], None]


def seq_delta(a: int, b: int) -> int:
    """Signed distance a - b in 32-bit sequence space."""
    return ((a - b + 0x80000000) & MASK32) - 0x80000000


class BufferBudget:
    """Shared by one connection table's connections and reassemblers: the out-of-order bytes
    they buffer together (``used``, up to ``limit``), and ``growth``, what they may have added
    to their memory since the table last weighed them (delivered bytes, events: see
    ``ConnectionTable.weigh``)."""

    __slots__ = ("used", "limit", "growth")

    def __init__(self, limit: int = MAX_OUT_OF_ORDER_BYTES_TOTAL) -> None:
        self.used = 0
        self.limit = limit
        self.growth = 0


class Reassembler:
    """Reassembles one direction of a TCP connection.

    ``deliver(data, ts)`` receives contiguous stream bytes; ``gap(length, ts)`` is called
    where bytes are known to be missing. Nothing is buffered beyond the named limits, nor
    beyond the ``budget`` shared with the table's other reassemblers.
    """

    __slots__ = (
        "base", "next_off", "pending", "pending_bytes", "deliver", "gap_sink", "budget",
        "delivered", "missed", "gaps", "overlaps", "dropped", "fin_off", "ended", "ack_target",
    )

    def __init__(self, isn_plus_one: int, deliver: DataSink, gap: GapSink, budget: BufferBudget | None = None) -> None:
        self.base = isn_plus_one & MASK32  # sequence number of stream offset 0
        self.next_off = 0  # next stream offset to deliver
        self.pending: dict[int, bytes] = {}  # stream offset -> bytes, out of order
        self.pending_bytes = 0
        self.deliver = deliver
        self.gap_sink = gap
        self.budget = budget if budget is not None else BufferBudget()
        self.delivered = 0
        self.missed = 0
        self.gaps = 0
        self.overlaps = 0
        self.dropped = 0
        self.fin_off: int | None = None
        self.ended = False
        self.ack_target: int | None = None  # the peer acknowledged up to here, above a hole

    def offset_of(self, seq: int) -> int:
        """Stream offset of sequence number ``seq``, relative to what was delivered."""
        return self.next_off + seq_delta(seq, (self.base + self.next_off) & MASK32)

    def segment(self, seq: int, data: bytes, ts: int, length: int | None = None) -> None:
        """Offer a segment's payload. ``length`` > len(data) means the capture cut it short."""
        if length is None:
            length = len(data)
        off = self.offset_of(seq)
        end = off + length
        if self.ack_target is not None and off >= self.ack_target:
            self.settle(ts)  # the sender moved on past the acknowledged hole: it is lost
        nxt = self.next_off
        if end <= nxt:
            return  # a pure retransmission: everything already delivered
        if off > nxt:
            if off - nxt > MAX_SEQUENCE_JUMP:
                self.dropped += 1
                return
            self._buffer(off, data, length)
            # Over a limit: give up on the lowest hole, then the next, until back within them
            # (past the shared budget, until this connection buffers nothing).
            budget = self.budget
            while self.pending and (self.pending_bytes > MAX_OUT_OF_ORDER_BYTES or len(self.pending) > MAX_OUT_OF_ORDER_SEGMENTS
                                    or budget.used > budget.limit):
                self._skip_to(min(self.pending), ts)
                self._drain(ts)
            return
        if off < nxt:
            self.overlaps += 1
            cut = nxt - off
            data = data[cut:]
            length -= cut
        self._take(data, length, ts)
        if self.pending:
            self._drain(ts)

    def _take(self, data: bytes, length: int, ts: int) -> None:
        # When the capture's snaplen cut the segment (length > len(data)), only the captured
        # bytes move the stream on: the peer's ACK, or the end, reveals the rest as a gap.
        if data:
            self.deliver(data, ts)
            size = len(data)
            self.delivered += size
            self.next_off += size
            # What the parsers above may now buffer, twice: a growing bytearray allocates ahead.
            self.budget.growth += 2 * size

    def _buffer(self, off: int, data: bytes, length: int) -> None:
        old = self.pending.get(off)
        if old is not None and len(old) >= len(data):
            return
        self.pending[off] = data
        grown = len(data) - (len(old) if old is not None else 0)
        self.pending_bytes += grown
        self.budget.used += grown

    def _drain(self, ts: int) -> None:
        pending = self.pending
        while pending:
            nxt = self.next_off
            first = min(pending)
            if first > nxt:
                return
            data = pending.pop(first)
            self.pending_bytes -= len(data)
            self.budget.used -= len(data)
            end = first + len(data)
            if end <= nxt:
                continue
            if first < nxt:
                self.overlaps += 1
                data = data[nxt - first :]
            self._take(data, len(data), ts)

    def _missing(self, length: int, ts: int) -> None:
        self.next_off += length
        self.missed += length
        self.gaps += 1
        self.gap_sink(length, ts)

    def _skip_to(self, off: int, ts: int) -> None:
        if off > self.next_off:
            self._missing(off - self.next_off, ts)

    def acked(self, ack: int, ts: int) -> None:
        """The peer acknowledged up to ``ack``; remember it if that is above a hole."""
        off = self.offset_of(ack)
        if self.fin_off is not None and off > self.fin_off:
            off = self.fin_off  # the FIN consumes a sequence number but carries no byte
        if off <= self.next_off or off - self.next_off > MAX_SEQUENCE_JUMP:
            return  # nothing missing, or an ACK this far ahead is not believable
        if self.ack_target is None or off > self.ack_target:
            self.ack_target = off

    def settle(self, ts: int) -> int:
        """Declare the acknowledged hole a gap (the capture missed it). Returns bytes missed."""
        target = self.ack_target
        self.ack_target = None
        if target is None or target <= self.next_off:
            return 0
        before = self.missed
        while self.next_off < target:
            if self.pending and min(self.pending) <= self.next_off:
                self._drain(ts)
                continue
            self._skip_to(min(min(self.pending), target) if self.pending else target, ts)
            self._drain(ts)
        return self.missed - before

    def flush(self, ts: int) -> None:
        """At the end of the connection: deliver what is buffered, holes becoming gaps."""
        self.settle(ts)
        while self.pending:
            self._skip_to(min(self.pending), ts)
            self._drain(ts)
