/*
 * The decoder's hot path in C: walk a buffer of pcap records (or pcapng enhanced packet
 * blocks), look at link, IP and transport headers in place, and keep only the records the
 * Python decoder could find relevant. Everything else is counted exactly as the Python
 * decoder counts it and dropped without a single Python object being built.
 *
 * The decision is conservative: whatever is not plainly irrelevant (ICMP errors, fragments,
 * IPv6 extension headers, short or odd headers, unknown link types) goes to Python, which
 * then decides and counts as it always does. So results never depend on this module: it
 * only makes them faster. analyzer/decode/fastpath.py is its Python face and fallback.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "structmember.h"

/* Link types (tcpdump.org LINKTYPE_*). */
#define LT_NULL 0
#define LT_ETHERNET 1
#define LT_PPP 9
#define LT_PPP_HDLC 50
#define LT_IEEE802_11 105
#define LT_IEEE802_11_RADIOTAP 127
#define LT_MPLS 219
#define LT_RAW_BSD 12
#define LT_RAW_OPENBSD 14
#define LT_RAW 101
#define LT_LOOP 108
#define LT_SLL 113
#define LT_IPV4 228
#define LT_IPV6 229
#define LT_SLL2 276

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_QINQ_OLD 0x9100
#define ETH_P_MPLS_UC 0x8847
#define ETH_P_MPLS_MC 0x8848
#define MPLS_MAX_LABELS 8

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58

/* Stats slots, in the order fastpath.py adds them to DecodeStats. */
enum { S_PACKETS, S_BYTES, S_V4, S_V6, S_TCP, S_UDP, S_ICMP, S_OTHER_IP, S_NON_IP, S_TRUNCATED, S_DNS_IGNORED,
       S_RELEVANT, S_BAD_CHECKSUMS, S_TUNNELED, S_OUTSIDE, S_COUNT };

/* Python's CHECKSUM_* values (decode/packet.py). */
#define PY_CHECKSUM_BAD 0
#define PY_CHECKSUM_OK 1
#define PY_CHECKSUM_UNKNOWN 2
/* What a scan does with the TCP segments and DNS datagrams it keeps: hand them to Python, or
 * build their objects here (with or without checking TCP checksums). */
enum { DECODE_NONE, DECODE_PACKETS, DECODE_PACKETS_NO_CHECKSUMS };
/* Python's MAX_ENCAPSULATION_DEPTH: more VLAN tags than this and Python calls the frame non-IP. */
#define MAX_VLAN_TAGS 8

/* The filter, flattened by fastpath.py:
 *   ports[8192] bitmap, non_smtp[8192] bitmap, u8 all_ports, u8 pad[3],
 *   u32 n4, n4 x (u32 net, u32 mask) host order,
 *   u32 n6, n6 x (u8 net[16], u8 mask[16]),
 *   u32 dns_enabled, then four string lists (names, suffixes, label prefixes, markers), each
 *   u32 count then count x (u8 length, bytes) — DnsInterest in select.py, flattened.        */
#define MAX_DNS_RULES 256
typedef struct {
    const uint8_t *ports;
    const uint8_t *non_smtp;
    int all_ports;
    uint32_t n4;
    const uint8_t *v4;
    uint32_t n6;
    const uint8_t *v6;
    uint8_t first_v4[32]; /* bitmap of first octets present in v4 networks */
    uint8_t first_v6[32];
    int dns_enabled;
    int n_rules[4];                        /* names, suffixes, label prefixes, markers */
    const uint8_t *rule[4][MAX_DNS_RULES]; /* each: length byte, then the text */
} Filter;

enum { R_NAMES, R_SUFFIXES, R_PREFIXES, R_MARKERS };

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t be32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? be32(p) : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}
static inline int bit(const uint8_t *map, unsigned v) { return map[v >> 3] & (1u << (v & 7)); }

static int parse_filter(const uint8_t *blob, Py_ssize_t len, Filter *f) {
    if (len < 8192 * 2 + 4 + 4) return -1;
    f->ports = blob;
    f->non_smtp = blob + 8192;
    f->all_ports = blob[16384];
    Py_ssize_t pos = 16388;
    f->n4 = (uint32_t)blob[pos] | ((uint32_t)blob[pos + 1] << 8) | ((uint32_t)blob[pos + 2] << 16) | ((uint32_t)blob[pos + 3] << 24);
    pos += 4;
    if (pos + (Py_ssize_t)f->n4 * 8 + 4 > len) return -1;
    f->v4 = blob + pos;
    pos += (Py_ssize_t)f->n4 * 8;
    f->n6 = (uint32_t)blob[pos] | ((uint32_t)blob[pos + 1] << 8) | ((uint32_t)blob[pos + 2] << 16) | ((uint32_t)blob[pos + 3] << 24);
    pos += 4;
    if (pos + (Py_ssize_t)f->n6 * 32 > len) return -1;
    f->v6 = blob + pos;
    pos += (Py_ssize_t)f->n6 * 32;
    if (pos + 4 > len) return -1;
    f->dns_enabled = blob[pos];
    pos += 4;
    for (int list = 0; list < 4; list++) {
        if (pos + 4 > len) return -1;
        uint32_t n = (uint32_t)blob[pos] | ((uint32_t)blob[pos + 1] << 8) | ((uint32_t)blob[pos + 2] << 16) | ((uint32_t)blob[pos + 3] << 24);
        pos += 4;
        if (n > MAX_DNS_RULES) return -1;
        f->n_rules[list] = (int)n;
        for (uint32_t i = 0; i < n; i++) {
            if (pos + 1 > len || pos + 1 + blob[pos] > len) return -1;
            f->rule[list][i] = blob + pos;
            pos += 1 + blob[pos];
        }
    }
    memset(f->first_v4, 0, 32);
    memset(f->first_v6, 0, 32);
    for (uint32_t i = 0; i < f->n4; i++) {
        const uint8_t *e = f->v4 + i * 8;
        uint32_t net = (uint32_t)e[0] | ((uint32_t)e[1] << 8) | ((uint32_t)e[2] << 16) | ((uint32_t)e[3] << 24);
        uint32_t mask = (uint32_t)e[4] | ((uint32_t)e[5] << 8) | ((uint32_t)e[6] << 16) | ((uint32_t)e[7] << 24);
        uint32_t lo = net >> 24, hi = (net | ~mask) >> 24;
        for (uint32_t o = lo; o <= hi; o++) f->first_v4[o >> 3] |= (uint8_t)(1u << (o & 7));
    }
    for (uint32_t i = 0; i < f->n6; i++) {
        const uint8_t *e = f->v6 + i * 32;
        unsigned lo = e[0], hi = e[0] | (uint8_t)~e[16];
        for (unsigned o = lo; o <= hi; o++) f->first_v6[o >> 3] |= (uint8_t)(1u << (o & 7));
    }
    return 0;
}

