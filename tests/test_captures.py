"""smtpflow on real captures: the bundled ones (captures/, with manifest.json) and fresh ones.

Every capture in ``captures/`` was recorded from real kernel TCP stacks in network
namespaces (``tests/lab``, ``scripts/record-captures``); ``manifest.json`` lists the facts
the recorder verified on the wire. Here the analyzer must find those facts. A few scenarios
are also re-recorded during the test run (root and namespaces needed) and analysed at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import analyzer
from conftest import ROOT

CAPTURES = os.path.join(ROOT, "captures")
MANIFEST = os.path.join(CAPTURES, "manifest.json")
SECRETS = ("Hunter2-NotReal!", "SHVudGVyMi1Ob3RSZWFsIQ==")  # the lab's fake password, and in base64


def manifest() -> list[dict]:
    with open(MANIFEST) as fh:
        return json.load(fh)["captures"]


def expected_sessions(entry: dict) -> list[dict]:
    out = []
    for session in entry["sessions"]:
        out += [session] * session.get("count", 1)
    return out


def check_session(rec: dict, exp: dict, where: str, keys: bool = False) -> None:
    """``keys``: the capture was analysed with its key log: the encrypted replies are visible too."""
    assert rec["server"] == exp["server"] and rec["server_port"] == exp["server_port"], where
    if keys:
        exp = dict(exp, outcome=exp.get("expected_with_keys", exp["outcome"]))
        assert rec["tls"].get("decrypted") is (True if exp.get("encrypted_replies") else rec["tls"].get("decrypted")), where
        inside = [r["code"] for r in (rec.get("smtp") or {}).get("replies") or [] if r["encrypted"]]
        assert inside == exp.get("encrypted_replies", []), f"{where}: decrypted replies {inside} != {exp.get('encrypted_replies')}"
        assert all(r["decrypted"] for r in (rec.get("smtp") or {}).get("replies") or [] if r["encrypted"]), where
    for field in ("conn_state", "outcome", "rst_from"):
        if field in exp:
            assert rec[field] == exp[field], f"{where}: {field} {rec[field]!r} != {exp[field]!r} ({rec['outcome_reason']})"
    if "syn_count_min" in exp:
        assert rec["syn_count"] >= exp["syn_count_min"], where
    if exp.get("icmp"):
        assert rec["icmp"] and rec["icmp"]["type"] == exp["icmp"]["type"] and rec["icmp"]["code"] == exp["icmp"]["code"], where
    for key, value in (exp.get("tls") or {}).items():
        assert rec["tls"].get(key) == value, f"{where}: tls.{key} {rec['tls'].get(key)!r} != {value!r}"
    if "smtp_replies" in exp:
        visible = [r["code"] for r in (rec.get("smtp") or {}).get("replies") or [] if not r["encrypted"]]
        assert visible == exp["smtp_replies"], f"{where}: replies {visible} != {exp['smtp_replies']}"


def analyse_against(entry: dict, path: str, keylog: str | None = None) -> analyzer.Analysis:
    a = analyzer.analyze(path, keylog=keylog)
    assert a.exit_code == 0, (path, a.errors, a.damage)
    keys = keylog is not None
    expected = expected_sessions(entry)
    records = sorted(a.records, key=lambda r: r["first_seen"])
    assert len(records) == len(expected), [(r["server"], r["server_port"], r["outcome"]) for r in records]
    remaining = list(records)
    for exp in expected:
        # The manifest groups sessions: take the first one that has every expected fact.
        where = f"{entry['file']} → {exp['server']}:{exp['server_port']}"
        candidates = [r for r in remaining if r["server"] == exp["server"] and r["server_port"] == exp["server_port"]]
        assert candidates, where
        for rec in candidates:
            try:
                check_session(rec, exp, where, keys)
            except AssertionError:
                continue
            remaining.remove(rec)
            break
        else:
            check_session(candidates[0], exp, where, keys)  # none fits: report against the first
    dns = a.dns
    for exp in entry.get("dns") or []:
        rows = dns[(dns["qname"] == exp["qname"]) & ((dns["qtype"] == exp.get("qtype", "A")) if "qtype" in exp else True)]
        assert len(rows) > 0, (entry["file"], exp)
        if exp.get("rcode"):
            assert exp["rcode"] in set(rows["rcode"].dropna()), (entry["file"], exp, list(rows["rcode"]))
        for address in exp.get("addresses") or []:
            assert any(address in list(v) for v in rows["addresses"]), (entry["file"], exp)
    return a


@pytest.fixture(scope="module")
def entries():
    if not os.path.exists(MANIFEST):
        pytest.skip("captures/manifest.json is missing")
    return {e["file"]: e for e in manifest()}


def _names():
    if not os.path.exists(MANIFEST):
        return []
    return [e["file"] for e in manifest()]


@pytest.mark.parametrize("name", _names())
def test_bundled_capture(entries, name):
    analyse_against(entries[name], os.path.join(CAPTURES, name))


def _keyed_names():
    return [e["file"] for e in manifest() if e.get("keylog")] if os.path.exists(MANIFEST) else []


@pytest.mark.parametrize("name", _keyed_names())
def test_bundled_capture_with_its_key_log(entries, name):
    """With the key log the recorder wrote, the dialogue inside TLS is read: every encrypted
    reply the lab client saw, and the outcome that follows from them."""
    entry = entries[name]
    a = analyse_against(entry, os.path.join(CAPTURES, name), keylog=os.path.join(CAPTURES, entry["keylog"]))
    assert a.stats["tls_decryption"]["decrypted"] >= 1
    assert not a.warnings and not a.errors, (a.warnings, a.errors)


def test_a_key_log_of_other_sessions_is_reported_not_fatal(tmp_path):
    keys = os.path.join(CAPTURES, "starttls-auth-ok.keys")
    a = analyzer.analyze(os.path.join(CAPTURES, "auth-disabled-535.pcap"), keylog=keys)
    rec = a.records[0]
    assert rec["tls"]["decrypted"] is False and rec["tls"]["decryption_error"]
    assert rec["outcome"] == "completed"  # as without keys
    assert any("none of the 1 TLS session(s) has its secrets" in w for w in a.warnings), a.warnings
    assert a.exit_code == 0  # the analysis is whole: a key log that fits nothing is a warning
    bad = tmp_path / "bad.keys"
    bad.write_text("this is not a key log\n")
    out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--keylog", str(bad), os.path.join(CAPTURES, "auth-disabled-535.pcap")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "bad.keys holds no usable line" in out.stderr and "Traceback" not in out.stderr
    missing = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--keylog", str(tmp_path / "nope.keys"), os.path.join(CAPTURES, "auth-disabled-535.pcap")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "cannot read key log" in missing.stderr


def test_decrypted_credentials_never_appear_in_any_output(tmp_path):
    """Decryption puts AUTH LOGIN's base64 password back in view: it is redacted like clear text."""
    path = os.path.join(CAPTURES, "starttls-auth-ok.pcap")
    keys = os.path.join(CAPTURES, "starttls-auth-ok.keys")
    a = analyzer.analyze(path, keylog=keys)
    assert a.records[0]["smtp"]["auth_result"] == "success"
    outputs = [repr(a.records) + repr(a.events.to_dict()) + a.follow(0)]
    for fmt in ("table", "jsonl", "csv"):
        out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--keylog", keys, "--format", fmt, path],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        outputs.append(out.stdout + out.stderr)
    subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--keylog", keys, "--format", "zeek", "-o", str(tmp_path / "zeek"), path], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "analyzer", "report", "--keylog", keys, "-o", str(tmp_path / "report"), path], check=True, timeout=180, capture_output=True)
    outputs.append(subprocess.run([sys.executable, "-m", "analyzer", "follow", "--keylog", keys, path, "0"], capture_output=True, text=True, timeout=120).stdout)
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                outputs.append(fh.read().decode("latin-1"))
    for text in outputs:
        for secret in SECRETS + ("cHJpbnRlckBjb250b3NvLmNvbQ==",):
            assert secret not in text
    assert "TLS decryption: 1 of 1 TLS session(s) decrypted with the key log" in outputs[1]  # the table
    html = open(tmp_path / "report" / "report.html", encoding="utf-8").read()
    assert "TLS decryption: 1 of 1" in html and "TLSv1.2 starttls, decrypted" in html
    transcript = a.follow(0)
    assert "[redacted]" in transcript and "decrypted with the key log" in transcript
    assert "235" in transcript


