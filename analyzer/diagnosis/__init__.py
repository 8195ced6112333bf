"""Diagnosis layer: Microsoft endpoint identification, outcomes, verdicts, capture summary.

It reads session facts (from :mod:`analyzer.flows` and :mod:`analyzer.protocols`) and the
knowledge data in ``data/`` (compiled from Microsoft's documentation, with sources and
confidence) and writes the session records of the JSON contract (:mod:`.records`).
"""
