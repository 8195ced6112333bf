"""A mutation fuzzer for smtpflow's capture-to-record pipeline.

``mutate`` turns real capture files into seeded, reproducible mutants (truncations, bit
flips, absurd length fields, snaplen cuts, duplicated, dropped and reordered packets, bogus
link types, broken pcapng blocks); ``run`` feeds them to :func:`analyzer.analyze` in a
worker process with a time limit per mutant and reports crashes, hangs and peak RSS::

    python -m tests.fuzz.run --packets 1000000 --seed 1
"""