static int in_v4(const Filter *f, const uint8_t *a) {
    if (!bit(f->first_v4, a[0])) return 0;
    uint32_t v = be32(a);
    for (uint32_t i = 0; i < f->n4; i++) {
        const uint8_t *e = f->v4 + i * 8;
        uint32_t net = (uint32_t)e[0] | ((uint32_t)e[1] << 8) | ((uint32_t)e[2] << 16) | ((uint32_t)e[3] << 24);
        uint32_t mask = (uint32_t)e[4] | ((uint32_t)e[5] << 8) | ((uint32_t)e[6] << 16) | ((uint32_t)e[7] << 24);
        if ((v & mask) == net) return 1;
    }
    return 0;
}

static int in_v6(const Filter *f, const uint8_t *a) {
    if (!bit(f->first_v6, a[0])) return 0;
    for (uint32_t i = 0; i < f->n6; i++) {
        const uint8_t *e = f->v6 + i * 32;
        int ok = 1;
        for (int j = 0; j < 16 && ok; j++) ok = ((a[j] & e[16 + j]) == e[j]);
        if (ok) return 1;
    }
    return 0;
}

/* Same rule as Selector.wants_tcp. */
static int wants_tcp(const Filter *f, unsigned sport, unsigned dport, const uint8_t *saddr, const uint8_t *daddr, int v6) {
    if (f->all_ports) return 1;
    if (bit(f->ports, dport) || bit(f->ports, sport)) return 1;
    if (v6 ? f->n6 == 0 : f->n4 == 0) return 0;
    if (bit(f->non_smtp, dport) || bit(f->non_smtp, sport)) return 0;
    return v6 ? (in_v6(f, daddr) || in_v6(f, saddr)) : (in_v4(f, daddr) || in_v4(f, saddr));
}

static int find(const uint8_t *hay, Py_ssize_t n, const uint8_t *needle, Py_ssize_t m) {
    if (m == 0 || m > n) return 0;
    for (Py_ssize_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, (size_t)m) == 0) return 1;
    return 0;
}

/* Same rule as DnsInterest.wants_message: 0 of no interest, 1 keep (Python decides), 2 keep
 * for certain (a rule matched, or the question cannot be read, which DnsInterest keeps). */
#define DNS_SURE 2
static int wants_dns(const Filter *f, const uint8_t *d, Py_ssize_t n) {
    if (!f->dns_enabled) return DNS_SURE;
    if (n < 17 || !(d[4] || d[5])) return DNS_SURE;
    char name[512];
    Py_ssize_t nl = 0, pos = 12;
    int labels = 0;
    for (;;) {
        if (pos >= n) return 1;
        unsigned l = d[pos];
        if (l == 0) { pos++; break; }
        if ((l & 0xC0) || labels >= 127) return 1;
        if (pos + 1 + (Py_ssize_t)l > n) return 1; /* Python slices short here; the full parser decides */
        if (nl + 2 + (Py_ssize_t)l > (Py_ssize_t)sizeof name) return 1; /* longer than DNS allows: Python decides */
        if (labels) name[nl++] = '.';
        for (unsigned i = 0; i < l; i++) {
            uint8_t c = d[pos + 1 + i];
            if (c >= 0x80) return 1;
            name[nl++] = (char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
        }
        labels++;
        pos += 1 + l;
    }
    if (pos + 2 > n) return 1;
    if (!labels) name[nl++] = '.';
    unsigned qtype = be16(d + pos);
    if (qtype == 15) return DNS_SURE; /* MX */
    for (int i = 0; i < f->n_rules[R_NAMES]; i++) {
        const uint8_t *r = f->rule[R_NAMES][i];
        if (r[0] == nl && memcmp(r + 1, name, nl) == 0) return DNS_SURE;
    }
    for (int i = 0; i < f->n_rules[R_SUFFIXES]; i++) {
        const uint8_t *r = f->rule[R_SUFFIXES][i]; /* ".outlook.com" */
        Py_ssize_t sl = r[0];
        if (nl >= sl && memcmp(name + nl - sl, r + 1, (size_t)sl) == 0) return DNS_SURE;
        if (nl == sl - 1 && memcmp(name, r + 2, (size_t)nl) == 0) return DNS_SURE;
    }
    Py_ssize_t first = 0;
    while (first < nl && name[first] != '.') first++;
    for (int i = 0; i < f->n_rules[R_PREFIXES]; i++) {
        const uint8_t *r = f->rule[R_PREFIXES][i];
        if (first >= r[0] && memcmp(name, r + 1, r[0]) == 0) return DNS_SURE;
    }
    if (d[2] & 0x80)
        for (int i = 0; i < f->n_rules[R_MARKERS]; i++)
            if (find(d, n, f->rule[R_MARKERS][i] + 1, f->rule[R_MARKERS][i][0])) return DNS_SURE;
    return 0;
}

/* The TCP/UDP checksum check of packet._checksum_state, word by word: 0 = correct, 1 =
 * unknown (the field holds only the pseudo-header sum: offloaded to the NIC), 2 = wrong.
 * Same arithmetic: totals modulo 0xFFFF. alen is 4 or 16. */
static int checksum_verdict(const uint8_t *seg, Py_ssize_t n, const uint8_t *a, const uint8_t *b, Py_ssize_t alen, int proto) {
    unsigned long long pseudo = (unsigned long long)proto + (unsigned long long)n;
    for (Py_ssize_t i = 0; i < alen; i += 2) pseudo += ((unsigned)a[i] << 8) | a[i + 1];
    for (Py_ssize_t i = 0; i < alen; i += 2) pseudo += ((unsigned)b[i] << 8) | b[i + 1];
    unsigned long long body = 0;
    Py_ssize_t i = 0;
    for (; i + 1 < n; i += 2) body += ((unsigned)seg[i] << 8) | seg[i + 1];
    if (i < n) body += (unsigned)seg[i] << 8;
    if ((pseudo + body) % 0xFFFF == 0) return 0;
    Py_ssize_t field_off = proto == 6 ? 16 : 6;
    if (field_off + 1 >= n) return 2;
    unsigned field = ((unsigned)seg[field_off] << 8) | seg[field_off + 1];
    unsigned folded = (unsigned)(pseudo % 0xFFFF);
    return (field == folded || field == ((~folded) & 0xFFFF) || (folded == 0 && field == 0xFFFF)) ? 1 : 2;
}

/* checksum_state(buf, l4, l4_end, src, dst, proto): checksum_verdict for Python. */
static PyObject *checksum_state(PyObject *self, PyObject *args) {
    Py_buffer view, sview, dview;
    Py_ssize_t l4, l4_end;
    int proto;
    if (!PyArg_ParseTuple(args, "y*nny*y*i", &view, &l4, &l4_end, &sview, &dview, &proto)) return NULL;
    int result = -1;
    if (l4 < 0 || l4_end > view.len || l4_end < l4 || (sview.len != 4 && sview.len != 16) || dview.len != sview.len)
        PyErr_SetString(PyExc_ValueError, "bad checksum arguments");
    else
        result = checksum_verdict((const uint8_t *)view.buf + l4, l4_end - l4, sview.buf, dview.buf, sview.len, proto);
    PyBuffer_Release(&view);
    PyBuffer_Release(&sview);
    PyBuffer_Release(&dview);
    if (result < 0) return NULL;
    return PyLong_FromLong(result);
}

/* The TcpSegment and UdpDatagram classes (decode/packet.py), where their __slots__ live in
 * an instance, and the TCP option parser: a scan builds their objects without running the
 * decoder's Python code (only parse_options, for SYNs with options). Set by segment_types(). */
static const char *SEGMENT_FIELDS[] = {
    "ts", "version", "src", "dst", "ttl", "ip_len", "sport", "dport",
    "seq", "ack", "flags", "win", "payload", "length", "options", "checksum", "ident",
};
#define SEGMENT_NFIELDS 17
static const char *DATAGRAM_FIELDS[] = {"ts", "version", "src", "dst", "ttl", "sport", "dport", "payload"};
#define DATAGRAM_NFIELDS 8
static PyTypeObject *segment_cls = NULL, *datagram_cls = NULL;
static PyObject *parse_options = NULL;
static Py_ssize_t segment_offsets[SEGMENT_NFIELDS], datagram_offsets[DATAGRAM_NFIELDS];

static int slot_offsets(PyTypeObject *type, const char **fields, int n, Py_ssize_t *offsets) {
    for (int i = 0; i < n; i++) {
        PyObject *d = PyDict_GetItemString(type->tp_dict, fields[i]);
        if (d == NULL || !Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member", type->tp_name, fields[i]);
            return -1;
        }
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type != T_OBJECT_EX || m->offset <= 0 || m->offset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not an object slot", type->tp_name, fields[i]);
            return -1;
        }
        offsets[i] = m->offset;
    }
    return 0;
}

