"""Events of the TLS observer: what :class:`~.parser.TlsSession` saw, in stream order.

Every event carries ``ts`` (capture time, integer nanoseconds, of the bytes that completed
it) and ``from_client`` (which direction it was seen in). Numeric protocol values are kept
as numbers; names come from :mod:`.constants` where a reader wants them.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from ..record import own_class_equality


class ClientHello(NamedTuple):
    ts: int
    from_client: bool
    legacy_version: int
    #: supported_versions (GREASE removed) if the client sent it, else ``(legacy_version,)``.
    versions: tuple[int, ...]
    max_version: int
    cipher_suites: tuple[int, ...]
    sni: str | None
    alpn: tuple[str, ...]
    groups: tuple[int, ...]
    #: Sent in the SSL 2.0 compatible format (RFC 5246 Appendix E.2).
    sslv2_format: bool = False
    #: Why parsing stopped early (the fields above hold what was read), or None.
    malformed: str | None = None


class ServerHello(NamedTuple):
    ts: int
    from_client: bool
    legacy_version: int
    #: The negotiated version: supported_versions if present (TLS 1.3), else legacy_version.
    version: int
    cipher_suite: int
    hello_retry_request: bool
    #: True/False when the hello decides it; None when only later messages can tell
    #: (TLS ≤ 1.2 session-ticket resumption with an empty session id).
    session_resumed: bool | None
    alpn: str | None = None
    #: Key-share group the server chose (TLS 1.3), or None.
    group: int | None = None
    malformed: str | None = None


class CertInfo(NamedTuple):
    subject: str
    issuer: str
    not_before: datetime | None  # aware, UTC
    not_after: datetime | None  # aware, UTC
    san: tuple[str, ...]
    self_signed: bool
    sha256: str
    #: Why the certificate could not be read (the other fields are then empty), or None.
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_before": self.not_before.isoformat() if self.not_before else None,
            "not_after": self.not_after.isoformat() if self.not_after else None,
            "san": list(self.san),
            "self_signed": self.self_signed,
            "sha256": self.sha256,
            "error": self.error,
        }


class Certificate(NamedTuple):
    ts: int
    from_client: bool
    chain: tuple[CertInfo, ...]  # leaf first
    #: Certificates in the message; ``chain`` holds at most MAX_CHAIN_CERTIFICATES of them.
    count: int = 0


class HandshakeMessage(NamedTuple):
    """Any other handshake message; ``finished`` after a ChangeCipherSpec is the encrypted one."""

    ts: int
    from_client: bool
    name: str
    length: int = 0


class ChangeCipherSpec(NamedTuple):
    ts: int
    from_client: bool


class Alert(NamedTuple):
    ts: int
    from_client: bool
    level: int | None  # AlertLevel (1 warning, 2 fatal); None when encrypted and not decrypted
    description: int | None  # AlertDescription (40 handshake_failure …); None when encrypted and not decrypted
    encrypted: bool  # sent encrypted on the wire
    decrypted: bool = False  # encrypted, and read with the key log


class ApplicationData(NamedTuple):
    """The first application-data record of a direction (later ones are only counted).

    In TLS 1.3 every record after the ServerHello is content type 23, so the first one may
    still carry (encrypted) handshake messages.
    """

    ts: int
    from_client: bool
    length: int


class DecryptedData(NamedTuple):
    """Application data plaintext (a key log decrypted it), in stream order per direction.

    One event per record with content; the records of a direction are contiguous, so
    ``data`` of successive events joins into that direction's plaintext stream.
    """

    ts: int
    from_client: bool
    data: bytes


class DecryptionFailed(NamedTuple):
    """This direction yields no (more) plaintext: its keys are missing, or a record failed.

    Sent once per direction. Any DecryptedData before it stands; what follows in that
    direction is only observed as ciphertext.
    """

    ts: int
    from_client: bool
    reason: str


class HandshakeComplete(NamedTuple):
    ts: int
    from_client: bool
    inferred: bool
    detail: str


class HandshakeFailed(NamedTuple):
    ts: int
    from_client: bool  # the side that ended the handshake (alert sender, closer)
    reason: str
    inferred: bool


class NotTls(NamedTuple):
    """That direction's bytes are not TLS; it is not parsed any further."""

    ts: int
    from_client: bool
    reason: str


Event = (
    ClientHello
    | ServerHello
    | Certificate
    | HandshakeMessage
    | ChangeCipherSpec
    | Alert
    | ApplicationData
    | DecryptedData
    | DecryptionFailed
    | HandshakeComplete
    | HandshakeFailed
    | NotTls
)

own_class_equality(
    ClientHello, ServerHello, CertInfo, Certificate, HandshakeMessage, ChangeCipherSpec, Alert, ApplicationData,
    DecryptedData, DecryptionFailed, HandshakeComplete, HandshakeFailed, NotTls,
)
