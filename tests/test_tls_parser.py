"""The TLS observer, table-driven (h11 style).

Each case is a conversation: byte chunks per direction in order, how the connection ended,
the events expected and summary fields expected. Every case is replayed whole, a byte at a
time, and split at every byte boundary, and must give the same events and summary. Real
handshakes come from Python's ``ssl`` over memory BIOs (trustme certificates), synthetic
ones from the record builders below for what a real stack will not produce on demand.
"""

from __future__ import annotations

import json
import random
import ssl
from dataclasses import dataclass, field
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analyzer.protocols.tls import (
    Alert,
    ClientHello,
    HandshakeComplete,
    HandshakeFailed,
    NotTls,
    ServerHello,
    TlsSession,
    parse_certificate,
)
from analyzer.protocols.tls import constants as C
from analyzer.protocols.tls import parser as P

trustme = pytest.importorskip("trustme")

# -- record builders ------------------------------------------------------------------------


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def vec8(b: bytes) -> bytes:
    return bytes([len(b)]) + b


def vec16(b: bytes) -> bytes:
    return u16(len(b)) + b


def vec24(b: bytes) -> bytes:
    return len(b).to_bytes(3, "big") + b


def record(ctype: int, body: bytes, version: int = C.TLSv1_2) -> bytes:
    return bytes([ctype]) + u16(version) + u16(len(body)) + body


def hs(msg_type: int, body: bytes = b"") -> bytes:
    return bytes([msg_type]) + vec24(body)


def handshake(*messages: bytes, version: int = C.TLSv1_2) -> bytes:
    return record(C.HANDSHAKE, b"".join(messages), version)


