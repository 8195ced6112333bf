"""What a TCP connection speaks, decided by content, and the SMTP→TLS switch on STARTTLS.

:class:`MailSession` is the stream analyzer the flow layer feeds for every reconstructed
TCP connection. It waits for the first bytes to decide:

- the server speaks first with a reply code → SMTP (on any port: content, not the port
  number, decides — but a greeting mentioning FTP, or ``+OK``/``* OK``, is not SMTP);
- the client speaks first with a TLS ClientHello → implicit TLS (port 465 style);
  if the server then sends a plaintext greeting, the client used implicit TLS against a
  STARTTLS port — a named diagnosis;
- an HTTP ``CONNECT`` the proxy accepts (2xx) → a tunnel: detection starts again after the
  proxy's response headers, so SMTP through an HTTP proxy is followed like any other;
- anything else → a text protocol watched only for a switch to TLS (IMAP/POP3/FTP STARTTLS).

After the server's 220 to STARTTLS, both directions go to the TLS observer, as Zeek and
Wireshark do. Given a key log, the observer decrypts, and the plaintext goes to a second SMTP
parser — the dialogue inside TLS: EHLO first after STARTTLS, the greeting first with
implicit TLS — whose events count like any others, marked ``encrypted``. The session keeps the facts the diagnosis needs in :class:`SmtpFacts` and the
TLS observer's summary, and appends readable events to the connection's event list.
"""

from __future__ import annotations

import re
from sys import getsizeof
from typing import Any, Final

from ..flows.tcp import TcpConnection
from .smtp import AuthUser, Command, MessageBody, Reply, SmtpConversation, StartTls, Weird
from .smtp.constants import END_OF_DATA, PATH_ARGUMENT, SASL_RESPONSE
from .tls import KeyLog, TlsSession
from .tls.events import (
    Alert,
    ApplicationData,
    Certificate,
    ChangeCipherSpec,
    ClientHello,
    DecryptedData,
    DecryptionFailed,
    HandshakeComplete,
    HandshakeFailed,
    HandshakeMessage,
    NotTls,
    ServerHello,
)
from .tls.constants import alert_description_name, cipher_suite_name, version_name

#: Bytes looked at before deciding what a connection speaks.
MAX_DETECT_BYTES: Final = 4096
#: Replies kept per session (a relay pushing thousands of messages over one connection).
MAX_REPLIES: Final = 1000
#: Recipients kept per session (in its rcpt_to, and all its transactions' lists together).
MAX_RECIPIENTS: Final = 1000
#: Transactions kept per session (their recipients count against MAX_RECIPIENTS too).
MAX_TRANSACTIONS = 200
#: Characters kept of a text stored in the facts: a reply, banner, capability, address or
#: HELO argument (a line may be 8 KB, a reply 100 of them); the rest is cut, marked "...".
MAX_STORED_TEXT: Final = 1024

# What ``MailSession.footprint`` counts, measured with tracemalloc (tests/test_memory.py):
# a session with its facts, empty; its SMTP and TLS parsers once there are; a stored reply
# or transaction beside its strings.
SESSION_BYTES: Final = 850
SMTP_BYTES: Final = 2400
TLS_BYTES: Final = 3400
DECRYPTER_BYTES: Final = 7000  # with a key log: the secrets, ciphers and the inner SMTP parser's state
REPLY_BYTES: Final = 400
SLOT_BYTES: Final = 8  # a list's pointer to a string
TRANSACTION_BYTES: Final = 500


def clip(text: str) -> str:
    """``text``, cut to MAX_STORED_TEXT characters."""
    return text if len(text) <= MAX_STORED_TEXT else text[: MAX_STORED_TEXT - 3] + "..."

