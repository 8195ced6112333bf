"""SMTP (RFC 5321), its extensions and enhanced status codes (RFC 3463): names and limits."""

from __future__ import annotations

from typing import Final

import re

#: A server reply line: three digits, then "-" (more lines follow), " " (last line) or nothing.
REPLY_LINE: Final = re.compile(rb"^([2-5][0-9][0-9])([ -]|$)")
#: RFC 3463 enhanced status code at the start of a reply's text: class.subject.detail.
ENHANCED_CODE: Final = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=\s|$)")
#: A mailbox in MAIL FROM / RCPT TO: the part between angle brackets (or the bare token).
PATH_ARGUMENT: Final = re.compile(r"^\s*(?:FROM|TO)\s*:\s*<?([^>\s]*)>?", re.IGNORECASE)

#: Verbs a client may send (RFC 5321, 3030, 3207, 4954, 1869 …); others are reported as unknown.
KNOWN_VERBS: Final = frozenset(
    {"HELO", "EHLO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "VRFY", "EXPN", "HELP", "NOOP",
     "QUIT", "STARTTLS", "AUTH", "ETRN", "TURN", "ATRN", "XCLIENT", "XFORWARD", "SEND", "SOML", "SAML"}
)

#: The pseudo-verb Zeek uses for a client's SASL response line during AUTH.
SASL_RESPONSE: Final = "**"
#: The pseudo-verb for the end of a DATA body (the server's reply to "<CRLF>.<CRLF>").
END_OF_DATA: Final = "."

REDACTED: Final = "[redacted]"

#: Limits: lines longer than this are cut (RFC 5321 allows 512 for commands, 1000 for text).
MAX_LINE_LENGTH: Final = 8192
#: Lines kept of one multi-line reply (EHLO answers are ~10; a flood is cut, not stored).
MAX_REPLY_LINES: Final = 100
#: Commands waiting for their replies (pipelining sends several before the first reply).
MAX_PENDING_COMMANDS: Final = 256
#: Client bytes held while waiting for the server's verdict on DATA or STARTTLS.
MAX_HELD_BYTES: Final = 64 * 1024
#: A BDAT chunk size beyond this is not a size but an attack or garbage.
MAX_BDAT_CHUNK: Final = 1 << 40

REPLY_CLASSES: Final = {2: "success", 3: "intermediate", 4: "transient failure", 5: "permanent failure"}


def enhanced_code(text: str, code: int) -> str | None:
    """The enhanced status code of a reply's first line, if it has one of the right class."""
    match = ENHANCED_CODE.match(text)
    if match is None or int(match.group(1)) != code // 100:
        return None
    return match.group(0)
