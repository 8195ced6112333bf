"""``smtpflow live`` as a capture in the lab: run in a namespace, started before the traffic.

Used by tests/test_live.py in place of tcpdump (``scenarios.run_with_capture``): it waits for
smtpflow to say it is capturing, and on exit stops it with SIGTERM, as an admin's service
manager would, then keeps its output for the test to read.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from .netns import LabError

ROOT = Path(__file__).resolve().parents[2]


class LiveProcess:
    def __init__(self, ns: str, iface: str, out_dir: Path, extra: list[str] | None = None) -> None:
        self.ns = ns
        self.iface = iface
        self.out_dir = Path(out_dir)
        self.ring = self.out_dir / "ring"
        self.jsonl = self.out_dir / "live.jsonl"
        self.extra = list(extra or [])
        self.proc: subprocess.Popen | None = None
        self.stdout = ""
        self.stderr = ""
        self.returncode: int | None = None

    def __enter__(self) -> "LiveProcess":
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argv = ["ip", "netns", "exec", self.ns, sys.executable, "-m", "analyzer", "live", "-i", self.iface,
                "-w", str(self.ring), "--format", "jsonl", "-o", str(self.jsonl)] + self.extra
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + 30
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), 65536)
                if not chunk:
                    break
                seen += chunk
                if b"capturing on" in seen:
                    self._head = seen
                    return self
            if self.proc.poll() is not None:
                break
        err = self.proc.stdout.read().decode(errors="replace") if self.proc.poll() is not None else ""
        self.__exit__()
        raise LabError(f"smtpflow live did not start in {self.ns}: {seen.decode(errors='replace')} {err}")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        time.sleep(0.5)  # let the last packets reach the socket
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
        self.stdout = out.decode(errors="replace")
        self.stderr = getattr(self, "_head", b"").decode(errors="replace") + err.decode(errors="replace")
        self.returncode = self.proc.returncode
        self.proc = None
