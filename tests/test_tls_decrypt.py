"""TLS decryption with NSS key logs: KeyLog, decrypt.py and TlsSession(keylog=…), table-driven.

Real handshakes: Python's ssl client and server talk over memory BIOs, the client's
``keylog_filename`` writes the key log, and they exchange known data both ways (several
records, one write larger than a record, close_notify both ways). Python's ssl cannot pick
a TLS 1.3 cipher suite, so those conversations run in a child process (this file run as a
script) whose OpenSSL configuration (OPENSSL_CONF) names the suite. KeyUpdate and
renegotiation, which Python's ssl cannot trigger, come from the openssl command-line tools
through a loopback relay that records the bytes. Real captures: ``captures/*.pcap`` with
their ``.keys``, through the project's capture → decode → flows layers.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from analyzer.capture import CaptureSet
from analyzer.decode import Decoder, Selector, TcpSegment
from analyzer.flows import ConnectionTable
from analyzer.protocols.tls import (
    Alert,
    DecryptedData,
    DecryptionFailed,
    KeyLog,
    KeyLogError,
    TlsSession,
)
from analyzer.protocols.tls import decrypt as D
from analyzer.protocols.tls import keylog as K

trustme = pytest.importorskip("trustme")

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"

#: Summary keys that exist only because of decryption.
DECRYPTION_KEYS = ("decrypted", "decryption_error", "decrypted_records")

# -- real conversations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    version: str  # ssl.TLSVersion member
    expect: str  # the IANA name of the suite that must be negotiated
    ciphers: str | None = None  # OpenSSL cipher string (TLS ≤ 1.2)
    suite13: str | None = None  # TLS 1.3 suite, forced in a child process through OPENSSL_CONF
    etm: bool = True  # offer encrypt_then_mac (matters for CBC suites)
    dhe: bool = False  # give the server DH parameters (DHE suites)


SPECS = {
    "tls1.0-ecdhe-aes128-cbc-sha-etm": Spec("TLSv1", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    "tls1.0-rsa-aes256-cbc-sha": Spec("TLSv1", "TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA", etm=False),
    "tls1.0-dhe-aes128-cbc-sha": Spec("TLSv1", "TLS_DHE_RSA_WITH_AES_128_CBC_SHA", "DHE-RSA-AES128-SHA", dhe=True, etm=False),
    "tls1.1-ecdhe-aes128-cbc-sha-etm": Spec("TLSv1_1", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    "tls1.1-ecdhe-aes256-cbc-sha": Spec("TLSv1_1", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA", etm=False),
    "tls1.2-ecdhe-aes128-gcm": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
    "tls1.2-ecdhe-aes256-gcm": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"),
    "tls1.2-ecdhe-chacha20": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"),
    "tls1.2-ecdhe-aes128-cbc-sha-etm": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    "tls1.2-ecdhe-aes128-cbc-sha": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA", etm=False),
    "tls1.2-ecdhe-aes256-cbc-sha384-etm": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384"),
    "tls1.2-ecdhe-aes256-cbc-sha384": Spec("TLSv1_2", "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384", "ECDHE-RSA-AES256-SHA384", etm=False),
    "tls1.2-rsa-aes128-cbc-sha256": Spec("TLSv1_2", "TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256", etm=False),
    "tls1.2-rsa-aes128-gcm": Spec("TLSv1_2", "TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    "tls1.2-dhe-aes256-gcm": Spec("TLSv1_2", "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384", "DHE-RSA-AES256-GCM-SHA384", dhe=True),
    "tls1.2-dhe-chacha20": Spec("TLSv1_2", "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "DHE-RSA-CHACHA20-POLY1305", dhe=True),
    "tls1.2-rsa-aes128-ccm": Spec("TLSv1_2", "TLS_RSA_WITH_AES_128_CCM", "AES128-CCM"),
    "tls1.2-rsa-aes256-ccm8": Spec("TLSv1_2", "TLS_RSA_WITH_AES_256_CCM_8", "AES256-CCM8"),
    "tls1.3-aes128-gcm": Spec("TLSv1_3", "TLS_AES_128_GCM_SHA256", suite13="TLS_AES_128_GCM_SHA256"),
    "tls1.3-aes256-gcm": Spec("TLSv1_3", "TLS_AES_256_GCM_SHA384"),  # OpenSSL's own first choice
    "tls1.3-chacha20": Spec("TLSv1_3", "TLS_CHACHA20_POLY1305_SHA256", suite13="TLS_CHACHA20_POLY1305_SHA256"),
    "tls1.3-aes128-ccm": Spec("TLSv1_3", "TLS_AES_128_CCM_SHA256", suite13="TLS_AES_128_CCM_SHA256"),
    "tls1.3-aes128-ccm8": Spec("TLSv1_3", "TLS_AES_128_CCM_8_SHA256", suite13="TLS_AES_128_CCM_8_SHA256"),
    # Not decrypted: the reason must say so.
    "tls1.2-rsa-camellia128": Spec("TLSv1_2", "TLS_RSA_WITH_CAMELLIA_128_CBC_SHA", "CAMELLIA128-SHA"),
}
UNSUPPORTED = {"tls1.2-rsa-camellia128"}
DECRYPTABLE = [name for name in SPECS if name not in UNSUPPORTED]

VERSION_NAMES = {"TLSv1": "TLSv1.0", "TLSv1_1": "TLSv1.1", "TLSv1_2": "TLSv1.2", "TLSv1_3": "TLSv1.3"}

#: What each side writes, one write() each, in this order.
PLAN = [
    (True, b"EHLO client.example.test\r\n"),
    (False, b"250-mail.example.test\r\n250 AUTH LOGIN\r\n"),
    (True, b"AUTH LOGIN\r\n"),
    (True, b"cHJpbnRlcg==\r\n"),  # right behind the last one: two records in a row
    (False, b"535 5.7.139 Authentication unsuccessful\r\n"),
    (True, b"DATA\r\n" + bytes(range(256)) * 160),  # 40 KiB: split over three records
    (False, b"221 2.0.0 Bye\r\n"),
]
SENT = {side: b"".join(data for from_client, data in PLAN if from_client == side) for side in (True, False)}

#: RFC 7919 ffdhe2048, for the DHE suites (OpenSSL 3.0 servers get no DH group by default).
FFDHE2048 = """-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""