static PyObject *segment_types(PyObject *self, PyObject *args) {
    PyObject *tcp, *udp, *options;
    if (!PyArg_ParseTuple(args, "O!O!O", &PyType_Type, &tcp, &PyType_Type, &udp, &options)) return NULL;
    if (!PyCallable_Check(options)) { PyErr_SetString(PyExc_TypeError, "parse_options must be callable"); return NULL; }
    Py_ssize_t seg[SEGMENT_NFIELDS], dgram[DATAGRAM_NFIELDS];
    if (slot_offsets((PyTypeObject *)tcp, SEGMENT_FIELDS, SEGMENT_NFIELDS, seg) < 0) return NULL;
    if (slot_offsets((PyTypeObject *)udp, DATAGRAM_FIELDS, DATAGRAM_NFIELDS, dgram) < 0) return NULL;
    memcpy(segment_offsets, seg, sizeof seg);
    memcpy(datagram_offsets, dgram, sizeof dgram);
    Py_XSETREF(segment_cls, (PyTypeObject *)Py_NewRef(tcp));
    Py_XSETREF(datagram_cls, (PyTypeObject *)Py_NewRef(udp));
    Py_XSETREF(parse_options, Py_NewRef(options));
    Py_RETURN_NONE;
}

/* A TCP segment or DNS datagram decoded here: where its parts are, relative to the record's
 * start (payload: where the TCP or UDP payload begins). */
typedef struct {
    Py_ssize_t ip, l4, ip_end, payload; /* ip_end and payload: from the IP header */
    int version, checksum;              /* checksum: Python's CHECKSUM_* value */
} TcpFields;

/* Outcomes of judge(). */
#define DROP 0       /* counted as the decoder would count it, and dropped */
#define KEEP 1       /* for the Python decoder */
#define DECODED 2    /* a plain TCP segment, counted, its parts in *tcp: built into a TcpSegment */
#define DECODED_UDP 3 /* a DNS datagram the decoder keeps, counted, its parts in *tcp: a UdpDatagram */

/* Tunnels (decode/tunnel.py has the layouts): GRE with ERSPAN I/II/III or Ethernet inside, IP
 * in IP, VXLAN, Geneve, PPTP's GRE, Teredo, GTPv1-U, AYIYA. The frame inside is judged like a
 * captured one. */
#define IPPROTO_IPIP_ 4
#define IPPROTO_IPV6_IN_IP_ 41
#define IPPROTO_GRE_ 47
#define VXLAN_PORT 4789
#define GENEVE_PORT 6081
#define MPLS_UDP_PORT 6635
#define TEREDO_PORT 3544
#define GTP_U_PORT 2152
#define AYIYA_PORT 5072
#define ETH_P_PPP 0x880B
#define ETH_P_TEB 0x6558
#define ETH_P_ERSPAN 0x88BE
#define ETH_P_ERSPAN3 0x22EB
#define MAX_TUNNEL_DEPTH 4

static int inner_by_protocol(unsigned ptype) {
    return ptype == ETH_P_TEB ? LT_ETHERNET : (ptype == ETH_P_IP || ptype == ETH_P_IPV6) ? LT_RAW
         : (ptype == ETH_P_MPLS_UC || ptype == ETH_P_MPLS_MC) ? LT_MPLS : -1;
}

/* As tunnel.is_udp_tunnel. */
static int is_udp_tunnel(unsigned sport, unsigned dport) {
    if (sport == 53 || dport == 53) return 0;
    return dport == VXLAN_PORT || dport == GENEVE_PORT || dport == MPLS_UDP_PORT || sport == TEREDO_PORT || dport == TEREDO_PORT ||
           sport == GTP_U_PORT || dport == GTP_U_PORT || sport == AYIYA_PORT || dport == AYIYA_PORT;
}

/* As tunnel._teredo, _gtp_u and _ayiya: the offset of the IP packet inside, or -1. */
static Py_ssize_t teredo(const uint8_t *ip, Py_ssize_t body, Py_ssize_t udp_end, Py_ssize_t end) {
    Py_ssize_t off = body;
    if (off + 4 <= end && be16(ip + off) == 0x0001) off += 13 + ip[off + 2] + ip[off + 3];
    if (off + 2 <= end && be16(ip + off) == 0x0000) off += 8;
    if (off + 40 > end || (ip[off] >> 4) != 6) return -1;
    if (off + 40 + (Py_ssize_t)be16(ip + off + 4) != udp_end) return -1;
    return off;
}

static Py_ssize_t gtp_u(const uint8_t *ip, Py_ssize_t body, Py_ssize_t end) {
    if (body + 8 > end) return -1;
    unsigned flags = ip[body];
    if ((flags >> 5) != 1 || !(flags & 0x10) || ip[body + 1] != 0xFF) return -1;
    Py_ssize_t off = body + 8;
    if (flags & 0x07) {
        if (off + 4 > end) return -1;
        unsigned next = (flags & 0x04) ? ip[off + 3] : 0;
        off += 4;
        while (next) {
            if (off >= end || !ip[off]) return -1;
            Py_ssize_t n = (Py_ssize_t)ip[off] << 2;
            if (off + n > end) return -1;
            next = ip[off + n - 1];
            off += n;
        }
    }
    if (off >= end || ((ip[off] >> 4) != 4 && (ip[off] >> 4) != 6)) return -1;
    return off;
}

