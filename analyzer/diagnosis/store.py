"""Where finished sessions wait for the end of the capture: in memory, then on disk.

A session's record needs capture-wide context (DNS answers, the other sessions to the same
server), so the facts of every finished session wait for the end of the capture, and the
records for whoever reads them. A relay's day holds hundreds of thousands of sessions, about
11 KB of facts each. :class:`SessionStore` keeps up to :data:`MAX_SESSIONS_IN_MEMORY` sessions
as objects (a session holding many events or replies counts as several: :func:`session_weight`);
past that it pickles every item (a store of records: their JSON text, ``jsontext``; a dict as
its values alone where its keys come in an order seen before, ``KeyLayouts``) into an
unnamed temporary file and keeps only where each one lies (16 bytes an item). Reading brings
them back one at a time, so memory stays bounded whatever the number of sessions; only the
file grows (a relay's session: about 3 KB of facts, then 4 KB of record).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .jsontext import dump_record, json_line, load_record, stored_json_line

#: Sessions (by weight) a store keeps as objects; past it all of them go to a temporary file.
#: About 65 MB of facts at the typical 11 KB a session (8,192 put a CSV export of 57,000
#: sessions over 300 MB: the memory they held stays with the process, in pieces).
MAX_SESSIONS_IN_MEMORY = 6144
#: A session weighs one more for every this many bytes its events and stored texts hold
#: (its facts' "held_bytes": typically 2-8 KB; up to some 4 MB with MAX_EVENTS_PER_SESSION
#: events and MAX_REPLIES replies of long texts), so big sessions spill sooner.
BYTES_PER_WEIGHT = 8192
#: Pickled items gathered before one write to the file.
WRITE_BUFFER_BYTES = 1 << 20
#: Bytes read at once when consecutive items are read in order.
READ_AHEAD_BYTES = 1 << 20
#: Key orders a store pickles dicts by (``KeyLayouts``): session facts have one or two.
MAX_KEY_LAYOUTS = 64


def spill_directory() -> str:
    """Where spilled sessions go: ``SMTPFLOW_SPILL_DIR``, else ``TMPDIR``, else /var/tmp.

    Not /tmp by default: on many systems (Debian 13 among them) it is a tmpfs, i.e. memory."""
    for variable in ("SMTPFLOW_SPILL_DIR", "TMPDIR"):
        chosen = os.environ.get(variable)
        if chosen:
            return chosen
    if os.path.isdir("/var/tmp") and os.access("/var/tmp", os.W_OK):
        return "/var/tmp"
    return tempfile.gettempdir()


def session_weight(held_bytes: int) -> int:
    """What a session whose events and stored texts hold this many bytes counts for against
    MAX_SESSIONS_IN_MEMORY."""
    return 1 + held_bytes // BYTES_PER_WEIGHT


class SpillError(OSError):
    """The temporary file for spilled sessions could not be created or written."""


class SessionStore(Sequence):
    """An append-only sequence of picklable items, kept in memory while their weights add up
    to no more than ``limit``, and in an unnamed temporary file beyond (see the module docstring).

    Iterating, indexing, ``in_order`` and ``reorder`` work the same in both states. Pickling a spilled
    store (to send it to another process) reads every item back."""

    def __init__(self, items: Iterable[Any] = (), limit: int | None = None, json_records: bool = False) -> None:
        self.limit = MAX_SESSIONS_IN_MEMORY if limit is None else limit
        #: Items are session records, kept on disk as their JSON text (``jsontext``) rather
        #: than pickled: written faster, read faster, and copied as they are by ``json_lines``.
        self.json_records = json_records
        codec = None if json_records else KeyLayouts()
        self._dump: Callable[[Any], bytes] = dump_record if codec is None else codec.dump
        self._load: Callable[[Any], Any] = load_record if codec is None else codec.load
        self._items: list[Any] | None = []
        self._weight = 0
        self._file: Any = None
        self._offsets = array("q")
        self._lengths = array("q")
        self._pending = bytearray()
        self._written = 0  # bytes in the file; the pending ones follow
        self.extend(items)

    @property
    def spilled(self) -> bool:
        return self._items is None

    @property
    def spilled_bytes(self) -> int:
        return self._written + len(self._pending)

    # -- writing --------------------------------------------------------------------------------
    def append(self, item: Any, weight: int = 1) -> None:
        items = self._items
        if items is not None:
            items.append(item)
            self._weight += weight
            if self._weight > self.limit:
                self._spill()
            return
        self._write(self._dump(item))

    def _write(self, blob: bytes) -> None:
        self._offsets.append(self._written + len(self._pending))
        self._lengths.append(len(blob))
        self._pending += blob
        if len(self._pending) >= WRITE_BUFFER_BYTES:
            self._flush()

    def extend(self, items: Iterable[Any]) -> None:
        for item in items:
            self.append(item)

    @staticmethod
    def _new_file() -> Any:
        directory = spill_directory()
        try:
            return tempfile.TemporaryFile(prefix="smtpflow-sessions-", dir=directory)
        except OSError as exc:
            raise SpillError(f"cannot create a temporary file for sessions in {directory} "
                             f"(set SMTPFLOW_SPILL_DIR to a writable directory): {exc}") from None

    def _spill(self) -> None:
        self._file = self._new_file()
        items, self._items = self._items, None
        for item in items or ():
            self.append(item)

    def _flush(self) -> None:
        if not self._pending:
            return
        data = memoryview(self._pending)
        fd = self._file.fileno()
        try:
            while data:
                done = os.pwrite(fd, data, self._written)
                self._written += done
                data = data[done:]
        except OSError as exc:
            raise SpillError(f"cannot write spilled sessions to {spill_directory()}: {exc}") from None
        finally:
            data.release()
        self._pending = bytearray()

    # -- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items) if self._items is not None else len(self._offsets)

    def __iter__(self) -> Iterator[Any]:
        if self._items is not None:
            return iter(self._items)
        return self._read(0, len(self._offsets))

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._items is not None:
            return self._items[index]
        size = len(self._offsets)
        if index < 0:
            index += size
        if not 0 <= index < size:
            raise IndexError("session store index out of range")
        return next(self._read(index, index + 1))

    def json_lines(self, errors: str = "strict") -> Iterator[bytes]:
        """Each record as a line of JSON in UTF-8 (``jsontext.json_line``): a spilled store of
        records copies the text it keeps."""
        if self._items is not None or not self.json_records:
            return (json_line(item, errors) for item in self)
        return self._read(0, len(self._offsets), lambda blob: stored_json_line(blob, errors))

    def _read(self, start: int, stop: int, loads: Callable[[Any], Any] | None = None) -> Iterator[Any]:
        """Items start..stop-1 (or what ``loads`` makes of their stored bytes); runs of items
        stored one after the other are read at once."""
        self._flush()
        fd = self._file.fileno()
        offsets, lengths = self._offsets, self._lengths
        loads = loads or self._load
        i = start
        while i < stop:
            first = end = offsets[i]
            j = i
            while j < stop and offsets[j] == end and (j == i or end - first < READ_AHEAD_BYTES):
                end += lengths[j]
                j += 1
            data = memoryview(_pread_all(fd, end - first, first))
            for k in range(i, j):
                at = offsets[k] - first
                yield loads(data[at:at + lengths[k]])
            i = j

    def in_order(self, order: Sequence[int]) -> Iterator[Any]:
        """The items in this order (``order[n]`` is the index of the n-th to read): a run of
        items stored one after the other is read at once, so an order close to the stored
        one costs little more than iterating."""
        if self._items is not None:
            items = self._items
            return (items[i] for i in order)
        return self._read_order(order)

    def _read_order(self, order: Sequence[int]) -> Iterator[Any]:
        size = len(order)
        start = 0
        while start < size:
            first = order[start]
            end = start + 1
            while end < size and order[end] == first + (end - start):
                end += 1
            yield from self._read(first, first + end - start)
            start = end

    def reorder(self, order: Sequence[int]) -> None:
        """Put the items in this order (``order[n]`` is the index of the item to be n-th)."""
        seen = bytearray(len(self))  # a byte per item: a set of a million ints would be 60 MB
        if len(order) != len(seen):
            raise ValueError("reorder needs a permutation of the store's indices")
        for i in order:
            if seen[i]:
                raise ValueError("reorder needs a permutation of the store's indices")
            seen[i] = 1
        if self._items is not None:
            items = self._items
            self._items = [items[i] for i in order]
            return
        # Copy the items into a new file in their new order: every later pass then reads runs
        # of them at once instead of one item per system call.
        self._flush()
        old, offsets, lengths = self._file, self._offsets, self._lengths
        self._file = self._new_file()
        self._offsets, self._lengths, self._written = array("q"), array("q"), 0
        fd = old.fileno()
        for i in order:
            self._write(_pread_all(fd, lengths[i], offsets[i]))
        self._flush()
        old.close()

    def close(self) -> None:
        """Drop every item and the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._items = []
        self._weight = 0
        self._offsets = array("q")
        self._lengths = array("q")
        self._pending = bytearray()
        self._written = 0

    # -- Python protocols -----------------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (list, tuple, SessionStore)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (SessionStore, (list(self), self.limit, self.json_records))

    def __repr__(self) -> str:
        where = f"spilled, {self.spilled_bytes:,} bytes on disk" if self.spilled else "in memory"
        return f"<SessionStore: {len(self):,} items, {where}>"