def ext(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vec16(data)


def client_hello(
    legacy: int = C.TLSv1_2,
    versions: tuple[int, ...] = (),
    suites: tuple[int, ...] = (0xC02F, 0xC030),
    sni: str | None = None,
    alpn: tuple[str, ...] = (),
    groups: tuple[int, ...] = (),
    session_id: bytes = b"",
    ticket: bytes | None = None,
    psk: bool = False,
) -> bytes:
    exts = b""
    if sni:
        exts += ext(C.EXT_SERVER_NAME, vec16(b"\x00" + vec16(sni.encode())))
    if groups:
        exts += ext(C.EXT_SUPPORTED_GROUPS, vec16(b"".join(map(u16, groups))))
    if alpn:
        exts += ext(C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION, vec16(b"".join(vec8(a.encode()) for a in alpn)))
    if versions:
        exts += ext(C.EXT_SUPPORTED_VERSIONS, vec8(b"".join(map(u16, versions))))
    if ticket is not None:
        exts += ext(C.EXT_SESSION_TICKET, ticket)
    if psk:
        exts += ext(C.EXT_PRE_SHARED_KEY, vec16(vec16(b"id") + bytes(4)) + vec16(vec8(bytes(32))))
    body = u16(legacy) + bytes(32) + vec8(session_id) + vec16(b"".join(map(u16, suites))) + vec8(b"\x00") + vec16(exts)
    return hs(C.CLIENT_HELLO, body)


def server_hello(
    legacy: int = C.TLSv1_2,
    suite: int = 0xC02F,
    version: int | None = None,
    key_share: int | None = None,
    session_id: bytes = b"",
    random_: bytes = bytes(32),
    alpn: str | None = None,
    psk: bool = False,
) -> bytes:
    exts = b""
    if version is not None:
        exts += ext(C.EXT_SUPPORTED_VERSIONS, u16(version))
    if key_share is not None:
        exts += ext(C.EXT_KEY_SHARE, u16(key_share) + vec16(bytes(32)))
    if alpn:
        exts += ext(C.EXT_APPLICATION_LAYER_PROTOCOL_NEGOTIATION, vec16(vec8(alpn.encode())))
    if psk:
        exts += ext(C.EXT_PRE_SHARED_KEY, u16(0))
    body = u16(legacy) + random_ + vec8(session_id) + u16(suite) + b"\x00" + vec16(exts)
    return hs(C.SERVER_HELLO, body)


def hello_retry(group: int = 23) -> bytes:
    body = (
        u16(C.TLSv1_2) + C.HELLO_RETRY_REQUEST_RANDOM + vec8(b"") + u16(0x1302) + b"\x00"
        + vec16(ext(C.EXT_SUPPORTED_VERSIONS, u16(C.TLSv1_3)) + ext(C.EXT_KEY_SHARE, u16(group)))
    )
    return hs(C.SERVER_HELLO, body)


def certificate(*ders: bytes) -> bytes:
    return hs(C.CERTIFICATE, vec24(b"".join(vec24(d) for d in ders)))


def ske_ecdhe(group: int = 23) -> bytes:
    return hs(C.SERVER_KEY_EXCHANGE, b"\x03" + u16(group) + vec8(bytes(65)) + u16(0x0401) + vec16(bytes(256)))


SHD = hs(C.SERVER_HELLO_DONE)
CKE = hs(C.CLIENT_KEY_EXCHANGE, vec8(bytes(65)))
CCS = record(C.CHANGE_CIPHER_SPEC, b"\x01")


def alert(level: int, description: int) -> bytes:
    return record(C.ALERT, bytes([level, description]))


def sealed(ctype: int, length: int) -> bytes:
    """A ciphertext record (the bytes look random, as ciphertext does)."""
    rng = random.Random(length * 31 + ctype)
    return record(ctype, bytes(rng.randrange(256) for _ in range(length)))


def appdata(length: int) -> bytes:
    return sealed(C.APPLICATION_DATA, length)


def ssl2_client_hello(version: int = C.TLSv1_0) -> bytes:
    specs = bytes.fromhex("010080" "000039" "00002f" "000005")  # SSL2 RC4-MD5, then TLS suites
    challenge = bytes(16)
    body = bytes([C.SSL2_MT_CLIENT_HELLO]) + u16(version) + u16(len(specs)) + u16(0) + u16(len(challenge)) + specs + challenge
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


TLS12_SERVER_FLIGHT = handshake(server_hello(), certificate(b"not a certificate"), ske_ecdhe(23), SHD)
TLS13_CLIENT_HELLO = handshake(
    client_hello(versions=(0x1A1A, C.TLSv1_3, C.TLSv1_2), groups=(0x2A2A, 29, 23), sni="mail.example.test",
                 suites=(0x1301, 0x1302, 0xC02F), alpn=("smtp",)),
    version=C.TLSv1_0,
)
TLS13_SERVER_HELLO = handshake(server_hello(suite=0x1302, version=C.TLSv1_3, key_share=29))

# -- the table ------------------------------------------------------------------------------
CLIENT, SERVER = True, False


@dataclass
class Case:
    name: str
    chunks: list[tuple[bool, bytes]]
    events: list[str]
    summary: dict = field(default_factory=dict)
    #: How the connection ended: ("fin", side) / ("reset", side) entries, in order.
    ends: tuple = (("fin", CLIENT), ("fin", SERVER))
    exhaustive: bool = True  # split at every byte boundary (off for huge inputs)


CASES = [
    Case(
        "TLS 1.2 full handshake, data both ways",
        [
            (CLIENT, handshake(client_hello(sni="mail.example.test", groups=(29, 23)), version=C.TLSv1_0)),
            (SERVER, TLS12_SERVER_FLIGHT),
            (CLIENT, handshake(CKE) + CCS + sealed(C.HANDSHAKE, 40)),
            (SERVER, handshake(hs(C.NEW_SESSION_TICKET, bytes(100))) + CCS + sealed(C.HANDSHAKE, 40)),
            (CLIENT, appdata(40) + appdata(50)),
            (SERVER, appdata(60)),
            (CLIENT, sealed(C.ALERT, 26)),
        ],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_key_exchange", "hs:server_hello_done",
         "hs:client_key_exchange", "ChangeCipherSpec", "hs:finished", "hs:new_session_ticket", "ChangeCipherSpec",
         "hs:finished", "HandshakeComplete", "ApplicationData", "ApplicationData", "alert:encrypted"],
        {"established": True, "established_inferred": False, "version": "TLSv1.2", "sni": "mail.example.test",
         "cipher": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "curve": "secp256r1", "history": "CsxknGIti",
         "last_step": "application_data", "alert": None, "failure": None, "resumed": False,
         "encrypted_records": {"client": 4, "server": 2}, "client_max_version": "TLSv1.2"},
    ),
    Case(
        "TLS 1.2 abbreviated handshake: session id echoed",
        [
            (CLIENT, handshake(client_hello(session_id=b"\x07" * 32))),
            (SERVER, handshake(server_hello(session_id=b"\x07" * 32)) + CCS + sealed(C.HANDSHAKE, 40)),
            (CLIENT, CCS + sealed(C.HANDSHAKE, 40)),
        ],
        ["ClientHello", "ServerHello", "ChangeCipherSpec", "hs:finished", "ChangeCipherSpec", "hs:finished",
         "HandshakeComplete"],
        {"established": True, "resumed": True, "history": "CsiI", "last_step": "finished"},
    ),
    Case(
        "TLS 1.2 session-ticket resumption: the server's CCS follows its hello",
        [
            (CLIENT, handshake(client_hello(ticket=bytes(160)))),
            (SERVER, handshake(server_hello(), hs(C.NEW_SESSION_TICKET, bytes(100))) + CCS + sealed(C.HANDSHAKE, 40)),
            (CLIENT, CCS + sealed(C.HANDSHAKE, 40)),
        ],
        ["ClientHello", "ServerHello", "hs:new_session_ticket", "ChangeCipherSpec", "hs:finished",
         "ChangeCipherSpec", "hs:finished", "HandshakeComplete"],
        {"established": True, "resumed": True, "history": "CstiI"},
    ),
    Case(
        "TLS 1.2: ALPN chosen by the server, warning alert unrecognized_name is no failure",
        [
            (CLIENT, handshake(client_hello(alpn=("h2", "smtp")))),
            (SERVER, alert(C.WARNING, 112) + handshake(server_hello(alpn="smtp"), SHD)),
            (CLIENT, handshake(CKE) + CCS + sealed(C.HANDSHAKE, 40)),
            (SERVER, CCS + sealed(C.HANDSHAKE, 40)),
        ],
        ["ClientHello", "alert:unrecognized_name", "ServerHello", "hs:server_hello_done", "hs:client_key_exchange",
         "ChangeCipherSpec", "hs:finished", "ChangeCipherSpec", "hs:finished", "HandshakeComplete"],
        {"established": True, "alpn": "smtp", "alert": "unrecognized_name", "alert_from": "server", "failure": None},
    ),
    Case(
        "TLS 1.3 accepted: inferred from the server's answer to the client's Finished",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, TLS13_SERVER_HELLO + CCS + appdata(1200) + appdata(300) + appdata(53)),
            (CLIENT, CCS + appdata(53)),
            (SERVER, appdata(250) + appdata(250)),
            (CLIENT, appdata(40)),
            (SERVER, appdata(45)),
        ],
        ["ClientHello", "ServerHello", "ChangeCipherSpec", "ApplicationData", "ChangeCipherSpec", "ApplicationData",
         "HandshakeComplete"],
        {"established": True, "established_inferred": True, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384",
         "curve": "x25519", "history": "CsiI", "client_versions": ["TLSv1.3", "TLSv1.2"], "alpn": ["smtp"],
         "last_step": "application_data", "encrypted_records": {"client": 2, "server": 6}, "resumed": False},
    ),
    Case(
        "TLS 1.3 rejected by the client with an encrypted alert",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, TLS13_SERVER_HELLO + CCS + appdata(1200) + appdata(300) + appdata(53)),
            (CLIENT, CCS + appdata(19)),
        ],
        ["ClientHello", "ServerHello", "ChangeCipherSpec", "ApplicationData", "ChangeCipherSpec", "ApplicationData",
         "HandshakeFailed"],
        {"established": False, "failure_inferred": True, "last_step": "server_hello", "history": "CsiI"},
    ),
    Case(
        "TLS 1.3: the client closes after the server's flight without a word",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, TLS13_SERVER_HELLO + CCS + appdata(1200)),
        ],
        ["ClientHello", "ServerHello", "ChangeCipherSpec", "ApplicationData", "HandshakeFailed"],
        {"established": False, "failure_inferred": True},
    ),
    Case(
        "TLS 1.3: the server answers the client's Finished with an alert (client certificate)",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, TLS13_SERVER_HELLO + appdata(1200) + appdata(90)),
            (CLIENT, appdata(25) + appdata(69)),
            (SERVER, appdata(19)),
        ],
        ["ClientHello", "ServerHello", "ApplicationData", "ApplicationData", "HandshakeFailed"],
        {"established": False, "failure_inferred": True, "last_step": "finished"},
        ends=(("fin", SERVER), ("fin", CLIENT)),
    ),
    Case(
        "TLS 1.3: client Finished then data, server silent to the end: established at the end",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, TLS13_SERVER_HELLO + appdata(23) + appdata(716) + appdata(281) + appdata(69)),
            (CLIENT, appdata(69) + appdata(117)),
        ],
        ["ClientHello", "ServerHello", "ApplicationData", "ApplicationData", "HandshakeComplete"],
        {"established": True, "established_inferred": True, "failure": None, "last_step": "application_data"},
    ),
    Case(
        "TLS 1.3 HelloRetryRequest",
        [
            (CLIENT, TLS13_CLIENT_HELLO),
            (SERVER, handshake(hello_retry(23)) + CCS),
            (CLIENT, CCS + TLS13_CLIENT_HELLO),
            (SERVER, handshake(server_hello(suite=0x1302, version=C.TLSv1_3, key_share=23)) + appdata(1200)),
            (CLIENT, appdata(69)),
            (SERVER, appdata(500)),
        ],
        ["ClientHello", "ServerHello", "ChangeCipherSpec", "ChangeCipherSpec", "ClientHello", "ServerHello",
         "ApplicationData", "ApplicationData", "HandshakeComplete"],
        {"established": True, "hello_retry": True, "history": "CjiICs", "curve": "secp256r1"},
    ),
    Case(
        "TLS 1.3 PSK resumption",
        [
            (CLIENT, handshake(client_hello(versions=(C.TLSv1_3,), groups=(29,), psk=True))),
            (SERVER, handshake(server_hello(suite=0x1301, version=C.TLSv1_3, key_share=29, psk=True))
             + appdata(23) + appdata(53)),
            (CLIENT, appdata(53)),
            (SERVER, appdata(200)),
        ],
        ["ClientHello", "ServerHello", "ApplicationData", "ApplicationData", "HandshakeComplete"],
        {"established": True, "resumed": True},
    ),
    Case(
        "TLS 1.3 draft version numbers read as TLSv1.3",
        [
            (CLIENT, handshake(client_hello(versions=(0x7F12, C.TLSv1_2)))),
            (SERVER, handshake(server_hello(version=0x7F12, suite=0x1301))),
        ],
        ["ClientHello", "ServerHello", "HandshakeFailed"],
        {"version": "TLSv1.3", "client_max_version": "TLSv1.3", "client_versions": ["TLSv1.3", "TLSv1.2"]},
    ),
    Case(
        "server refuses with a fatal handshake_failure alert",
        [(CLIENT, handshake(client_hello())), (SERVER, alert(C.FATAL, 40))],
        ["ClientHello", "alert:handshake_failure", "HandshakeFailed"],
        {"established": False, "alert": "handshake_failure", "alert_from": "server", "alert_encrypted": False,
         "failure_inferred": False, "history": "Cl", "version": None, "resumed": None, "last_step": "client_hello"},
        ends=(("fin", SERVER), ("fin", CLIENT)),
    ),
    Case(
        "TLS 1.0-only client refused with protocol_version",
        [(CLIENT, handshake(client_hello(legacy=C.TLSv1_0), version=C.TLSv1_0)), (SERVER, alert(C.FATAL, 70))],
        ["ClientHello", "alert:protocol_version", "HandshakeFailed"],
        {"client_max_version": "TLSv1.0", "alert": "protocol_version"},
    ),
    Case(
        "TLS 1.1-only client, the server resets without answering",
        [(CLIENT, handshake(client_hello(legacy=C.TLSv1_1)))],
        ["ClientHello", "HandshakeFailed"],
        {"client_max_version": "TLSv1.1", "failure_inferred": False},
        ends=(("reset", SERVER),),
    ),
    Case(
        "implicit TLS against a STARTTLS port: the server greets in plaintext",
        [
            (CLIENT, handshake(client_hello(sni="smtp.office365.com"))),
            (SERVER, b"220 BN8PR04CA0001.outlook.office365.com Microsoft ESMTP MAIL Service ready\r\n"),
        ],
        ["ClientHello", "NotTls", "HandshakeFailed"],
        {"not_tls_from": "server", "established": False, "failure_inferred": False},
        ends=(("fin", CLIENT), ("fin", SERVER)),
    ),
    Case(
        "SSL 2.0 compatible ClientHello",
        [
            (CLIENT, ssl2_client_hello()),
            (SERVER, handshake(server_hello(legacy=C.TLSv1_0, suite=0x0039), SHD, version=C.TLSv1_0)),
            (CLIENT, handshake(CKE, version=C.TLSv1_0) + record(C.CHANGE_CIPHER_SPEC, b"\x01", C.TLSv1_0)
             + sealed(C.HANDSHAKE, 36)),
            (SERVER, record(C.CHANGE_CIPHER_SPEC, b"\x01", C.TLSv1_0) + sealed(C.HANDSHAKE, 36)),
        ],
        ["ClientHello", "ServerHello", "hs:server_hello_done", "hs:client_key_exchange", "ChangeCipherSpec",
         "hs:finished", "ChangeCipherSpec", "hs:finished", "HandshakeComplete"],
        {"established": True, "client_versions": ["TLSv1.0"], "history": "CsnGIi", "version": "TLSv1.0"},
    ),
    Case(
        "TLS 1.2: the client closes after the server's certificate (rejected it silently)",
        [(CLIENT, handshake(client_hello())), (SERVER, TLS12_SERVER_FLIGHT)],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_key_exchange", "hs:server_hello_done",
         "HandshakeFailed"],
        {"last_step": "server_hello_done", "failure_inferred": False},
    ),
    Case(
        "TLS 1.2: the server closes after the client's Finished",
        [
            (CLIENT, handshake(client_hello())),
            (SERVER, TLS12_SERVER_FLIGHT),
            (CLIENT, handshake(CKE) + CCS + sealed(C.HANDSHAKE, 40)),
        ],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_key_exchange", "hs:server_hello_done",
         "hs:client_key_exchange", "ChangeCipherSpec", "hs:finished", "HandshakeFailed"],
        {"last_step": "finished", "established": False},
        ends=(("fin", SERVER), ("fin", CLIENT)),
    ),
    Case(
        "TLS 1.2: an encrypted alert before the handshake completed",
        [
            (CLIENT, handshake(client_hello())),
            (SERVER, TLS12_SERVER_FLIGHT),
            (CLIENT, handshake(CKE) + CCS + sealed(C.HANDSHAKE, 40) + sealed(C.ALERT, 26)),
        ],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_key_exchange", "hs:server_hello_done",
         "hs:client_key_exchange", "ChangeCipherSpec", "hs:finished", "alert:encrypted", "HandshakeFailed"],
        {"alert": None, "alert_from": "client", "alert_encrypted": True, "failure_inferred": True},
    ),
    Case(
        "close_notify before the handshake completed is a failure only at the end",
        [(CLIENT, handshake(client_hello())), (SERVER, alert(C.WARNING, C.CLOSE_NOTIFY))],
        ["ClientHello", "alert:close_notify", "HandshakeFailed"],
        {"alert": None, "history": "Cl"},
    ),
    Case(
        "handshake messages share records and span records",
        [
            (CLIENT, handshake(client_hello())),
            (SERVER, (lambda flight: b"".join(handshake(flight[i : i + 7]) for i in range(0, len(flight), 7)))(
                server_hello() + certificate(b"x" * 50) + SHD)),
        ],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_hello_done", "HandshakeFailed"],
        {"history": "Csxn"},
    ),
    Case(
        "a handshake message over MAX_HANDSHAKE_MESSAGE is skipped and noted",
        [
            (CLIENT, handshake(client_hello())),
            (SERVER, handshake(server_hello()) + b"".join(
                handshake(chunk) for chunk in (lambda m: [m[i : i + 16384] for i in range(0, len(m), 16384)])(
                    certificate(bytes(P.MAX_HANDSHAKE_MESSAGE + 100)) + SHD))),
        ],
        ["ClientHello", "ServerHello", "hs:certificate", "hs:server_hello_done", "HandshakeFailed"],
        {"history": "Csxn"},
        exhaustive=False,
    ),
    Case(
        "an impossible record header mid-stream stops that direction",
        [
            (CLIENT, handshake(client_hello())),
            (SERVER, handshake(server_hello()) + b"\x14\xff\xff\xff\x01" + bytes(10)),
        ],
        ["ClientHello", "ServerHello", "NotTls", "HandshakeFailed"],
        {"not_tls_from": "server"},
    ),
    Case(
        "the capture ends mid-handshake: no failure is claimed",
        [(CLIENT, handshake(client_hello())), (SERVER, TLS12_SERVER_FLIGHT)],
        ["ClientHello", "ServerHello", "Certificate", "hs:server_key_exchange", "hs:server_hello_done"],
        {"failure": None, "established": False, "notes": ["the capture ended before the TLS handshake completed"]},
        ends=(),
    ),
    Case(
        "heartbeat and an unknown content type get their letters",
        [
            (CLIENT, handshake(client_hello()) + record(C.HEARTBEAT, b"\x01\x00\x03abc") + record(25, b"??")),
        ],
        ["ClientHello"],
        {"history": "CBQ", "failure": None},
        ends=(),
    ),
]


