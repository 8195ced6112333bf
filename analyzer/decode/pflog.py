"""pf's log (link type 117): what the firewall of pfSense, OPNsense or OpenBSD logged, and why.

A capture of ``pflog0`` holds the packets a rule with ``log`` matched — usually the blocked
ones. So a SYN in it was not seen "on its way": pf itself logged it, with the rule, the
interface and the action. :class:`FirewallLog` keeps that per connection for the diagnosis
(``record["firewall"]``).

Layout (``struct pfloghdr``; the packet follows at the header length rounded up to 4)::

    length (1: 61 on FreeBSD and DragonFly, 69 on newer FreeBSD, 100 on OpenBSD), address
    family (1), action (1), reason (1), interface name (16), ruleset (16), rule number (4,
    big-endian), subrule number (4, big-endian; all ones: none), uid (4), pid (4), rule uid
    (4), rule pid (4), direction (1: 1 in, 2 out)
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

#: Connections whose logged packets are remembered until they end; past it, the least
#: recently logged are forgotten (a scan logged by pf has a connection per address).
MAX_FIREWALL_CONNECTIONS = 65536


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("ascii", "replace")


def read_header(buf: bytes, start: int) -> dict[str, Any]:
    """What the pfloghdr at ``start`` says (the caller made sure it is whole)."""
    action = buf[start + PFLOG_ACTION]
    reason = buf[start + PFLOG_REASON]
    subrule = int.from_bytes(buf[start + PFLOG_SUBRULENR : start + PFLOG_SUBRULENR + 4], "big")
    return {
        "log": "pflog",
        "action": ACTIONS[action] if action < len(ACTIONS) else str(action),
        "reason": REASONS[reason] if reason < len(REASONS) else str(reason),
        "rule": int.from_bytes(buf[start + PFLOG_RULENR : start + PFLOG_RULENR + 4], "big"),
        "subrule": None if subrule == NO_SUBRULE else subrule,
        "ruleset": _text(buf[start + PFLOG_RULESET : start + PFLOG_RULESET + IFNAMSIZ]) or None,
        "interface": _text(buf[start + PFLOG_IFNAME : start + PFLOG_IFNAME + IFNAMSIZ]),
        "direction": DIRECTIONS.get(buf[start + PFLOG_DIR]),
        "packets": 0,
    }


class FirewallLog:
    """Per TCP connection (either direction's 4-tuple), what pf logged of it: the first
    block if any packet was blocked (else the first logged packet), and how many were logged."""

    def __init__(self, limit: int = MAX_FIREWALL_CONNECTIONS) -> None:
        self.limit = limit
        self._entries: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: tuple, buf: bytes, start: int) -> None:
        entries = self._entries
        entry = entries.get(key)
        if entry is None:
            if len(entries) >= self.limit:
                entries.popitem(last=False)
                self.forgotten += 1
            entry = entries[key] = read_header(buf, start)
        else:
            entries.move_to_end(key)
            if entry["action"] != "block" and buf[start + PFLOG_ACTION] == ACTION_BLOCK:
                entry.update(read_header(buf, start), packets=entry["packets"])
        entry["packets"] += 1

    def take(self, orig: bytes, orig_port: int, resp: bytes, resp_port: int) -> dict[str, Any] | None:
        """What was logged of this connection (both directions together), forgotten once taken."""
        sent = self._entries.pop((orig, orig_port, resp, resp_port), None)
        answered = self._entries.pop((resp, resp_port, orig, orig_port), None)
        if sent is None or answered is None:
            return sent or answered
        first = sent if sent["action"] == "block" or answered["action"] != "block" else answered
        return dict(first, packets=sent["packets"] + answered["packets"])
