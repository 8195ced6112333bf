"""DNS transactions: queries paired with their responses, failures, and the names behind addresses.

Theory of operation
-------------------
Every query (QR=0, OPCODE QUERY) waits in a pending table keyed by its flow — transport,
client address and port, server address and port — and message id. A response is paired
with the pending query of the same key whose question names the same name (compared
case-insensitively: resolvers randomise its case, the "0x20" defence). A query repeated with the
same key and question before the answer is a retransmission of the same transaction.

A transaction ends as ``answered`` (any RCODE), ``rejected_icmp`` (an ICMP unreachable quoting
the query's flow), ``unanswered`` (no response within ``QUERY_TIMEOUT_S`` of its last
transmission, or its TCP connection closed first) or ``capture_end`` (still pending when the
capture stopped, too recently sent to call unanswered). Responses that match nothing are
still recorded (``unsolicited``), except exact duplicates of a response just paired.

Mail troubleshooting needs two things from DNS: the failures that explain why no connection
was made, and which name a server address came from. So answers feed an address → name map
(``names_for``) with the CNAME chain that led there, and interesting, MX and failed
transactions are kept as rows. Every table has a named bound.

With an ``interesting`` filter, a successful answer whose question names something else (and
is not an MX query) only closes its query: its records are not parsed and do not feed the
address map. On a gateway nearly all DNS is web lookups, and parsing their answers would cost
more than everything else together. Failures and unanswered queries are kept for any name.
"""

from __future__ import annotations

import ipaddress
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Final

from ...decode.icmp import icmp_name, is_unreachable
from ...decode.ip import IPPROTO_UDP, address_text
from ...decode.select import quick_question
from ...flows.limits import DUPLICATE_FRAME_WINDOW_NS
from .message import (
    FLAG_QR,
    MAX_MESSAGE_LEN,
    OPCODE_QUERY,
    QTYPE_A,
    QTYPE_AAAA,
    QTYPE_CNAME,
    QTYPE_MX,
    QTYPE_NS,
    QTYPE_PTR,
    QTYPE_SOA,
    RCODE_NOERROR,
    DnsMessage,
    DnsParseError,
    MxRdata,
    ResourceRecord,
    SoaRdata,
    TcpFramer,
    parse_header,
    parse_message,
    qtype_name,
    rcode_name,
)

NS: Final = 1_000_000_000

# -- limits ----------------------------------------------------------------------------
#: A query with no response this long after its last transmission is unanswered. Stub
#: resolvers retry after 1-5 s and give up within ~10-30 s (glibc: 5 s × 2 attempts per server).
QUERY_TIMEOUT_S: Final = 10.0
#: At the end of a capture, a query sent less than this long before is "capture_end" (its
#: answer may simply not have been captured), older ones "unanswered".
UNANSWERED_GRACE_S: Final = 2.0
#: Queries waiting for a response; beyond it the oldest is forgotten (and counted).
MAX_PENDING_QUERIES = 10_000
#: Distinct questions waiting under one flow and message id (normally one).
MAX_QUESTIONS_PER_ID: Final = 16
#: Recently answered queries remembered to recognise duplicate responses.
MAX_RECENT_ANSWERS: Final = 10_000
#: Transactions kept as rows; the overflow is counted.
MAX_TRANSACTIONS = 50_000
#: Of those, failures of names that have nothing to do with mail (kept as context: a broken
#: resolver shows in them). An application retrying a misspelt name would otherwise fill
#: the table, some 1.5 KB a row, before the mail lookups that matter.
MAX_OTHER_FAILURES = 10_000
#: Answer records, addresses and MX entries kept in one transaction's row (a response may
#: carry hundreds); the rest are counted in the stats' "answers_cut" (of kept rows).
MAX_ANSWERS_PER_TRANSACTION: Final = 32
#: (address, name) pairs in the address → name map, least recently updated evicted first.
MAX_ADDRESS_NAMES = 50_000
#: Answer times remembered per (address, name) pair: the first, and the newest.
MAX_ANSWERS_PER_NAME: Final = 4
#: CNAMEs followed from a query name (loops end the chain too).
MAX_CNAME_CHAIN: Final = 16
#: Bytes that send a response about an uninteresting name through the full parser anyway: its
#: CNAME chain may lead to Microsoft (a local alias of smtp.office365.com).
CHAIN_MARKERS: Final = (b"\x09office365", b"\x07outlook", b"\x09microsoft")
#: Question names remembered as interesting or not (names repeat a lot on a gateway).
MAX_NAME_VERDICTS: Final = 100_000
#: Per direction of a DNS-over-TCP connection, at most one incomplete message of up to this
#: size is buffered: the protocol's own maximum, so no legitimate message is lost.
MAX_TCP_MESSAGE_BYTES: Final = MAX_MESSAGE_LEN