static Py_ssize_t ayiya(const uint8_t *ip, Py_ssize_t body, Py_ssize_t end) {
    if (body + 8 > end) return -1;
    unsigned next = ip[body + 3];
    if ((ip[body + 2] & 0x0F) != 1 || (next != IPPROTO_IPIP_ && next != IPPROTO_IPV6_IN_IP_)) return -1;
    Py_ssize_t off = body + 8 + ((Py_ssize_t)1 << (ip[body] >> 4)) + ((Py_ssize_t)(ip[body + 1] >> 4) << 2);
    if (off >= end || (ip[off] >> 4) != (next == IPPROTO_IPIP_ ? 4u : 6u)) return -1;
    return off;
}

/* As tunnel.inner_frame: 1 with *lt and *at (offset from ip) set, or 0. */
static int inner_frame(unsigned proto, const uint8_t *ip, Py_ssize_t l4, Py_ssize_t end, int *lt, Py_ssize_t *at) {
    if (proto == IPPROTO_IPIP_ || proto == IPPROTO_IPV6_IN_IP_) { *lt = LT_RAW; *at = l4; return 1; }
    if (proto == IPPROTO_GRE_) {
        if (l4 + 4 > end) return 0;
        unsigned flags = be16(ip + l4), ptype = be16(ip + l4 + 2);
        if (flags & 0x0007) {
            if ((flags & 0x0007) != 1 || ptype != ETH_P_PPP || !(flags & 0x2000)) return 0;
            Py_ssize_t off = l4 + 8 + ((flags & 0x1000) ? 4 : 0) + ((flags & 0x0080) ? 4 : 0);
            if (off >= end) return 0;
            *lt = LT_PPP; *at = off; return 1;
        }
        Py_ssize_t off = l4 + 4 + ((flags & 0x8000) ? 4 : 0) + ((flags & 0x2000) ? 4 : 0) + ((flags & 0x1000) ? 4 : 0);
        int inner;
        if (ptype == ETH_P_ERSPAN) {
            if (flags & 0x1000) off += 8;
            inner = LT_ETHERNET;
        } else if (ptype == ETH_P_ERSPAN3) {
            if (off + 12 > end) return 0;
            off += 12 + ((ip[off + 11] & 0x01) ? 8 : 0);
            inner = LT_ETHERNET;
        } else {
            inner = inner_by_protocol(ptype);
            if (inner < 0) return 0;
        }
        if (off >= end) return 0;
        *lt = inner; *at = off; return 1;
    }
    if (proto == IPPROTO_UDP_) {
        unsigned sport = be16(ip + l4), dport = be16(ip + l4 + 2);
        Py_ssize_t body = l4 + 8, off;
        if (sport == TEREDO_PORT || dport == TEREDO_PORT) off = teredo(ip, body, l4 + be16(ip + l4 + 4), end);
        else if (sport == GTP_U_PORT || dport == GTP_U_PORT) off = gtp_u(ip, body, end);
        else if (sport == AYIYA_PORT || dport == AYIYA_PORT) off = ayiya(ip, body, end);
        else if (dport == MPLS_UDP_PORT) {
            if (body >= end) return 0;
            *lt = LT_MPLS; *at = body; return 1;
        } else if (dport == VXLAN_PORT) {
            if (body + 8 >= end || !(ip[body] & 0x08)) return 0;
            *lt = LT_ETHERNET; *at = body + 8; return 1;
        } else { /* Geneve */
            if (body + 8 > end || (ip[body] >> 6)) return 0;
            int inner = inner_by_protocol(be16(ip + body + 2));
            off = body + 8 + ((ip[body] & 0x3F) << 2);
            if (inner < 0 || off >= end) return 0;
            *lt = inner; *at = off; return 1;
        }
        if (off < 0) return 0;
        *lt = LT_RAW; *at = off; return 1;
    }
    return 0;
}

static int judge_frame(const Filter *f, int linktype, const uint8_t *p, Py_ssize_t len, int truncated, long long *st,
                       int decode, TcpFields *tcp, int depth);

/* Decide one frame (see the outcomes above). decode: DECODE_*. */
static int judge(const Filter *f, int linktype, const uint8_t *p, Py_ssize_t len, uint32_t wirelen, long long *st,
                 int decode, TcpFields *tcp) {
    return judge_frame(f, linktype, p, len, (Py_ssize_t)wirelen > len, st, decode, tcp, 0);
}

/* The frame at p: a captured one, or (depth > 0) one a tunnel carried. Counters describe the
 * innermost packet, plus S_TUNNELED; a KEEP counts nothing (Python re-reads the record). */
