"""A verdict per session: a title, an explanation and a remediation in an admin's words.

The network-level verdicts (dropped SYNs, resets, ICMP, TLS) are written here; the meaning
and fix of each SMTP reply come from the reply catalogue (``data/exchange_replies.toml``),
compiled from Microsoft's documentation and observed transcripts, with its confidence.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from typing import Any, Final

from .knowledge import load_facts, load_replies
from .microsoft import address_value

NS: Final = 1_000_000_000

SEVERITIES: Final = ("ok", "info", "warning", "error")
#: Verdict severities that count a session as failing (listed by --failed, first in the report).
FAILING_SEVERITIES: Final = ("error", "warning")


def is_failing(record: dict[str, Any]) -> bool:
    """Does this session record's verdict say it failed (an error or a warning)?"""
    return (record.get("verdict") or {}).get("severity") in FAILING_SEVERITIES


def failing_first(numbered: Iterable[tuple[int, dict[str, Any]]], limit: int,
                  keep: Callable[[tuple[int, dict[str, Any]]], Any] = lambda pair: pair) -> tuple[list, int, int]:
    """Which of the ``(position, record)`` pairs a view of at most ``limit`` sessions lists: all
    of them when they are that few; else the failing ones first, then the others, in capture
    order. One pass; of each candidate only ``keep(pair)`` is held. Returns (what was kept, in
    capture order; how many pairs there were; how many failing ones were kept)."""
    failing: list[tuple[int, Any]] = []
    others: list[tuple[int, Any]] = []
    total = 0
    for pair in numbered:
        total += 1
        if is_failing(pair[1]):
            if len(failing) < limit:
                failing.append((pair[0], keep(pair)))
        elif len(others) < limit:
            others.append((pair[0], keep(pair)))
    chosen = sorted(failing + others[:limit - len(failing)], key=lambda item: item[0])
    return [kept for _, kept in chosen], total, len(failing)

CLIENT_CERT_ALERTS: Final = frozenset({"unknown_ca", "bad_certificate", "certificate_unknown", "certificate_expired", "certificate_revoked", "unsupported_certificate", "access_denied"})
VERSION_ALERTS: Final = frozenset({"protocol_version", "inappropriate_fallback"})
CIPHER_ALERTS: Final = frozenset({"handshake_failure", "insufficient_security"})


def _seconds(ns: int | float | None) -> str:
    if ns is None:
        return "?"
    s = ns / NS
    if s < 1:
        return f"{s * 1000:.0f} ms"
    return f"{s:.1f} s"


def _retry_pattern(gaps: list[float]) -> str:
    if not gaps:
        return ""
    shown = ", ".join(f"{g:.1f} s" for g in gaps[:8]) + (" …" if len(gaps) > 8 else "")
    if len(gaps) >= 2 and all(0.7 <= g <= 1.5 for g in gaps[:4]):
        kind = "retries about 1 s apart, the linear back-off of Linux ≥ 6.7"
    elif len(gaps) >= 2 and all(gaps[i + 1] >= gaps[i] * 1.6 for i in range(min(len(gaps) - 1, 4))):
        kind = "each wait doubling: the usual exponential back-off"
    else:
        kind = "the client's own retry timing"
    return f"retransmitted after {shown} ({kind})"


def _target(rec: dict[str, Any]) -> str:
    name = rec.get("server_name")
    where = f"{rec['server']}:{rec['server_port']}"
    return f"{name} ({where})" if name else where


@functools.lru_cache(maxsize=8)
def _service_networks(role: str | None) -> tuple[dict[str, Any] | None, tuple]:
    """The first published service with this role, and its networks (parsed once)."""
    for service in load_facts().get("endpoints", {}).get("service", []):
        if service.get("role") == role:
            return service, tuple(ipaddress.ip_network(n) for n in service.get("ipv4", []) + service.get("ipv6", []))
    return None, ()


