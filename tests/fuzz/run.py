"""Run smtpflow on mutated captures until a packet budget is spent; report crashes and hangs.

    python -m tests.fuzz.run --packets 1000000 --seed 1
    python -m tests.fuzz.run --seed 1 --replay captures/syn-dropped.pcap:417   # one mutant, traceback shown

Seeds are the captures in ``captures/`` and, when present, the public Zeek corpus in
``../shared/corpus/zeek/``. Mutants (``mutate.py``) run in a forked worker that calls
:func:`analyzer.analyze` in-process, then reads the result as a user would (exit code,
summary, JSON lines, and every 16th time the DataFrames), every other pair of
mutants with ``ports="all"``. Per mutant:

* **crash**: any exception other than ``analyzer.capture.CaptureError`` (a clean "not a
  capture"), a parser's note of an internal error (it caught its own bug: with the
  compiled modules, an annotation that lied), or the worker dying (a signal from native code);
* **hang**: no result within ``--time-limit`` seconds (SIGALRM interrupts Python code; a
  worker stuck in native code is killed);
* **exit-code**: a truncation inside a record not reported as damage (exit code 3), or one
  at a record boundary reported as damage;
* **memory**: the worker's peak RSS rising by more than ``--memory-limit`` MiB in one mutant.

Every finding is printed with the seed capture, the mutant number and its mutations, and
the mutant is saved; ``--replay NAME:N`` with the same ``--seed`` rebuilds exactly that
mutant. The exit status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import glob
import io
import itertools
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from .mutate import Mutant, SeedCapture

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("SMTPFLOW_SHARED", os.path.join(os.path.dirname(ROOT), "shared"))
ZEEK_CORPUS = os.path.join(SHARED, "corpus", "zeek")
SEED_PATTERNS = ("*.pcap", "*.pcapng", "*.pcap.gz")
#: Build the DataFrames for every this many mutants (they cost more than the analysis).
FRAMES_EVERY = 16
#: Extra seconds the parent waits beyond the time limit before it kills a silent worker.
KILL_GRACE_S = 5.0


def default_seeds() -> list[SeedCapture]:
    """The bundled captures and the Zeek corpus (if present), named by path relative to their root.

    Nearly all of them are pcap files, so each pcap seed also gets a pcapng twin (every other
    one big-endian): the pcapng block mutations need seeds too. A bundled capture's twin carries
    its key log (``NAME.keys``) in a Decryption Secrets Block, so decryption is fuzzed too.
    """
    seeds = []
    for base, prefix in ((os.path.join(ROOT, "captures"), "captures"), (ZEEK_CORPUS, "zeek")):
        paths = sorted({p for pattern in SEED_PATTERNS for p in glob.glob(os.path.join(base, "**", pattern), recursive=True)})
        for path in paths:
            seeds.append(SeedCapture.load(path, f"{prefix}/{os.path.relpath(path, base)}"))
    twins = [seed.pcapng_twin(">" if i % 2 else "<", _key_log_beside(seed)) for i, seed in enumerate(seeds)]
    return seeds + [twin for twin in twins if twin is not None]


def _key_log_beside(seed: SeedCapture) -> bytes:
    """A bundled capture's key log (captures/NAME.keys), which its pcapng twin then carries."""
    if not seed.name.startswith("captures/"):
        return b""
    path = os.path.join(ROOT, seed.name[: -len(".pcap")] + ".keys") if seed.name.endswith(".pcap") else ""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


@dataclass
class Finding:
    kind: str  # crash, hang, exit-code, memory
    seed_name: str
    n: int
    steps: str
    detail: str
    saved: str

    def render(self, seed: int) -> str:
        return (f"{self.kind.upper()}: {self.seed_name} mutant {self.n} [{self.steps}]\n    {self.detail}\n"
                f"    saved: {self.saved}\n    reproduce: python -m tests.fuzz.run --seed {seed} --replay {self.seed_name}:{self.n}")


@dataclass
class Summary:
    seed: int
    seeds: int
    mutants: int = 0
    packets: int = 0
    elapsed: float = 0.0
    peak_rss_kib: int = 0
    largest_rise_kib: int = 0
    outcomes: Counter = field(default_factory=Counter)
    mutations: Counter = field(default_factory=Counter)
    findings: list[Finding] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def crashes(self) -> list[Finding]:
        return self.of_kind("crash")

    @property
    def hangs(self) -> list[Finding]:
        return self.of_kind("hang")

    def render(self) -> str:
        lines = [
            f"smtpflow fuzz: seed {self.seed}, {self.seeds} seed captures, {self.elapsed:.1f} s",
            f"  mutants            {self.mutants:,}",
            f"  packets processed  {self.packets:,}",
            "  outcomes           " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.outcomes.items())),
            f"  crashes            {len(self.crashes)}",
            f"  hangs              {len(self.hangs)}",
            f"  exit-code errors   {len(self.of_kind('exit-code'))}",
            f"  memory blow-ups    {len(self.of_kind('memory'))}",
            f"  peak RSS           {self.peak_rss_kib / 1024:.1f} MiB (largest rise in one mutant: {self.largest_rise_kib / 1024:.1f} MiB)",
            "  mutations          " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.mutations.items())),
        ]
        lines += [f.render(self.seed) for f in self.findings]
        return "\n".join(lines)


