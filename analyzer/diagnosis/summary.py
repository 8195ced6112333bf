"""The capture-level diagnosis: what went wrong across all sessions, said once, plainly.

The first question users bring is whether traffic is dropped before it reaches Microsoft;
:func:`summarize` answers it directly, then lists findings grouped by server and cause,
most severe and most frequent first.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

SEVERITY_RANK = {"error": 3, "warning": 2, "info": 1, "ok": 0}
NOT_REACHED = ("syn_unanswered", "reset_by_middlebox", "rejected_icmp")


#: How a Microsoft endpoint is named when the capture does not say which name the client used:
#: front-end host names in banners change from one connection to the next.
SERVICE_LABELS = {"submission": "smtp.office365.com", "mx": "Exchange Online MX (*.mail.protection.outlook.com)"}


def _target(rec: dict[str, Any]) -> str:
    """What admins call the server: the name the client looked up or asked TLS for, else the
    Microsoft service, else the server's own name or address."""
    evidence = {e["source"] for e in rec.get("microsoft_evidence") or []}
    name = rec.get("server_name") if evidence & {"dns", "sni"} or not rec.get("microsoft") else None
    if name is None and rec.get("microsoft_service") in SERVICE_LABELS:
        name = SERVICE_LABELS[rec["microsoft_service"]]
    return f"{name or rec.get('server_name') or rec['server']}:{rec['server_port']}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _hops_text(hops: list[int]) -> str:
    """Where forged RSTs came from, in words: 0 hops is the device the capture was taken on."""
    if hops == [0]:
        return "0 hops away: the device where the capture was taken, or one beside it on the same link"
    return f"{', '.join(map(str, hops))} hop(s) away"


