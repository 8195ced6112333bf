"""A client — router — server line of network namespaces, firewall helpers and packet capture.

    client (eth0) ──veth── (lan0) router (wan0) ──veth── (eth0) server
    10.25.1.2             10.25.1.1      10.25.2.1            10.25.2.2 (+ service addresses)
    fd25:0:0:1::2         fd25:0:0:1::1  fd25:0:0:2::1        fd25:0:0:2::2

The server namespace sends with TTL / hop limit 128 like Windows front ends, so what the server
sends reaches the client with 127 while anything the router forges itself (RST, ICMP) arrives
with 64. Neighbour entries are static (no ARP/ND in captures, no first-packet delay) and transmit
checksum offload is switched off on every veth so that captures carry real checksums, as on a
physical wire. Nothing here can reach an address outside these namespaces: none of them has a
link to the root namespace.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

PREFIX = "sf"  # namespaces are named sf-<pid>-<role>; the pid tells live runs from leftovers

CLIENT_V4, CLIENT_V6 = "10.25.1.2", "fd25:0:0:1::2"
ROUTER_LAN_V4, ROUTER_LAN_V6 = "10.25.1.1", "fd25:0:0:1::1"
ROUTER_WAN_V4, ROUTER_WAN_V6 = "10.25.2.1", "fd25:0:0:2::1"
SERVER_V4, SERVER_V6 = "10.25.2.2", "fd25:0:0:2::2"

#: Extra addresses of the server host, one per service name the lab DNS hands out.
SERVICE_ADDRESSES = {
    "exo": ("10.25.2.10", "fd25:0:0:2::10"),     # smtp.office365.com front end
    "mx": ("10.25.2.25", "fd25:0:0:2::25"),      # contoso-com.mail.protection.outlook.com
    "relay": ("10.25.2.30", "fd25:0:0:2::30"),   # relay.contoso.com (a Postfix relay)
}

# Fixed MACs keep captures reproducible and let neighbour entries be static.
MAC = {
    "client": "02:25:01:00:00:02", "lan0": "02:25:01:00:00:01",
    "wan0": "02:25:02:00:00:01", "server": "02:25:02:00:00:02",
}

CLONE_NEWNET = 0x40000000
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17

_libc = ctypes.CDLL(None, use_errno=True)


class LabError(RuntimeError):
    """The lab could not be set up or a step in it failed."""


def run(argv: Sequence[str], *, timeout: float = 15, check: bool = True,
        input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, input=input,
                              env=env)
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): "
                       f"{proc.stderr.decode(errors='replace').strip()}")
    return proc


def in_netns(ns: str, fn: Callable[[], object], timeout: float = 10) -> object:
    """Run ``fn`` in a short-lived thread that has joined namespace ``ns``.

    setns(CLONE_NEWNET) only affects the calling thread, so the rest of the process stays where
    it was; sockets and ioctls made by ``fn`` belong to ``ns``.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            with open(f"/run/netns/{ns}", "rb") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LabError(f"operation in namespace {ns} did not finish in {timeout}s")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


def _disable_tx_checksum(iface: str) -> None:
    # veth leaves checksums to "hardware" that never computes them: captured packets would carry
    # pseudo-header sums only. ETHTOOL_STXCSUM off makes the stack compute them (and turns TSO off).
    value = ctypes.create_string_buffer(struct.pack("II", ETHTOOL_STXCSUM, 0))
    ifreq = struct.pack("16sP", iface.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout.decode()
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def delete_namespace(ns: str) -> None:
    """Delete ``ns``, first ending the processes still inside it (our own, by pid)."""
    pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "delete", ns], check=False)
    shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove namespaces of crashed lab runs: ``<prefix>-<pid>-*`` whose pid is gone."""
    removed = []
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d+)-")
    for ns in list_namespaces():
        m = pattern.match(ns)
        if m and not _pid_alive(int(m.group(1))):
            delete_namespace(ns)
            removed.append(ns)
    return removed


_UNAVAILABLE: list[str | None] = []


def netns_unavailable_reason() -> str | None:
    """Why namespaces can't be used here (None when they can). Probed once per process."""
    if _UNAVAILABLE:
        return _UNAVAILABLE[0]
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (ip netns, veth, iptables and tcpdump in namespaces)"
    else:
        missing = [t for t in ("ip", "tcpdump", "iptables", "ip6tables") if not shutil.which(t)]
        if missing:
            reason = f"missing tools: {', '.join(missing)}"
    if reason is None:
        ns = f"{PREFIX}-{os.getpid()}-probe"
        try:
            run(["ip", "netns", "add", ns], timeout=10)
            run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"])
            run(["ip", "netns", "exec", ns, "iptables", "-S"])
        except LabError as exc:
            reason = f"network namespaces unusable here: {exc}"
        finally:
            run(["ip", "netns", "delete", ns], check=False)
    _UNAVAILABLE.append(reason)
    return reason


