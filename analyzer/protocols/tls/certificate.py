"""The fields smtpflow shows of an X.509 certificate, read straight from its DER bytes.

Importing ``cryptography.x509`` costs some 25 ms, a twentieth of a whole gateway run, and a
capture usually holds a handful of distinct certificates in plain TLS 1.2 handshakes. This
reader covers the strict-DER subset real certificates use: names of string attributes,
UTCTime/GeneralizedTime validity, DNS and IP subject alternative names. Anything else — an
unusual string type, a time with fractions, a value RFC 4514 escapes differently between
cryptography versions, a length that is not minimal — makes it return None, and the caller
asks cryptography, which gives the same fields (``tests/test_certificate.py`` compares the
two on every certificate we have).

Layouts (RFC 5280 §4.1):

    Certificate    ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }
    TBSCertificate ::= SEQUENCE { [0] version, serialNumber, signature, issuer Name,
                                  validity SEQUENCE { notBefore, notAfter }, subject Name,
                                  subjectPublicKeyInfo, [1] issuerUID, [2] subjectUID,
                                  [3] extensions }
    Name           ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    Extension      ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from typing import NamedTuple

# ASN.1 universal tags (X.680 §8.6) and the context tags of TBSCertificate.
BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, OID = 0x01, 0x02, 0x03, 0x04, 0x06
UTF8_STRING, NUMERIC_STRING, PRINTABLE_STRING, TELETEX_STRING = 0x0C, 0x12, 0x13, 0x14
IA5_STRING, UTC_TIME, GENERALIZED_TIME, VISIBLE_STRING = 0x16, 0x17, 0x18, 0x1A
UNIVERSAL_STRING, BMP_STRING = 0x1C, 0x1E
SEQUENCE, SET = 0x30, 0x31
VERSION, ISSUER_UID, SUBJECT_UID, EXTENSIONS = 0xA0, 0x81, 0x82, 0xA3
# GeneralName choices (RFC 5280 §4.2.1.6), implicitly tagged.
SAN_DNS_NAME, SAN_IP_ADDRESS = 0x82, 0x87

#: id-ce-subjectAltName, 2.5.29.17, as the content octets of its OID.
SUBJECT_ALT_NAME = bytes((0x55, 0x1D, 0x11))

#: Short names RFC 4514 (and cryptography's ``rfc4514_string``) give attribute types; others
#: are written as dotted OIDs.
ATTRIBUTE_NAMES = {
    bytes((0x55, 0x04, 0x03)): "CN",
    bytes((0x55, 0x04, 0x07)): "L",
    bytes((0x55, 0x04, 0x08)): "ST",
    bytes((0x55, 0x04, 0x0A)): "O",
    bytes((0x55, 0x04, 0x0B)): "OU",
    bytes((0x55, 0x04, 0x06)): "C",
    bytes((0x55, 0x04, 0x09)): "STREET",
    bytes((0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19)): "DC",
    bytes((0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01)): "UID",
}

#: How attribute values of each string type become text (as cryptography decodes them).
STRING_CODECS = {
    UTF8_STRING: "utf-8", NUMERIC_STRING: "utf-8", PRINTABLE_STRING: "utf-8", TELETEX_STRING: "utf-8",
    IA5_STRING: "utf-8", VISIBLE_STRING: "utf-8", UNIVERSAL_STRING: "utf-32-be", BMP_STRING: "utf-16-be",
}

#: Characters RFC 4514 §2.4 escapes inside a value, in cryptography's order.
ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("+", "\\+"), (",", "\\,"), (";", "\\;"), ("<", "\\<"), (">", "\\>"),
           ("\0", "\\00"))


class Fields(NamedTuple):
    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    san: tuple[str, ...]
    self_signed: bool


class _Unread(Exception):
    """Outside the subset this reader covers: let cryptography read it."""


def read_fields(der: bytes) -> Fields | None:
    """The certificate's shown fields, or None when cryptography must read it."""
    try:
        return _read(der)
    except (_Unread, IndexError, ValueError):  # ValueError: bad text, impossible dates
        return None


def read_fields_by_cryptography(der: bytes) -> Fields:
    """The same fields, read by cryptography (imported here: only certificates ``read_fields``
    declines pay for it). Raises what cryptography raises for a certificate it cannot read."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    san: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        san.extend(ext.get_values_for_type(x509.DNSName))
        san.extend(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    if hasattr(cert, "not_valid_before_utc"):
        not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    else:  # cryptography < 42
        not_before = cert.not_valid_before.replace(tzinfo=timezone.utc)
        not_after = cert.not_valid_after.replace(tzinfo=timezone.utc)
    return Fields(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), not_before, not_after, tuple(san),
                  cert.subject == cert.issuer)


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the element at ``pos``; strict DER lengths only."""
    if pos + 2 > end:
        raise _Unread
    tag = data[pos]
    if tag & 0x1F == 0x1F:  # high tag numbers: not in a certificate's fields
        raise _Unread
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > end or data[pos] == 0:  # indefinite or not minimal
            raise _Unread
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
        if length < 0x80:
            raise _Unread
    if pos + length > end:
        raise _Unread
    return tag, pos, pos + length


def _expect(data: bytes, pos: int, end: int, tag: int) -> tuple[int, int]:
    got, start, stop = _tlv(data, pos, end)
    if got != tag:
        raise _Unread
    return start, stop


