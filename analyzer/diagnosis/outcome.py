"""Each session's ``outcome``: exactly one value, decided in a fixed order.

    connect result → TLS failure → any 4xx/5xx reply → early close → completed

=====================  ====================================================================
outcome                meaning
=====================  ====================================================================
syn_unanswered         only client SYNs, no answer of any kind
rejected_rst           the SYN was answered by a RST from the server host itself
rejected_icmp          the SYN was answered by an ICMP/ICMPv6 error
reset_by_middlebox     a RST claiming to come from the server was forged on the path
tls_failed             TLS attempted (ClientHello sent) and not established
smtp_error             the decisive event was a 4xx/5xx SMTP reply (also as the greeting)
closed_early           TCP came up, the session ended before the dialogue did, no error seen
completed              no 4xx/5xx, TLS established if tried, ended normally
incomplete             the capture ended (or went quiet) before the session did
=====================  ====================================================================
"""

from __future__ import annotations

from typing import Any, Final

from ..flows import limits
from ..flows.limits import UNANSWERED_GRACE_S
from ..protocols.smtp.constants import KNOWN_VERBS

OUTCOMES: Final = (
    "syn_unanswered",
    "rejected_rst",
    "rejected_icmp",
    "reset_by_middlebox",
    "tls_failed",
    "smtp_error",
    "closed_early",
    "completed",
    "incomplete",
)

#: Replies to these commands don't decide a session: a client can go on regardless.
MINOR_COMMANDS: Final = frozenset({"VRFY", "EXPN", "HELP", "NOOP", "RSET", "QUIT", "XCLIENT", "XFORWARD", "ETRN"})

NS: Final = 1_000_000_000

#: A session that ends after this few encrypted commands from the client, without QUIT or a TLS
#: close_notify, was cut short. A normal client sends at least two (EHLO
#: and QUIT), so one command and an end is a refusal (inferred).
CUT_SHORT_COMMANDS: Final = 1


def encrypted_commands(tls: dict[str, Any]) -> int:
    """How many commands the client's encrypted records amount to (an estimate from counts).

    TLS 1.0 clients split each write into two records (1/n-1 record splitting against BEAST);
    with TLS 1.3 the client's Finished also travels as an application-data record."""
    records = (tls.get("application_data_records") or {}).get("client", 0)
    version = tls.get("version")
    if version == "TLSv1.0":
        return (records + 1) // 2
    if version == "TLSv1.3":
        return max(records - 1, 0)
    return records


