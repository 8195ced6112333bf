"""The packet path's shortcuts change speed, never results.

``TcpConnection._in_order`` (an in-order segment of an established connection) and
``TlsSession._counted_record`` (an application_data record once the handshake is over)
must leave exactly the state the full path would. Every capture, and every capture
shuffled, duplicated, thinned and cut, gives the same records and events either way.
"""

from __future__ import annotations

import os
import random
import struct

import pytest

from analyzer.flows import tcp
from analyzer.protocols.tls import parser as tls_parser
from conftest import ROOT, all_captures, analyse_twice

from crafting import write_pcap


#: The shortcuts, turned off to compare.
SHORTCUTS = [(tcp, "SHORTCUT"), (tls_parser, "SHORTCUT")]


def keylog_for(path):
    keys = os.path.splitext(path)[0] + ".keys"
    return [keys] if os.path.exists(keys) else None


@pytest.mark.parametrize("path", all_captures(), ids=lambda p: os.path.relpath(p, os.path.dirname(ROOT)))
def test_same_results_on_real_captures(path):
    fast, full = analyse_twice(path, SHORTCUTS, ports="all", keylog=keylog_for(path))
    assert fast == full


def read_pcap(path):
    """(linktype, [(ts ns, frame, wire length)]) of a classic little- or big-endian pcap."""
    data = open(path, "rb").read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack_from(endian + "I", data, 20)[0]
    out, pos = [], 24
    while pos + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack_from(endian + "IIII", data, pos)
        frame = data[pos + 16 : pos + 16 + caplen]
        out.append((sec * 10**9 + frac * (1 if nano else 1000), frame, wirelen))
        pos += 16 + caplen
    return linktype, out


def perturbed(records, rng):
    """Swap neighbours, repeat, drop and cut packets: reordering, retransmissions, gaps and
    snaplen cuts in the same capture (timestamps kept in order)."""
    out = []
    for ts, frame, wirelen in records:
        roll = rng.random()
        if roll < 0.06:
            continue  # lost
        if roll < 0.12:
            out.append([ts, frame])  # sent twice
        elif roll < 0.16:
            frame = frame[: max(40, len(frame) - rng.randrange(1, 200))]  # cut
        out.append([ts, frame])
        if out[-1] is not None and len(out) > 2 and rng.random() < 0.08:
            out[-1][1], out[-2][1] = out[-2][1], out[-1][1]  # out of order
    return [(ts, frame) for ts, frame in out]


TLS_AND_PLAIN = ["starttls-auth-ok.pcap", "ipv6-starttls-ok.pcap", "implicit-tls-465-ok.pcap", "relay-denied-550.pcap",
                 "pipelining-bdat.pcap", "gateway-mixed.pcap"]


@pytest.mark.parametrize("name", TLS_AND_PLAIN)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_results_on_damaged_captures(tmp_path, name, seed):
    path = os.path.join(ROOT, "captures", name)
    linktype, records = read_pcap(path)
    damaged = perturbed(records, random.Random(seed))
    out = write_pcap(tmp_path / name, damaged, linktype=linktype)
    fast, full = analyse_twice(out, SHORTCUTS, ports="all", keylog=keylog_for(path))
    assert fast == full
    intact, _ = analyse_twice(path, SHORTCUTS, ports="all", keylog=keylog_for(path))
    assert fast[:3] != intact[:3]  # the damage changed what was seen
