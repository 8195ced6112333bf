"""A sans-I/O observer of one TCP connection's TLS handshake: stream bytes in, events out.

Theory of operation
-------------------
Each direction is a :class:`_Side`, fed in-order stream bytes by :meth:`TlsSession.receive`.
The record layer reads a 5-byte header, then either keeps the body (plaintext records:
handshake, alert, change_cipher_spec, heartbeat) or discards it without buffering
(ciphertext), so a direction never holds more than one record. Handshake messages are
reassembled across records up to ``MAX_HANDSHAKE_MESSAGE``.

When is a direction encrypted? As in Zeek: in TLS ≤ 1.2 from its ChangeCipherSpec on (the
next handshake record is its Finished); in TLS 1.3 the CCS is compatibility padding and the
direction counts as encrypted from its first application_data record after the ServerHello.
Ciphertext is never parsed as plaintext.

Established: TLS ≤ 1.2 when both sides sent ChangeCipherSpec and then their Finished (or
application data). TLS 1.3 hides the Finished messages, so it is inferred: the client sends
a record larger than an encrypted alert (its Finished flight) after the server's flight, and
the server then sends a record larger than an alert (session ticket or data) — or, at the
end, the client had sent data after its Finished and the server never sent an alert. Zeek
calls TLS 1.3 established as soon as both sides sent any application_data record, even when
the client's only one is an encrypted alert rejecting the certificate; we do not. (On the
Zeek trace corpus both rules give the same answers.)

``history`` uses Zeek's ``ssl_history`` letters and records them where Zeek does: for
plaintext messages only (no letter for the encrypted Finished, encrypted alerts, or
application data — Zeek documents ``D`` but its scripts never add it). One addition: ``Q``
for a record of unknown content type (20–30), where Zeek stops with an analyzer violation.

Decryption: given a :class:`~.keylog.KeyLog` holding this session's secrets, a direction's
encrypted records are kept (one at a time) and opened by :mod:`.decrypt` instead of skipped,
then handled like plaintext ones by their real content type: application data comes out as
:class:`DecryptedData`, alerts with their description (``decrypted=True``), handshake
messages are parsed and lettered in ``history`` as Zeek would if it could see them (the
Finished in every version; in TLS 1.3 also EncryptedExtensions, Certificate,
CertificateVerify, NewSessionTicket …). TLS 1.3 is then established for certain when both
Finished messages were read and the server went on with anything but an alert. A direction
whose keys are missing, or whose record fails to open, gets one :class:`DecryptionFailed`
and is followed from there on as if there were no key log; the other direction carries on.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
from sys import getsizeof
from typing import Final, TYPE_CHECKING

from . import constants as C
from .certificate import read_fields, read_fields_by_cryptography
from .events import (
    Alert,
    ApplicationData,
    Certificate,
    CertInfo,
    ChangeCipherSpec,
    ClientHello,
    DecryptedData,
    DecryptionFailed,
    Event,
    HandshakeComplete,
    HandshakeFailed,
    HandshakeMessage,
    NotTls,
    ServerHello,
)

if TYPE_CHECKING:
    from .decrypt import DirectionDecrypter, TlsDecrypter
    from .keylog import KeyLog

# -- named limits ---------------------------------------------------------------------------
#: Largest handshake message reassembled; a longer one is skipped (and noted).
MAX_HANDSHAKE_MESSAGE: Final = 256 * 1024
#: Certificates parsed per Certificate message (the rest are counted).
MAX_CHAIN_CERTIFICATES: Final = 10
#: Zeek's ``SSL::max_ssl_history_length``.
MAX_HISTORY: Final = 100
#: Alerts remembered for the summary.
MAX_ALERTS: Final = 32
#: Notes (oddities worth telling a user) remembered for the summary.
MAX_NOTES: Final = 16
#: Characters of non-TLS data shown in a NotTls reason (its first line at most).
NOT_TLS_PREVIEW: Final = 40
#: A TLS 1.3 record up to this size is taken for an encrypted alert: 2-byte alert + 1-byte
#: inner content type + 16-byte AEAD tag = 19; a Finished is at least 4 + 32 + 1 + 16 = 53.
TLS13_ALERT_RECORD_MAX: Final = 24
#: Count a steady side's application_data records in one step (tests turn it off to compare).
SHORTCUT = True

#: The encrypt_then_mac extension (RFC 7366): how CBC records are protected, for decryption.
EXT_ENCRYPT_THEN_MAC: Final = 22

#: Zeek's ssl_history letters (server side; the client's are upper-cased).
HISTORY_LETTERS: Final = {
    C.HELLO_REQUEST: "h",
    C.CLIENT_HELLO: "c",
    C.SERVER_HELLO: "s",
    C.HELLO_VERIFY_REQUEST: "v",
    C.NEW_SESSION_TICKET: "t",
    C.END_OF_EARLY_DATA: "e",
    C.HELLO_RETRY_REQUEST: "j",
    C.ENCRYPTED_EXTENSIONS: "o",
    C.CERTIFICATE: "x",
    C.SERVER_KEY_EXCHANGE: "k",
    C.CERTIFICATE_REQUEST: "r",
    C.SERVER_HELLO_DONE: "n",
    C.CERTIFICATE_VERIFY: "y",
    C.CLIENT_KEY_EXCHANGE: "g",
    C.FINISHED: "f",
    C.CERTIFICATE_URL: "w",
    C.CERTIFICATE_STATUS: "u",
    C.SUPPLEMENTAL_DATA: "a",
    C.KEY_UPDATE: "p",
    C.MESSAGE_HASH: "m",
}
LETTER_UNKNOWN_HANDSHAKE: Final = "z"
LETTER_CHANGE_CIPHER_SPEC: Final = "i"
LETTER_ALERT: Final = "l"
LETTER_HEARTBEAT: Final = "b"
LETTER_UNKNOWN_CONTENT_TYPE: Final = "q"

#: Handshake progress, in order; ``last_step`` is the furthest one reached.
STEPS: Final = (
    "client_hello",
    "server_hello",
    "certificate",
    "server_key_exchange",
    "server_hello_done",
    "client_key_exchange",
    "change_cipher_spec",
    "finished",
    "application_data",
)
_STEP_INDEX: Final = {name: i for i, name in enumerate(STEPS)}

#: What a fatal alert usually means, for the failure reason.
ALERT_HINTS: Final = {
    "handshake_failure": "no cipher suite, group or signature algorithm in common, or a required extension missing",
    "protocol_version": "the peer does not accept the offered TLS version",
    "insufficient_security": "the peer requires stronger cipher suites than those offered",
    "inappropriate_fallback": "the client retried with a lower version than it supports",
    "unknown_ca": "the client does not trust the certificate's issuer",
    "bad_certificate": "the certificate was rejected",
    "certificate_expired": "the certificate has expired",
    "certificate_unknown": "the certificate was rejected",
    "certificate_required": "the server requires a client certificate",
    "unrecognized_name": "the server does not know the requested SNI name",
    "no_application_protocol": "no ALPN protocol in common",
    "decrypt_error": "a signature or Finished check failed",
    "illegal_parameter": "a handshake field was out of range or inconsistent",
}

#: Content types whose body is read while a direction is in plaintext.
_PLAINTEXT_TYPES: Final = frozenset({C.CHANGE_CIPHER_SPEC, C.ALERT, C.HANDSHAKE, C.HEARTBEAT})
#: An SMTP reply ("220 …", "554-…"): a server that speaks plaintext SMTP.
_SMTP_REPLY: Final = re.compile(rb"[2-5][0-9][0-9][ -]")


class _Short(Exception):
    """A field ran past the end of its message (malformed or truncated)."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Short
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        pos = self.pos
        if pos >= len(self.data):
            raise _Short
        self.pos = pos + 1
        return self.data[pos]

    def u16(self) -> int:
        pos = self.pos
        if pos + 2 > len(self.data):
            raise _Short
        self.pos = pos + 2
        return (self.data[pos] << 8) | self.data[pos + 1]

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec8(self) -> bytes:
        return self.take(self.u8())

    def vec16(self) -> bytes:
        return self.take(self.u16())

    def vec24(self) -> bytes:
        return self.take(self.u24())