#: OpenSSL configuration that limits every context to one TLS 1.3 cipher suite.
OPENSSL_CONF_TEMPLATE = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Ciphersuites = {suite}
"""

#: SSL_OP_NO_ENCRYPT_THEN_MAC (not exported by Python's ssl module).
OP_NO_ENCRYPT_THEN_MAC = 0x00080000


@functools.lru_cache(maxsize=1)
def _pki():
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    return ca, ca.issue_cert("mail.example.test", key_type=trustme.KeyType.RSA)


def _step(call) -> bool:
    try:
        call()
        return True
    except ssl.SSLWantReadError:
        return False


def converse(spec: Spec, keylog_path: str) -> list[tuple[bool, bytes]]:
    """The chunks a real client and server sent each other, in wire order, carrying PLAN."""
    ca, leaf = _pki()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(server_ctx)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(client_ctx)
    client_ctx.keylog_filename = keylog_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0 and 1.1
        version = getattr(ssl.TLSVersion, spec.version)
        for ctx in (client_ctx, server_ctx):
            ctx.minimum_version = ctx.maximum_version = version
            if spec.ciphers:
                ctx.set_ciphers(spec.ciphers + (":@SECLEVEL=0" if version < ssl.TLSVersion.TLSv1_2 else ""))
            if not spec.etm:
                ctx.options |= OP_NO_ENCRYPT_THEN_MAC
    if spec.dhe:
        dh = Path(keylog_path).with_suffix(".dh.pem")
        dh.write_text(FFDHE2048)
        server_ctx.load_dh_params(str(dh))
    bios = [ssl.MemoryBIO() for _ in range(4)]
    client = client_ctx.wrap_bio(bios[0], bios[1], server_hostname="mail.example.test")
    server = server_ctx.wrap_bio(bios[2], bios[3], server_side=True)
    chunks: list[tuple[bool, bytes]] = []

    def pump() -> None:
        for from_client, out_bio, in_bio in ((True, bios[1], bios[2]), (False, bios[3], bios[0])):
            data = out_bio.read()
            if data:
                chunks.append((from_client, data))
                in_bio.write(data)

    done = [False, False]
    for _ in range(10):
        done = [done[0] or _step(client.do_handshake), done[1] or _step(server.do_handshake)]
        pump()
    assert all(done), spec
    for from_client, data in PLAN:
        sender, receiver = (client, server) if from_client else (server, client)
        sender.write(data)
        pump()
        got = b""
        while len(got) < len(data):
            got += receiver.read(len(data) - len(got))
        assert got == data
        pump()  # TLS 1.3 session tickets the read released
    _step(client.unwrap)  # close_notify …
    pump()
    _step(server.unwrap)  # … answered with the server's
    pump()
    return chunks


@dataclass(frozen=True)
class Conversation:
    spec: Spec
    chunks: list[tuple[bool, bytes]]
    keylog: str  # the key log text the client wrote


@pytest.fixture(scope="module")
def conversation(tmp_path_factory):
    """conversation(name, take=0): a real conversation per SPECS entry (``take`` > 0: another one)."""
    tmp = tmp_path_factory.mktemp("conversations")

    @functools.cache
    def make(name: str, take: int = 0) -> Conversation:
        spec = SPECS[name]
        keylog = tmp / f"{name}-{take}.keys"
        if spec.suite13:
            conf = tmp / f"{name}.cnf"
            conf.write_text(OPENSSL_CONF_TEMPLATE.format(suite=spec.suite13))
            done = subprocess.run(
                [sys.executable, __file__, name, str(keylog)], env=dict(os.environ, OPENSSL_CONF=str(conf)),
                capture_output=True, text=True, timeout=120,
            )
            assert done.returncode == 0, done.stderr
            chunks = [(from_client, bytes.fromhex(data)) for from_client, data in json.loads(done.stdout)]
        else:
            chunks = converse(spec, str(keylog))
        return Conversation(spec, chunks, keylog.read_text())

    return make


# -- feeding the observer ----------------------------------------------------------------------


def _whole(chunk: bytes) -> list[bytes]:
    return [chunk]


def _bytewise(chunk: bytes) -> list[bytes]:
    return [chunk[i : i + 1] for i in range(len(chunk))]


def _random_cuts(seed: str):
    rng = random.Random(seed)

    def cut(chunk: bytes) -> list[bytes]:
        cuts = sorted(rng.sample(range(1, len(chunk)), min(len(chunk) - 1, rng.randint(1, 12)))) if len(chunk) > 1 else []
        return [chunk[a:b] for a, b in zip([0, *cuts], [*cuts, len(chunk)])]

    return cut


def observe(chunks, keylog: KeyLog | None, pieces=_whole) -> tuple[list, dict, TlsSession]:
    """Feed both directions' chunks in wire order; (events, summary, session)."""
    session = TlsSession(keylog=keylog)
    events: list = []
    ts = 0
    for from_client, chunk in chunks:
        ts += 1_000
        for piece in pieces(chunk):
            events += session.receive(from_client, piece, ts)
    events += session.end_of_stream(True, ts + 1) + session.end_of_stream(False, ts + 2) + session.finish(ts + 3)
    summary = session.summary()
    assert not any("internal error" in note for note in summary["notes"]), summary["notes"]
    json.dumps(summary)
    return events, summary, session


