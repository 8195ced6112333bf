"""The Exchange Online knowledge data (analyzer.diagnosis.knowledge): shape, coverage, lookups."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

from analyzer.diagnosis.knowledge import (
    DATA,
    DATA_FILES,
    ReplyCatalogue,
    ReplyInfo,
    _read,
    compile_twin,
    enhanced_key,
    load_facts,
    load_replies,
)

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "exchange-online.md"

CATEGORIES = {"connection", "tls", "auth", "sender", "quota", "throttling", "relay", "antispam", "recipient", "content", "routing", "transient"}
SEVERITIES = {"error", "warning", "info"}
WHERE = {"submission", "mx", "outbound", "ndr"}
CONFIDENCES = {"official", "observed", "third-party", "decompiled", "inferred", "unconfirmed"}
REQUIRED = {"code", "title", "meaning", "remediation", "category", "severity", "where", "confidence", "source"}
OPTIONAL = {"enhanced", "enhanced_min", "enhanced_max", "match"}
ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
#: Replies whose enhanced class differs from the basic code's, as Exchange really sends them.
CLASS_MISMATCHES = {(451, "5.7.3")}


def _raw(name: str) -> dict:
    return tomllib.loads((files("analyzer") / "diagnosis" / "data" / name).read_text(encoding="utf-8"))


RAW_REPLIES = _raw("exchange_replies.toml")["reply"]


def _entry_id(table: dict) -> str:
    enhanced = table.get("enhanced") or "-".join(filter(None, (table.get("enhanced_min"), table.get("enhanced_max"))))
    return " ".join(str(part) for part in (table["code"], enhanced, table.get("match")) if part)


def _sentences(text: str) -> int:
    """Sentences in ``text``; quoted protocol strings (in backticks) count as words."""
    plain = re.sub(r"`[^`]*`", "quoted", text.strip())
    return len(re.split(r"(?<=[.!?])\s+(?=[A-Z(])", plain))


def _group(entry: ReplyInfo) -> tuple:
    return entry.code, entry.enhanced, entry.enhanced_min, entry.enhanced_max


# -- the files ----------------------------------------------------------------------------------


def test_files_parse_and_carry_version_and_source():
    replies = load_replies()
    assert isinstance(replies, ReplyCatalogue)
    assert replies.version == "2026-11-27"
    assert "exchange-online.md" in replies.source and "transcripts" in replies.source
    assert len(replies.entries) == len(RAW_REPLIES) > 100
    facts = load_facts()
    assert facts["version"] == "2026-11-27"
    assert load_replies() is replies and load_facts() is facts  # cached


@pytest.mark.parametrize("table", RAW_REPLIES, ids=_entry_id)
def test_reply_entry_fields(table):
    assert REQUIRED <= table.keys(), f"missing {REQUIRED - table.keys()}"
    assert table.keys() <= REQUIRED | OPTIONAL, f"unknown {table.keys() - REQUIRED - OPTIONAL}"
    code = table["code"]
    assert isinstance(code, int) and 400 <= code <= 599
    enhanced = [table[k] for k in ("enhanced", "enhanced_min", "enhanced_max") if k in table]
    for value in enhanced:
        assert ENHANCED.fullmatch(value), value
        assert int(value[0]) == code // 100 or (code, value) in CLASS_MISMATCHES, f"{value} does not belong to a {code} reply"
    if "enhanced" in table:
        assert "enhanced_min" not in table and "enhanced_max" not in table
    if "enhanced_min" in table or "enhanced_max" in table:
        assert enhanced_key(table["enhanced_min"]) < enhanced_key(table["enhanced_max"])
    if not enhanced:  # a generic per-code fallback
        assert table["confidence"] == "inferred" and table["where"] == [] and "match" not in table
    else:
        assert table["where"] and set(table["where"]) <= WHERE
    if "match" in table:
        assert table["match"].strip() == table["match"] and len(table["match"]) >= 3
    assert 0 < len(table["title"]) <= 70
    assert 1 <= _sentences(table["meaning"]) <= 3
    assert 1 <= _sentences(table["remediation"]) <= 4
    assert table["category"] in CATEGORIES
    assert table["severity"] in SEVERITIES
    assert table["confidence"] in CONFIDENCES
    assert table["source"].strip()


def test_no_two_entries_share_code_enhanced_and_match():
    seen = set()
    for entry in load_replies().entries:
        key = (*_group(entry), (entry.match or "").casefold())
        assert key not in seen, f"duplicate entry {key}"
        seen.add(key)


def test_specific_entries_come_before_fallbacks_and_no_variant_is_shadowed():
    entries = load_replies().entries
    first_fallback = next(i for i, e in enumerate(entries) if e.is_fallback)
    assert all(e.is_fallback for e in entries[first_fallback:])
    groups: dict[tuple, list[ReplyInfo]] = {}
    for entry in entries:
        groups.setdefault(_group(entry), []).append(entry)
    for key, group in groups.items():
        plain = [e for e in group if e.match is None]
        assert len(plain) <= 1, f"{key}: more than one entry without match"
        assert not plain or group[-1] is plain[0], f"{key}: the entry without match must come last"
        variants = [e.match.casefold() for e in group if e.match]
        for i, earlier in enumerate(variants):
            for later in variants[i + 1 :]:
                assert earlier not in later, f"{key}: {later!r} is unreachable behind {earlier!r}"


# -- coverage of the reference's reply tables ---------------------------------------------------

_ENHANCED_IN_CELL = re.compile(r"(?<![\d.])([245]\.\d{1,3}\.)(\d{1,3})((?:/\d{1,3})*)(?:\s*[–-]\s*(\d{1,3}))?(?![\d.])")
_OWN_CODE = re.compile(r"^([245]\d\d) ([245]\.\d{1,3}\.\d{1,3}) ")


def _reference_rows(markdown: str) -> list[tuple[int | None, list[str], list[str]]]:
    """(basic code or None, enhanced codes, quoted reply texts) of each row of §4.1–4.4."""
    section = markdown[markdown.index("## 4. ") : markdown.index("### 4.5")]
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] in ("Reply", "Code"):
            continue
        if len(cells) == 7:  # §4.1–4.3: Reply | Enh. | Text | Meaning | Fix | Where | Source
            code_cell, enhanced_cell, text_cell = cells[0], cells[1], cells[2]
            code = int(code_cell) if code_cell.isdigit() else None
        else:  # §4.4: Code | Text | Meaning | Source, the basic code in parentheses if known
            code_cell = enhanced_cell = cells[0]
            text_cell = cells[1]
            own = re.search(r"\((\d{3})\)", code_cell)
            code = int(own.group(1)) if own else None
        enhanced = []
        for prefix, first, more, last in _ENHANCED_IN_CELL.findall(enhanced_cell):
            enhanced.append(prefix + first)
            enhanced += [prefix + detail for detail in more.split("/") if detail]
            if last:
                enhanced.append(prefix + last)
        rows.append((code, enhanced, re.findall(r"`([^`]+)`", text_cell) or [""]))
    return rows


@pytest.fixture(scope="module")
def reference_rows():
    if not REFERENCE.parent.parent.exists():
        pytest.skip(f"the shared reference is not available ({REFERENCE.parent.parent} is absent)")
    return _reference_rows(REFERENCE.read_text(encoding="utf-8"))


def test_every_reply_in_the_reference_tables_is_covered(reference_rows):
    catalogue = load_replies()
    checked = 0
    for code, enhanced_codes, texts in reference_rows:
        for enhanced in enhanced_codes:
            codes = [code] if code is not None else sorted({e.code for e in catalogue.entries if e.covers(enhanced)})
            assert codes, f"no catalogue entry for {enhanced} (reference gives no basic code)"
            for basic in codes:
                for text in texts:
                    own = _OWN_CODE.match(text)
                    want_code, want_enhanced = (int(own.group(1)), own.group(2)) if own else (basic, enhanced)
                    info = catalogue.lookup(want_code, want_enhanced, text)
                    assert info is not None and info.covers(want_enhanced), f"{want_code} {want_enhanced} {text!r} → {info}"
                    checked += 1
    assert checked > 80  # the table extraction did find the rows


def test_rows_sharing_a_code_select_different_variants(reference_rows):
    catalogue = load_replies()
    chosen: dict[tuple[int, str], dict[int, str]] = {}
    for code, enhanced_codes, texts in reference_rows:
        if code is None or not enhanced_codes:
            continue
        info = catalogue.lookup(code, enhanced_codes[0], texts[0])
        chosen.setdefault((code, enhanced_codes[0]), {})[id(info)] = texts[0]
    rows_per_key: dict[tuple[int, str], int] = {}
    for code, enhanced_codes, _ in reference_rows:
        if code is not None and enhanced_codes:
            rows_per_key[(code, enhanced_codes[0])] = rows_per_key.get((code, enhanced_codes[0]), 0) + 1
    for key, count in rows_per_key.items():
        assert len(chosen[key]) == count, f"{key}: {count} reference rows but only {sorted(chosen[key].values())} told apart"
    assert rows_per_key[(535, "5.7.139")] == 7


# -- lookups ------------------------------------------------------------------------------------

LOOKUPS = [
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [SN4PR0501CA0056.namprd05.prod.outlook.com]", "5.7.139", "disabled for the Tenant"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.", "5.7.139", "disabled for the Mailbox"),
    (535, "5.7.139", "5.7.139 AUTHENTICATION UNSUCCESSFUL, SMTPCLIENTAUTHENTICATION IS DISABLED FOR THE TENANT.", "5.7.139", "disabled for the Tenant"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.", "5.7.139", "security defaults"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, the request did not meet the criteria to be authenticated successfully. Contact your administrator.", "5.7.139", "did not meet the criteria"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, basic authentication is disabled. [AS4P251CA0014.EURP251.PROD.OUTLOOK.COM 2024-10-26T08:00:00.000Z 08DCF5B1A1B2C3D4]", "5.7.139", "basic authentication is disabled"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, the user credentials were incorrect.", "5.7.139", "credentials were incorrect"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, the federated STS service was unreachable.", "5.7.139", "federated STS"),
    (535, "5.7.139", "5.7.139 Authentication unsuccessful, something new", "5.7.139", None),
    (535, "5.7.3", "5.7.3 Authentication unsuccessful [YQZPR01CA0021.CANPRD01.PROD.OUTLOOK.COM 2024-04-13T15:44:48.786Z 08DC5BA2C153C1D0]", "5.7.3", None),
    (530, "5.7.57", "5.7.57 Client not authenticated to send mail. [BN6PR03CA0021.namprd03.prod.outlook.com]", "5.7.57", None),
    (451, "4.7.512", "4.7.512 Server busy. Please try again later from [203.0.113.9]. (AS843)", "4.7.500-4.7.699", None),
    (451, "4.7.500", "4.7.500 Server busy. Please try again later from [203.0.113.9]. (AS843)", "4.7.500-4.7.699", None),
    (451, "4.7.699", "4.7.699 Access denied, please try again later", "4.7.500-4.7.699", None),
    (451, "4.7.700", "4.7.700 PFA agent busy, please try again.", "4.7.700", None),
    (550, "5.7.620", "5.7.620 Access denied, banned sending IP [203.0.113.9]. To request removal from this list please visit https://sender.office.com/", "5.7.606-5.7.649", None),
    (454, "4.7.0", "4.7.0 Temporary authentication failure because negotiated Tls cipher strength is too weak", "4.7.0", "cipher strength is too weak"),
    (454, "4.7.0", "4.7.0 Temporary authentication failure", "4.7.0", "Temporary authentication failure"),
    (550, "5.7.64", "5.7.64 TenantAttribution; Relay Access Denied [DM3NAM03FT001.eop-NAM03.prod.protection.outlook.com]", "5.7.64", "TenantAttribution"),
    (550, "5.7.64", "5.7.64 Relay Access Denied ATTR36", "5.7.64", "ATTR36"),
    (550, "5.7.1", "5.7.1 Unable to relay", "5.7.1", "Unable to relay"),
    (550, "5.7.1", "5.7.1 Unable to Relay. ATTR14", "5.7.1", "ATTR"),
    (554, "5.2.252", "5.2.252 SendAsDenied; printer@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied", "5.2.252", None),
    (432, "4.3.2", "4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname=BY1PR10MB0001.namprd10.prod.outlook.com]", "4.3.2", "sender thread limit"),
    (421, "4.7.66", "4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls [MAXPR0101CA0021.INDPRD01.PROD.OUTLOOK.COM]", "4.7.66", None),
    (452, "4.5.3", "4.5.3 Too many recipients", "4.5.3", None),
    # no enhanced code given (the SMTP parser drops one of the wrong class): taken from the text
    (451, None, "5.7.3 STARTTLS is required to send mail [DB8PR01MB0001.eurprd01.prod.exchangelabs.com]", "5.7.3", "STARTTLS is required to send mail"),
    (535, None, "5.7.139 Authentication unsuccessful, the user credentials were incorrect.", "5.7.139", "credentials were incorrect"),
]


def _enhanced_of(info: ReplyInfo) -> str | None:
    return info.enhanced or (f"{info.enhanced_min}-{info.enhanced_max}" if info.enhanced_min else None)


@pytest.mark.parametrize(("code", "enhanced", "text", "want_enhanced", "want_match"), LOOKUPS, ids=[f"{c} {t[:48]}" for c, _, t, _, _ in LOOKUPS])
def test_lookup_picks_the_most_specific_entry(code, enhanced, text, want_enhanced, want_match):
    info = load_replies().lookup(code, enhanced, text)
    assert info is not None
    assert (info.code, _enhanced_of(info), info.match) == (code, want_enhanced, want_match)


@pytest.mark.parametrize(
    ("code", "enhanced", "text"),
    [
        (550, "5.9.9", "5.9.9 odd"),  # an enhanced code nobody knows
        (550, None, "Mailbox unavailable"),  # a server without enhanced status codes
        (550, "5.7", "5.7 malformed"),  # not class.subject.detail: ignored
        (550, "5.7.1", "5.7.1 Message rejected as spam by Content Filtering."),  # 5.7.1 variants, none hits
        (535, "5.7.8", "5.7.8 Error: authentication failed"),  # a non-Microsoft server
        (451, "4.7.1", "4.7.1 Greylisted"),  # same class as the 4.7.500-699 range, outside it
    ],
)
def test_lookup_falls_back_to_the_codes_generic_entry(code, enhanced, text):
    info = load_replies().lookup(code, enhanced, text)
    assert info is not None and info.is_fallback and info.code == code
    assert info.confidence == "inferred" and info.where == ()


def test_lookup_of_an_unknown_code_is_none():
    assert load_replies().lookup(599, "5.0.0", "5.0.0 whatever") is None
    assert load_replies().lookup(250, "2.0.0", "2.0.0 OK") is None


def test_ranges_compare_each_part_numerically():
    catalogue = load_replies()
    assert enhanced_key("4.7.512") == (4, 7, 512)
    assert enhanced_key("4.7.50") < enhanced_key("4.7.500") < enhanced_key("4.7.512") < enhanced_key("4.7.699")
    assert enhanced_key("5.7") is None and enhanced_key("a.b.c") is None
    # as text "4.7.6" > "4.7.500"; numerically it is below the range
    assert catalogue.lookup(451, "4.7.6", "4.7.6 x").is_fallback
    assert catalogue.lookup(451, "4.7.850", "x").enhanced_min == "4.7.850"


def test_catalogue_rejects_inconsistent_entries():
    base = dict(title="t", meaning="m.", remediation="r.", category="tls", severity="error", where=("mx",), confidence="official", source="s")
    with pytest.raises(ValueError, match="not both"):
        ReplyCatalogue("v", "s", [ReplyInfo(code=550, enhanced="5.7.1", enhanced_min="5.7.1", enhanced_max="5.7.2", **base)])
    with pytest.raises(ValueError, match="needs both"):
        ReplyCatalogue("v", "s", [ReplyInfo(code=550, enhanced_min="5.7.1", **base)])
    with pytest.raises(ValueError, match="not an enhanced status code"):
        ReplyCatalogue("v", "s", [ReplyInfo(code=550, enhanced="5.7.x", **base)])


def test_reply_info_is_frozen():
    info = load_replies().entries[0]
    with pytest.raises(AttributeError):
        info.title = "changed"  # type: ignore[misc]


# -- the facts ---------------------------------------------------------------------------------


def _walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}[{i}]")


def test_every_fact_names_its_source_and_confidence():
    facts = load_facts()
    for path, table in _walk(facts):
        if path and ("fact" in table or "source" in table or "confidence" in table):
            assert table.get("source", "").strip(), f"{path} has no source"
            assert table.get("confidence") in CONFIDENCES, f"{path}: confidence {table.get('confidence')!r}"
    for name, table in facts["tls"].items():
        if name != "timeline":
            assert {"fact", "source", "confidence"} <= table.keys(), name
    assert facts["tls"]["minimum_submission"]["minimum"] == "TLSv1.2"
    assert facts["tls"]["tls13"]["confidence"] == "unconfirmed"
    assert facts["tls"]["legacy_refused"]["reply"].startswith("421 4.7.66 ")
    assert facts["tls"]["legacy_endpoint"]["setting"] == "Set-TransportConfig -AllowLegacyTLSClients $true"


def test_endpoints_match_the_published_data():
    endpoints = load_facts()["endpoints"]
    assert (endpoints["version"], endpoints["published"]) == ("2025043000", "2025-04-30")
    services = {s["id"]: s for s in endpoints["service"]}
    assert sorted(services) == [2, 9, 10]
    assert {s["role"] for s in services.values()} == {"submission", "mx", "protection"}
    assert services[2]["tcp_ports"] == [587, 993, 995, 143] and "smtp.office365.com" in services[2]["hosts"]
    assert services[10]["tcp_ports"] == [25] and set(services[10]["hosts"]) == {"*.mail.protection.outlook.com", "*.mx.microsoft"}
    for service in services.values():
        assert {"name", "hosts", "tcp_ports", "ipv4", "ipv6", "role", "notes", "source", "confidence"} <= service.keys()
        for cidr in service["ipv4"]:
            assert ipaddress.ip_network(cidr).version == 4  # strict: no host bits set
        for cidr in service["ipv6"]:
            assert ipaddress.ip_network(cidr).version == 6
    networks = {ipaddress.ip_network(c) for s in services.values() for c in s["ipv4"] + s["ipv6"]}
    for cidr in ("40.96.0.0/13", "52.96.0.0/14", "40.92.0.0/15", "104.47.0.0/17", "2603:1036::/36", "2a01:111:f400::/48"):
        assert ipaddress.ip_network(cidr) in networks, cidr
    assert set(services[10]["ipv4"] + services[10]["ipv6"]) <= set(services[9]["ipv4"] + services[9]["ipv6"])
    observed = ipaddress.ip_address("52.96.164.146")  # outlook.office365.com, 2026-08
    assert any(observed in ipaddress.ip_network(c) for c in services[2]["ipv4"])


def test_names_and_ports():
    facts = load_facts()
    names = facts["names"]
    assert all(s.startswith(".") and s == s.lower() for s in names["microsoft_suffixes"])
    for required in (".outlook.office365.com", ".protection.outlook.com", ".outlook.com", ".mx.microsoft", ".office365.com"):
        assert required in names["microsoft_suffixes"]
    assert names["submission_hosts"] == ["smtp.office365.com"]
    assert names["consumer_hosts"] == ["smtp-mail.outlook.com"] and names["government_hosts"] == ["smtp.office365.us"]
    legacy = {entry["host"]: entry for entry in names["legacy_hosts"]}
    assert {"smtp-legacy.office365.com", "mail.messaging.microsoft.com", "mail.global.frontbridge.com"} <= legacy.keys()
    assert all(entry["note"].strip() for entry in legacy.values())
    assert set(facts["ports"]) == {"25", "465", "587", "2525"}
    for port in facts["ports"].values():
        assert {"submission", "mx", "confidence", "source"} <= port.keys()
    assert "Not supported" in facts["ports"]["465"]["submission"]


BANNER_SAMPLES = [
    ("exo_greeting", "SY5P282CA0097.outlook.office365.com Microsoft ESMTP MAIL Service ready at Sun, 23 Nov 2025 11:12:20 +0000 [08DE2A6028D26C22]", {"node": "SY5P282CA0097", "session": "08DE2A6028D26C22"}),
    ("exo_greeting", "CH3PEPF00000015.mail.protection.outlook.com Microsoft ESMTP MAIL Service ready at Sun, 22 Jun 2025 05:58:00 +0000 [08DDB07650EC6878]", {"domain": "mail.protection.outlook.com"}),
    ("exo_greeting", "BL2NAM06FT004.mail.protection.outlook.com Microsoft ESMTP MAIL Service ready at Thu, 26 Sep 2019 10:00:00 +0000", {"session": None}),
    ("ehlo_host", "SY5P282CA0097.outlook.office365.com Hello [172.105.184.101]", {"client": "172.105.184.101"}),
    ("reply_trailer", "5.7.3 Authentication unsuccessful [YQZPR01CA0021.CANPRD01.PROD.OUTLOOK.COM 2024-04-13T15:44:48.786Z 08DC5BA2C153C1D0]", {"node": "YQZPR01CA0021", "region": "CANPRD01"}),
    ("reply_trailer", "x [CH3PEPF00000015.namprd21.prod.outlook.com 2025-06-22T05:58:01.072Z 08DDB07650EC6878]", {"region": "namprd21"}),
    ("reply_trailer", "x [BL2NAM06FT004.Eop-nam06.prod.protection.outlook.com]", {"region": "Eop-nam06", "time": None}),
    ("exchange_family", "mail.contoso.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jun 2026 10:00:00 +0200", {}),
    ("client_access_node", "BLUPR02CA041", {}),
    ("protection_node", "AM5EUR02FT017", {}),
    ("protection_node", "CH3PEPF00000015", {}),
    ("outbound_helo", "NAM12-DM6-obe.outbound.protection.outlook.com", {}),
]


@pytest.mark.parametrize(("name", "sample", "groups"), BANNER_SAMPLES, ids=[f"{n}:{s[:30]}" for n, s, _ in BANNER_SAMPLES])
def test_banner_patterns_match_observed_samples(name, sample, groups):
    match = re.search(load_facts()["banners"][name]["pattern"], sample)
    assert match is not None
    for group, value in groups.items():
        assert match.group(group) == value


def test_banner_patterns_reject_look_alikes():
    banners = load_facts()["banners"]
    on_prem = "mail.contoso.com Microsoft ESMTP MAIL Service ready at Mon, 1 Jun 2026 10:00:00 +0200"
    assert re.search(banners["exo_greeting"]["pattern"], on_prem) is None
    assert re.search(banners["client_access_node"]["pattern"], "CH3PEPF00000015") is None
    assert re.search(banners["protection_node"]["pattern"], "SY5P282CA0097") is None


SYMPTOM_KEYS = {
    "port_465_unanswered", "port_587_or_25_blocked", "implicit_tls_on_587", "tls_too_old", "client_rejected_certificate",
    "untrusted_root_450", "auth_before_starttls", "not_authenticated_530", "auth_refused_535", "send_as_denied",
    "connection_limit_432", "relay_connector_mismatch", "ip_throttled_451", "encrypted_replies_need_keylog",
}


def test_symptoms():
    symptoms = load_facts()["symptom"]
    keys = [s["key"] for s in symptoms]
    assert len(keys) == len(set(keys)) and set(keys) == SYMPTOM_KEYS
    catalogue = load_replies()
    for symptom in symptoms:
        assert re.fullmatch(r"[a-z0-9_]+", symptom["key"])
        for field in ("symptom", "cause", "remediation", "source"):
            assert symptom[field].strip(), (symptom["key"], field)
        assert symptom["confidence"] in CONFIDENCES
        # every reply a symptom names has its own catalogue entry
        for code, enhanced in re.findall(r"\b([45]\d\d) ([45]\.\d{1,3}\.\d{1,3})\b", symptom["symptom"] + " " + symptom["cause"]):
            assert any(e.code == int(code) and e.covers(enhanced) for e in catalogue.entries), (symptom["key"], code, enhanced)


def test_auth_retirement_timeline():
    retirement = load_facts()["auth_retirement"]
    timeline = retirement["timeline"]
    assert all({"date", "event", "source", "confidence"} <= entry.keys() for entry in timeline)
    assert timeline[-1]["date"] == "2026-01-27"
    assert "2026-01-27" in retirement["current"] and "2027" in retirement["current"]


# -- the compiled JSON twins of the TOML files ---------------------------------------------------
@pytest.mark.parametrize("name", DATA_FILES)
def test_shipped_json_twin_is_compiled_from_the_shipped_toml(name):
    """After editing a TOML file, run `python -m analyzer.diagnosis.knowledge` and commit the JSON."""
    twin = DATA / (name.removesuffix(".toml") + ".json")
    assert twin.read_text(encoding="utf-8") == compile_twin(name), f"{twin} is stale: rewrite it"
    assert _read(name) == _raw(name)


def _data_dir(tmp_path: Path, toml_text: str, twin_text: str | None) -> Path:
    (tmp_path / "facts.toml").write_text(toml_text, encoding="utf-8")
    if twin_text is not None:
        (tmp_path / "facts.json").write_text(twin_text, encoding="utf-8")
    return tmp_path


def _older_twin(directory: Path) -> str:
    """A twin compiled before the TOML was edited from 41 to 42."""
    current = (directory / "facts.toml").read_text(encoding="utf-8")
    (directory / "facts.toml").write_text("answer = 41\n", encoding="utf-8")
    twin = compile_twin("facts.toml", directory)
    (directory / "facts.toml").write_text(current, encoding="utf-8")
    assert '"answer": 41' in twin
    return twin


TWIN_CASES = [
    # (what the directory holds, what _read must return)
    ("current twin", lambda d: compile_twin("facts.toml", d), {"answer": 42}),
    ("no twin", lambda d: None, {"answer": 42}),
    ("twin of an older TOML", lambda d: _older_twin(d), {"answer": 42}),
    ("damaged twin", lambda d: "{not json", {"answer": 42}),
    ("twin without data", lambda d: json.dumps({"toml_sha256": hashlib.sha256(b"answer = 42\n").hexdigest()}), {"answer": 42}),
]


@pytest.mark.parametrize("case, twin, expected", TWIN_CASES, ids=[c[0] for c in TWIN_CASES])
def test_read_uses_the_twin_only_when_it_matches_the_toml(tmp_path, case, twin, expected):
    directory = _data_dir(tmp_path, "answer = 42\n", None)
    text = twin(directory)
    if text is not None:
        (directory / "facts.json").write_text(text, encoding="utf-8")
    assert _read("facts.toml", directory) == expected


def test_read_takes_the_data_from_a_matching_twin(tmp_path):
    """The twin is really what is read (not the TOML again): a matching twin with other data wins."""
    directory = _data_dir(tmp_path, "answer = 42\n", None)
    digest = hashlib.sha256(b"answer = 42\n").hexdigest()
    (directory / "facts.json").write_text(json.dumps({"toml_sha256": digest, "data": {"answer": "from the twin"}}), encoding="utf-8")
    assert _read("facts.toml", directory) == {"answer": "from the twin"}