@functools.lru_cache(maxsize=8)
def _service_bounds(role: str | None) -> tuple[tuple[int, int, int, int], ...]:
    """(first address, last address, IP version, position) of a service's networks, as integers."""
    return tuple((int(n.network_address), int(n.broadcast_address), n.version, i) for i, n in enumerate(_service_networks(role)[1]))


def _ms_ranges(role: str | None, server: str | None = None) -> str:
    """The published ranges of a Microsoft service: the server's own first, then the largest."""
    own: tuple[int, ...] = ()
    found = address_value(server) if server else None
    if found is not None:
        ip_version, value = found
        own = tuple(i for first, last, version, i in _service_bounds(role) if version == ip_version and first <= value <= last)
    return _ranges_text(role, own)


@functools.lru_cache(maxsize=256)
def _ranges_text(role: str | None, own_positions: tuple[int, ...]) -> str:
    """What _ms_ranges says, for the networks the server is in (formatting networks is slow:
    once per service and networks, not once per session). The networks are named by their
    positions: hashing ``ipaddress`` networks for the cache took a tenth of a SYN scan's records."""
    service, nets = _service_networks(role)
    if service is None:
        return ""
    own = [nets[i] for i in own_positions]
    rest = sorted((n for n in nets if n not in own and n.version == 4), key=lambda n: n.prefixlen)
    shown = own + rest[: 6 - len(own)]
    more = " …" if len(nets) > len(shown) else ""
    return f"{', '.join(map(str, shown))}{more} (endpoint ID {service.get('id')}, data version {load_facts()['endpoints'].get('version')})"


def verdict(rec: dict[str, Any], facts: dict[str, Any], app: dict[str, Any], reset: dict[str, Any] | None) -> dict[str, Any]:
    """Build the verdict of one session record (whose ``outcome`` is already decided)."""
    outcome = rec["outcome"]
    builder = _BUILDERS.get(outcome, _generic)
    if outcome in ("completed", "closed_early") and _old_tls_to_microsoft(rec):
        builder = _old_tls_accepted
    result = builder(rec, facts, app, reset)
    result.setdefault("evidence", [])
    notes = _advice(rec, app)
    if notes:
        result["notes"] = notes
    return result


# -- connect results ------------------------------------------------------------------------
def _syn_unanswered(rec, facts, app, reset):
    firewall = rec.get("firewall")
    if firewall and firewall["action"] == "block":
        return _blocked_by_firewall(rec, firewall)
    if firewall and firewall["log"] == "nflog":
        return _logged_by_firewall(rec, firewall)
    port = rec["server_port"]
    count = rec["syn_count"]
    gaps = rec.get("syn_retry_gaps") or []
    span = sum(gaps)
    microsoft = rec.get("microsoft")
    role = rec.get("microsoft_service")
    evidence = [f"{count} SYN(s) to {_target(rec)} over {span:.1f} s, no SYN-ACK, RST or ICMP answer"]
    if gaps:
        evidence.append(_retry_pattern(gaps))
    explanation = (
        f"The client tried to connect to {_target(rec)} {count} time(s)"
        + (f" over {span:.1f} s" if gaps else "")
        + " and nothing answered: no SYN-ACK, no RST, no ICMP error. "
        "The SYNs were seen at the capture point, so they left this host (or passed this gateway) and were "
        "dropped further along — by a firewall, the ISP, or because the server never received them. "
        "A slow server still answers within the retry window; a whole series of unanswered retries means a silent drop."
    )
    if port == 465 and (microsoft or role == "submission"):
        return {
            "title": "Port 465 is not offered by Exchange Online",
            "severity": "error",
            "explanation": explanation + " Exchange Online does not serve implicit TLS on port 465: connections to it time out like this.",
            "remediation": "Configure the client for smtp.office365.com port 587 with STARTTLS (SMTP AUTH), or port 25 to "
            "your tenant's MX for direct send / connector relay. A device that only offers port 465 cannot use "
            "SMTP AUTH client submission.",
            "evidence": evidence,
        }
    if port == 25:
        return {
            "title": "Outbound port 25 appears blocked (SYNs dropped)",
            "severity": "error",
            "explanation": explanation,
            "remediation": "Many ISPs, cloud providers and corporate firewalls block outbound TCP 25. Allow TCP 25 from this "
            "host to the destination on every firewall on the way"
            + (f" (Exchange Online MX ranges: {_ms_ranges('mx', rec['server'])})" if microsoft else "")
            + ", or ask the provider to unblock it. For authenticated client submission use smtp.office365.com:587 instead.",
            "evidence": evidence,
        }
    remediation = (
        f"Allow outbound TCP {port} from this host to {rec['server']} on every firewall between here and the server"
    )
    if microsoft and role == "submission":
        remediation += f" (Exchange Online submission ranges: {_ms_ranges('submission', rec['server'])}; better, allow smtp.office365.com by name)"
    elif microsoft and role == "mx":
        remediation += f" (Exchange Online MX ranges: {_ms_ranges('mx', rec['server'])})"
    remediation += ". Then test from the same host (e.g. `nc -vz <server> <port>` or PowerShell `Test-NetConnection <server> -Port <port>`)."
    return {
        "title": f"No answer on port {port}: SYNs dropped before the server",
        "severity": "error",
        "explanation": explanation,
        "remediation": remediation,
        "evidence": evidence,
    }