class KeyLayouts:
    """Pickles the items of one store; a dict whose keys come in an order seen before goes as
    its values alone, with the number of that order. Every session's facts have the same 55 keys
    in the same order: they pickle to a third of the bytes, 35 % faster, and read back 20 %
    faster (a scan of 60,000 SYNs: 4.0 s instead of 4.4). At most MAX_KEY_LAYOUTS orders are remembered;
    a dict with another order, and any other item, is pickled whole."""

    def __init__(self) -> None:
        self.layouts: list[tuple[Any, ...]] = []
        self.numbers: dict[tuple[Any, ...], int] = {}

    def dump(self, item: Any) -> bytes:
        if type(item) is dict:
            keys = tuple(item)
            number = self.numbers.get(keys)
            if number is None and len(self.layouts) < MAX_KEY_LAYOUTS:
                number = self.numbers[keys] = len(self.layouts)
                self.layouts.append(keys)
            if number is not None:
                return pickle.dumps((number, tuple(item.values())), pickle.HIGHEST_PROTOCOL)
        return pickle.dumps((-1, item), pickle.HIGHEST_PROTOCOL)

    def load(self, blob: Any) -> Any:
        number, values = pickle.loads(blob)
        return values if number < 0 else dict(zip(self.layouts[number], values))


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    done = len(data)
    while done < size:
        more = os.pread(fd, size - done, offset + done)
        if not more:
            raise SpillError("the temporary file of spilled sessions is shorter than written (was it truncated?)")
        parts.append(more)
        done += len(more)
    return b"".join(parts)


class LatestSessions(deque):
    """A store that keeps only the latest ``maxlen`` items, in memory (live capture: a
    capture without end reports its recent sessions)."""

    def append(self, item: Any, weight: int = 1) -> None:  # type: ignore[override]
        super().append(item)


class EventsBySession(Mapping):
    """Each session's events by session id, from a store of ``(session id, events)`` pairs.

    The id → position table is built on the first lookup by id; :meth:`pairs` reads them
    in stored order without it."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store
        self._index: dict[str, int] | None = None

    def _positions(self) -> dict[str, int]:
        if self._index is None:
            self._index = {uid: n for n, (uid, _events) in enumerate(self._store)}
        return self._index

    def __getitem__(self, uid: str) -> list:
        return self._store[self._positions()[uid]][1]

    def __iter__(self) -> Iterator[str]:
        return (uid for uid, _events in self._store)

    def __len__(self) -> int:
        return len(self._store)

    def pairs(self) -> Iterator[tuple[str, list]]:
        """(session id, events) of every session, in stored order."""
        return iter(self._store)