def _read(der: bytes) -> Fields:
    start, end = _expect(der, 0, len(der), SEQUENCE)
    if end != len(der):
        raise _Unread
    pos, tbs_end = _expect(der, start, end, SEQUENCE)
    tag, a, b = _tlv(der, pos, tbs_end)
    if tag == VERSION:
        va, vb = _expect(der, a, b, INTEGER)
        if vb != b or der[va:vb] != b"\x02":  # v3; v1 is never written, v2 is refused
            raise _Unread
        pos = b
    pos = _expect(der, pos, tbs_end, INTEGER)[1]  # serialNumber
    pos = _expect(der, pos, tbs_end, SEQUENCE)[1]  # signature
    a, pos = _expect(der, pos, tbs_end, SEQUENCE)
    issuer, issuer_key = _name(der, a, pos)
    a, pos = _expect(der, pos, tbs_end, SEQUENCE)
    tag, ta, tb = _tlv(der, a, pos)
    not_before = _time(tag, der[ta:tb])
    tag, ta, tc = _tlv(der, tb, pos)
    not_after = _time(tag, der[ta:tc])
    if tc != pos:
        raise _Unread
    a, pos = _expect(der, pos, tbs_end, SEQUENCE)
    subject, subject_key = _name(der, a, pos)
    pos = _expect(der, pos, tbs_end, SEQUENCE)[1]  # subjectPublicKeyInfo
    san: tuple[str, ...] = ()
    while pos < tbs_end:
        tag, a, b = _tlv(der, pos, tbs_end)
        if tag == EXTENSIONS:
            san = _extensions(der, a, b)
        elif tag not in (ISSUER_UID, SUBJECT_UID):
            raise _Unread
        pos = b
    return Fields(subject, issuer, not_before, not_after, san, subject_key == issuer_key)


def _oid(data: bytes) -> str:
    """Dotted text of an OID's content octets."""
    if not data or data[-1] & 0x80:
        raise _Unread
    arcs, value, fresh = [], 0, True
    for byte in data:
        if fresh and byte == 0x80:  # not minimal
            raise _Unread
        value = (value << 7) | (byte & 0x7F)
        fresh = not byte & 0x80
        if fresh:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _name(der: bytes, pos: int, end: int) -> tuple[str, tuple]:
    """(RFC 4514 text, comparable value) of a Name: RDNs in reverse order, as RFC 4514 writes them."""
    rdns = []
    key = []
    while pos < end:
        a, pos = _expect(der, pos, end, SET)
        if a == pos:
            raise _Unread
        texts = []
        attrs = set()
        while a < pos:
            x, a = _expect(der, a, pos, SEQUENCE)
            oa, ob = _expect(der, x, a, OID)
            tag, va, vb = _tlv(der, ob, a)
            if vb != a:
                raise _Unread
            codec = STRING_CODECS.get(tag)
            if codec is None:
                raise _Unread
            oid = der[oa:ob]
            value = der[va:vb].decode(codec)
            if (oid, value) in attrs:
                raise _Unread
            attrs.add((oid, value))
            label = ATTRIBUTE_NAMES.get(oid) or _oid(oid)
            texts.append(f"{label}={_escape(value)}")
        rdns.append("+".join(texts))
        key.append(frozenset(attrs))
    return ",".join(reversed(rdns)), tuple(key)


def _escape(value: str) -> str:
    if not value:
        return ""
    if value[0] in "# " or value[-1] == " ":  # escaped differently by cryptography's versions
        raise _Unread
    for char, escaped in ESCAPES:
        if char in value:
            value = value.replace(char, escaped)
    return value


def _time(tag: int, text: bytes) -> datetime:
    if not text.endswith(b"Z") or not text[:-1].isdigit():
        raise _Unread
    if tag == UTC_TIME and len(text) == 13:
        year = int(text[0:2])
        year += 1900 if year >= 50 else 2000
        rest = text[2:12]
    elif tag == GENERALIZED_TIME and len(text) == 15:
        year = int(text[0:4])
        rest = text[4:14]
    else:
        raise _Unread
    month, day, hour, minute, second = (int(rest[i:i + 2]) for i in range(0, 10, 2))
    return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)


def _extensions(der: bytes, pos: int, end: int) -> tuple[str, ...]:
    a, b = _expect(der, pos, end, SEQUENCE)
    if b != end:
        raise _Unread
    seen = set()
    san: tuple[str, ...] = ()
    while a < b:
        x, a = _expect(der, a, b, SEQUENCE)
        oa, ob = _expect(der, x, a, OID)
        oid = der[oa:ob]
        if oid in seen:  # cryptography refuses duplicate extensions
            raise _Unread
        seen.add(oid)
        tag, va, vb = _tlv(der, ob, a)
        if tag == BOOLEAN:
            tag, va, vb = _tlv(der, vb, a)
        if tag != OCTET_STRING or vb != a:
            raise _Unread
        if oid == SUBJECT_ALT_NAME:
            san = _alt_names(der, va, vb)
    return san


def _alt_names(der: bytes, pos: int, end: int) -> tuple[str, ...]:
    a, b = _expect(der, pos, end, SEQUENCE)
    if b != end:
        raise _Unread
    names, addresses = [], []
    while a < b:
        tag, va, a = _tlv(der, a, b)
        if tag == SAN_DNS_NAME:
            names.append(der[va:a].decode("ascii"))
        elif tag == SAN_IP_ADDRESS:
            if a - va not in (4, 16):
                raise _Unread
            addresses.append(str(ipaddress.ip_address(der[va:a])))
    return (*names, *addresses)