def requires_root_and_netns():
    """A pytest mark skipping the test (with the reason) unless root + netns + tcpdump work."""
    import pytest

    reason = netns_unavailable_reason()
    return pytest.mark.skipif(reason is not None, reason=f"capture lab: {reason}")


@dataclass
class Capture:
    """``tcpdump -U -w`` in one namespace; start before the traffic, stop (SIGINT) after it."""

    ns: str
    path: Path
    iface: str = "any"
    linktype: str | None = None   # "LINUX_SLL2" with iface "any"
    bpf: Sequence[str] = ()
    proc: subprocess.Popen | None = None
    stats: str = ""

    def start(self, timeout: float = 10) -> "Capture":
        argv = ["ip", "netns", "exec", self.ns, "tcpdump", "-U", "--immediate-mode", "-n",
                "-Z", "root", "-s", "0", "-i", self.iface, "-w", str(self.path)]
        if self.linktype:
            argv += ["-y", self.linktype]
        argv += list(self.bpf)
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # tcpdump says "listening on …" once the socket is bound; traffic before that is lost.
        deadline = time.monotonic() + timeout
        seen = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if ready:
                chunk = os.read(self.proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                seen += chunk
                if b"listening on" in seen:
                    return self
        self.stop()
        raise LabError(f"tcpdump did not start in {self.ns}: {seen.decode(errors='replace')}")

    def stop(self, timeout: float = 10) -> str:
        if self.proc is None:
            return self.stats
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
        self.stats = err.decode(errors="replace").strip()
        self.proc = None
        return self.stats

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Service:
    """A lab server process (DNS responder, SMTP server) running in a namespace."""

    name: str
    proc: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, popen, ns: str, argv: Sequence[str], config: dict, log: Path, *,
              env: dict | None, timeout: float) -> "Service":
        logf = open(log, "ab")
        try:
            proc = popen(ns, list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=logf, env=env)
        finally:
            logf.close()
        svc = cls(" ".join(argv), proc, log)
        try:
            proc.stdin.write(json.dumps(config).encode())
            proc.stdin.close()
            ready, _, _ = select.select([proc.stdout], [], [], timeout)
            line = proc.stdout.readline() if ready else b""
        except OSError:
            line = b""
        if line.strip() != b"READY":
            svc.stop()
            raise LabError(f"{svc.name} did not start in {ns}; see {log}:\n"
                           f"{log.read_text(errors='replace')[-2000:]}")
        return svc

    def stop(self, timeout: float = 5) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        if self.proc.stdout:
            self.proc.stdout.close()


