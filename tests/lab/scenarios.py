"""The table of capture scenarios, the recorder, and a wire check of what was recorded.

A :class:`Scenario` says how the lab is set up (firewall rules, sysctls, server behaviour, DNS
failures), what the clients do (phases of sessions, a topology change between phases), where the
capture is taken (the router's client-side veth — a gateway capture — or ``-i any`` on the client
for Linux cooked v2), and the **expected facts** an analyzer must find, in the analyzer's JSON
field names.

:func:`record` builds the namespaces, runs everything, and then checks the facts against the
recording in two independent ways: the wire (a small scapy reading of the pcap: SYN counts, who
sent each RST by its TTL, ICMP, SMTP replies in clear, TLS hello versions and clear alerts, Zeek's
``conn_state``) and the clients' own transcripts (the replies they received inside TLS). Any
mismatch is reported in ``RecordResult.problems``: a fact that isn't on the wire never gets into
the manifest silently.

Field conventions of the facts (shared with ``captures/manifest.json``): TLS versions are
``"TLSv1.0"`` … ``"TLSv1.3"``; alerts use the RFC 8446 names (``protocol_version``,
``unknown_ca``); ``rst_from`` is ``server`` (TTL 127: the server host), ``middlebox`` (TTL 64 with
the server's address: forged on the path) or ``client``; ``conn_state`` is Zeek's.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .clients import LAB_PASSWORD, LAB_USER
from .netns import (ROUTER_LAN_V4, ROUTER_LAN_V6, SERVER_V4,
                    SERVICE_ADDRESSES, LabError, Topology)

ROOT = Path(__file__).resolve().parents[2]
EXO4, EXO6 = SERVICE_ADDRESSES["exo"]
MX4, MX6 = SERVICE_ADDRESSES["mx"]
RELAY4, RELAY6 = SERVICE_ADDRESSES["relay"]
SUBMISSION = "smtp.office365.com"
MX_HOST = "contoso-com.mail.protection.outlook.com"
RELAY_HOST = "relay.contoso.com"
SMTP_PORTS = (25, 465, 587)
SERVER_TTL, ROUTER_TTL = 127, 64    # as they arrive at the router's / client's capture point

CREDENTIALS = {"username": LAB_USER, "password": LAB_PASSWORD}
FULL = ["ehlo", "starttls", "ehlo", "auth", "mail", "rcpt", "data", "quit"]
PLAIN_MAIL = ["ehlo", "mail", "rcpt", "data", "quit"]


# --- building blocks ----------------------------------------------------------------------------

def exo(port: int = 587, **behaviour) -> dict:
    """The smtp.office365.com front end (SMTP AUTH after STARTTLS, MAIL needs AUTH)."""
    b = {"persona": "exo", "auth": "ok", "require_auth": True, "tls_max": "TLSv1.2", **behaviour}
    return {"addresses": [EXO4, EXO6], "port": port, "cert": "exo", "behaviour": b}


def mx(port: int = 25, **behaviour) -> dict:
    """The tenant MX contoso-com.mail.protection.outlook.com."""
    b = {"persona": "mx", **behaviour}
    return {"addresses": [MX4, MX6], "port": port, "cert": "mx", "behaviour": b}


def relay(port: int, **behaviour) -> dict:
    """relay.contoso.com, a Postfix relay (not Microsoft)."""
    b = {"persona": "postfix", **behaviour}
    return {"addresses": [RELAY4, RELAY6], "port": port, "cert": "relay", "behaviour": b}


def submit(**kw) -> dict:
    """A device submitting to smtp.office365.com:587 with STARTTLS and AUTH LOGIN."""
    return {"name": "submit", "host": SUBMISSION, "port": 587, "tls": "starttls", "steps": FULL,
            **kw}


def to_mx(**kw) -> dict:
    """An application server relaying through the tenant MX on port 25 (direct send)."""
    return {"name": "mx", "host": MX_HOST, "port": 25, "helo": "app01.contoso.com",
            "mail_from": "noreply@contoso.com", "steps": PLAIN_MAIL, **kw}


@dataclass(frozen=True)
class FromCapture:
    """A fact that legitimately varies between recordings (a race on the wire): the recorder
    checks the captured value with ``ok`` and writes that value, for that file, into the facts."""

    ok: Callable[[object], bool]
    why: str


def _fits(expected, got) -> bool:
    return expected.ok(got) if isinstance(expected, FromCapture) else expected == got


def tls(attempted: bool = True, **facts) -> dict:
    out = {"attempted": attempted}
    out.update(facts)
    return out


NO_TLS = {"attempted": False}


def session(server: str, port: int, **facts) -> dict:
    return {"server": server, "server_port": port, **facts}


def dns_ok(name: str, a: list[str], aaaa: list[str]) -> list[dict]:
    return [{"qname": name, "qtype": "A", "rcode": "NOERROR", "addresses": a},
            {"qname": name, "qtype": "AAAA", "rcode": "NOERROR", "addresses": aaaa}]


DNS_EXO = dns_ok(SUBMISSION, [EXO4], [EXO6])
DNS_MX = dns_ok(MX_HOST, [MX4], [])
DNS_RELAY = dns_ok(RELAY_HOST, [RELAY4], [RELAY6])


@dataclass
class Phase:
    """Sessions run by one client process; ``before`` changes the topology first."""

    sessions: list[dict]
    parallel: bool = False
    before: Callable[[Topology], None] | None = None
    budget: float = 40.0


@dataclass
class Scenario:
    name: str
    description: str
    how: str
    verdict: str
    listeners: list[dict]
    phases: list[Phase]
    sessions: list[dict]                       # expected facts, in order of first SYN
    dns: list[dict] = field(default_factory=list)
    firewall: Callable[[Topology], None] | None = None
    client_sysctls: dict = field(default_factory=dict)
    capture: str = "gateway"                   # gateway | client-any
    dns_failures: dict = field(default_factory=dict)
    extra_client_v4: list[str] = field(default_factory=list)
    udp_echo: list = field(default_factory=list)
    tcp_hello: list = field(default_factory=list)

    @property
    def writes_keylog(self) -> bool:
        return any(s.get("keylog") for p in self.phases for s in p.sessions)


SCENARIOS: dict[str, Scenario] = {}


def _add(sc: Scenario) -> None:
    assert sc.name not in SCENARIOS, sc.name
    SCENARIOS[sc.name] = sc


EXPONENTIAL_SYN = {"net.ipv4.tcp_syn_retries": 3, "net.ipv4.tcp_syn_linear_timeouts": 0}

# --- the scenarios ------------------------------------------------------------------------------

_add(Scenario(
    name="starttls-auth-ok",
    description="Successful submission: banner, EHLO, STARTTLS, TLS 1.2, then (encrypted) EHLO, "
                "AUTH LOGIN 235, MAIL, RCPT, DATA 250, QUIT 221.",
    how="Gateway capture. Client smtplib with STARTTLS and AUTH LOGIN (fake credentials) to "
        "smtp.office365.com:587; server Exchange-Online persona limited to TLS 1.2; NSS key log.",
    verdict="completed (mail accepted)",
    listeners=[exo()],
    phases=[Phase([submit(keylog=True)])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 220],
                      encrypted_replies=[250, 334, 334, 235, 250, 250, 354, 250, 221],
                      tls=tls(established=True, version="TLSv1.2", client_max_version="TLSv1.3",
                              alert=None),
                      lab={"credentials_inside_tls": CREDENTIALS})],
    dns=DNS_EXO,
))

_add(Scenario(
    name="syn-dropped",
    description="Every SYN to smtp.office365.com:587 is dropped on the path; exponential backoff: "
                "SYNs at 0, 1, 3, 7 s, the kernel gives up at 15 s.",
    how="Gateway capture. Router FORWARD: -p tcp --syn --dport 587 -j DROP. Client namespace: "
        "tcp_syn_retries=3, tcp_syn_linear_timeouts=0.",
    verdict="syn_unanswered (dropped before it reached the server)",
    listeners=[exo()],
    firewall=lambda t: t.drop_syn(587),
    client_sysctls=EXPONENTIAL_SYN,
    phases=[Phase([submit(name="dropped")])],
    sessions=[session(EXO4, 587, conn_state="S0", outcome="syn_unanswered", syn_count_min=4,
                      rst_from=None, smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="syn-dropped-linear",
    description="Same drop with the kernel's default linear SYN timeouts (6.7+): SYNs at 0, 1, 2, "
                "3, 4, 5, 7, 11 s — eight SYNs — then the kernel gives up at 15 s.",
    how="Gateway capture. Router drops SYNs to 587. Client namespace: tcp_syn_retries=3, "
        "tcp_syn_linear_timeouts left at its default (4).",
    verdict="syn_unanswered",
    listeners=[exo()],
    firewall=lambda t: t.drop_syn(587),
    client_sysctls={"net.ipv4.tcp_syn_retries": 3},
    phases=[Phase([submit(name="dropped")])],
    sessions=[session(EXO4, 587, conn_state="S0", outcome="syn_unanswered", syn_count_min=8,
                      rst_from=None, smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="rst-forged-by-router",
    description="One good session (EHLO/QUIT; the server's packets arrive with TTL 127), then the "
                "router starts rejecting port 587 with a forged RST (TTL 64) on the next attempt.",
    how="Gateway capture. Phase 1: plain EHLO+QUIT to smtp.office365.com:587. Phase 2: router "
        "FORWARD -p tcp --dport 587 -j REJECT --reject-with tcp-reset, client tries again.",
    verdict="reset_by_middlebox (RST forged on the path: TTL 64 vs the server's 127)",
    listeners=[exo()],
    phases=[Phase([submit(name="probe", tls="none", steps=["ehlo", "quit"])]),
            Phase([submit(name="after-reject", tls="none", steps=["ehlo", "quit"])],
                  before=lambda t: t.reject_with_reset(587))],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 221], tls=NO_TLS),
              session(EXO4, 587, conn_state="REJ", outcome="reset_by_middlebox", syn_count_min=1,
                      rst_from="middlebox", smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="rst-from-server",
    description="Nothing listens on smtp.office365.com:587; the server host's kernel answers the "
                "SYN with RST/ACK (TTL 127).",
    how="Gateway capture. The server namespace runs only the MX listener (port 25).",
    verdict="rejected_rst (port closed on the server itself)",
    listeners=[mx()],
    phases=[Phase([submit(name="refused")])],
    sessions=[session(EXO4, 587, conn_state="REJ", outcome="rejected_rst", syn_count_min=1,
                      rst_from="server", smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="icmp-admin-prohibited",
    description="The router rejects port 587 with ICMP administratively prohibited: type 3 code "
                "13 over IPv4, then ICMPv6 type 1 code 1 for a second attempt over IPv6. (Linux "
                "takes an ICMP error that arrives while connect() still holds the socket as a "
                "soft error and sends one more SYN 1 s later, so a session may show 2 SYNs.)",
    how="Gateway capture. Router: iptables REJECT --reject-with icmp-admin-prohibited and "
        "ip6tables REJECT --reject-with icmp6-adm-prohibited for TCP to 587.",
    verdict="rejected_icmp (a firewall on the path forbids it)",
    listeners=[exo()],
    firewall=lambda t: (t.reject_with_icmp(587, family=4), t.reject_with_icmp(587, family=6)),
    phases=[Phase([submit(name="v4"), submit(name="v6", family=6)])],
    sessions=[session(EXO4, 587, conn_state="S0", outcome="rejected_icmp", syn_count_min=1,
                      rst_from=None, icmp={"type": 3, "code": 13}, smtp_replies=[], tls=NO_TLS),
              session(EXO6, 587, conn_state="S0", outcome="rejected_icmp", syn_count_min=1,
                      rst_from=None, icmp={"type": 1, "code": 1}, smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="starttls-required-530",
    description="Port 25 to the tenant MX: MAIL FROM without STARTTLS is answered "
                "530 5.7.0 Must issue a STARTTLS command first; the client QUITs.",
    how="Gateway capture. MX persona with require_tls; client plain EHLO, MAIL, then QUIT.",
    verdict="smtp_error 530 5.7.0 (TLS required by the receiving side)",
    listeners=[mx(require_tls=True)],
    phases=[Phase([to_mx()])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 530, 221], tls=NO_TLS)],
    dns=DNS_MX,
))

_add(Scenario(
    name="auth-disabled-535",
    description="STARTTLS then AUTH LOGIN answered 535 5.7.139 (SmtpClientAuthentication "
                "disabled for the tenant), inside TLS 1.3; the client QUITs.",
    how="Gateway capture. Exchange-Online persona, auth=disabled, TLS 1.3; NSS key log.",
    verdict="without keys: completed (TLS then a normal close); with keys: smtp_error 535 5.7.139",
    listeners=[exo(auth="disabled", tls_max=None)],
    phases=[Phase([submit(keylog=True)])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="completed",
                      expected_with_keys="smtp_error", syn_count_min=1, rst_from=None,
                      smtp_replies=[220, 250, 220], encrypted_replies=[250, 334, 334, 535, 221],
                      tls=tls(established=True, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert=None),
                      lab={"credentials_inside_tls": CREDENTIALS})],
    dns=DNS_EXO,
))

_add(Scenario(
    name="not-authenticated-530-5.7.57",
    description="STARTTLS (TLS 1.2), no AUTH, MAIL FROM answered 530 5.7.57 Client not "
                "authenticated to send mail (encrypted); the client QUITs.",
    how="Gateway capture. Exchange-Online persona requiring AUTH; client skips AUTH; NSS key log.",
    verdict="without keys: completed; with keys: smtp_error 530 5.7.57",
    listeners=[exo()],
    phases=[Phase([submit(steps=["ehlo", "starttls", "ehlo", "mail", "rcpt", "data", "quit"],
                          keylog=True)])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="completed",
                      expected_with_keys="smtp_error", syn_count_min=1, rst_from=None,
                      smtp_replies=[220, 250, 220], encrypted_replies=[250, 530, 221],
                      tls=tls(established=True, version="TLSv1.2", client_max_version="TLSv1.3",
                              alert=None))],
    dns=DNS_EXO,
))

_add(Scenario(
    name="relay-denied-550",
    description="Port 25 to the MX in clear: MAIL 250, RCPT to an external address "
                "550 5.7.64 TenantAttribution; Relay Access Denied; QUIT.",
    how="Gateway capture. MX persona with rcpt=relay_denied (non-contoso.com recipients).",
    verdict="smtp_error 550 5.7.64 (connector/attribution: relay to external recipients denied)",
    listeners=[mx(rcpt="relay_denied")],
    phases=[Phase([to_mx(rcpt_to=["orders@fabrikam.com"])])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 250, 550, 221], tls=NO_TLS)],
    dns=DNS_MX,
))

_add(Scenario(
    name="auth-before-tls-plaintext",
    description="A Postfix relay that accepts AUTH in clear on 587: AUTH LOGIN 334/334, the fake "
                "credentials in base64 on the wire, 535 5.7.3; QUIT. Proves redaction.",
    how="Gateway capture. relay.contoso.com (Postfix persona, AUTH offered before TLS, auth fails); "
        "client plain AUTH LOGIN with printer@contoso.com / Hunter2-NotReal!.",
    verdict="smtp_error 535 5.7.3, credentials exposed in clear (must be redacted)",
    listeners=[relay(587, auth="fail", auth_before_tls=True)],
    phases=[Phase([{"name": "plain-auth", "host": RELAY_HOST, "port": 587, "tls": "none",
                    "steps": ["ehlo", "auth", "mail", "rcpt", "data", "quit"]}])],
    sessions=[session(RELAY4, 587, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 334, 334, 535, 221], tls=NO_TLS,
                      credentials=CREDENTIALS)],
    dns=DNS_RELAY,
))

_add(Scenario(
    name="tls10-refused-alert",
    description="A TLS 1.0-only client does STARTTLS on the MX, whose TLS minimum is 1.2: the "
                "server answers the ClientHello with a fatal protocol_version alert.",
    how="Gateway capture. MX persona tls_min=TLSv1.2 (alert flushed before the close, see "
        "exchange.AlertFlushingSSLProtocol); client min=max=TLSv1, ciphers @SECLEVEL=0.",
    verdict="tls_failed (protocol_version: client only speaks TLS 1.0)",
    listeners=[mx()],
    phases=[Phase([to_mx(tls="starttls", tls_min="TLSv1", tls_max="TLSv1",
                         steps=["ehlo", "starttls", "ehlo", "mail", "rcpt", "data", "quit"])])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="tls_failed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 220],
                      tls=tls(established=False, client_max_version="TLSv1.0",
                              alert="protocol_version", alert_from="server"))],
    dns=DNS_MX,
))

_add(Scenario(
    name="tls10-accepted-421",
    description="TLS 1.0 client on smtp.office365.com:587: the handshake succeeds, then the first "
                "command inside TLS gets 421 4.7.66 TLS 1.0 and 1.1 are not supported, and the "
                "server closes (Exchange Online's real behaviour).",
    how="Gateway capture. Exchange-Online persona tls_min=TLSv1, legacy_tls=421; client "
        "min=max=TLSv1 with @SECLEVEL=0; NSS key log.",
    verdict="without keys: closed_early (server closes right after TLS 1.0 came up); "
            "with keys: smtp_error 421 4.7.66",
    listeners=[exo(tls_min="TLSv1", legacy_tls="421")],
    phases=[Phase([submit(tls_min="TLSv1", tls_max="TLSv1", keylog=True)])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="closed_early",
                      expected_with_keys="smtp_error", syn_count_min=1, rst_from=None,
                      smtp_replies=[220, 250, 220], encrypted_replies=[421],
                      tls=tls(established=True, version="TLSv1.0", client_max_version="TLSv1.0",
                              alert=None))],
    dns=DNS_EXO,
))

_add(Scenario(
    name="implicit-tls-on-587",
    description="The client speaks TLS at once on 587 (implicit TLS on the STARTTLS port): its "
                "ClientHello crosses the server's plaintext 220 banner; OpenSSL fails with "
                "'wrong version number' and the client resets. The server reads the ClientHello "
                "as text: every LF among its random bytes ends a 'command' answered with "
                "500 5.3.3 (zero or more 500s, racing the RST).",
    how="Gateway capture. smtplib-style implicit TLS (SMTP_SSL behaviour) to smtp.office365.com:587.",
    verdict="tls_failed (client configured for SSL/implicit TLS on port 587; use STARTTLS)",
    listeners=[exo()],
    phases=[Phase([submit(name="implicit-on-587", tls="implicit")])],
    sessions=[session(EXO4, 587, conn_state="RSTO", outcome="tls_failed", syn_count_min=1,
                      rst_from="client", smtp_replies=FromCapture(
                          lambda codes: codes[:1] == [220] and set(codes[1:]) <= {500},
                          "each LF byte in the random parts of the ClientHello ends a 'command "
                          "line' that the server answers with 500 5.3.3 as the client resets"),
                      tls=tls(established=False, client_max_version="TLSv1.3", alert=None))],
    dns=DNS_EXO,
))

_add(Scenario(
    name="port-465-dropped",
    description="Implicit TLS to smtp.office365.com:465, which Exchange Online does not serve: "
                "SYNs go unanswered (default linear retries: 0, 1, 2, 3, 4, 5, 7 s) until the "
                "application gives up after 9 s.",
    how="Gateway capture. Server namespace INPUT drops SYNs to 465 (the service side ignores "
        "them); client connect timeout 9 s, kernel defaults.",
    verdict="syn_unanswered (port 465 is not offered by Microsoft; use 587 + STARTTLS)",
    listeners=[exo()],
    firewall=lambda t: t.drop_syn(465, ns=t.server),
    phases=[Phase([submit(name="port-465", port=465, tls="implicit", connect_timeout=9.0)])],
    sessions=[session(EXO4, 465, conn_state="S0", outcome="syn_unanswered", syn_count_min=7,
                      rst_from=None, smtp_replies=[], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="implicit-tls-465-ok",
    description="A relay that does serve implicit TLS on 465: TLS 1.3 first, then the whole SMTP "
                "dialogue (220 … 221) inside it.",
    how="Gateway capture. relay.contoso.com Postfix persona, implicit TLS listener on 465, AUTH "
        "LOGIN ok; NSS key log.",
    verdict="completed",
    listeners=[relay(465, implicit_tls=True, auth="ok")],
    phases=[Phase([{"name": "smtps", "host": RELAY_HOST, "port": 465, "tls": "implicit",
                    "keylog": True, "steps": ["ehlo", "auth", "mail", "rcpt", "data", "quit"]}])],
    sessions=[session(RELAY4, 465, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[],
                      encrypted_replies=[220, 250, 334, 334, 235, 250, 250, 354, 250, 221],
                      tls=tls(established=True, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert=None),
                      lab={"credentials_inside_tls": CREDENTIALS})],
    dns=DNS_RELAY,
))

_add(Scenario(
    name="cert-unknown-ca",
    description="The client does not trust the server's CA: after STARTTLS it aborts the "
                "handshake with a fatal unknown_ca alert — once with TLS 1.3, once pinned to "
                "TLS 1.2.",
    how="Gateway capture. Client trust store holds a different CA than the one that issued the "
        "server chain; second session maximum_version=TLSv1.2.",
    verdict="tls_failed (unknown_ca: the client's trust store lacks the issuing root)",
    listeners=[exo(tls_max=None)],
    phases=[Phase([submit(name="tls13", trust="other"),
                   submit(name="tls12", trust="other", tls_max="TLSv1.2")])],
    sessions=[session(EXO4, 587, conn_state="RSTO", outcome="tls_failed", syn_count_min=1,
                      rst_from="client", smtp_replies=[220, 250, 220],
                      tls=tls(established=False, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert="unknown_ca", alert_from="client")),
              session(EXO4, 587, conn_state="RSTO", outcome="tls_failed", syn_count_min=1,
                      rst_from="client", smtp_replies=[220, 250, 220],
                      tls=tls(established=False, version="TLSv1.2", client_max_version="TLSv1.2",
                              alert="unknown_ca", alert_from="client"))],
    dns=DNS_EXO,
))

_add(Scenario(
    name="starttls-refused-454",
    description="STARTTLS answered 454 4.7.0 Temporary authentication failure; the client gives "
                "up and QUITs.",
    how="Gateway capture. Exchange-Online persona with starttls=refuse.",
    verdict="smtp_error 454 4.7.0 (TLS could not be started)",
    listeners=[exo(starttls="refuse")],
    phases=[Phase([submit()])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 454, 221], tls=NO_TLS)],
    dns=DNS_EXO,
))

_add(Scenario(
    name="banner-554",
    description="The MX greets with 554 5.7.1 Service unavailable; Client host [ip] blocked using "
                "Spamhaus. (AS3130) and closes.",
    how="Gateway capture. MX persona with greeting=554.",
    verdict="smtp_error 554 5.7.1 at the greeting (sending IP on a block list)",
    listeners=[mx(greeting="554")],
    phases=[Phase([to_mx()])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[554], tls=NO_TLS)],
    dns=DNS_MX,
))

_add(Scenario(
    name="throttled-451",
    description="Port 25 to the MX: RCPT answered 451 4.7.500 Server busy. Please try again "
                "later from [ip]. (AS761); QUIT.",
    how="Gateway capture. MX persona with rcpt=throttled.",
    verdict="smtp_error 451 4.7.500 (temporary: IP throttling / graylisting)",
    listeners=[mx(rcpt="throttled")],
    phases=[Phase([to_mx()])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="smtp_error", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 250, 451, 221], tls=NO_TLS)],
    dns=DNS_MX,
))

_add(Scenario(
    name="sendas-denied-554",
    description="STARTTLS, AUTH 235, MAIL/RCPT 250, then after DATA 554 5.2.252 SendAsDenied "
                "(printer@contoso.com may not send as ceo@contoso.com), all inside TLS 1.3.",
    how="Gateway capture. Exchange-Online persona with data=sendas_denied; client MAIL FROM "
        "ceo@contoso.com; NSS key log.",
    verdict="without keys: completed; with keys: smtp_error 554 5.2.252 SendAsDenied",
    listeners=[exo(data="sendas_denied", tls_max=None)],
    phases=[Phase([submit(mail_from="ceo@contoso.com", keylog=True)])],
    sessions=[session(EXO4, 587, conn_state="SF", outcome="completed",
                      expected_with_keys="smtp_error", syn_count_min=1, rst_from=None,
                      smtp_replies=[220, 250, 220],
                      encrypted_replies=[250, 334, 334, 235, 250, 250, 354, 554, 221],
                      tls=tls(established=True, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert=None),
                      lab={"credentials_inside_tls": CREDENTIALS})],
    dns=DNS_EXO,
))

_add(Scenario(
    name="dns-nxdomain",
    description="Name resolution fails, so no TCP connection follows: a retired regional name "
                "(smtp-nameast.outlook.com) gets NXDOMAIN, then smtp.office365.com gets SERVFAIL "
                "from the broken LAN resolver.",
    how="Gateway capture. Lab resolver on the router answers NXDOMAIN / SERVFAIL for those names; "
        "client getaddrinfo (glibc, A and AAAA).",
    verdict="no session: DNS failure (NXDOMAIN, SERVFAIL)",
    listeners=[exo()],
    dns_failures={"smtp-nameast.outlook.com": "NXDOMAIN", SUBMISSION: "SERVFAIL"},
    phases=[Phase([submit(name="retired-name", host="smtp-nameast.outlook.com"),
                   submit(name="servfail")])],
    sessions=[],
    dns=[{"qname": "smtp-nameast.outlook.com", "qtype": "A", "rcode": "NXDOMAIN", "addresses": []},
         {"qname": "smtp-nameast.outlook.com", "qtype": "AAAA", "rcode": "NXDOMAIN",
          "addresses": []},
         {"qname": SUBMISSION, "qtype": "A", "rcode": "SERVFAIL", "addresses": []},
         {"qname": SUBMISSION, "qtype": "AAAA", "rcode": "SERVFAIL", "addresses": []}],
))

_add(Scenario(
    name="pipelining-bdat",
    description="Port 25 to the MX in clear: EHLO, MAIL/RCPT/RCPT pipelined in one segment, two "
                "BDAT chunks back to back (the second LAST), 250s, QUIT.",
    how="Gateway capture. Raw-socket client using PIPELINING and CHUNKING.",
    verdict="completed",
    listeners=[mx()],
    phases=[Phase([to_mx(name="bdat", kind="bdat",
                         rcpt_to=["frontdesk@contoso.com", "archive@contoso.com"])])],
    sessions=[session(MX4, 25, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 250, 250, 250, 250, 250, 221],
                      tls=NO_TLS)],
    dns=DNS_MX,
))

_add(Scenario(
    name="ipv6-starttls-ok",
    description="starttls-auth-ok over IPv6 (TLS 1.3), captured on the client with -i any "
                "(Linux cooked v2 headers).",
    how="Client-side capture, tcpdump -i any -y LINUX_SLL2. Client resolves A and AAAA and uses "
        "the AAAA; NSS key log.",
    verdict="completed",
    capture="client-any",
    listeners=[exo(tls_max=None)],
    phases=[Phase([submit(family=6, keylog=True)])],
    sessions=[session(EXO6, 587, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 220],
                      encrypted_replies=[250, 334, 334, 235, 250, 250, 354, 250, 221],
                      tls=tls(established=True, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert=None),
                      lab={"credentials_inside_tls": CREDENTIALS})],
    dns=DNS_EXO,
))

# Twelve devices behind the gateway; the firewall only lets three of them out to port 587.
_DEVICES = [f"10.25.1.{101 + i}" for i in range(12)]
_ALLOWED = set(_DEVICES[::4])   # .101, .105, .109


def _gateway_firewall(t: Topology) -> None:
    for src in _DEVICES:
        if src not in _ALLOWED:
            t.drop_syn(587, source=src)


_add(Scenario(
    name="gateway-mixed",
    description="A gateway's view: 12 devices try smtp.office365.com:587 and 9 of them are "
                "silently dropped by the firewall (SYN retries, 0/1/3/7 s), 3 get through "
                "(STARTTLS, AUTH, mail); meanwhile an app server sends 3 mails to the MX on port "
                "25 (one with STARTTLS) and there is unrelated UDP/TCP noise (NTP-like echo, "
                "syslog to a closed port answered by ICMP port unreachable, HTTP-like TCP).",
    how="Gateway capture (router lan0), ~27 s. Router drops SYNs to 587 from 9 of the 12 device "
        "addresses 10.25.1.101-112; client namespace tcp_syn_retries=3, linear timeouts off.",
    verdict="9 × syn_unanswered to smtp.office365.com:587 (dropped before Microsoft), "
            "3 × completed on 587, 3 × completed on 25",
    listeners=[exo(), mx()],
    firewall=_gateway_firewall,
    client_sysctls=EXPONENTIAL_SYN,
    extra_client_v4=_DEVICES,
    udp_echo=[[SERVER_V4, 123]],
    tcp_hello=[[SERVER_V4, 443]],
    phases=[Phase(parallel=True, budget=45, sessions=[
        *[submit(name=f"device-{src}", source=src, delay=0.8 * i,
                 helo=f"mfp-{src.rsplit('.', 1)[1]}.contoso.com")
          for i, src in enumerate(_DEVICES)],
        to_mx(name="mx-1", delay=1.5),
        to_mx(name="mx-2", delay=5.0, tls="starttls",
              steps=["ehlo", "starttls", "ehlo", "mail", "rcpt", "data", "quit"]),
        to_mx(name="mx-3", delay=9.5),
        {"name": "ntp", "kind": "udp", "host": SERVER_V4, "resolve": False, "port": 123,
         "payload": "\x23" + "\0" * 47, "repeat": 3, "delay": 0.5},   # NTPv4 client requests
        {"name": "syslog", "kind": "udp", "host": SERVER_V4, "resolve": False, "port": 514,
         "payload": "<14>Nov 27 08:00:00 mfp-101 scan: job 4711 done", "delay": 3.0},
        {"name": "https-ish", "kind": "tcp", "host": SERVER_V4, "resolve": False, "port": 443,
         "delay": 2.0},
        {"name": "https-ish-2", "kind": "tcp", "host": SERVER_V4, "resolve": False, "port": 443,
         "delay": 7.0},
    ])],
    sessions=[session(EXO4, 587, conn_state="S0", outcome="syn_unanswered", syn_count_min=4,
                      rst_from=None, smtp_replies=[], tls=NO_TLS, count=9),
              session(EXO4, 587, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 220],
                      tls=tls(established=True, version="TLSv1.2", client_max_version="TLSv1.3",
                              alert=None), count=3),
              session(MX4, 25, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 250, 250, 354, 250, 221],
                      tls=NO_TLS, count=2),
              session(MX4, 25, conn_state="SF", outcome="completed", syn_count_min=1,
                      rst_from=None, smtp_replies=[220, 250, 220],
                      tls=tls(established=True, version="TLSv1.3", client_max_version="TLSv1.3",
                              alert=None))],
    dns=[*DNS_EXO, *DNS_MX],
))


# --- recording ------------------------------------------------------------------------------------

@dataclass
class RecordResult:
    name: str
    pcap_path: Path
    keylog_path: Path | None
    facts: dict
    clients: list[dict]
    observed: dict
    problems: list[str]
    capture_stats: str = ""


def make_certs(directory: Path) -> dict:
    """Lab PKI from trustme: root → issuing CA → leaf per service; plus an unrelated root."""
    import trustme

    rsa = trustme.KeyType.RSA
    root = trustme.CA(organization_name="smtpflow capture lab", key_type=rsa)
    issuing = root.create_child_ca(key_type=rsa)
    other = trustme.CA(organization_name="smtpflow lab (a CA nobody here uses)", key_type=rsa)
    leaves = {
        "exo": issuing.issue_cert("outlook.com", "*.outlook.com", "*.office365.com",
                                  "smtp.office365.com", "*.outlook.office365.com",
                                  common_name="outlook.com", key_type=rsa),
        "mx": issuing.issue_cert("mail.protection.outlook.com", "*.mail.protection.outlook.com",
                                 common_name="mail.protection.outlook.com", key_type=rsa),
        "relay": issuing.issue_cert(RELAY_HOST, common_name=RELAY_HOST, key_type=rsa),
    }
    certs = {}
    for name, leaf in leaves.items():
        path = directory / f"{name}.pem"
        leaf.private_key_and_cert_chain_pem.write_to_path(str(path))
        certs[name] = {"cert": str(path)}
    root.cert_pem.write_to_path(str(directory / "ca.pem"))
    other.cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return {"certs": certs, "ca": str(directory / "ca.pem"),
            "other_ca": str(directory / "other-ca.pem")}


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def record(name: str, out_dir: str | os.PathLike, *, verify: bool = True,
           log: Callable[[str], None] = lambda s: None) -> RecordResult:
    """Record scenario ``name`` into ``out_dir/<name>.pcap`` (and ``.keys`` where a client logs
    TLS secrets); return the facts, the clients' transcripts and any fact the recording missed."""
    sc = SCENARIOS[name]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    pcap, keys = out_dir / f"{name}.pcap", out_dir / f"{name}.keys"
    clients, stats, server_log = _record_once(sc, pcap, keys, log)
    observed = observe(pcap)
    problems, facts = check(sc, observed, clients)
    if not verify:
        problems = []
    if problems and server_log:
        problems.append("server log tail:\n" + server_log[-1500:])
    return RecordResult(name, pcap, keys if keys.exists() else None, facts, clients,
                        observed, problems, stats)