static int judge_frame(const Filter *f, int linktype, const uint8_t *p, Py_ssize_t len, int truncated, long long *st,
                       int decode, TcpFields *tcp, int depth) {
    Py_ssize_t off;
    unsigned etype;
    int version, tags = 0;
    switch (linktype) {
    case LT_ETHERNET:
        if (len < 14) return 1;
        etype = be16(p + 12);
        off = 14;
        while (etype == ETH_P_8021Q || etype == ETH_P_8021AD || etype == ETH_P_QINQ_OLD) {
            if (off + 4 > len) return 1;
            etype = be16(p + off + 2);
            off += 4;
            tags++;
        }
        if (tags > MAX_VLAN_TAGS) return KEEP; /* Python calls it non-IP: let it count it so */
        break;
    case LT_SLL2:
        if (len < 20) return 1;
        etype = be16(p);
        off = 20;
        break;
    case LT_SLL:
        if (len < 16) return 1;
        etype = be16(p + 14);
        off = 16;
        break;
    case LT_MPLS:
        etype = ETH_P_MPLS_UC;
        off = 0;
        break;
    case LT_IEEE802_11: case LT_IEEE802_11_RADIOTAP: { /* as decode/wifi.py; anything but a plain data frame: Python */
        Py_ssize_t at = 0;
        if (linktype == LT_IEEE802_11_RADIOTAP) {
            if (len < 8 || p[0] != 0) return 1;
            at = p[2] | (p[3] << 8);
            if (at < 8 || at > len) return 1;
        }
        if (len - at < 24) return 1;
        unsigned fc0 = p[at], fl = p[at + 1], subtype = fc0 >> 4;
        if (((fc0 >> 2) & 3) != 2 || (fc0 & 3) || (subtype & 0x04) || (fl & 0x44) || (p[at + 22] & 0x0F)) return 1;
        off = at + 24 + ((fl & 0x03) == 0x03 ? 6 : 0) + ((subtype & 0x08) ? 2 + ((fl & 0x80) ? 4 : 0) : 0);
        if (off + 8 > len || memcmp(p + off, "\xaa\xaa\x03\x00\x00\x00", 6) != 0) return 1;
        etype = be16(p + off + 6);
        off += 8;
        break;
    }
    case LT_PPP: case LT_PPP_HDLC: /* [0xFF 0x03] protocol (one byte when compressed): PPTP's GRE carries it */
        off = len >= 2 && p[0] == 0xFF && p[1] == 0x03 ? 2 : 0;
        if (off >= len) return 1;
        if (p[off] & 1) { version = p[off]; off += 1; }
        else if (off + 2 <= len) { version = be16(p + off); off += 2; }
        else return 1;
        etype = version == 0x21 ? ETH_P_IP : version == 0x57 ? ETH_P_IPV6 : 0;
        break;
    case LT_RAW: case LT_RAW_BSD: case LT_RAW_OPENBSD: case LT_IPV4: case LT_IPV6:
        if (len < 1) return 1;
        version = p[0] >> 4;
        etype = version == 4 ? ETH_P_IP : version == 6 ? ETH_P_IPV6 : 0;
        off = 0;
        break;
    default:
        return 1; /* loopback families, pf's log (the decoder keeps what pf says), unknown link types: Python */
    }
    if (etype == ETH_P_MPLS_UC || etype == ETH_P_MPLS_MC) {
        /* As the decoder: the label stack to its bottom, then IP by its version (MPLS does not
         * say); the stack counts as one more level of encapsulation after the VLAN tags. */
        if (tags >= MAX_VLAN_TAGS) return 1;
        int labels = 0, bottom = 0;
        while (!bottom) {
            if (++labels > MPLS_MAX_LABELS || off + 4 > len) return 1;
            bottom = p[off + 2] & 0x01;
            off += 4;
        }
        if (off >= len) return 1;
        version = p[off] >> 4;
        etype = version == 4 ? ETH_P_IP : version == 6 ? ETH_P_IPV6 : 0;
    }
    if (etype != ETH_P_IP && etype != ETH_P_IPV6) return 1; /* non-IP, PPPoE …: Python */
    const uint8_t *ip = p + off;
    Py_ssize_t avail = len - off;
    unsigned proto;
    Py_ssize_t l4, ip_end;
    const uint8_t *saddr, *daddr;
    int v6 = etype == ETH_P_IPV6;
    if (!v6) {
        if (avail < 20 || (ip[0] >> 4) != 4) return 1;
        unsigned ihl = (ip[0] & 0x0F) * 4u;
        if (ihl < 20 || (Py_ssize_t)ihl > avail) return 1;
        unsigned total = be16(ip + 2);
        if (be16(ip + 6) & 0x3FFF) return 1; /* fragment */
        if (total == 0) ip_end = avail;
        else if (total < ihl) return 1;
        else ip_end = total;
        proto = ip[9];
        l4 = ihl;
        saddr = ip + 12;
        daddr = ip + 16;
    } else {
        if (avail < 40 || (ip[0] >> 4) != 6) return 1;
        proto = ip[6];
        if (proto != IPPROTO_TCP_ && proto != IPPROTO_UDP_ && proto != IPPROTO_ICMPV6_ && proto != IPPROTO_GRE_ &&
            proto != IPPROTO_IPIP_ && proto != IPPROTO_IPV6_IN_IP_) return 1; /* extension headers */
        unsigned plen = be16(ip + 4);
        l4 = 40;
        ip_end = plen ? 40 + (Py_ssize_t)plen : avail;
        saddr = ip + 8;
        daddr = ip + 24;
    }
    if (ip_end > avail) truncated = 1;
    Py_ssize_t ip_stop = ip_end < avail ? ip_end : avail;
    if (depth < MAX_TUNNEL_DEPTH && (proto == IPPROTO_IPIP_ || proto == IPPROTO_IPV6_IN_IP_ || proto == IPPROTO_GRE_ ||
        (proto == IPPROTO_UDP_ && l4 + 8 <= ip_stop && is_udp_tunnel(be16(ip + l4), be16(ip + l4 + 2))))) {
        int inner_lt;
        Py_ssize_t at;
        if (inner_frame(proto, ip, l4, ip_stop, &inner_lt, &at)) {
            int verdict = judge_frame(f, inner_lt, ip + at, ip_stop - at, truncated, st, decode, tcp, depth + 1);
            if (verdict != KEEP && depth == 0) st[S_TUNNELED]++;
            if (verdict == DECODED || verdict == DECODED_UDP) tcp->ip += off + at; /* offsets from p */
            return verdict;
        }
    }
    if (proto == IPPROTO_TCP_) {
        if (l4 + 20 > avail) return 1;
        unsigned sport = be16(ip + l4), dport = be16(ip + l4 + 2);
        if (wants_tcp(f, sport, dport, saddr, daddr, v6)) {
            /* Decoded here only when the Python decoder would take the plain path: whole
             * packet, sane lengths. */
            if (decode == DECODE_NONE || segment_cls == NULL || truncated) return KEEP;
            Py_ssize_t doff = (ip[l4 + 12] >> 4) * 4;
            if (doff < 20 || l4 + doff > avail || ip_end < l4 + doff) return KEEP;
            tcp->ip = off;
            tcp->l4 = l4;
            tcp->ip_end = ip_end;
            tcp->payload = l4 + doff;
            tcp->version = v6 ? 6 : 4;
            if (decode == DECODE_PACKETS) {
                int verdict = checksum_verdict(ip + l4, ip_end - l4, saddr, daddr, v6 ? 16 : 4, IPPROTO_TCP_);
                tcp->checksum = verdict == 0 ? PY_CHECKSUM_OK : verdict == 1 ? PY_CHECKSUM_UNKNOWN : PY_CHECKSUM_BAD;
                if (verdict == 2) st[S_BAD_CHECKSUMS]++;
            } else {
                tcp->checksum = PY_CHECKSUM_UNKNOWN;
            }
            st[S_TCP]++;
            st[S_RELEVANT]++;
            st[v6 ? S_V6 : S_V4]++;
            return DECODED;
        }
        st[S_TCP]++;
    } else if (proto == IPPROTO_UDP_) {
        if (l4 + 8 > avail) return 1;
        unsigned sport = be16(ip + l4), dport = be16(ip + l4 + 2);
        if (sport == 53 || dport == 53) {
            Py_ssize_t dns_end = ip_end < avail ? ip_end : avail;
            int wanted = wants_dns(f, ip + l4 + 8, dns_end - (l4 + 8));
            if (wanted == DNS_SURE && decode != DECODE_NONE && datagram_cls != NULL && !truncated && ip_end >= l4 + 8) {
                tcp->ip = off;
                tcp->l4 = l4;
                tcp->ip_end = ip_end;
                tcp->payload = l4 + 8;
                tcp->version = v6 ? 6 : 4;
                st[S_UDP]++;
                st[S_RELEVANT]++;
                st[v6 ? S_V6 : S_V4]++;
                return DECODED_UDP;
            }
            if (wanted) return 1;
            st[S_DNS_IGNORED]++;
        }
        st[S_UDP]++;
    } else if (proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_) {
        if (l4 + 8 > avail) return 1;
        unsigned type = ip[l4];
        int error = v6 ? (proto == IPPROTO_ICMPV6_ && type >= 1 && type <= 4)
                       : (proto == IPPROTO_ICMP_ && (type == 3 || type == 4 || type == 5 || type == 11 || type == 12));
        if (error) return 1;
        st[S_ICMP]++;
    } else {
        st[S_OTHER_IP]++;
    }
    st[v6 ? S_V6 : S_V4]++;
    if (truncated) st[S_TRUNCATED]++;
    return 0;
}

