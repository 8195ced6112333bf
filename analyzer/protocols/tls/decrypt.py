"""TLS record decryption with secrets from an NSS key log, sans-I/O.

The observer (:mod:`.parser`) follows the handshake and tells a :class:`TlsDecrypter` the
facts that matter — client and server random, version, cipher suite, encrypt-then-MAC —
and when a direction changes keys; this module derives the keys and opens that direction's
records, in order. The key exchange (RSA, DHE, ECDHE, PSK) never matters: the key log holds
the master secret (TLS ≤ 1.2) or the traffic secrets (TLS 1.3) it produced.

- TLS 1.0–1.2 (RFC 2246, 4346, 5246): key block from the PRF (MD5 ⊕ SHA-1 before 1.2, else
  the suite's SHA-256/384) keyed by the master secret. A direction's keys start at its
  ChangeCipherSpec with sequence number 0. AES-GCM and AES-CCM (RFC 5288, 6655: 4-byte salt
  + 8-byte explicit nonce), ChaCha20-Poly1305 (RFC 7905: IV ⊕ sequence), AES-CBC with
  HMAC-SHA1/256/384: TLS 1.0 chains the IV across records, 1.1+ sends it per record;
  MAC-then-encrypt with the padding checked, or encrypt-then-MAC (RFC 7366).
- TLS 1.3 (RFC 8446): keys and IV from each traffic secret by HKDF-Expand-Label, the nonce
  is IV ⊕ sequence, the record header is the AAD, the real content type ends the plaintext.
  Handshake keys from the ServerHello, application keys after each side's Finished, the next
  generation after a KeyUpdate; the sequence number restarts at every change.

A record that does not open (wrong key, corrupted key log, a record missing from the
capture) stops its direction for good: :attr:`DirectionDecrypter.error` says why, as it
does for what is not supported: SSL 3.0, TLS 1.3 drafts, TLS compression, other bulk
ciphers (RC4, 3DES, Camellia, ARIA, NULL …). Nothing here raises on packet contents. AEAD
and CBC objects are built once per key epoch.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from . import constants as C
from .keylog import (
    CLIENT_HANDSHAKE_TRAFFIC_SECRET,
    CLIENT_RANDOM,
    CLIENT_TRAFFIC_SECRET_0,
    SERVER_HANDSHAKE_TRAFFIC_SECRET,
    SERVER_TRAFFIC_SECRET_0,
    KeyLog,
)

NO_KEY = "no key for this session's client random"

AES_BLOCK = 16
AEAD_NONCE_LEN = 12
#: TLS 1.2 GCM/CCM: implicit salt from the key block + explicit nonce in each record.
SALT_LEN = 4
EXPLICIT_NONCE_LEN = 8
SEQ_LEN = 8
#: TLS 1.3 cipher suites are 0x13XX.
TLS13_SUITE_MAJOR = 0x13
DIGEST_LEN = {"sha1": 20, "sha256": 32, "sha384": 48}


@dataclass(frozen=True, slots=True)
class Suite:
    """What decryption needs to know about a cipher suite."""

    name: str
    cipher: str  # "aes-gcm", "aes-ccm", "chacha20-poly1305", "aes-cbc"
    key_len: int
    tag_len: int  # AEAD tag; 0 for CBC
    mac: str | None  # HMAC hash of a CBC suite
    hash: str  # the TLS 1.2 PRF hash, or the TLS 1.3 HKDF hash


#: Bulk cipher and hash by the end of the suite name ("…_WITH_<this>", TLS 1.3 "TLS_<this>");
#: the key exchange in front does not matter.
_BULK = {
    "AES_128_GCM_SHA256": ("aes-gcm", 16, 16, None, "sha256"),
    "AES_256_GCM_SHA384": ("aes-gcm", 32, 16, None, "sha384"),
    "CHACHA20_POLY1305_SHA256": ("chacha20-poly1305", 32, 16, None, "sha256"),
    "AES_128_CCM": ("aes-ccm", 16, 16, None, "sha256"),
    "AES_256_CCM": ("aes-ccm", 32, 16, None, "sha256"),
    "AES_128_CCM_8": ("aes-ccm", 16, 8, None, "sha256"),
    "AES_256_CCM_8": ("aes-ccm", 32, 8, None, "sha256"),
    "AES_128_CCM_SHA256": ("aes-ccm", 16, 16, None, "sha256"),
    "AES_128_CCM_8_SHA256": ("aes-ccm", 16, 8, None, "sha256"),
    "AES_128_CBC_SHA": ("aes-cbc", 16, 0, "sha1", "sha256"),
    "AES_256_CBC_SHA": ("aes-cbc", 32, 0, "sha1", "sha256"),
    "AES_128_CBC_SHA256": ("aes-cbc", 16, 0, "sha256", "sha256"),
    "AES_256_CBC_SHA256": ("aes-cbc", 32, 0, "sha256", "sha256"),
    "AES_256_CBC_SHA384": ("aes-cbc", 32, 0, "sha384", "sha384"),
}


def _suite_table() -> dict[int, Suite]:
    table = {}
    for code, name in C.CIPHER_SUITES.items():
        bulk = name.partition("_WITH_")[2] if code >> 8 != TLS13_SUITE_MAJOR else name.removeprefix("TLS_")
        if bulk in _BULK:
            table[code] = Suite(name, *_BULK[bulk])
    return table


#: Every cipher suite this module decrypts, by code point.
SUITES = _suite_table()


def supported(version: int | None, suite: int | None) -> Suite | None:
    """The suite's parameters if records of this version and suite can be decrypted."""
    spec = SUITES.get(suite) if suite is not None else None
    if spec is None or version not in (C.TLSv1_0, C.TLSv1_1, C.TLSv1_2, C.TLSv1_3):
        return None
    return spec if (version == C.TLSv1_3) == (suite >> 8 == TLS13_SUITE_MAJOR) else None


