"""A short, seeded run of the mutation fuzzer (``tests/fuzz``) in the normal test suite.

The same mutants every run (the seed is fixed): truncations at every record boundary and
inside records, bit flips, absurd length fields, snaplen cuts, duplicated, dropped and
reordered packets, bogus link types, broken pcapng blocks and compressed streams. The long
run is ``make fuzz`` (a million packets). A second test checks the harness itself: that it
notices an exception, a dying worker, and hangs in Python and in native code.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time

import pytest

import analyzer
from conftest import ROOT
from fuzz.mutate import SeedCapture
from fuzz.run import fuzz

SEED = 7
PACKETS = 150_000


@pytest.mark.slow
def test_short_fuzz_run_finds_no_crash_hang_or_wrong_exit_code(tmp_path):
    summary = fuzz(PACKETS, SEED, out_dir=str(tmp_path))
    report = summary.render()
    assert summary.packets >= PACKETS and summary.mutants > 3000, report
    assert summary.outcomes["damaged"] > 0 and summary.outcomes["not a capture"] > 0, report
    assert summary.crashes == [], report
    assert summary.hangs == [], report
    assert summary.findings == [], report  # nor exit-code errors or memory blow-ups


def _broken_analyze(behaviour: str):
    def analyze(path, **_options):
        if behaviour == "raises":
            raise ValueError("boom")
        if behaviour == "dies":
            faulthandler.disable()  # no traceback dump on the test's own output
            os.kill(os.getpid(), signal.SIGSEGV)
        if behaviour == "native hang":  # what a loop in C looks like: the alarm cannot interrupt it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        time.sleep(60)

    return analyze


@pytest.mark.parametrize("behaviour, kind, says", [
    ("raises", "crash", "ValueError: boom"),
    ("dies", "crash", "the worker died (exit code -11"),
    ("hangs", "hang", "no result after 1.0 s"),
    ("native hang", "hang", "worker silent"),
])
def test_the_fuzzer_reports_crashes_deaths_and_hangs(monkeypatch, tmp_path, behaviour, kind, says):
    """The harness itself: the forked worker inherits this broken analyze()."""
    monkeypatch.setattr(analyzer, "analyze", _broken_analyze(behaviour))
    seed = SeedCapture.load(os.path.join(ROOT, "captures", "syn-dropped.pcap"), "captures/syn-dropped.pcap")
    summary = fuzz(10**9, SEED, seeds=[seed], time_limit=1.0, max_findings=1, out_dir=str(tmp_path))
    (finding,) = summary.findings
    assert finding.kind == kind and says in finding.detail, summary.render()
    assert finding.seed_name == "captures/syn-dropped.pcap" and finding.n == 0
    assert open(finding.saved, "rb").read() == seed.mutant(SEED, 0).data