def _blocked_by_firewall(rec, firewall):
    """A SYN pf logged as blocked (the capture is pf's log): the drop is this firewall's."""
    port = rec["server_port"]
    rule = firewall["rule"]
    where = f"rule {rule}" + (f" (anchor {firewall['ruleset']})" if firewall.get("ruleset") else "")
    on = f" on {firewall['interface']}" + (f", {firewall['direction']}bound" if firewall.get("direction") else "")
    evidence = [f"pf logged {firewall['packets']} packet(s) of this connection: {firewall['action']} by {where}{on}, "
                f"reason {firewall['reason']}"]
    explanation = (
        f"This capture is pf's log (pflog): the firewall itself logged the client's SYN(s) to {_target(rec)} as blocked "
        f"by {where}{on}. They were dropped here, by this firewall; nothing further along the path was involved, "
        "and the server never saw them."
    )
    remediation = f"Allow outbound TCP {port} to {rec['server']} in pf ahead of {where} (`pfctl -vvsr` lists the rules by number)"
    role = rec.get("microsoft_service")
    if rec.get("microsoft") and role in ("submission", "mx"):
        remediation += f"; Exchange Online {'submission' if role == 'submission' else 'MX'} ranges: {_ms_ranges(role, rec['server'])}"
    remediation += ". Then test from the client again."
    return {
        "title": f"Blocked by this firewall: pf {where}{on}",
        "severity": "error",
        "explanation": explanation,
        "remediation": remediation,
        "evidence": evidence,
    }


def _logged_by_firewall(rec, firewall):
    """Unanswered SYNs in a Linux firewall's log (NFLOG): a rule logged them; what it did next
    the log does not say."""
    port = rec["server_port"]
    prefix = firewall.get("prefix")
    named = f"prefix '{prefix}'" if prefix else f"group {firewall['group']}"
    evidence = [f"the firewall's log (NFLOG group {firewall['group']}) holds {firewall['packets']} packet(s) of this "
                "connection" + (f", prefix '{prefix}'" if prefix else "")]
    explanation = (
        f"This capture is a Linux firewall's log (NFLOG group {firewall['group']}): a logging rule matched the client's "
        f"SYN(s) to {_target(rec)}" + (f" and tagged them '{prefix}'" if prefix else "") + ", and nothing answered them "
        "in this log. The log says that a rule matched, not what it did: a logging rule usually sits just before "
        "the one that drops."
    )
    find = f"grep -n -- '{prefix}'" if prefix else f"grep -n 'group {firewall['group']}'"
    remediation = (
        f"Find the rule that logs with {named} (`nft list ruleset | {find}` or `iptables-save | {find}`). If it, or "
        f"the rule after it, drops TCP {port}, allow {rec['server']} ahead of it"
        + (f" (Exchange Online {'submission' if rec.get('microsoft_service') == 'submission' else 'MX'} ranges: "
           f"{_ms_ranges(rec.get('microsoft_service'), rec['server'])})" if rec.get("microsoft")
           and rec.get("microsoft_service") in ("submission", "mx") else "")
        + "; if not, the SYNs left this firewall and were dropped further along: a capture on its outside "
        "interface tells which."
    )
    return {
        "title": f"No answer on port {port}: logged by this firewall ({named})",
        "severity": "error",
        "explanation": explanation,
        "remediation": remediation,
        "evidence": evidence,
    }