# -- key derivation -----------------------------------------------------------------------------
def _p_hash(hash_name: str, secret: bytes, seed: bytes, length: int) -> bytes:
    """P_hash of RFC 5246 §5."""
    out = bytearray()
    a = seed
    while len(out) < length:
        a = hmac.digest(secret, a, hash_name)
        out += hmac.digest(secret, a + seed, hash_name)
    return bytes(out[:length])


def prf(version: int, hash_name: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS PRF: the suite's hash in TLS 1.2, P_MD5 ⊕ P_SHA1 over the two halves before."""
    if version >= C.TLSv1_2:
        return _p_hash(hash_name, secret, label + seed, length)
    half = (len(secret) + 1) // 2
    md5 = _p_hash("md5", secret[:half], label + seed, length)
    sha1 = _p_hash("sha1", secret[-half:], label + seed, length)
    return (int.from_bytes(md5, "big") ^ int.from_bytes(sha1, "big")).to_bytes(length, "big")


def hkdf_expand_label(hash_name: str, secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    """HKDF-Expand-Label of RFC 8446 §7.1."""
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + bytes([len(context)]) + context
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([counter]), hash_name)
        out += block
        counter += 1
    return out[:length]


def _aead(suite: Suite, key: bytes):
    if suite.cipher == "aes-gcm":
        return AESGCM(key)
    if suite.cipher == "aes-ccm":
        return AESCCM(key, tag_length=suite.tag_len)
    return ChaCha20Poly1305(key)


# -- one key epoch of one direction ----------------------------------------------------------
class _Unopenable(Exception):
    """A record that does not decrypt; the message completes "… on server record N"."""


_AUTH_FAILED = "authentication failed"


class _Aead12:
    """TLS 1.2 AEAD: AAD = seq ‖ type ‖ version ‖ plaintext length."""

    __slots__ = ("aead", "salt", "iv", "tag_len", "explicit", "seq")

    def __init__(self, suite: Suite, key: bytes, iv: bytes) -> None:
        self.aead = _aead(suite, key)
        self.explicit = suite.cipher != "chacha20-poly1305"
        self.salt = iv  # GCM/CCM: 4-byte salt
        self.iv = int.from_bytes(iv, "big")  # ChaCha20: 12-byte IV
        self.tag_len = suite.tag_len
        self.seq = 0

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        if self.explicit:
            nonce, sealed = self.salt + body[:EXPLICIT_NONCE_LEN], body[EXPLICIT_NONCE_LEN:]
        else:
            nonce, sealed = (self.iv ^ self.seq).to_bytes(AEAD_NONCE_LEN, "big"), body
        size = len(sealed) - self.tag_len
        if size < 0 or len(nonce) != AEAD_NONCE_LEN:
            raise _Unopenable("record too short for its cipher")
        aad = self.seq.to_bytes(SEQ_LEN, "big") + header[:3] + size.to_bytes(2, "big")
        plaintext = self.aead.decrypt(nonce, sealed, aad)
        self.seq += 1
        return header[0], plaintext


class _Cbc:
    """TLS ≤ 1.2 AES-CBC + HMAC, MAC-then-encrypt or encrypt-then-MAC.

    One CBC decryptor serves the whole epoch: TLS 1.0 chains each record's IV from the last
    block of the one before, which is just CBC carrying on; with an explicit IV (1.1+) the
    first block decrypted is the IV itself (garbage, dropped) and the rest is right.
    """

    __slots__ = ("decryptor", "mac_key", "mac", "mac_len", "explicit_iv", "etm", "seq")

    def __init__(self, suite: Suite, key: bytes, mac_key: bytes, iv: bytes, explicit_iv: bool, etm: bool) -> None:
        self.decryptor = Cipher(algorithms.AES(key), modes.CBC(iv or bytes(AES_BLOCK))).decryptor()
        self.mac_key = mac_key
        self.mac = suite.mac
        self.mac_len = DIGEST_LEN[suite.mac]
        self.explicit_iv = explicit_iv
        self.etm = etm
        self.seq = 0

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        prefix = self.seq.to_bytes(SEQ_LEN, "big") + header[:3]
        skip = AES_BLOCK if self.explicit_iv else 0
        if self.etm:
            blocks, tag = body[: -self.mac_len], body[-self.mac_len :]
            if len(blocks) < skip + AES_BLOCK or len(blocks) % AES_BLOCK:
                raise _Unopenable("record too short for its cipher")
            expected = hmac.digest(self.mac_key, prefix + len(blocks).to_bytes(2, "big") + blocks, self.mac)
            if not hmac.compare_digest(expected, tag):
                raise _Unopenable(_AUTH_FAILED)
            content = self._unpad(self.decryptor.update(blocks)[skip:])
        else:
            if len(body) < skip + AES_BLOCK or len(body) % AES_BLOCK:
                raise _Unopenable("record too short for its cipher")
            padded = self._unpad(self.decryptor.update(body)[skip:])
            if len(padded) < self.mac_len:
                raise _Unopenable(_AUTH_FAILED)
            content, tag = padded[: len(padded) - self.mac_len], padded[len(padded) - self.mac_len :]
            expected = hmac.digest(self.mac_key, prefix + len(content).to_bytes(2, "big") + content, self.mac)
            if not hmac.compare_digest(expected, tag):
                raise _Unopenable(_AUTH_FAILED)
        self.seq += 1
        return header[0], content

    @staticmethod
    def _unpad(plain: bytes) -> bytes:
        pad = plain[-1]
        if pad + 1 > len(plain) or plain[-pad - 1 :] != bytes([pad]) * (pad + 1):
            raise _Unopenable(_AUTH_FAILED)  # bad padding: a wrong key looks like this
        return plain[: -pad - 1]


class _Tls13:
    """TLS 1.3: AAD = the record header; the inner content type ends the plaintext."""

    __slots__ = ("aead", "iv", "tag_len", "seq", "secret")

    def __init__(self, suite: Suite, secret: bytes) -> None:
        self.secret = secret
        self.aead = _aead(suite, hkdf_expand_label(suite.hash, secret, b"key", b"", suite.key_len))
        self.iv = int.from_bytes(hkdf_expand_label(suite.hash, secret, b"iv", b"", AEAD_NONCE_LEN), "big")
        self.tag_len = suite.tag_len
        self.seq = 0

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes]:
        if len(body) < self.tag_len:
            raise _Unopenable("record too short for its cipher")
        inner = self.aead.decrypt((self.iv ^ self.seq).to_bytes(AEAD_NONCE_LEN, "big"), body, header).rstrip(b"\0")
        self.seq += 1
        if not inner:
            raise _Unopenable("no content type in the decrypted record")
        return inner[-1], inner[:-1]


