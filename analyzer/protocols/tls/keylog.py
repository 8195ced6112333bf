"""NSS key log files (``SSLKEYLOGFILE``): the secrets that let smtpflow read captured TLS.

The format is NSS's, written by OpenSSL, Python's ``SSLContext.keylog_filename``, curl,
browsers and Wireshark's own tools: one ``<label> <client_random> <secret>`` per line, both
values in hex, ``#`` comments and blank lines allowed. The client random (32 bytes, from the
ClientHello) names the session; the label says which secret it is:

- ``CLIENT_RANDOM``: the TLS ≤ 1.2 master secret (48 bytes);
- ``CLIENT_HANDSHAKE_TRAFFIC_SECRET`` / ``SERVER_HANDSHAKE_TRAFFIC_SECRET``,
  ``CLIENT_TRAFFIC_SECRET_0`` / ``SERVER_TRAFFIC_SECRET_0``: TLS 1.3 traffic secrets.

Other well-formed lines (``EXPORTER_SECRET``, ``CLIENT_EARLY_TRAFFIC_SECRET``, ``RSA`` …)
are kept but not used. Bad lines never raise: each is recorded in :attr:`KeyLog.problems`
as ``file:line: reason`` and the good lines are used. Only a file that cannot be read, or
that holds no usable line at all, raises :class:`KeyLogError`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

#: Largest key log file read; beyond it the rest of the file is ignored (and reported).
MAX_FILE_BYTES = 64 * 1024 * 1024
#: Secrets kept over all files (a line is ~200 bytes: a full 64 MiB file is ~350 000 lines).
MAX_ENTRIES = 1_000_000
#: Problems listed (all of them are counted in ``problem_count``).
MAX_PROBLEMS = 20

CLIENT_RANDOM = "CLIENT_RANDOM"
CLIENT_HANDSHAKE_TRAFFIC_SECRET = "CLIENT_HANDSHAKE_TRAFFIC_SECRET"
SERVER_HANDSHAKE_TRAFFIC_SECRET = "SERVER_HANDSHAKE_TRAFFIC_SECRET"
CLIENT_TRAFFIC_SECRET_0 = "CLIENT_TRAFFIC_SECRET_0"
SERVER_TRAFFIC_SECRET_0 = "SERVER_TRAFFIC_SECRET_0"
#: The NSS label whose first value is the first 8 bytes of an encrypted pre-master secret.
RSA = "RSA"

CLIENT_RANDOM_LEN = 32
RSA_KEY_LEN = 8
MASTER_SECRET_LEN = 48
#: TLS 1.3 traffic secrets are one hash long: SHA-256 or SHA-384.
TRAFFIC_SECRET_LENS = frozenset({32, 48})
_TRAFFIC_LABELS = frozenset({
    CLIENT_HANDSHAKE_TRAFFIC_SECRET, SERVER_HANDSHAKE_TRAFFIC_SECRET,
    CLIENT_TRAFFIC_SECRET_0, SERVER_TRAFFIC_SECRET_0,
})
_LABEL = re.compile(r"[A-Z][A-Z0-9_]*\Z")
#: Longest secret accepted under a label this module does not use.
_MAX_OTHER_SECRET = 256


class KeyLogError(Exception):
    """A key log file that cannot be used at all; the message is one line naming the file."""


def _unreadable(name: str, exc: OSError) -> KeyLogError:
    return KeyLogError(f"cannot read key log {name}: {exc.strerror or exc}")


def _unusable(name: str, malformed: int) -> KeyLogError:
    detail = f"{malformed} malformed line{'s' if malformed != 1 else ''}" if malformed else "it is empty or only comments"
    return KeyLogError(
        f"key log {name} holds no usable line ({detail}); expected NSS key log lines such as "
        "'CLIENT_RANDOM <client random hex> <master secret hex>'"
    )


def _too_big(name: str) -> str:
    return f"{name}: larger than {MAX_FILE_BYTES / 2**20:g} MiB; only the first complete lines were read"


class KeyLog:
    """Secrets by client random, merged from any number of key log files or texts."""

    def __init__(self) -> None:
        self._secrets: dict[bytes, dict[str, bytes]] = {}
        self.entries = 0
        self.sources: list[str] = []
        #: "file:line: reason" for the first MAX_PROBLEMS bad lines.
        self.problems: list[str] = []
        self.problem_count = 0

    @classmethod
    def load(cls, paths: str | os.PathLike | Iterable[str | os.PathLike]) -> KeyLog:
        """Read one or several key log files into one KeyLog (raises KeyLogError)."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        keylog = cls()
        for path in paths:
            keylog.add_file(path)
        return keylog

    @classmethod
    def parse(cls, text: str, source: str = "") -> KeyLog:
        """A KeyLog from key log text; bad lines become problems, never exceptions."""
        keylog = cls()
        keylog.add_text(text, source)
        return keylog

    def add_file(self, path: str | os.PathLike) -> int:
        """Add a file's secrets; returns how many lines were usable."""
        name = os.fspath(path)
        try:
            with open(name, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise _unreadable(name, exc) from None
        if len(raw) > MAX_FILE_BYTES:
            raw = raw[: raw.rfind(b"\n", 0, MAX_FILE_BYTES) + 1]
            self._problem(_too_big(name))
        before = self.problem_count
        usable = self.add_text(raw.decode("utf-8", errors="replace"), name)
        if not usable:
            raise _unusable(name, self.problem_count - before)
        return usable

    def add_text(self, text: str, source: str = "") -> int:
        """Add the secrets in key log text; returns how many lines were usable."""
        where = source or "<text>"
        if where not in self.sources:
            self.sources.append(where)
        usable = 0
        for number, line in enumerate(text.lstrip("\ufeff").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if self.entries >= MAX_ENTRIES:
                self._problem(f"{where}:{number}: the limit of {MAX_ENTRIES} secrets is reached; the rest is ignored")
                break
            reason = self._line(line)
            if reason is None:
                usable += 1
            else:
                self._problem(f"{where}:{number}: {reason}")
        return usable

    def secrets(self, client_random: bytes) -> dict[str, bytes]:
        """The secrets logged for a session (label -> secret); empty when there are none."""
        return dict(self._secrets.get(bytes(client_random), {}))

    def __len__(self) -> int:
        return self.entries

    def __contains__(self, client_random: object) -> bool:
        return client_random in self._secrets

    # -- one line ---------------------------------------------------------------------------
    def _line(self, line: str) -> str | None:
        """Store one line's secret; the reason it is unusable, or None."""
        fields = line.split()
        if len(fields) != 3:
            return f"expected 3 fields (label, client random, secret), found {len(fields)}"
        label, random_hex, secret_hex = fields
        if not _LABEL.match(label):
            return f"not a key log label: {label[:40]!r}"
        try:
            random_ = bytes.fromhex(random_hex)
            secret = bytes.fromhex(secret_hex)
        except ValueError:
            return f"{label}: the client random and the secret must be hexadecimal"
        want = RSA_KEY_LEN if label == RSA else CLIENT_RANDOM_LEN
        if len(random_) != want:
            return f"{label}: the client random has {len(random_)} bytes, not {want}"
        if label == CLIENT_RANDOM and len(secret) != MASTER_SECRET_LEN:
            return f"{label}: the master secret has {len(secret)} bytes, not {MASTER_SECRET_LEN}"
        if label in _TRAFFIC_LABELS and len(secret) not in TRAFFIC_SECRET_LENS:
            return f"{label}: the secret has {len(secret)} bytes, not 32 or 48"
        if len(secret) > _MAX_OTHER_SECRET:
            return f"{label}: a {len(secret)}-byte secret is implausibly long"
        session = self._secrets.setdefault(random_, {})
        known = session.get(label)
        if known is None:
            session[label] = secret
            self.entries += 1
        elif known != secret:
            return f"{label} {random_hex[:16]}…: a different secret was logged before; the first one is kept"
        return None

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)


#: A key log that lacks a session is read again at most this often (seconds).
REFRESH_INTERVAL_S = 1.0


class GrowingKeyLog(KeyLog):
    """Key log files that are still being written (a live capture next to ``SSLKEYLOGFILE``).

    A lookup that finds nothing reads what was appended to the files since — at most once per
    :data:`REFRESH_INTERVAL_S` — and tries again. For finished files this costs one ``stat``
    per second of misses. Raises :class:`KeyLogError` like :meth:`KeyLog.load`, except that
    a file that is still empty is accepted (its writer has not logged a session yet).
    """

    def __init__(self, paths: str | os.PathLike | Iterable[str | os.PathLike], clock=None) -> None:
        super().__init__()
        import time

        self._clock = clock or time.monotonic
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        self._offsets: dict[str, int] = {os.fspath(p): 0 for p in paths}
        self._capped: set[str] = set()
        self._last_refresh = float("-inf")
        for name in self._offsets:
            self._read_new(name, first=True)
        self._last_refresh = self._clock()

    def secrets(self, client_random: bytes) -> dict[str, bytes]:
        found = super().secrets(client_random)
        if not found and self._clock() - self._last_refresh >= REFRESH_INTERVAL_S:
            self.refresh()
            found = super().secrets(client_random)
        return found

    def refresh(self) -> None:
        """Read whatever was appended to the files since the last read."""
        self._last_refresh = self._clock()
        for name in self._offsets:
            try:
                self._read_new(name, first=False)
            except KeyLogError as exc:
                self._problem(str(exc))

    def _read_new(self, name: str, first: bool) -> None:
        offset = self._offsets[name]
        try:
            with open(name, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < offset:  # truncated and rewritten: read it again from the start
                    offset = 0
                if size == offset or offset >= MAX_FILE_BYTES:
                    if size > MAX_FILE_BYTES and name not in self._capped:
                        self._capped.add(name)
                        self._problem(_too_big(name))
                    return
                f.seek(offset)
                raw = f.read(min(size, MAX_FILE_BYTES) - offset)
        except OSError as exc:
            raise _unreadable(name, exc) from None
        complete = raw[: raw.rfind(b"\n") + 1]  # a line being written is read next time
        if not complete:
            return
        self._offsets[name] = offset + len(complete)
        before = self.problem_count
        usable = self.add_text(complete.decode("utf-8", errors="replace"), name)
        if first and not usable:
            raise _unusable(name, self.problem_count - before)
