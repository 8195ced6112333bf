"""TCP header layout (RFC 9293) and option kinds (RFC 9293, RFC 7323, RFC 2018).

Layout: source port (2), destination port (2), sequence (4), acknowledgment (4),
data offset/reserved/flags (2), window (2), checksum (2), urgent pointer (2), options.
"""

from __future__ import annotations

from typing import Final

TCP_MIN_HEADER_LEN: Final = 20

TH_FIN: Final = 0x01
TH_SYN: Final = 0x02
TH_RST: Final = 0x04
TH_PUSH: Final = 0x08
TH_ACK: Final = 0x10
TH_URG: Final = 0x20
TH_ECE: Final = 0x40
TH_CWR: Final = 0x80

TCPOPT_EOL: Final = 0
TCPOPT_NOP: Final = 1
TCPOPT_MAXSEG: Final = 2
TCPOPT_WINDOW: Final = 3
TCPOPT_SACK_PERMITTED: Final = 4
TCPOPT_SACK: Final = 5
TCPOPT_TIMESTAMP: Final = 8


def flags_text(flags: int) -> str:
    """tcpdump-style flag string: S, F, R, P, . (ACK), U, E, W."""
    out = []
    for bit, letter in ((TH_SYN, "S"), (TH_FIN, "F"), (TH_RST, "R"), (TH_PUSH, "P"), (TH_URG, "U"), (TH_ECE, "E"), (TH_CWR, "W")):
        if flags & bit:
            out.append(letter)
    if flags & TH_ACK:
        out.append(".")
    return "".join(out) or "none"


def parse_options(raw: bytes) -> dict[str, object]:
    """Options of a SYN or SYN-ACK: mss, wscale, sack_permitted, timestamp (tsval, tsecr)."""
    opts: dict[str, object] = {}
    i = 0
    n = len(raw)
    while i < n:
        kind = raw[i]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            break
        length = raw[i + 1]
        if length < 2 or i + length > n:
            break
        if kind == TCPOPT_MAXSEG and length == 4:
            opts["mss"] = (raw[i + 2] << 8) | raw[i + 3]
        elif kind == TCPOPT_WINDOW and length == 3:
            opts["wscale"] = min(raw[i + 2], 14)  # RFC 7323 caps the shift at 14
        elif kind == TCPOPT_SACK_PERMITTED and length == 2:
            opts["sack_permitted"] = True
        elif kind == TCPOPT_TIMESTAMP and length == 10:
            opts["timestamp"] = (int.from_bytes(raw[i + 2 : i + 6], "big"), int.from_bytes(raw[i + 6 : i + 10], "big"))
        elif kind == TCPOPT_SACK and length >= 10:
            opts["sack"] = [
                (int.from_bytes(raw[j : j + 4], "big"), int.from_bytes(raw[j + 4 : j + 8], "big"))
                for j in range(i + 2, i + length - 7, 8)
            ]
        i += length
    return opts