def _u16_list(raw: bytes) -> tuple[int, ...]:
    """Big-endian 16-bit values (an odd last byte is ignored)."""
    return struct.unpack_from(f">{len(raw) // 2}H", raw)


def _without_grease(raw: bytes) -> tuple[int, ...]:
    return tuple(v for v in _u16_list(raw) if not C.is_grease(v))


def _extensions(r: _Reader) -> dict[int, bytes]:
    """The extensions block, if present (it is optional before TLS 1.2); first of each type."""
    exts: dict[int, bytes] = {}
    if r.remaining() == 0:
        return exts
    block = _Reader(r.vec16())
    while block.remaining():
        ext_type = block.u16()
        exts.setdefault(ext_type, block.vec16())
    return exts


def _alpn_names(raw: bytes) -> tuple[str, ...]:
    r = _Reader(raw)
    names = _Reader(r.vec16())
    out = []
    while names.remaining():
        out.append(_printable(names.vec8(), 255))
    return tuple(out)


def _printable(data: bytes, limit: int = NOT_TLS_PREVIEW) -> str:
    """Bytes as text safe to print: printable ASCII kept, everything else shown as '.'."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data[:limit])


def _first_line(data: bytes) -> bytes:
    """What a NotTls reason quotes: up to NOT_TLS_PREVIEW bytes, cut at the first line end."""
    return data[:NOT_TLS_PREVIEW].split(b"\n", 1)[0].rstrip(b"\r")


def _looks_like_text(sample: bytes) -> bool:
    printable = sum(1 for b in sample if 0x20 <= b < 0x7F or b == 0x09)
    return bool(sample) and printable * 10 >= len(sample) * 9


#: Certificates remembered once read: a server presents the same chain to every client, and
#: parsing one costs far more than anything else in a session.
CERTIFICATE_CACHE_SIZE: Final = 256


def parse_certificate(der: bytes) -> CertInfo:
    """A CertInfo from DER bytes; a certificate that cannot be read gives one with ``error`` set."""
    return _parse_certificate(bytes(der))


@functools.lru_cache(maxsize=CERTIFICATE_CACHE_SIZE)
def _parse_certificate(der: bytes) -> CertInfo:
    fingerprint = hashlib.sha256(der).hexdigest()
    fields = read_fields(der)
    if fields is None:
        try:
            fields = read_fields_by_cryptography(der)
        except Exception as exc:  # cryptography raises assorted errors on hostile input; never ours to raise
            return CertInfo("", "", None, None, (), False, fingerprint, error=f"unreadable certificate: {exc}")
    return CertInfo(*fields, fingerprint)


class _Side:
    """Parsing state of one direction."""

    __slots__ = (
        "from_client", "name", "stopped", "hdr", "body", "body_left", "skip",
        "rec_type", "sslv2", "records", "hs_buf", "hs_skip",
        "ccs", "finished", "app_data", "sealed13", "encrypted_records", "ended", "gap_bytes",
        "big13", "small13", "quote", "dec", "sealed", "rec_header", "steady",
    )

    def __init__(self, from_client: bool) -> None:
        self.from_client = from_client
        self.name = "client" if from_client else "server"
        self.stopped: str | None = None  # why parsing stopped: "not_tls", "gap" or "error"
        self.hdr = bytearray()
        self.body = bytearray()
        self.body_left = 0  # bytes of a kept record body still to come
        self.skip = 0  # bytes of a ciphertext record body still to discard
        self.rec_type = 0
        self.sslv2 = False
        self.records = 0
        self.hs_buf = bytearray()
        self.hs_skip = 0
        self.ccs = False
        self.finished = False
        self.app_data = 0  # application_data records
        self.sealed13 = False  # TLS 1.3: an application_data record since the ServerHello
        self.encrypted_records = 0
        self.ended = False
        self.gap_bytes = 0
        # TLS 1.3, after the ServerHello: records larger than an encrypted alert, and (client
        # only) alert-sized ones sent before any larger one.
        self.big13 = 0
        self.small13 = 0
        #: Not TLS: the bytes collected for the NotTls reason (until a line end or the limit).
        self.quote: bytearray | None = None
        #: With a key log: this direction's decryption state (see decrypt.py), else None.
        self.dec: DirectionDecrypter | None = None
        self.sealed = False  # the record being read is ciphertext to decrypt
        self.rec_header = b""  # its header: part of the decryption's additional data
        #: Handshake over, nothing to decrypt, first application data seen: from now on an
        #: application_data record only counts (``TlsSession._counted_record``).
        self.steady = False


def _dec(side: _Side) -> DirectionDecrypter:
    """The direction's decryption state, where a key log is known to be in use."""
    dec = side.dec
    assert dec is not None, "decrypting without a key log"
    return dec


