"""Who sent a RST (analyzer.diagnosis.resets): the server TTL references, table-driven.

``add_server_reference`` counts, per server, the TTL of each session's own server packets;
``classify_reset`` compares a RST's TTL with them when its session saw none of its own. The
counts are kept compactly (one int while a server shows one TTL), and must choose exactly
what a plain Counter per server chooses.
"""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from analyzer.diagnosis.resets import add_server_reference, classify_reset, merge_server_references, server_ttl_counts

SERVER = bytes([52, 96, 1, 1])
NS = 1_000_000_000


def _session(synack_ttl=None, resp_ttl=None, server=SERVER):
    return {"resp_addr": server, "synack_ttl": synack_ttl, "resp_ttl": resp_ttl}


def _reset_without_own_packets(rst_ttl: int) -> dict:
    """A session whose only server packet is a RST: the references decide."""
    return {"resp_addr": SERVER, "synack_ttl": None, "resp_ttl": None, "rsts": [(NS, False, rst_ttl, 1)], "syn_times": [0]}


CASES = [
    # (sessions' own server TTLs, in order; expected counts; RST TTL; expected rst_from, reference TTL)
    ([], {}, 60, "server", None),
    ([(118, None)], {118: 1}, 118, "server", 118),
    ([(118, None)] * 5, {118: 5}, 62, "middlebox", 118),
    ([(None, (110, 117))], {117: 1}, 117, "server", 117),  # no SYN-ACK: the highest TTL of its packets
    ([(118, None), (118, None), (52, None)], {118: 2, 52: 1}, 52, "middlebox", 118),  # most sessions win
    ([(52, None), (118, None), (118, None), (118, None)], {52: 1, 118: 3}, 118, "server", 118),
    ([(118, None), (53, None)], {118: 1, 53: 1}, None, None, None),  # a tie: as a Counter breaks it
    ([(None, None), (118, None)], {118: 1}, 118, "server", 118),  # a session with no TTL adds nothing
]


@pytest.mark.parametrize("ttls, counts, rst_ttl, rst_from, reference", CASES)
def test_references_count_and_decide_as_a_counter_does(ttls, counts, rst_ttl, rst_from, reference):
    refs: dict = {}
    plain: dict[bytes, Counter] = {}
    for synack, resp in ttls:
        add_server_reference(refs, _session(synack, resp))
        ttl = synack if synack is not None else (resp or (None, None))[1]
        if ttl is not None:
            plain.setdefault(SERVER, Counter())[ttl] += 1
    assert server_ttl_counts(refs, SERVER) == Counter(counts)
    rst = rst_ttl if rst_ttl is not None else 60
    got = classify_reset(_reset_without_own_packets(rst), refs, microsoft=True)
    want = classify_reset(_reset_without_own_packets(rst), plain, microsoft=True)
    assert got == want
    if rst_from is not None:
        assert got["rst_from"] == rst_from and got.get("server_ttl") == reference


def test_a_server_with_one_ttl_costs_an_int_not_a_counter():
    refs: dict = {}
    for i in range(1000):
        add_server_reference(refs, _session(118, server=i.to_bytes(4, "big")))
        add_server_reference(refs, _session(118, server=i.to_bytes(4, "big")))
    assert all(type(value) is int for value in refs.values())
    assert sum(sys.getsizeof(value) for value in refs.values()) < 40 * len(refs)
    assert server_ttl_counts(refs, (7).to_bytes(4, "big")) == Counter({118: 2})
    assert server_ttl_counts(refs, b"\x00\x00\x00\x00\x00") == Counter()


@pytest.mark.parametrize("ttls, counts, rst_ttl, rst_from, reference", CASES)
@pytest.mark.parametrize("cut", [0, 1, 2, 3])
def test_references_merged_from_another_process_equal_those_counted_in_one(ttls, counts, rst_ttl, rst_from, reference, cut):
    """A split run's shards count their own sessions, then merge: the same counts, in the same
    order of values (ties are broken by it), as one process counting them in that order."""
    other_server = b"\x34\x60\x00\x02"
    one: dict = {}
    mine: dict = {}
    theirs: dict = {}
    for n, (synack, resp) in enumerate(ttls + [(64, None)]):
        for refs in (one, mine if n < cut else theirs):
            add_server_reference(refs, _session(synack, resp, server=SERVER if n < len(ttls) else other_server))
    merge_server_references(mine, theirs)
    assert mine == one
    assert [list(server_ttl_counts(mine, server)) for server in one] == [list(server_ttl_counts(one, server)) for server in one]
    for server, value in mine.items():  # one TTL: still the packed int
        assert (type(value) is int) == (len(server_ttl_counts(mine, server)) == 1)
