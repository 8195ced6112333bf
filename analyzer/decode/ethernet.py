"""Ethernet II and the encapsulations found on gateway links (IEEE 802.3, 802.1Q/802.1ad).

Layout: destination (6), source (6), EtherType (2). VLAN tags insert 4 bytes
(TPID, TCI) before the EtherType; they can stack (Q-in-Q).
"""

ETH_HEADER_LEN = 14

ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100  # IEEE 802.1Q VLAN tag
ETH_P_8021AD = 0x88A8  # IEEE 802.1ad service VLAN tag (Q-in-Q)
ETH_P_QINQ_OLD = 0x9100  # pre-standard Q-in-Q tag still emitted by some switches
ETH_P_IPV6 = 0x86DD
ETH_P_PPPOE_SESSION = 0x8864
ETH_P_MPLS_UC = 0x8847
ETH_P_MPLS_MC = 0x8848
ETH_P_FABRICPATH = 0x8903  # Cisco FabricPath: 2 more bytes (FTag/TTL), then an inner Ethernet header

VLAN_TPIDS = frozenset({ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD})

#: PPP protocol numbers carried in PPPoE session frames (RFC 1332 / RFC 5072).
PPP_IPV4 = 0x0021
PPP_IPV6 = 0x0057
PPPOE_HEADER_LEN = 6

#: Each MPLS label stack entry is 4 bytes; bit 8 of the third byte marks the bottom.
MPLS_ENTRY_LEN = 4
MPLS_MAX_LABELS = 8

#: Encapsulations nested deeper than this are not followed (a loop guard against crafted frames).
MAX_ENCAPSULATION_DEPTH = 8
