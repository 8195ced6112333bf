"""SMTP (RFC 5321), its extensions and enhanced status codes (RFC 3463): names and limits."""

from __future__ import annotations

import re

#: A server reply line: three digits, then "-" (more lines follow), " " (last line) or nothing.
REPLY_LINE = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)")
#: RFC 3463 enhanced status code at the start of a reply's text: class.subject.detail.
ENHANCED_CODE = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=\s|$)")
#: A mailbox in MAIL FROM / RCPT TO: the part between angle brackets (or the bare token).
PATH_ARGUMENT = re.compile(r"^\s*(?:FROM|TO)\s*:\s*<?([^>\s]*)>?", re.IGNORECASE)

#: Verbs a client may send (RFC 5321, 3030, 3207, 4954, 1869 …); others are reported as unknown.
KNOWN_VERBS = frozenset(
    {"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP", "NOOP",
     "QUIT", "STARTTLS", "AUTH", "ETRN", "TURN", "ATRN", "XCLIENT", "XFORWARD", "SEND", "SOML", "SAML"}
)

#: The pseudo-verb Zeek uses for a client's SASL response line during AUTH.
SASL_RESPONSE = "**"
#: The pseudo-verb for the end of a DATA body (the server's reply to "<CRLF>.<CRLF>").
END_OF_DATA = "."

REDACTED = "[redacted]"

#: Limits: lines longer than this are cut (RFC 5321 allows 512 for commands, 1000 for text).
MAX_LINE_LENGTH = 8192
#: Lines kept of one multi-line reply (EHLO answers are ~10; a flood is cut, not stored).
MAX_REPLY_LINES = 100
#: Commands waiting for their replies (pipelining sends several before the first reply).
MAX_PENDING_COMMANDS = 256
#: Client bytes held while waiting for the server's verdict on DATA or STARTTLS.
MAX_HELD_BYTES = 64 * 1024
#: A BDAT chunk size beyond this is not a size but an attack or garbage.
MAX_BDAT_CHUNK = 1 << 40

REPLY_CLASSES = {2: "success", 3: "intermediate", 4: "transient failure", 5: "permanent failure"}


def enhanced_code(text: str, code: int) -> str | None:
    """The enhanced status code of a reply's first line, if it has one of the right class."""
    match = ENHANCED_CODE.match(text)
    if match is None or int(match.group(1)) != code // 100:
        return None
    return match.group(0)
