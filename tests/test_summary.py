"""The capture-level summary, table-driven on hand-made session records.

``summarize`` reads its records once, as an iterator (a spilled store is read from disk one
record at a time), so every test feeds it a generator."""

from __future__ import annotations

import pytest

from analyzer.diagnosis.summary import SERVICE_LABELS, summarize

MS = [{"source": "published_range", "detail": "x"}]


def rec(n: int, outcome: str, severity: str = "error", title: str | None = None, *, server: str = "52.96.1.1",
        port: int = 587, microsoft: bool = True, role: str | None = "submission", **extra) -> dict:
    record = {
        "session_id": f"C{n:04d}", "server": server, "server_port": port, "server_name": extra.pop("server_name", None),
        "microsoft": microsoft, "microsoft_evidence": MS if microsoft else [], "microsoft_service": role if microsoft else None,
        "outcome": outcome, "service": extra.pop("service", "smtp"), "syn_count": extra.pop("syn_count", 1),
        "rst": extra.pop("rst", None), "icmp": extra.pop("icmp", None), "decisive_reply": extra.pop("reply", None),
        "verdict": {"title": title or outcome, "severity": severity},
    }
    record.update(extra)
    return record


def summary_of(records, dns=None):
    return summarize((r for r in records), dns)


def test_nothing():
    s = summary_of([])
    assert s["headline"] == "No SMTP session was found in this capture."
    assert s["dropped_before_microsoft"]["answer"] == "unknown" and s["sessions"] == 0 and s["findings"] == []


def test_all_completed():
    s = summary_of([rec(1, "completed", "ok"), rec(2, "completed", "ok")])
    assert s["headline"] == "All 2 sessions completed; no failure was seen."
    assert s["dropped_before_microsoft"] == {"answer": "no", "detail": "All 2 connection attempts to Microsoft got an answer "
                                             "from Microsoft (SYN-ACK or RST from the server itself)."}
    (finding,) = s["findings"]
    assert finding["detail"] == f"2 of 2 session(s) to {SERVICE_LABELS['submission']}:587 completed."
    assert finding["sessions"] == ["C0001", "C0002"] and finding["severity"] == "ok"


def test_unfinished_sessions_without_failure():
    s = summary_of([rec(1, "completed", "ok"), rec(2, "incomplete", "info")])
    assert s["headline"].startswith("No failure was seen, but 1 of 2 sessions did not finish")


def test_a_group_takes_its_most_severe_verdict_and_keeps_order():
    records = [rec(1, "smtp_error", "info", "T", reply={"code": 550, "enhanced": "5.7.1"}),
               rec(2, "smtp_error", "error", "T", reply={"code": 550, "enhanced": "5.7.1"}),
               rec(3, "smtp_error", "warning", "T", reply={"code": 451, "enhanced": "4.7.500"}),
               rec(4, "smtp_error", "warning", "T", reply={"code": 535, "enhanced": None})]
    s = summary_of(records)
    (finding,) = s["findings"]
    assert finding["severity"] == "error" and finding["count"] == 4 and finding["sessions"] == ["C0001", "C0002", "C0003", "C0004"]
    assert finding["detail"].endswith("ended with an error reply (550 5.7.1 ×2, 451 4.7.500, 535).")
    assert s["headline"].startswith("3 of 4 sessions failed. Main problem: T — 4 of 4 session(s)")


@pytest.mark.parametrize("syn_counts, text", [
    ([1, 1], "none was retried"),
    ([4, 4], "all were retried 3 time(s)"),
    ([2, 6, 4], "retried 1–5 times"),
])
def test_unanswered_syns(syn_counts, text):
    s = summary_of([rec(n, "syn_unanswered", syn_count=c) for n, c in enumerate(syn_counts)])
    finding = s["findings"][0]
    assert f"got no answer; {text}; the SYNs passed this capture point: the drop is between here and Microsoft." in finding["detail"]
    assert s["dropped_before_microsoft"]["answer"] == "yes"
    assert s["dropped_before_microsoft"]["detail"] == (
        f"{len(syn_counts)} of {len(syn_counts)} connection attempt(s) to Microsoft never reached it: "
        f"{len(syn_counts)} got no answer at all (SYNs dropped).")


