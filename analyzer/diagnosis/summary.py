"""The capture-level diagnosis: what went wrong across all sessions, said once, plainly.

The first question users bring is whether traffic is dropped before it reaches Microsoft;
:func:`summarize` answers it directly, then lists findings grouped by server and cause,
most severe and most frequent first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Final

from .verdicts import FAILING_SEVERITIES

SEVERITY_RANK: Final = {"error": 3, "warning": 2, "info": 1, "ok": 0}
NOT_REACHED: Final = ("syn_unanswered", "reset_by_middlebox", "rejected_icmp")


#: How a Microsoft endpoint is named when the capture does not say which name the client used:
#: front-end host names in banners change from one connection to the next.
SERVICE_LABELS: Final = {"submission": "smtp.office365.com", "mx": "Exchange Online MX (*.mail.protection.outlook.com)"}


def _target(rec: dict[str, Any]) -> str:
    """What admins call the server: the name the client looked up or asked TLS for, else the
    Microsoft service, else the server's own name or address."""
    evidence = {e["source"] for e in rec.get("microsoft_evidence") or []}
    name = rec.get("server_name") if evidence & {"dns", "sni"} or not rec.get("microsoft") else None
    if name is None and rec.get("microsoft_service") in SERVICE_LABELS:
        name = SERVICE_LABELS[rec["microsoft_service"]]
    return f"{name or rec.get('server_name') or rec['server']}:{rec['server_port']}"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _hops_text(hops: list[int]) -> str:
    """Where forged RSTs came from, in words: 0 hops is the device the capture was taken on."""
    if hops == [0]:
        return "0 hops away: the device where the capture was taken, or one beside it on the same link"
    return f"{', '.join(map(str, hops))} hop(s) away"


def summarize(records: Iterable[dict[str, Any]], dns: Iterable[dict[str, Any]] | None = None,
              tally: Tally | None = None) -> dict[str, Any]:
    """Build the summary dict: headline, dropped_before_microsoft, findings, outcomes, targets.

    ``records`` is read once, one at a time, and only tallies are kept: the summary of a
    spilled store of sessions needs no more memory than their ids. ``tally``: one the records
    were already added to, in their order, as they were built (then ``records`` is not read)."""
    if tally is None:
        tally = Tally()
        for rec in records:
            tally.add(rec)
    findings: list[dict[str, Any]] = []
    targets = []
    for name, target in sorted(tally.targets.items(), key=lambda kv: -kv[1].attempts):
        targets.append({"target": name, "server": target.server, "port": target.port, "attempts": target.attempts,
                        "microsoft": target.microsoft, "outcomes": dict(target.outcomes)})
        findings.extend(_target_findings(name, target))
    findings = _merge_alike(findings)
    findings.extend(_dns_findings(dns or [], tally.server_names))
    findings.sort(key=lambda f: (-SEVERITY_RANK.get(f["severity"], 0), -f["count"]))

    return {
        "headline": _headline(tally, findings),
        "dropped_before_microsoft": _dropped_before_microsoft(tally),
        "findings": findings,
        "outcomes": dict(tally.outcomes),
        "targets": targets,
        "sessions": tally.sessions,
    }