def _rejected_rst(rec, facts, app, reset):
    port = rec["server_port"]
    evidence = [reset["evidence"]] if reset else []
    microsoft = rec.get("microsoft")
    remediation = (
        "Nothing accepts connections on that port at the server, or its own firewall rejects them. "
        "Check the port: Exchange Online accepts SMTP on 587 (smtp.office365.com, SMTP AUTH with STARTTLS) and on 25 "
        "(your tenant's MX, <domain>.mail.protection.outlook.com)."
        if microsoft
        else f"Make sure the SMTP service listens on port {port} at {rec['server']} and that the server's firewall allows this client."
    )
    return {
        "title": f"Connection refused by the server (RST on port {port})",
        "severity": "error",
        "explanation": f"{_target(rec)} answered the SYN with a RST, and the RST's TTL matches the server's own packets: "
        "the server host itself refused the connection.",
        "remediation": remediation,
        "evidence": evidence,
    }


def _reset_by_middlebox(rec, facts, app, reset):
    hops = reset.get("hops") if reset else None
    evidence = [reset["evidence"]] if reset else []
    where = f" about {hops} hop(s) from the capture point" if hops is not None else ""
    when = "the connection attempt" if facts.get("synack_ts") is None else "the session"
    return {
        "title": "A device on the path reset the connection (forged RST)",
        "severity": "error",
        "explanation": f"A RST that claims to come from {_target(rec)} ended {when}, but its IP TTL shows it was sent by "
        f"another device{where}: a firewall, IPS, proxy or the ISP answering on the server's behalf.",
        "remediation": f"Find the firewall, IPS or proxy{where} that rejects TCP {rec['server_port']} with resets "
        "(e.g. iptables `REJECT --reject-with tcp-reset`, an ISP port-25 filter, an antivirus 'mail shield', "
        "SMTP inspection on a firewall) and allow this traffic. Compare with a capture taken outside that device.",
        "evidence": evidence,
    }


def _rejected_icmp(rec, facts, app, reset):
    icmp = rec.get("icmp") or {}
    reporter = icmp.get("from")
    name = icmp.get("name", "ICMP error")
    prohibited = icmp.get("admin_prohibited")
    evidence = [f"ICMP {name} (type {icmp.get('type')}, code {icmp.get('code')}) from {reporter}"]
    if prohibited:
        return {
            "title": "A firewall rejected the connection (ICMP administratively prohibited)",
            "severity": "error",
            "explanation": f"{reporter} answered the SYN to {_target(rec)} with ICMP '{name}': a filter rule on that device "
            "rejects this traffic (instead of dropping it silently).",
            "remediation": f"Change the rule on {reporter} (or the firewall it stands for) to allow TCP {rec['server_port']} "
            f"to {rec['server']}.",
            "evidence": evidence,
        }
    return {
        "title": f"The server could not be reached (ICMP {name})",
        "severity": "error",
        "explanation": f"{reporter} reported '{name}' for the SYN to {_target(rec)}: the network path does not lead to the server.",
        "remediation": "Check routing from this host: the default gateway, VPN/split tunnels, and for IPv6 whether this "
        "host really has IPv6 connectivity (clients that get an AAAA answer may try IPv6 first).",
        "evidence": evidence,
    }