def _kind(ev) -> str:
    name = type(ev).__name__
    if name == "HandshakeMessage":
        return f"hs:{ev.name}"
    if isinstance(ev, Alert):
        return "alert:encrypted" if ev.encrypted else f"alert:{C.alert_description_name(ev.description)}"
    return name


def _replay(case: Case, pieces) -> tuple[list, dict, TlsSession]:
    """Feed the case; ``pieces(i, chunk)`` cuts chunk ``i`` into the pieces fed one call each."""
    session = TlsSession()
    events = []
    ts = 1_000
    for i, (from_client, chunk) in enumerate(case.chunks):
        ts += 1_000
        for piece in pieces(i, chunk):
            events += session.receive(from_client, piece, ts)
            _assert_bounded(session)
    reset_by = None
    for how, side in case.ends:
        ts += 1_000
        events += session.end_of_stream(side, ts)
        if how == "reset":
            reset_by = "client" if side else "server"
    events += session.finish(ts + 1_000, reset_by)
    return events, session.summary(), session


def _assert_bounded(session: TlsSession) -> None:
    for side in (session.client, session.server):
        assert len(side.hdr) < C.TLS_RECORD_HEADER_LEN
        assert len(side.body) <= C.MAX_RECORD_LEN
        assert len(side.hs_buf) <= C.HANDSHAKE_HEADER_LEN + P.MAX_HANDSHAKE_MESSAGE
    assert len(session.history) <= P.MAX_HISTORY
    assert len(session.alerts) <= P.MAX_ALERTS
    assert len(session.notes) <= P.MAX_NOTES
    assert not any("internal error" in note for note in session.notes), session.notes


