"""Record fields that are computed, not copied: times in seconds."""

from __future__ import annotations

import random

import pytest

from analyzer.diagnosis.records import PLAIN_SECONDS_BELOW_NS, seconds

EPOCH_2025 = 1_764_000_000 * 10**9


@pytest.mark.parametrize("ns", [
    0, 1, 499, 500, 501, 999, 1000, 1500, 2500,  # ties round to even, as round() does
    EPOCH_2025, EPOCH_2025 + 500, EPOCH_2025 + 123_456_789, EPOCH_2025 + 249, EPOCH_2025 + 251, EPOCH_2025 + 749,
    EPOCH_2025 + 751, EPOCH_2025 + 999_999_999, PLAIN_SECONDS_BELOW_NS - 1, PLAIN_SECONDS_BELOW_NS + 501,
    -1, -1_500,
])
def test_seconds_are_round_to_six_places(ns):
    assert seconds(ns) == round(ns / 10**9, 6)


def test_seconds_equal_round_on_many_times():
    """Epoch times in nanoseconds (near microsecond boundaries above all: there the float of
    ns / 1e9 may round the other way) and in whole microseconds (pcap's resolution)."""
    rng = random.Random(7)
    for _ in range(200_000):
        base = rng.choice([0, EPOCH_2025, 4_000_000_000 * 10**9, 3600 * 10**9])
        for ns in (base + rng.randrange(10**13), base + rng.randrange(10**9) * 1000,
                   base + rng.randrange(10**6) * 1000 + rng.choice([1, 249, 250, 251, 499, 500, 501, 749, 750, 751, 999])):
            assert seconds(ns) == round(ns / 10**9, 6), ns