def test_forged_resets_icmp_and_partial_reach():
    records = [rec(1, "reset_by_middlebox", rst={"hops": 2}), rec(2, "reset_by_middlebox", rst={"hops": 0}),
               rec(3, "reset_by_middlebox", rst={"hops": 2}),
               rec(4, "rejected_icmp", icmp={"from": "10.0.0.1", "name": "admin prohibited"}),
               rec(5, "rejected_icmp", icmp={"from": "10.0.0.254", "name": "admin prohibited"}),
               rec(6, "completed", "ok"), rec(7, "incomplete", "info")]
    s = summary_of(records)
    by_outcome = {f["outcome"]: f for f in s["findings"]}
    assert by_outcome["reset_by_middlebox"]["detail"].endswith("(the RSTs came from 0, 2 hop(s) away).")
    assert by_outcome["rejected_icmp"]["detail"].endswith("were rejected by 10.0.0.1, 10.0.0.254 (ICMP admin prohibited).")
    dropped = s["dropped_before_microsoft"]
    assert dropped["answer"] == "partly"
    assert dropped["detail"] == ("5 of 7 connection attempt(s) to Microsoft never reached it: 3 were reset by a device on "
                                 "the path; 2 were rejected with ICMP by a router. 1 did reach Microsoft.")
    assert s["outcomes"] == {"reset_by_middlebox": 3, "rejected_icmp": 2, "completed": 1, "incomplete": 1}
    assert [f["count"] for f in s["findings"]][:2] == [3, 2]  # errors first, the most frequent first


def test_targets_are_named_and_ordered_by_attempts():
    records = [rec(1, "completed", "ok", server="192.0.2.5", port=25, microsoft=False, server_name="mx.example.net"),
               rec(2, "rejected_rst", "error", server="192.0.2.9", port=25, microsoft=False),
               rec(3, "rejected_rst", "error", server="192.0.2.9", port=25, microsoft=False),
               rec(4, "completed", "ok", role="mx", port=25),
               rec(5, "tls_failed", "error", server="40.97.1.1", server_name="smtp.office365.com",
                   microsoft_evidence=[{"source": "dns", "detail": "y"}])]
    s = summary_of(records)
    assert [(t["target"], t["attempts"]) for t in s["targets"]] == [
        ("192.0.2.9:25", 2), ("mx.example.net:25", 1), (f"{SERVICE_LABELS['mx']}:25", 1), ("smtp.office365.com:587", 1)]
    assert s["targets"][0]["microsoft"] is False and s["targets"][3]["microsoft"] is True
    assert s["targets"][0]["outcomes"] == {"rejected_rst": 2}
    details = [f["detail"] for f in s["findings"]]
    assert "2 of 2 attempt(s) to 192.0.2.9:25 were refused by the server itself (RST)." in details
    assert "1 of 1 session(s) to smtp.office365.com:587: TLS failed." in details


def test_dns_failures_and_dns_sessions():
    records = [rec(1, "completed", "ok", server_name="good.example"), rec(2, "completed", "ok", service="dns")]
    dns = [{"qname": "good.example", "status": "answered", "rcode": "SERVFAIL"},
           {"qname": "gone.example", "status": "answered", "rcode": "NXDOMAIN"},
           {"qname": "gone.example", "status": "no_response", "rcode": None},
           {"qname": "gone.example", "status": "answered", "rcode": "NXDOMAIN"},
           {"qname": "fine.example", "status": "answered", "rcode": "NOERROR"},
           {"qname": "late.example", "status": "capture_end", "rcode": None}]
    s = summary_of(records, dns)
    assert s["sessions"] == 1  # DNS-over-TCP records are not mail sessions
    dns_findings = {f["title"]: f for f in s["findings"] if f["outcome"] == "dns_failure"}
    assert set(dns_findings) == {"DNS lookup of good.example failed (SERVFAIL)", "DNS lookup of gone.example failed (NXDOMAIN)",
                                 "DNS lookup of gone.example failed (no response)"}
    assert dns_findings["DNS lookup of good.example failed (SERVFAIL)"]["severity"] == "warning"
    assert dns_findings["DNS lookup of gone.example failed (NXDOMAIN)"]["detail"].endswith("the mail never left this host.")
    assert dns_findings["DNS lookup of gone.example failed (NXDOMAIN)"]["count"] == 2
    assert "failed 2 times (NXDOMAIN)" in dns_findings["DNS lookup of gone.example failed (NXDOMAIN)"]["detail"]
    assert dns_findings["DNS lookup of gone.example failed (no response)"]["count"] == 1
    assert s["findings"][0]["severity"] == "error"