def _whole(i, chunk):
    return [chunk]


def _bytewise(i, chunk):
    return [chunk[j : j + 1] for j in range(len(chunk))]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: Case) -> None:
    events, summary, _ = _replay(case, _whole)
    assert [_kind(e) for e in events] == case.events
    for key, value in case.summary.items():
        assert summary[key] == value, key
    json.dumps(summary)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_split_anywhere(case: Case) -> None:
    expected = _replay(case, _whole)[:2]
    if case.exhaustive:
        assert _replay(case, _bytewise)[:2] == expected
        for index, (_side, chunk) in enumerate(case.chunks):
            for cut in range(1, len(chunk)):
                def two(i, c, index=index, cut=cut):
                    return [c[:cut], c[cut:]] if i == index else [c]
                assert _replay(case, two)[:2] == expected, (index, cut)
    rng = random.Random(case.name)
    for _ in range(20):
        def some(i, c):
            cuts = sorted(rng.sample(range(1, len(c)), min(len(c) - 1, rng.randint(1, 12))))
            return [c[a:b] for a, b in zip([0, *cuts], [*cuts, len(c)])]
        assert _replay(case, some)[:2] == expected


# -- details the table does not show --------------------------------------------------------


def _case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def test_client_hello_fields_and_grease() -> None:
    events = _replay(_case("TLS 1.3 accepted: inferred from the server's answer to the client's Finished"), _whole)[0]
    hello = next(e for e in events if isinstance(e, ClientHello))
    assert hello.versions == (C.TLSv1_3, C.TLSv1_2)  # GREASE 0x1a1a dropped
    assert hello.groups == (29, 23)
    assert hello.max_version == C.TLSv1_3 and hello.legacy_version == C.TLSv1_2
    assert hello.sni == "mail.example.test" and hello.alpn == ("smtp",)
    server = next(e for e in events if isinstance(e, ServerHello))
    assert server.version == C.TLSv1_3 and server.legacy_version == C.TLSv1_2 and server.group == 29