def plaintext(events, from_client: bool) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, DecryptedData) and e.from_client == from_client)


def failures(events) -> list[tuple[bool, str]]:
    return [(e.from_client, e.reason) for e in events if isinstance(e, DecryptionFailed)]


def without_decryption(summary: dict) -> dict:
    return {key: value for key, value in summary.items() if key not in DECRYPTION_KEYS}


def _edit_secret(text: str, label: str, keep=True) -> str:
    """The key log text with ``label``'s secret altered (keep=True) or its line dropped."""
    out = []
    for line in text.splitlines():
        if line.startswith(label + " "):
            if not keep:
                continue
            head, secret = line.rsplit(" ", 1)
            line = f"{head} {secret[:-2]}{(int(secret[-2:], 16) ^ 1):02x}"
        out.append(line)
    return "\n".join(out) + "\n"


# -- real sessions, every suite ------------------------------------------------------------------


@pytest.mark.parametrize("name", DECRYPTABLE)
def test_real_session_is_decrypted(conversation, name: str) -> None:
    conv = conversation(name)
    spec = conv.spec
    events, summary, session = observe(conv.chunks, KeyLog.parse(conv.keylog))
    assert (summary["version"], summary["cipher"]) == (VERSION_NAMES[spec.version], spec.expect)
    assert (summary["decrypted"], summary["decryption_error"]) == (True, None)
    assert plaintext(events, True) == SENT[True] and plaintext(events, False) == SENT[False]
    # several records per direction, every one of them decrypted
    data_records = [e for e in events if isinstance(e, DecryptedData) and e.from_client]
    assert len(data_records) >= sum(1 for from_client, _ in PLAN if from_client) + 2
    assert summary["decrypted_records"] == summary["encrypted_records"]
    alerts = [(e.from_client, e.level, e.description, e.encrypted, e.decrypted) for e in events if isinstance(e, Alert)]
    assert alerts == [(True, 1, 0, True, True), (False, 1, 0, True, True)]  # close_notify both ways
    assert summary["established"] is True and summary["established_inferred"] is False
    assert not failures(events)
    if spec.version == "TLSv1_3":
        assert "oxyf" in summary["history"] and "F" in summary["history"], summary["history"]
        assert summary["certificates"][0]["san"] == ["mail.example.test"]
    else:
        assert "F" in summary["history"] and "f" in summary["history"], summary["history"]
    if "_CBC_" in spec.expect:
        assert session.encrypt_then_mac is spec.etm
    for seed in range(3):
        assert observe(conv.chunks, KeyLog.parse(conv.keylog), _random_cuts(f"{name}{seed}"))[:2] == (events, summary)


@pytest.mark.parametrize("name", ["tls1.0-rsa-aes256-cbc-sha", "tls1.2-ecdhe-chacha20", "tls1.3-aes256-gcm"])
def test_records_split_at_every_byte(conversation, name: str) -> None:
    conv = conversation(name)
    keylog = KeyLog.parse(conv.keylog)
    assert observe(conv.chunks, keylog, _bytewise)[:2] == observe(conv.chunks, keylog)[:2]


@pytest.mark.parametrize("name", ["tls1.2-ecdhe-aes128-gcm", "tls1.3-aes256-gcm"])
def test_without_key_log_nothing_changes(conversation, name: str) -> None:
    conv = conversation(name)
    events, summary, _ = observe(conv.chunks, None)
    assert summary["decrypted"] is None and summary["decryption_error"] is None
    assert summary["decrypted_records"] == {"client": 0, "server": 0}
    assert not [e for e in events if isinstance(e, (DecryptedData, DecryptionFailed))]
    assert all(not (isinstance(e, Alert) and e.decrypted) for e in events)


def test_unsupported_suite_is_named(conversation) -> None:
    conv = conversation("tls1.2-rsa-camellia128")
    events, summary, _ = observe(conv.chunks, KeyLog.parse(conv.keylog))
    reason = "cipher suite TLS_RSA_WITH_CAMELLIA_128_CBC_SHA not supported"
    assert (summary["decrypted"], summary["decryption_error"]) == (False, reason)
    assert failures(events) == [(True, reason), (False, reason)]
    assert without_decryption(summary) == without_decryption(observe(conv.chunks, None)[1])


