"""A sans-I/O SMTP conversation observer: client and server byte streams in, events out.

Theory of operation
-------------------
1. The server side is simple: every line is a reply line; lines with ``-`` after the code
   continue a multi-line reply, the line with a space (or nothing) ends it.
2. The client side has modes, because not every client byte is a command: message bodies
   after DATA, BDAT chunks, SASL responses during AUTH, and — after STARTTLS — TLS.
3. Commands wait in a queue (pipelining sends several before the first reply). Each final
   reply answers the oldest waiting command. The first reply of all is the greeting.
4. Where the client must wait for the server's verdict (DATA → 354, STARTTLS → 220) the
   client's bytes are *held* until that verdict arrives, then read in the mode it implies.
   Captures are processed in time order, so a well-behaved client's next bytes always
   arrive after the verdict; holding only matters for clients that do not wait.
5. Everything a client sends while AUTH is in progress is a credential: it is never stored,
   only counted. The user name is decoded only when the caller asks for it.
6. One-sided captures (only the client's direction was seen) have no verdicts to wait for:
   while the server has said nothing at all, DATA and STARTTLS are taken as accepted and an
   AUTH exchange as over after the mechanism's usual number of responses.

Every transition that depends on a reply is in the two tables below; everything that
changes the client's mode is in ``_after_command`` and ``_after_reply``.
"""

from __future__ import annotations

from typing import Final

import base64
import binascii
import re
from sys import getsizeof

from .constants import (
    END_OF_DATA,
    KNOWN_VERBS,
    MAX_BDAT_CHUNK,
    MAX_HELD_BYTES,
    MAX_LINE_LENGTH,
    MAX_PENDING_COMMANDS,
    MAX_REPLY_LINES,
    REDACTED,
    REPLY_LINE,
    SASL_RESPONSE,
    enhanced_code,
)
from .events import AuthUser, Command, Event, MessageBody, Reply, StartTls, Weird

# Client modes.
COMMAND: Final = "COMMAND"  # command lines
AUTH: Final = "AUTH"  # SASL responses (credentials) until AUTH's final reply
HOLD_DATA: Final = "HOLD_DATA"  # sent DATA; waiting for 354 before the body
BODY: Final = "BODY"  # message body until <CRLF>.<CRLF>
BDAT_CHUNK: Final = "BDAT_CHUNK"  # a BDAT chunk of known size
HOLD_STARTTLS: Final = "HOLD_STARTTLS"  # sent STARTTLS; waiting for 220
TLS: Final = "TLS"  # the conversation went over to TLS: no more SMTP here

#: Client mode entered when a command is sent.
MODE_AFTER_COMMAND: Final = {
    "DATA": HOLD_DATA,
    "STARTTLS": HOLD_STARTTLS,
    "AUTH": AUTH,
    "BDAT": BDAT_CHUNK,
}

#: Client mode after the final reply to a command sent in a waiting mode:
#: (mode, verb answered, reply class or exact code) -> next mode. Missing = back to COMMAND.
MODE_AFTER_REPLY: Final = {
    (HOLD_DATA, "DATA", 354): BODY,
    (HOLD_STARTTLS, "STARTTLS", 220): TLS,
    (AUTH, "AUTH", 334): AUTH,
    (AUTH, SASL_RESPONSE, 334): AUTH,
}

#: SASL responses a client sends for a mechanism (without / with an initial response), used
#: only when the server's side is missing from the capture.
SASL_RESPONSES: Final = {"LOGIN": (2, 1), "PLAIN": (1, 0), "XOAUTH2": (1, 0), "CRAM-MD5": (1, 1)}

#: End of a message body: a line holding only ".". Bare-LF clients exist (Exchange's 5.6.11).
BODY_END: Final = re.compile(rb"\n\.\r?\n")
BODY_TAIL: Final = 4  # bytes kept between chunks to find an end marker split across them


def _looks_like_tls(buf: bytes | bytearray) -> bool:
    """A TLS handshake record (0x16 0x03 …) or an SSLv2-style ClientHello (high bit, type 1)."""
    if len(buf) >= 2 and buf[0] == 0x16 and buf[1] == 0x03:
        return True
    return len(buf) >= 3 and bool(buf[0] & 0x80) and buf[2] == 0x01