def test_failure_reasons_say_what_happened() -> None:
    def failure(name: str) -> HandshakeFailed:
        events = _replay(_case(name), _whole)[0]
        return next(e for e in events if isinstance(e, HandshakeFailed))

    f = failure("TLS 1.3 rejected by the client with an encrypted alert")
    assert f.inferred and f.from_client and "encrypted" in f.reason and "certificate" in f.reason
    f = failure("TLS 1.3: the client closes after the server's flight without a word")
    assert f.inferred and "in TLS 1.3 the reason is encrypted" in f.reason
    f = failure("TLS 1.3: the server answers the client's Finished with an alert (client certificate)")
    assert f.inferred and not f.from_client and "client certificate" in f.reason
    f = failure("TLS 1.0-only client refused with protocol_version")
    assert not f.inferred and not f.from_client and "at most TLSv1.0" in f.reason
    f = failure("TLS 1.1-only client, the server resets without answering")
    assert "server reset the connection" in f.reason and "TLSv1.1" in f.reason
    f = failure("implicit TLS against a STARTTLS port: the server greets in plaintext")
    assert "STARTTLS" in f.reason and "'220 BN8PR04CA0001.outlook.office365.com " in f.reason
    f = failure("TLS 1.2: the client closes after the server's certificate (rejected it silently)")
    assert f.from_client and "rejected the server certificate" in f.reason
    f = failure("TLS 1.2: the server closes after the client's Finished")
    assert not f.from_client and "did not accept" in f.reason