SMTP_GREETING: Final = re.compile(rb"^[2-5][0-9][0-9](?:[ -]|\r?\n)")
OTHER_TEXT_GREETINGS: Final = (b"+OK", b"* OK", b"* PREAUTH", b"SSH-", b"HTTP/")
HTTP_CONNECT: Final = re.compile(rb"^CONNECT (\S+)[^\r\n]* HTTP/1\.[01]\r?\n")
HTTP_STATUS: Final = re.compile(rb"^HTTP/1\.[01] ([0-9]{3})")
SMTP_CLIENT_FIRST: Final = re.compile(rb"^(?:EHLO|HELO|LHLO|QUIT|NOOP|STARTTLS|AUTH|MAIL|RSET)\b", re.IGNORECASE)


def looks_like_tls(data: bytes) -> bool:
    if len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03:
        return True
    return len(data) >= 3 and bool(data[0] & 0x80) and data[2] == 0x01


class SmtpFacts:
    """What an SMTP conversation showed, in the JSON contract's terms."""

    def __init__(self) -> None:
        self.banner: str | None = None
        self.greeting_code: int | None = None
        self.helo: str | None = None
        self.ehlo: list[str] = []  # capabilities offered before TLS
        self.ehlo_tls: list[str] = []  # capabilities offered inside TLS (decrypted only)
        self.server_host: str | None = None  # the host name the server gave in its banner/EHLO
        self.auth_offered: list[str] = []
        self.auth_mechanism: str | None = None
        self.auth_result: str | None = None  # "success" / "failure" / None
        self.auth_user: str | None = None
        self.starttls_offered = False
        self.starttls_requested = False
        self.starttls_reply: int | None = None
        self.mail_from: str | None = None
        self.rcpt_to: list[str] = []
        self.replies: list[dict[str, Any]] = []
        self.replies_dropped = 0
        self.commands = 0
        self.quit_sent = False
        self.quit_acknowledged = False
        self.messages_accepted = 0
        self.transactions: list[dict[str, Any]] = []
        self.weirds: dict[str, int] = {}
        self.last_reply: str | None = None
        self._transaction: dict[str, Any] | None = None
        self._recipients = 0  # stored in transactions
        #: What the stored replies, recipients, capabilities and transactions hold (bytes).
        self.stored = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "banner": self.banner,
            "greeting_code": self.greeting_code,
            "helo": self.helo,
            "server_host": self.server_host,
            "ehlo": list(self.ehlo),
            "ehlo_tls": list(self.ehlo_tls),
            "auth_offered": list(self.auth_offered),
            "auth_mechanism": self.auth_mechanism,
            "auth_result": self.auth_result,
            "auth_user": self.auth_user,
            "starttls_offered": self.starttls_offered,
            "starttls_requested": self.starttls_requested,
            "starttls_reply": self.starttls_reply,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "replies": list(self.replies),
            "replies_dropped": self.replies_dropped,
            "commands": self.commands,
            "quit": self.quit_acknowledged,
            "messages_accepted": self.messages_accepted,
            "transactions": list(self.transactions),
            "last_reply": self.last_reply,
            "weirds": dict(self.weirds),
        }

    # -- folding events in ------------------------------------------------------------------
    def command(self, ev: Command, encrypted: bool) -> None:
        self.commands += 1
        verb = ev.verb
        if verb in ("EHLO", "HELO", "LHLO"):
            self.helo = clip(ev.argument.strip()) or self.helo
        elif verb == "STARTTLS":
            self.starttls_requested = True
        elif verb == "AUTH":
            self.auth_mechanism = ev.argument.split(" ", 1)[0] or None
        elif verb == "MAIL":
            address = _path(ev.argument)
            self._open_transaction(ev.ts, address, encrypted)
            if self.mail_from is None:
                self.mail_from = address
        elif verb == "RCPT":
            address = _path(ev.argument)
            if address is not None and len(self.rcpt_to) < MAX_RECIPIENTS:
                self.rcpt_to.append(address)
                self.stored += SLOT_BYTES + getsizeof(address)
            if self._transaction is None:
                self._open_transaction(ev.ts, None, encrypted)  # RCPT without MAIL: a broken transaction
            assert self._transaction is not None
            if address is not None and self._recipients < MAX_RECIPIENTS:
                self._transaction["rcpt_to"].append(address)
                self._recipients += 1
                self.stored += SLOT_BYTES
        elif verb == "RSET":
            self._transaction = None
        elif verb == "QUIT":
            self.quit_sent = True

    def _open_transaction(self, ts: int, mail_from: str | None, encrypted: bool) -> None:
        self._transaction = {"ts": ts, "mail_from": mail_from, "rcpt_to": [], "last_reply": None, "size": None, "accepted": None, "encrypted": encrypted}
        if len(self.transactions) < MAX_TRANSACTIONS:
            self.transactions.append(self._transaction)
            self.stored += TRANSACTION_BYTES + getsizeof(mail_from)

    def reply(self, ev: Reply, encrypted: bool) -> None:
        lines = ev.lines
        self.last_reply = clip(f"{ev.code} {lines[-1] if lines else ''}".rstrip())
        if ev.greeting:
            self.banner = clip(ev.display())
            self.greeting_code = ev.code
            self.server_host = _first_host(lines[0] if lines else "") or self.server_host
        elif ev.command in ("EHLO", "LHLO") and ev.code == 250:
            capabilities = [clip(line.strip()) for line in lines[1:] if line.strip()]
            self.stored += sum(SLOT_BYTES + getsizeof(capability) for capability in capabilities)
            if encrypted:
                self.ehlo_tls = capabilities
            else:
                self.ehlo = capabilities
            host = _first_host(lines[0] if lines else "")
            if host and not self.server_host:
                self.server_host = host
            for capability in capabilities:
                words = capability.upper().split()
                if not words:
                    continue
                if words[0] == "STARTTLS":
                    self.starttls_offered = True
                elif words[0] == "AUTH" or words[0].startswith("AUTH="):
                    offered = words[1:] if words[0] == "AUTH" else words[0][5:].split()
                    for mechanism in offered:
                        if mechanism not in self.auth_offered:
                            self.auth_offered.append(mechanism)
        elif ev.command == "STARTTLS":
            self.starttls_reply = ev.code
        elif ev.command in ("AUTH", SASL_RESPONSE) and ev.code != 334:
            self.auth_result = "success" if ev.code // 100 == 2 else "failure"
        elif ev.command == "QUIT" and ev.code // 100 == 2:
            self.quit_acknowledged = True
        transaction = self._transaction
        if transaction is not None and not ev.greeting:
            transaction["last_reply"] = self.last_reply
            message_end = ev.command == END_OF_DATA or (ev.command == "BDAT" and transaction.pop("bdat_last", False))
            if ev.command == "BDAT" and ev.code // 100 in (4, 5):
                message_end = True
            if message_end:
                transaction["accepted"] = ev.code // 100 == 2
                self.messages_accepted += transaction["accepted"]
                self._transaction = None
        if len(self.replies) < MAX_REPLIES:
            text = clip(ev.text)
            self.stored += REPLY_BYTES + getsizeof(text)
            self.replies.append(
                {
                    "code": ev.code,
                    "enhanced": ev.enhanced,
                    "text": text,
                    "command": ev.command,
                    "lines": len(ev.lines),
                    "encrypted": encrypted,
                    "decrypted": encrypted,  # a reply inside TLS is only ever seen decrypted
                    "ts": ev.ts,
                }
            )
        else:
            self.replies_dropped += 1

    def body(self, ev: MessageBody) -> None:
        if self._transaction is not None:
            self._transaction["size"] = (self._transaction["size"] or 0) + ev.size
            if ev.kind == "bdat" and ev.last:
                self._transaction["bdat_last"] = True

    def weird(self, ev: Weird) -> None:
        self.weirds[ev.name] = self.weirds.get(ev.name, 0) + 1