# -- TLS ------------------------------------------------------------------------------------
def _tls_failed(rec, facts, app, reset):
    tls = rec.get("tls") or {}
    notes = app.get("notes") or []
    alert = tls.get("alert")
    alert_from = tls.get("alert_from")
    evidence = []
    if tls.get("client_max_version"):
        evidence.append(f"the client offered at most {tls['client_max_version']}")
    if alert:
        evidence.append(f"TLS alert {alert} sent by the {alert_from}")
    if tls.get("failure"):
        evidence.append(tls["failure"] + (" (inferred)" if tls.get("failure_inferred") else ""))
    microsoft = rec.get("microsoft")
    if "implicit_tls_on_starttls_port" in notes:
        return {
            "title": f"Client uses implicit TLS on the STARTTLS port {rec['server_port']}",
            "severity": "error",
            "explanation": "The client sent a TLS ClientHello as soon as TCP was up, while the server greeted in plain text "
            "('220 …') and expected STARTTLS first. The two never agreed on a protocol; the client gave up.",
            "remediation": "Set the client's encryption to STARTTLS (often labelled 'TLS' or 'STARTTLS', not 'SSL' or 'SSL/TLS') "
            f"for port {rec['server_port']}. Exchange Online offers only STARTTLS (port 587, and 25 for the MX); "
            "implicit TLS on 465 is not available.",
            "evidence": evidence + ["server greeting in clear: " + ((rec.get("smtp") or {}).get("banner") or "?")],
        }
    client_max = tls.get("client_max_version")
    old_client = client_max in ("SSLv3", "TLSv1.0", "TLSv1.1")
    if alert in VERSION_ALERTS or (old_client and not tls.get("version")):
        remediation = "Enable TLS 1.2 (or 1.3) on the client: update its firmware/OS/.NET framework, or its TLS settings."
        if microsoft:
            remediation += (
                " Exchange Online refuses TLS 1.0/1.1 for SMTP AUTH (since 2022). A device that cannot do TLS 1.2 can, for "
                "now, use the opt-in endpoint smtp-legacy.office365.com after `Set-TransportConfig -AllowLegacyTLSClients $true` "
                "(availability in 2026 unconfirmed), or send through an on-premises relay."
            )
        return {
            "title": "TLS version not accepted" + (f": the client offers only up to {client_max}" if old_client else ""),
            "severity": "error",
            "explanation": "The TLS handshake failed because client and server share no protocol version"
            + (f" (the {alert_from} sent {alert})" if alert else "")
            + ".",
            "remediation": remediation,
            "evidence": evidence,
        }
    if alert in CLIENT_CERT_ALERTS and alert_from == "client":
        remediation = "Fix the client's certificate validation: update its trusted root certificates and clock."
        if microsoft:
            remediation += (
                " Exchange Online certificates chain to DigiCert Global Root G2 (required since March 2026): devices with an "
                "old trust store must get that root and the DigiCert intermediates."
            )
        return {
            "title": f"The client rejected the server's certificate ({alert})",
            "severity": "error",
            "explanation": f"The client aborted the TLS handshake with the alert {alert} after it received the server's certificate.",
            "remediation": remediation,
            "evidence": evidence + _certificate_evidence(tls),
        }
    if alert in CIPHER_ALERTS:
        return {
            "title": f"TLS handshake failed: no common security parameters ({alert})",
            "severity": "error",
            "explanation": f"The {alert_from} ended the handshake with {alert}: the two sides share no acceptable cipher "
            "suite, key exchange or signature algorithm.",
            "remediation": "Enable modern cipher suites on the client (ECDHE with AES-GCM; TLS 1.2 or 1.3). Old devices "
            "limited to RC4/3DES/CBC-SHA1 need a firmware update or a relay.",
            "evidence": evidence,
        }
    if tls.get("not_tls"):
        return {
            "title": "TLS was expected but the peer did not speak TLS",
            "severity": "error",
            "explanation": f"One side started TLS but the other answered with something else: {tls['not_tls']}.",
            "remediation": "Check that client and server agree on the port's mode: STARTTLS (port 587/25) or implicit TLS (465).",
            "evidence": evidence,
        }
    inferred = tls.get("failure_inferred")
    return {
        "title": "TLS handshake did not complete" + (" (reason encrypted, inferred)" if inferred else ""),
        "severity": "error",
        "explanation": (tls.get("failure") or "The TLS handshake started but never completed.")
        + (" This is an inference: in TLS 1.3 the failure happens after encryption starts." if inferred else ""),
        "remediation": "Look at the client's TLS error message or log. A key log (see README) or a capture of the client's "
        "side lets smtpflow show more.",
        "evidence": evidence,
    }