def test_not_tls_shows_the_first_bytes_safely() -> None:
    session = TlsSession()
    session.receive(True, handshake(client_hello()), 1)
    (event,) = session.receive(False, b"220 mail\x00\x1b[31m ESMTP " + b"x" * 100 + b"\r\n", 2)
    assert isinstance(event, NotTls) and not event.from_client
    preview = event.reason.split("'")[1]
    assert preview == "220 mail..[31m ESMTP " + "x" * 19 and len(preview) == P.NOT_TLS_PREVIEW
    assert session.receive(False, handshake(server_hello()), 3) == []  # that direction is over


def test_sslv2_client_hello_is_read() -> None:
    session = TlsSession()
    (hello,) = session.receive(True, ssl2_client_hello(), 1)
    assert isinstance(hello, ClientHello) and hello.sslv2_format
    assert hello.versions == (C.TLSv1_0,) and hello.cipher_suites == (0x39, 0x2F, 0x05)


def test_only_the_first_application_data_record_is_an_event() -> None:
    events, summary, _ = _replay(_case("TLS 1.2 full handshake, data both ways"), _whole)
    assert sum(1 for e in events if type(e).__name__ == "ApplicationData") == 2
    assert summary["application_data_records"] == {"client": 2, "server": 1}
    assert summary["encrypted_records"] == {"client": 4, "server": 2}


def test_gap_stops_the_direction_and_hides_the_outcome() -> None:
    session = TlsSession()
    session.receive(True, handshake(client_hello()), 1)
    session.gap(False, 1460, 2)
    assert session.receive(False, TLS12_SERVER_FLIGHT, 3) == []
    session.end_of_stream(True, 4)
    assert session.finish(5) == []
    summary = session.summary()
    assert summary["gaps"] == {"client": 0, "server": 1460} and summary["failure"] is None
    assert any("missing" in n for n in summary["notes"])


def test_history_is_capped_like_zeeks() -> None:
    session = TlsSession()
    session.receive(True, handshake(client_hello()), 1)
    session.receive(False, handshake(*[hs(C.HELLO_REQUEST)] * 150), 2)
    assert session.summary()["history"] == "C" + "h" * (P.MAX_HISTORY - 1)


def test_oversized_records_are_not_tls() -> None:
    session = TlsSession()
    # The reason quotes the first line or NOT_TLS_PREVIEW bytes; short of both it waits for the end.
    assert session.receive(True, record(C.HANDSHAKE, b"")[:3] + u16(C.MAX_RECORD_LEN + 1), 1) == []
    (event,) = session.end_of_stream(True, 2)
    assert isinstance(event, NotTls) and "length 18433" in event.reason


def test_unreadable_certificate_is_reported_not_raised() -> None:
    info = parse_certificate(b"\x30\x03\x02\x01\x00")
    assert info.error and info.subject == "" and info.not_after is None and len(info.sha256) == 64


def test_names_for_unknown_values() -> None:
    assert C.cipher_suite_name(0xBEEF) == "unknown_0xbeef"
    assert C.version_name(0x0305) == "unknown_0x0305"
    assert C.version_name(0x7F1C) == "TLSv1.3" and C.version_name(C.SSLv3) == "SSLv3"
    assert C.alert_description_name(200) == "unknown_200"
    assert C.group_name(0x11EC) == "X25519MLKEM768" and C.group_name(4242) == "unknown_0x1092"
    assert len(C.CIPHER_SUITES) >= 150
    for name in ("close_notify", "unexpected_message", "bad_record_mac", "handshake_failure", "bad_certificate",
                 "certificate_expired", "unknown_ca", "protocol_version", "insufficient_security", "internal_error",
                 "inappropriate_fallback", "user_canceled", "missing_extension", "unsupported_extension",
                 "unrecognized_name", "certificate_required", "no_application_protocol"):
        assert name in C.ALERT_DESCRIPTIONS.values()


