"""Live capture on Linux: scapy's AF_PACKET listen sockets, one per interface, kernel BPF.

Each interface gets its own ``L2ListenSocket`` (scapy compiles the BPF expression with
libpcap and attaches it in the kernel, so unwanted packets never reach Python) and records
come out in the same form as from files: ``(ts_ns, linktype, buffer, start, end, wirelen)``.
``-i any`` opens every interface that is up, each with its own link type, rather than a
cooked socket: the records keep their real link headers and the ring files are pcapng
with one interface block per interface, like dumpcap's.

The kernel's drop counters (``PACKET_STATISTICS``) are read per socket: packets the kernel
had to throw away because smtpflow did not read fast enough are reported, never hidden.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

from .errors import CaptureError
from .linktypes import LINKTYPE_ETHERNET, LINKTYPE_RAW

SOL_PACKET = 263
PACKET_STATISTICS = 6
#: Socket receive buffer asked for (the kernel queue that absorbs bursts). SO_RCVBUFFORCE
#: lifts the system cap when the process has CAP_NET_ADMIN; otherwise the cap applies.
RECEIVE_BUFFER = 32 * 1024 * 1024
#: Largest frame read (GRO can hand up 64 KiB super-frames).
SNAPLEN = 262_144

#: Linux ARPHRD_* hardware types → the link type of the frames an AF_PACKET raw socket returns.
ARPHRD_LINKTYPES = {
    1: LINKTYPE_ETHERNET,  # ARPHRD_ETHER
    772: LINKTYPE_ETHERNET,  # ARPHRD_LOOPBACK: Linux gives loopback frames a zeroed Ethernet header
    65534: LINKTYPE_RAW,  # ARPHRD_NONE (tun, wireguard): IP with no link header
    512: LINKTYPE_RAW,  # ARPHRD_PPP
    776: LINKTYPE_RAW,  # ARPHRD_SIT
}


class LivePermissionError(CaptureError):
    """The process may not open packet sockets."""


@dataclass
class InterfaceStats:
    name: str
    linktype: int
    received: int = 0  # packets smtpflow read
    kernel_seen: int = 0  # packets the kernel's filter passed (PACKET_STATISTICS)
    kernel_dropped: int = 0  # packets the kernel dropped for lack of buffer space
    down: str | None = None  # why the interface stopped delivering, if it did


@dataclass
class _Socket:
    iface: str
    linktype: int
    sock: object  # scapy L2ListenSocket
    stats: InterfaceStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = InterfaceStats(self.iface, self.linktype)


def interface_names() -> list[str]:
    """Interfaces of the calling thread's network namespace (sysfs may show another one's)."""
    return sorted(name for _index, name in socket.if_nameindex())


def _is_up(iface: str) -> bool:
    import fcntl

    SIOCGIFFLAGS = 0x8913
    IFF_UP = 0x1
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH14s", iface.encode()[:15], 0, b""))
    except OSError:
        return False
    return bool(struct.unpack("16sH14s", raw)[1] & IFF_UP)


def resolve_interfaces(names: list[str]) -> list[str]:
    """Expand ``any`` and check that every named interface exists (one clear error if not)."""
    known = interface_names()
    out: list[str] = []
    for name in names:
        if name == "any":
            out += [n for n in known if _is_up(n) and n not in out]
            continue
        if name not in known:
            raise CaptureError(f"no such interface: {name} (interfaces here: {', '.join(known) or 'none'})")
        if name not in out:
            out.append(name)
    if not out:
        raise CaptureError("no interface to capture on (none is up)")
    return out


def check_filter(expression: str) -> None:
    """Compile a BPF expression once, to report a syntax error before opening anything."""
    from scapy.arch.common import compile_filter
    from scapy.error import Scapy_Exception

    try:
        compile_filter(expression, linktype=LINKTYPE_ETHERNET)
    except (Scapy_Exception, OSError, ImportError) as exc:
        raise CaptureError(f"bad capture filter: {expression!r}: {exc}") from None


class LiveSource:
    """Packets from live interfaces. Use as a context manager; read with :meth:`read`."""

    def __init__(self, interfaces: list[str], bpf: str | None) -> None:
        self.names = resolve_interfaces(interfaces)
        self.bpf = bpf
        self.sockets: list[_Socket] = []
        self.skipped: list[str] = []

    def __enter__(self) -> "LiveSource":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        from scapy.arch.linux import L2ListenSocket
        from scapy.error import Scapy_Exception

        # scapy warns that it cannot "guess the type" of loopback/tun interfaces: we know it.
        logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

        for name in self.names:
            try:
                sock = L2ListenSocket(iface=name, filter=self.bpf, promisc=False)
            except PermissionError:
                self.close()
                raise LivePermissionError(
                    f"capturing on {name} needs the CAP_NET_RAW capability: run as root, or grant it to this "
                    f"Python with `setcap cap_net_raw+ep {os.path.realpath(sys.executable)}`"
                ) from None
            except OSError as exc:
                self.close()
                if exc.errno in (errno.ENODEV, errno.ENXIO):
                    raise CaptureError(f"no such interface: {name}") from None
                if exc.errno == errno.EPERM:
                    raise LivePermissionError(f"capturing on {name} is not permitted: CAP_NET_RAW is needed") from None
                raise CaptureError(f"cannot capture on {name}: {exc.strerror or exc}") from None
            except Scapy_Exception as exc:
                self.close()
                raise CaptureError(f"bad capture filter: {self.bpf!r}: {exc}") from None
            raw = sock.ins
            hwtype = raw.getsockname()[3]
            linktype = ARPHRD_LINKTYPES.get(hwtype)
            if linktype is None:
                sock.close()
                self.skipped.append(f"{name}: hardware type {hwtype} is not supported for live capture")
                continue
            for option in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    raw.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
                    break
                except OSError:
                    continue
            self.sockets.append(_Socket(name, linktype, sock))
        if not self.sockets:
            raise CaptureError("no interface could be opened: " + "; ".join(self.skipped))

    @property
    def interfaces(self) -> list[InterfaceStats]:
        return [s.stats for s in self.sockets]

    def read(self, timeout: float) -> list[tuple[int, int, bytes, int, int, int, int]]:
        """Packets available within ``timeout`` seconds: (ts_ns, linktype, frame, 0, len, wirelen, iface index)."""
        live = [s for s in self.sockets if s.stats.down is None]
        if not live:
            return []
        try:
            ready, _, _ = select.select([s.sock.ins for s in live], [], [], timeout)
        except InterruptedError:
            return []
        out = []
        for index, s in enumerate(self.sockets):
            if s.stats.down is not None or s.sock.ins not in ready:
                continue
            for _ in range(256):  # drain, but let the other sockets have their turn
                try:
                    frame, _sa, ts = s.sock._recv_raw(s.sock.ins, SNAPLEN)
                except BlockingIOError:
                    break
                except OSError as exc:
                    s.stats.down = f"{exc.strerror or exc} at {time.strftime('%H:%M:%S')}"
                    break
                if not frame:
                    break
                s.stats.received += 1
                ts_ns = int(ts * 1_000_000_000) if ts else time.time_ns()
                out.append((ts_ns, s.linktype, frame, 0, len(frame), len(frame), index))
                try:
                    more, _, _ = select.select([s.sock.ins], [], [], 0)
                except InterruptedError:
                    more = []
                if not more:
                    break
        return out

    def kernel_stats(self) -> None:
        """Fold the kernel's counters (seen by the filter, dropped) into each interface's stats."""
        for s in self.sockets:
            try:
                raw = s.sock.ins.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            except OSError:
                continue
            packets, drops = struct.unpack("II", raw)  # reading resets the kernel's counters
            s.stats.kernel_seen += packets
            s.stats.kernel_dropped += drops

    def close(self) -> None:
        self.kernel_stats()
        for s in self.sockets:
            try:
                s.sock.close()
            except OSError:
                pass
