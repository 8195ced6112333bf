"""smtpflow: why does mail to Microsoft 365 get through or not — answered from packets.

Layers, each a sub-package, dependencies pointing one way::

    capture  →  decode  →  flows  →  protocols  →  diagnosis  →  report

Use :func:`analyze` from Python (notebooks included)::

    import analyzer
    a = analyzer.analyze("capture.pcap")
    a.sessions            # one row per connection attempt
    a.summary()           # the capture-level diagnosis
    print(a.follow(0))    # the first session as a dialogue
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

from . import native

native.choose()  # before any of the modules it may import compiled

__version__ = "0.1.0"

if TYPE_CHECKING:  # pragma: no cover
    from .report.analysis import Analysis


def analyze(
    paths: str | Iterable[str],
    *,
    ports: Iterable[int] | str | None = "default",
    endpoints: Iterable[str] = (),
    checksums: str = "auto",
    reveal_username: bool = False,
    keylog: Any = None,
    workers: int | str = 1,
    client: Any = None,
    table_memory_mb: int | None = None,
    since: Any = None,
    until: Any = None,
    stop_on_interrupt: bool = False,
) -> "Analysis":
    """Analyse one or more capture files (pcap, pcapng, gzip …; directories and globs too).

    ``ports``: "default" (25, 465, 587, 2525 plus Microsoft's ranges), "all" (every TCP
    connection), or an iterable of port numbers. ``endpoints``: extra endpoints to treat as
    Microsoft/mail servers ("10.0.0.0/8", "mail.contoso.com", "*.contoso.com", "x=label").
    ``checksums``: "auto" | "verify" | "off". ``reveal_username``: show AUTH user names.
    ``keylog``: an NSS key log file (``SSLKEYLOGFILE``), a list of them, or a loaded
    ``KeyLog``: TLS sessions found in it are decrypted and their SMTP dialogue read
    (raises ``analyzer.protocols.tls.KeyLogError`` for a file that cannot be used).
    ``workers``: processes to use — several files are read in parallel, one capture is split
    by connection ("auto": the cores, for inputs over 32 MB; the command line's default); ``client``: a Dask
    ``distributed.Client`` to read the files on a cluster. Results are identical to a serial run.
    ``table_memory_mb``: what the connections open at once may hold together (default 128 MB);
    past it the least recently active are let go early (``end_reason`` "table_full").
    ``since``, ``until``: read only the packets of that time window, as if the capture had been
    cut to it (``editcap -A -B``): a ``datetime`` (naive ones are UTC), ISO 8601 text or
    seconds since the epoch (raises ``analyzer.capture.window.TimeError``, a ValueError, for
    anything else or an empty window).
    ``stop_on_interrupt``: Ctrl-C — or a notebook's "interrupt the kernel" — stops the reading
    instead of the call, as on the command line: the Analysis of what was read is returned, with
    ``capture["interrupted"]`` and ``capture["read_until"]`` set and a warning in ``warnings``
    (main thread only; a second interrupt, or one before any packet was read, raises
    KeyboardInterrupt as usual).
    """
    from .capture.interrupt import stop_reading_on_interrupt
    from .capture.window import TimeWindow
    from .engine import run, refuse_empty_interruption
    from .report.analysis import Analysis

    if isinstance(paths, str):
        path_list = [paths]
    else:
        path_list = [str(p) for p in paths]
    options = _options(ports, endpoints, checksums, reveal_username, keylog, table_memory_mb)
    window = TimeWindow.of(since, until)
    if window is not None:
        from dataclasses import replace

        options = replace(options, window=window)
    if not stop_on_interrupt or client is not None:
        return Analysis(run(path_list, options, workers=workers, client=client))
    with stop_reading_on_interrupt():
        result = run(path_list, options, workers=workers, client=client)
    refuse_empty_interruption(result.capture)
    return Analysis(result)


def live(
    interfaces: str | Iterable[str],
    *,
    duration: float | None = None,
    count: int | None = None,
    filter: str | None = None,
    ring_dir: str | None = None,
    ring_size_mb: float = 100.0,
    ring_files: int = 10,
    ports: Iterable[int] | str | None = "default",
    endpoints: Iterable[str] = (),
    checksums: str = "auto",
    reveal_username: bool = False,
    keylog: Any = None,
    start: bool = True,
    table_memory_mb: int | None = None,
):
    """Capture live on ``interfaces`` (Linux; CAP_NET_RAW needed) and diagnose as traffic flows.

    Returns a :class:`analyzer.livecapture.LiveCapture`, already running in a background thread
    (``start=False`` to call ``.run()`` yourself). ``.analysis()`` gives an Analysis of what
    has been seen so far; ``.stop()`` stops it and returns the final Analysis; it also stops
    by itself after ``duration`` seconds or ``count`` packets (``.wait()`` waits for that).
    ``ring_dir`` keeps the packets in rotating pcapng files for ``analyze()`` later.
    ``keylog``: key log file(s) the clients are writing; re-read as they grow.
    """
    from .livecapture import LiveCapture

    options = _options(ports, endpoints, checksums, reveal_username, keylog, table_memory_mb)
    capture = LiveCapture(
        interfaces, options=options, bpf=filter, duration=duration, count=count, ring_dir=ring_dir,
        ring_size_mb=ring_size_mb, ring_files=ring_files,
    )
    return capture.start() if start else capture


def _options(ports, endpoints, checksums: str, reveal_username: bool, keylog: Any, table_memory_mb: int | None = None):
    """The engine's Options from the keyword arguments ``analyze`` and ``live`` share."""
    from .diagnosis.microsoft import UserEndpoint
    from .engine import Options

    return Options(
        ports=parse_ports(ports),
        endpoints=tuple(UserEndpoint.parse(e) for e in endpoints),
        checksums=checksums,
        reveal_username=reveal_username,
        keylog=_keylog_option(keylog),
        table_memory_mb=table_memory_mb,
    )


def _keylog_option(keylog: Any) -> Any:
    """Options.keylog from what a caller gave: None, a path, paths, or a KeyLog."""
    import os

    if keylog is None:
        return ()
    if isinstance(keylog, (str, os.PathLike)):
        return (os.fspath(keylog),)
    from .protocols.tls import KeyLog

    if isinstance(keylog, KeyLog):
        return keylog
    return tuple(os.fspath(p) for p in keylog)


def parse_ports(ports: Iterable[int] | str | None) -> frozenset[int] | None:
    """"default" → the SMTP ports; "all"/None → every port; "25,587" or [25, 587] → those."""
    from .decode import DEFAULT_SMTP_PORTS

    if ports is None or ports == "all":
        return None
    if ports == "default":
        return DEFAULT_SMTP_PORTS
    if isinstance(ports, str):
        items: list[Any] = [p for p in ports.replace(" ", "").split(",") if p]
    else:
        items = list(ports)
    result = set()
    for item in items:
        try:
            port = int(item)
        except (TypeError, ValueError):
            raise ValueError(f"{item!r} is not a port number") from None
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range")
        result.add(port)
    if not result:
        raise ValueError("no ports given")
    return frozenset(result)


def __getattr__(name: str) -> Any:
    if name == "Analysis":
        from .report.analysis import Analysis

        return Analysis
    raise AttributeError(name)
