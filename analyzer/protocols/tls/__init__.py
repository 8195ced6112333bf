"""TLS observer: a sans-I/O parser that reports what happened in a connection's TLS handshake.

Feed :class:`TlsSession` each direction's reassembled bytes; it returns events
(:mod:`.events`) and, at the end, a :meth:`~TlsSession.summary` with Zeek's ``ssl.log``
vocabulary (``version``, ``cipher``, ``ssl_history`` letters …) plus the failure diagnosis.
Given a :class:`KeyLog` (NSS ``SSLKEYLOGFILE``), it also decrypts the session
(:mod:`.decrypt`) and hands out the plaintext as :class:`DecryptedData` events.
"""

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
from .keylog import GrowingKeyLog, KeyLog, KeyLogError
from .parser import MAX_HANDSHAKE_MESSAGE, TlsSession, parse_certificate

__all__ = [
    "Alert",
    "ApplicationData",
    "CertInfo",
    "Certificate",
    "ChangeCipherSpec",
    "ClientHello",
    "DecryptedData",
    "DecryptionFailed",
    "Event",
    "HandshakeComplete",
    "HandshakeFailed",
    "HandshakeMessage",
    "GrowingKeyLog",
    "KeyLog",
    "KeyLogError",
    "MAX_HANDSHAKE_MESSAGE",
    "NotTls",
    "ServerHello",
    "TlsSession",
    "parse_certificate",
]
