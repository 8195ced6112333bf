"""UDP header layout (RFC 768): source port (2), destination port (2), length (2), checksum (2)."""

UDP_HEADER_LEN = 8
DNS_PORT = 53