# -- the decrypter ------------------------------------------------------------------------
class DirectionDecrypter:
    """One direction's decryption: the current key epoch, or why there is none."""

    __slots__ = ("name", "epoch", "error", "records", "attempts")

    def __init__(self, name: str) -> None:
        self.name = name
        self.epoch: _Aead12 | _Cbc | _Tls13 | None = None
        self.error: str | None = None
        self.records = 0  # decrypted
        self.attempts = 0  # records handed to open()

    @property
    def active(self) -> bool:
        return self.epoch is not None

    def open(self, header: bytes, body: bytes) -> tuple[int, bytes] | None:
        """(content type, plaintext) of the next record, or None (see ``error``) if it does not open.

        Only while ``active``: the observer asks when a record header arrives.
        """
        self.attempts += 1
        try:
            opened = self.epoch.open(header, body)
        except (InvalidTag, ValueError, _Unopenable) as exc:  # ValueError: lengths cryptography refuses
            what = str(exc) if isinstance(exc, _Unopenable) else _AUTH_FAILED
            hint = " (wrong or partial key log?)" if what == _AUTH_FAILED else ""
            self.fail(f"{what} on {self.name} record {self.attempts}{hint}")
            return None
        self.records += 1
        return opened

    def fail(self, reason: str) -> None:
        self.epoch = None
        if self.error is None:
            self.error = reason