# -- real handshakes: Python's ssl over memory BIOs -----------------------------------------


@pytest.fixture(scope="module")
def pki():
    ca = trustme.CA()
    return ca, ca.issue_cert("mail.example.test")


def _contexts(pki, *, trust=True, require_client_cert=False, max_version=None, min_version=None, ciphers=None):
    ca, leaf = pki
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if trust:
        ca.configure_trust(client_ctx)
    if require_client_cert:
        server_ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(server_ctx)
    if max_version:
        client_ctx.maximum_version = max_version
    if min_version:
        client_ctx.minimum_version = min_version
    if ciphers:
        client_ctx.set_ciphers(ciphers)
    return client_ctx, server_ctx


def _converse(client_ctx, server_ctx, session=None):
    """A real client and server talk over memory BIOs: the byte chunks each sent, and the client."""
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="mail.example.test", session=session)
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    chunks: list[tuple[bool, bytes]] = []

    def pump() -> None:
        for from_client, out_bio, in_bio in ((True, bios[1], bios[2]), (False, bios[3], bios[0])):
            data = out_bio.read()
            if data:
                chunks.append((from_client, data))
                in_bio.write(data)

    done = {client: False, server: False}
    failed = False
    for _ in range(10):
        for end in (client, server):
            if not done[end] and not failed:
                try:
                    end.do_handshake()
                    done[end] = True
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    failed = True
            pump()
    if not failed:
        client.write(b"EHLO client.example.test\r\n")
        pump()
        assert server.read(100) == b"EHLO client.example.test\r\n"
        server.write(b"250 mail.example.test\r\n")
        pump()
        assert client.read(100) == b"250 mail.example.test\r\n"  # also reads TLS 1.3 session tickets
        pump()
    return chunks, client


REAL = {
    "tls12": dict(max_version=ssl.TLSVersion.TLSv1_2),
    "tls13": dict(),
    "tls12_untrusted": dict(trust=False, max_version=ssl.TLSVersion.TLSv1_2),
    "tls13_untrusted": dict(trust=False),
    "tls12_client_cert_missing": dict(require_client_cert=True, max_version=ssl.TLSVersion.TLSv1_2),
    "tls13_client_cert_missing": dict(require_client_cert=True),
}

REAL_EXPECTED = {
    "tls12": ({"established": True, "established_inferred": False, "version": "TLSv1.2", "history": "CsxknGIti",
               "sni": "mail.example.test", "last_step": "application_data", "failure": None}, None),
    "tls13": ({"established": True, "established_inferred": True, "version": "TLSv1.3", "history": "CsiI",
               "client_max_version": "TLSv1.3", "failure": None, "curve": "x25519"}, None),
    "tls12_untrusted": ({"established": False, "alert": "unknown_ca", "alert_from": "client", "history": "CsxknL",
                         "failure_inferred": False}, "the client sent a fatal unknown_ca alert"),
    "tls13_untrusted": ({"established": False, "alert": "unknown_ca", "alert_from": "client", "history": "CsiL",
                         "failure_inferred": False}, "the client sent a fatal unknown_ca alert"),
    "tls12_client_cert_missing": ({"established": False, "alert": "handshake_failure", "alert_from": "server",
                                   "history": "CsxkrnXGIl"}, "the server sent a fatal handshake_failure alert"),
    "tls13_client_cert_missing": ({"established": False, "failure_inferred": True, "last_step": "finished"},
                                  "the server answered the client's Finished with a short encrypted record"),
}


@pytest.fixture(scope="module")
def real_chunks(pki):
    return {name: _converse(*_contexts(pki, **kw))[0] for name, kw in REAL.items()}


@pytest.mark.parametrize("name", REAL)
def test_real_handshake(real_chunks, name: str) -> None:
    case = Case(name, real_chunks[name], [])
    events, summary, _ = _replay(case, _whole)
    expected, failure = REAL_EXPECTED[name]
    for key, value in expected.items():
        assert summary[key] == value, (key, summary)
    failed = [e for e in events if isinstance(e, HandshakeFailed)]
    if failure is None:
        assert not failed and sum(isinstance(e, HandshakeComplete) for e in events) == 1
    else:
        assert len(failed) == 1 and failed[0].reason.startswith(failure), failed
    assert _replay(case, _bytewise)[:2] == (events, summary)
    rng = random.Random(name)
    for _ in range(100):
        def some(i, c):
            cuts = sorted(rng.sample(range(1, len(c)), min(len(c) - 1, rng.randint(1, 20)))) if len(c) > 1 else []
            return [c[a:b] for a, b in zip([0, *cuts], [*cuts, len(c)])]
        assert _replay(case, some)[:2] == (events, summary)