def test_gateway_capture_answers_the_question(entries):
    a = analyzer.analyze(os.path.join(CAPTURES, "gateway-mixed.pcap"))
    summary = a.summary()
    assert summary["dropped_before_microsoft"]["answer"] == "partly"
    top = summary["findings"][0]
    assert top["outcome"] == "syn_unanswered" and top["target"] == "smtp.office365.com:587"
    assert top["detail"].startswith("9 of 12 connection attempt(s) to smtp.office365.com:587 got no answer")


def test_dns_failure_capture(entries):
    a = analyzer.analyze(os.path.join(CAPTURES, "dns-nxdomain.pcap"))
    titles = {f["title"] for f in a.summary()["findings"]}
    assert "DNS lookup of smtp-nameast.outlook.com failed (NXDOMAIN)" in titles
    assert "DNS lookup of smtp.office365.com failed (SERVFAIL)" in titles


def test_credentials_never_appear_in_any_output(tmp_path):
    path = os.path.join(CAPTURES, "auth-before-tls-plaintext.pcap")
    raw = open(path, "rb").read()
    assert SECRETS[1].encode() in raw  # the password really is on the wire in clear
    outputs = []
    for fmt in ("table", "jsonl", "csv"):
        out = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--format", fmt, path], capture_output=True, text=True, timeout=120)
        outputs.append(out.stdout + out.stderr)
    for fmt in ("parquet", "zeek"):
        subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--format", fmt, "-o", str(tmp_path / fmt), path], check=True, timeout=120)
    subprocess.run([sys.executable, "-m", "analyzer", "report", "-o", str(tmp_path / "report"), path], check=True, timeout=180, capture_output=True)
    outputs.append(subprocess.run([sys.executable, "-m", "analyzer", "follow", path, "0"], capture_output=True, text=True, timeout=120).stdout)
    shown = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--show-auth-user", "--format", "jsonl", path], capture_output=True, text=True, timeout=120).stdout
    outputs.append(shown)
    for root, _dirs, files in os.walk(tmp_path):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                outputs.append(fh.read().decode("latin-1"))
    a = analyzer.analyze(path)
    outputs.append(repr(a.records) + repr(a.events.to_dict()) + a.follow(0))
    for text in outputs:
        for secret in SECRETS + ("cHJpbnRlckBjb250b3NvLmNvbQ==",):  # base64 of the user name
            assert secret not in text
    assert "[redacted]" in a.follow(0)
    # The user name, and only it, when asked for.
    assert json.loads(shown.splitlines()[0])["smtp"]["auth_user"] == "printer@contoso.com"
    assert json.loads(outputs[1].splitlines()[0])["smtp"]["auth_user"] is None