class TlsDecrypter:
    """Both directions of one TLS session; the observer calls in when keys change."""

    def __init__(self, keylog: KeyLog) -> None:
        self.keylog = keylog
        self.client = DirectionDecrypter("client")
        self.server = DirectionDecrypter("server")
        self._suite: Suite | None = None  # TLS 1.3: the suite the traffic secrets belong to
        self._secrets: dict[str, bytes] = {}

    def direction(self, from_client: bool) -> DirectionDecrypter:
        return self.client if from_client else self.server

    def start_tls12(
        self, from_client: bool, client_random: bytes | None, server_random: bytes | None,
        version: int | None, suite_code: int | None, compression: int, encrypt_then_mac: bool,
    ) -> None:
        """Keys for a direction's records after its ChangeCipherSpec (else ``error`` says why)."""
        d = self.direction(from_client)
        if d.error is not None:
            return
        if client_random is None or server_random is None:
            d.fail("the ClientHello or ServerHello was not seen: no keys can be derived")
            return
        suite = supported(version, suite_code)
        if suite is None:
            d.fail(_unsupported(version, suite_code))
            return
        if compression:
            d.fail(f"TLS compression (method {compression}) is not supported")
            return
        secrets = self.keylog.secrets(client_random)
        master = secrets.get(CLIENT_RANDOM)
        if master is None:
            d.fail(NO_KEY if not secrets else "the key log has no CLIENT_RANDOM (master secret) line for this session")
            return
        cbc = suite.cipher == "aes-cbc"
        mac_len = DIGEST_LEN[suite.mac] if suite.mac else 0
        if not cbc:
            iv_len = SALT_LEN if suite.cipher != "chacha20-poly1305" else AEAD_NONCE_LEN
        else:
            iv_len = AES_BLOCK if version == C.TLSv1_0 else 0  # 1.1+ sends the IV in each record
        block = prf(version, suite.hash, master, b"key expansion", server_random + client_random,
                    2 * (mac_len + suite.key_len + iv_len))
        # client MAC key, server MAC key, client key, server key, client IV, server IV
        own = 0 if from_client else 1
        mac_key = block[own * mac_len : (own + 1) * mac_len]
        keys = block[2 * mac_len :]
        key = keys[own * suite.key_len : (own + 1) * suite.key_len]
        ivs = keys[2 * suite.key_len :]
        iv = ivs[own * iv_len : (own + 1) * iv_len]
        if cbc:
            d.epoch = _Cbc(suite, key, mac_key, iv, version != C.TLSv1_0, encrypt_then_mac)
        else:
            d.epoch = _Aead12(suite, key, iv)

    def start_tls13(self, client_random: bytes | None, version: int | None, suite_code: int | None) -> None:
        """Handshake keys for both directions, from the ServerHello on (else ``error`` says why)."""
        suite = supported(version, suite_code)
        secrets = self.keylog.secrets(client_random) if client_random is not None else {}
        if suite is None or not secrets:
            for d in (self.client, self.server):
                d.fail(_unsupported(version, suite_code) if suite is None else NO_KEY)
            return
        self._suite, self._secrets = suite, secrets
        self._tls13_epoch(self.client, CLIENT_HANDSHAKE_TRAFFIC_SECRET)
        self._tls13_epoch(self.server, SERVER_HANDSHAKE_TRAFFIC_SECRET)

    def tls13_application(self, from_client: bool) -> None:
        """After a direction's Finished: its application traffic keys."""
        label = CLIENT_TRAFFIC_SECRET_0 if from_client else SERVER_TRAFFIC_SECRET_0
        self._tls13_epoch(self.direction(from_client), label)

    def tls13_key_update(self, from_client: bool) -> None:
        """After a direction's KeyUpdate: the next generation of its traffic secret (RFC 8446 §7.2)."""
        d = self.direction(from_client)
        suite = self._suite
        if isinstance(d.epoch, _Tls13) and suite is not None:
            secret = d.epoch.secret
            d.epoch = _Tls13(suite, hkdf_expand_label(suite.hash, secret, b"traffic upd", b"", len(secret)))

    def _tls13_epoch(self, d: DirectionDecrypter, label: str) -> None:
        if d.error is not None or self._suite is None:
            return
        secret = self._secrets.get(label)
        if secret is None:
            d.fail(f"the key log has no {label} for this session (partial key log?)")
        elif len(secret) != DIGEST_LEN[self._suite.hash]:
            d.fail(f"the key log's {label} does not fit {self._suite.name}")
        else:
            d.epoch = _Tls13(self._suite, secret)


def _unsupported(version: int | None, suite: int | None) -> str:
    if version is not None and version >> 8 == C.TLS13_DRAFT_MAJOR:
        return f"TLS 1.3 draft {version & 0xFF} is not supported for decryption"
    if version not in (C.TLSv1_0, C.TLSv1_1, C.TLSv1_2, C.TLSv1_3):
        return f"{C.version_name(version) or 'an unknown version'} is not supported for decryption"
    return f"cipher suite {C.cipher_suite_name(suite)} not supported"