class _Group:
    """The sessions to one target with one outcome and verdict: what a finding says of them."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.severity = "info"
        self.retries: set[int] = set()
        self.hops: set[int] = set()
        self.reporters: set[str] = set()
        self.icmp_names: set[str] = set()
        self.replies: Counter[str] = Counter()
        self.blocked_here = False  # the capture is the firewall's log, and it blocked them
        self.logged_here = False  # the capture is a firewall's log that does not say what it did (NFLOG)

    def add(self, rec: dict[str, Any], outcome: str, verdict: dict[str, Any]) -> None:
        self.ids.append(rec["session_id"])
        severity = verdict.get("severity", "info")
        if SEVERITY_RANK.get(severity, 0) > SEVERITY_RANK.get(self.severity, 0) or len(self.ids) == 1:
            self.severity = severity
        if outcome == "syn_unanswered":
            self.retries.add(rec["syn_count"] - 1)
            firewall = rec.get("firewall")
            if firewall:
                self.blocked_here = self.blocked_here or firewall.get("action") == "block"
                self.logged_here = self.logged_here or firewall.get("log") == "nflog"  # as verdicts decides
        elif outcome == "reset_by_middlebox":
            hops = (rec.get("rst") or {}).get("hops")
            if hops is not None:
                self.hops.add(hops)
        elif outcome == "rejected_icmp":
            icmp = rec.get("icmp") or {}
            if icmp.get("from") is not None:
                self.reporters.add(icmp["from"])
            if icmp.get("name") is not None:
                self.icmp_names.add(icmp["name"])
        elif outcome == "smtp_error":
            reply = rec.get("decisive_reply") or {}
            self.replies[f"{reply.get('code')} {reply.get('enhanced') or ''}".strip()] += 1


class _Target:
    def __init__(self, rec: dict[str, Any]) -> None:
        self.server = rec["server"]
        self.port = rec["server_port"]
        self.attempts = 0
        self.microsoft = False
        self.outcomes: Counter[str] = Counter()
        self.groups: dict[tuple[str, str | None], _Group] = {}


class Tally:
    """What the summary needs of every session, gathered one record at a time (in the
    records' order: it decides the order of targets with as many attempts, and of ids)."""

    def __init__(self) -> None:
        self.sessions = 0
        self.completed = 0
        self.failing = 0  # verdict severity error or warning
        self.outcomes: Counter[str] = Counter()
        self.targets: dict[str, _Target] = {}
        self.server_names: set[str | None] = set()
        self.microsoft = 0
        self.not_reached: Counter[str] = Counter()
        self.reached = 0

    def add(self, rec: dict[str, Any]) -> None:
        if rec.get("service") == "dns":
            return
        outcome = rec["outcome"]
        verdict = rec.get("verdict") or {}
        self.sessions += 1
        self.outcomes[outcome] += 1
        self.completed += outcome == "completed"
        self.failing += verdict.get("severity") in FAILING_SEVERITIES
        self.server_names.add(rec.get("server_name"))
        name = _target(rec)
        target = self.targets.get(name)
        if target is None:
            target = self.targets[name] = _Target(rec)
        target.attempts += 1
        target.outcomes[outcome] += 1
        target.microsoft = target.microsoft or bool(rec.get("microsoft"))
        key = (outcome, verdict.get("title"))
        group = target.groups.get(key)
        if group is None:
            group = target.groups[key] = _Group()
        group.add(rec, outcome, verdict)
        if rec.get("microsoft"):
            self.microsoft += 1
            if outcome in NOT_REACHED:
                self.not_reached[outcome] += 1
            elif outcome != "incomplete":
                self.reached += 1


def _target_findings(name: str, target: _Target) -> list[dict[str, Any]]:
    out = []
    total = target.attempts
    where = "Microsoft" if target.microsoft else "the server"
    for (outcome, title), group in target.groups.items():
        k = len(group.ids)
        if outcome == "syn_unanswered":
            retries = sorted(group.retries)
            if len(retries) == 1:
                retry_text = "none was retried" if retries[0] == 0 else f"all were retried {retries[0]} time(s)"
            else:
                retry_text = f"retried {retries[0]}–{retries[-1]} times"
            if group.blocked_here:
                detail = (f"{k:,} of {total:,} connection attempt(s) to {name} were blocked by the firewall whose log "
                          f"this capture is; {retry_text}; they never left it.")
            elif group.logged_here:
                detail = (f"{k:,} of {total:,} connection attempt(s) to {name} were logged by the firewall whose log "
                          f"this capture is, and got no answer; {retry_text}; the log does not say whether that "
                          "firewall dropped them.")
            else:
                detail = (
                    f"{k:,} of {total:,} connection attempt(s) to {name} got no answer; {retry_text}; "
                    f"the SYNs passed this capture point: the drop is between here and {where}."
                )
        elif outcome == "reset_by_middlebox":
            hops = sorted(group.hops)
            detail = (
                f"{k:,} of {total:,} attempt(s) to {name} were reset by a device on the path, not by {where}"
                + (f" (the RSTs came from {_hops_text(hops)})" if hops else "")
                + "."
            )
        elif outcome == "rejected_icmp":
            detail = (f"{k:,} of {total:,} attempt(s) to {name} were rejected by {', '.join(sorted(group.reporters))} "
                      f"(ICMP {', '.join(sorted(group.icmp_names))}).")
        elif outcome == "rejected_rst":
            detail = f"{k:,} of {total:,} attempt(s) to {name} were refused by the server itself (RST)."
        elif outcome == "smtp_error":
            shown = ", ".join(f"{code} ×{n:,}" if n > 1 else code for code, n in group.replies.most_common())
            detail = f"{k:,} of {total:,} session(s) to {name} ended with an error reply ({shown})."
        elif outcome == "tls_failed":
            detail = f"{k:,} of {total:,} session(s) to {name}: TLS failed."
        elif outcome == "completed":
            detail = f"{k:,} of {total:,} session(s) to {name} completed."
        elif outcome == "closed_early":
            detail = f"{k:,} of {total:,} session(s) to {name} ended before the dialogue finished."
        else:
            detail = f"{k:,} of {total:,} session(s) to {name}: {outcome}."
        out.append({"severity": group.severity, "title": title or outcome, "detail": detail, "count": k, "outcome": outcome,
                    "target": name, "sessions": group.ids})
    return out


#: Findings the terminal and the HTML report show, the most severe and largest first (the
#: summary keeps them all): a scan of thousands of addresses outside Microsoft's ranges makes
#: one finding per address.
MAX_SHOWN_FINDINGS = 30


def more_findings(left_out: int) -> str:
    """What a view says of the findings it does not show."""
    return (f"… and {left_out:,} more finding(s), none larger than those above. Every session is in the exports "
            "(--format jsonl, or --format csv -o DIR); in Python, a.summary()['findings'] lists them all.")


#: Targets a finding of one kind (outcome, title, severity) is told of one finding each; past
#: it — a scan of thousands of addresses — the large ones keep theirs (at most this many less
#: one, each with at least 1 % of the kind's sessions) and the rest make one finding.
MAX_ALIKE_TARGET_FINDINGS: Final = 8
#: Targets such a merged finding names.
TARGETS_PER_FINDING: Final = 5


def _merge_alike(findings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The targets' findings, the small ones of a kind shared by more than
    MAX_ALIKE_TARGET_FINDINGS targets merged into one (placed after the kind's last large one)."""
    kinds: dict[tuple, list[dict[str, Any]]] = {}
    for finding in findings:
        kinds.setdefault((finding["outcome"], finding["title"], finding["severity"]), []).append(finding)
    merged: dict[int, dict[str, Any]] = {}  # id of the finding it stands after (or in place of) -> merged finding
    dropped: set[int] = set()
    for alike in kinds.values():
        if len(alike) <= MAX_ALIKE_TARGET_FINDINGS:
            continue
        total = sum(f["count"] for f in alike)
        by_size = sorted(alike, key=lambda f: -f["count"])
        kept = [f for f in by_size[:MAX_ALIKE_TARGET_FINDINGS - 1] if f["count"] >= max(2, total / 100)]
        rest = by_size[len(kept):]
        first = rest[0]
        count = sum(f["count"] for f in rest)
        listed = ", ".join(f"{f['target']} ({f['count']:,})" for f in rest[:TARGETS_PER_FINDING])
        more = len(rest) - min(len(rest), TARGETS_PER_FINDING)
        rest_ids = {id(f) for f in rest}
        anchor = kept[-1] if kept else next(f for f in alike if id(f) in rest_ids)  # the first of the rest
        merged[id(anchor)] = {
            "severity": first["severity"], "title": first["title"],
            "detail": f"{count:,} connection(s) to {len(rest):,} {'other ' if kept else ''}servers "
                      f"ended the same way ({first['outcome']}): {listed}" + (f" and {more:,} more." if more else "."),
            "count": count, "outcome": first["outcome"], "target": None,
            "sessions": [sid for f in rest for sid in f["sessions"]]}
        dropped |= rest_ids
    out = []
    for finding in findings:
        if id(finding) not in dropped:
            out.append(finding)
        if id(finding) in merged:
            out.append(merged[id(finding)])
    return out


#: Names a DNS failure is told of one finding each; past it, the names failing for the same
#: reason (and alike in whether a connection followed) make one finding, the most failing named.
MAX_DNS_FAILURE_FINDINGS: Final = 8
#: Names such a finding lists.
NAMES_PER_DNS_FINDING: Final = 5


def _dns_findings(dns: Iterable[dict[str, Any]], connected_names: set[str | None]) -> list[dict[str, Any]]:
    failures: Counter[tuple[str, str]] = Counter()  # counts: a DNS outage is tens of thousands of rows
    for tx in dns:
        status = tx.get("status")
        rcode = tx.get("rcode")
        if status == "answered" and rcode in (None, "NOERROR"):
            continue
        if status == "capture_end":
            continue
        reason = str(rcode) if status == "answered" else str(status).replace("_", " ")
        failures[(tx.get("qname") or "?", reason)] += 1
    groups: dict[tuple[str, bool], list[tuple[str, int]]] = {}
    for (name, reason), count in failures.items():
        groups.setdefault((reason, name in connected_names), []).append((name, count))
    out = []
    told: set[tuple[str, bool]] = set()
    for (name, reason), count in failures.items():  # in the order the failures came
        followed = name in connected_names
        severity = "warning" if followed else "error"
        names = groups[(reason, followed)]
        if len(names) <= MAX_DNS_FAILURE_FINDINGS:
            after = ("; a connection to it was made anyway (another lookup worked)." if followed
                     else "; no connection to it followed: the mail never left this host.")
            out.append({"severity": severity, "title": f"DNS lookup of {name} failed ({reason})",
                        "detail": f"The DNS lookup of {name} failed {_plural(count, 'time')} ({reason})" + after,
                        "count": count, "outcome": "dns_failure", "target": name, "sessions": []})
        elif (reason, followed) not in told:
            told.add((reason, followed))
            total = sum(n for _, n in names)
            shown = sorted(names, key=lambda item: -item[1])[:NAMES_PER_DNS_FINDING]
            listed = ", ".join(f"{shown_name} ({_plural(n, 'time')})" for shown_name, n in shown)
            after = ("; connections to them were made anyway (other lookups worked)." if followed
                     else "; no connection to any of them followed: the mail never left this host.")
            out.append({"severity": severity, "title": f"DNS lookups of {len(names):,} names failed ({reason})",
                        "detail": f"The DNS lookups of {len(names):,} names failed {_plural(total, 'time')} ({reason}): "
                                  f"{listed} and {len(names) - len(shown):,} more" + after,
                        "count": total, "outcome": "dns_failure", "target": None, "sessions": []})
    return out


def _dropped_before_microsoft(tally: Tally) -> dict[str, Any]:
    if not tally.microsoft:
        return {"answer": "unknown", "detail": "No session to a Microsoft endpoint was identified in this capture."}
    kinds = tally.not_reached
    lost = sum(kinds.values())
    reached = tally.reached
    if not lost:
        return {"answer": "no", "detail": f"All {_plural(reached, 'connection attempt')} to Microsoft got an answer from Microsoft (SYN-ACK or RST from the server itself)."}
    parts = []
    if kinds.get("syn_unanswered"):
        parts.append(f"{kinds['syn_unanswered']:,} got no answer at all (SYNs dropped)")
    if kinds.get("reset_by_middlebox"):
        n = kinds["reset_by_middlebox"]
        parts.append(f"{n:,} {'was' if n == 1 else 'were'} reset by a device on the path")
    if kinds.get("rejected_icmp"):
        n = kinds["rejected_icmp"]
        parts.append(f"{n:,} {'was' if n == 1 else 'were'} rejected with ICMP by a router")
    answer = "yes" if not reached else "partly"
    detail = f"{lost:,} of {tally.microsoft:,} connection attempt(s) to Microsoft never reached it: " + "; ".join(parts) + "."
    if reached:
        detail += f" {reached:,} did reach Microsoft."
    return {"answer": answer, "detail": detail}


def _headline(tally: Tally, findings: list[dict[str, Any]]) -> str:
    sessions = tally.sessions
    if not sessions and not findings:
        return "No SMTP session was found in this capture."
    problems = [f for f in findings if f["severity"] in FAILING_SEVERITIES]
    if not problems:
        if tally.completed == sessions:
            return f"All {_plural(sessions, 'session')} completed; no failure was seen."
        unfinished = sessions - tally.completed
        return (
            f"No failure was seen, but {unfinished:,} of {_plural(sessions, 'session')} did not finish "
            "within the capture (see their outcome)."
        )
    top = problems[0]
    prefix = f"{tally.failing:,} of {_plural(sessions, 'session')} failed. " if sessions else ""
    return prefix + f"Main problem: {top['title']} — {top['detail']}"
