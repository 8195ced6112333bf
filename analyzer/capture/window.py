"""A time window of a capture: only the packets from ``since`` (inclusive) to ``until``
(exclusive) are read, as ``editcap -A SINCE -B UNTIL`` would cut the file.

Times are integer nanoseconds since the Unix epoch, like every record's. A file whose first
packet is ``WINDOW_SLACK_S`` past ``until`` is not read at all, and a file is read only until
its packets are that far past it: captures are in time order but for small disorder (several
interfaces, a clock stepped back a little), which the slack allows for.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

NS = 1_000_000_000

#: How far past ``until`` a capture is still read: packets stored out of time order by more
#: than this (a clock stepped back by minutes) are not waited for.
WINDOW_SLACK_S = 60
WINDOW_SLACK_NS = WINDOW_SLACK_S * NS

#: The bounds of a window that is open at one end (int64, as the C scan compares them).
EARLIEST = -(1 << 63)
LATEST = (1 << 63) - 1
#: The bounds (since, until, stop) of no window at all: every record is read.
ALL_TIME = (EARLIEST, LATEST, LATEST)

_EPOCH = re.compile(r"[0-9]+(\.[0-9]{1,9})?")
# ISO 8601 with a fraction finer than datetime's microseconds: the fraction is read apart.
_FRACTION = re.compile(r"([T ][0-9]{2}:[0-9]{2}:[0-9]{2})\.([0-9]{1,9})")


class TimeError(ValueError):
    """A time that cannot be read; its message says which forms are accepted."""


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch from ISO 8601 (``2026-11-27T14:05:00Z``, ``2026-11-27
    14:05``, ``…+01:00``; UTC when no offset is given, like smtpflow's output) or from
    seconds since the epoch (``1764252300.25``)."""
    value = text.strip()
    if _EPOCH.fullmatch(value):
        whole, _, fraction = value.partition(".")
        return _in_range(int(whole) * NS + int(fraction.ljust(9, "0") or 0), text)
    nanos = 0
    found = _FRACTION.search(value)
    if found is not None:
        nanos = int(found.group(2).ljust(9, "0"))
        value = value[: found.start()] + found.group(1) + value[found.end():]
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise TimeError(
            f"{text!r} is not a time: give ISO 8601 (2026-11-27T14:05:00Z, or 2026-11-27 14:05 for UTC) "
            "or seconds since the epoch (1764252300)") from None
    return _in_range(_datetime_ns(when) + nanos, text)


def _datetime_ns(when: dt.datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    delta = when - _EPOCH_START
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


#: Times a capture can hold and a window can name (the C scan compares 64-bit integers).
LAST_TIME_NS = LATEST - WINDOW_SLACK_NS


def _in_range(ns: int, what) -> int:
    if not 0 <= ns <= LAST_TIME_NS:
        raise TimeError(f"{what!r} is out of range: give a time from 1970 to 2262")
    return ns


_EPOCH_START = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def time_text(ns: int) -> str:
    """A time as smtpflow shows it: ISO 8601 in UTC, to the microsecond when it has one."""
    return (_EPOCH_START + dt.timedelta(microseconds=ns // 1000)).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class TimeWindow:
    """Read only packets with ``since <= ts < until``: nanoseconds since the epoch, as record
    timestamps are (either may be None: open). ``of`` makes one from what a user gives."""

    since: int | None = None
    until: int | None = None

    def __post_init__(self) -> None:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise TimeError(f"the window is empty: {time_text(self.since)} is not before {time_text(self.until)}")

    @classmethod
    def of(cls, since=None, until=None) -> TimeWindow | None:
        """A window from times given as text, numbers (seconds since the epoch) or datetimes;
        None when neither end is given."""
        if since is None and until is None:
            return None
        return cls(_as_ns(since), _as_ns(until))

    @property
    def bounds(self) -> tuple[int, int, int]:
        """(first ts kept, first ts dropped, first ts at which reading stops), as int64."""
        since = EARLIEST if self.since is None else self.since
        until = LATEST if self.until is None else self.until
        stop = LATEST if self.until is None else self.until + WINDOW_SLACK_NS
        return since, until, stop

    def describe(self) -> dict[str, str | None]:
        return {
            "since": None if self.since is None else time_text(self.since),
            "until": None if self.until is None else time_text(self.until),
        }


def _as_ns(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _in_range(_datetime_ns(value), value)
    if isinstance(value, bool):
        raise TimeError(f"{value!r} is not a time")
    if isinstance(value, int):
        return _in_range(value * NS, value)
    if isinstance(value, float):
        if value != value:  # NaN
            raise TimeError(f"{value!r} is not a time")
        return _in_range(round(value * NS), value)
    if isinstance(value, str):
        return parse_time(value)
    # pandas.Timestamp and numpy.datetime64 convert to datetime; anything else is refused.
    to_pydatetime = getattr(value, "to_pydatetime", None)
    if to_pydatetime is not None:
        return _as_ns(to_pydatetime())
    raise TimeError(f"{value!r} is not a time: give a datetime, ISO 8601 text or seconds since the epoch")