def test_real_certificate_is_parsed(real_chunks) -> None:
    summary = _replay(Case("tls12", real_chunks["tls12"], []), _whole)[1]
    leaf = summary["certificates"][0]
    assert leaf["san"] == ["mail.example.test"] and not leaf["self_signed"] and leaf["error"] is None
    assert datetime.fromisoformat(leaf["not_after"]).utcoffset().total_seconds() == 0
    assert datetime.fromisoformat(leaf["not_before"]) < datetime.fromisoformat(leaf["not_after"])


@pytest.mark.parametrize("max_version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_real_resumption(pki, max_version) -> None:
    contexts = _contexts(pki, max_version=max_version)
    _, first = _converse(*contexts)
    chunks, second = _converse(*contexts, session=first.session)
    assert second.session_reused
    summary = _replay(Case("resumed", chunks, []), _whole)[1]
    assert summary["resumed"] is True and summary["established"] is True


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_real_old_client_is_visible(pki) -> None:
    try:
        contexts = _contexts(pki, min_version=ssl.TLSVersion.TLSv1, max_version=ssl.TLSVersion.TLSv1_1,
                             ciphers="DEFAULT:@SECLEVEL=0")
    except ssl.SSLError as exc:
        pytest.skip(f"this OpenSSL build cannot offer TLS 1.0/1.1: {exc}")
    chunks, _ = _converse(*contexts)
    if not chunks:
        pytest.skip("this OpenSSL build cannot offer TLS 1.0/1.1")
    events, summary, _ = _replay(Case("old", chunks, []), _whole)
    assert summary["client_max_version"] == "TLSv1.1" and summary["established"] is False
    assert summary["alert"] == "protocol_version"
    (failed,) = [e for e in events if isinstance(e, HandshakeFailed)]
    assert "at most TLSv1.1" in failed.reason


# -- properties: any bytes, any split -------------------------------------------------------

_chunk_lists = st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), max_size=12)

_record_types = st.sampled_from([20, 21, 22, 23, 24, 25, 19, 31, 0x80])
_handshake_types = st.sampled_from([0, 1, 2, 4, 6, 8, 11, 12, 13, 14, 15, 16, 20, 22, 24, 99, 254])


@st.composite
def _tls_like(draw):
    """Records with plausible headers and hostile bodies, so parsing goes deep."""
    chunks = []
    for _ in range(draw(st.integers(0, 10))):
        from_client = draw(st.booleans())
        ctype = draw(_record_types)
        if ctype == C.HANDSHAKE and draw(st.booleans()):
            body = hs(draw(_handshake_types), draw(st.binary(max_size=200)))
            if draw(st.booleans()):  # lie about the length
                body = body[:1] + draw(st.binary(min_size=3, max_size=3)) + body[4:]
        else:
            body = draw(st.binary(max_size=60))
        version = draw(st.sampled_from([C.TLSv1_0, C.TLSv1_2, 0x0304, 0x0200, 0xFFFF]))
        chunks.append((from_client, record(ctype, body, version)))
    return chunks


def _feed_randomly(chunks, cuts: random.Random, end_how: int) -> TlsSession:
    session = TlsSession()
    for from_client, data in chunks:
        pos = 0
        while pos < len(data):
            step = cuts.randint(1, 64)
            session.receive(from_client, data[pos : pos + step], 1)
            pos += step
            _assert_bounded(session)
    if end_how & 1:
        session.gap(bool(end_how & 2), 100, 2)
    session.end_of_stream(True, 3)
    session.finish(4, "server" if end_how & 4 else None)
    json.dumps(session.summary())
    return session


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chunk_lists, st.randoms(use_true_random=False), st.integers(0, 7))
def test_any_bytes_never_raise(chunks, cuts, end_how) -> None:
    _feed_randomly(chunks, cuts, end_how)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_tls_like(), st.randoms(use_true_random=False), st.integers(0, 7))
def test_tls_shaped_garbage_never_raises(chunks, cuts, end_how) -> None:
    _feed_randomly([(True, handshake(client_hello()))] + chunks, cuts, end_how)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_handshakes_never_raise(real_chunks, data) -> None:
    name = data.draw(st.sampled_from(sorted(real_chunks)))
    chunks = [list(c) for c in real_chunks[name]]
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(chunks) - 1))
        raw = bytearray(chunks[i][1])
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        chunks[i][1] = bytes(raw)
    _feed_randomly([tuple(c) for c in chunks], data.draw(st.randoms(use_true_random=False)), data.draw(st.integers(0, 7)))


def test_a_huge_stream_holds_one_record_at_most() -> None:
    session = TlsSession()
    session.receive(True, handshake(client_hello()), 1)
    session.receive(False, handshake(server_hello()) + CCS + sealed(C.HANDSHAKE, 40), 2)
    big = appdata(C.MAX_RECORD_LEN)
    for _ in range(200):  # 3.6 MB of application data, fed in awkward pieces
        for i in range(0, len(big), 1000):
            session.receive(False, big[i : i + 1000], 3)
        _assert_bounded(session)
        assert not session.server.body
    assert session.summary()["encrypted_records"]["server"] == 201