/* Kept records, gathered without the GIL and turned into Python objects afterwards. */
typedef struct { long long ts; Py_ssize_t start, end; uint32_t wirelen; int linktype; int decoded; TcpFields tcp; } Hit; /* decoded: DECODED* or 0 */
typedef struct { Hit *items; Py_ssize_t n, cap; } Hits;

static int add_hit(Hits *h, long long ts, int linktype, Py_ssize_t start, Py_ssize_t end, uint32_t wirelen, int decoded, const TcpFields *tcp) {
    if (h->n == h->cap) {
        Py_ssize_t cap = h->cap ? h->cap * 2 : 256;
        Hit *items = realloc(h->items, (size_t)cap * sizeof(Hit));
        if (items == NULL) return -1;
        h->items = items;
        h->cap = cap;
    }
    Hit *it = &h->items[h->n++];
    it->ts = ts; it->linktype = linktype; it->start = start; it->end = end; it->wirelen = wirelen;
    it->decoded = decoded;
    if (decoded) it->tcp = *tcp;
    return 0;
}

/* Fill an object's slots (stealing the values), or drop them all if any is missing. */
static PyObject *fill(PyTypeObject *cls, PyObject **v, const Py_ssize_t *offsets, int n) {
    PyObject *obj = NULL;
    int ok = 1;
    for (int i = 0; i < n; i++) ok = ok && v[i] != NULL;
    if (ok) obj = cls->tp_alloc(cls, 0);
    if (obj == NULL) {
        for (int i = 0; i < n; i++) Py_XDECREF(v[i]);
        return NULL;
    }
    for (int i = 0; i < n; i++) *(PyObject **)((char *)obj + offsets[i]) = v[i];
    return obj;
}

/* The first five slots both classes share: ts, version, src, dst, ttl. */
static void ip_fields(const uint8_t *ip, const Hit *it, PyObject **v) {
    int v6 = it->tcp.version == 6;
    Py_ssize_t alen = v6 ? 16 : 4;
    v[0] = PyLong_FromLongLong(it->ts);
    v[1] = PyLong_FromLong(it->tcp.version);
    v[2] = PyBytes_FromStringAndSize((const char *)(v6 ? ip + 8 : ip + 12), alen);
    v[3] = PyBytes_FromStringAndSize((const char *)(v6 ? ip + 24 : ip + 16), alen);
    v[4] = PyLong_FromLong(v6 ? ip[7] : ip[8]);
}

/* A UdpDatagram for a decoded DNS hit, as Decoder.decode builds it. */
static PyObject *build_datagram(const uint8_t *record, const Hit *it) {
    const TcpFields *t = &it->tcp;
    const uint8_t *ip = record + t->ip, *l4 = ip + t->l4;
    PyObject *v[DATAGRAM_NFIELDS];
    ip_fields(ip, it, v);
    v[5] = PyLong_FromLong(be16(l4));
    v[6] = PyLong_FromLong(be16(l4 + 2));
    v[7] = PyBytes_FromStringAndSize((const char *)(ip + t->payload), t->ip_end - t->payload);
    PyObject *obj = fill(datagram_cls, v, datagram_offsets, DATAGRAM_NFIELDS);
    return obj == NULL ? NULL : Py_BuildValue("(LN)", it->ts, obj);
}

/* A TcpSegment for a decoded hit, its slots filled as Decoder.decode fills them. */
static PyObject *build_segment(const uint8_t *record, const Hit *it) {
    const TcpFields *t = &it->tcp;
    const uint8_t *ip = record + t->ip, *l4 = ip + t->l4;
    PyObject *v[SEGMENT_NFIELDS];
    ip_fields(ip, it, v);
    v[5] = PyLong_FromSsize_t(t->ip_end); /* the IP length: the header's, or the captured one */
    v[6] = PyLong_FromLong(be16(l4));
    v[7] = PyLong_FromLong(be16(l4 + 2));
    v[8] = PyLong_FromUnsignedLong(be32(l4 + 4));
    v[9] = PyLong_FromUnsignedLong(be32(l4 + 8));
    v[10] = PyLong_FromLong(l4[13]);
    v[11] = PyLong_FromLong(be16(l4 + 14));
    v[12] = PyBytes_FromStringAndSize((const char *)(ip + t->payload), t->ip_end - t->payload);
    v[13] = PyLong_FromSsize_t(t->ip_end - t->payload);
    Py_ssize_t doff = t->payload - t->l4;
    if ((l4[13] & 0x02) && doff > 20) { /* a SYN's options: parsed by the decoder's own function */
        PyObject *raw = PyBytes_FromStringAndSize((const char *)(l4 + 20), doff - 20);
        v[14] = raw == NULL ? NULL : PyObject_CallOneArg(parse_options, raw);
        Py_XDECREF(raw);
    } else {
        v[14] = Py_NewRef(Py_None);
    }
    v[15] = PyLong_FromLong(t->checksum);
    /* ident: the IPv4 id above the TCP checksum field as sent (IPv6: the checksum alone). */
    unsigned long ident = be16(l4 + 16);
    if (t->version == 4) ident |= (unsigned long)be16(ip + 4) << 16;
    v[16] = PyLong_FromUnsignedLong(ident);
    PyObject *seg = fill(segment_cls, v, segment_offsets, SEGMENT_NFIELDS);
    return seg == NULL ? NULL : Py_BuildValue("(LN)", it->ts, seg);
}

/* Which process of a split run follows a decoded segment's connection: dispatch.shard_of's
 * rule (the same both ways; DNS over TCP stays with process 0). */
static int shard_of_hit(const uint8_t *record, const Hit *it, int shards) {
    const TcpFields *t = &it->tcp;
    const uint8_t *ip = record + t->ip, *l4 = ip + t->l4;
    unsigned long sport = be16(l4), dport = be16(l4 + 2);
    if (sport == 53 || dport == 53) return 0;
    int v6 = t->version == 6;
    unsigned long src_last = v6 ? ip[8 + 15] : ip[12 + 3], dst_last = v6 ? ip[24 + 15] : ip[16 + 3];
    return (int)((sport + dport + src_last + dst_last) % (unsigned long)shards);
}

/* A segment of a connection another process follows: only what ConnectionTable.observe_at
 * reads, (ts, src, checksum) — no TcpSegment, no copy of its payload. */