OLD_VERSIONS: Final = ("SSLv3", "TLSv1.0", "TLSv1.1")


def _old_tls_to_microsoft(rec: dict[str, Any]) -> bool:
    tls = rec.get("tls") or {}
    return bool(rec.get("microsoft") and tls.get("established") and tls.get("version") in OLD_VERSIONS)


def _old_tls_accepted(rec, facts, app, reset):
    """Exchange Online completes a TLS 1.0/1.1 handshake, then refuses every command inside TLS."""
    tls = rec.get("tls") or {}
    version = tls.get("version", "").replace("TLSv", "TLS ")
    return {
        "title": f"{version} used with Exchange Online (refused inside TLS: 421 4.7.66)",
        "severity": "error",
        "explanation": f"The client negotiated {tls.get('version')} (it offered at most {tls.get('client_max_version')}). "
        "Exchange Online completes such a handshake but answers every command inside TLS with "
        "'421 4.7.66 TLS 1.0 and 1.1 are not supported' and closes the connection; the reply is encrypted, so the "
        "capture shows only a short exchange and a close.",
        "remediation": "Enable TLS 1.2 on the client (firmware/OS/.NET update or its TLS settings). A device that cannot "
        "do TLS 1.2 can, for now, use smtp-legacy.office365.com after `Set-TransportConfig -AllowLegacyTLSClients $true` "
        "(availability in 2026 unconfirmed), or relay through an on-premises server.",
        "evidence": [f"TLS version {tls.get('version')} negotiated with a Microsoft endpoint", rec.get("outcome_reason", "")],
    }


def _certificate_evidence(tls: dict[str, Any]) -> list[str]:
    certs = tls.get("certificates") or []
    if not certs:
        return []
    leaf = certs[0]
    return [f"server certificate: subject {leaf.get('subject')}, issuer {leaf.get('issuer')}, valid {leaf.get('not_before')} – {leaf.get('not_after')}"]


# -- SMTP replies -----------------------------------------------------------------------------
def _smtp_error(rec, facts, app, reset):
    reply = rec.get("decisive_reply") or {}
    code = reply.get("code", 0)
    enhanced = reply.get("enhanced")
    text = reply.get("text") or ""
    command = reply.get("command")
    info = load_replies().lookup(code, enhanced, text)
    shown = f"{code} {text}".strip()
    answered = "as its greeting" if command is None else (
        "to the message body" if command == "." else "during AUTH" if command == "**" else f"to {command}"
    )
    evidence = [f"server reply {answered}: {shown}"]
    if reply.get("encrypted"):
        evidence.append("this reply was inside TLS and was decrypted with the key log")
    if command == "STARTTLS":
        return _starttls_refused(rec, shown, code, evidence)
    if info is None:
        transient = code // 100 == 4
        return {
            "title": f"The server answered {code}{' ' + enhanced if enhanced else ''} {answered}",
            "severity": "warning" if transient else "error",
            "explanation": f"The server rejected the session {answered} with '{shown}'. "
            + ("A 4xx reply is temporary: a proper client retries later." if transient else "A 5xx reply is permanent: retrying will not help."),
            "remediation": "Read the reply text; check the server's logs for this time.",
            "evidence": evidence,
        }
    explanation = f"The server answered '{shown}' {answered}. {info.meaning}"
    evidence.append(f"reference: {info.source} (confidence: {info.confidence})")
    return {
        "title": info.title,
        "severity": info.severity,
        "explanation": explanation,
        "remediation": info.remediation,
        "evidence": evidence,
        "category": info.category,
    }