# -- fresh recordings (CI runs as root) ------------------------------------------------------------
LIVE = ["syn-dropped", "rst-forged-by-router", "icmp-admin-prohibited", "starttls-required-530", "tls10-refused-alert", "cert-unknown-ca",
        "auth-disabled-535", "tls10-accepted-421", "implicit-tls-465-ok"]


def _lab():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.lab.netns import requires_root_and_netns

    return requires_root_and_netns


try:
    _requires = _lab()()
except Exception as exc:  # pragma: no cover - the lab itself failed to import
    _requires = pytest.mark.skip(reason=f"the capture lab cannot be used: {exc}")


@_requires
@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", LIVE)
def test_fresh_recording(tmp_path, name):
    from tests.lab.scenarios import manifest_entry, record

    result = record(name, tmp_path)
    assert result.problems == [], result.problems
    entry = manifest_entry(result)
    plain = analyse_against(entry, str(result.pcap_path))
    if result.keylog_path:
        # The client's key log, written by Python's ssl during the recording, opens the dialogue.
        keyed = analyse_against(entry, str(result.pcap_path), keylog=str(result.keylog_path))
        assert keyed.stats["tls_decryption"]["decrypted"] == len([r for r in keyed.records if r["tls"]["established"]])
        assert not any(r["encrypted"] for rec in plain.records for r in (rec.get("smtp") or {}).get("replies") or [])


def test_a_capture_cut_inside_its_only_session_does_not_claim_completion(tmp_path):
    path = tmp_path / "cut.pcap"
    path.write_bytes(open(os.path.join(CAPTURES, "relay-denied-550.pcap"), "rb").read()[:1000])
    a = analyzer.analyze(str(path))
    assert [r["outcome"] for r in a.records] == ["incomplete"]
    headline = a.summary()["headline"]
    assert "completed" not in headline.split(";")[0] and "did not finish within the capture" in headline


def test_forged_rst_finding_says_where_it_came_from(entries):
    a = analyzer.analyze(os.path.join(CAPTURES, "rst-forged-by-router.pcap"))
    finding = next(f for f in a.summary()["findings"] if f["outcome"] == "reset_by_middlebox")
    assert "not by Microsoft" in finding["detail"]
    assert "0 hops away: the device where the capture was taken" in finding["detail"]  # TTL 64 as sent
