"""Link-layer header type numbers (tcpdump.org LINKTYPE_* values) and their names."""

from __future__ import annotations

LINKTYPE_NULL = 0  # BSD loopback, address family in the capturing host's byte order
LINKTYPE_ETHERNET = 1
LINKTYPE_PPP = 9  # PPP in HDLC-like framing: [0xFF 0x03] protocol (RFC 1661/1662)
LINKTYPE_RAW_BSD = 12  # some BSDs/old libpcap wrote DLT_RAW as 12
LINKTYPE_RAW_OPENBSD = 14
LINKTYPE_PPP_HDLC = 50
LINKTYPE_RAW = 101
LINKTYPE_C_HDLC = 104  # Cisco HDLC: address, control, then an EtherType
LINKTYPE_IEEE802_11 = 105  # 802.11 frames (monitor mode)
LINKTYPE_LOOP = 108  # OpenBSD loopback, address family in network byte order
LINKTYPE_LINUX_SLL = 113
LINKTYPE_PFLOG = 117  # OpenBSD/FreeBSD pf's log (tcpdump -i pflog0 on pfSense, OPNsense): a pfloghdr, then IP
LINKTYPE_IEEE802_11_RADIOTAP = 127  # 802.11 frames behind a radiotap header
LINKTYPE_MPLS = 219  # an MPLS label stack, then what it carries (MPLS in GRE or UDP is read as this)
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_NFLOG = 239  # Linux netfilter NFLOG (iptables -j NFLOG; tcpdump -i nflog:N)
LINKTYPE_PKTAP = 258  # Apple's pktap (tcpdump -i pktap on macOS): a header naming the frame's own link type
LINKTYPE_LINUX_SLL2 = 276

#: Names as libpcap prints them, for error messages about unsupported captures.
LINKTYPE_NAMES = {
    0: "NULL (BSD loopback)",
    1: "EN10MB (Ethernet)",
    6: "IEEE802 (Token Ring)",
    8: "SLIP",
    9: "PPP",
    10: "FDDI",
    12: "RAW",
    14: "RAW",
    50: "PPP_HDLC",
    51: "PPP_ETHER",
    101: "RAW (raw IP)",
    104: "C_HDLC (Cisco HDLC)",
    105: "IEEE802_11 (Wi-Fi)",
    108: "LOOP (OpenBSD loopback)",
    113: "LINUX_SLL (Linux cooked v1)",
    117: "PFLOG (pf's log)",
    127: "IEEE802_11_RADIOTAP (Wi-Fi with radiotap)",
    147: "USER0",
    192: "PPI",
    195: "IEEE802_15_4",
    201: "BLUETOOTH_HCI_H4_WITH_PHDR",
    219: "MPLS",
    220: "USB_LINUX_MMAPPED",
    228: "IPV4 (raw IPv4)",
    229: "IPV6 (raw IPv6)",
    239: "NFLOG (Linux netfilter log)",
    249: "NETLINK",
    252: "WIRESHARK_UPPER_PDU",
    258: "PKTAP (Apple's pktap)",
    276: "LINUX_SLL2 (Linux cooked v2)",
}

SUPPORTED_LINKTYPES = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW_BSD,
        LINKTYPE_RAW_OPENBSD,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_MPLS,
        LINKTYPE_IEEE802_11,
        LINKTYPE_IEEE802_11_RADIOTAP,
        LINKTYPE_PFLOG,
        LINKTYPE_PKTAP,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
        LINKTYPE_PPP,
        LINKTYPE_PPP_HDLC,
        LINKTYPE_C_HDLC,
        LINKTYPE_NFLOG,
    }
)


def linktype_name(linktype: int) -> str:
    return LINKTYPE_NAMES.get(linktype, "unknown")
