"""The ``smtpflow`` command.

Exit codes (documented in the README):

  0  analysed
  1  internal error (a bug: short message, full traceback with --debug)
  2  bad usage, or an input that is missing, unreadable or not a capture
  3  analysed, but a capture was damaged (truncated or corrupt): results are partial
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import os
import sys
import traceback
from typing import Any, Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3

#: Files smaller than this finish before a progress bar is worth drawing.
PROGRESS_MIN_BYTES = 32 * 1024 * 1024

FORMATS = ("table", "jsonl", "csv", "parquet", "zeek")


class UsageError(Exception):
    """A mistake in how smtpflow was called: one line to stderr, exit 2."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ports", metavar="LIST", help="TCP ports to follow: comma-separated, or 'all' (default: 25,465,587,2525 plus Microsoft's ranges)")
    parser.add_argument("--endpoint", action="append", default=[], metavar="NET|HOST[=LABEL]",
                        help="treat this network or host name like a Microsoft endpoint (repeatable)")
    parser.add_argument("--config", metavar="FILE", help="configuration file (TOML; see README)")
    parser.add_argument("--checksums", choices=("auto", "verify", "off"), help="TCP checksum policy (default auto)")
    parser.add_argument("--show-auth-user", action="store_true", default=None,
                        help="show the user name of AUTH exchanges (passwords and tokens are never shown)")
    parser.add_argument("--keylog", action="append", default=[], metavar="FILE",
                        help="NSS key log (SSLKEYLOGFILE) to decrypt TLS sessions with (repeatable)")
    parser.add_argument("--table-memory", type=_megabytes, metavar="MB",
                        help="what the connections open at once may hold together (default 128); past it the least "
                        "recently active are let go early (end_reason table_full)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no banner")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks of internal errors")


def _time(text: str) -> int:
    from .capture.window import TimeError, parse_time

    try:
        return parse_time(text)
    except TimeError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=_time, metavar="TIME",
                        help="read only the packets from TIME on: ISO 8601 (2026-11-27T14:05:00Z; UTC unless an offset is "
                        "given) or seconds since the epoch")
    parser.add_argument("--until", type=_time, metavar="TIME",
                        help="read only the packets before TIME (as editcap -A/-B would cut the capture)")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="smtpflow",
        description="Why does mail to Microsoft 365 get through or not? Answered from packet captures.",
    )
    parser.add_argument("--version", action="version", version=f"smtpflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    analyze = sub.add_parser("analyze", help="analyse capture files (pcap, pcapng, gzip; directories and globs)",
                             description="Reconstruct every SMTP session in the captures and diagnose it.")
    analyze.add_argument("files", nargs="+", metavar="FILE", help="capture files, directories or glob patterns")
    analyze.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    analyze.add_argument("-o", "--output", metavar="PATH", help="write to this file (jsonl, csv) or directory (parquet, zeek, csv)")
    analyze.add_argument("--failed", action="store_true", help="table: list only sessions with a problem")
    analyze.add_argument("--rows", type=_rows, default=None, metavar="N",
                         help="table: list at most N sessions, the failing ones first (default 2,000; 0: all)")
    analyze.add_argument("--workers", type=_workers, default="auto", metavar="N|auto",
                         help="use N processes: several files are read in parallel, one capture is split by connection "
                         "(same results); auto (default): the cores, for inputs over 32 MB (one capture: when SMTP is 10%% or more of it)")
    analyze.add_argument("--dask", metavar="ADDRESS", help="read the files on a Dask cluster (tcp://scheduler:8786); workers need the same paths")
    _window(analyze)
    _common(analyze)

    report = sub.add_parser("report", help="write a self-contained HTML report with timelines and transcripts",
                            description="Analyse captures and write DIR/report.html plus its PNG figures.")
    report.add_argument("files", nargs="+", metavar="FILE", help="capture files, directories or glob patterns")
    report.add_argument("-o", "--output", required=True, metavar="DIR", help="directory for report.html and the PNGs")
    _window(report)
    _common(report)

    live = sub.add_parser("live", help="capture on interfaces and diagnose as traffic flows",
                          description="Capture live (Linux), reconstruct and diagnose sessions as they happen; "
                          "Ctrl-C, SIGTERM, --duration or --count stop it cleanly.")
    live.add_argument("-i", "--interface", action="append", required=True, metavar="IFACE",
                      help="interface to capture on (repeatable; 'any' = every interface that is up)")
    live.add_argument("--filter", metavar="BPF", help="extra capture filter, ANDed with smtpflow's own (tcpdump syntax)")
    live.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    live.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    live.add_argument("-w", "--write", metavar="DIR", help="keep what was captured in a ring of pcapng files in DIR")
    live.add_argument("--ring-size", type=float, default=100.0, metavar="MB", help="rotate ring files at this size (default 100)")
    live.add_argument("--ring-files", type=int, default=10, metavar="N", help="keep this many ring files (default 10)")
    live.add_argument("--ring-seconds", type=float, metavar="S", help="also rotate ring files after S seconds")
    live.add_argument("--report", metavar="DIR", help="write the HTML report here when the capture stops")
    live.add_argument("--format", choices=("table", "jsonl"), default="table", help="final output (default table)")
    live.add_argument("-o", "--output", metavar="FILE", help="write the final jsonl output to FILE")
    live.add_argument("--user", metavar="NAME", help="after opening the sockets, drop root and run as this user")
    _common(live)

    follow = sub.add_parser("follow", help="show one session as a dialogue, like Wireshark's Follow TCP Stream",
                            description="Print a session as a timestamped, direction-tagged dialogue.")
    follow.add_argument("args", nargs="+", metavar="FILE... SESSION", help="capture file(s), then a session id, id prefix or number")
    _window(follow)
    _common(follow)
    return parser