QUERY_TIMEOUT_NS: Final = int(QUERY_TIMEOUT_S * NS)
UNANSWERED_GRACE_NS: Final = int(UNANSWERED_GRACE_S * NS)

STATUS_ANSWERED: Final = "answered"
STATUS_UNANSWERED: Final = "unanswered"
STATUS_REJECTED_ICMP: Final = "rejected_icmp"
STATUS_CAPTURE_END: Final = "capture_end"

#: Zones of Microsoft 365 mail endpoints and the CNAME targets they resolve through
#: (../shared/reference/exchange-online.md §6): a ready-made ``interesting`` filter.
MICROSOFT_MAIL_SUFFIXES: Final = (
    "office365.com",
    "outlook.com",
    "mx.microsoft",
    "ms-acdc.office.com",
    "cloud.microsoft",
)

_ADDRESS_TYPES: Final = (QTYPE_A, QTYPE_AAAA)
_NAME_DATA_TYPES: Final = frozenset({QTYPE_CNAME, QTYPE_NS, QTYPE_PTR, QTYPE_MX, QTYPE_SOA})

Flow = tuple  # (transport, client address, client port, server address, server port)


def is_microsoft_mail_name(name: str) -> bool:
    """True for names under the Microsoft 365 mail zones (``name`` lower-case, no trailing dot)."""
    return any(name == suffix or name.endswith("." + suffix) for suffix in MICROSOFT_MAIL_SUFFIXES)


def is_failure(tx: dict) -> bool:
    """A transaction that explains a missing connection: error RCODE, no answer, or ICMP-rejected."""
    return _failed(tx["status"], tx["rcode"] != rcode_name(RCODE_NOERROR))


def _failed(status: str, error_rcode: bool) -> bool:
    """``is_failure`` of a transaction with this status, answered (if it was) with an error RCODE or not."""
    if status == STATUS_ANSWERED:
        return error_rcode
    return status in (STATUS_UNANSWERED, STATUS_REJECTED_ICMP)


class _Query:
    __slots__ = ("flow", "id", "qname", "qtype", "ts", "last_ts", "retransmissions", "solicited")

    def __init__(self, flow: Flow, msg_id: int, qname: str | None, qtype: int | None, ts: int, solicited: bool = True) -> None:
        self.flow = flow
        self.id = msg_id
        self.qname = qname
        self.qtype = qtype
        self.ts = ts
        self.last_ts = ts
        self.retransmissions = 0
        self.solicited = solicited


def _chain(qname: str, answers: tuple[ResourceRecord, ...]) -> list[str]:
    """Names from ``qname`` through the CNAMEs in ``answers`` to the final owner name."""
    targets: dict[str, str] = {}
    for rr in answers:
        if rr.rtype == QTYPE_CNAME and isinstance(rr.data, str):
            targets.setdefault(rr.name.lower(), rr.data.lower())
    chain = [qname]
    while len(chain) <= MAX_CNAME_CHAIN and chain[-1] in targets and targets[chain[-1]] not in chain:
        chain.append(targets[chain[-1]])
    return chain