def _starttls_refused(rec, shown, code, evidence):
    offered = (rec.get("smtp") or {}).get("starttls_offered")
    microsoft = rec.get("microsoft")
    remediation = (
        "The server could not start TLS: on a server you run, check its certificate (present, not expired, the full "
        "chain) and its TLS settings and logs."
    )
    if microsoft:
        remediation += (
            " Exchange Online refuses STARTTLS only temporarily (TLS rate limits, a busy front end): retry later; "
            "if it persists, open a case with Microsoft with this capture."
        )
    return {
        "title": f"The server refused STARTTLS ({code})",
        "severity": "warning" if code // 100 == 4 else "error",
        "explanation": f"The client asked to start TLS and the server answered '{shown}'"
        + ("" if offered else " (it had not even offered STARTTLS in its EHLO reply)")
        + ". Without TLS, servers that require it (Exchange Online for SMTP AUTH) will not accept the mail.",
        "remediation": remediation,
        "evidence": evidence,
    }


# -- endings ------------------------------------------------------------------------------------
def _closed_early(rec, facts, app, reset):
    smtp = rec.get("smtp") or {}
    tls = rec.get("tls") or {}
    evidence = [rec.get("outcome_reason", "")]
    if tls.get("established") and "cut short" in rec.get("outcome_reason", ""):
        return {
            "title": "Likely refused inside TLS (inferred): the session ended after the client's first encrypted command",
            "severity": "warning",
            "explanation": rec["outcome_reason"][0].upper() + rec["outcome_reason"][1:] + ". A server that refuses a "
            "session inside TLS (Exchange Online: 421 4.7.66 for TLS 1.0/1.1, or 535/530 errors) closes like this; the "
            "reply itself is encrypted.",
            "remediation": "Capture a key log on the client and pass it with --keylog (see README) to confirm and read the "
            "server's reply, or look at the client's log.",
            "evidence": evidence,
        }
    if tls.get("established"):
        return {
            "title": "The server reset the encrypted session",
            "severity": "warning",
            "explanation": "TLS was established, then the server ended the connection with a RST. What was said inside TLS "
            "is not visible without a key log.",
            "remediation": "Capture a key log on the client (see README) to see the server's last reply, or check the client's log.",
            "evidence": evidence,
        }
    if smtp.get("banner") is None:
        return {
            "title": "Connection closed before the server's greeting",
            "severity": "warning",
            "explanation": "TCP came up but the session ended before the server sent its 220 greeting: an overloaded server, "
            "a server that drops blocklisted clients silently, or a proxy in between.",
            "remediation": "Try again and check whether the server greets at all (`openssl s_client -starttls smtp` or telnet); "
            "check the server's connection limits and any proxy on the way.",
            "evidence": evidence,
        }
    return {
        "title": "Session ended before the SMTP dialogue finished",
        "severity": "warning",
        "explanation": rec.get("outcome_reason", "") + ". No error reply was seen.",
        "remediation": "Check the client's log for why it stopped; if the server closed, check the server's log for this time.",
        "evidence": evidence,
    }