def decisive_reply(replies: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The 4xx/5xx reply that decided the session, if any.

    Errors to minor or unknown commands don't count, nor does a failed EHLO that the client
    recovered from (a later HELO/EHLO that succeeded). The first remaining error decides:
    later errors are usually consequences (a 530 after a refused AUTH).
    """
    last_hello_ok = -1
    for index, reply in enumerate(replies):
        if reply["code"] // 100 == 2 and reply.get("command") in _HELLOS:
            last_hello_ok = index
    for index, reply in enumerate(replies):
        code = reply["code"]
        if code // 100 not in (4, 5):
            continue
        command = reply.get("command")
        if command is None:
            return reply  # the greeting itself (421/554), or unsolicited (a 421 on timeout)
        if command in MINOR_COMMANDS:
            continue
        if command not in KNOWN_VERBS and command not in (".", "**"):
            continue  # an unknown command's 500/502: the client's own mistake, rarely decisive
        if command in _HELLOS and last_hello_ok > index:
            continue
        return reply
    return None


_HELLOS: Final = ("EHLO", "HELO", "LHLO")


def _table_full(facts: dict[str, Any]) -> str:
    return "smtpflow stopped following this connection early, because " + _table_full_cause(facts)


def _table_full_cause(facts: dict[str, Any]) -> str:
    if facts.get("evicted_for") == "memory":
        return "the connections open at once held more than its memory budget (--table-memory)"
    return f"more than {limits.MAX_ACTIVE_CONNECTIONS:,} connections were open at once (a flood or a scan?)"


def decide(facts: dict[str, Any], app: dict[str, Any], reset: dict[str, Any] | None, capture_end: int | None) -> tuple[str, str]:
    """Return (outcome, outcome_reason) for one session."""
    syn_times = facts.get("syn_times") or []
    connected = facts.get("synack_ts") is not None or (
        facts.get("resp_pkts", 0) > 0 and not _only_rst_from_server(facts)
    )
    icmp = [e for e in facts.get("icmp") or [] if e["type"] in (1, 3, 11) or (e["ip_version"] == 6 and e["type"] in (1, 3))]
    smtp = app.get("smtp") or {}
    tls = app.get("tls") or {}

    # 1. The connect result.
    if reset is not None and reset.get("rst_from") == "middlebox":
        when = "in answer to the SYN" if not connected else "during the session"
        return "reset_by_middlebox", f"a RST {when} was forged on the path: {reset['evidence']}"
    if not connected:
        if icmp:
            first = icmp[0]
            return "rejected_icmp", f"the SYN was answered by ICMP {first['name']} (type {first['type']}, code {first['code']}) from {first['from']}"
        if reset is not None and reset.get("rst_from") == "server":
            return "rejected_rst", f"the server answered the SYN with a RST ({reset['evidence']})"
        early = ""
        if facts.get("end_reason") == "table_full":
            # Let go early: as at the end of a capture, a SYN left unanswered for the grace
            # period (or retransmitted) is established silence; a younger one may yet be answered.
            waited = (facts.get("evicted_at") or 0) - syn_times[-1] if syn_times else 0
            if not syn_times or (len(syn_times) == 1 and waited < UNANSWERED_GRACE_S * NS):
                return "incomplete", _table_full(facts) + ": an answer may have come later"
            early = f" in the {waited / NS:.1f} s smtpflow followed it (it stopped then, because {_table_full_cause(facts)})"
        if syn_times:
            count = len(syn_times)
            last = syn_times[-1]
            # A lone SYN just before the capture stopped may have been answered later; once the
            # client has retransmitted, the silence is established.
            if count == 1 and capture_end is not None and facts.get("at_capture_end") and capture_end - last < UNANSWERED_GRACE_S * NS:
                return "incomplete", f"the capture ended {((capture_end - last) / NS):.2f} s after the last SYN: an answer may have come later"
            if count == 1:
                return "syn_unanswered", "one SYN was sent and nothing answered it" + early
            return "syn_unanswered", f"{count} SYNs were sent (the first and {count - 1} retransmission(s)) and nothing answered" + early
        if facts.get("orig_pkts", 0) == 0 and facts.get("resp_pkts", 0) == 0:
            return "incomplete", "no usable packet of this connection was captured (bad checksums)"
        # Mid-stream pickup with only one direction seen.

    # 2. TLS failure.
    implicit_on_starttls_port = "implicit_tls_on_starttls_port" in (app.get("notes") or [])
    if (tls.get("attempted") or implicit_on_starttls_port) and not tls.get("established"):
        reason = tls.get("failure") or "the TLS handshake did not complete"
        if implicit_on_starttls_port:
            reason = "the client started TLS immediately but the server expected plain SMTP first (implicit TLS on a STARTTLS port)"
        elif tls.get("alert"):
            reason = f"TLS alert {tls['alert']} from the {tls.get('alert_from') or 'peer'}" + (f": {tls['failure']}" if tls.get("failure") else "")
        return "tls_failed", reason

    # 3. Any decisive 4xx/5xx reply.
    reply = decisive_reply(smtp.get("replies") or [])
    if reply is not None:
        enhanced = f" {reply['enhanced']}" if reply.get("enhanced") else ""
        to = "as its greeting" if reply.get("command") is None else f"to {reply['command'] if reply['command'] not in ('.', '**') else ('the message body' if reply['command'] == '.' else 'the AUTH exchange')}"
        secret = " (inside TLS, decrypted)" if reply.get("encrypted") else ""
        return "smtp_error", f"the server answered {reply['code']}{enhanced} {to}{secret}"

    # 4./5. How it ended.
    closed = facts.get("orig_close_ts") is not None or facts.get("resp_close_ts") is not None
    quit_ok = bool(smtp.get("quit"))
    if not closed:
        if quit_ok:
            return "completed", "QUIT was acknowledged; the capture did not show the connection close"
        if facts.get("end_reason") == "idle_timeout":
            return "incomplete", "no packets for a long time: the end of the session was not seen"
        if facts.get("end_reason") == "table_full":
            return "incomplete", _table_full(facts) + ": the end of the session was not seen"
        return "incomplete", "the capture ended while the session was still open"
    if quit_ok:
        return "completed", "the client said QUIT and the server acknowledged it"
    who, how = _who_closed(facts)
    if tls.get("established") and tls.get("decrypted"):
        return "closed_early", f"the {who} closed the connection ({how}) before the SMTP dialogue inside TLS ended (no QUIT)"
    if tls.get("established"):
        if who == "server" and how == "RST":
            return "closed_early", "TLS was established, then the server reset the connection"
        server_said_goodbye = any(
            a.get("from") == "server" and not a.get("during_handshake") for a in tls.get("alerts") or []
        )
        commands = encrypted_commands(tls)
        if commands <= CUT_SHORT_COMMANDS and not server_said_goodbye:
            if who == "server":
                return "closed_early", (
                    f"the server closed the connection after the client's first encrypted command ({commands} command(s) "
                    "judging by the client's records) and without a TLS close_notify: the dialogue inside TLS was cut short "
                    "(inferred; most likely the server refused the first command)"
                )
            return "closed_early", (
                "the client closed the connection right after the server's answer to its first encrypted command, "
                "without QUIT or a TLS close_notify: the dialogue inside TLS was cut short (inferred; most likely that "
                "answer was an error)"
            )
        return "completed", "TLS was established and the connection closed without a visible failure (the dialogue is encrypted)"
    service = app.get("service")
    if service == "smtp":
        if smtp.get("banner") is None:
            return "closed_early", f"the {who} closed the connection ({how}) before the server's greeting"
        return "closed_early", f"the {who} closed the connection ({how}) before the SMTP dialogue ended (no QUIT)"
    if service is None:
        return "closed_early", f"TCP came up but no data was exchanged before the {who} closed it ({how})"
    return "completed", f"the {who} closed the connection normally ({how})"


def _only_rst_from_server(facts: dict[str, Any]) -> bool:
    """The responder sent nothing but RSTs (a rejection, not a connection)."""
    rsts_from_server = sum(1 for r in facts.get("rsts") or [] if not r[1])
    return rsts_from_server >= facts.get("resp_pkts", 0)


def _who_closed(facts: dict[str, Any]) -> tuple[str, str]:
    orig, resp = facts.get("orig_close_ts"), facts.get("resp_close_ts")
    if resp is not None and (orig is None or resp <= orig):
        return "server", "RST" if facts.get("resp_rst") and not facts.get("resp_fin") else "FIN"
    return "client", "RST" if facts.get("orig_rst") and not facts.get("orig_fin") else "FIN"
