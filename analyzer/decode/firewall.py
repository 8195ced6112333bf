"""A firewall's own log as a capture: what it logged of each connection, and why.

* pf's log (link type 117: ``tcpdump -i pflog0`` on pfSense, OPNsense, OpenBSD) holds the
  packets a rule with ``log`` matched — usually the blocked ones — each with the rule, the
  interface and the action.
* Linux NFLOG (link type 239: ``iptables -j NFLOG``, nftables ``log group N``) holds the
  packets a logging rule matched, with the rule's prefix text; not what the rule did.

A SYN in such a capture was not seen "on its way": the firewall logged it. :class:`FirewallLog`
keeps what the log said per TCP connection for the diagnosis (``record["firewall"]``).

pf's layout (``struct pfloghdr``; the packet follows at the header length rounded up to 4)::

    length (1: 61 on FreeBSD and DragonFly, 69 on newer FreeBSD, 100 on OpenBSD), address
    family (1), action (1), reason (1), interface name (16), ruleset (16), rule number (4,
    big-endian), subrule number (4, big-endian; all ones: none), uid (4), pid (4), rule uid
    (4), rule pid (4), direction (1: 1 in, 2 out)

NFLOG's: family (1), version (1), group (2, big-endian), then TLVs — length (2) and type (2)
in the capturing host's byte order, each padded to 4 bytes: the prefix is type 10
(NFULA_PREFIX, NUL-terminated), the packet type 9 (NFULA_PAYLOAD).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

#: offsetof(struct pfloghdr, pad): the shortest header pf writes, and all that is read here.
PFLOG_MIN_HEADER_LEN = 61
PFLOG_ACTION = 2
PFLOG_REASON = 3
PFLOG_IFNAME = 4
PFLOG_RULESET = 20
PFLOG_RULENR = 36
PFLOG_SUBRULENR = 40
PFLOG_DIR = 60
IFNAMSIZ = 16
NO_SUBRULE = 0xFFFFFFFF

#: pf's actions (pfvar.h PF_PASS ...), as pflog and tcpdump name them.
ACTIONS = ("pass", "block", "scrub", "no-scrub", "nat", "no-nat", "binat", "no-binat", "rdr", "no-rdr",
           "synproxy-drop", "defer", "match")
ACTION_BLOCK = 1
#: Why (pfvar.h PFRES_*).
REASONS = ("match", "bad-offset", "fragment", "short", "normalize", "memory", "bad-timestamp", "congestion",
           "ip-option", "proto-cksum", "state-mismatch", "state-insert", "state-limit", "src-limit", "synproxy",
           "map-failed")
DIRECTIONS = {1: "in", 2: "out"}

NFLOG_HEADER_LEN = 4
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
#: Prefix characters kept (the kernel allows 63; nftables' log prefix 127).
MAX_PREFIX_LEN = 128

#: Connections whose logged packets are remembered until they end; past it, the least
#: recently logged are forgotten (a scan logged by pf has a connection per address).
MAX_FIREWALL_CONNECTIONS = 65536


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def _entry(log: str, **fields: Any) -> dict[str, Any]:
    entry = {"log": log, "action": None, "reason": None, "rule": None, "subrule": None, "ruleset": None,
             "interface": None, "direction": None, "prefix": None, "group": None, "packets": 0}
    entry.update(fields)
    return entry


def pflog_entry(buf: bytes, start: int) -> dict[str, Any]:
    """What the pfloghdr at ``start`` says (the caller made sure it is whole)."""
    action = buf[start + PFLOG_ACTION]
    reason = buf[start + PFLOG_REASON]
    subrule = int.from_bytes(buf[start + PFLOG_SUBRULENR : start + PFLOG_SUBRULENR + 4], "big")
    return _entry(
        "pflog",
        action=ACTIONS[action] if action < len(ACTIONS) else str(action),
        reason=REASONS[reason] if reason < len(REASONS) else str(reason),
        rule=int.from_bytes(buf[start + PFLOG_RULENR : start + PFLOG_RULENR + 4], "big"),
        subrule=None if subrule == NO_SUBRULE else subrule,
        ruleset=_text(buf[start + PFLOG_RULESET : start + PFLOG_RULESET + IFNAMSIZ]) or None,
        interface=_text(buf[start + PFLOG_IFNAME : start + PFLOG_IFNAME + IFNAMSIZ]),
        direction=DIRECTIONS.get(buf[start + PFLOG_DIR]),
    )


def pflog_blocked(buf: bytes, start: int) -> bool:
    return buf[start + PFLOG_ACTION] == ACTION_BLOCK


def nflog_parts(buf: bytes, start: int, end: int) -> tuple[int, int, int]:
    """(packet offset, prefix start, prefix end) of the NFLOG record at ``start``: -1 for what
    it does not hold. The TLVs are walked in either byte order (the capturing host's: a wrong
    guess does not reach the packet)."""
    for order in ("little", "big"):
        pos = start + NFLOG_HEADER_LEN
        prefix_start = prefix_end = -1
        while pos + 4 <= end:
            length = int.from_bytes(buf[pos : pos + 2], order)
            kind = int.from_bytes(buf[pos + 2 : pos + 4], order)
            if length < 4 or pos + length > end:
                break
            if kind == NFULA_PREFIX:
                prefix_start, prefix_end = pos + 4, pos + min(length, 4 + MAX_PREFIX_LEN)
            elif kind == NFULA_PAYLOAD:
                return pos + 4, prefix_start, prefix_end
            pos += (length + 3) & ~3
    return -1, -1, -1


def nflog_entry(buf: bytes, start: int, end: int) -> dict[str, Any]:
    """The NFLOG record's group and prefix."""
    _packet, prefix_start, prefix_end = nflog_parts(buf, start, end)
    prefix = _text(buf[prefix_start:prefix_end]) if prefix_start >= 0 else ""
    return _entry("nflog", prefix=prefix or None, group=int.from_bytes(buf[start + 2 : start + 4], "big"))


class FirewallLog:
    """Per TCP connection (either direction's 4-tuple), what the firewall logged of it: the
    first block if any packet was blocked (else the first logged packet), and how many were
    logged."""

    def __init__(self, limit: int = MAX_FIREWALL_CONNECTIONS) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple, read: Callable[[], dict[str, Any]], blocked: bool) -> None:
        """A logged packet of the connection ``key``: ``read()`` says what the log says of it
        (called only when that is kept), ``blocked`` whether the firewall blocked it."""
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if len(entries) >= self.limit:
                entries.popitem(last=False)
                self.forgotten += 1
            entry = entries[key] = read()
        else:
            entries.move_to_end(key)
            if blocked and entry["action"] != "block":
                entry.update(read(), packets=entry["packets"])
        entry["packets"] += 1

    def take(self, orig: bytes, orig_port: int, resp: bytes, resp_port: int) -> dict[str, Any] | None:
        """What was logged of this connection (both directions together), forgotten once taken."""
        sent = self._entries.pop((orig, orig_port, resp, resp_port), None)
        answered = self._entries.pop((resp, resp_port, orig, orig_port), None)
        if sent is None or answered is None:
            return sent or answered
        first = sent if sent["action"] == "block" or answered["action"] != "block" else answered
        return dict(first, packets=sent["packets"] + answered["packets"])