def _completed(rec, facts, app, reset):
    smtp = rec.get("smtp") or {}
    tls = rec.get("tls") or {}
    accepted = smtp.get("messages_accepted") or 0
    evidence = []
    if tls.get("established"):
        evidence.append(f"TLS {tls.get('version') or ''} established ({tls.get('mode') or 'tls'})".replace("  ", " "))
    if accepted:
        evidence.append(f"{accepted} message(s) accepted by the server")
    encrypted_dialogue = tls.get("established") and not any(r.get("encrypted") for r in smtp.get("replies") or [])
    if encrypted_dialogue:
        records = tls.get("application_data_records") or {}
        if records:
            evidence.append(f"{records.get('client', 0)} encrypted record(s) from the client, {records.get('server', 0)} from the server")
        if tls.get("decryption_error"):
            evidence.append(f"not decrypted: {tls['decryption_error']}")
        return {
            "title": "Session completed; the dialogue was encrypted",
            "severity": "ok",
            "explanation": "TCP and TLS came up and the connection closed without a visible failure. The SMTP replies after "
            "STARTTLS are encrypted, so whether the message was accepted is not visible in the capture.",
            "remediation": "Nothing to fix on the network path. To see the replies inside TLS (e.g. 535 5.7.139, 530 5.7.57), "
            "capture a key log on the client and pass it with --keylog (see README).",
            "evidence": evidence,
        }
    return {
        "title": "Session completed" + (f": {accepted} message(s) accepted" if accepted else ""),
        "severity": "ok",
        "explanation": rec.get("outcome_reason", "") + ".",
        "remediation": "Nothing to fix.",
        "evidence": evidence,
    }


def _incomplete(rec, facts, app, reset):
    return {
        "title": "Capture ended before the session did",
        "severity": "info",
        "explanation": rec.get("outcome_reason", "") + ". Nothing went wrong up to that point.",
        "remediation": "Capture for longer to see how this session ends.",
        "evidence": [],
    }


def _generic(rec, facts, app, reset):
    return {"title": rec["outcome"], "severity": "info", "explanation": rec.get("outcome_reason", ""), "remediation": "", "evidence": []}


_BUILDERS: Final = {
    "syn_unanswered": _syn_unanswered,
    "rejected_rst": _rejected_rst,
    "reset_by_middlebox": _reset_by_middlebox,
    "rejected_icmp": _rejected_icmp,
    "tls_failed": _tls_failed,
    "smtp_error": _smtp_error,
    "closed_early": _closed_early,
    "completed": _completed,
    "incomplete": _incomplete,
}


# -- advice that applies whatever the outcome ------------------------------------------------------
def _advice(rec: dict[str, Any], app: dict[str, Any]) -> list[str]:
    notes: list[str] = []
    smtp = rec.get("smtp") or {}
    tls = rec.get("tls") or {}
    role = rec.get("microsoft_service")
    mechanism = (smtp.get("auth_mechanism") or "").upper()
    if rec.get("microsoft") and role == "submission" and mechanism in ("LOGIN", "PLAIN"):
        notes.append(
            f"The client authenticates with Basic auth (AUTH {mechanism}). Microsoft disables Basic auth for SMTP AUTH by "
            "default for existing tenants at the end of December 2026; move this client to OAuth (XOAUTH2)."
        )
    if smtp.get("auth_mechanism") and not tls.get("established") and smtp.get("auth_result") is not None:
        notes.append("AUTH was sent without TLS: the credentials crossed the network in clear (they are redacted here).")
    version = tls.get("version")
    if tls.get("established") and version in OLD_VERSIONS and not rec.get("microsoft"):
        notes.append(f"TLS {version} was negotiated: it is obsolete; Exchange Online refuses it for SMTP AUTH.")
    if rec.get("microsoft") and rec["server_port"] == 25 and role == "submission":
        notes.append("Port 25 to smtp.office365.com is allowed for SMTP AUTH, but Microsoft recommends 587.")
    if rec.get("handshake_rtt") is not None and rec["handshake_rtt"] > 1.0:
        notes.append(f"The TCP handshake took {rec['handshake_rtt']:.2f} s: a slow or congested path.")
    return notes
