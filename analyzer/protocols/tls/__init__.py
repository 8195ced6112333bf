"""TLS observer: a sans-I/O parser that reports what happened in a connection's TLS handshake.

Feed :class:`TlsSession` each direction's reassembled bytes; it returns events
(:mod:`.events`) and, at the end, a :meth:`~TlsSession.summary` with Zeek's ``ssl.log``
vocabulary (``version``, ``cipher``, ``ssl_history`` letters …) plus the failure diagnosis.
"""

from .events import (
    Alert,
    ApplicationData,
    Certificate,
    CertInfo,
    ChangeCipherSpec,
    ClientHello,
    Event,
    HandshakeComplete,
    HandshakeFailed,
    HandshakeMessage,
    NotTls,
    ServerHello,
)
from .parser import MAX_HANDSHAKE_MESSAGE, TlsSession, parse_certificate

__all__ = [
    "Alert",
    "ApplicationData",
    "CertInfo",
    "Certificate",
    "ChangeCipherSpec",
    "ClientHello",
    "Event",
    "HandshakeComplete",
    "HandshakeFailed",
    "HandshakeMessage",
    "MAX_HANDSHAKE_MESSAGE",
    "NotTls",
    "ServerHello",
    "TlsSession",
    "parse_certificate",
]