@dataclass
class Topology:
    """Context manager building the three namespaces; ``client``/``router``/``server`` are names.

    ``client_sysctls`` / ``server_sysctls`` are applied on top of the defaults (TTL 128 on the
    server). ``extra_client_v4`` adds more client addresses (several devices behind one gateway).
    """

    tag: str | None = None
    client_sysctls: dict[str, str | int] = field(default_factory=dict)
    server_sysctls: dict[str, str | int] = field(default_factory=dict)
    extra_client_v4: Iterable[str] = ()
    client: str = field(init=False)
    router: str = field(init=False)
    server: str = field(init=False)
    _created: list[str] = field(init=False, default_factory=list)
    _ready_at: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        base = f"{PREFIX}-{os.getpid()}" + (f"-{self.tag}" if self.tag else "")
        self.client, self.router, self.server = (f"{base}-client", f"{base}-router",
                                                 f"{base}-server")
        self.extra_client_v4 = list(self.extra_client_v4)

    # --- life cycle -------------------------------------------------------------------------

    def __enter__(self) -> "Topology":
        cleanup_stale()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for ns in reversed(self._created):
            delete_namespace(ns)
        self._created.clear()

    #: After link-up the router sends its MLD reports about a second later; captures start after.
    SETTLE = 1.3

    def settle(self) -> None:
        """Wait until the namespaces' start-up chatter (MLD reports) is over."""
        time.sleep(max(0.0, self._ready_at - time.monotonic()))

    def _build(self) -> None:
        for ns in (self.client, self.router, self.server):
            if ns in list_namespaces():
                delete_namespace(ns)
            run(["ip", "netns", "add", ns])
            self._created.append(ns)
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            # Set before the veths exist so that they inherit it: no router solicitations.
            # The MLD intervals (ms) make the join reports go out at once, before any capture.
            self.sysctl(ns, {"net.ipv6.conf.default.router_solicitations": 0,
                             "net.ipv6.conf.all.router_solicitations": 0,
                             "net.ipv6.conf.default.accept_dad": 0,
                             "net.ipv6.conf.default.mldv1_unsolicited_report_interval": 1,
                             "net.ipv6.conf.default.mldv2_unsolicited_report_interval": 1})
        self.sysctl(self.router, {"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        self.sysctl(self.server, {"net.ipv4.ip_default_ttl": 128,
                                  "net.ipv6.conf.all.hop_limit": 128,
                                  "net.ipv6.conf.default.hop_limit": 128,
                                  **self.server_sysctls})
        if self.client_sysctls:
            self.sysctl(self.client, self.client_sysctls)

        run(["ip", "-n", self.router, "link", "add", "lan0", "address", MAC["lan0"], "type", "veth",
             "peer", "name", "eth0", "address", MAC["client"], "netns", self.client])
        run(["ip", "-n", self.router, "link", "add", "wan0", "address", MAC["wan0"], "type", "veth",
             "peer", "name", "eth0", "address", MAC["server"], "netns", self.server])

        def addr(ns: str, iface: str, *cidrs: str) -> None:
            for cidr in cidrs:
                extra = ["nodad"] if ":" in cidr else []
                run(["ip", "-n", ns, "addr", "add", cidr, "dev", iface, *extra])

        def neigh(ns: str, iface: str, mac: str, *ips: str) -> None:
            for ip in ips:
                run(["ip", "-n", ns, "neigh", "replace", ip, "lladdr", mac, "nud", "permanent",
                     "dev", iface])

        client_v4 = [CLIENT_V4, *self.extra_client_v4]
        addr(self.client, "eth0", *(f"{a}/24" for a in client_v4), f"{CLIENT_V6}/64")
        addr(self.router, "lan0", f"{ROUTER_LAN_V4}/24", f"{ROUTER_LAN_V6}/64")
        addr(self.router, "wan0", f"{ROUTER_WAN_V4}/24", f"{ROUTER_WAN_V6}/64")
        server_v4 = [SERVER_V4] + [v4 for v4, _ in SERVICE_ADDRESSES.values()]
        server_v6 = [SERVER_V6] + [v6 for _, v6 in SERVICE_ADDRESSES.values()]
        addr(self.server, "eth0", *(f"{a}/24" for a in server_v4), *(f"{a}/64" for a in server_v6))
        for ns, ifaces in ((self.client, ["eth0"]), (self.router, ["lan0", "wan0"]),
                           (self.server, ["eth0"])):
            for iface in ifaces:
                if ns == self.server:
                    self.sysctl(ns, {f"net.ipv6.conf.{iface}.hop_limit": 128})
                in_netns(ns, lambda i=iface: _disable_tx_checksum(i))
                run(["ip", "-n", ns, "link", "set", iface, "up"])
        neigh(self.client, "eth0", MAC["lan0"], ROUTER_LAN_V4, ROUTER_LAN_V6)
        neigh(self.router, "lan0", MAC["client"], *client_v4, CLIENT_V6)
        neigh(self.router, "wan0", MAC["server"], *server_v4, *server_v6)
        neigh(self.server, "eth0", MAC["wan0"], ROUTER_WAN_V4, ROUTER_WAN_V6)
        run(["ip", "-n", self.client, "route", "add", "default", "via", ROUTER_LAN_V4])
        run(["ip", "-n", self.client, "-6", "route", "add", "default", "via", ROUTER_LAN_V6])
        run(["ip", "-n", self.server, "route", "add", "default", "via", ROUTER_WAN_V4])
        run(["ip", "-n", self.server, "-6", "route", "add", "default", "via", ROUTER_WAN_V6])
        self._ready_at = time.monotonic() + self.SETTLE

    # --- running things ---------------------------------------------------------------------

    def exec(self, ns: str, argv: Sequence[str], *, timeout: float = 15, check: bool = True,
             input: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run ``argv`` inside namespace ``ns`` and wait for it (bounded by ``timeout``)."""
        return run(["ip", "netns", "exec", ns, *argv], timeout=timeout, check=check, input=input,
                   env=env)

    def popen(self, ns: str, argv: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``argv`` inside namespace ``ns``; the caller waits for/ends it."""
        return subprocess.Popen(["ip", "netns", "exec", ns, *argv], **kwargs)

    def start_service(self, ns: str, argv: Sequence[str], config: dict, log: Path, *,
                      env: dict | None = None, timeout: float = 15) -> "Service":
        """Start a lab service (JSON config on stdin) in ``ns`` and wait for its READY line."""
        return Service.start(self.popen, ns, argv, config, log, env=env, timeout=timeout)

    def sysctl(self, ns: str, values: dict[str, str | int]) -> None:
        if values:
            self.exec(ns, ["sysctl", "-qw", *(f"{k}={v}" for k, v in values.items())])

    def set_resolver(self, ns: str, nameservers: Iterable[str], options: str = "") -> Path:
        """Write /etc/netns/<ns>/resolv.conf, which ``ip netns exec`` bind-mounts on /etc."""
        d = Path("/etc/netns") / ns
        d.mkdir(parents=True, exist_ok=True)
        text = "".join(f"nameserver {n}\n" for n in nameservers)
        if options:
            text += f"options {options}\n"
        (d / "resolv.conf").write_text(text)
        return d / "resolv.conf"

    # --- firewall ---------------------------------------------------------------------------

    def _chain(self, ns: str) -> str:
        return {self.router: "FORWARD", self.server: "INPUT", self.client: "OUTPUT"}[ns]

    def firewall(self, match: Sequence[str], target: Sequence[str], *, family: int = 4,
                 ns: str | None = None) -> None:
        """Append ``-p tcp … -j TARGET`` to the namespace's natural chain (router: FORWARD)."""
        ns = ns or self.router
        tool = "iptables" if family == 4 else "ip6tables"
        self.exec(ns, [tool, "-w", "5", "-A", self._chain(ns), *match, *target])

    @staticmethod
    def _match(port: int, syn_only: bool, source: str | None, destination: str | None) -> list[str]:
        m = ["-p", "tcp"]
        if syn_only:
            m.append("--syn")
        m += ["--dport", str(port)]
        if source:
            m += ["-s", source]
        if destination:
            m += ["-d", destination]
        return m

    def drop_syn(self, port: int, *, family: int = 4, ns: str | None = None,
                 source: str | None = None, destination: str | None = None) -> None:
        """Silently drop connection attempts to ``port`` (unanswered SYNs)."""
        self.firewall(self._match(port, True, source, destination), ["-j", "DROP"],
                      family=family, ns=ns)

    def reject_with_reset(self, port: int, *, family: int = 4, ns: str | None = None,
                          source: str | None = None, destination: str | None = None) -> None:
        """Answer every TCP packet to ``port`` with a RST forged by this namespace."""
        self.firewall(self._match(port, False, source, destination),
                      ["-j", "REJECT", "--reject-with", "tcp-reset"], family=family, ns=ns)

    def reject_with_icmp(self, port: int, *, family: int = 4, ns: str | None = None,
                         source: str | None = None, destination: str | None = None) -> None:
        """Answer TCP to ``port`` with ICMP administratively prohibited (3/13, ICMPv6 1/1)."""
        kind = "icmp-admin-prohibited" if family == 4 else "icmp6-adm-prohibited"
        self.firewall(self._match(port, False, source, destination),
                      ["-j", "REJECT", "--reject-with", kind], family=family, ns=ns)

    # --- capture ----------------------------------------------------------------------------

    def capture(self, path: str | os.PathLike, *, ns: str | None = None, iface: str | None = None,
                sll2: bool = False, bpf: Sequence[str] = ()) -> Capture:
        """A capture on the router's client-side veth (a gateway capture) unless told otherwise.

        ``sll2=True`` captures on ``-i any`` with Linux cooked v2 headers.
        """
        self.settle()
        ns = ns or self.router
        if sll2:
            return Capture(ns, Path(path), "any", "LINUX_SLL2", bpf)
        return Capture(ns, Path(path), iface or ("lan0" if ns == self.router else "eth0"), None, bpf)