static PyObject *build_observed(const uint8_t *record, const Hit *it) {
    const TcpFields *t = &it->tcp;
    const uint8_t *ip = record + t->ip;
    int v6 = t->version == 6;
    return Py_BuildValue("(Ly#i)", it->ts, (const char *)(v6 ? ip + 8 : ip + 12), (Py_ssize_t)(v6 ? 16 : 4), t->checksum);
}

/* One scan call's state, shared by the pcap and the pcapng walk: the filter, what to do
 * with the records it keeps, its counters and its hits. */
typedef struct {
    Filter f;
    int decode;           /* DECODE_* */
    Py_ssize_t max_kept;  /* stop (ST_FULL) once this many records are kept */
    long long st[S_COUNT];
    long long first_ts, last_ts;
    long long since, until;  /* the time window: records outside [since, until) are only counted */
    long long stop;          /* a record at or after this ends the scan (ST_PAST) */
    Hits hits;
    int failed;           /* out of memory */
    int shard_index, shard_count;  /* a split run's process (see conclude); count 1: not split */
} Scan;

/* Set up a scan from its filter blob, options and time window; -1 (with a Python error) for a
 * bad blob. */
static int scan_start(Scan *s, Py_buffer *fview, int decode, Py_ssize_t max_kept, long long since, long long until,
                      long long stop) {
    memset(s, 0, sizeof *s);
    if (parse_filter(fview->buf, fview->len, &s->f) < 0) {
        PyErr_SetString(PyExc_ValueError, "bad filter blob");
        return -1;
    }
    s->decode = decode;
    s->max_kept = max_kept;
    s->first_ts = s->last_ts = -1;
    s->since = since;
    s->until = until;
    s->stop = stop;
    s->shard_index = 0;
    s->shard_count = 1;
    return 0;
}

/* A split run's process (shard_index of shard_count): the decoded segments of connections
 * another process follows come back as (ts, src, checksum). -1 (a Python error) if impossible. */
static int set_shard(Scan *s, int shard_index, int shard_count) {
    if (shard_count < 1 || shard_index < 0 || shard_index >= shard_count) {
        PyErr_SetString(PyExc_ValueError, "bad shard");
        return -1;
    }
    s->shard_index = shard_index;
    s->shard_count = shard_count;
    return 0;
}

/* One record: kept for Python, decoded (both added to the hits), or counted as the decoder
 * would and dropped. Returns -1 when out of memory (and remembers it). */
static int sift(Scan *s, int linktype, const uint8_t *buf, Py_ssize_t start, Py_ssize_t end, uint32_t wirelen, long long ts) {
    if (ts < s->since || ts >= s->until) {  /* outside the time window: as if cut from the file */
        s->st[S_OUTSIDE]++;
        return 0;
    }
    TcpFields tcp;
    int verdict = judge(&s->f, linktype, buf + start, end - start, wirelen, s->st, s->decode, &tcp);
    int ok = 0;
    if (verdict == KEEP) {
        ok = add_hit(&s->hits, ts, linktype, start, end, wirelen, 0, NULL);
    } else {
        s->st[S_PACKETS]++;
        s->st[S_BYTES] += wirelen;
        if (s->first_ts < 0 || ts < s->first_ts) s->first_ts = ts;
        if (ts > s->last_ts) s->last_ts = ts;
        if (verdict != DROP) ok = add_hit(&s->hits, ts, linktype, start, end, wirelen, verdict, &tcp);
    }
    if (ok < 0) s->failed = 1;
    return ok;
}

/* The scan's result, once the GIL is held again (and before the buffer is released):
 * (new position, [(ts, linktype, start, end, wirelen) or (ts, TcpSegment or UdpDatagram) or,
 * for a segment another process of a split run follows, (ts, src, checksum)...], status, stats).
 * Frees the hits. */
static PyObject *conclude(Scan *s, const uint8_t *buf, Py_ssize_t pos, int status) {
    Hits *h = &s->hits;
    if (s->failed) { free(h->items); return PyErr_NoMemory(); }
    PyObject *list = PyList_New(h->n);
    if (list == NULL) { free(h->items); return NULL; }
    for (Py_ssize_t i = 0; i < h->n; i++) {
        Hit *it = &h->items[i];
        PyObject *t = it->decoded == DECODED
                        ? (s->shard_count > 1 && shard_of_hit(buf + it->start, it, s->shard_count) != s->shard_index
                           ? build_observed(buf + it->start, it) : build_segment(buf + it->start, it))
                    : it->decoded == DECODED_UDP ? build_datagram(buf + it->start, it)
                    : Py_BuildValue("(LinnI)", it->ts, it->linktype, it->start, it->end, it->wirelen);
        if (t == NULL) { Py_DECREF(list); free(h->items); return NULL; }
        PyList_SET_ITEM(list, i, t);
    }
    free(h->items);
    long long *st = s->st;
    PyObject *stats = Py_BuildValue("(LLLLLLLLLLLLLLLLL)", st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], st[9], st[10],
                                    st[11], st[12], st[13], s->first_ts, s->last_ts, st[S_OUTSIDE]);
    if (stats == NULL) { Py_DECREF(list); return NULL; }
    return Py_BuildValue("(nNiN)", pos, list, status, stats);
}

/* Records follow one another, each a few hundred bytes: reading a record's headers waits
 * for memory (the capture is far larger than the caches), and where the next one starts is
 * known only from this one. So each step also asks for the lines this far ahead, where a
 * record a few steps on will be read: the scan of a gateway capture took 28 % less time. */
#define PREFETCH_AHEAD 3072
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) (__builtin_prefetch((p) + PREFETCH_AHEAD), __builtin_prefetch((p) + PREFETCH_AHEAD + 64), \
                     __builtin_prefetch((p) + PREFETCH_AHEAD + 128))
#else
#define PREFETCH(p) ((void)0)
#endif

/* Status codes returned with the new position. */
#define ST_NEED_MORE 0   /* the buffer ends inside a record: read more, call again from pos */
#define ST_BAD 1         /* a record is impossible (Python re-reads it to report the damage) */
#define ST_OTHER_BLOCK 2 /* pcapng: a block that is not an EPB starts at pos (Python handles it) */
#define ST_FULL 3        /* max_kept records kept: call again from pos */
#define ST_PAST 4        /* the record at pos is past the time window's stop: read no further */

/* scan_pcap(buf, pos, big_endian, nano, header_len, linktype, max_len, filter[, limit, decode, max_kept,
 * since, until, stop, shard_index, shard_count]): records starting before limit (default: the whole buffer) are judged;
 * the scan stops early (ST_FULL) once max_kept records are kept, and (ST_PAST) at a record
 * stamped at or after stop. Records outside [since, until) are counted (S_OUTSIDE), nothing more. */
