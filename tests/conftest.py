"""Shared test set-up: the crafting helpers are importable, the shared corpus is optional."""

from __future__ import annotations

import gc
import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

#: Public captures with peers' ground truth (Zeek), outside the project: `../shared/corpus`.
SHARED = os.environ.get("SMTPFLOW_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
ZEEK_CORPUS = os.path.join(SHARED, "corpus", "zeek")


@pytest.fixture(autouse=True)
def _collector_as_usual_between_tests():
    """The command line freezes what its run made (``cli._results_kept_until_exit``): its
    process ends soon after. The tests' process goes on, so that is undone after each test."""
    yield
    if gc.get_freeze_count():
        gc.unfreeze()


def zeek_corpus_or_skip() -> str:
    if not os.path.isfile(os.path.join(ZEEK_CORPUS, "expected.json")):
        pytest.skip(f"the public Zeek corpus is not available at {ZEEK_CORPUS} (a user's clone has no ../shared)")
    return ZEEK_CORPUS


def all_captures() -> list[str]:
    """The bundled captures, and the Zeek corpus's when ``../shared`` is there."""
    import glob

    paths = sorted(glob.glob(os.path.join(ROOT, "captures", "*.pcap*")))
    if os.path.isdir(ZEEK_CORPUS):
        paths += sorted(glob.glob(os.path.join(ZEEK_CORPUS, "**", "*.pcap*"), recursive=True))
    return paths


def analyse_twice(path, switches: list[tuple[object, str]], **options) -> list[tuple]:
    """Analyse ``path`` as configured, then with every switch — an (object, attribute) pair
    such as a fast path's on/off flag — set to False (each is put back afterwards). Returns
    both results as (records, events, statistics without the time taken, exit code), the
    first two as canonical JSON."""
    import json

    import analyzer

    results = []
    for configured in (True, False):
        saved = [getattr(obj, name) for obj, name in switches]
        if not configured:
            for obj, name in switches:
                setattr(obj, name, False)
        try:
            a = analyzer.analyze(path, **options)
        finally:
            for (obj, name), value in zip(switches, saved):
                setattr(obj, name, value)
        stats = {key: value for key, value in a.stats.items() if key != "elapsed_s"}
        records = json.dumps(list(a.records), sort_keys=True, default=str)
        events = json.dumps(dict(a._result.events), sort_keys=True, default=str)
        results.append((records, events, stats, a.exit_code))
    return results
