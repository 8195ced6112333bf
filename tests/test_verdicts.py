"""Each diagnosis of issue 3 on a crafted session: outcome, verdict title, remediation, evidence.

TLS bytes are real (Python's ssl over memory BIOs); TCP and addresses are crafted so the
server sits in Microsoft's published ranges. Nothing is sent anywhere.
"""

from __future__ import annotations

import ssl

import pytest

import analyzer
from crafting import (
    EXO_BANNER,
    EXO_EHLO,
    Conversation,
    dns_exchange,
    frames,
    plain_smtp_session,
    self_signed_cert,
    send_flights,
    tls_exchange,
    write_pcap,
)

TLS10 = ssl.TLSVersion.TLSv1
TLS12 = ssl.TLSVersion.TLSv1_2
TLS13 = ssl.TLSVersion.TLSv1_3


def analyse(tmp_path, packets, name="x.pcap", **kw):
    path = write_pcap(tmp_path / name, frames(sorted(packets), 1))
    return analyzer.analyze(path, **kw)


def session(tmp_path, conv, **kw):
    later = Conversation(cport=1, sport=9, t=conv.t + 60, server="198.51.100.99").syn()  # capture goes on
    a = analyse(tmp_path, conv.packets + later.packets, **kw)
    return [r for r in a.records if r["client_port"] == conv.cport][0]


def smtp_dialogue(lines, sport=587, close="client"):
    conv = Conversation(sport=sport).handshake()
    conv.smtp([("S", EXO_BANNER), ("C", b"EHLO printer.contoso.com\r\n"), ("S", EXO_EHLO)] + lines)
    if close == "client":
        conv.close_by_client()
    elif close == "server":
        conv.close_by_server()
    return conv


# -- network level -------------------------------------------------------------------------------
def test_firewall_drop_on_587(tmp_path):
    conv = Conversation()
    for dt in (0, 1, 2, 4):
        conv.syn(dt=dt)
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "syn_unanswered" and rec["microsoft"]
    v = rec["verdict"]
    assert v["title"].startswith("No answer on port 587") and v["severity"] == "error"
    assert "52.96.0.0/14" in v["remediation"] and "dropped" in v["explanation"]


def test_port_465_to_microsoft(tmp_path):
    conv = Conversation(sport=465)
    for dt in (0, 1, 2):
        conv.syn(dt=dt)
    rec = session(tmp_path, conv)
    assert rec["verdict"]["title"] == "Port 465 is not offered by Exchange Online"
    assert "587" in rec["verdict"]["remediation"]


def test_port_25_blocked(tmp_path):
    conv = Conversation(server="104.47.1.2", sport=25)
    for dt in (0, 1, 2, 4):
        conv.syn(dt=dt)
    rec = session(tmp_path, conv)
    assert rec["microsoft_service"] == "mx"
    assert "port 25" in rec["verdict"]["title"].lower() and "ISP" in rec["verdict"]["remediation"]


def test_rst_from_middlebox_versus_server(tmp_path):
    good = Conversation(cport=40001, server_ttl=115).handshake()
    forged = Conversation(cport=40002, t=good.t + 1)
    forged.syn()
    forged.server_rst(ttl=64)
    a = analyse(tmp_path, good.packets + forged.packets)
    rec = [r for r in a.records if r["client_port"] == 40002][0]
    assert rec["outcome"] == "reset_by_middlebox"
    assert rec["verdict"]["title"].startswith("A device on the path reset")
    assert "hop" in rec["verdict"]["remediation"]


def test_icmp_admin_prohibited_from_router(tmp_path):
    conv = Conversation()
    conv.syn()
    conv.icmp_from_router(3, 13, router="192.0.2.254")
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "rejected_icmp"
    assert "192.0.2.254" in rec["verdict"]["explanation"]


# -- TLS ---------------------------------------------------------------------------------------------
def starttls_then(flights, close="client"):
    conv = smtp_dialogue([("C", b"STARTTLS\r\n"), ("S", b"220 2.0.0 SMTP server ready\r\n")], close=None)
    send_flights(conv, flights)
    if close == "client":
        conv.close_by_client()
    else:
        conv.close_by_server()
    return conv