class SmtpConversation:
    """Observes one SMTP conversation. Feed bytes with :meth:`receive`, read events back.

    ``reveal_username``: decode the user name of AUTH PLAIN/LOGIN/XOAUTH2/CRAM-MD5 into an
    :class:`AuthUser` event. Passwords and tokens are never decoded or kept.
    """

    def __init__(self, reveal_username: bool = False) -> None:
        self.reveal_username = reveal_username
        self.mode = COMMAND
        self.greeted = False
        self.server_spoke = False
        self._cbuf = bytearray()
        self._sbuf = bytearray()
        self._held = bytearray()
        self._pending: list[str] = []  # at most MAX_PENDING_COMMANDS: a deque costs 600 bytes empty
        self._reply_lines: list[str] = []
        self._reply_code: int | None = None
        self._body_size = 0
        self._body_tail = b""
        self._bdat_left = 0
        self._bdat_size = 0
        self._bdat_last = False
        self._auth_mechanism: str | None = None
        self._sasl_step = 0
        self._user_in_initial_response = False
        self.client_leftover = b""
        self.server_leftover = b""
        self.tls_started_by: str | None = None  # "starttls", or a weird name when the client jumped the gun

    def buffered(self) -> int:
        """Bytes this parser holds for lines, replies and commands not yet complete (an
        estimate, for the flow layer's memory budget)."""
        size = self._cbuf.__alloc__() + self._sbuf.__alloc__() + self._held.__alloc__()
        size += len(self._body_tail) + len(self.client_leftover) + len(self.server_leftover)
        for text in self._pending:
            size += 8 + getsizeof(text)
        for text in self._reply_lines:
            size += 8 + getsizeof(text)
        return size

    # -- public API -----------------------------------------------------------------------
    def receive(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        out: list[Event] = []
        if self.mode == TLS:
            if from_client:
                self.client_leftover += data
            else:
                self.server_leftover += data
            return out
        if from_client:
            self._cbuf += data
            self._client(ts, out)
        else:
            self.server_spoke = self.server_spoke or bool(data)
            self._sbuf += data
            self._server(ts, out)
        return out

    def gap(self, from_client: bool, length: int, ts: int) -> list[Event]:
        """Bytes missing from the capture: drop partial lines, count body bytes, resynchronise."""
        out: list[Event] = [Weird(ts, "content_gap", f"{length} bytes missing", from_client)]
        if self.mode == TLS:
            return out
        if from_client:
            if self.mode == BODY:
                self._body_size += length
                self._body_tail = b""
            elif self.mode == BDAT_CHUNK:
                take = min(length, self._bdat_left)
                self._bdat_left -= take
                if self._bdat_left == 0:
                    self._end_bdat(ts, out)
            else:
                self._cbuf.clear()
        else:
            self._sbuf.clear()
            self._reply_lines = []
            self._reply_code = None
        return out

    def end_of_stream(self, from_client: bool, ts: int) -> list[Event]:
        out: list[Event] = []
        if self.mode == TLS:
            return out
        if not from_client and self._sbuf:
            # A last reply line without its line ending still counts.
            self._sbuf += b"\n"
            self._server(ts, out)
        if from_client and self._cbuf and self.mode in (COMMAND, AUTH):
            self._cbuf += b"\n"
            self._client(ts, out)
        if not from_client and self._reply_lines and self._reply_code is not None:
            self._emit_reply(ts, out)
        return out

    @property
    def pending(self) -> tuple[str, ...]:
        """Commands still waiting for their replies."""
        return tuple(self._pending)

    # -- client side ----------------------------------------------------------------------
    def _client(self, ts: int, out: list[Event]) -> None:
        buf = self._cbuf
        while buf and self.mode != TLS:
            mode = self.mode
            if mode == BODY:
                if not self._consume_body(ts, out):
                    return
            elif mode == BDAT_CHUNK:
                take = min(self._bdat_left, len(buf))
                del buf[:take]
                self._bdat_left -= take
                if self._bdat_left:
                    return
                self._end_bdat(ts, out)
            elif mode in (HOLD_DATA, HOLD_STARTTLS) and not self.server_spoke:
                # One-sided capture: no verdict will come; go on as if it was positive.
                if mode == HOLD_DATA:
                    self._enter_body()
                elif _looks_like_tls(buf):
                    self.mode = TLS
                    self.tls_started_by = "starttls"
                    self.client_leftover += bytes(buf)
                    buf.clear()
                    out.append(StartTls(ts))
                    return
                else:
                    self.mode = COMMAND
            elif mode in (HOLD_DATA, HOLD_STARTTLS):
                room = MAX_HELD_BYTES - len(self._held)
                self._held += buf[:room]
                overflow = len(buf) > room
                buf.clear()
                if overflow:
                    # The client did not wait at all: assume it went ahead (body or TLS).
                    out.append(Weird(ts, "smtp_client_did_not_wait", f"{MAX_HELD_BYTES} bytes sent before the reply to {self._pending[-1] if self._pending else 'the command'}", True))
                    held = bytes(self._held)
                    self._held.clear()
                    if mode == HOLD_DATA:
                        self._enter_body()
                    else:
                        self.mode = TLS
                        self.tls_started_by = "client_did_not_wait"
                        self.client_leftover += held
                        return
                    buf[:0] = held
                return
            else:  # COMMAND or AUTH: line by line
                # The buffer always starts at a line start here, so TLS bytes mean the client
                # switched to TLS without asking.
                if mode == COMMAND and _looks_like_tls(buf):
                    out.append(Weird(ts, "smtp_client_tls_without_starttls", "the client started TLS without a STARTTLS command", True))
                    self.mode = TLS
                    self.tls_started_by = "client_without_starttls"
                    self.client_leftover += bytes(buf)
                    buf.clear()
                    return
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE_LENGTH:
                        out.append(Weird(ts, "smtp_line_too_long", f"client line over {MAX_LINE_LENGTH} bytes", True))
                        del buf[:]
                    return
                line = bytes(buf[:nl]).rstrip(b"\r")
                del buf[: nl + 1]
                if len(line) > MAX_LINE_LENGTH:
                    out.append(Weird(ts, "smtp_line_too_long", f"client line over {MAX_LINE_LENGTH} bytes", True))
                    line = line[:MAX_LINE_LENGTH]
                if mode == AUTH:
                    self._sasl_line(line, ts, out)
                else:
                    self._command_line(line, ts, out)

    def _command_line(self, line: bytes, ts: int, out: list[Event]) -> None:
        text = line.decode("utf-8", "replace")
        verb, _, argument = text.partition(" ")
        verb = verb.upper()
        known = verb in KNOWN_VERBS
        if verb == "AUTH":
            mechanism, _, initial = argument.partition(" ")
            self._auth_mechanism = mechanism.upper()
            self._sasl_step = 0
            self._user_in_initial_response = bool(initial) and initial != "="
            shown = self._auth_mechanism + (" " + REDACTED if initial else "")
            out.append(Command(ts, verb, shown, True))
            if initial and initial != "=":
                self._learn_user(initial.encode(), ts, out, initial_response=True)
        else:
            out.append(Command(ts, verb, argument, known))
        self._queue(verb, ts, out)
        next_mode = MODE_AFTER_COMMAND.get(verb)
        if next_mode == BDAT_CHUNK:
            self._start_bdat(argument, ts, out)
        elif next_mode is not None:
            self.mode = next_mode
            if next_mode == AUTH and not self.server_spoke and self._user_in_initial_response:
                expected = SASL_RESPONSES.get(self._auth_mechanism or "")
                if expected is not None and expected[1] == 0:
                    self.mode = COMMAND  # one-sided capture: the AUTH line said it all

    def _sasl_line(self, line: bytes, ts: int, out: list[Event]) -> None:
        self._sasl_step += 1
        expected = SASL_RESPONSES.get(self._auth_mechanism or "")
        out.append(Command(ts, SASL_RESPONSE, REDACTED if line.strip() != b"*" else "*", True))
        # The user name is in the first response unless the AUTH line already carried it;
        # a later response is a password or token and is never decoded.
        if self._sasl_step == 1 and not self._user_in_initial_response:
            self._learn_user(line, ts, out, initial_response=False)
        self._queue(SASL_RESPONSE, ts, out)
        if not self.server_spoke and expected is not None:
            if self._sasl_step >= expected[1 if self._user_in_initial_response else 0]:
                self.mode = COMMAND

    def _queue(self, verb: str, ts: int, out: list[Event]) -> None:
        if len(self._pending) >= MAX_PENDING_COMMANDS:
            del self._pending[0]
            out.append(Weird(ts, "smtp_too_many_pending_commands", f"over {MAX_PENDING_COMMANDS} commands without replies", True))
        self._pending.append(verb)

    def _learn_user(self, response: bytes, ts: int, out: list[Event], initial_response: bool) -> None:
        """Decode the user name from the first SASL response — only when asked to."""
        if not self.reveal_username or self._auth_mechanism is None:
            return
        try:
            decoded = base64.b64decode(response.strip(), validate=False)
        except (binascii.Error, ValueError):
            return
        mechanism = self._auth_mechanism
        user = None
        if mechanism == "PLAIN":
            parts = decoded.split(b"\x00")
            if len(parts) == 3:
                user = parts[1] or parts[0]
        elif mechanism == "LOGIN":
            user = decoded
        elif mechanism == "XOAUTH2":
            head = decoded.split(b"\x01", 1)[0]
            if head.startswith(b"user="):
                user = head[5:]
        elif mechanism == "CRAM-MD5" and not initial_response:
            user = decoded.rsplit(b" ", 1)[0] if b" " in decoded else None
        if user:
            name = user.decode("utf-8", "replace")
            if name.isprintable() and len(name) <= 256:
                out.append(AuthUser(ts, mechanism, name))

    def _enter_body(self) -> None:
        self.mode = BODY
        self._body_size = 0
        self._body_tail = b"\r\n"  # the DATA line's end: a body of just "." is empty

    def _consume_body(self, ts: int, out: list[Event]) -> bool:
        """Scan body bytes for the end marker; True if it was found (mode is COMMAND again)."""
        buf = self._cbuf
        window = self._body_tail + bytes(buf)
        match = BODY_END.search(window)
        if match is None:
            self._body_size += len(buf)
            self._body_tail = window[-BODY_TAIL:]
            buf.clear()
            return False
        consumed = match.end() - len(self._body_tail)
        # Bytes of the terminator (".\r\n") were possibly counted with an earlier chunk.
        self._body_size += consumed - (match.end() - match.start() - 1)
        del buf[:consumed]
        self._finish_body(ts, out)
        return True

    def _finish_body(self, ts: int, out: list[Event]) -> None:
        out.append(MessageBody(ts, self._body_size, "data"))
        self._body_size = 0
        self._body_tail = b""
        self.mode = COMMAND
        self._queue(END_OF_DATA, ts, out)

    def _start_bdat(self, argument: str, ts: int, out: list[Event]) -> None:
        words = argument.split()
        size = None
        # RFC 3030: "BDAT" SP chunk-size [SP "LAST"] — anything else is refused by servers, and
        # then no chunk follows the command.
        if words and words[0].isdigit() and (len(words) == 1 or (len(words) == 2 and words[1].upper() == "LAST")):
            size = int(words[0])
        if size is None or size > MAX_BDAT_CHUNK:
            out.append(Weird(ts, "smtp_invalid_bdat_command", f"BDAT {argument[:40]}", True))
            return
        self._bdat_size = size
        self._bdat_left = size
        self._bdat_last = len(words) > 1 and words[1].upper() == "LAST"
        self.mode = BDAT_CHUNK
        if size == 0:
            self._end_bdat(ts, out)

    def _end_bdat(self, ts: int, out: list[Event]) -> None:
        out.append(MessageBody(ts, self._bdat_size, "bdat", self._bdat_last))
        self.mode = COMMAND

    # -- server side ----------------------------------------------------------------------
    def _server(self, ts: int, out: list[Event]) -> None:
        buf = self._sbuf
        while buf and self.mode != TLS:
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > MAX_LINE_LENGTH:
                    out.append(Weird(ts, "smtp_line_too_long", f"server line over {MAX_LINE_LENGTH} bytes", False))
                    del buf[:]
                return
            line = bytes(buf[:nl]).rstrip(b"\r")
            del buf[: nl + 1]
            self._reply_line(line[:MAX_LINE_LENGTH], ts, out)
        if self.mode == TLS and buf:
            self.server_leftover += bytes(buf)
            buf.clear()

    def _reply_line(self, line: bytes, ts: int, out: list[Event]) -> None:
        match = REPLY_LINE.match(line)
        if match is None:
            if line.strip():
                out.append(Weird(ts, "smtp_invalid_reply_line", _printable(line), False))
            return
        code = int(match.group(1))
        text = line[4:].decode("utf-8", "replace")
        if self._reply_code is not None and code != self._reply_code:
            out.append(Weird(ts, "smtp_reply_code_changed_mid_reply", f"{self._reply_code} then {code}", False))
        if self._reply_code is None:
            self._reply_code = code
        if len(self._reply_lines) < MAX_REPLY_LINES:
            self._reply_lines.append(text)
        if match.group(2) != b"-":
            self._emit_reply(ts, out)

    def _emit_reply(self, ts: int, out: list[Event]) -> None:
        code = self._reply_code or 0
        lines = tuple(self._reply_lines)
        self._reply_lines = []
        self._reply_code = None
        if not self.greeted:
            self.greeted = True
            out.append(Reply(ts, code, enhanced_code(lines[0] if lines else "", code), lines, None, greeting=True))
            return
        if self.mode == BODY and (not self._pending or self._pending[-1] != END_OF_DATA):
            # The end of the body fell into a gap; the server's reply proves it came.
            self._finish_body(ts, out)
        verb = self._pending.pop(0) if self._pending else None
        enhanced = None if code == 334 else enhanced_code(lines[0] if lines else "", code)
        reply = Reply(ts, code, enhanced, lines, verb)
        out.append(reply)
        if verb is None:
            out.append(Weird(ts, "smtp_unmatched_reply", f"{code} with no command waiting", False))
            return
        self._after_reply(verb, code, ts, out)

    def _after_reply(self, verb: str, code: int, ts: int, out: list[Event]) -> None:
        mode = self.mode
        if mode not in (HOLD_DATA, HOLD_STARTTLS, AUTH):
            return
        expected = {HOLD_DATA: "DATA", HOLD_STARTTLS: "STARTTLS"}.get(mode)
        if expected is not None and verb != expected:
            return  # a reply to a command pipelined before DATA/STARTTLS
        if mode == AUTH and verb not in ("AUTH", SASL_RESPONSE):
            return
        next_mode = MODE_AFTER_REPLY.get((mode, verb, code), COMMAND)
        held = bytes(self._held)
        self._held.clear()
        self.mode = next_mode
        if next_mode == BODY:
            self._enter_body()
        if next_mode == TLS:
            self.tls_started_by = "starttls"
            if held:
                out.append(Weird(ts, "smtp_client_tls_before_starttls_reply", "the client started TLS before the server's 220", True))
            out.append(StartTls(ts))
            self.client_leftover += held + bytes(self._cbuf)
            self._cbuf.clear()
            self.server_leftover += bytes(self._sbuf)
            self._sbuf.clear()
            return
        if mode == HOLD_STARTTLS and held and _looks_like_tls(held):
            out.append(Weird(ts, "smtp_client_tls_after_starttls_refused", f"the server refused STARTTLS ({code}) but the client started TLS", True))
            self.mode = TLS
            self.tls_started_by = "client_after_refusal"
            self.client_leftover += held + bytes(self._cbuf)
            self._cbuf.clear()
            return
        if held:
            self._cbuf[:0] = held
            self._client(ts, out)


def _printable(raw: bytes, limit: int = 60) -> str:
    text = raw[:limit].decode("latin-1")
    return "".join(ch if 32 <= ord(ch) < 127 else "." for ch in text)