def _record_dict(rr: ResourceRecord) -> dict:
    data = rr.data_text
    return {
        "name": rr.name.lower(),
        "type": rr.type_name,
        "ttl": rr.ttl,
        "data": data.lower() if rr.rtype in _NAME_DATA_TYPES else data,
    }


def _soa_dict(msg: DnsMessage) -> dict | None:
    for rr in msg.authority:
        if isinstance(rr.data, SoaRdata):
            return {
                "zone": rr.name.lower(),
                "mname": rr.data.mname.lower(),
                "serial": rr.data.serial,
                # How long resolvers cache the negative answer (RFC 2308 §5).
                "negative_ttl": min(rr.ttl, rr.data.minimum),
            }
    return None


class DnsTracker:
    """Pairs DNS queries and responses from UDP datagrams, TCP streams and ICMP errors.

    ``interesting(qname)`` selects the transactions kept as rows (default: all); MX queries
    and failures are kept regardless, and a transaction is also interesting when any name
    of its CNAME chain is (a local alias of smtp.office365.com, say). ``keep_rows=False``: no
    rows at all, only what the answers say of addresses (``names_for``): a split run's other
    processes learn the names their sessions' records need, shard 0 keeps the rows.
    """

    def __init__(self, interesting: Callable[[str], bool] | None = None, rows: Any = None, keep_rows: bool = True) -> None:
        self._interesting = interesting
        self._keep_rows = keep_rows
        self._verdicts: dict[str, bool] = {}  # question name -> interesting?
        # Tables that lose their oldest entries are OrderedDicts: a dict keeps the holes its
        # deleted first entries leave until it is resized, and finding its first live entry
        # walks over them all (60,000 lookups of mail names took 6 s in that walk).
        self._pending: OrderedDict[tuple[Flow, int], list[_Query]] = OrderedDict()  # oldest first
        self._pending_count = 0
        self._flows: dict[Flow, dict[int, None]] = {}  # flow -> ids pending on it
        self._recent: OrderedDict[tuple, int] = OrderedDict()  # (flow, id, qname, qtype) -> response ts
        #: The kept transactions' rows, in the order they ended: a list, or what the caller
        #: gave — anything with append, len and iteration; the engine's SessionStore spills
        #: to disk — and each one's query time, to sort them by.
        self._transactions: Any = [] if rows is None else rows
        self._row_ts = array("q")
        self._other_failures = 0  # kept rows that are failures of names of no interest
        #: (address, name) -> its answers (ts, chain, mx_of, arrival number), oldest first.
        self._pairs: OrderedDict[tuple[str, str], list[tuple[int, tuple[str, ...], str | None, int]]] = OrderedDict()
        self._arrivals = 0
        self._by_address: dict[str, dict[str, None]] = {}
        #: Per address, its answers sorted for names_for (built when first asked, then kept up
        #: to date as answers come and go): a relay writing to thousands of tenants sees their
        #: MX names all resolve to the same few Exchange Online addresses, and every session
        #: to one of them went over all those names.
        self._index: dict[str, tuple[list[int], list[tuple]]] = {}
        self._stats = dict.fromkeys(
            (
                "queries", "retransmissions", "responses",
                STATUS_ANSWERED, STATUS_UNANSWERED, STATUS_REJECTED_ICMP, STATUS_CAPTURE_END,
                "unsolicited_responses", "duplicate_responses", "mismatched_responses",
                "malformed", "other_opcodes", "no_question", "pending_evicted",
                "transactions_kept", "transactions_filtered", "transactions_dropped", "answers_cut",
                "address_names_evicted", "icmp_errors", "icmp_matched",
                "tcp_messages", "tcp_gaps", "tcp_incomplete", "tcp_oversized", "ignored_messages", "duplicate_frames",
            ),
            0,
        )

    # -- input ------------------------------------------------------------------------
    def udp(self, dgram) -> None:
        payload = dgram.payload
        if len(payload) > 2 and payload[2] & (FLAG_QR >> 8):  # a response travels server -> client
            flow = ("udp", dgram.dst, dgram.dport, dgram.src, dgram.sport)
        else:
            flow = ("udp", dgram.src, dgram.sport, dgram.dst, dgram.dport)
        self._message(flow, payload, dgram.ts)

    def tcp_analyzer(self, conn) -> DnsTcpStream:
        """A stream analyzer for one TCP connection to port 53 (for the flow layer)."""
        return DnsTcpStream(self, conn)

    def icmp_unreachable(self, err) -> None:
        """An ICMP error quoting a UDP query: every query pending on that flow was rejected."""
        if getattr(err, "q_proto", IPPROTO_UDP) != IPPROTO_UDP:
            return
        self._stats["icmp_errors"] += 1
        version = 4 if len(err.src) == 4 else 6
        if not is_unreachable(version, err.type):
            return
        flow = ("udp", err.q_src, err.q_sport, err.q_dst, err.q_dport)
        ids = self._flows.get(flow)
        if not ids:
            return
        self._stats["icmp_matched"] += 1
        icmp = {
            "ts": err.ts,
            "type": err.type,
            "code": err.code,
            "reporter": address_text(err.src),
            "description": icmp_name(version, err.type, err.code),
        }
        for msg_id in list(ids):
            for query in self._drop_key((flow, msg_id)):
                self._finalize(query, STATUS_REJECTED_ICMP, icmp=icmp)

    def expire(self, now_ns: int) -> None:
        """Finalise queries unanswered for QUERY_TIMEOUT_S; call as capture time advances."""
        expired: list[tuple[Any, _Query]] = []
        for key, queries in self._pending.items():
            if queries[0].ts + QUERY_TIMEOUT_NS > now_ns:
                break  # keys are in order of first transmission: the rest are younger
            expired.extend((key, query) for query in queries if query.last_ts + QUERY_TIMEOUT_NS <= now_ns)
        for key, query in expired:
            self._take(key, query)
            self._finalize(query, STATUS_UNANSWERED)
        recent = self._recent
        while recent:
            oldest = next(iter(recent))
            if recent[oldest] + QUERY_TIMEOUT_NS > now_ns:
                break
            recent.popitem(last=False)

    def finish(self, end_ns: int) -> None:
        """End of capture: finalise everything still pending."""
        for key in list(self._pending):
            for query in self._drop_key(key):
                late = end_ns - query.last_ts > UNANSWERED_GRACE_NS
                self._finalize(query, STATUS_UNANSWERED if late else STATUS_CAPTURE_END)
        self._recent.clear()

    # -- output -----------------------------------------------------------------------
    def transactions(self) -> Sequence[dict]:
        """The kept rows by query time. A ``rows`` store given to the tracker is put in that
        order and returned; otherwise a new list."""
        rows, times = self._transactions, self._row_ts
        order = sorted(range(len(rows)), key=times.__getitem__)
        self._row_ts = array("q", (times[i] for i in order))
        reorder = getattr(rows, "reorder", None)
        if reorder is None:
            self._transactions = [rows[i] for i in order]
            return list(self._transactions)
        reorder(order)
        return rows

    def names_for(self, address: bytes | str, before_ns: int | None = None) -> list[dict]:
        """What DNS said resolves to ``address`` (at or before ``before_ns``), most recent first.

        One entry per name: ``name`` (the name queried, or the MX exchange for MX glue),
        ``chain`` (query name, CNAMEs, final name), ``ts`` (answer time), ``mx_of`` (the
        domain whose MX lookup supplied the address, else None). Names answered at the same
        time come in the order the address first learnt them.
        """
        return list(self.iter_names(address, before_ns))

    def iter_names(self, address: bytes | str, before_ns: int | None = None) -> Iterator[dict]:
        """``names_for``, one entry at a time: taking the first few costs as much whatever the
        number of names the address has."""
        text = address_text(address) if isinstance(address, bytes) else str(ipaddress.ip_address(address))
        index = self._index.get(text)
        if index is None:
            if text not in self._by_address:
                return  # no index is kept for an address DNS never named (a scan has thousands)
            index = self._index[text] = self._build_index(text)
        keys, entries = index
        seen: set[str] = set()
        for position in range(0 if before_ns is None else bisect_left(keys, -before_ns), len(entries)):
            neg_ts, _rank, _arrival, name, chain, mx_of = entries[position]
            if name not in seen:
                seen.add(name)
                yield {"name": name, "chain": list(chain), "ts": -neg_ts, "mx_of": mx_of}

    def _build_index(self, text: str) -> tuple[list[int], list[tuple]]:
        """The address's answers, latest first (ties: the name the address learnt first, then
        its latest answer), with their negated times to bisect."""
        entries: list[tuple] = []
        for name in self._by_address.get(text, ()):
            answers = self._pairs[(text, name)]
            entries += (self._index_entry(name, answers[0], answer) for answer in answers)
        entries.sort()
        return [entry[0] for entry in entries], entries

    @staticmethod
    def _index_entry(name: str, first: tuple, answer: tuple) -> tuple:
        """``answer`` of ``name`` in the index; ``first``, the name's first answer (never dropped),
        ranks the name by when the address learnt it."""
        ts, chain, mx_of, arrival = answer
        return (-ts, first[3], -arrival, name, chain, mx_of)  # the first three are unique: sorting never looks further

    def _index_add(self, address: str, entry: tuple) -> None:
        index = self._index.get(address)
        if index is not None:
            position = bisect_left(index[1], entry)
            index[0].insert(position, entry[0])
            index[1].insert(position, entry)

    def _index_remove(self, address: str, entry: tuple) -> None:
        index = self._index.get(address)
        if index is not None:
            position = bisect_left(index[1], entry)
            del index[0][position], index[1][position]

    def stats(self) -> dict:
        return {
            **self._stats,
            "pending": self._pending_count,
            "transactions": len(self._transactions),
            "address_names": len(self._pairs),
        }

    # -- messages ---------------------------------------------------------------------
    def _message(self, flow: Flow, payload: bytes, ts: int) -> None:
        # The hot path reads the question alone. A query needs nothing more; a successful
        # answer about a name of no interest (most DNS on a gateway: web lookups) only closes
        # its pending query — its records are never parsed.
        question = quick_question(payload)
        if question is not None and (payload[2] >> 3) & 0x0F == OPCODE_QUERY:
            msg_id = (payload[0] << 8) | payload[1]
            if not payload[2] & 0x80:
                self._add_query(flow, msg_id, question[0], question[1], ts)
                return
            if (
                self._interesting is not None
                and payload[3] & 0x0F == RCODE_NOERROR
                and question[1] != QTYPE_MX
                and not self._name_wanted(question[0])
                and not any(marker in payload for marker in CHAIN_MARKERS)
            ):
                self._quiet_answer(flow, msg_id, question[0], question[1], ts)
                return
        try:
            msg = parse_message(payload)
        except DnsParseError:
            self._stats["malformed"] += 1
            self._salvage(flow, payload, ts)
            return
        if msg.header.opcode != OPCODE_QUERY:
            self._stats["other_opcodes"] += 1
        elif msg.header.qr:
            self._response(flow, msg, ts)
        else:
            self._query(flow, msg, ts)

    def _salvage(self, flow: Flow, payload: bytes, ts: int) -> None:
        """A damaged response still answers its query: pair it by id and keep its RCODE."""
        try:
            header = parse_header(payload)
        except DnsParseError:
            return
        key = (flow, header.id)
        queries = self._pending.get(key)
        if header.qr and header.opcode == OPCODE_QUERY and queries:
            query = queries[0]
            self._take(key, query)
            self._stats["responses"] += 1
            self._finalize(query, STATUS_ANSWERED, DnsMessage(header, (), (), (), (), header.rcode, None, 0), ts)

    def _query(self, flow: Flow, msg: DnsMessage, ts: int) -> None:
        question = msg.question
        if question is None:
            self._stats["no_question"] += 1
            return
        self._add_query(flow, msg.id, question.name.lower(), question.qtype, ts)

    def _add_query(self, flow: Flow, msg_id: int, qname: str, qtype: int, ts: int) -> None:
        key = (flow, msg_id)
        queries = self._pending.get(key, ())
        for query in queries:
            if query.qname == qname and query.qtype == qtype:
                if ts - query.last_ts <= DUPLICATE_FRAME_WINDOW_NS:
                    # The same query captured twice (two interfaces of a host that forwards
                    # it): a stub resolver retransmits a second or more later. Identical
                    # answers that close together are not always copies (a resolver may
                    # answer a query and its retransmissions at once): duplicate_responses.
                    self._stats["duplicate_frames"] += 1
                    return
                query.retransmissions += 1
                query.last_ts = ts
                self._stats["retransmissions"] += 1
                return
        self._stats["queries"] += 1
        if len(queries) >= MAX_QUESTIONS_PER_ID:
            self._stats["pending_evicted"] += 1
            return
        if self._pending_count >= MAX_PENDING_QUERIES:
            for oldest in self._drop_key(next(iter(self._pending))):
                if ts - oldest.last_ts >= UNANSWERED_GRACE_NS:
                    # Let go for room after waiting as long as a capture's end allows: a resolver
                    # outage at a thousand lookups a second fills the table before they time out.
                    self._finalize(oldest, STATUS_UNANSWERED)
                else:
                    self._stats["pending_evicted"] += 1
        self._pending.setdefault(key, []).append(_Query(flow, msg_id, qname, qtype, ts))
        self._flows.setdefault(flow, {})[msg_id] = None
        self._pending_count += 1

    def _quiet_answer(self, flow: Flow, msg_id: int, qname: str, qtype: int, ts: int) -> None:
        """A successful answer about a name of no interest: close its query, keep nothing."""
        self._stats["responses"] += 1
        self._stats["ignored_messages"] += 1
        key = (flow, msg_id)
        for query in self._pending.get(key, ()):
            if query.qname == qname:
                self._take(key, query)
                self._stats[STATUS_ANSWERED] += 1
                self._stats["transactions_filtered"] += 1
                return
        self._stats["unsolicited_responses"] += 1

    def _response(self, flow: Flow, msg: DnsMessage, ts: int) -> None:
        self._stats["responses"] += 1
        question = msg.question
        qname = question.name.lower() if question else None
        qtype = question.qtype if question else None
        key = (flow, msg.id)
        match = None
        queries = self._pending.get(key)
        if queries:
            if question is None:  # FORMERR/REFUSED responses may omit the question
                match = queries[0]
            else:
                same_name = [query for query in queries if query.qname == qname]
                match = next((query for query in same_name if query.qtype == qtype), None) or (
                    same_name[0] if same_name else None
                )
                if match is None:
                    self._stats["mismatched_responses"] += 1
        if match is not None:
            self._take(key, match)
            recent = self._recent
            if len(recent) >= MAX_RECENT_ANSWERS:
                recent.popitem(last=False)
            recent[(flow, msg.id, match.qname, match.qtype)] = ts
            self._finalize(match, STATUS_ANSWERED, msg, ts)
        elif question is not None and (flow, msg.id, qname, qtype) in self._recent:
            self._stats["duplicate_responses"] += 1  # the answer to a retransmission
        else:
            self._stats["unsolicited_responses"] += 1
            self._finalize(_Query(flow, msg.id, qname, qtype, ts, solicited=False), STATUS_ANSWERED, msg, ts)

    # -- pending table ----------------------------------------------------------------
    def _take(self, key: tuple[Flow, int], query: _Query) -> None:
        queries = self._pending[key]
        queries.remove(query)
        self._pending_count -= 1
        if not queries:
            self._forget_key(key)

    def _drop_key(self, key: tuple[Flow, int]) -> list[_Query]:
        queries = self._pending[key]
        self._pending_count -= len(queries)
        self._forget_key(key)
        return queries

    def _forget_key(self, key: tuple[Flow, int]) -> None:
        del self._pending[key]
        flow, msg_id = key
        ids = self._flows[flow]
        del ids[msg_id]
        if not ids:
            del self._flows[flow]

    def _close_flow(self, flow: Flow) -> None:
        """A TCP connection ended: queries it carried will never be answered."""
        for msg_id in list(self._flows.get(flow, ())):
            for query in self._drop_key((flow, msg_id)):
                self._finalize(query, STATUS_UNANSWERED)

    # -- transactions and the address map ---------------------------------------------
    def _finalize(
        self,
        query: _Query,
        status: str,
        msg: DnsMessage | None = None,
        response_ts: int | None = None,
        icmp: dict | None = None,
    ) -> None:
        self._stats[status] += 1
        qname = query.qname
        chain: list[str] = []
        addresses: list[str] = []
        mx: list[dict] = []
        if msg is not None and qname is not None and response_ts is not None:  # answered
            chain = _chain(qname, msg.answers)
            final = chain[-1]
            for rr in msg.answers:
                if rr.name.lower() != final:
                    continue
                data = rr.data
                if rr.rtype in _ADDRESS_TYPES and isinstance(data, str):
                    addresses.append(data)
                elif rr.rtype == QTYPE_MX and query.qtype == QTYPE_MX and isinstance(data, MxRdata):
                    mx.append({"preference": data.preference, "exchange": data.exchange.lower()})
            mx.sort(key=lambda entry: (entry["preference"], entry["exchange"]))
            self._learn_answer(qname, chain, addresses, mx, msg, response_ts)
        if not self._keep_rows:
            return
        # Whether the row is kept is known before it is built (on a gateway most are not).
        failure = _failed(status, msg is not None and msg.rcode != RCODE_NOERROR)
        wanted = query.qtype == QTYPE_MX or self._wanted(chain or [qname])
        if not (failure or wanted):
            self._stats["transactions_filtered"] += 1
            return
        if len(self._transactions) >= MAX_TRANSACTIONS or (not wanted and self._other_failures >= MAX_OTHER_FAILURES):
            self._stats["transactions_dropped"] += 1
            return
        if not wanted:
            self._other_failures += 1
        flow = query.flow
        tx = {
            "ts": query.ts,
            "client": address_text(flow[1]),
            "client_port": flow[2],
            "server": address_text(flow[3]),
            "server_port": flow[4],
            "transport": flow[0],
            "id": query.id,
            "qname": qname,
            "qtype": qtype_name(query.qtype) if query.qtype is not None else None,
            "status": status,
            "rcode": rcode_name(msg.rcode) if msg is not None else None,
            "answers": [_record_dict(rr) for rr in msg.answers[:MAX_ANSWERS_PER_TRANSACTION]] if msg is not None else [],
            "cname_chain": chain,
            "addresses": addresses[:MAX_ANSWERS_PER_TRANSACTION],
            "mx": mx[:MAX_ANSWERS_PER_TRANSACTION],
            "response_ts": response_ts,
            # From the first transmission: how long the client waited, retries included.
            "rtt": (response_ts - query.ts) / NS if response_ts is not None and msg is not None and query.solicited else None,
            "retransmissions": query.retransmissions,
            "truncated": msg.header.tc if msg is not None else None,
            "authoritative": msg.header.aa if msg is not None else None,
            "authority_soa": _soa_dict(msg) if msg is not None else None,
            "icmp": icmp,
        }
        if msg is not None:
            cut = max(len(msg.answers), len(addresses), len(mx)) - MAX_ANSWERS_PER_TRANSACTION
            if cut > 0:
                self._stats["answers_cut"] += cut
        self._stats["transactions_kept"] += 1
        self._transactions.append(tx)
        self._row_ts.append(query.ts)

    def _name_wanted(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            assert self._interesting is not None
            verdict = bool(self._interesting(name))
            if len(self._verdicts) >= MAX_NAME_VERDICTS:
                self._verdicts.clear()
            self._verdicts[name] = verdict
        return verdict

    def _wanted(self, names: Sequence[str | None]) -> bool:
        if self._interesting is None:
            return True
        for name in names:
            if name is not None and self._name_wanted(name):
                return True
        return False

    def _learn_answer(self, qname: str, chain: list[str], addresses: list[str], mx: list[dict], msg: DnsMessage, ts: int) -> None:
        frozen_chain = tuple(chain)
        for address in addresses:
            self._learn(address, qname, frozen_chain, ts, None)
        # MX responses often carry the exchanges' addresses as glue in the additional section.
        exchanges = {entry["exchange"] for entry in mx}
        if exchanges:
            for rr in msg.answers + msg.additional:
                exchange = rr.name.lower()
                if rr.rtype in _ADDRESS_TYPES and exchange in exchanges and isinstance(rr.data, str):
                    self._learn(rr.data, exchange, (exchange,), ts, qname)

    def _learn(self, address: str, name: str, chain: tuple[str, ...], ts: int, mx_of: str | None) -> None:
        pair = (address, name)
        pairs = self._pairs
        entries = pairs.get(pair)
        if entries is None:
            if len(pairs) >= MAX_ADDRESS_NAMES:
                (old_address, old_name), old_answers = pairs.popitem(last=False)
                names = self._by_address[old_address]
                del names[old_name]
                for answer in old_answers:
                    self._index_remove(old_address, self._index_entry(old_name, old_answers[0], answer))
                if not names:
                    del self._by_address[old_address]
                    self._index.pop(old_address, None)
                self._stats["address_names_evicted"] += 1
            entries = []
            self._by_address.setdefault(address, {})[name] = None
            pairs[pair] = entries
        else:
            pairs.move_to_end(pair)  # most recently updated last
        self._arrivals += 1
        answer = (ts, chain, mx_of, self._arrivals)
        entries.append(answer)
        self._index_add(address, self._index_entry(name, entries[0], answer))
        if len(entries) > MAX_ANSWERS_PER_NAME:
            # Keep the first answer (it dates what sessions long after can rely on) and the newest.
            self._index_remove(address, self._index_entry(name, entries[0], entries.pop(1)))


class DnsTcpStream:
    """DNS over TCP for one connection: length-framed messages in both directions.

    After a content gap a direction cannot find the next length prefix again, so it stops.
    """

    __slots__ = ("_tracker", "_flow", "_framers", "_stopped", "_ended")

    def __init__(self, tracker: DnsTracker, conn) -> None:
        self._tracker = tracker
        self._flow = ("tcp", conn.orig_addr, conn.orig_port, conn.resp_addr, conn.resp_port)
        # Indexed by from_client: [server → client, client → server].
        self._framers = (TcpFramer(MAX_TCP_MESSAGE_BYTES), TcpFramer(MAX_TCP_MESSAGE_BYTES))
        self._stopped = [False, False]
        self._ended = [False, False]

    def data(self, from_client: bool, data: bytes, ts: int) -> None:
        if self._stopped[from_client]:
            return
        tracker = self._tracker
        for message in self._framers[from_client].feed(data):
            tracker._stats["tcp_messages"] += 1
            tracker._message(self._flow, message, ts)

    def footprint(self) -> int:
        """An estimate of the memory this stream holds, in bytes (for the flow layer's budget)."""
        return 1000 + self._framers[0].buffered + self._framers[1].buffered

    def gap(self, from_client: bool, length: int, ts: int) -> None:
        if not self._stopped[from_client]:
            self._stopped[from_client] = True
            self._tracker._stats["tcp_gaps"] += 1

    def end_of_stream(self, from_client: bool, ts: int) -> None:
        if self._ended[from_client]:
            return
        self._ended[from_client] = True
        if not self._stopped[from_client] and self._framers[from_client].incomplete:
            self._tracker._stats["tcp_incomplete"] += 1

    def finish(self, ts: int) -> None:
        tracker = self._tracker
        tracker._stats["tcp_oversized"] += sum(framer.oversized for framer in self._framers)
        if any(self._ended):
            tracker._close_flow(self._flow)
