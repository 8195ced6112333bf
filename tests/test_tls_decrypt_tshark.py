"""Our TLS decryption against tshark's, through pyshark, on every capture with a key log.

tshark (Wireshark's dissectors, the key log given as ``tls.keylog_file``) and smtpflow
decrypt the same sessions; the SMTP reply codes and the TLS alerts each finds inside TLS
must agree. pyshark reads tshark's ``-T ek`` output, whose field names are flat: with
``-T json`` the alert sits nested under its record, where pyshark cannot reach it by name.
"""

from __future__ import annotations

import shutil

import pytest

from analyzer.protocols.tls import Alert, KeyLog
from test_tls_decrypt import CAPTURES, decrypt_capture, keyed_captures, plaintext, reply_codes

pyshark = pytest.importorskip("pyshark")
pytestmark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")

#: The tshark fields compared, by tshark major version (names change between releases).
TSHARK_FIELDS = {
    4: {"reply_code": "smtp.response.code", "alert": "tls.alert_message.desc", "source_port": "tcp.srcport"},
}


@pytest.fixture(scope="module")
def fields() -> dict[str, str]:
    from pyshark.tshark.tshark import get_tshark_version

    major = get_tshark_version().major
    known = [v for v in TSHARK_FIELDS if v <= major]
    if not known:
        pytest.skip(f"no field names recorded for tshark {major}")
    return TSHARK_FIELDS[max(known)]


def _values(value) -> list[int]:
    """A pyshark EK field: one value, a list of them, or None."""
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _layer_field(packet, name: str):
    """Field ``proto.rest`` of the packet's ``proto`` layers (EK layers are keyed by the rest)."""
    proto, rest = name.split(".", 1)
    return [layer.get_field(rest) for layer in packet.layers if layer.layer_name == proto]


def tshark_view(entry: dict, fields: dict[str, str]) -> tuple[list[int], dict[bool, list[int]]]:
    """(reply codes, alert descriptions by from_client) that tshark found inside TLS."""
    server_port = entry["sessions"][0]["server_port"]
    capture = pyshark.FileCapture(
        str(CAPTURES / entry["file"]),
        override_prefs={"tls.keylog_file": str(CAPTURES / entry["keylog"])},
        display_filter=f"tls and ({fields['reply_code']} or {fields['alert']})",
        use_ek=True,
    )
    codes: list[int] = []
    alerts: dict[bool, list[int]] = {True: [], False: []}
    try:
        for packet in capture:
            for value in _layer_field(packet, fields["reply_code"]):
                codes += _values(value)
            from_client = _values(_layer_field(packet, fields["source_port"])[0]) != [server_port]
            for value in _layer_field(packet, fields["alert"]):
                alerts[from_client] += _values(value)
    finally:
        capture.close()
    return codes, alerts


@pytest.mark.parametrize("entry", keyed_captures(), ids=lambda entry: entry["file"])
def test_same_replies_and_alerts_as_tshark(entry: dict, fields: dict[str, str]) -> None:
    tshark_codes, tshark_alerts = tshark_view(entry, fields)
    assert tshark_codes, "tshark decrypted no SMTP reply: is the key log preference still tls.keylog_file?"
    (observer,) = decrypt_capture(CAPTURES / entry["file"], KeyLog.load(CAPTURES / entry["keylog"]))
    assert reply_codes(plaintext(observer.events, False)) == tshark_codes
    ours = {True: [], False: []}
    for event in observer.events:
        if isinstance(event, Alert) and event.description is not None:
            ours[event.from_client].append(event.description)
    assert ours == tshark_alerts
