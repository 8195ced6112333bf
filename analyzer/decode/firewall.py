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


def nflog_header(buf: bytes, start: int, end: int) -> bytes:
    """What is kept of an NFLOG record: its group (2 bytes), then its prefix."""
    _packet, prefix_start, prefix_end = nflog_parts(buf, start, end)
    return bytes(buf[start + 2 : start + 4]) + (bytes(buf[prefix_start:prefix_end]) if prefix_start >= 0 else b"")


def nflog_entry(header: bytes) -> dict[str, Any]:
    """What an NFLOG record kept by ``nflog_header`` says: its group and prefix."""
    return _entry("nflog", prefix=_text(header[2:]) or None, group=int.from_bytes(header[:2], "big"))


class FirewallLog:
    """Per TCP connection (either direction's 4-tuple), what the firewall logged of it: the
    first block if any packet was blocked (else the first logged packet), and how many were
    logged. Each entry keeps only that packet's log header (a few dozen bytes): a process
    that reads every packet but follows a share of the connections (a split run) holds the
    others' until they are forgotten."""

    def __init__(self, limit: int = MAX_FIREWALL_CONNECTIONS) -> None:
        self.limit = limit
        #: key -> [log kind, its header, blocked, packets]
        self._entries: OrderedDict[tuple, list] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple, log: str, buf: bytes, start: int, end: int) -> None:
        """A packet of the connection ``key`` in a firewall's log (``log``: "pflog" or "nflog")
        whose record is ``buf[start:end]``."""
        blocked = log == "pflog" and pflog_blocked(buf, start)
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if len(entries) >= self.limit:
                entries.popitem(last=False)
                self.forgotten += 1
            entries[key] = [log, _header(log, buf, start, end), blocked, 1]
            return
        entries.move_to_end(key)
        entry[3] += 1
        if blocked and not entry[2]:
            entry[1], entry[2] = _header(log, buf, start, end), True

    def take(self, orig: bytes, orig_port: int, resp: bytes, resp_port: int) -> dict[str, Any] | None:
        """What was logged of this connection (both directions together), forgotten once taken."""
        sent = self._entries.pop((orig, orig_port, resp, resp_port), None)
        answered = self._entries.pop((resp, resp_port, orig, orig_port), None)
        if sent is None and answered is None:
            return None
        told = sent if answered is None or sent is not None and (sent[2] or not answered[2]) else answered
        log, header, _blocked, _packets = told
        entry = pflog_entry(header, 0) if log == "pflog" else nflog_entry(header)
        entry["packets"] = (sent[3] if sent else 0) + (answered[3] if answered else 0)
        return entry


def _header(log: str, buf: bytes, start: int, end: int) -> bytes:
    return bytes(buf[start : start + PFLOG_MIN_HEADER_LEN]) if log == "pflog" else nflog_header(buf, start, end)
