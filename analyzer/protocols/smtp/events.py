"""Events produced by :class:`~analyzer.protocols.smtp.parser.SmtpConversation`.

Every event carries ``ts`` (integer nanoseconds of the packet that completed it).
Credentials never appear in an event: AUTH arguments and SASL responses are replaced by
``[redacted]``; only the user name, and only when asked for, is decoded into ``AuthUser``.
"""

from __future__ import annotations

from typing import NamedTuple

from ..record import own_class_equality


class Command(NamedTuple):
    """A client command line. ``argument`` is redacted for AUTH and SASL responses."""

    ts: int
    verb: str
    argument: str
    known: bool = True


class Reply(NamedTuple):
    """A complete server reply (all lines of a multi-line reply) and what it answers.

    ``command`` is the verb it answers ("." for the end of a message body, "**" for a SASL
    response, None for the greeting or an unsolicited reply).
    """

    ts: int
    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    command: str | None
    greeting: bool = False

    @property
    def text(self) -> str:
        """The reply's text, lines joined with spaces (the code not repeated)."""
        return " ".join(line for line in self.lines if line)

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    def display(self) -> str:
        return f"{self.code} {self.text}".rstrip()


class MessageBody(NamedTuple):
    """The client finished sending a message body (DATA) or a chunk (BDAT)."""

    ts: int
    size: int
    kind: str  # "data" or "bdat"
    last: bool = True


class StartTls(NamedTuple):
    """The server accepted STARTTLS (220): from here on both directions speak TLS."""

    ts: int


class AuthUser(NamedTuple):
    """The user name of an AUTH exchange (only produced when revealing it was asked for)."""

    ts: int
    mechanism: str
    user: str


class Weird(NamedTuple):
    """Something that violates the protocol or a limit (Zeek's "weird" vocabulary)."""

    ts: int
    name: str
    detail: str = ""
    from_client: bool | None = None


Event = Command | Reply | MessageBody | StartTls | AuthUser | Weird


own_class_equality(Command, Reply, MessageBody, StartTls, AuthUser, Weird)