def test_many_names_failing_alike_make_one_dns_finding():
    """Past MAX_DNS_FAILURE_FINDINGS names failing for one reason (a resolver outage), they are
    one finding naming the most failing ones; fewer keep a finding each, in the order they came."""
    from analyzer.diagnosis import summary as summary_module

    limit = summary_module.MAX_DNS_FAILURE_FINDINGS
    outage = [{"qname": f"t{n}.mail.protection.outlook.com", "status": "answered", "rcode": "SERVFAIL"}
              for n in range(limit + 4)]
    outage += [{"qname": "t3.mail.protection.outlook.com", "status": "answered", "rcode": "SERVFAIL"}] * 2
    few = [{"qname": f"gone{n}.example", "status": "answered", "rcode": "NXDOMAIN"} for n in range(limit)]
    records = [rec(1, "completed", "ok", server_name="gone0.example")]
    found = [f for f in summary_of(records, few[:2] + outage + few[2:])["findings"] if f["outcome"] == "dns_failure"]
    (big,) = [f for f in found if "SERVFAIL" in f["title"]]
    assert big["title"] == f"DNS lookups of {limit + 4:,} names failed (SERVFAIL)" and big["count"] == limit + 6
    assert big["detail"].startswith(f"The DNS lookups of {limit + 4} names failed {limit + 6} times (SERVFAIL): "
                                    "t3.mail.protection.outlook.com (3 times), t0.mail.protection.outlook.com (1 time)")
    assert f"and {limit + 4 - summary_module.NAMES_PER_DNS_FINDING} more; no connection to any of them" in big["detail"]
    assert big["severity"] == "error" and big["target"] is None
    nx = [f for f in found if "NXDOMAIN" in f["title"]]
    # Each its own, in the order they came, errors first (gone0's name was connected to: a warning).
    assert [f["target"] for f in nx] == [f"gone{n}.example" for n in range(1, limit)] + ["gone0.example"]
    assert nx[-1]["severity"] == "warning" and all(f["severity"] == "error" for f in nx[:-1])


def test_many_targets_alike_make_one_finding_beside_the_large_ones():
    """A scan: past MAX_ALIKE_TARGET_FINDINGS targets with one kind of finding, the large ones
    (1 % of the kind's sessions or more) keep theirs, the rest make one, naming the largest."""
    from analyzer.diagnosis import summary as summary_module

    limit = summary_module.MAX_ALIKE_TARGET_FINDINGS
    n = iter(range(10_000))
    title = "Outbound port 25 appears blocked (SYNs dropped)"
    records = [rec(next(n), "syn_unanswered", title=title, server="52.101.0.1", port=25) for _ in range(300)]
    records += [rec(next(n), "syn_unanswered", title=title, server=f"198.51.100.{k}", port=25, microsoft=False)
                for k in range(limit + 3) for _ in range(2 if k == 0 else 1)]
    refused = "Connection refused by the server (RST on port 25)"
    records += [rec(next(n), "rejected_rst", title=refused, server=f"203.0.113.{k}", port=25, microsoft=False)
                for k in range(limit + 1)]
    few = [rec(next(n), "smtp_error", title="Relay denied", server=f"192.0.2.{k}", port=25, microsoft=False,
               reply={"code": 550, "enhanced": "5.7.1"}) for k in range(limit)]
    s = summary_of(records + few)
    dropped = [f for f in s["findings"] if f["title"] == title]
    assert [f["count"] for f in dropped] == [300, limit + 4] and dropped[0]["target"]  # 198.51.100.0: 2 of 313, under 1 %
    rest = dropped[1]
    assert rest["count"] == limit + 4 and len(rest["sessions"]) == limit + 4
    assert rest["detail"].startswith(f"{limit + 4} connection(s) to {limit + 3} other servers ended the same way "
                                     "(syn_unanswered): 198.51.100.0:25 (2), 198.51.100.1:25 (1)")
    assert rest["detail"].endswith(f" and {limit + 3 - summary_module.TARGETS_PER_FINDING} more.")
    (all_small,) = [f for f in s["findings"] if f["title"] == refused]
    assert all_small["detail"].startswith(f"{limit + 1} connection(s) to {limit + 1} servers ended the same way")
    assert len([f for f in s["findings"] if f["title"] == "Relay denied"]) == limit  # not past the limit: one each
    assert sum(f["count"] for f in s["findings"]) == len(records) + len(few)
