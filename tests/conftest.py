"""Shared test set-up: the crafting helpers are importable, the shared corpus is optional."""

from __future__ import annotations

import os
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)

#: Public captures with peers' ground truth (Zeek), outside the project: `../shared/corpus`.
SHARED = os.environ.get("SMTPFLOW_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
ZEEK_CORPUS = os.path.join(SHARED, "corpus", "zeek")


def zeek_corpus_or_skip() -> str:
    if not os.path.isfile(os.path.join(ZEEK_CORPUS, "expected.json")):
        pytest.skip(f"the public Zeek corpus is not available at {ZEEK_CORPUS} (a user's clone has no ../shared)")
    return ZEEK_CORPUS