class TlsSession:
    """Observes the TLS handshake of one connection. See the module docstring."""

    def __init__(self, keylog: KeyLog | None = None) -> None:
        self.client = _Side(True)
        self.server = _Side(False)
        self.keylog = keylog
        self.decrypter: TlsDecrypter | None = None
        if keylog is not None:
            from .decrypt import TlsDecrypter  # imported here: cryptography only when decrypting

            self.decrypter = TlsDecrypter(keylog)
            self.client.dec, self.server.dec = self.decrypter.client, self.decrypter.server
        self.decryption_error: str | None = None
        self.history: list[str] = []
        self.step = -1
        self.notes: list[str] = []
        self.finished_session = False
        # ClientHello
        self.attempted = False
        self.client_versions: tuple[int, ...] = ()
        self.client_max: int | None = None
        self.sni: str | None = None
        self.alpn_offered: tuple[str, ...] = ()
        self.session_id = b""
        self.client_random: bytes | None = None
        self.ticket_offered = False
        self.psk_offered = False
        # ServerHello and what follows
        self.version: int | None = None
        self.server_random: bytes | None = None
        self.compression = 0  # the ServerHello's compression method (TLS ≤ 1.2)
        self.encrypt_then_mac = False
        self.cipher: int | None = None
        self.curve: int | None = None
        self.alpn: str | None = None
        self.hello_retry = False
        self.retry_pending = False  # the last server hello was a HelloRetryRequest
        self.resumed: bool | None = None
        self.server_hello_done = False
        self.client_key_exchange = False
        self.certificates: list[dict] = []
        # TLS 1.3: alert-sized server records after the client's Finished-sized one
        self.server_alerts13 = 0
        # Outcome
        self.established = False
        self.established_inferred = False
        self.failure: str | None = None
        self.failure_inferred = False
        self.alerts: list[dict] = []
        self.not_tls: str | None = None
        self.not_tls_from: str | None = None
        self.not_tls_data = b""
        self.first_end: str | None = None

    def buffered(self) -> int:
        """Bytes this parser holds beyond its fixed size: records and handshake messages not
        yet complete, a not-TLS quote, the certificates read (an estimate, for the flow
        layer's memory budget)."""
        size = len(self.not_tls_data)
        for side in (self.client, self.server):
            size += side.hdr.__alloc__() + side.body.__alloc__() + side.hs_buf.__alloc__()
            if side.quote is not None:
                size += side.quote.__alloc__()
        for certificate in self.certificates:
            size += 600 + sum(8 + getsizeof(name) for name in certificate["san"])
        return size

    # -- public API ---------------------------------------------------------------------
    def receive(self, from_client: bool, data: bytes, ts: int) -> list[Event]:
        side = self.client if from_client else self.server
        out: list[Event] = []
        if not data or self.finished_session:
            return out
        if side.quote is not None:
            self._collect_not_tls(side, data, ts, out)
            return out
        if side.stopped:
            return out
        try:
            self._consume(side, data, ts, out)
        except Exception as exc:  # a parser bug must cost one direction, never the analysis
            self._stop(side, "error")
            self._note(f"internal error parsing the {side.name}'s TLS stream: {exc!r}")
        return out

    def gap(self, from_client: bool, length: int, ts: int) -> list[Event]:
        side = self.client if from_client else self.server
        out: list[Event] = []
        side.gap_bytes += max(length, 0)
        if self.finished_session:
            return out
        self._report_not_tls(side, ts, out)
        if not side.stopped:
            self._stop(side, "gap")
            self._note(f"{length} bytes missing from the {side.name}'s stream: its TLS records are no longer followed")
            if side.dec is not None and side.dec.active:
                side.dec.fail(f"{length} bytes missing from the {side.name}'s stream: its later records are not decrypted")
                self._decryption_failed(side, ts, out)
        return out

    def end_of_stream(self, from_client: bool, ts: int) -> list[Event]:
        side = self.client if from_client else self.server
        out: list[Event] = []
        if not side.ended and not self.finished_session:
            side.ended = True
            if self.first_end is None:
                self.first_end = side.name
            self._report_not_tls(side, ts, out)
            if not side.stopped and (side.hdr or side.body_left or side.skip):
                self._note(f"the {side.name}'s stream ended in the middle of a TLS record")
        return out

    def finish(self, ts: int, reset_by: str | None = None) -> list[Event]:
        out: list[Event] = []
        if self.finished_session:
            return out
        for side in (self.client, self.server):
            self._report_not_tls(side, ts, out)
        self.finished_session = True
        if not self.attempted or self.established or self.failure is not None:
            return out
        if self._tls13_after_server_hello() and self._tls13_completed_at_end():
            self._establish(
                out, ts, False, True,
                "TLS 1.3 (inferred at the end): the client sent its encrypted Finished flight and then data, "
                "and the server sent no alert",
            )
            self._advance("application_data")
            return out
        ended = reset_by is not None or self.client.ended or self.server.ended
        if not ended:
            self._note("the capture ended before the TLS handshake completed")
            return out
        if self.client.stopped == "gap" or self.server.stopped == "gap":
            self._note("bytes missing from the capture hide how the TLS handshake ended")
            return out
        reason, inferred, by_client = self._failure_reason(reset_by)
        self._fail(out, ts, by_client, reason, inferred)
        return out

    def summary(self) -> dict:
        alert = self._significant_alert()
        return {
            "attempted": self.attempted,
            "established": self.established,
            "established_inferred": self.established_inferred,
            "version": C.version_name(self.version),
            "client_max_version": C.version_name(self.client_max),
            "client_versions": [C.version_name(v) for v in self.client_versions],
            "sni": self.sni,
            "cipher": C.cipher_suite_name(self.cipher),
            "curve": C.group_name(self.curve),
            "alpn": self.alpn if self.alpn is not None else (list(self.alpn_offered) or None),
            "hello_retry": self.hello_retry,
            "resumed": self.resumed,
            "alert": alert["description"] if alert else None,
            "alert_from": alert["from"] if alert else None,
            "alert_encrypted": alert["encrypted"] if alert else False,
            "alerts": [dict(a) for a in self.alerts],
            "history": "".join(self.history),
            "last_step": STEPS[self.step] if self.step >= 0 else None,
            "failure": self.failure,
            "failure_inferred": self.failure_inferred,
            "certificates": list(self.certificates),
            "encrypted_records": {"client": self.client.encrypted_records, "server": self.server.encrypted_records},
            "application_data_records": {"client": self.client.app_data, "server": self.server.app_data},
            "not_tls": self.not_tls,
            "not_tls_from": self.not_tls_from,
            "gaps": {"client": self.client.gap_bytes, "server": self.server.gap_bytes},
            "notes": list(self.notes),
            "decrypted": self._decrypted(),
            "decryption_error": self.decryption_error,
            "decrypted_records": {
                "client": self.client.dec.records if self.client.dec else 0,
                "server": self.server.dec.records if self.server.dec else 0,
            },
        }

    def _decrypted(self) -> bool | None:
        """None without a key log; True when records were decrypted and nothing stopped it."""
        if self.decrypter is None:
            return None
        return self.decryption_error is None and _dec(self.client).records + _dec(self.server).records > 0

    # -- record layer ---------------------------------------------------------------------
    def _consume(self, side: _Side, data: bytes, ts: int, out: list[Event]) -> None:
        pos, n = 0, len(data)
        while pos < n and not side.stopped:
            if side.skip:
                take = min(side.skip, n - pos)
                side.skip -= take
                pos += take
            elif side.body_left and not side.body and n - pos >= side.body_left:
                # the whole body is in this chunk: no copy into the buffer
                end = pos + side.body_left
                side.body_left = 0
                body, pos = bytes(data[pos:end]), end
                self._record(side, body, ts, out)
            elif side.body_left:
                take = min(side.body_left, n - pos)
                side.body += data[pos : pos + take]
                side.body_left -= take
                pos += take
                if not side.body_left:
                    body = bytes(side.body)
                    side.body.clear()
                    self._record(side, body, ts, out)
            else:
                if side.steady and not side.hdr and n - pos >= C.TLS_RECORD_HEADER_LEN and SHORTCUT:
                    length = self._counted_record(side, data, pos, ts, out)
                    if length >= 0:
                        pos += C.TLS_RECORD_HEADER_LEN + length  # past its body, or ...
                        if pos > n:
                            side.skip = pos - n  # ... the rest of the body is still to come
                            pos = n
                        continue
                take = min(C.TLS_RECORD_HEADER_LEN - len(side.hdr), n - pos)
                side.hdr += data[pos : pos + take]
                pos += take
                if len(side.hdr) == C.TLS_RECORD_HEADER_LEN:
                    self._header(side, ts, out)
        if side.quote is not None:
            self._collect_not_tls(side, data[pos:], ts, out)

    def _counted_record(self, side: _Side, data: bytes, pos: int, ts: int, out: list[Event]) -> int:
        """A steady side's record header at ``data[pos:]``: if it opens an application_data
        record, count it as ``_header`` and ``_ciphertext`` would and return its length;
        else -1, having changed nothing."""
        length = (data[pos + 3] << 8) | data[pos + 4]
        if data[pos] != C.APPLICATION_DATA or data[pos + 1] != 3 or data[pos + 2] > 4 or length > C.MAX_RECORD_LEN:
            return -1
        side.records += 1
        side.rec_type = C.APPLICATION_DATA
        side.encrypted_records += 1
        side.app_data += 1
        if self._tls13():
            self._tls13_record(side, length, ts, out)
        return length

    def _header(self, side: _Side, ts: int, out: list[Event]) -> None:
        h = bytes(side.hdr)
        side.hdr.clear()
        side.records += 1
        if side.records == 1 and side.from_client and h[0] & 0x80 and h[2] == C.SSL2_MT_CLIENT_HELLO and h[3] in (0, 3):
            length = ((h[0] & 0x7F) << 8) | h[1]
            if length >= 9:  # type, version, three lengths
                side.sslv2 = True
                side.body += h[2:]
                side.body_left = length - 3
                return
        ctype, length = h[0], (h[3] << 8) | h[4]
        plausible = C.MIN_CONTENT_TYPE <= ctype <= C.MAX_CONTENT_TYPE and h[1] == 3 and h[2] <= 4
        if not plausible or length > C.MAX_RECORD_LEN:
            self._stop(side, "not_tls")
            side.quote = bytearray(h)
            return
        side.rec_type = ctype
        keep = self._keeps_body(side, ctype, length)
        if not keep and side.dec is not None and ctype <= C.HEARTBEAT:
            keep = side.sealed = self._can_open(side, ctype, ts, out)
            side.rec_header = h
        if keep:
            if length:
                side.body_left = length
            else:
                self._record(side, b"", ts, out)
        else:
            side.skip = length
            self._ciphertext(side, ctype, length, ts, out)

    def _keeps_body(self, side: _Side, ctype: int, length: int) -> bool:
        """Is this record's body plaintext worth reading? (Else it is skipped unbuffered.)"""
        if ctype not in _PLAINTEXT_TYPES:
            return False
        if self._tls13():
            # A TLS 1.3 alert is plaintext only before the keys exist: then exactly 2 bytes.
            return not side.sealed13 and (ctype != C.ALERT or length == C.ALERT_LEN)
        return not side.ccs

    def _can_open(self, side: _Side, ctype: int, ts: int, out: list[Event]) -> bool:
        """Can this encrypted record be decrypted? (A record before the keys ends decryption.)"""
        dec = _dec(side)
        if dec.active:
            # TLS 1.3 encrypts only in application_data records; anything else is not its ciphertext
            return ctype == C.APPLICATION_DATA or not self._tls13()
        if dec.error is None:
            dec.fail(f"the {side.name}'s encrypted records began before its keys could be derived "
                     "(0-RTT data, or the handshake is not in the capture)")
            self._decryption_failed(side, ts, out)
        return False

    def _decryption_failed(self, side: _Side, ts: int, out: list[Event]) -> None:
        reason = _dec(side).error or "not decrypted"
        if self.decryption_error is None:
            self.decryption_error = reason
        out.append(DecryptionFailed(ts, side.from_client, reason))

    def _collect_not_tls(self, side: _Side, data: bytes, ts: int, out: list[Event]) -> None:
        """Gather the bytes a NotTls reason quotes, so it reads the same however they were split."""
        raw = side.quote
        assert raw is not None  # collecting: it was set when the stream proved not TLS
        raw += data[: NOT_TLS_PREVIEW - len(raw)]
        if len(raw) >= NOT_TLS_PREVIEW or b"\n" in raw:
            self._report_not_tls(side, ts, out)

    def _report_not_tls(self, side: _Side, ts: int, out: list[Event]) -> None:
        raw = side.quote
        if raw is None:
            return
        side.quote = None
        quoted = _first_line(bytes(raw))
        if side.records == 1 and _looks_like_text(quoted):
            reason = f"plaintext where a TLS record was expected: '{_printable(quoted)}'"
        else:
            where = "where a TLS record was expected" if side.records == 1 else f"after {side.records - 1} TLS records"
            reason = (
                f"impossible TLS record header {where} (content type {raw[0]}, version 0x{raw[1]:02x}{raw[2]:02x}, "
                f"length {(raw[3] << 8) | raw[4]}): '{_printable(quoted)}'"
            )
        if self.not_tls is None:
            self.not_tls, self.not_tls_from, self.not_tls_data = reason, side.name, quoted
        out.append(NotTls(ts, side.from_client, reason))

    def _stop(self, side: _Side, why: str) -> None:
        side.stopped = why
        side.hdr.clear()
        side.body.clear()
        side.hs_buf.clear()
        side.body_left = side.skip = side.hs_skip = 0

    # -- records --------------------------------------------------------------------------
    def _record(self, side: _Side, body: bytes, ts: int, out: list[Event]) -> None:
        if side.sslv2:
            side.sslv2 = False
            self._sslv2_client_hello(side, body, ts, out)
            return
        if side.sealed:
            side.sealed = False
            opened = _dec(side).open(side.rec_header, body)
            if opened is None:
                self._decryption_failed(side, ts, out)
            self._ciphertext(side, side.rec_type, len(body), ts, out, opened)
            return
        self._content(side, side.rec_type, body, ts, out, False)

    def _content(self, side: _Side, ctype: int, body: bytes, ts: int, out: list[Event], decrypted: bool) -> None:
        """A plaintext record body, read off the wire or decrypted, by its (inner) content type."""
        if ctype == C.CHANGE_CIPHER_SPEC:
            self._change_cipher_spec(side, ts, out)
        elif ctype == C.ALERT:
            for i in range(0, len(body) - 1, C.ALERT_LEN):
                self._alert(side, body[i], body[i + 1], ts, out, decrypted)
        elif ctype == C.HANDSHAKE:
            self._handshake_bytes(side, body, ts, out)
        elif ctype == C.APPLICATION_DATA:  # only ever decrypted
            if body:
                out.append(DecryptedData(ts, side.from_client, body))
        elif ctype == C.HEARTBEAT:
            self._letter(side, LETTER_HEARTBEAT)
        else:
            self._letter(side, LETTER_UNKNOWN_CONTENT_TYPE)

    def _ciphertext(
        self, side: _Side, ctype: int, length: int, ts: int, out: list[Event],
        opened: tuple[int, bytes] | None = None,
    ) -> None:
        """An encrypted record (``opened``: its content type and plaintext, when decrypted), or a
        record of a content type we do not parse."""
        if ctype > C.HEARTBEAT:
            self._letter(side, LETTER_UNKNOWN_CONTENT_TYPE)
            return
        side.encrypted_records += 1
        if ctype == C.APPLICATION_DATA:
            side.app_data += 1
            if side.app_data == 1:
                out.append(ApplicationData(ts, side.from_client, length))
        if opened is not None:
            self._content(side, opened[0], opened[1], ts, out, True)
            if side is self.server and opened[0] != C.ALERT:
                self._tls13_server_went_on(ts, out)
        elif ctype == C.ALERT:
            self._encrypted_alert(side, ts, out)
        elif ctype == C.HANDSHAKE and not side.finished:
            side.finished = True
            out.append(HandshakeMessage(ts, side.from_client, "finished", length))
            self._advance("finished")
            self._check_established(side, ts, out)
        if ctype == C.APPLICATION_DATA:
            if self._tls13():
                self._tls13_record(side, length, ts, out)
            else:
                self._check_established(side, ts, out)
            if self.established:
                self._advance("application_data")
                side.steady = side.dec is None and opened is None

    def _change_cipher_spec(self, side: _Side, ts: int, out: list[Event]) -> None:
        out.append(ChangeCipherSpec(ts, side.from_client))
        self._letter(side, LETTER_CHANGE_CIPHER_SPEC)
        side.ccs = True
        if self._tls13():
            return  # compatibility CCS (RFC 8446 Appendix D.4): changes nothing
        if side.hs_buf or side.hs_skip:
            self._note(f"the {side.name}'s ChangeCipherSpec cut a handshake message short")
            side.hs_buf.clear()
            side.hs_skip = 0
        self._advance("change_cipher_spec")
        if not side.from_client and self.cipher is not None and self.resumed is None:
            # An abbreviated handshake: the server's CCS follows its hello directly.
            self.resumed = not self.server_hello_done
        if self.decrypter is not None and self.version is not None:
            self._key_change(ts, out, self.decrypter.start_tls12, side.from_client, self.client_random,
                             self.server_random, self.version, self.cipher, self.compression, self.encrypt_then_mac)

    def _key_change(self, ts: int, out: list[Event], change, *args) -> None:
        """Run a TlsDecrypter key change; report each direction it leaves without keys."""
        before = (_dec(self.client).error, _dec(self.server).error)
        change(*args)
        for side, had in zip((self.client, self.server), before):
            if had is None and _dec(side).error is not None:
                self._decryption_failed(side, ts, out)

    def _alert(
        self, side: _Side, level: int, description: int, ts: int, out: list[Event], decrypted: bool = False,
    ) -> None:
        level_name = C.alert_level_name(level)
        desc = C.alert_description_name(description)
        out.append(Alert(ts, side.from_client, level, description, decrypted, decrypted))
        self._letter(side, LETTER_ALERT)
        fatal = level == C.FATAL
        if self._tls13():  # RFC 8446 §6: the level is ignored; all but these two are fatal
            fatal = description not in (C.CLOSE_NOTIFY, C.USER_CANCELED)
        self._remember_alert(side, ts, "fatal" if fatal else level_name, desc, decrypted, decrypted)
        if fatal and not self.established and self.failure is None and self.attempted:
            hint = ALERT_HINTS.get(desc)
            reason = f"the {side.name} sent a fatal {desc} alert" + (f" ({hint})" if hint else "")
            if desc in ("protocol_version", "handshake_failure") and self._client_below_tls12():
                reason += f"; the client offered at most {C.version_name(self.client_max)}"
            self._fail(out, ts, side.from_client, reason, False)

    def _encrypted_alert(self, side: _Side, ts: int, out: list[Event]) -> None:
        out.append(Alert(ts, side.from_client, None, None, True))
        self._remember_alert(side, ts, None, None, True)

    def _remember_alert(
        self, side: _Side, ts: int, level: str | None, desc: str | None, encrypted: bool, decrypted: bool = False,
    ) -> None:
        if len(self.alerts) < MAX_ALERTS:
            self.alerts.append({
                "ts": ts, "from": side.name, "level": level, "description": desc,
                "encrypted": encrypted, "decrypted": decrypted, "during_handshake": not self.established,
            })

    # -- handshake messages ---------------------------------------------------------------
    def _handshake_bytes(self, side: _Side, data: bytes, ts: int, out: list[Event]) -> None:
        pos, n = 0, len(data)
        buf = side.hs_buf
        while pos < n:
            if side.hs_skip:
                take = min(side.hs_skip, n - pos)
                side.hs_skip -= take
                pos += take
                continue
            if len(buf) < C.HANDSHAKE_HEADER_LEN:
                take = min(C.HANDSHAKE_HEADER_LEN - len(buf), n - pos)
                buf += data[pos : pos + take]
                pos += take
                if len(buf) < C.HANDSHAKE_HEADER_LEN:
                    return
            msg_type = buf[0]
            length = int.from_bytes(buf[1:4], "big")
            if length > MAX_HANDSHAKE_MESSAGE:
                name = C.handshake_type_name(msg_type)
                self._note(f"{side.name} {name} of {length} bytes skipped (limit {MAX_HANDSHAKE_MESSAGE})")
                self._letter(side, HISTORY_LETTERS.get(msg_type, LETTER_UNKNOWN_HANDSHAKE))
                out.append(HandshakeMessage(ts, side.from_client, name, length))
                buf.clear()
                side.hs_skip = length
                continue
            take = min(C.HANDSHAKE_HEADER_LEN + length - len(buf), n - pos)
            buf += data[pos : pos + take]
            pos += take
            if len(buf) == C.HANDSHAKE_HEADER_LEN + length:
                body = bytes(buf[C.HANDSHAKE_HEADER_LEN :])
                buf.clear()
                self._handshake_message(side, msg_type, body, ts, out)

    def _handshake_message(self, side: _Side, msg_type: int, body: bytes, ts: int, out: list[Event]) -> None:
        if msg_type == C.CLIENT_HELLO:
            self._client_hello(side, body, ts, out)
        elif msg_type in (C.SERVER_HELLO, C.HELLO_RETRY_REQUEST):
            self._server_hello(side, msg_type, body, ts, out)
        elif msg_type == C.CERTIFICATE:
            self._letter(side, HISTORY_LETTERS[msg_type])
            self._certificate(side, body, ts, out)
        else:
            self._letter(side, HISTORY_LETTERS.get(msg_type, LETTER_UNKNOWN_HANDSHAKE))
            out.append(HandshakeMessage(ts, side.from_client, C.handshake_type_name(msg_type), len(body)))
            if msg_type == C.SERVER_KEY_EXCHANGE and not side.from_client:
                self._server_key_exchange(body)
                self._advance("server_key_exchange")
            elif msg_type == C.SERVER_HELLO_DONE and not side.from_client:
                self.server_hello_done = True
                self._advance("server_hello_done")
            elif msg_type == C.CLIENT_KEY_EXCHANGE and side.from_client:
                self.client_key_exchange = True
                self._advance("client_key_exchange")
            elif msg_type == C.FINISHED:  # decrypted, or plaintext with a NULL cipher
                side.finished = True
                self._advance("finished")
                self._check_established(side, ts, out)
                if self.decrypter is not None and self._tls13():
                    self._key_change(ts, out, self.decrypter.tls13_application, side.from_client)
            elif msg_type == C.KEY_UPDATE and self.decrypter is not None and self._tls13():
                self.decrypter.tls13_key_update(side.from_client)
            elif msg_type == C.ENCRYPTED_EXTENSIONS and not side.from_client:
                self._encrypted_extensions(body)

    def _client_hello(self, side: _Side, body: bytes, ts: int, out: list[Event]) -> None:
        self._letter(side, HISTORY_LETTERS[C.CLIENT_HELLO])
        r = _Reader(body)
        legacy, sni = 0, None
        suites: tuple[int, ...] = ()
        alpn: tuple[str, ...] = ()
        groups: tuple[int, ...] = ()
        versions: tuple[int, ...] = ()
        malformed = None
        try:
            legacy = r.u16()
            self.client_random = r.take(32)
            self.session_id = r.vec8()
            suites = _u16_list(r.vec16())
            r.vec8()  # compression methods
            exts = _extensions(r)
            if C.EXT_SERVER_NAME in exts:
                sni = self._server_name(exts[C.EXT_SERVER_NAME])
            if C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION in exts:
                alpn = _alpn_names(exts[C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION])
            if C.EXT_SUPPORTED_GROUPS in exts:
                groups = _without_grease(_Reader(exts[C.EXT_SUPPORTED_GROUPS]).vec16())
            if C.EXT_SUPPORTED_VERSIONS in exts:
                versions = _without_grease(_Reader(exts[C.EXT_SUPPORTED_VERSIONS]).vec8())
            self.ticket_offered = bool(exts.get(C.EXT_SESSION_TICKET))
            self.psk_offered = C.EXT_PRE_SHARED_KEY in exts
        except _Short:
            malformed = "ClientHello truncated or malformed"
            self._note(f"{side.name}: {malformed}")
        self._client_offer(side, legacy, versions, suites, sni, alpn, groups, False, malformed, ts, out)

    def _sslv2_client_hello(self, side: _Side, body: bytes, ts: int, out: list[Event]) -> None:
        self._letter(side, HISTORY_LETTERS[C.CLIENT_HELLO])
        r = _Reader(body)
        legacy, malformed = 0, None
        suites: tuple[int, ...] = ()
        try:
            r.u8()  # msg_type, checked by the record layer
            legacy = r.u16()
            spec_len, sid_len, challenge_len = r.u16(), r.u16(), r.u16()
            specs = r.take(spec_len)
            # Three-byte SSL 2.0 cipher kinds; those starting with 0 are TLS cipher suites.
            suites = tuple(
                int.from_bytes(specs[i + 1 : i + 3], "big")
                for i in range(0, spec_len - C.SSL2_CIPHER_SPEC_LEN + 1, C.SSL2_CIPHER_SPEC_LEN)
                if specs[i] == 0
            )
            self.session_id = r.take(sid_len)
            # The challenge is the client random, right-aligned (RFC 5246 Appendix E.2).
            self.client_random = r.take(challenge_len)[-32:].rjust(32, b"\0")
        except _Short:
            malformed = "SSL 2.0 compatible ClientHello truncated or malformed"
            self._note(f"{side.name}: {malformed}")
        self._client_offer(side, legacy, (), suites, None, (), (), True, malformed, ts, out)

    def _client_offer(self, side, legacy, versions, suites, sni, alpn, groups, sslv2, malformed, ts, out) -> None:
        offered = versions or (legacy,)
        max_version = max(offered, key=C.version_rank)
        self.attempted = True
        self.client_versions = offered
        self.client_max = max_version
        self.sni = sni
        self.alpn_offered = alpn
        self._advance("client_hello")
        out.append(
            ClientHello(ts, side.from_client, legacy, offered, max_version, suites, sni, alpn, groups, sslv2, malformed)
        )

    @staticmethod
    def _server_name(raw: bytes) -> str | None:
        names = _Reader(_Reader(raw).vec16())
        while names.remaining():
            name_type = names.u8()
            name = names.vec16()
            if name_type == C.SNI_HOST_NAME:
                return _printable(name, 255)
        return None

    def _server_hello(self, side: _Side, msg_type: int, body: bytes, ts: int, out: list[Event]) -> None:
        r = _Reader(body)
        legacy = suite = 0
        version = None
        hrr = msg_type == C.HELLO_RETRY_REQUEST
        session_id, exts, malformed, random_, compression = b"", {}, None, None, 0
        try:
            legacy = r.u16()
            # TLS 1.3 drafts before 22 dropped session_id and compression_method, and a
            # draft HelloRetryRequest (type 6) carries neither random nor cipher suite.
            draft = legacy >> 8 == C.TLS13_DRAFT_MAJOR and legacy & 0xFF < 22
            if not hrr:
                random_ = r.take(32)
                hrr = random_ == C.HELLO_RETRY_REQUEST_RANDOM
                if not draft:
                    session_id = r.vec8()
                suite = r.u16()
                if not draft:
                    compression = r.u8()
            exts = _extensions(r)
            if C.EXT_SUPPORTED_VERSIONS in exts:
                version = _Reader(exts[C.EXT_SUPPORTED_VERSIONS]).u16()
        except _Short:
            malformed = "ServerHello truncated or malformed"
            self._note(f"{side.name}: {malformed}")
        self._letter(side, HISTORY_LETTERS[C.HELLO_RETRY_REQUEST] if hrr else HISTORY_LETTERS[C.SERVER_HELLO])
        version = version if version is not None else legacy
        self.version = version
        if msg_type != C.HELLO_RETRY_REQUEST:
            self.cipher = suite
        if not hrr:
            self.server_random = random_
            self.compression = compression
            self.encrypt_then_mac = EXT_ENCRYPT_THEN_MAC in exts
        self.hello_retry = self.hello_retry or hrr
        self.retry_pending = hrr
        draft_key_share = version >> 8 == C.TLS13_DRAFT_MAJOR and version & 0xFF < 23
        group = self._server_hello_extensions(exts, draft_key_share)
        if C.is_tls13(version):
            self.resumed = C.EXT_PRE_SHARED_KEY in exts and self.psk_offered
        elif self.session_id and session_id == self.session_id:
            self.resumed = True
        elif self.ticket_offered:
            self.resumed = None  # decided by the server's next flight
        else:
            self.resumed = False
        # A new hello restarts the TLS 1.3 record accounting of both directions.
        for s in (self.client, self.server):
            s.sealed13 = False
            s.big13 = s.small13 = 0
        self._advance("server_hello")
        out.append(
            ServerHello(ts, side.from_client, legacy, version, suite, hrr, self.resumed, self.alpn, group, malformed)
        )
        if self.decrypter is not None and not hrr and C.is_tls13(version):
            self._key_change(ts, out, self.decrypter.start_tls13, self.client_random, version, suite)

    def _server_hello_extensions(self, exts: dict[int, bytes], draft_key_share: bool) -> int | None:
        group = None
        key_share = C.EXT_KEY_SHARE_DRAFT if draft_key_share else C.EXT_KEY_SHARE
        try:
            if key_share in exts:
                group = _Reader(exts[key_share]).u16()
                self.curve = group
            if C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION in exts:
                selected = _alpn_names(exts[C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION])
                self.alpn = selected[0] if selected else None
        except _Short:
            self._note("server: malformed ServerHello extension")
        return group

    def _encrypted_extensions(self, body: bytes) -> None:
        """TLS 1.3 (decrypted): the server's ALPN choice lives here, not in the ServerHello."""
        try:
            exts = _extensions(_Reader(body))
            if C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION in exts:
                selected = _alpn_names(exts[C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION])
                self.alpn = selected[0] if selected else None
        except _Short:
            self._note("server: malformed EncryptedExtensions")

    def _server_key_exchange(self, body: bytes) -> None:
        suite = C.cipher_suite_name(self.cipher) or ""
        # ServerECDHParams (RFC 8422 §5.4) open with curve_type, then the named curve.
        if ("_ECDHE_" in suite or "_ECDH_anon_" in suite) and len(body) >= 3 and body[0] == C.EC_CURVE_TYPE_NAMED_CURVE:
            self.curve = int.from_bytes(body[1:3], "big")

    def _certificate(self, side: _Side, body: bytes, ts: int, out: list[Event]) -> None:
        chain: list[CertInfo] = []
        count = 0
        tls13 = self._tls13()
        try:
            r = _Reader(body)
            if tls13:
                r.vec8()  # certificate_request_context
            certs = _Reader(r.vec24())
            while certs.remaining():
                der = certs.vec24()
                if tls13:
                    certs.vec16()  # the entry's extensions (OCSP status, SCTs)
                count += 1
                if len(chain) < MAX_CHAIN_CERTIFICATES:
                    chain.append(parse_certificate(der))
        except _Short:
            self._note(f"{side.name}: Certificate message truncated or malformed")
        out.append(Certificate(ts, side.from_client, tuple(chain), count))
        if not side.from_client:
            if not self.certificates:
                self.certificates = [c.as_dict() for c in chain]
            self._advance("certificate")

    # -- outcome --------------------------------------------------------------------------
    def _check_established(self, side: _Side, ts: int, out: list[Event]) -> None:
        """TLS ≤ 1.2 (TLS 1.3 is inferred in _tls13_record)."""
        if self.established or self.failure is not None or self._tls13():
            return
        c, s = self.client, self.server
        if not (c.ccs and s.ccs and (c.finished or c.app_data) and (s.finished or s.app_data)):
            return
        if c.finished and s.finished:
            self._establish(out, ts, side.from_client, False, "both sides sent ChangeCipherSpec and Finished")
        else:
            self._establish(out, ts, side.from_client, True, "both sides sent ChangeCipherSpec and then encrypted data")

    def _tls13_record(self, side: _Side, length: int, ts: int, out: list[Event]) -> None:
        """TLS 1.3 after the ServerHello: infer the hidden Finished messages from record sizes."""
        side.sealed13 = True
        big = length > TLS13_ALERT_RECORD_MAX
        client, server = self.client, self.server
        if side is server and client.big13 == 0:
            server.big13 += big  # its own flight
        elif side is client and server.big13:  # before the server's flight it is early data
            if big:
                client.big13 += 1
                if client.big13 == 1:
                    self._advance("finished")
            elif client.big13 == 0:
                client.small13 += 1
        elif side is server and not self.established and self.failure is None:
            if big:
                self._establish(
                    out, ts, False, True,
                    "TLS 1.3: the client sent its encrypted Finished flight and the server answered with "
                    "encrypted data (a session ticket or application data)",
                )
                self._advance("application_data")
            else:
                self.server_alerts13 += 1

    def _tls13_server_went_on(self, ts: int, out: list[Event]) -> None:
        """TLS 1.3, decrypted: a server record other than an alert after both Finished messages
        shows that the server accepted the client's Finished (and certificate, if it asked)."""
        c, s = self.client, self.server
        if self._tls13() and c.finished and s.finished and not self.established and self.failure is None:
            self._establish(
                out, ts, False, False,
                "TLS 1.3: both Finished messages decrypted, and the server went on after the client's",
            )

    def _tls13_completed_at_end(self) -> bool:
        """Client Finished flight and more client data, no alert-sized answer: it worked."""
        return self.client.big13 >= 2 and self.server_alerts13 == 0

    def _establish(self, out: list[Event], ts: int, from_client: bool, inferred: bool, detail: str) -> None:
        self.established = True
        self.established_inferred = inferred
        out.append(HandshakeComplete(ts, from_client, inferred, detail))

    def _fail(self, out: list[Event], ts: int, from_client: bool, reason: str, inferred: bool) -> None:
        self.failure = reason
        self.failure_inferred = inferred
        out.append(HandshakeFailed(ts, from_client, reason, inferred))

    def _failure_reason(self, reset_by: str | None) -> tuple[str, bool, bool]:
        """Why a handshake that never completed ended: (reason, inferred, blamed side is client)."""
        c, s = self.client, self.server
        closer = reset_by or self.first_end or "client"
        ended = f"the {closer} {'reset' if reset_by else 'closed'} the connection"
        by_client = closer == "client"
        if self.not_tls is not None:
            reason = f"the {self.not_tls_from} sent data that is not TLS ({self.not_tls})"
            if self.not_tls_from == "server" and _SMTP_REPLY.match(self.not_tls_data):
                reason += "; the server speaks plaintext SMTP here: it expects STARTTLS, not implicit TLS, on this port"
            return reason, False, self.not_tls_from == "client"
        encrypted = [a for a in self.alerts if a["encrypted"] and not a["decrypted"] and a["during_handshake"]]
        if encrypted:
            sender = encrypted[0]["from"]
            return (
                f"the {sender} sent an encrypted alert during the handshake and {ended}; "
                "its description is encrypted (a failed Finished or certificate check is likely)",
                True, sender == "client",
            )
        if self.version is None:
            reason = f"{ended} after the ClientHello, before any ServerHello"
            if self._client_below_tls12():
                reason += (
                    f"; the client offered at most {C.version_name(self.client_max)}, "
                    "which many servers (Microsoft 365 among them) refuse"
                )
            return reason, False, by_client
        if self._tls13_after_server_hello():
            return self._tls13_failure(ended, by_client)
        if self.server_hello_done and not self.client_key_exchange and not c.ccs:
            reason = f"{ended} after the server's certificate, before the client's key exchange"
            if by_client:
                reason += " (the client most likely rejected the server certificate)"
            return reason, False, by_client
        if c.ccs and not s.ccs:
            return (
                f"{ended} after the client's ChangeCipherSpec and Finished, before the server's: "
                "the server did not accept the client's key exchange or Finished",
                False, by_client,
            )
        return f"{ended} during the handshake, after the {STEPS[self.step].replace('_', ' ')}", False, by_client

    def _tls13_failure(self, ended: str, by_client: bool) -> tuple[str, bool, bool]:
        c = self.client
        if c.big13 == 0 and c.small13 == 0:
            if not by_client:
                return f"{ended} after its encrypted flight, before the client answered", True, False
            reason = (
                f"{ended} after the server's encrypted flight without completing the handshake; in TLS 1.3 the "
                "reason is encrypted (likely the server certificate was rejected by the client)"
            )
            return reason, True, True
        if c.big13 == 0:
            return (
                f"the client answered the server's encrypted flight only with a short encrypted record (most likely an "
                f"alert) and {ended}; in TLS 1.3 the reason is encrypted (likely the server certificate was rejected "
                "by the client)",
                True, True,
            )
        if self.server_alerts13:
            return (
                f"the server answered the client's Finished with a short encrypted record (most likely an alert, e.g. "
                f"a client certificate required or rejected) and {ended}",
                True, False,
            )
        return f"{ended} right after the client's Finished; no data followed in either direction", True, by_client

    def _tls13(self) -> bool:
        return C.is_tls13(self.version)

    def _tls13_after_server_hello(self) -> bool:
        return self._tls13() and not self.retry_pending

    def _client_below_tls12(self) -> bool:
        return self.client_max is not None and C.version_rank(self.client_max) < C.version_rank(C.TLSv1_2)

    def _significant_alert(self) -> dict | None:
        """First fatal alert; else an undecrypted one during the handshake; else the last warning."""
        for a in self.alerts:
            if a["level"] == "fatal":
                return a
        for a in self.alerts:
            if a["encrypted"] and not a["decrypted"] and a["during_handshake"]:
                return a
        for a in self.alerts[::-1]:  # not reversed(): mypyc 2.4 fails to compile it here
            if a["description"] is not None and a["description"] != "close_notify":
                return a
        return None

    # -- bookkeeping ----------------------------------------------------------------------
    def _letter(self, side: _Side, letter: str) -> None:
        if len(self.history) < MAX_HISTORY:
            self.history.append(letter.upper() if side.from_client else letter)

    def _advance(self, step: str) -> None:
        self.step = max(self.step, _STEP_INDEX[step])

    def _note(self, text: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append(text)
