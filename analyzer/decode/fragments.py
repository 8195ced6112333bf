"""IP fragment reassembly (RFC 791 for IPv4, RFC 8200 §4.5 for IPv6), bounded.

Fragments are rare on a mail path, but not where it matters: a DNS answer larger than the
path's MTU, a tunnel (GRE, ERSPAN) carrying full-size frames over a 1500-byte link, a VPN
gateway that clears DF. Without reassembly those answers go missing (an "unanswered" lookup)
and those segments become holes. Sans-I/O: ``add`` takes one fragment and returns the whole
datagram (an IP packet: header, then payload) once its last piece is in, else None.

Limits (like Linux's ``ipfrag_time`` and ``ipfrag_high_thresh``): a datagram waits at most
``FRAGMENT_TIMEOUT_S`` for its pieces; at most ``MAX_PENDING_DATAGRAMS`` wait at once and
together they hold at most ``MAX_FRAGMENT_BYTES_TOTAL``; past either the oldest is dropped.
Overlapping pieces that disagree drop the datagram (RFC 5722's rule for IPv6, applied to
both: the receiver's reading of them cannot be known).
"""

from __future__ import annotations

from collections import OrderedDict

NS = 1_000_000_000

#: A datagram whose pieces have not all come this long after its first is dropped (Linux: 30 s).
FRAGMENT_TIMEOUT_S = 30
FRAGMENT_TIMEOUT_NS = FRAGMENT_TIMEOUT_S * NS
#: Datagrams waiting for pieces at once.
MAX_PENDING_DATAGRAMS = 4096
#: Bytes all waiting pieces hold together (Linux's default ipfrag_high_thresh is 4 MB per netns).
MAX_FRAGMENT_BYTES_TOTAL = 16 * 1024 * 1024
#: The largest datagram an IP length field allows (payload after the fixed header).
MAX_DATAGRAM_PAYLOAD = 65_535


class _Datagram:
    __slots__ = ("first_ts", "header", "pieces", "total", "held")

    def __init__(self, ts: int) -> None:
        self.first_ts = ts
        self.header: bytes | None = None  # what precedes the payload in the whole datagram
        self.pieces: dict[int, bytes] = {}  # offset -> bytes
        self.total: int | None = None  # payload length, known from the last piece
        self.held = 0


class FragmentTable:
    """Pieces of datagrams still incomplete, keyed by their addresses, protocol and id."""

    def __init__(self) -> None:
        self._pending: OrderedDict[tuple, _Datagram] = OrderedDict()  # oldest first
        self._held = 0
        self.reassembled = 0
        self.dropped = 0  # timed out, pushed out by the limits, overlapping or impossible

    @property
    def held(self) -> int:
        return self._held

    def add(self, ts: int, key: tuple, offset: int, more: bool, data: bytes, header: bytes | None) -> bytes | None:
        """One piece: ``offset`` in bytes, ``more`` its more-fragments flag, ``header`` (for
        the piece at offset 0) the header the whole datagram gets. Returns that datagram
        (header + payload) when complete."""
        self._expire(ts)
        entry = self._pending.get(key)
        if entry is None:
            entry = self._pending[key] = _Datagram(ts)
        end = offset + len(data)
        if end > MAX_DATAGRAM_PAYLOAD or (not more and entry.total is not None and entry.total != end) or (
            entry.total is not None and end > entry.total
        ):
            self._drop(key)
            return None
        if not more:
            entry.total = end
        if offset == 0 and header is not None:
            entry.header = header
        for at, piece in entry.pieces.items():
            lo, hi = max(at, offset), min(at + len(piece), end)
            if lo < hi and piece[lo - at : hi - at] != data[lo - offset : hi - offset]:
                self._drop(key)
                return None
        if offset not in entry.pieces or len(entry.pieces[offset]) < len(data):
            old = entry.pieces.get(offset)
            entry.pieces[offset] = data
            grown = len(data) - (len(old) if old is not None else 0)
            entry.held += grown
            self._held += grown
        whole = self._whole(entry)
        if whole is not None:
            self._forget(key)
            self.reassembled += 1
            return whole
        self._limit()
        return None

    @staticmethod
    def _whole(entry: _Datagram) -> bytes | None:
        if entry.total is None or entry.header is None:
            return None
        parts = []
        covered = 0
        for at in sorted(entry.pieces):
            piece = entry.pieces[at]
            if at > covered:
                return None  # a hole
            if at + len(piece) > covered:
                parts.append(piece[covered - at :])
                covered = at + len(piece)
        if covered < entry.total:
            return None
        return entry.header + b"".join(parts)[: entry.total]

    def _expire(self, now: int) -> None:
        pending = self._pending
        while pending:
            key, oldest = next(iter(pending.items()))
            if now - oldest.first_ts <= FRAGMENT_TIMEOUT_NS:
                break
            self._drop(key)

    def _limit(self) -> None:
        pending = self._pending
        while pending and (len(pending) > MAX_PENDING_DATAGRAMS or self._held > MAX_FRAGMENT_BYTES_TOTAL):
            self._drop(next(iter(pending)))

    def _forget(self, key: tuple) -> None:
        entry = self._pending.pop(key)
        self._held -= entry.held

    def _drop(self, key: tuple) -> None:
        self._forget(key)
        self.dropped += 1