def summarize(records: list[dict[str, Any]], dns: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Build the summary dict: headline, dropped_before_microsoft, findings, outcomes, targets."""
    sessions = [r for r in records if r.get("service") != "dns"]
    outcomes = Counter(r["outcome"] for r in sessions)
    findings: list[dict[str, Any]] = []
    by_target: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in sessions:
        by_target[_target(rec)].append(rec)

    targets = []
    for target, recs in sorted(by_target.items(), key=lambda kv: -len(kv[1])):
        counts = Counter(r["outcome"] for r in recs)
        targets.append({"target": target, "server": recs[0]["server"], "port": recs[0]["server_port"], "attempts": len(recs), "microsoft": any(r.get("microsoft") for r in recs), "outcomes": dict(counts)})
        findings.extend(_target_findings(target, recs))
    findings.extend(_dns_findings(dns or [], sessions))
    findings.sort(key=lambda f: (-SEVERITY_RANK.get(f["severity"], 0), -f["count"]))

    return {
        "headline": _headline(sessions, findings),
        "dropped_before_microsoft": _dropped_before_microsoft(sessions),
        "findings": findings,
        "outcomes": dict(outcomes),
        "targets": targets,
        "sessions": len(sessions),
    }


def _target_findings(target: str, recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    total = len(recs)
    microsoft = any(r.get("microsoft") for r in recs)
    where = "Microsoft" if microsoft else "the server"
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for rec in recs:
        verdict = rec.get("verdict") or {}
        key = (rec["outcome"], verdict.get("title"))
        groups[key].append(rec)
    for (outcome, title), members in groups.items():
        k = len(members)
        ids = [m["session_id"] for m in members]
        severity = max((m.get("verdict", {}).get("severity", "info") for m in members), key=lambda s: SEVERITY_RANK.get(s, 0))
        if outcome == "syn_unanswered":
            retries = sorted({m["syn_count"] - 1 for m in members})
            if len(retries) == 1:
                retry_text = "none was retried" if retries[0] == 0 else f"all were retried {retries[0]} time(s)"
            else:
                retry_text = f"retried {retries[0]}–{retries[-1]} times"
            detail = (
                f"{k} of {total} connection attempt(s) to {target} got no answer; {retry_text}; "
                f"the SYNs passed this capture point: the drop is between here and {where}."
            )
        elif outcome == "reset_by_middlebox":
            hops = sorted({(m.get("rst") or {}).get("hops") for m in members if (m.get("rst") or {}).get("hops") is not None})
            detail = (
                f"{k} of {total} attempt(s) to {target} were reset by a device on the path, not by {where}"
                + (f" (the RSTs came from {_hops_text(hops)})" if hops else "")
                + "."
            )
        elif outcome == "rejected_icmp":
            reporters = sorted({(m.get("icmp") or {}).get("from") for m in members} - {None})
            names = sorted({(m.get("icmp") or {}).get("name") for m in members} - {None})
            detail = f"{k} of {total} attempt(s) to {target} were rejected by {', '.join(reporters)} (ICMP {', '.join(names)})."
        elif outcome == "rejected_rst":
            detail = f"{k} of {total} attempt(s) to {target} were refused by the server itself (RST)."
        elif outcome == "smtp_error":
            replies = Counter(
                f"{(m.get('decisive_reply') or {}).get('code')} {(m.get('decisive_reply') or {}).get('enhanced') or ''}".strip()
                for m in members
            )
            shown = ", ".join(f"{code} ×{n}" if n > 1 else code for code, n in replies.most_common())
            detail = f"{k} of {total} session(s) to {target} ended with an error reply ({shown})."
        elif outcome == "tls_failed":
            detail = f"{k} of {total} session(s) to {target}: TLS failed."
        elif outcome == "completed":
            detail = f"{k} of {total} session(s) to {target} completed."
        elif outcome == "closed_early":
            detail = f"{k} of {total} session(s) to {target} ended before the dialogue finished."
        else:
            detail = f"{k} of {total} session(s) to {target}: {outcome}."
        out.append({"severity": severity, "title": title or outcome, "detail": detail, "count": k, "outcome": outcome, "target": target, "sessions": ids})
    return out


def _dns_findings(dns: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failures: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for tx in dns:
        status = tx.get("status")
        rcode = tx.get("rcode")
        if status == "answered" and rcode in (None, "NOERROR"):
            continue
        if status == "capture_end":
            continue
        reason = rcode if status == "answered" else status.replace("_", " ")
        failures[(tx.get("qname") or "?", reason)].append(tx)
    out = []
    connected_names = {r.get("server_name") for r in sessions}
    for (name, reason), txs in failures.items():
        followed = name in connected_names
        detail = f"The DNS lookup of {name} failed {_plural(len(txs), 'time')} ({reason})"
        detail += "; a connection to it was made anyway (another lookup worked)." if followed else "; no connection to it followed: the mail never left this host."
        out.append({"severity": "warning" if followed else "error", "title": f"DNS lookup of {name} failed ({reason})", "detail": detail, "count": len(txs), "outcome": "dns_failure", "target": name, "sessions": []})
    return out


def _dropped_before_microsoft(sessions: list[dict[str, Any]]) -> dict[str, Any]:
    ms = [r for r in sessions if r.get("microsoft")]
    if not ms:
        return {"answer": "unknown", "detail": "No session to a Microsoft endpoint was identified in this capture."}
    lost = [r for r in ms if r["outcome"] in NOT_REACHED]
    reached = [r for r in ms if r["outcome"] not in NOT_REACHED and r["outcome"] != "incomplete"]
    if not lost:
        return {"answer": "no", "detail": f"All {_plural(len(reached), 'connection attempt')} to Microsoft got an answer from Microsoft (SYN-ACK or RST from the server itself)."}
    kinds = Counter(r["outcome"] for r in lost)
    parts = []
    if kinds.get("syn_unanswered"):
        parts.append(f"{kinds['syn_unanswered']} got no answer at all (SYNs dropped)")
    if kinds.get("reset_by_middlebox"):
        n = kinds["reset_by_middlebox"]
        parts.append(f"{n} {'was' if n == 1 else 'were'} reset by a device on the path")
    if kinds.get("rejected_icmp"):
        n = kinds["rejected_icmp"]
        parts.append(f"{n} {'was' if n == 1 else 'were'} rejected with ICMP by a router")
    answer = "yes" if not reached else "partly"
    detail = f"{len(lost)} of {len(ms)} connection attempt(s) to Microsoft never reached it: " + "; ".join(parts) + "."
    if reached:
        detail += f" {len(reached)} did reach Microsoft."
    return {"answer": answer, "detail": detail}


def _headline(sessions: list[dict[str, Any]], findings: list[dict[str, Any]]) -> str:
    if not sessions and not findings:
        return "No SMTP session was found in this capture."
    problems = [f for f in findings if f["severity"] in ("error", "warning")]
    if not problems:
        completed = sum(1 for r in sessions if r.get("outcome") == "completed")
        if completed == len(sessions):
            return f"All {_plural(len(sessions), 'session')} completed; no failure was seen."
        unfinished = len(sessions) - completed
        return (
            f"No failure was seen, but {unfinished} of {_plural(len(sessions), 'session')} did not finish "
            "within the capture (see their outcome)."
        )
    top = problems[0]
    failing = sum(1 for r in sessions if (r.get("verdict") or {}).get("severity") in ("error", "warning"))
    prefix = f"{failing} of {_plural(len(sessions), 'session')} failed. " if sessions else ""
    return prefix + f"Main problem: {top['title']} — {top['detail']}"