def test_tls_compression_is_named() -> None:
    # No current stack negotiates DEFLATE (RFC 3749), so the hellos are crafted.
    def record(ctype: int, body: bytes) -> bytes:
        return bytes([ctype, 3, 3]) + len(body).to_bytes(2, "big") + body

    def handshake(msg_type: int, body: bytes) -> bytes:
        return record(22, bytes([msg_type]) + len(body).to_bytes(3, "big") + body)

    client_random, server_random = bytes(range(32)), bytes(range(32, 64))
    suite = (0xC02F).to_bytes(2, "big")
    chunks = [
        (True, handshake(1, b"\x03\x03" + client_random + b"\x00" + b"\x00\x02" + suite + b"\x02\x01\x00")),
        (False, handshake(2, b"\x03\x03" + server_random + b"\x00" + suite + b"\x01") + handshake(14, b"")),
        (True, record(20, b"\x01") + record(22, bytes(40))),
    ]
    events, summary, _ = observe(chunks, KeyLog.parse(f"CLIENT_RANDOM {client_random.hex()} {MASTER}"))
    assert failures(events) == [(True, "TLS compression (method 1) is not supported")]
    assert summary["decryption_error"] == "TLS compression (method 1) is not supported"


# -- wrong, damaged and partial key logs ----------------------------------------------------------


@pytest.mark.parametrize("name", ["tls1.2-ecdhe-aes256-gcm", "tls1.3-aes256-gcm"])
def test_keys_of_another_session(conversation, name: str) -> None:
    conv, other = conversation(name), conversation(name, take=1)
    events, summary, _ = observe(conv.chunks, KeyLog.parse(other.keylog))
    assert (summary["decrypted"], summary["decryption_error"]) == (False, D.NO_KEY)
    assert failures(events) == [(True, D.NO_KEY), (False, D.NO_KEY)]
    assert not plaintext(events, True) and not plaintext(events, False)
    # followed exactly as without a key log
    assert without_decryption(summary) == without_decryption(observe(conv.chunks, None)[1])


AUTH_FAILED = "authentication failed on {} record {} (wrong or partial key log?)"

CORRUPTIONS = [
    # (conversation, label whose secret is damaged, first reason, client plaintext?, server plaintext?)
    ("tls1.2-ecdhe-aes128-gcm", "CLIENT_RANDOM", AUTH_FAILED.format("client", 1), False, False),
    ("tls1.1-ecdhe-aes128-cbc-sha-etm", "CLIENT_RANDOM", AUTH_FAILED.format("client", 1), False, False),
    ("tls1.0-rsa-aes256-cbc-sha", "CLIENT_RANDOM", AUTH_FAILED.format("client", 1), False, False),
    ("tls1.3-aes256-gcm", "SERVER_HANDSHAKE_TRAFFIC_SECRET", AUTH_FAILED.format("server", 1), True, False),
    # the client's record 1 is its Finished, under the handshake secret
    ("tls1.3-aes256-gcm", "CLIENT_TRAFFIC_SECRET_0", AUTH_FAILED.format("client", 2), False, True),
]


@pytest.mark.parametrize("name,label,reason,client_ok,server_ok", CORRUPTIONS)
def test_corrupted_secret_stops_its_direction(conversation, name, label, reason, client_ok, server_ok) -> None:
    conv = conversation(name)
    events, summary, _ = observe(conv.chunks, KeyLog.parse(_edit_secret(conv.keylog, label)))
    assert (summary["decrypted"], summary["decryption_error"]) == (False, reason)
    assert failures(events)[0][1] == reason
    # No garbage: a direction gives its exact plaintext or nothing at all.
    assert plaintext(events, True) == (SENT[True] if client_ok else b"")
    assert plaintext(events, False) == (SENT[False] if server_ok else b"")
    if not (client_ok or server_ok):
        assert without_decryption(summary) == without_decryption(observe(conv.chunks, None)[1])


@pytest.mark.parametrize("name", ["tls1.0-rsa-aes256-cbc-sha", "tls1.2-ecdhe-aes256-cbc-sha384", "tls1.2-ecdhe-chacha20",
                                  "tls1.3-aes256-gcm"])
def test_damaged_capture_never_gives_garbage(conversation, name: str) -> None:
    conv = conversation(name)
    keylog = KeyLog.parse(conv.keylog)
    rng = random.Random(name)
    for _ in range(60):
        chunks = list(conv.chunks)
        i = rng.randrange(len(chunks))
        from_client, chunk = chunks[i]
        j = rng.randrange(len(chunk))
        chunks[i] = (from_client, chunk[:j] + bytes([chunk[j] ^ (1 << rng.randrange(8))]) + chunk[j + 1 :])
        events, summary, _ = observe(chunks, keylog)  # and no exception, no internal error
        for side in (True, False):
            assert SENT[side].startswith(plaintext(events, side)), (i, j)
        assert summary["decrypted"] is (summary["decryption_error"] is None and sum(summary["decrypted_records"].values()) > 0)