def _path(argument: str) -> str | None:
    match = PATH_ARGUMENT.match(argument)
    if match is None:
        return None
    return clip(match.group(1))


#: Two or more dot-separated labels of letters, digits, hyphens (and underscores, refused
#: apart: ``\w`` is isalnum() or "_").
_HOST_NAME: Final = re.compile(r"[\w-]+(?:\.[\w-]+)+")


def _first_host(text: str) -> str | None:
    """The host name a greeting or EHLO reply starts with (``mx1.contoso.com ESMTP …``)."""
    word = text.split(" ", 1)[0].strip().rstrip(".").lower()
    if _HOST_NAME.fullmatch(word) is None or "_" in word or word.rsplit(".", 1)[1].isdigit():
        return None
    return word


class MailSession:
    """The stream analyzer attached to each TCP connection (see the module docstring).

    ``conn`` is the flow layer's connection: only its ``event()`` method and addresses are used.
    ``reveal_username``: decode AUTH user names (never passwords) into the facts.
    ``keylog``: TLS secrets; sessions found in it are decrypted and their SMTP read.
    """

    def __init__(self, conn: TcpConnection, reveal_username: bool = False, keylog: KeyLog | None = None) -> None:
        self.conn = conn
        self.reveal_username = reveal_username
        self.keylog = keylog
        #: The SMTP dialogue inside TLS, read from decrypted records (with a key log only).
        self.inner: SmtpConversation | None = None
        self._inner_ended = [False, False]  # these lists are indexed by from_client: [server, client]
        self._decrypting = False
        self.service: str | None = None  # "smtp", "tls", "text", "unknown"
        self.smtp: SmtpConversation | None = None
        self.facts = SmtpFacts()
        self.tls: TlsSession | None = None
        self.tls_mode: str | None = None  # "starttls" / "implicit"
        self.tls_started_at: int | None = None
        self.notes: list[str] = []
        self._detect = [bytearray(), bytearray()]
        self._text_tls_watch = False
        self.tunnel: str | None = None  # "host:port" of an HTTP CONNECT tunnel
        self.first_data: list[int | None] = [None, None]
        self.gaps = [0, 0]
        self._tls_finished = False

    # -- StreamAnalyzer -----------------------------------------------------------------
    def data(self, from_client: bool, data: bytes, ts: int) -> None:
        if self.first_data[from_client] is None:
            self.first_data[from_client] = ts
        if self.service is None:
            self._detect_service(from_client, data, ts)
            return
        self._route(from_client, data, ts)

    def footprint(self) -> int:
        """An estimate of the memory this session holds, in bytes: its objects, what its
        facts stored, and what its parsers buffer (see ``TcpConnection.footprint``)."""
        size = SESSION_BYTES + self.facts.stored + self._detect[True].__alloc__() + self._detect[False].__alloc__()
        for parser in (self.smtp, self.inner):
            if parser is not None:
                size += SMTP_BYTES + parser.buffered()
        tls = self.tls
        if tls is not None:
            size += TLS_BYTES + tls.buffered() + (DECRYPTER_BYTES if tls.decrypter is not None else 0)
        return size

    def gap(self, from_client: bool, length: int, ts: int) -> None:
        self.gaps[from_client] += length
        if self.service is None:
            self._detect[from_client].clear()
            return
        if self.tls is not None and self.service == "tls":
            self._tls_events(self.tls.gap(from_client, length, ts))
        elif self.smtp is not None:
            self._smtp_events(self.smtp.gap(from_client, length, ts), encrypted=False)

    def end_of_stream(self, from_client: bool, ts: int) -> None:
        if self.service is None:
            pending = bytes(self._detect[from_client])
            if pending:
                self._decide(from_client, pending, ts, final=True)
        if self.tls is not None and self.service == "tls":
            self._tls_events(self.tls.end_of_stream(from_client, ts))
            self._end_inner(from_client, ts)
        if self.smtp is not None and self.smtp.mode != "TLS":
            self._smtp_events(self.smtp.end_of_stream(from_client, ts), encrypted=False)

    def finish(self, ts: int) -> None:
        for from_client in (True, False):
            pending = bytes(self._detect[from_client])
            if self.service is None and pending:
                self._decide(from_client, pending, ts, final=True)
        if self.tls is not None and not self._tls_finished:
            self._tls_finished = True
            reset_by = None
            for _ts, from_orig, _ttl, _seq in self.conn.rsts:
                reset_by = "client" if from_orig else "server"
                break
            self._tls_events(self.tls.finish(ts, reset_by))
            for from_client in (True, False):
                self._end_inner(from_client, ts)

    # -- detection ------------------------------------------------------------------------
    def _detect_service(self, from_client: bool, data: bytes, ts: int) -> None:
        buf = self._detect[from_client]
        buf += data
        self._decide(from_client, bytes(buf), ts, final=len(buf) >= MAX_DETECT_BYTES)

    def _decide(self, from_client: bool, head: bytes, ts: int, final: bool) -> None:
        if self.tunnel is None and HTTP_CONNECT.match(bytes(self._detect[True])):
            if self._open_tunnel(ts):
                return
            if not final:
                return  # wait for the proxy's answer
        service = None
        if from_client:
            if looks_like_tls(head):
                service = "tls"
            elif SMTP_CLIENT_FIRST.match(head):
                service = "smtp"
            elif final:
                service = "text"
            # Other client text: wait for the server's first words, which decide better.
        else:
            if SMTP_GREETING.match(head) and b"FTP" not in head[:200].upper():
                service = "smtp"
            elif looks_like_tls(head):
                service = "tls"
            elif b"\n" in head or final or head.startswith(OTHER_TEXT_GREETINGS):
                service = "text"
        if service is None:
            return  # wait for more bytes
        self._start(service, ts)
        other = not from_client
        first, second = (from_client, bytes(self._detect[from_client])), (other, bytes(self._detect[other]))
        self._detect[True].clear()
        self._detect[False].clear()
        for direction, pending in (first, second):
            if pending:
                self._route(direction, pending, ts)

    def _open_tunnel(self, ts: int) -> bool:
        """An HTTP CONNECT the proxy accepted: drop both headers and detect again inside."""
        request, response = bytes(self._detect[True]), bytes(self._detect[False])
        req_end, resp_end = request.find(b"\r\n\r\n"), response.find(b"\r\n\r\n")
        if req_end < 0 or resp_end < 0:
            return False
        status = HTTP_STATUS.match(response)
        if status is None or not status.group(1).startswith(b"2"):
            return False
        target = HTTP_CONNECT.match(request)
        self.tunnel = target.group(1).decode("latin-1") if target else "?"
        self._note("http_connect_tunnel")
        self.conn.event(ts, "server", "tunnel", f"HTTP proxy opened a tunnel to {self.tunnel}")
        self._detect[True] = bytearray(request[req_end + 4 :])
        self._detect[False] = bytearray(response[resp_end + 4 :])
        for direction in (False, True):
            pending = bytes(self._detect[direction])
            if pending and self.service is None:
                self._decide(direction, pending, ts, final=False)
        return True

    def _start(self, service: str, ts: int) -> None:
        self.service = service
        if service == "smtp":
            self.smtp = SmtpConversation(reveal_username=self.reveal_username)
        elif service == "tls":
            self._begin_tls("implicit", ts)
        elif service == "text":
            self._text_tls_watch = True

    def _begin_tls(self, mode: str, ts: int) -> None:
        self.tls = TlsSession(keylog=self.keylog)
        if self.keylog is not None:
            self.inner = SmtpConversation(reveal_username=self.reveal_username)
            # After STARTTLS the client speaks first (EHLO again); implicit TLS opens with
            # the server's greeting, like a plain connection.
            self.inner.greeted = mode == "starttls"
        self.tls_mode = mode
        self.tls_started_at = ts
        self.service = "tls"

    # -- routing --------------------------------------------------------------------------
    def _route(self, from_client: bool, data: bytes, ts: int) -> None:
        service = self.service
        if service == "smtp":
            assert self.smtp is not None
            self._smtp_events(self.smtp.receive(from_client, data, ts), encrypted=False)
            if self.smtp.mode == "TLS" and self.tls is None:
                self._switch_to_tls(ts)
        elif service == "tls":
            assert self.tls is not None
            if self.tls_mode == "implicit" and not from_client and self.facts.banner is None and self._is_plain_greeting(data):
                # The server greets in clear while the client talks TLS: implicit TLS
                # against a STARTTLS port. Read the greeting as SMTP, don't feed it to TLS.
                self._note("implicit_tls_on_starttls_port")
                conversation = SmtpConversation()
                self._smtp_events(conversation.receive(False, data, ts), encrypted=False)
                return
            events = self.tls.receive(from_client, data, ts)
            if events:
                self._tls_events(events)
        elif service == "text":
            if self._text_tls_watch and from_client and looks_like_tls(data):
                self._note("tls_after_text_negotiation")
                self._begin_tls("starttls", ts)
                self._tls_events(self.tls.receive(from_client, data, ts))  # type: ignore[union-attr]

    @staticmethod
    def _is_plain_greeting(data: bytes) -> bool:
        return bool(SMTP_GREETING.match(data))

    def _switch_to_tls(self, ts: int) -> None:
        smtp = self.smtp
        assert smtp is not None
        started_by = smtp.tls_started_by or "starttls"
        if started_by != "starttls":
            self._note(started_by)
        if started_by == "client_without_starttls" and self.facts.commands == 0:
            # TLS as the client's very first words, the server's greeting notwithstanding: a
            # client set up for implicit TLS ("SSL") talking to a STARTTLS port.
            self._note("implicit_tls_on_starttls_port")
            self._begin_tls("implicit", ts)
        else:
            self._begin_tls("starttls", ts)
        client, server = smtp.client_leftover, smtp.server_leftover
        smtp.client_leftover = smtp.server_leftover = b""
        if client:
            self._tls_events(self.tls.receive(True, client, ts))  # type: ignore[union-attr]
        if server:
            self._tls_events(self.tls.receive(False, server, ts))  # type: ignore[union-attr]

    def _note(self, note: str) -> None:
        if note not in self.notes:
            self.notes.append(note)

    # -- events ---------------------------------------------------------------------------
    def _smtp_events(self, events: list, encrypted: bool) -> None:
        facts = self.facts
        event = self.conn.event
        for ev in events:
            if isinstance(ev, Reply):
                facts.reply(ev, encrypted)
                event(ev.ts, "server", "smtp_reply", _reply_detail(ev))
            elif isinstance(ev, Command):
                facts.command(ev, encrypted)
                text = ev.verb if not ev.argument else f"{ev.verb} {ev.argument}"
                event(ev.ts, "client", "smtp_command", text)
            elif isinstance(ev, MessageBody):
                facts.body(ev)
                label = "message body" if ev.kind == "data" else ("last BDAT chunk" if ev.last else "BDAT chunk")
                event(ev.ts, "client", "smtp_body", f"{label}, {ev.size} bytes")
            elif isinstance(ev, StartTls):
                event(ev.ts, "server", "starttls", "server accepted STARTTLS; TLS follows")
            elif isinstance(ev, AuthUser):
                facts.auth_user = ev.user
            elif isinstance(ev, Weird):
                facts.weird(ev)
                if ev.name != "content_gap":
                    direction = "client" if ev.from_client else "server"
                    event(ev.ts, direction, "smtp_weird", f"{ev.name}: {ev.detail}" if ev.detail else ev.name)

    def _tls_events(self, events: list) -> None:
        event = self.conn.event
        for ev in events:
            kind = type(ev)
            if kind is DecryptedData:
                # Plaintext (credentials included) goes to the SMTP parser only, which redacts.
                if self.inner is not None and not self._inner_ended[ev.from_client]:
                    if not self._decrypting:
                        self._decrypting = True
                        event(ev.ts, "client" if ev.from_client else "server", "tls_decrypted",
                              "decrypted with the key log: what follows was inside TLS")
                    self._smtp_events(self.inner.receive(ev.from_client, ev.data, ev.ts), encrypted=True)
                continue
            if kind is DecryptionFailed:
                self._end_inner(ev.from_client, ev.ts)
            detail = tls_event_detail(ev)
            if detail is None:
                continue
            name, text = detail
            event(ev.ts, "client" if ev.from_client else "server", name, text)

    def _end_inner(self, from_client: bool, ts: int) -> None:
        """No more plaintext in this direction: let the inner parser finish what it has."""
        if self.inner is not None and not self._inner_ended[from_client]:
            self._inner_ended[from_client] = True
            self._smtp_events(self.inner.end_of_stream(from_client, ts), encrypted=True)

    # -- results --------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        tls: dict[str, Any] = {"mode": None, "attempted": False, "established": False}
        if self.tls is not None:
            tls = dict(self.tls.summary())
            tls["mode"] = self.tls_mode
            tls["started_ts"] = self.tls_started_at
        return {
            "service": self.service,
            "smtp": self.facts.as_dict() if self.smtp is not None or self.facts.banner is not None or self.facts.replies else None,
            "tls": tls,
            "notes": list(self.notes),
            "tunnel": self.tunnel,
            "first_data": {"client": self.first_data[True], "server": self.first_data[False]},
            "gaps": {"client": self.gaps[True], "server": self.gaps[False]},
        }