def _options(args: argparse.Namespace):
    from . import parse_ports
    from .config import ConfigError, load
    from .diagnosis.microsoft import UserEndpoint
    from .engine import Options

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    # A bad value is blamed on where it came from: the flag, or the configuration file.
    from_flag = args.ports is not None
    ports_spec: Any = args.ports if from_flag else config.ports
    if ports_spec is None:
        ports_spec = "default"
    try:
        ports = parse_ports(ports_spec)
    except (ValueError, TypeError) as exc:
        if from_flag:
            raise UsageError(f"--ports: {exc} (give e.g. 25,587 or all)") from None
        raise UsageError(f"{config.path}: ports: {exc} (give e.g. [25, 587] or \"all\")") from None
    endpoints = []
    for spec, where in [(e, f"{config.path}: endpoints") for e in config.endpoints] + [(e, "--endpoint") for e in args.endpoint]:
        try:
            endpoints.append(UserEndpoint.parse(spec))
        except ValueError as exc:
            raise UsageError(f"{where}: {exc}") from None
    show_user = args.show_auth_user if args.show_auth_user is not None else bool(config.show_auth_user)
    from .capture.window import TimeError, TimeWindow

    try:
        since, until = getattr(args, "since", None), getattr(args, "until", None)
        window = None if since is None and until is None else TimeWindow(since, until)
    except TimeError as exc:
        raise UsageError(f"--since/--until: {exc}") from None
    return Options(
        window=window,
        ports=ports,
        endpoints=tuple(endpoints),
        checksums=args.checksums or config.checksums or "auto",
        reveal_username=show_user,
        keylog=tuple(args.keylog) if args.keylog else tuple(config.keylog),
        table_memory_mb=args.table_memory or config.table_memory_mb,
    )


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _positive(text: str, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _rows(text: str) -> int:
    return 0 if text.strip() == "0" else _positive(text, "a number of sessions (0: all)")


def _megabytes(text: str) -> int:
    return _positive(text, "a whole number of megabytes")


def _workers(text: str) -> int | str:
    return text if text == "auto" else _positive(text, "a number or 'auto'")


@contextlib.contextmanager
def _results_kept_until_exit():
    """The run's objects (records, events, stored facts) live until this process ends: once it
    is over they are moved out of the cycle collector's sight (``gc.freeze``). The run keeps
    the collector off (``engine.cycle_collector_off``), so otherwise the first collection after
    it went over every object the run had made: 35-70 ms on an all-SMTP capture, 4-7 % of its
    time. A notebook's ``analyzer.analyze`` keeps the usual behaviour: its results may be dropped."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _run(files: list[str], options: Any, quiet: bool, workers: int | str = 1, dask: str | None = None):
    from .capture import STDIN, expand_inputs
    from .capture.interrupt import stop_reading_on_interrupt
    from .engine import refuse_empty_interruption, run
    from .report.analysis import Analysis

    progress = None
    bar = None
    try:
        total = sum(os.path.getsize(p) for p in expand_inputs(files) if os.path.isfile(p))
    except Exception:  # noqa: BLE001 - sizes are only for the progress bar; errors surface in run()
        total = 0
    piped = STDIN in files  # no size known: the bar counts what came, for as long as it comes
    if not quiet and sys.stderr.isatty() and (total >= PROGRESS_MIN_BYTES or piped):
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        label = "reading" if dask else "reading (Ctrl-C: stop here)"
        bar = Progress(TextColumn(label), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                       TextColumn("{task.fields[packets]}"), TimeRemainingColumn(), console=_console(stderr=True), transient=True)
        task = bar.add_task("read", total=None if piped else total, packets="")

        def progress(done: int, all_bytes: int, packets: int) -> None:
            bar.update(task, completed=done, total=None if piped else all_bytes, packets=f"{packets:,} packets")

        bar.start()
    client = None
    if dask:
        from .engine import refuse_stdin_on_cluster

        refuse_stdin_on_cluster(files)  # before connecting to the scheduler
        try:
            from distributed import Client
        except ImportError:
            raise UsageError("--dask needs the 'distributed' package (pip install 'dask[distributed]')") from None
        try:
            client = Client(dask, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise UsageError(f"--dask {dask}: cannot reach the scheduler: {exc}") from None
    try:
        if client is not None:  # the cluster reads: Ctrl-C interrupts, as ever
            return Analysis(run(files, options, progress, workers=workers, client=client))
        with stop_reading_on_interrupt(), _results_kept_until_exit():  # Ctrl-C ends the reading: what was read is still diagnosed
            result = run(files, options, progress, workers=workers, client=client)
        refuse_empty_interruption(result.capture)
        return Analysis(result)
    finally:
        if bar is not None:
            bar.stop()
        if client is not None:
            client.close()


def cmd_analyze(args: argparse.Namespace) -> int:
    options = _options(args)
    analysis = _run(args.files, options, args.quiet, args.workers, args.dask)
    fmt = args.format
    if fmt == "table":
        from .report.terminal import render_analysis

        if args.output:
            from rich.console import Console

            with open(args.output, "w", encoding="utf-8") as fh:
                render_analysis(Console(file=fh, width=160, no_color=True), analysis, only_failed=args.failed, limit=args.rows)
        else:
            render_analysis(_console(), analysis, only_failed=args.failed, limit=args.rows)
    elif fmt == "jsonl":
        if args.output:
            analysis.to_jsonl(args.output)
        else:
            analysis.to_jsonl(sys.stdout)
    else:
        from .report import exports

        exports.write(analysis, fmt, args.output)
    if fmt != "table" and not analysis.records and not args.quiet:
        from .report.safe import printable
        from .report.terminal import nothing_found

        # Machine formats stay clean on stdout; the human still learns why they are empty.
        print(f"smtpflow: {printable(nothing_found(analysis))}", file=sys.stderr)
    _report_problems(analysis)
    return analysis.exit_code


def cmd_report(args: argparse.Namespace) -> int:
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o {args.output}: exists and is not a directory")
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, whatever $DISPLAY says
    analysis = _run(args.files, _options(args), args.quiet)
    page = analysis.to_html(args.output)
    if not args.quiet:
        print(page)
    _report_problems(analysis)
    return analysis.exit_code


def cmd_live(args: argparse.Namespace) -> int:
    import signal

    from .capture.live import LivePermissionError
    from .livecapture import LiveCapture
    from .report.liveview import LiveView

    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    if args.count is not None and args.count <= 0:
        raise UsageError("--count must be positive")
    if args.ring_files < 1 or args.ring_size <= 0:
        raise UsageError("--ring-files and --ring-size must be positive")
    view = LiveView(_console(), quiet=args.quiet)
    try:
        capture = LiveCapture(
            args.interface, options=_options(args), bpf=args.filter, duration=args.duration, count=args.count,
            ring_dir=args.write, ring_size_mb=args.ring_size, ring_files=args.ring_files, ring_seconds=args.ring_seconds,
            on_session=view.on_session, on_tick=view.on_tick,
        )
        capture.open()
    except LivePermissionError as exc:
        raise UsageError(str(exc)) from None
    if args.user:
        _drop_privileges(args.user)

    def stop(_signum, _frame):
        capture._stop.set()

    signal.signal(signal.SIGTERM, stop)
    view.start(capture)
    try:
        analysis = capture.run()
    finally:
        view.stop()
    # Always said, like tcpdump's closing counts: silent loss is what users must never miss.
    stats = capture.stats
    print(f"smtpflow: capture stopped ({capture.stopped_reason}); {capture.packets:,} packets read, "
          f"{stats['kernel_dropped']:,} dropped by the kernel, {stats['kernel_seen']:,} passed the filter", file=sys.stderr)
    if args.format == "jsonl":
        if args.output:
            analysis.to_jsonl(args.output)
        else:
            analysis.to_jsonl(sys.stdout)
    elif not args.quiet:
        from .report.terminal import render_analysis

        render_analysis(_console(), analysis)
    if args.report:
        import matplotlib

        matplotlib.use("Agg")
        print(analysis.to_html(args.report), file=sys.stderr)
    for path in capture.stats["ring_files"]:
        print(f"smtpflow: ring file {path}", file=sys.stderr)
    _report_problems(analysis)
    return analysis.exit_code


def _drop_privileges(user: str) -> None:
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise UsageError(f"--user {user}: no such user") from None
    if os.getuid() != 0:
        return
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


def cmd_follow(args: argparse.Namespace) -> int:
    if len(args.args) < 2:
        raise UsageError("follow needs a capture file and a session (id, id prefix or number)")
    *files, session = args.args
    analysis = _run(files, _options(args), True)
    from .report.analysis import SessionNotFound

    try:
        text = analysis.follow(session)
    except SessionNotFound as exc:
        raise UsageError(str(exc.args[0]) + f" in {', '.join(files)} ({len(analysis.records)} sessions)") from None
    from .report.safe import printable

    sys.stdout.write("\n".join(printable(line) for line in text.splitlines()) + "\n")
    _report_problems(analysis)
    return analysis.exit_code


def _report_problems(analysis: Any) -> None:
    from .report.safe import printable

    for message in analysis.damage:
        print(f"smtpflow: warning: {printable(message)} — results are partial", file=sys.stderr)
    for message in analysis.errors:
        print(f"smtpflow: error: {printable(message)}", file=sys.stderr)
    for message in analysis.warnings:
        print(f"smtpflow: warning: {printable(message)}", file=sys.stderr)


COMMANDS = {"analyze": cmd_analyze, "follow": cmd_follow, "report": cmd_report, "live": cmd_live}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    debug = getattr(args, "debug", False)
    from .capture import CaptureError
    from .protocols.tls.keylog import KeyLogError
    from .report.safe import ExportError

    try:
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"smtpflow: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ExportError, OSError) as exc:
        from .report.safe import printable

        if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
            message = f"{exc.filename}: {exc.strerror}"  # not Python's "[Errno 2] …" form
        else:
            message = str(exc)
        print(f"smtpflow: {printable(message)}", file=sys.stderr)
        return EXIT_USAGE
    except (CaptureError, KeyLogError) as exc:
        from .report.safe import printable

        print(f"smtpflow: {printable(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("smtpflow: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): not an error worth a message.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python from complaining at exit
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback for users
        if debug:
            traceback.print_exc()
        print(
            f"smtpflow: internal error: {type(exc).__name__}: {exc}\n"
            "smtpflow: this is a bug; please report it with the command line"
            + ("" if debug else " and the output of the same command with --debug"),
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def run() -> None:
    """The ``smtpflow`` command: ``main``, then a quick exit.

    A normal interpreter exit frees every object one by one — about 40 ms after a big run,
    7 % of a gateway capture's — although the process is about to end anyway. Here the output
    is flushed and the exit handlers run (temporary files, worker pools), then the process
    ends without that teardown. Every thread smtpflow starts is a daemon thread."""
    code = main()
    try:
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass  # the reader went away after the last line: as in main, not worth a message
    atexit._run_exitfuncs()
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
