"""The DER certificate reader (``protocols/tls/certificate.py``) against cryptography.

Every certificate it reads must give exactly the fields cryptography gives; everything it does
not cover must come back None (and then cryptography reads it). Certificates come from tshark
on real captures (the bundled ones and Zeek's corpus), from trustme, and from cryptography's
builder for the corners: escapes, multi-valued RDNs, string types, dates past 2049, SANs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import random
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

from analyzer.protocols.tls.certificate import Fields, read_fields
from analyzer.protocols.tls.certificate import read_fields_by_cryptography as by_cryptography

ROOT = Path(__file__).resolve().parent.parent
ZEEK_TLS = ROOT.parent / "shared" / "corpus" / "zeek"
COMMON_NAME_OID = bytes((0x06, 0x03, 0x55, 0x04, 0x03))


def captured_certificates(paths) -> list[bytes]:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    ders = []
    for path in paths:
        if COMMON_NAME_OID not in path.read_bytes():  # no certificate in clear: spare tshark's start-up
            continue
        out = subprocess.run(["tshark", "-r", str(path), "-Y", "tls.handshake.certificate", "-T", "fields",
                              "-e", "tls.handshake.certificate"], capture_output=True, text=True, check=True).stdout
        ders += [bytes.fromhex(h.replace(":", "")) for h in out.replace("\n", ",").split(",") if h.strip()]
    return list(dict.fromkeys(ders))


def test_certificates_of_real_captures_read_as_cryptography_reads_them() -> None:
    paths = sorted((ROOT / "captures").glob("*.pcap*"))
    if ZEEK_TLS.is_dir():
        paths += sorted(ZEEK_TLS.rglob("*.pcap"))
    ders = captured_certificates(paths)
    assert len(ders) >= 5
    read = 0
    for der in ders:
        fields = read_fields(der)
        if fields is not None:
            assert fields == by_cryptography(der)
            read += 1
    assert read >= len(ders) * 3 // 4  # the reader is for the common case: it must cover it


def test_trustme_chain() -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("mail.example.test", "*.example.test", "192.0.2.7", "2001:db8::25",
                         organization_name="Example, Inc.", organization_unit_name="Mail+Relay")
    for pem in (ca.cert_pem.bytes(), *(blob.bytes() for blob in leaf.cert_chain_pems)):
        der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
        assert read_fields(der) == by_cryptography(der)
    fields = read_fields(x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes()).public_bytes(Encoding.DER))
    assert fields.san == ("mail.example.test", "*.example.test", "192.0.2.7", "2001:db8::25")
    assert not fields.self_signed and "O=Example\\, Inc." in fields.subject


KEY = ec.generate_private_key(ec.SECP256R1())


def build(subject: x509.Name, issuer: x509.Name | None = None, *, not_before=dt.datetime(2024, 1, 1),
          not_after=dt.datetime(2026, 1, 1), san: list | None = None) -> bytes:
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer or subject)
               .public_key(KEY.public_key()).serial_number(4242).not_valid_before(not_before)
               .not_valid_after(not_after))
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    return builder.sign(KEY, hashes.SHA256()).public_bytes(Encoding.DER)


def name(*attrs) -> x509.Name:
    """A Name of one attribute per RDN: (oid, value) or (oid, value, NameAttribute keywords)."""
    return x509.Name([x509.NameAttribute(oid, value, **(rest[0] if rest else {})) for oid, value, *rest in attrs])


CN = NameOID.COMMON_NAME
CASES = {
    # what: (certificate, read by our reader?)
    "plain": (build(name((CN, "mx.example.test"), (NameOID.COUNTRY_NAME, "DE"))), True),
    "escapes": (build(name((CN, 'a,b+c;d<e>f"g\\h'), (NameOID.ORGANIZATION_NAME, "x\0y"))), True),
    "unknown attribute OID": (build(name((x509.ObjectIdentifier("1.3.6.1.4.1.311.60.2.1.3"), "US"), (CN, "z"))), True),
    "serial number and DC": (build(name((NameOID.SERIAL_NUMBER, "123"), (NameOID.DOMAIN_COMPONENT, "test"),
                                        (NameOID.USER_ID, "u1"), (NameOID.STREET_ADDRESS, "Main St 1"))), True),
    "multi-valued RDN": (build(x509.Name([x509.RelativeDistinguishedName([
        x509.NameAttribute(CN, "a"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "b")])])), True),
    "BMPString": (build(name((CN, "Grüße ✓", {"_type": _ASN1Type.BMPString}))), True),
    "UniversalString": (build(name((CN, "Grüße 🙂", {"_type": _ASN1Type.UniversalString}))), True),
    "UTF8String with non-ASCII": (build(name((CN, "smtp.exämple.test"))), True),
    "IA5String": (build(name((NameOID.EMAIL_ADDRESS, "postmaster@example.test"))), True),
    "issuer differs": (build(name((CN, "leaf")), name((CN, "ca"))), True),
    "empty name": (build(x509.Name([]), name((CN, "ca"))), True),
    "dates past 2049": (build(name((CN, "x")), not_before=dt.datetime(1950, 1, 1), not_after=dt.datetime(2060, 6, 1, 12, 30, 5)), True),
    "SAN of every kind": (build(name((CN, "x")), san=[
        x509.DNSName("a.example.test"), x509.RFC822Name("p@example.test"), x509.IPAddress(ipaddress.ip_address("192.0.2.1")),
        x509.UniformResourceIdentifier("https://example.test/"), x509.DNSName("b.example.test"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1"))]), True),
    "empty value": (build(name((NameOID.ORGANIZATIONAL_UNIT_NAME, ""), (CN, "x"))), True),
    # RFC 4514 leading/trailing space and '#': escaped differently by cryptography's versions.
    "leading hash": (build(name((CN, "#1"))), False),
    "leading space": (build(name((CN, " x"))), False),
    "trailing space": (build(name((CN, "x "))), False),
    "bit string attribute": (build(name((NameOID.X500_UNIQUE_IDENTIFIER, b"\x01\x02", {"_type": _ASN1Type.BitString}))), False),
}


@pytest.mark.parametrize("what", CASES)
def test_built_certificates(what: str) -> None:
    der, covered = CASES[what]
    fields = read_fields(der)
    if covered:
        assert fields == by_cryptography(der), what
    else:
        assert fields is None


def test_every_field_is_read() -> None:
    der = build(name((CN, "mx"), (NameOID.ORGANIZATION_NAME, "Org")), name((CN, "ca")),
                not_before=dt.datetime(2024, 2, 3, 4, 5, 6), not_after=dt.datetime(2051, 7, 8, 9, 10, 11),
                san=[x509.DNSName("mx.example.test"), x509.IPAddress(ipaddress.ip_address("198.51.100.9"))])
    utc = dt.timezone.utc
    assert read_fields(der) == Fields("O=Org,CN=mx", "CN=ca", dt.datetime(2024, 2, 3, 4, 5, 6, tzinfo=utc),
                                      dt.datetime(2051, 7, 8, 9, 10, 11, tzinfo=utc),
                                      ("mx.example.test", "198.51.100.9"), False)


def test_damaged_certificates_never_disagree() -> None:
    """Flipped bytes and cuts: the reader declines, or says what cryptography says (when it reads it)."""
    base = CASES["SAN of every kind"][0]
    rng = random.Random(7)
    declined = 0
    for _ in range(3000):
        der = bytearray(base)
        for _ in range(rng.randint(1, 3)):
            der[rng.randrange(len(der))] = rng.randrange(256)
        if rng.random() < 0.2:
            der = der[:rng.randrange(len(der))]
        der = bytes(der)
        fields = read_fields(der)
        if fields is None:
            declined += 1
            continue
        try:
            theirs = by_cryptography(der)
        except Exception:  # noqa: BLE001 - cryptography refuses what it cannot parse
            continue  # read more leniently than cryptography: the shown fields were intact
        assert fields == theirs
    assert declined > 100


def test_parse_certificate_uses_cryptography_for_what_the_reader_declines() -> None:
    from analyzer.protocols.tls.parser import parse_certificate

    der = CASES["bit string attribute"][0]
    info = parse_certificate(der)
    assert info.error is None and info.subject == "2.5.4.45=#0102"
    der = CASES["escapes"][0]
    assert parse_certificate(der).subject == by_cryptography(der).subject