def _reply_detail(ev: Reply) -> str:
    if len(ev.lines) > 2:
        return f"{ev.code} {ev.lines[0]} (+{len(ev.lines) - 1} lines)"
    return ev.display()


def tls_event_detail(ev: Any) -> tuple[str, str] | None:
    """A (kind, readable detail) pair for a TLS event, or None for events not worth a line.
    (The most frequent kinds are tried first: a session has several handshake messages.)"""
    if isinstance(ev, HandshakeMessage):
        return "tls_handshake", ev.name.replace("_", " ")
    if isinstance(ev, ClientHello):
        parts = [f"offers up to {version_name(ev.max_version)}"]
        if ev.sni:
            parts.append(f"SNI {ev.sni}")
        parts.append(f"{len(ev.cipher_suites)} cipher suites")
        return "tls_client_hello", ", ".join(parts)
    if isinstance(ev, ServerHello):
        if ev.hello_retry_request:
            return "tls_hello_retry", "server asks the client to retry with another key share"
        return "tls_server_hello", f"{version_name(ev.version)}, {cipher_suite_name(ev.cipher_suite)}"
    if isinstance(ev, Certificate):
        if not ev.chain:
            return "tls_certificate", "empty certificate message"
        leaf = ev.chain[0]
        return "tls_certificate", f"subject {leaf.subject}, issuer {leaf.issuer}, valid until {leaf.not_after}"
    if isinstance(ev, ChangeCipherSpec):
        return "tls_change_cipher_spec", ""
    if isinstance(ev, HandshakeComplete):
        return "tls_established", ("handshake complete (inferred)" if ev.inferred else "handshake complete") + (f": {ev.detail}" if ev.detail else "")
    if isinstance(ev, ApplicationData):
        return "tls_application_data", f"first encrypted application data, {ev.length} bytes"
    if isinstance(ev, Alert):
        if ev.encrypted and not ev.decrypted:
            return "tls_alert", "encrypted alert"
        level = {1: "warning", 2: "fatal"}.get(ev.level or 0, str(ev.level))
        return "tls_alert", f"{level} {alert_description_name(ev.description)}" + (" (decrypted)" if ev.decrypted else "")
    if isinstance(ev, DecryptionFailed):
        return "tls_decryption_failed", f"not decrypted from here on: {ev.reason}"
    if isinstance(ev, HandshakeFailed):
        return "tls_failed", ev.reason + (" (inferred)" if ev.inferred else "")
    if isinstance(ev, NotTls):
        return "tls_not_tls", ev.reason
    return None