def test_tls_version_too_old(tmp_path):
    pem = self_signed_cert(tmp_path)
    flights = tls_exchange(pem, client_min=TLS10, client_max=TLS10, server_min=TLS12, seclevel0=True)
    assert any(data[0] == 0x15 for _c, data in flights), "the server must send its alert"
    rec = session(tmp_path, starttls_then(flights))
    assert rec["outcome"] == "tls_failed"
    assert rec["tls"]["client_max_version"] == "TLSv1.0"
    assert rec["tls"]["alert"] == "protocol_version" and rec["tls"]["alert_from"] == "server"
    v = rec["verdict"]
    assert v["title"].startswith("TLS version not accepted") and "TLS 1.2" in v["remediation"]
    assert "smtp-legacy.office365.com" in v["remediation"]


def test_tls_old_version_accepted_is_flagged(tmp_path):
    """Exchange accepts TLS 1.0 at the TLS layer, then answers 421 4.7.66 inside: flag it."""
    pem = self_signed_cert(tmp_path)
    flights = tls_exchange(pem, client_min=TLS10, client_max=TLS10, server_min=TLS10, seclevel0=True,
                           app_data=[(True, b"EHLO x\r\n"), (False, b"421 4.7.66 TLS 1.0 and 1.1 are not supported.\r\n")])
    rec = session(tmp_path, starttls_then(flights, close="server"))
    assert rec["tls"]["established"] and rec["tls"]["version"] == "TLSv1.0"
    v = rec["verdict"]
    assert "TLS 1.0" in v["title"] and "4.7.66" in v["title"] and v["severity"] == "error"


def test_client_rejects_certificate(tmp_path):
    pem = self_signed_cert(tmp_path)
    flights = tls_exchange(pem, client_max=TLS12, verify=True)
    rec = session(tmp_path, starttls_then(flights))
    assert rec["outcome"] == "tls_failed"
    assert rec["tls"]["alert_from"] == "client" and rec["tls"]["alert"] in ("unknown_ca", "bad_certificate", "certificate_unknown")
    v = rec["verdict"]
    assert v["title"].startswith("The client rejected the server's certificate")
    assert "DigiCert Global Root G2" in v["remediation"]


def test_tls13_completed_is_encrypted_dialogue(tmp_path):
    pem = self_signed_cert(tmp_path)
    flights = tls_exchange(pem, client_min=TLS13, app_data=[(True, b"EHLO x\r\n"), (False, b"250 ok\r\n" * 3),
                                                            (True, b"QUIT\r\n"), (False, b"221 bye\r\n")])
    rec = session(tmp_path, starttls_then(flights))
    assert rec["tls"]["established"] and rec["tls"]["version"] == "TLSv1.3" and rec["tls"]["mode"] == "starttls"
    assert rec["outcome"] == "completed"
    assert "key log" in rec["verdict"]["remediation"]


@pytest.mark.parametrize("version", [TLS12, TLS13])
def test_one_encrypted_command_then_the_end_is_inferred_as_a_refusal(tmp_path, version):
    """A client that sends one command inside TLS, gets one answer and closes without QUIT gave
    up on an error (Exchange Online's 421 4.7.66, 535 5.7.139 …): an inference, said as such."""
    pem = self_signed_cert(tmp_path)
    flights = tls_exchange(pem, client_min=version, client_max=version,
                           app_data=[(True, b"EHLO x\r\n"), (False, b"421 4.7.66 TLS 1.0 and 1.1 are not supported\r\n")])
    rec = session(tmp_path, starttls_then(flights))
    assert rec["tls"]["established"]
    assert rec["outcome"] == "closed_early"
    assert "inferred" in rec["outcome_reason"] and "cut short" in rec["outcome_reason"]
    assert rec["verdict"]["title"].startswith("Likely refused inside TLS (inferred)")
    assert "--keylog" in rec["verdict"]["remediation"]


def test_implicit_tls_on_587(tmp_path):
    pem = self_signed_cert(tmp_path)
    client_hello = tls_exchange(pem)[0][1]
    conv = Conversation().handshake()
    conv.client_sends(client_hello, dt=0.001)
    conv.server_sends(EXO_BANNER, dt=0.001)
    conv.client_rst(dt=0.01)
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "tls_failed"
    assert rec["verdict"]["title"] == "Client uses implicit TLS on the STARTTLS port 587"
    assert "implicit_tls_on_starttls_port" in rec["notes"]