static PyObject *scan_pcap(PyObject *self, PyObject *args) {
    Py_buffer view, fview;
    Py_ssize_t pos;
    int big, nano, hlen, linktype;
    unsigned long max_len;
    Py_ssize_t limit = PY_SSIZE_T_MAX;
    int decode = DECODE_NONE;
    Py_ssize_t max_kept = PY_SSIZE_T_MAX;
    long long since = LLONG_MIN, until = LLONG_MAX, stop = LLONG_MAX;
    int shard_index = 0, shard_count = 1;
    if (!PyArg_ParseTuple(args, "y*npiiiky*|ninLLLii", &view, &pos, &big, &nano, &hlen, &linktype, &max_len, &fview, &limit, &decode,
                          &max_kept, &since, &until, &stop, &shard_index, &shard_count)) return NULL;
    Scan scan;
    if (scan_start(&scan, &fview, decode, max_kept, since, until, stop) < 0 || set_shard(&scan, shard_index, shard_count) < 0) {
        PyBuffer_Release(&view); PyBuffer_Release(&fview);
        return NULL;
    }
    const uint8_t *buf = view.buf;
    Py_ssize_t len = view.len;
    int status = ST_NEED_MORE;
    long long frac_limit = nano ? 1000000000LL : 1000000LL;
    long long scale = nano ? 1 : 1000;
    Py_BEGIN_ALLOW_THREADS  /* the buffer is pinned by the view: another thread may feed meanwhile */
    while (pos + hlen <= len && pos < limit) {
        if (scan.hits.n >= scan.max_kept) { status = ST_FULL; break; }
        const uint8_t *h = buf + pos;
        PREFETCH(h);
        uint32_t sec = rd32(h, big), frac = rd32(h + 4, big), caplen = rd32(h + 8, big), wirelen = rd32(h + 12, big);
        if (caplen > max_len || frac >= frac_limit) { status = ST_BAD; break; }
        Py_ssize_t start = pos + hlen, end = start + caplen;
        if (end > len) break;
        long long ts = (long long)sec * 1000000000LL + (long long)frac * scale;
        if (ts >= scan.stop) { status = ST_PAST; break; }
        if (sift(&scan, linktype, buf, start, end, wirelen, ts) < 0) break;
        pos = end;
    }
    Py_END_ALLOW_THREADS
    PyObject *result = conclude(&scan, buf, pos, status);
    PyBuffer_Release(&view);
    PyBuffer_Release(&fview);
    return result;
}

/* scan_pcapng(buf, pos, big_endian, interfaces, filter[, limit, decode, max_kept, since, until,
 * stop, shard_index, shard_count]): as scan_pcap, over enhanced packet blocks; interfaces is a tuple of
 * (linktype, kind, amount, offset_ns): kind 0 = multiply units by amount, 1 = divide by
 * amount, 2 = (units * 1e9) >> amount (binary resolution). Stops at any block but an EPB,
 * at the first block starting at or after the optional limit, and (ST_FULL) once max_kept
 * records are kept. */
static PyObject *scan_pcapng(PyObject *self, PyObject *args) {
    Py_buffer view, fview;
    Py_ssize_t pos;
    int big;
    PyObject *ifaces;
    Py_ssize_t limit = PY_SSIZE_T_MAX;
    int decode = DECODE_NONE;
    Py_ssize_t max_kept = PY_SSIZE_T_MAX;
    long long since = LLONG_MIN, until = LLONG_MAX, stop = LLONG_MAX;
    int shard_index = 0, shard_count = 1;
    if (!PyArg_ParseTuple(args, "y*npO!y*|ninLLLii", &view, &pos, &big, &PyTuple_Type, &ifaces, &fview, &limit, &decode, &max_kept,
                          &since, &until, &stop, &shard_index, &shard_count)) return NULL;
    Scan scan;
    if (scan_start(&scan, &fview, decode, max_kept, since, until, stop) < 0 || set_shard(&scan, shard_index, shard_count) < 0) {
        PyBuffer_Release(&view); PyBuffer_Release(&fview);
        return NULL;
    }
    Py_ssize_t nif = PyTuple_GET_SIZE(ifaces);
    int lts[64];
    int kinds[64];
    long long amounts[64], offsets[64];
    if (nif > 64) nif = 64; /* more interfaces: Python handles their packets (ifid >= nif) */
    for (Py_ssize_t i = 0; i < nif; i++) {
        PyObject *t = PyTuple_GET_ITEM(ifaces, i);
        if (!PyArg_ParseTuple(t, "iiLL", &lts[i], &kinds[i], &amounts[i], &offsets[i])) {
            PyBuffer_Release(&view); PyBuffer_Release(&fview);
            return NULL;
        }
    }
    const uint8_t *buf = view.buf;
    Py_ssize_t len = view.len;
    int status = ST_NEED_MORE;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 12 <= len && pos < limit) {
        if (scan.hits.n >= scan.max_kept) { status = ST_FULL; break; }
        const uint8_t *b = buf + pos;
        PREFETCH(b);
        uint32_t btype = rd32(b, big), blen = rd32(b + 4, big);
        if (btype != 6) { status = ST_OTHER_BLOCK; break; }
        if (blen < 32 || (blen & 3) || blen > 16u * 1024 * 1024) { status = ST_BAD; break; }
        if (pos + (Py_ssize_t)blen > len) break;
        if (rd32(b + blen - 4, big) != blen) { status = ST_BAD; break; }
        uint32_t ifid = rd32(b + 8, big), hi = rd32(b + 12, big), lo = rd32(b + 16, big);
        uint32_t caplen = rd32(b + 20, big), wirelen = rd32(b + 24, big);
        if (ifid >= (uint32_t)nif || 28 + (Py_ssize_t)caplen > (Py_ssize_t)blen - 4) { status = ST_BAD; break; }
        unsigned long long units = ((unsigned long long)hi << 32) | lo;
        long long ts;
        if (kinds[ifid] == 0) ts = (long long)(units * (unsigned long long)amounts[ifid]);
        else if (kinds[ifid] == 1) ts = (long long)(units / (unsigned long long)amounts[ifid]);
        else ts = (long long)(((unsigned __int128)units * 1000000000ULL) >> amounts[ifid]);
        ts += offsets[ifid];
        if (ts >= scan.stop) { status = ST_PAST; break; }
        Py_ssize_t start = pos + 28, end = start + caplen;
        if (sift(&scan, lts[ifid], buf, start, end, wirelen, ts) < 0) break;
        pos += blen;
    }
    Py_END_ALLOW_THREADS
    PyObject *result = conclude(&scan, buf, pos, status);
    PyBuffer_Release(&view);
    PyBuffer_Release(&fview);
    return result;
}

static PyMethodDef methods[] = {
    {"segment_types", segment_types, METH_VARARGS, "Register TcpSegment, UdpDatagram and parse_options for scans to build with."},
    {"checksum_state", checksum_state, METH_VARARGS, "TCP/UDP checksum: 0 correct, 1 unknown (offloaded), 2 wrong."},
    {"scan_pcap", scan_pcap, METH_VARARGS, "Keep the possibly relevant records of a buffer of pcap records."},
    {"scan_pcapng", scan_pcapng, METH_VARARGS, "Keep the possibly relevant enhanced packet blocks of a pcapng buffer."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_fastpath", "The decoder's hot path in C.", -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) { return PyModule_Create(&module); }
