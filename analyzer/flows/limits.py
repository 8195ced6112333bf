
from typing import Final
"""Named limits of the flow layer. Every buffer driven by packet contents has one."""

#: Out-of-order bytes buffered per direction before smtpflow gives up waiting for the hole
#: to be filled and declares a content gap.
MAX_OUT_OF_ORDER_BYTES: Final = 256 * 1024
#: Out-of-order segments buffered per direction (many tiny segments cost more than their bytes).
MAX_OUT_OF_ORDER_SEGMENTS: Final = 512
#: Out-of-order bytes buffered by all the connections of a table together: past it, the
#: connection asking to buffer more gives up its own holes (they become gaps), so thousands
#: of connections with holes cannot add up to gigabytes.
MAX_OUT_OF_ORDER_BYTES_TOTAL: Final = 64 * 1024 * 1024
#: A segment starting further than this beyond the expected sequence number is not buffered
#: (it is garbage, or from a different connection); it is counted and dropped.
MAX_SEQUENCE_JUMP: Final = 16 * 1024 * 1024

#: Notable events (SYN, RST, ICMP, TLS messages, SMTP commands and replies …) kept per session.
MAX_EVENTS_PER_SESSION: Final = 2000
#: Characters of an event's detail kept (a command or reply line may be 8 KB); the rest is
#: cut and marked with "...".
MAX_EVENT_DETAIL: Final = 1024
#: SYN transmissions remembered per attempt (timestamps for retry gaps).
MAX_SYN_RECORDS: Final = 64
#: RSTs and ICMP errors remembered per session.
MAX_RST_RECORDS: Final = 16
MAX_ICMP_RECORDS: Final = 16

#: Idle times (capture time, seconds) after which a connection is finalised and its state freed.
#: An attempt with no answer: Linux gives up after ~127 s (6 retries), Windows after ~21 s.
ATTEMPT_TIMEOUT_S: Final = 180
#: An open connection with no packets at all for this long is finalised as incomplete.
IDLE_TIMEOUT_S: Final = 900
#: A connection that was closed (FIN both ways, or RST) keeps absorbing late packets this long.
CLOSED_LINGER_S: Final = 60
#: How often (capture time, seconds) the table looks for expired connections.
SWEEP_INTERVAL_S: Final = 5

#: A SYN seen less than this long before the capture ended may still have been answered
#: after the capture stopped: such attempts are "incomplete", not "syn_unanswered".
UNANSWERED_GRACE_S: Final = 1.0

#: Connections followed at once. Past it (a SYN flood, a port scan) the least recently active
#: one is finalised early, its ``end_reason`` "table_full", as Suricata's flow memcap does:
#: the table's memory stays bounded (an attempt is about 4 KB: 200 MB for a flood of them).
MAX_ACTIVE_CONNECTIONS = 50_000

#: What all the connections followed at once may hold together, by the estimate of
#: ``TcpConnection.footprint`` (a connection's objects, its events and replies, the bytes its
#: parsers and reassemblers buffer). Every connection is bounded on its own, but a few
#: thousand kept busy (a partial TLS handshake message of 250 KB, 2,000 events) would add up
#: to gigabytes: past this budget the least recently active connections are finalised early,
#: as at MAX_ACTIVE_CONNECTIONS, until a quarter of it is free again. A mid-dialogue
#: connection is about 9 KB: 128 MB holds some 14,000 of them.
MAX_TABLE_BYTES = 128 * 1024 * 1024

#: The same packet captured twice — a capture on ``any`` of a host that forwards it (once in,
#: once out, the TTL one lower), or two captures of one link read together — arrives at most
#: this long after the first copy (queueing on the way out included). Within it, a segment
#: with the same sequence and acknowledgment numbers and the same ``ident`` (IPv4 id and TCP
#: checksum field, which covers the rest of the segment) as its direction's previous one is
#: that copy: counted (weird ``duplicate_frame``), not followed again. A real retransmission
#: differs (new IPv4 id, new timestamps) and comes later: Linux waits at least 200 ms.
DUPLICATE_FRAME_WINDOW_S: Final = 0.05
DUPLICATE_FRAME_WINDOW_NS: Final = int(DUPLICATE_FRAME_WINDOW_S * 1_000_000_000)

#: Hosts remembered as "sends correct checksums" (the checksum-offload heuristic).
MAX_CHECKSUM_HOSTS: Final = 100_000

#: Letters kept in a connection's ``history``. Zeek repeats S/H/F/R for every new sequence
#: number, so a flood of RSTs would otherwise grow it by one letter per packet.
MAX_HISTORY_LENGTH: Final = 256
