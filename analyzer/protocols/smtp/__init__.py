"""SMTP (RFC 5321 with PIPELINING, CHUNKING/BDAT, STARTTLS, AUTH): a sans-I/O observer."""

from .constants import REDACTED, enhanced_code
from .events import AuthUser, Command, Event, MessageBody, Reply, StartTls, Weird
from .parser import SmtpConversation

__all__ = [
    "AuthUser",
    "Command",
    "Event",
    "MessageBody",
    "REDACTED",
    "Reply",
    "SmtpConversation",
    "StartTls",
    "Weird",
    "enhanced_code",
]