def test_partial_key_log_decrypts_the_handshake_only(conversation) -> None:
    conv = conversation("tls1.3-aes256-gcm")
    text = _edit_secret(conv.keylog, "CLIENT_TRAFFIC_SECRET_0", keep=False)
    text = _edit_secret(text, "SERVER_TRAFFIC_SECRET_0", keep=False)
    events, summary, _ = observe(conv.chunks, KeyLog.parse(text))
    reason = "the key log has no SERVER_TRAFFIC_SECRET_0 for this session (partial key log?)"
    assert (summary["decrypted"], summary["decryption_error"]) == (False, reason)
    assert sorted(failures(events)) == [
        (False, reason), (True, "the key log has no CLIENT_TRAFFIC_SECRET_0 for this session (partial key log?)"),
    ]
    assert "oxyf" in summary["history"] and "F" in summary["history"]
    assert summary["certificates"][0]["san"] == ["mail.example.test"]
    assert not plaintext(events, True) and not plaintext(events, False)
    # the handshake was read; that the server then accepted it is inferred from its records
    assert summary["established"] is True and summary["established_inferred"] is True
    assert summary["decrypted_records"]["server"] >= 1 and summary["decrypted_records"]["client"] == 1


def test_gap_stops_its_direction(conversation) -> None:
    conv = conversation("tls1.2-ecdhe-aes128-gcm")
    lost = max(range(len(conv.chunks)), key=lambda i: len(conv.chunks[i][1]) if conv.chunks[i][0] else 0)
    session = TlsSession(keylog=KeyLog.parse(conv.keylog))
    events: list = []
    for i, (from_client, chunk) in enumerate(conv.chunks):
        if i == lost:  # the client's 40 KiB write never made it into the capture
            events += session.gap(True, len(chunk), i)
        else:
            events += session.receive(from_client, chunk, i)
    reason = f"{len(conv.chunks[lost][1])} bytes missing from the client's stream: its later records are not decrypted"
    assert failures(events) == [(True, reason)]
    assert session.summary()["decryption_error"] == reason and session.summary()["decrypted"] is False
    assert plaintext(events, True) == b"".join(data for from_client, data in PLAN[:4] if from_client)
    assert plaintext(events, False) == SENT[False]


def test_key_log_with_junk_lines(conversation) -> None:
    conv = conversation("tls1.2-ecdhe-aes128-gcm")
    text = "# comment\n\nnot a key log line\n" + conv.keylog + "CLIENT_RANDOM 00 11\r\nCLIENT_RANDOM\n"
    keylog = KeyLog.parse(text, "mixed.keys")
    last = len(text.splitlines())
    assert keylog.problems == [
        "mixed.keys:3: expected 3 fields (label, client random, secret), found 5",
        f"mixed.keys:{last - 1}: CLIENT_RANDOM: the client random has 1 bytes, not 32",
        f"mixed.keys:{last}: expected 3 fields (label, client random, secret), found 1",
    ]
    events, summary, _ = observe(conv.chunks, keylog)
    assert summary["decrypted"] is True and plaintext(events, True) == SENT[True]


# -- KeyLog ----------------------------------------------------------------------------------------

RANDOM = "ab" * 32
MASTER = "cd" * 48
SECRET = "ef" * 32

BAD_LINES = [
    (f"CLIENT_RANDOM {RANDOM}", "expected 3 fields (label, client random, secret), found 2"),
    (f"CLIENT_RANDOM {RANDOM} {MASTER} extra", "expected 3 fields (label, client random, secret), found 4"),
    (f"client_random {RANDOM} {MASTER}", "not a key log label: 'client_random'"),
    (f"CLIENT_RANDOM {'zz' * 32} {MASTER}", "CLIENT_RANDOM: the client random and the secret must be hexadecimal"),
    (f"CLIENT_RANDOM {'ab' * 31} {MASTER}", "CLIENT_RANDOM: the client random has 31 bytes, not 32"),
    (f"CLIENT_RANDOM {RANDOM} {'cd' * 47}", "CLIENT_RANDOM: the master secret has 47 bytes, not 48"),
    (f"SERVER_TRAFFIC_SECRET_0 {RANDOM} {'ef' * 20}", "SERVER_TRAFFIC_SECRET_0: the secret has 20 bytes, not 32 or 48"),
    (f"RSA {RANDOM} {MASTER}", "RSA: the client random has 32 bytes, not 8"),
]


@pytest.mark.parametrize("line,reason", BAD_LINES)
def test_key_log_bad_line(line: str, reason: str) -> None:
    keylog = KeyLog.parse(f"# header\n{line}\n", "x.keys")
    assert keylog.problems == [f"x.keys:2: {reason}"] and len(keylog) == 0


def test_key_log_lines_kept() -> None:
    text = "\ufeff" + "\r\n".join([
        f"CLIENT_RANDOM {RANDOM} {MASTER}",
        f"CLIENT_RANDOM {RANDOM} {MASTER}",  # the same again: no problem, one entry
        f"  SERVER_HANDSHAKE_TRAFFIC_SECRET {RANDOM} {SECRET}  ",
        f"EXPORTER_SECRET {RANDOM} {'01' * 48}",  # kept, unused
        f"RSA {'12' * 8} {'34' * 48}",
        f"SERVER_HANDSHAKE_TRAFFIC_SECRET {RANDOM} {'00' * 32}",  # conflicts: the first one stays
    ])
    keylog = KeyLog.parse(text)
    assert len(keylog) == 4 and bytes.fromhex(RANDOM) in keylog
    assert keylog.secrets(bytes.fromhex(RANDOM)) == {
        "CLIENT_RANDOM": bytes.fromhex(MASTER),
        "SERVER_HANDSHAKE_TRAFFIC_SECRET": bytes.fromhex(SECRET),
        "EXPORTER_SECRET": bytes.fromhex("01" * 48),
    }
    assert keylog.secrets(bytes(32)) == {}
    assert keylog.problems == [
        "<text>:6: SERVER_HANDSHAKE_TRAFFIC_SECRET abababababababab…: a different secret was logged before; "
        "the first one is kept"
    ]