def run_with_capture(name: str, capture_factory: Callable[[Topology], object], out_dir: str | os.PathLike,
                     log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """Play scenario ``name`` with another capture in place of tcpdump (``smtpflow live``, say).

    ``capture_factory(topology)`` returns a context manager that is entered before the traffic
    and left after it, like the lab's own tcpdump capture. Returns the clients' transcripts.
    """
    sc = SCENARIOS[name]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    clients, _stats, _server_log = _record_once(sc, out_dir / f"{name}.pcap", out_dir / f"{name}.keys", log,
                                                capture_factory)
    return clients


def _record_once(sc: Scenario, pcap: Path, keys: Path,
                 log: Callable[[str], None],
                 capture_factory: Callable[[Topology], object] | None = None) -> tuple[list[dict], str, str]:
    pcap.unlink(missing_ok=True)
    keys.unlink(missing_ok=True)
    py, env = sys.executable, _child_env()
    clients: list[dict] = []
    server_log = ""
    with tempfile.TemporaryDirectory(prefix="smtpflow-lab-") as tmpdir:
        tmp = Path(tmpdir)
        pki = make_certs(tmp)
        with Topology(client_sysctls=sc.client_sysctls, extra_client_v4=sc.extra_client_v4) as topo:
            topo.set_resolver(topo.client, [ROUTER_LAN_V4], "timeout:2 attempts:2")
            services = []
            try:
                services.append(topo.start_service(
                    topo.router, [py, "-m", "tests.lab.dns"],
                    {"listen": [[ROUTER_LAN_V4, 53], [ROUTER_LAN_V6, 53]],
                     "records": _zone_records(), "failures": sc.dns_failures},
                    tmp / "dns.log", env=env))
                services.append(topo.start_service(
                    topo.server, [py, "-m", "tests.lab.exchange"],
                    {"listeners": sc.listeners, "certs": pki["certs"], "udp_echo": sc.udp_echo,
                     "tcp_hello": sc.tcp_hello},
                    tmp / "server.log", env=env))
                if sc.firewall:
                    sc.firewall(topo)
                client_side = sc.capture == "client-any"
                if capture_factory is not None:
                    topo.settle()
                    cap = capture_factory(topo)
                else:
                    cap = topo.capture(pcap, ns=topo.client if client_side else None, sll2=client_side)
                with cap:
                    for phase in sc.phases:
                        if phase.before:
                            phase.before(topo)
                        clients += _run_phase(topo, phase, pki, keys if sc.writes_keylog else None,
                                              env)
                    time.sleep(0.5)   # let the last FIN/ACKs land in the capture
                stats = getattr(cap, "stats", "") or ""
                counts = [ln for ln in str(stats).splitlines() if "captured" in ln or "dropped" in ln]
                log(f"{sc.name}: capture: {', '.join(counts) or stats}")
            finally:
                for svc in services:
                    svc.stop()
                if (tmp / "server.log").exists():
                    server_log = (tmp / "server.log").read_text(errors="replace")
    return clients, str(getattr(cap, "stats", "")), server_log


def _zone_records() -> dict:
    from .dns import default_records

    return default_records((EXO4, EXO6), (MX4, MX6), (RELAY4, RELAY6))


def _run_phase(topo: Topology, phase: Phase, pki: dict, keylog: Path | None,
               env: dict) -> list[dict]:
    cfg = {"sessions": phase.sessions, "parallel": phase.parallel, "ca": pki["ca"],
           "other_ca": pki["other_ca"], "keylog": str(keylog) if keylog else None,
           "deadline": phase.budget}
    proc = topo.exec(topo.client, [sys.executable, "-m", "tests.lab.clients"],
                     input=json.dumps(cfg).encode(), timeout=phase.budget + 10, env=env,
                     check=False)
    if proc.returncode != 0:
        raise LabError(f"client run failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return json.loads(proc.stdout)


# --- reading a recording back (independent of the analyzer under test) --------------------------

TLS_VERSION_NAMES = {0x0300: "SSLv3", 0x0301: "TLSv1.0", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2",
                     0x0304: "TLSv1.3"}
ALERT_NAMES = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac",
               40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
               44: "certificate_revoked", 45: "certificate_expired", 46: "certificate_unknown",
               47: "illegal_parameter", 48: "unknown_ca", 49: "access_denied", 50: "decode_error",
               51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
               80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
               109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
               116: "certificate_required", 120: "no_application_protocol"}
LINKTYPES = {1: "EN10MB", 113: "LINUX_SLL", 276: "LINUX_SLL2", 101: "RAW"}


def pcap_linktype(path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        hdr = f.read(24)
    magic = hdr[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    dlt = struct.unpack(endian + "I", hdr[20:24])[0] & 0x0FFFFFFF
    return LINKTYPES.get(dlt, str(dlt)), dlt


def _stream(segments: dict[int, bytes]) -> bytes:
    out = bytearray()
    for off in sorted(segments):
        data = segments[off]
        if off > len(out):
            break   # a hole: stop at what is certain
        out += data[len(out) - off:]
    return bytes(out)


def _split_clear(data: bytes) -> tuple[list[bytes], bytes]:
    """Text lines until the first TLS record header; returns (lines, rest from the record)."""
    lines, pos = [], 0
    while pos < len(data):
        if data[pos] in (20, 21, 22, 23) and data[pos + 1:pos + 2] == b"\x03":
            return lines, data[pos:]
        nl = data.find(b"\n", pos)
        if nl < 0:
            lines.append(data[pos:])
            return lines, b""
        lines.append(data[pos:nl + 1])
        pos = nl + 1
    return lines, b""


def _reply_codes(lines: list[bytes]) -> list[int]:
    codes = []
    for line in lines:
        if len(line) >= 4 and line[:3].isdigit() and line[3:4] in (b" ", b"\r", b"\n"):
            codes.append(int(line[:3]))
        elif len(line) == 3 and line.isdigit():
            codes.append(int(line))
    return codes


def _tls_records(data: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos + 5 <= len(data):
        ctype, ver, length = struct.unpack("!BHH", data[pos:pos + 5])
        out.append((ctype, ver, data[pos + 5:pos + 5 + length]))
        pos += 5 + length
    return out


def _hello_version(body: bytes, client: bool) -> int | None:
    """Highest offered (ClientHello) / selected (ServerHello) version, supported_versions aware."""
    try:
        legacy = struct.unpack("!H", body[4:6])[0]
        pos = 6 + 32
        pos += 1 + body[pos]                                     # session id
        if client:
            pos += 2 + struct.unpack("!H", body[pos:pos + 2])[0]  # cipher suites
            pos += 1 + body[pos]                                 # compression methods
        else:
            pos += 3                                             # cipher suite + compression
        if pos + 2 > len(body):
            return legacy
        end = pos + 2 + struct.unpack("!H", body[pos:pos + 2])[0]
        pos += 2
        while pos + 4 <= end:
            etype, elen = struct.unpack("!HH", body[pos:pos + 4])
            ext = body[pos + 4:pos + 4 + elen]
            if etype == 43:   # supported_versions
                if client:
                    versions = [struct.unpack("!H", ext[i:i + 2])[0] for i in range(1, 1 + ext[0], 2)]
                    versions = [v for v in versions if v & 0x0F0F != 0x0A0A]   # GREASE
                    return max(versions) if versions else legacy
                return struct.unpack("!H", ext[:2])[0]
            pos += 4 + elen
        return legacy
    except (struct.error, IndexError):
        return None


def _tls_view(client_tls: bytes, server_tls: bytes) -> dict:
    view: dict = {"attempted": False}
    c_recs, s_recs = _tls_records(client_tls), _tls_records(server_tls)
    for ctype, _, body in c_recs:
        if ctype == 22 and body[:1] == b"\x01":
            view["attempted"] = True
            v = _hello_version(body, client=True)
            view["client_max_version"] = TLS_VERSION_NAMES.get(v, v)
            break
    if not view["attempted"]:
        return view
    for ctype, _, body in s_recs:
        if ctype == 22 and body[:1] == b"\x02":
            v = _hello_version(body, client=False)
            view["version"] = TLS_VERSION_NAMES.get(v, v)
            break
    alert = None
    # Only alerts in clear can be read: a plaintext alert record is exactly 2 bytes.
    for side, recs in (("client", c_recs), ("server", s_recs)):
        for ctype, _, body in recs:
            if ctype == 21 and len(body) == 2 and body[0] == 2:
                alert = alert or (side, ALERT_NAMES.get(body[1], str(body[1])))
    view["alert"] = alert[1] if alert else None
    view["alert_from"] = alert[0] if alert else None
    if view.get("version") == "TLSv1.3":
        est = any(c == 23 for c, _, _ in c_recs) and alert is None
    else:
        est = (any(c == 20 for c, _, _ in c_recs) and any(c == 20 for c, _, _ in s_recs)
               and alert is None)
    view["established"] = bool(view.get("version")) and est
    return view


def _zeek_conn_state(c: dict) -> str:
    """Zeek's Conn::conn_state from simplified endpoint states (enough for these recordings)."""
    def state(side: str) -> str:
        if c["rst"][side]:
            return "RESET"
        if c["fin"][side]:
            return "CLOSED"
        if c["established"]:
            return "ESTABLISHED"
        if side == "orig":
            return "SYN_SENT" if c["syn_times"] else "INACTIVE"
        return "SYN_ACK_SENT" if c["synack"] else "INACTIVE"

    os_, rs = state("orig"), state("resp")
    o_inactive, r_inactive = os_ == "INACTIVE", rs == "INACTIVE"
    if rs == "RESET":
        if os_ in ("SYN_SENT", "SYN_ACK_SENT") or (
                os_ == "RESET" and not c["bytes"]["orig"] and not c["bytes"]["resp"]):
            return "REJ"
        return "RSTRH" if o_inactive else "RSTR"
    if os_ == "RESET":
        return ("RSTOS0" if not c["synack"] else "OTH") if r_inactive else "RSTO"
    if rs == "CLOSED" and os_ == "CLOSED":
        return "SF"
    if os_ == "CLOSED":
        return "SH" if r_inactive else "S2"
    if rs == "CLOSED":
        return "SHR" if o_inactive else "S3"
    if os_ == "SYN_SENT" and rs == "INACTIVE":
        return "S0"
    if os_ == "ESTABLISHED" and rs == "ESTABLISHED":
        return "S1"
    return "OTH"


def observe(pcap: Path) -> dict:
    """What the capture itself shows, per TCP connection and DNS exchange (scapy, small files)."""
    from scapy.all import DNS, ICMP, IP, TCP, UDP, IPerror, IPerror6, IPv6, PcapReader, TCPerror
    from scapy.layers.inet6 import ICMPv6DestUnreach

    conns: dict[tuple, dict] = {}
    dns_q: dict[tuple, dict] = {}
    t0 = None
    packets = 0
    for pkt in PcapReader(str(pcap)):
        packets += 1
        ts = float(pkt.time)
        t0 = ts if t0 is None else t0
        ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
        if ip is None:
            continue
        ttl = ip.ttl if ip.version == 4 else ip.hlim
        if pkt.haslayer(TCP):
            tcp = pkt[TCP]
            flags = int(tcp.flags)
            a, b = (ip.src, tcp.sport), (ip.dst, tcp.dport)
            if flags & 0x12 == 0x02 and (a + b) not in conns:
                conns[a + b] = {"client": a[0], "client_port": a[1], "server": b[0],
                                "server_port": b[1], "start": ts - t0, "syn_times": [],
                                "synack": False, "established": False,
                                "isn": {"orig": tcp.seq, "resp": None},
                                "data": {"orig": {}, "resp": {}}, "bytes": {"orig": 0, "resp": 0},
                                "fin": {"orig": False, "resp": False},
                                "rst": {"orig": [], "resp": []}, "ttl": {"orig": set(), "resp": set()},
                                "icmp": []}
            c = conns.get(a + b) or conns.get(b + a)
            if c is None:
                continue
            side = "orig" if (ip.src, tcp.sport) == (c["client"], c["client_port"]) else "resp"
            c["ttl"][side].add(ttl)
            if flags & 0x12 == 0x02 and side == "orig":
                c["syn_times"].append(round(ts - t0, 3))
            if flags & 0x12 == 0x12 and side == "resp":
                c["synack"], c["isn"]["resp"] = True, tcp.seq
            if flags & 0x10 and side == "orig" and c["synack"] and not flags & 0x06:
                c["established"] = True
            payload = bytes(tcp.payload)
            if payload and c["isn"][side] is not None:
                off = (tcp.seq - c["isn"][side] - 1) % 2**32
                c["data"][side].setdefault(off, payload)
                c["bytes"][side] += len(payload)
            if flags & 0x01:
                c["fin"][side] = True
            if flags & 0x04:
                c["rst"][side].append(ttl)
        elif pkt.haslayer(TCPerror):
            inner_ip = pkt.getlayer(IPerror) or pkt.getlayer(IPerror6)
            inner = pkt[TCPerror]
            key = (inner_ip.src, inner.sport, inner_ip.dst, inner.dport)
            icmp = pkt.getlayer(ICMP) or pkt.getlayer(ICMPv6DestUnreach)
            if key in conns and icmp is not None:
                conns[key]["icmp"].append({"type": int(icmp.type), "code": int(icmp.code),
                                           "from": ip.src, "ttl": ttl})
        elif pkt.haslayer(UDP) and pkt.haslayer(DNS) and 53 in (pkt[UDP].sport, pkt[UDP].dport):
            d = pkt[DNS]
            if not d.qd:
                continue
            q = d.qd[0] if hasattr(d.qd, "__getitem__") else d.qd
            qname = q.qname.decode().rstrip(".")
            qtype = {1: "A", 28: "AAAA", 15: "MX", 5: "CNAME"}.get(int(q.qtype), str(q.qtype))
            key = (d.id, qname.lower(), qtype, pkt[UDP].sport if d.qr == 0 else pkt[UDP].dport)
            entry = dns_q.setdefault(key, {"qname": qname, "qtype": qtype, "status": "no_answer",
                                           "rcode": None, "addresses": [], "cnames": []})
            if d.qr == 1:
                entry["status"] = "answered"
                entry["rcode"] = {0: "NOERROR", 2: "SERVFAIL", 3: "NXDOMAIN", 5: "REFUSED"}.get(
                    int(d.rcode), str(d.rcode))
                for i in range(int(d.ancount or 0)):
                    rr = d.an[i]
                    if int(rr.type) in (1, 28):
                        entry["addresses"].append(str(rr.rdata))
                    elif int(rr.type) == 5:
                        entry["cnames"].append(rr.rdata.decode().rstrip(".") if isinstance(
                            rr.rdata, bytes) else str(rr.rdata).rstrip("."))
    sessions = []
    for c in sorted(conns.values(), key=lambda c: c["start"]):
        c_stream, s_stream = _stream(c["data"]["orig"]), _stream(c["data"]["resp"])
        c_lines, c_tls = _split_clear(c_stream)
        s_lines, s_tls = _split_clear(s_stream)
        rst_from = None
        if c["rst"]["orig"]:
            rst_from = "client"
        if c["rst"]["resp"]:
            first_ttl = c["rst"]["resp"][0]
            rst_from = {SERVER_TTL: "server", ROUTER_TTL: "middlebox"}.get(first_ttl, f"ttl {first_ttl}")
        creds = None
        for i, line in enumerate(c_lines):
            if line.upper().startswith(b"AUTH LOGIN") and i + 2 < len(c_lines):
                try:
                    creds = {"username": base64.b64decode(c_lines[i + 1].strip()).decode(),
                             "password": base64.b64decode(c_lines[i + 2].strip()).decode()}
                except ValueError:
                    creds = None
        sessions.append({
            "client": c["client"], "client_port": c["client_port"], "server": c["server"],
            "server_port": c["server_port"], "start": round(c["start"], 3),
            "syn_times": c["syn_times"], "syn_count": len(c["syn_times"]),
            "conn_state": _zeek_conn_state(c), "rst_from": rst_from,
            "rst_ttls": c["rst"]["resp"], "server_ttls": sorted(c["ttl"]["resp"]),
            "icmp": c["icmp"][0] if c["icmp"] else None,
            "smtp_replies": _reply_codes(s_lines), "credentials": creds,
            "tls": _tls_view(c_tls, s_tls),
        })
    linktype, dlt = pcap_linktype(pcap)
    return {"packets": packets, "linktype": linktype, "dlt": dlt, "sessions": sessions,
            "dns": list(dns_q.values()), "bytes": pcap.stat().st_size}


def check(sc: Scenario, observed: dict, clients: list[dict]) -> tuple[list[str], dict]:
    """Every expected fact against the wire and the clients' transcripts.

    Returns the mismatches and the facts for this recording (``FromCapture`` values resolved).
    """
    problems: list[str] = []
    smtp = [s for s in observed["sessions"] if s["server_port"] in SMTP_PORTS]
    by_local = {(c["local"][0], c["local"][1]): c for c in clients if c.get("local")}
    expected = [(n, e) for n, e in enumerate(sc.sessions) for _ in range(e.get("count", 1))]
    resolved = [dict(e) for e in sc.sessions]
    if len(expected) != len(smtp):
        problems.append(f"expected {len(expected)} SMTP sessions, the capture has {len(smtp)}")
    pool = list(smtp)
    for i, (n, exp) in enumerate(expected):
        match = next((s for s in pool if s["server"] == exp["server"]
                      and s["server_port"] == exp["server_port"]
                      and s["conn_state"] == exp.get("conn_state", s["conn_state"])
                      and _fits(exp.get("smtp_replies", s["smtp_replies"]), s["smtp_replies"])),
                     None)
        if match is not None:
            for key, val in exp.items():
                if isinstance(val, FromCapture):
                    resolved[n][key] = match[key]
        if match is None:
            problems.append(f"session {i} {exp['server']}:{exp['server_port']}: no recorded session "
                            f"matches (state {exp.get('conn_state')}, replies "
                            f"{exp.get('smtp_replies')}); have "
                            f"{[(s['server'], s['conn_state'], s['smtp_replies']) for s in pool]}")
            continue
        pool.remove(match)
        where = f"session {i} ({match['client']}:{match['client_port']})"
        if match["syn_count"] < exp.get("syn_count_min", 0):
            problems.append(f"{where}: {match['syn_count']} SYNs < {exp['syn_count_min']}")
        if "rst_from" in exp and match["rst_from"] != exp["rst_from"]:
            problems.append(f"{where}: rst_from {match['rst_from']!r} != {exp['rst_from']!r}")
        if "icmp" in exp:
            got = match["icmp"] and {"type": match["icmp"]["type"], "code": match["icmp"]["code"]}
            if got != exp["icmp"]:
                problems.append(f"{where}: icmp {got} != {exp['icmp']}")
        for key, val in exp.get("tls", {}).items():
            if match["tls"].get(key) != val:
                problems.append(f"{where}: tls.{key} {match['tls'].get(key)!r} != {val!r}")
        if match["credentials"] != exp.get("credentials"):
            problems.append(f"{where}: credentials in clear {match['credentials']} != "
                            f"{exp.get('credentials')}")
        client = by_local.get((match["client"], match["client_port"]))
        if "encrypted_replies" in exp:
            got = [r["code"] for r in (client or {}).get("replies", []) if r["tls"]]
            if got != exp["encrypted_replies"]:
                problems.append(f"{where}: client saw {got} inside TLS, expected "
                                f"{exp['encrypted_replies']}")
        clear = [r["code"] for r in (client or {}).get("replies", []) if not r["tls"]]
        if clear and clear != match["smtp_replies"]:
            problems.append(f"{where}: client saw {clear} in clear, the wire {match['smtp_replies']}")
    dns_seen = Counter((d["qname"].lower(), d["qtype"], d["rcode"] or d["status"],
                        tuple(d["addresses"])) for d in observed["dns"])
    for d in sc.dns:
        key = (d["qname"].lower(), d["qtype"], d.get("rcode") or d.get("status"),
               tuple(d["addresses"]))
        if not dns_seen.get(key):
            problems.append(f"DNS {key} not in the capture; have {sorted(dns_seen)}")
    return problems, {"sessions": resolved, "dns": sc.dns}


# --- manifest -----------------------------------------------------------------------------------

MANIFEST_CONVENTIONS = {
    "sessions": "SMTP sessions (TCP to 25/465/587) in order of their first SYN; each lists only "
                "what is certain. 'count' = that many identical sessions. 'lab' holds "
                "informational lab details, not analyzer fields.",
    "outcome": "decided in order: connect result, TLS failure, any visible 4xx/5xx, early close, "
               "completed. 'expected_with_keys' = the outcome once the NSS key log decrypts TLS. "
               "Without keys, an encrypted failure the client answers with QUIT ends like a good "
               "session (QUIT/221 records, close_notify both ways, FINs): completed; where the "
               "server drops the connection right after its reply (FIN, no close_notify): "
               "closed_early.",
    "smtp_replies": "reply codes visible in clear, in order; 'encrypted_replies' = codes inside TLS "
                    "(from the lab client's transcript; visible only with the key log).",
    "tls": "versions 'TLSv1.0'…'TLSv1.3'; 'version' = what the ServerHello selected; alerts by RFC "
           "name, only when sent in clear.",
    "rst_from": "server (TTL 127 as captured), middlebox (RST with the server's address but TTL 64: "
                "forged by the router), client; null = no RST.",
    "addresses": "lab addresses (private): client 10.25.1.2 / fd25:0:0:1::2, gateway 10.25.1.1, "
                 "smtp.office365.com → 10.25.2.10 / fd25:0:0:2::10, "
                 "contoso-com.mail.protection.outlook.com → 10.25.2.25, relay.contoso.com → "
                 "10.25.2.30 / fd25:0:0:2::30. Server packets carry TTL/hop limit 128 at source.",
}


def manifest_entry(result: RecordResult) -> dict:
    sc = SCENARIOS[result.name]
    return {
        "file": result.pcap_path.name,
        "keylog": result.keylog_path.name if result.keylog_path else None,
        "description": sc.description,
        "how": sc.how,
        "verdict": sc.verdict,
        "linktype": result.observed["linktype"],
        "dlt": result.observed["dlt"],
        "packets": result.observed["packets"],
        "sessions": result.facts["sessions"],
        "dns": result.facts["dns"],
    }


def write_manifest(entries: dict[str, dict], directory: Path) -> None:
    """captures/manifest.json and captures/MANIFEST.md, in scenario-table order."""
    ordered = [entries[n] for n in SCENARIOS if n in entries]
    ordered += [e for n, e in entries.items() if n not in SCENARIOS]
    doc = {"generated_by": "scripts/record-captures (tests/lab)", "conventions": MANIFEST_CONVENTIONS,
           "captures": ordered}
    (directory / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [
        "# Bundled captures",
        "",
        "Real sessions recorded in network namespaces (client — router — server) by "
        "`scripts/record-captures` with `tests/lab/`: kernel TCP, aiosmtpd dressed as Exchange "
        "Online, OpenSSL TLS, Python clients. Expected facts per capture are in `manifest.json` "
        "(the analyzer's JSON field names). `.keys` files are NSS key logs "
        "(Wireshark: TLS → (Pre)-Master-Secret log filename; tshark `-o tls.keylog_file:FILE`). "
        "The clients are Python's smtplib, which sends `ehlo`, `mail FROM:`, `rcpt TO:`, `data` in "
        "lower case (QUIT, STARTTLS, AUTH in upper case).",
        "",
        "Lab addresses: client 10.25.1.2 (fd25:0:0:1::2), gateway 10.25.1.1, "
        "smtp.office365.com → 10.25.2.10 (fd25:0:0:2::10), the tenant MX → 10.25.2.25, "
        "relay.contoso.com → 10.25.2.30. The server sends with TTL 128 (arrives as 127); what the "
        "router forges arrives with 64. Re-record: `sudo scripts/record-captures [names]`.",
        "",
        "| file | what it shows | how it was made | expected verdict |",
        "|---|---|---|---|",
    ]
    for e in ordered:
        f = f"`{e['file']}`" + (f" + `{e['keylog']}`" if e.get("keylog") else "")
        cell = lambda s: s.replace("|", "\\|")
        lines.append(f"| {f} | {cell(e['description'])} | {cell(e['how'])} "
                     f"({e['linktype']}) | {cell(e['verdict'])} |")
    (directory / "MANIFEST.md").write_text("\n".join(lines) + "\n")
