"""Ctrl-C ends the reading, not the run.

An hour into a 40 GB capture, or with a capture piped in from a remote tcpdump that has no
end of its own, Ctrl-C should give the diagnosis of what was read so far, not a bare
"interrupted". So while ``stop_reading_on_interrupt`` is active:

- the first SIGINT asks every reader of this process to stop: each reads on only up to the
  latest capture time already read (``CaptureSet.stop_time``: agreed between the processes
  of a split run), so the run ends as if the capture had ended there, and says so;
- standard input being read as a capture is switched to /dev/null at once (``watch_input``):
  a read waiting on a quiet pipe returns at the end of the data it has, instead of waiting
  for the next packet;
- a second SIGINT interrupts as Python always does (KeyboardInterrupt).

A terminal sends Ctrl-C to the whole process group, worker processes included; they call
``stop_reading_on_every_interrupt`` (each SIGINT only stops their reading: the coordinator
decides when to give up), and the coordinator forwards its own SIGINT to them, for when
only it was signalled (``kill -INT``). Workers started afresh (spawned) learn of a request
made before they could take signals from a shared flag (``shared_flag``).

The request is process-wide, as signals are: ``STOP``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator


class StopRequest:
    """Whether this process was asked to stop reading, and the pipes to cut off when it is."""

    __slots__ = ("requested", "inputs", "flags")

    def __init__(self) -> None:
        self.requested = False
        self.inputs: list[int] = []  # file descriptors of pipes read as captures
        self.flags: list = []  # shared flags (``.value``) that tell worker processes


STOP = StopRequest()


def watch_input(fd: int) -> None:
    """Cut ``fd`` (a pipe read as a capture) off when the reading is to stop."""
    if fd not in STOP.inputs:  # standard input, read by one call after another (Python, notebooks)
        STOP.inputs.append(fd)
    if STOP.requested:
        _cut_off_inputs()


def _cut_off_inputs() -> None:
    # The read in progress is restarted after the handler (PEP 475) and now finds the end of
    # /dev/null: the reader sees the end of its input, wherever it was waiting.
    inputs, STOP.inputs = STOP.inputs, []
    if not inputs:
        return
    try:
        null = os.open(os.devnull, os.O_RDONLY)
    except OSError:
        return
    try:
        for fd in inputs:
            try:
                os.dup2(null, fd)
            except OSError:
                pass
    finally:
        os.close(null)


def request_stop() -> None:
    """What the first Ctrl-C does (also callable directly, e.g. from a test or another thread)."""
    STOP.requested = True
    for flag in STOP.flags:
        flag.value = 1
    _cut_off_inputs()


@contextlib.contextmanager
def shared_flag(flag) -> Iterator[None]:
    """While active, a request to stop also sets ``flag.value`` (a ``multiprocessing.RawValue``
    handed to worker processes: see ``start_worker``)."""
    STOP.flags.append(flag)
    if STOP.requested:
        flag.value = 1
    try:
        yield
    finally:
        STOP.flags.remove(flag)


@contextlib.contextmanager
def _sigint_handled_by(handler) -> Iterator[None]:
    """``handler`` takes SIGINT while active (only the main thread can set one: elsewhere, nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def held_off():
    """Ctrl-C is ignored while worker processes are started: they begin life ignoring it (an
    ignored signal stays ignored across exec, and Python keeps it so), instead of dying with a
    traceback before they can take it as a request to stop (``start_worker``)."""
    return _sigint_handled_by(signal.SIG_IGN)


def start_worker(flag=None) -> None:
    """A worker process's start: every SIGINT only stops its reading, and a request made before
    it could take signals (``flag``, from ``shared_flag``) is taken now."""
    stop_reading_on_every_interrupt()
    if flag is not None and flag.value:
        request_stop()


def _forward_to_workers() -> None:
    """Pass the request on to this process's worker processes, if it started any."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is None:
        return
    try:
        children = multiprocessing.active_children()
    except Exception:  # noqa: BLE001 - a signal handler must not fail on bookkeeping
        return
    for child in children:
        try:
            os.kill(child.pid, signal.SIGINT)
        except (OSError, TypeError):
            pass


def _on_interrupt(_signum, _frame) -> None:
    if STOP.requested:
        raise KeyboardInterrupt
    request_stop()
    _forward_to_workers()


def _on_interrupt_in_worker(_signum, _frame) -> None:
    request_stop()


@contextlib.contextmanager
def stop_reading_on_interrupt() -> Iterator[StopRequest]:
    """While active (in the main thread), the first Ctrl-C stops the reading; see the module."""
    with _sigint_handled_by(_on_interrupt):
        try:
            yield STOP
        finally:
            STOP.requested = False
            STOP.inputs = []


def stop_reading_on_every_interrupt() -> None:
    """For a worker process: every SIGINT only stops its reading (the coordinator ends the run)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_interrupt_in_worker)