def test_key_log_files_merge(tmp_path) -> None:
    first, second = tmp_path / "a.keys", tmp_path / "b.keys"
    first.write_text(f"CLIENT_RANDOM {RANDOM} {MASTER}\n")
    second.write_text(f"# b\nCLIENT_RANDOM {'01' * 32} {MASTER}\nbroken\n")
    keylog = KeyLog.load([first, str(second)])
    assert len(keylog) == 2 and keylog.sources == [str(first), str(second)]
    assert keylog.problems == [f"{second}:3: expected 3 fields (label, client random, secret), found 1"]
    assert len(KeyLog.load(first)) == 1


@pytest.mark.parametrize("content,detail", [
    (None, "cannot read key log"),
    ("", "holds no usable line (it is empty or only comments)"),
    ("# SSL/TLS secrets log file, generated by OpenSSL\n", "holds no usable line (it is empty or only comments)"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQ\n", "holds no usable line (2 malformed lines)"),
])
def test_key_log_file_errors(tmp_path, content: str | None, detail: str) -> None:
    path = tmp_path / "session.keys"
    if content is not None:
        path.write_text(content)
    with pytest.raises(KeyLogError) as err:
        KeyLog.load([path])
    message = str(err.value)
    assert detail in message and str(path) in message and "\n" not in message
    with pytest.raises(KeyLogError, match="cannot read key log"):
        KeyLog.load(tmp_path)  # a directory


def test_key_log_limits(tmp_path, monkeypatch) -> None:
    lines = [f"CLIENT_RANDOM {i:064x} {MASTER}" for i in range(10)]
    monkeypatch.setattr(K, "MAX_ENTRIES", 4)
    keylog = KeyLog.parse("\n".join(lines), "many")
    assert len(keylog) == 4 and keylog.problems == ["many:5: the limit of 4 secrets is reached; the rest is ignored"]
    monkeypatch.setattr(K, "MAX_ENTRIES", 100)
    keylog = KeyLog.parse("\n".join(["junk"] * 30))
    assert len(keylog.problems) == K.MAX_PROBLEMS and keylog.problem_count == 30
    path = tmp_path / "big.keys"
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(K, "MAX_FILE_BYTES", len(lines[0]) * 3 + 10)  # three lines and a half
    keylog = KeyLog.load(path)
    assert len(keylog) == 3 and keylog.problem_count == 1 and "only the first complete lines" in keylog.problems[0]


# -- derivations against published vectors ---------------------------------------------------------


def test_hkdf_expand_label_rfc8448() -> None:
    # RFC 8448 §3 (simple 1-RTT handshake): the server handshake traffic key and IV
    secret = bytes.fromhex("b67b7d690cc16c4e75e54213cb2d37b4e9c912bcded9105d42befd59d391ad38")
    assert D.hkdf_expand_label("sha256", secret, b"key", b"", 16).hex() == "3fce516009c21727d0f2e4e86ee403bc"
    assert D.hkdf_expand_label("sha256", secret, b"iv", b"", 12).hex() == "5d313eb2671276ee13000b30"


def test_tls12_prf_vector() -> None:
    # The TLS 1.2 PRF (SHA-256) test vector circulated on the IETF TLS list
    out = D.prf(0x0303, "sha256", bytes.fromhex("9bbe436ba940f017b17652849a71db35"), b"test label",
                bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c"), 100)
    assert out.hex().startswith("e3f229ba727be17b8d122620557cd453c2aab21d07c3d495329b52d4e61edb5a")
    assert len(out) == 100


def test_supported_suites() -> None:
    names = {suite.name for suite in D.SUITES.values()}
    assert {SPECS[name].expect for name in DECRYPTABLE} <= names
    assert D.supported(0x0303, 0x1301) is None and D.supported(0x0304, 0xC02F) is None  # version and suite must agree
    assert D.supported(0x0300, 0x002F) is None  # SSL 3.0
    assert D.supported(0x0303, 0x000A) is None  # 3DES


# -- KeyUpdate and renegotiation: openssl s_client / s_server through a loopback relay -------------


class OpenSslPair:
    """openssl s_server and s_client talking through a relay on 127.0.0.1 that records the bytes."""

    def __init__(self, tmp: Path, version_flag: str, *server_options: str) -> None:
        ca = trustme.CA()
        pem = tmp / "server.pem"
        ca.issue_cert("mail.example.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
        self.keylog = tmp / "client.keys"
        self.chunks: list[tuple[bool, bytes]] = []
        self.output = {True: bytearray(), False: bytearray()}
        self.server = subprocess.Popen(
            ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-cert", str(pem), version_flag,
             *server_options],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        line = b""
        while not line.startswith(b"ACCEPT"):
            line = self.server.stdout.readline()
            assert line, "openssl s_server did not start"
        port = int(line.rsplit(b":", 1)[1])
        listener = socket.create_server(("127.0.0.1", 0))
        self.relay = threading.Thread(target=self._relay, args=(listener, port), daemon=True)
        self.relay.start()
        self.client = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{listener.getsockname()[1]}", "-noservername",
             "-keylogfile", str(self.keylog), version_flag],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for from_client, proc in ((True, self.client), (False, self.server)):
            threading.Thread(target=self._collect, args=(from_client, proc), daemon=True).start()
        self.wait(False, b"CIPHER is")

    def _collect(self, from_client: bool, proc) -> None:
        for line in proc.stdout:
            self.output[from_client] += line

    def _relay(self, listener, port: int) -> None:
        client, _ = listener.accept()
        server = socket.create_connection(("127.0.0.1", port))
        peers = {client: (server, True), server: (client, False)}
        while peers:
            ready, _, _ = select.select(list(peers), [], [], 30)
            if not ready:
                return
            for sock in ready:
                peer, from_client = peers[sock]
                data = sock.recv(65536)
                if not data:
                    del peers[sock]
                    try:
                        peer.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    continue
                self.chunks.append((from_client, data))
                peer.sendall(data)

    def say(self, from_client: bool, line: bytes) -> None:
        proc = self.client if from_client else self.server
        proc.stdin.write(line)
        proc.stdin.flush()

    def wait(self, from_client: bool, needle: bytes) -> None:
        """Until the client's (or server's) openssl printed ``needle``."""
        _until(lambda: needle in self.output[from_client], (needle, bytes(self.output[from_client][-500:])))

    def records(self, from_client: bool) -> int:
        """Chunks the relay passed on from the client (or server) so far."""
        return sum(1 for direction, _ in self.chunks if direction == from_client)

    def close(self) -> None:
        self.say(True, b"Q\n")
        self.relay.join(20)
        for proc in (self.client, self.server):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _until(condition, what, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command-line tool is not installed")


@needs_openssl
def test_key_update(tmp_path) -> None:
    pair = OpenSslPair(tmp_path, "-tls1_3")
    try:
        pair.say(True, b"hello before\n")
        pair.wait(False, b"hello before")
        sent = pair.records(True)
        pair.say(True, b"K\n")  # s_client: KeyUpdate, and ask the server to update too
        _until(lambda: pair.records(True) > sent, "no KeyUpdate")  # s_client reads a command line whole
        pair.say(True, b"hello after\n")
        pair.wait(False, b"hello after")
        pair.say(False, b"from the server\n")
        pair.wait(True, b"from the server")
    finally:
        pair.close()
    events, summary, _ = observe(pair.chunks, KeyLog.load(pair.keylog))
    assert (summary["decrypted"], summary["decryption_error"]) == (True, None)
    assert "P" in summary["history"] and "p" in summary["history"], summary["history"]  # both sides updated
    assert plaintext(events, True) == b"hello before\nhello after\n"
    assert plaintext(events, False) == b"from the server\n"
    assert summary["decrypted_records"] == summary["encrypted_records"]


@needs_openssl
def test_hello_retry_request(tmp_path) -> None:
    pair = OpenSslPair(tmp_path, "-tls1_3", "-groups", "P-256")  # the client's first key share is X25519
    try:
        pair.say(True, b"after the retry\n")
        pair.wait(False, b"after the retry")
    finally:
        pair.close()
    events, summary, _ = observe(pair.chunks, KeyLog.load(pair.keylog))
    assert summary["hello_retry"] is True and summary["curve"] == "secp256r1"
    assert (summary["decrypted"], summary["decryption_error"]) == (True, None)
    assert summary["history"].startswith("CjiICsoxyfF"), summary["history"]
    assert plaintext(events, True) == b"after the retry\n"


@needs_openssl
def test_renegotiation(tmp_path) -> None:
    pair = OpenSslPair(tmp_path, "-tls1_2")
    try:
        pair.say(True, b"hello before\n")
        pair.wait(False, b"hello before")
        pair.say(False, b"R\n")  # s_server: HelloRequest; the client renegotiates
        _until(lambda: pair.keylog.read_text().count("CLIENT_RANDOM") == 2, "no renegotiation")
        pair.say(True, b"after renegotiation\n")
        pair.wait(False, b"after renegotiation")
        pair.say(False, b"from the server\n")
        pair.wait(True, b"from the server")
    finally:
        pair.close()
    events, summary, _ = observe(pair.chunks, KeyLog.load(pair.keylog))
    assert (summary["decrypted"], summary["decryption_error"]) == (True, None)
    assert summary["history"].count("C") == 2 and "h" in summary["history"], summary["history"]
    assert plaintext(events, True) == b"hello before\nafter renegotiation\n"
    assert plaintext(events, False) == b"from the server\n"


# -- real captures ----------------------------------------------------------------------------------

#: A TLS record header of a handshake: where TLS starts after STARTTLS.
TLS_HANDSHAKE_START = re.compile(rb"\x16\x03[\x00-\x04]")
#: Plaintext that ends the SMTP part of a direction: the client's STARTTLS, the server's 220 to it.
STARTTLS_END = {True: re.compile(rb"STARTTLS\r\n", re.IGNORECASE), False: re.compile(rb"\r\n220 2\.0\.0 [^\n]*\n")}
#: The last line of an SMTP reply.
REPLY_END = re.compile(rb"^([2-5][0-9][0-9])(?: [^\r\n]*)?\r?$", re.MULTILINE)

#: Lines each capture's decrypted plaintext must hold: (client lines, server lines).
EXPECTED_LINES = {
    "starttls-auth-ok.pcap": ([b"AUTH LOGIN\r\n"], [b"235 2.7.0 ", b"250 2.0.0 OK"]),
    "auth-disabled-535.pcap": ([b"AUTH LOGIN\r\n"], [b"535 5.7.139 "]),
    "not-authenticated-530-5.7.57.pcap": ([b"mail FROM:<"], [b"530 5.7.57 "]),
    "tls10-accepted-421.pcap": ([b"ehlo "], [b"421 4.7.66 "]),
    "implicit-tls-465-ok.pcap": ([b"AUTH LOGIN\r\n"], [b"220 relay.contoso.com", b"235 2.7.0 "]),
    "sendas-denied-554.pcap": ([b"AUTH LOGIN\r\n"], [b"235 2.7.0 ", b"554 5.2.252 SendAsDenied"]),
    "ipv6-starttls-ok.pcap": ([b"AUTH LOGIN\r\n"], [b"235 2.7.0 "]),
}


def keyed_captures() -> list[dict]:
    entries = json.loads((CAPTURES / "manifest.json").read_text())["captures"]
    return [entry for entry in entries if entry.get("keylog")]


class _TlsAfterStarttls:
    """Feeds a TlsSession a connection's bytes from where TLS starts in each direction."""

    def __init__(self, conn, keylog: KeyLog) -> None:
        self.conn = conn
        self.tls = TlsSession(keylog=keylog)
        implicit = conn.resp_port == 465
        self.waiting = {True: not implicit, False: not implicit}
        self.held = {True: b"", False: b""}
        self.events: list = []

    def data(self, from_client: bool, data: bytes, ts: int) -> None:
        if self.waiting[from_client]:
            held = self.held[from_client] + bytes(data)
            end = STARTTLS_END[from_client].search(held)
            start = TLS_HANDSHAKE_START.match(held, end.end()) if end else None
            if start is None:
                self.held[from_client] = held
                return
            self.waiting[from_client] = False
            data = held[start.start() :]
        self.events += self.tls.receive(from_client, data, ts)

    def gap(self, from_client: bool, length: int, ts: int) -> None:
        self.events += self.tls.gap(from_client, length, ts)

    def end_of_stream(self, from_client: bool, ts: int) -> None:
        self.events += self.tls.end_of_stream(from_client, ts)

    def finish(self, ts: int) -> None:
        self.events += self.tls.finish(ts, "client" if self.conn.rsts and self.conn.rsts[0][1] else None)


def decrypt_capture(pcap: Path, keylog: KeyLog) -> list[_TlsAfterStarttls]:
    """Every SMTP connection in the capture, followed by the TLS observer with the key log."""
    finished = []
    # The analyzer is kept from the callback: the table releases it once the callback returns.
    table = ConnectionTable(lambda conn, at_end: finished.append((conn.resp_port, conn.analyzer)),
                            lambda conn: _TlsAfterStarttls(conn, keylog), checksums="off")
    decoder = Decoder(Selector(None))
    for rec in CaptureSet([str(pcap)]):
        pkt = decoder.decode(*rec)
        if isinstance(pkt, TcpSegment):
            table.tcp(pkt)
    table.finish()
    return [analyzer for port, analyzer in finished if port in (25, 465, 587)]


def reply_codes(server_plaintext: bytes) -> list[int]:
    return [int(m.group(1)) for m in REPLY_END.finditer(server_plaintext)]


@pytest.mark.parametrize("entry", keyed_captures(), ids=lambda entry: entry["file"])
def test_capture_is_decrypted(entry: dict) -> None:
    sessions = decrypt_capture(CAPTURES / entry["file"], KeyLog.load(CAPTURES / entry["keylog"]))
    assert len(sessions) == len(entry["sessions"]) == 1
    observer, expected = sessions[0], entry["sessions"][0]
    summary = observer.tls.summary()
    assert (summary["decrypted"], summary["decryption_error"]) == (True, None)
    assert summary["version"] == expected["tls"]["version"]
    assert summary["established"] is True and summary["established_inferred"] is False
    client, server = plaintext(observer.events, True), plaintext(observer.events, False)
    assert reply_codes(server) == expected["encrypted_replies"]
    client_lines, server_lines = EXPECTED_LINES[entry["file"]]
    for line in client_lines:
        assert line in client, line
    for line in server_lines:
        assert line in server, line
    if expected["server_port"] == 465:
        assert server.startswith(b"220 ")  # implicit TLS: the greeting is inside
    else:
        assert client.lower().startswith(b"ehlo ")  # STARTTLS: the client speaks first


def test_capture_with_another_captures_keys() -> None:
    sessions = decrypt_capture(CAPTURES / "auth-disabled-535.pcap", KeyLog.load(CAPTURES / "sendas-denied-554.keys"))
    summary = sessions[0].tls.summary()
    assert (summary["decrypted"], summary["decryption_error"]) == (False, D.NO_KEY)
    assert not plaintext(sessions[0].events, True) and not plaintext(sessions[0].events, False)


if __name__ == "__main__":  # one conversation in a child process: test_tls_decrypt.py NAME KEYLOG
    print(json.dumps([[from_client, data.hex()] for from_client, data in converse(SPECS[sys.argv[1]], sys.argv[2])]))