class MutantTimeout(BaseException):
    """Raised by SIGALRM inside the worker (a BaseException, so no ``except Exception`` eats it)."""


def analyse_mutant(path: str, n: int) -> tuple[str, int, int]:
    """Analyse mutant ``n`` as a user would; returns (outcome, exit code, packets).

    Every other pair of mutants runs with ``ports="all"``, so traffic on any port reaches
    the stream analyzers; every 16th also builds the DataFrames.
    """
    import analyzer
    from analyzer.capture import CaptureError

    try:
        analysis = analyzer.analyze(path, ports="all" if (n // 2) % 2 else "default")
    except CaptureError:
        return "not a capture", 2, 0
    code = analysis.exit_code
    analysis.summary()
    written = io.StringIO()
    analysis.to_jsonl(written)
    at = written.getvalue().find("internal error")
    if at >= 0:  # a parser that caught its own bug is a crash all the same
        raise AssertionError("a parser reported an internal error: " + written.getvalue()[at:at + 300].split("\n", 1)[0])
    if n % FRAMES_EVERY == 0:
        for name in ("sessions", "events", "replies", "tls", "dns"):
            getattr(analysis, name)
    return ("damaged" if code == 3 else "analysed"), code, analysis.stats["packets"]


def _worker(conn, seeds: list[SeedCapture], seed: int, time_limit: float, workdir: str) -> None:
    def alarm(_signum, _frame):
        raise MutantTimeout()

    signal.signal(signal.SIGALRM, alarm)
    while True:
        job = conn.recv()
        if job is None:
            return
        index, n = job
        mutant = seeds[index].mutant(seed, n)
        path = os.path.join(workdir, "mutant" + mutant.suffix)
        with open(path, "wb") as fh:
            fh.write(mutant.data)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        signal.setitimer(signal.ITIMER_REAL, time_limit)
        try:
            outcome, code, packets = analyse_mutant(path, n)
            detail = ""
        except MutantTimeout:
            outcome, code, packets, detail = "hang", -1, 0, f"no result after {time_limit} s:\n" + _tail(traceback.format_exc())
        except Exception as exc:  # noqa: BLE001 - every escaping exception is what we are looking for
            outcome, code, packets, detail = "crash", -1, 0, f"{type(exc).__name__}: {exc}\n" + _tail(traceback.format_exc())
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            os.unlink(path)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        kinds = [step.split("(", 1)[0] for step in mutant.steps]
        conn.send((outcome, code, packets, detail, after, after - before, mutant.expect, kinds))


def _tail(text: str, lines: int = 8) -> str:
    return "\n".join("      " + line for line in text.rstrip().splitlines()[-lines:])


class Fuzzer:
    """Hands mutants to a forked worker and collects what comes back."""

    def __init__(self, seeds: list[SeedCapture], seed: int, time_limit: float, memory_limit_mib: int, out_dir: str | None) -> None:
        self.seeds = seeds
        self.seed = seed
        self.time_limit = time_limit
        self.memory_limit_kib = memory_limit_mib * 1024
        self.out_dir = out_dir
        self.summary = Summary(seed, len(seeds))
        self._ctx = multiprocessing.get_context("fork")
        self._workdir = tempfile.mkdtemp(prefix="smtpflow-fuzz-work-")
        self._proc = None
        self._conn = None

    def _start(self) -> None:
        import analyzer.report.analysis  # noqa: F401 - import once, before forking
        import pandas  # noqa: F401

        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=_worker, args=(child, self.seeds, self.seed, self.time_limit, self._workdir), daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent

    def _stop(self, kill: bool = False) -> None:
        if self._proc is None:
            return
        if kill:
            self._proc.kill()
        else:
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        self._proc.join(10)
        self._conn.close()
        self._proc = self._conn = None

    def _save(self, mutant: Mutant, kind: str, name: str, n: int) -> str:
        if self.out_dir is None:
            self.out_dir = tempfile.mkdtemp(prefix="smtpflow-fuzz-")
        os.makedirs(self.out_dir, exist_ok=True)
        path = os.path.join(self.out_dir, f"{kind}-{name.replace('/', '_')}-{self.seed}-{n}{mutant.suffix}")
        with open(path, "wb") as fh:
            fh.write(mutant.data)
        return path

    def _record(self, kind: str, index: int, n: int, detail: str) -> None:
        seed = self.seeds[index]
        mutant = seed.mutant(self.seed, n)  # rebuilt here: the worker may be gone
        self.summary.findings.append(Finding(kind, seed.name, n, mutant.describe(), detail, self._save(mutant, kind, seed.name, n)))

    def one(self, index: int, n: int) -> None:
        if self._proc is None:
            self._start()
        summary = self.summary
        summary.mutants += 1
        self._conn.send((index, n))
        if not self._conn.poll(self.time_limit + KILL_GRACE_S):
            self._stop(kill=True)
            summary.outcomes["hang"] += 1
            self._record("hang", index, n, f"worker silent for {self.time_limit + KILL_GRACE_S} s (stuck in native code?)")
            return
        try:
            outcome, code, packets, detail, rss, rise, expect, kinds = self._conn.recv()
        except EOFError:
            self._proc.join(5)
            exitcode = self._proc.exitcode
            self._stop(kill=True)
            summary.outcomes["crash"] += 1
            self._record("crash", index, n, f"the worker died (exit code {exitcode}: a signal from native code)")
            return
        summary.outcomes[outcome] += 1
        summary.mutations.update(kinds)
        summary.packets += packets
        summary.peak_rss_kib = max(summary.peak_rss_kib, rss)
        summary.largest_rise_kib = max(summary.largest_rise_kib, rise)
        if outcome in ("crash", "hang"):
            self._record(outcome, index, n, detail)
        if outcome in ("analysed", "damaged") and (expect == "damaged" and code != 3 or expect == "clean" and code == 3):
            self._record("exit-code", index, n, f"exit code {code} for a truncation {'inside a record' if expect == 'damaged' else 'at a record boundary'}")
        if rise > self.memory_limit_kib:
            self._record("memory", index, n, f"peak RSS rose by {rise / 1024:.0f} MiB")

    def run(self, packets: int, max_findings: int, progress: bool = False) -> Summary:
        """Mutant n of every seed, then n + 1 …, until the packet budget is spent (or too much was found)."""
        started = time.perf_counter()
        last_report = started
        summary = self.summary
        try:
            for n in itertools.count():
                for index in range(len(self.seeds)):
                    if summary.packets >= packets or len(summary.findings) >= max_findings:
                        return summary
                    self.one(index, n)
                if progress and time.perf_counter() - last_report > 10:
                    last_report = time.perf_counter()
                    print(f"  … {summary.mutants:,} mutants, {summary.packets:,} packets, {len(summary.findings)} findings",
                          file=sys.stderr)
        finally:
            self._stop()
            shutil.rmtree(self._workdir, ignore_errors=True)  # a killed worker leaves its mutant behind
            summary.elapsed = time.perf_counter() - started


def fuzz(packets: int, seed: int, *, seeds: list[SeedCapture] | None = None, time_limit: float = 10.0,
         memory_limit_mib: int = 256, max_findings: int = 50, out_dir: str | None = None, progress: bool = False) -> Summary:
    """Fuzz until ``packets`` packets went through smtpflow, or ``max_findings`` were found."""
    seeds = seeds if seeds is not None else default_seeds()
    if not seeds:
        raise SystemExit("no seed captures found")
    return Fuzzer(seeds, seed, time_limit, memory_limit_mib, out_dir).run(packets, max_findings, progress)


def replay(name: str, n: int, seed: int) -> int:
    """Rebuild one mutant and analyse it here, traceback and all."""
    matches = [s for s in default_seeds() if s.name == name]
    if not matches:
        raise SystemExit(f"no seed capture named {name}")
    mutant = matches[0].mutant(seed, n)
    print(f"{name} mutant {n}: {mutant.describe()}")
    with tempfile.NamedTemporaryFile(suffix=mutant.suffix, delete=False) as fh:
        fh.write(mutant.data)
    print(f"mutant saved as {fh.name}")
    outcome, code, packets = analyse_mutant(fh.name, n)
    print(f"{outcome}: exit code {code}, {packets} packets (expected: {mutant.expect or 'anything but a crash'})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=1_000_000, help="stop after this many packets were analysed")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=10.0, help="seconds per mutant before it counts as a hang")
    parser.add_argument("--memory-limit", type=int, default=256, help="MiB of peak-RSS rise per mutant that counts as a blow-up")
    parser.add_argument("--max-findings", type=int, default=50, help="stop once this many findings were made")
    parser.add_argument("--out", help="directory for mutants that found something (default: a new temporary directory)")
    parser.add_argument("--replay", metavar="NAME:N", help="rebuild and analyse one mutant in this process")
    args = parser.parse_args(argv)
    if args.replay:
        name, _, n = args.replay.rpartition(":")
        return replay(name, int(n), args.seed)
    summary = fuzz(args.packets, args.seed, time_limit=args.time_limit, memory_limit_mib=args.memory_limit,
                   max_findings=args.max_findings, out_dir=args.out, progress=True)
    print(summary.render())
    return 1 if summary.findings else 0


if __name__ == "__main__":
    sys.exit(main())
