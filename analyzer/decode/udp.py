"""UDP header layout (RFC 768): source port (2), destination port (2), length (2), checksum (2)."""

from typing import Final

UDP_HEADER_LEN: Final = 8
DNS_PORT: Final = 53
