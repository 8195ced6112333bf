"""Who sent the RST: the server itself, or something on the path pretending to be it?

A RST carries the server's address, but the IP TTL (hop limit) it arrives with tells how far
away its sender really is. Stacks start at 64, 128 or 255; each router takes one off. The
server's own packets (its SYN-ACK, its data) show its distance. A RST whose initial TTL or
distance differs was made by another device — a firewall, an IPS, an ISP's port-25 filter.
Where the session has no packet of the server's own, other sessions to the same server in
the capture are the reference; failing that, Exchange Online servers are known to be many
hops away, so a RST from a device one or two hops off cannot be theirs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Final

from ..decode.ip import hop_distance, likely_initial_ttl

#: Hop distances differing by at least this much mean two different senders.
HOP_MISMATCH: Final = 2
#: A RST from this few hops away cannot come from Exchange Online (always far away on the Internet).
NEAR_HOPS: Final = 2


#: Each server's TTLs: how many of its sessions saw each value. Nearly every server shows one
#: TTL, and a capture may hold a million servers, so that case is one int, ``count << 8 | ttl``
#: (some 30 bytes, not a Counter's 300); a second value makes it a Counter (at most 256 keys).
ServerTtls = dict[bytes, "int | Counter"]


def add_server_reference(refs: ServerTtls, facts: dict[str, Any]) -> None:
    """Count the TTL of packets this session's server sent itself (not RSTs) in ``refs``."""
    ttl = _own_ttl(facts)
    if ttl is None:
        return
    server = facts["resp_addr"]
    counts = refs.get(server)
    if counts is None:
        refs[server] = 1 << 8 | ttl
    elif isinstance(counts, int):
        if counts & 0xFF == ttl:
            refs[server] = counts + (1 << 8)
        else:
            refs[server] = Counter({counts & 0xFF: counts >> 8, ttl: 1})
    else:
        counts[ttl] += 1


def merge_server_references(refs: ServerTtls, other: ServerTtls) -> None:
    """Add the counts of ``other`` (another process's sessions) to ``refs``: the same counts,
    in the same order of values, as adding those sessions one by one after ``refs``' own."""
    for server in other:
        merged = server_ttl_counts(refs, server)  # refs' own Counter, or a new one
        merged.update(server_ttl_counts(other, server))
        refs[server] = merged if len(merged) > 1 else _packed(merged)


def _packed(counts: Counter) -> int:
    """One TTL's count as ``add_server_reference`` keeps it."""
    ttl, count = next(iter(counts.items()))
    return count << 8 | ttl


def _own_ttl(facts: dict[str, Any]) -> int | None:
    """The TTL of the server's own packets in this session: its SYN-ACK's, else the highest seen."""
    ttl = facts.get("synack_ttl")
    if ttl is None:
        ttl = (facts.get("resp_ttl") or (None, None))[1]
    return ttl


def server_ttl_counts(refs: ServerTtls, server: bytes) -> Counter:
    """How many sessions to ``server`` saw each TTL (empty when none)."""
    counts = refs.get(server)
    if counts is None:
        return Counter()
    if isinstance(counts, int):
        return Counter({counts & 0xFF: counts >> 8})
    return counts


def _after_clean_close(facts: dict[str, Any], ts: int) -> bool:
    """A RST after both sides sent FIN ends nothing: the connection was already closed."""
    if not (facts.get("orig_fin") and facts.get("resp_fin")):
        return False
    orig_close, resp_close = facts.get("orig_close_ts"), facts.get("resp_close_ts")
    return orig_close is not None and resp_close is not None and ts > max(orig_close, resp_close)


def classify_reset(facts: dict[str, Any], refs: ServerTtls, microsoft: bool) -> dict[str, Any] | None:
    """Describe the first RST of a session: who sent it, with the TTL evidence.

    ``microsoft``: the server address is in Microsoft's published ranges (so it is far away).
    Returns None when the session had no RST, else a dict with ``rst_from``
    (server/client/middlebox), ``ts``, ``ttl``, ``hops`` and a readable ``evidence`` line.
    """
    rsts = [r for r in facts.get("rsts") or [] if not _after_clean_close(facts, r[0])]
    if not rsts:
        return None
    server_rsts = [r for r in rsts if not r[1]]
    if not server_rsts:
        ts, _from_orig, ttl, _seq = rsts[0]
        return {"rst_from": "client", "ts": ts, "ttl": ttl, "hops": hop_distance(ttl), "evidence": f"the client sent the RST (TTL {ttl})"}
    ts, _from_orig, ttl, _seq = server_rsts[0]
    rst_initial = likely_initial_ttl(ttl)
    rst_hops = rst_initial - ttl
    reference = _own_ttl(facts)
    reference_source = "this session's packets from the server"
    if reference is None:
        others = server_ttl_counts(refs, facts["resp_addr"])
        if others:
            # The most common TTL among other sessions to this server (ties: the first in a
            # set's order of the values, in the order they were first seen).
            reference = max(set(list(others)), key=others.__getitem__)
            reference_source = f"{sum(others.values())} other session(s) to this server"
    result = {"ts": ts, "ttl": ttl, "hops": rst_hops, "initial_ttl": rst_initial}
    if reference is not None:
        ref_initial = likely_initial_ttl(reference)
        ref_hops = ref_initial - reference
        result["server_ttl"] = reference
        result["server_hops"] = ref_hops
        if rst_initial != ref_initial or abs(rst_hops - ref_hops) >= HOP_MISMATCH:
            result["rst_from"] = "middlebox"
            result["evidence"] = (
                f"the RST arrived with TTL {ttl} ({rst_hops} hop(s) away, initial TTL {rst_initial}) "
                f"but the server's own packets arrive with TTL {reference} ({ref_hops} hop(s) away, initial TTL {ref_initial}; "
                f"from {reference_source}): a different device sent the RST"
            )
        else:
            result["rst_from"] = "server"
            result["evidence"] = (
                f"the RST arrived with TTL {ttl}, like the server's own packets (TTL {reference}, from {reference_source})"
            )
        return result
    if microsoft and rst_hops <= NEAR_HOPS:
        result["rst_from"] = "middlebox"
        result["evidence"] = (
            f"the RST arrived with TTL {ttl}, i.e. from {rst_hops} hop(s) away (initial TTL {rst_initial}); "
            f"Exchange Online servers are many hops away on the Internet, so a nearby device sent it "
            f"(no packet of the server's own was seen to compare with)"
        )
        return result
    result["rst_from"] = "server"
    result["evidence"] = (
        f"the RST arrived with TTL {ttl} ({rst_hops} hop(s) away); no packet of the server's own was seen to compare "
        f"with, so it is taken to be the server's"
    )
    result["unverified"] = True
    return result
