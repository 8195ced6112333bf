"""TLS secrets carried by the capture itself: pcapng Decryption Secrets Blocks, as Wireshark's
``editcap --inject-secrets tls,KEYLOG`` writes them, decrypt like ``--keylog KEYLOG``."""

from __future__ import annotations

import glob
import json
import os
import shutil
import struct
import subprocess
import sys

import pytest

import analyzer
from analyzer.capture.pcapng import BT_DSB, SECRETS_TLS_KEY_LOG
from conftest import ROOT

CAPTURES = os.path.join(ROOT, "captures")
KEYED = sorted(os.path.basename(path)[: -len(".keys")] for path in glob.glob(os.path.join(CAPTURES, "*.keys")))

pytestmark = pytest.mark.skipif(shutil.which("editcap") is None, reason="editcap (wireshark-common) writes the secrets")


def inject(name: str, directory) -> str:
    out = os.path.join(str(directory), f"{name}.pcapng")
    subprocess.run(["editcap", "--inject-secrets", f"tls,{os.path.join(CAPTURES, name + '.keys')}",
                    os.path.join(CAPTURES, name + ".pcap"), out], check=True, capture_output=True)
    return out


def records(analysis) -> list[str]:
    return [json.dumps(record, sort_keys=True) for record in analysis.records]


def test_there_are_keyed_captures_to_test_with():
    assert len(KEYED) >= 5


@pytest.mark.parametrize("name", KEYED)
def test_embedded_secrets_decrypt_as_the_key_log_does(name, tmp_path):
    embedded = analyzer.analyze(inject(name, tmp_path))
    given = analyzer.analyze(os.path.join(CAPTURES, name + ".pcap"), keylog=os.path.join(CAPTURES, name + ".keys"))
    plain = analyzer.analyze(os.path.join(CAPTURES, name + ".pcap"))
    assert records(embedded) == records(given)
    assert records(embedded) != records(plain), "the secrets changed what could be read"
    assert any(record["tls"].get("decrypted") for record in embedded.records)
    assert embedded.stats["tls_decryption"]["decrypted"] >= 1
    assert not embedded.warnings


def test_secrets_stay_secret(tmp_path):
    """What decrypts the sessions is never written out."""
    name = "auth-disabled-535"
    secrets = [line.split()[2] for line in open(os.path.join(CAPTURES, name + ".keys")) if line.strip() and not line.startswith("#")]
    path = inject(name, tmp_path)
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", path, "--format", "jsonl", "-q"], capture_output=True,
                         cwd=ROOT, check=True)
    assert secrets and not any(secret.encode() in out.stdout.lower() for secret in secrets)


@pytest.mark.parametrize("workers", [1, 2])
def test_several_files_each_with_its_secrets(workers, tmp_path):
    """Per-file workers do not decrypt: they hand the secrets to the coordinator, which does."""
    ring = tmp_path / "ring"
    ring.mkdir()
    for name in KEYED[:3]:
        inject(name, ring)
    together = analyzer.analyze(str(ring), workers=workers)
    separately = [record for name in KEYED[:3] for record in
                  analyzer.analyze(os.path.join(CAPTURES, name + ".pcap"), keylog=os.path.join(CAPTURES, name + ".keys")).records]
    assert sorted(records(together)) == sorted(json.dumps(record, sort_keys=True) for record in separately)


def test_a_split_run_decrypts_in_every_shard(tmp_path):
    path = inject("starttls-auth-ok", tmp_path)
    assert records(analyzer.analyze(path, workers=2)) == records(analyzer.analyze(path))


def test_secrets_come_through_standard_input(tmp_path):
    name = "ipv6-starttls-ok"
    with open(inject(name, tmp_path), "rb") as fh:
        out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "-", "--format", "jsonl", "-q"], stdin=fh,
                             capture_output=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    given = analyzer.analyze(os.path.join(CAPTURES, name + ".pcap"), keylog=os.path.join(CAPTURES, name + ".keys"))
    assert [json.loads(line) for line in out.stdout.splitlines()] == json.loads(json.dumps(list(given.records)))


def _blocks(data: bytes):
    pos = 0
    while pos < len(data):
        btype, length = struct.unpack_from("<II", data, pos)
        yield pos, btype, length
        pos += length


@pytest.mark.parametrize("damage", ["other kind", "length overruns the block"])
def test_other_or_broken_secrets_blocks_are_skipped(damage, tmp_path):
    """A DSB of another kind (WireGuard keys) or whose length overruns it is passed over: the rest
    of the file reads as without it."""
    name = "implicit-tls-465-ok"
    data = bytearray(open(inject(name, tmp_path), "rb").read())
    (pos,) = [pos for pos, btype, _length in _blocks(bytes(data)) if btype == BT_DSB]
    assert struct.unpack_from("<I", data, pos + 8)[0] == SECRETS_TLS_KEY_LOG
    if damage == "other kind":
        struct.pack_into("<I", data, pos + 8, 0x57474B4C)  # "WGKL"
    else:
        struct.pack_into("<I", data, pos + 12, struct.unpack_from("<I", data, pos + 4)[0])
    broken = tmp_path / "broken.pcapng"
    broken.write_bytes(bytes(data))
    analysis = analyzer.analyze(str(broken))
    assert records(analysis) == records(analyzer.analyze(os.path.join(CAPTURES, name + ".pcap")))
    assert not analysis.damage


def test_embedded_secrets_add_to_a_key_log_given(tmp_path):
    """Secrets from the capture and from --keylog together: each session finds its own."""
    ring = tmp_path / "ring"
    ring.mkdir()
    inject("auth-disabled-535", ring)
    shutil.copy(os.path.join(CAPTURES, "starttls-auth-ok.pcap"), ring)
    both = analyzer.analyze(str(ring), keylog=os.path.join(CAPTURES, "starttls-auth-ok.keys"))
    assert both.stats["tls_decryption"]["decrypted"] == both.stats["tls_decryption"]["tls_sessions"] >= 2