# -- SMTP replies -----------------------------------------------------------------------------------------
REPLY_CASES = [
    ("MAIL before STARTTLS: 530 5.7.0", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"530 5.7.0 Must issue a STARTTLS command first\r\n")], "5.7.0", "STARTTLS"),
    ("not authenticated: 530 5.7.57", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"530 5.7.57 Client not authenticated to send mail. [X.PROD.OUTLOOK.COM]\r\n")], "5.7.57", "authenticat"),
    ("AUTH refused: 535 5.7.3", [("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"dXNlcg==\r\n"), ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"cGFzcw==\r\n"), ("S", b"535 5.7.3 Authentication unsuccessful\r\n")], "5.7.3", "Authenticat"),
    ("tenant: 535 5.7.139", [("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"dXNlcg==\r\n"), ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"cGFzcw==\r\n"), ("S", b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n")], "5.7.139", "tenant"),
    ("mailbox: 535 5.7.139", [("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"dXNlcg==\r\n"), ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"cGFzcw==\r\n"), ("S", b"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information.\r\n")], "5.7.139", "mailbox"),
    ("security defaults: 535 5.7.139", [("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"dXNlcg==\r\n"), ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"cGFzcw==\r\n"), ("S", b"535 5.7.139 Authentication unsuccessful, user is locked by your organization's security defaults policy. Contact your administrator.\r\n")], "5.7.139", "security defaults"),
    ("relay: 550 5.7.1", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"250 2.1.0 Sender OK\r\n"), ("C", b"RCPT TO:<x@fabrikam.com>\r\n"), ("S", b"550 5.7.1 Unable to relay\r\n")], "5.7.1", "relay"),
    ("connector: 550 5.7.64", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"250 2.1.0 Sender OK\r\n"), ("C", b"RCPT TO:<x@fabrikam.com>\r\n"), ("S", b"550 5.7.64 TenantAttribution; Relay Access Denied\r\n")], "5.7.64", "connector"),
    ("throttled: 451 4.7.500", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"250 2.1.0 Sender OK\r\n"), ("C", b"RCPT TO:<x@contoso.com>\r\n"), ("S", b"451 4.7.500 Server busy. Please try again later from [192.0.2.10]. (AS761)\r\n")], "4.7.500", "connector"),
    ("connection limit: 432 4.3.2", [("C", b"MAIL FROM:<a@contoso.com>\r\n"), ("S", b"432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded\r\n")], "4.3.2", "3"),
    ("Send-As denied: 554 5.2.252", [("C", b"MAIL FROM:<ceo@contoso.com>\r\n"), ("S", b"250 2.1.0 Sender OK\r\n"), ("C", b"RCPT TO:<x@contoso.com>\r\n"), ("S", b"250 2.1.5 Recipient OK\r\n"), ("C", b"DATA\r\n"), ("S", b"354 Start mail input\r\n"), ("C", b"Subject: x\r\n\r\nbody\r\n.\r\n"), ("S", b"554 5.2.252 SendAsDenied; printer@contoso.com not allowed to send as ceo@contoso.com; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied\r\n")], "5.2.252", "Send As"),
]


@pytest.mark.parametrize("name,lines,enhanced,remedy", REPLY_CASES, ids=[c[0] for c in REPLY_CASES])
def test_reply_verdicts(tmp_path, name, lines, enhanced, remedy):
    conv = smtp_dialogue(lines + [("C", b"QUIT\r\n"), ("S", b"221 2.0.0 Service closing transmission channel\r\n")])
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "smtp_error"
    assert rec["decisive_reply"]["enhanced"] == enhanced
    v = rec["verdict"]
    assert v["severity"] in ("error", "warning")
    assert remedy.lower() in (v["title"] + " " + v["remediation"] + " " + v["explanation"]).lower()
    assert any("reference:" in e for e in v["evidence"])  # the knowledge base's source is cited


def test_greeting_421_is_smtp_error(tmp_path):
    conv = Conversation().handshake()
    conv.smtp([("S", b"421 4.3.2 Service not available, closing transmission channel\r\n")])
    conv.close_by_server()
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "smtp_error" and rec["decisive_reply"]["command"] is None
    assert "as its greeting" in rec["outcome_reason"]


def test_starttls_refused(tmp_path):
    conv = smtp_dialogue([("C", b"STARTTLS\r\n"), ("S", b"454 4.7.0 TLS not available due to local problem\r\n"),
                          ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")])
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "smtp_error" and rec["decisive_reply"]["command"] == "STARTTLS"
    assert rec["smtp"]["starttls_reply"] == 454


def test_completed_plain_session_and_basic_auth_note(tmp_path):
    conv = smtp_dialogue([("C", b"AUTH LOGIN\r\n"), ("S", b"334 VXNlcm5hbWU6\r\n"), ("C", b"dXNlcg==\r\n"),
                          ("S", b"334 UGFzc3dvcmQ6\r\n"), ("C", b"cGFzcw==\r\n"), ("S", b"235 2.7.0 Authentication successful\r\n"),
                          ("C", b"QUIT\r\n"), ("S", b"221 bye\r\n")])
    rec = session(tmp_path, conv)
    assert rec["outcome"] == "completed"
    notes = " ".join(rec["verdict"].get("notes", []))
    assert "Basic auth" in notes and "without TLS" in notes


# -- capture level ------------------------------------------------------------------------------------------
def test_summary_answers_dropped_before_microsoft(tmp_path):
    packets = []
    t = 1_700_000_000.0
    for i in range(12):
        conv = Conversation(cport=41000 + i, t=t + i * 20, server=f"52.96.10.{i + 1}")
        if i < 9:
            for dt in (0, 1, 2, 4):
                conv.syn(dt=dt)
        else:
            plain_smtp_session(conv)
        packets += conv.packets
        packets += dns_exchange(t + i * 20 - 0.05, "smtp.office365.com", [("smtp.office365.com", "CNAME", "lhr-efz.ms-acdc.office.com"), ("lhr-efz.ms-acdc.office.com", "A", f"52.96.10.{i + 1}")], txid=i)
    packets += Conversation(cport=1, sport=9, t=t + 400, server="198.51.100.1").syn().packets
    a = analyse(tmp_path, packets)
    summary = a.summary()
    assert summary["dropped_before_microsoft"]["answer"] == "partly"
    assert "9 of 12" in summary["dropped_before_microsoft"]["detail"]
    top = summary["findings"][0]
    assert top["outcome"] == "syn_unanswered" and top["count"] == 9
    assert "9 of 12 connection attempt(s) to smtp.office365.com:587 got no answer; all were retried 3 time(s)" in top["detail"]
    assert "between here and Microsoft" in top["detail"]
    assert summary["headline"].startswith("9 of 13 sessions failed") or "9 of" in summary["headline"]


def test_dns_failure_before_connecting(tmp_path):
    packets = dns_exchange(1_700_000_000.0, "smtp.office365.com", [], rcode=3)
    packets += dns_exchange(1_700_000_005.0, "smtp.office365.com", [], rcode=2, txid=7)
    packets += Conversation(cport=1, sport=25, t=1_700_000_030.0, server="198.51.100.1").handshake().packets
    a = analyse(tmp_path, packets)
    findings = [f for f in a.summary()["findings"] if f["outcome"] == "dns_failure"]
    assert {f["title"] for f in findings} == {"DNS lookup of smtp.office365.com failed (NXDOMAIN)", "DNS lookup of smtp.office365.com failed (SERVFAIL)"}
    assert all("no connection to it followed" in f["detail"] for f in findings)
    assert len(a.dns) == 2 and set(a.dns["rcode"]) == {"NXDOMAIN", "SERVFAIL"}


def test_dns_names_tag_sessions_as_microsoft(tmp_path):
    server = "198.51.100.77"  # not in Microsoft's ranges: only DNS says what it is
    packets = dns_exchange(1_700_000_000.0, "smtp.office365.com", [("smtp.office365.com", "CNAME", "lhr-efz.ms-acdc.office.com"), ("lhr-efz.ms-acdc.office.com", "A", server)])
    packets += plain_smtp_session(Conversation(server=server, sport=587, t=1_700_000_001.0)).packets
    rec = analyse(tmp_path, packets).records[0]
    assert rec["microsoft"] and rec["server_name"] == "smtp.office365.com"
    dns_evidence = [e for e in rec["microsoft_evidence"] if e["source"] == "dns"]
    assert dns_evidence and "lhr-efz.ms-acdc.office.com" in dns_evidence[0]["detail"]


def test_user_endpoint_counts_as_evidence(tmp_path):
    conv = plain_smtp_session(Conversation(server="10.9.8.7", sport=25))
    conv.packets[:] = [(ts, ip.replace(b"outlook.office365.com", b"relay.contoso.local..")) for ts, ip in conv.packets]
    path = write_pcap(tmp_path / "u.pcap", frames(conv.packets, 1))
    assert not analyzer.analyze(path, checksums="off").records[0]["microsoft"]
    rec = analyzer.analyze(path, checksums="off", endpoints=["10.9.0.0/16=our relay"]).records[0]
    assert rec["microsoft"] and rec["microsoft_evidence"][0]["source"] == "user_endpoint"
