"""Real clients for the lab: smtplib over real sockets, real TLS, real name resolution.

Each session is a small plain-dict spec (see :class:`SessionSpec`); ``python -m tests.lab.clients``
runs a list of them inside the client namespace (JSON on stdin) and prints what each one saw —
resolved addresses, every reply with whether it came inside TLS, the TLS version, the error that
ended it — as JSON on stdout. The recorder checks that against the scenario's expectations.

Name resolution goes through glibc (``getaddrinfo``: A and AAAA queries to the lab resolver that
``/etc/netns/<ns>/resolv.conf`` names), so the lookups land in the capture as a real host makes
them. Every wait is bounded: connect, each read, the whole run.
"""

from __future__ import annotations

import json
import smtplib
import socket
import ssl
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from email.utils import format_datetime, make_msgid
from datetime import datetime, timezone

#: Fake credentials: the analyzer must prove it redacts exactly these.
LAB_USER = "printer@contoso.com"
LAB_PASSWORD = "Hunter2-NotReal!"

TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class SessionSpec:
    """One client session. ``steps`` is the SMTP dialogue, in order:

    ehlo, starttls, auth (AUTH LOGIN without initial response → two 334 prompts), mail, rcpt,
    data, rset, noop, quit. The first reply ≥ 400 (or exception) ends the dialogue; then the
    client sends QUIT (``on_error="quit"``) unless the reply was 421 or the link is gone.
    ``kind`` selects other clients: ``bdat`` (pipelined MAIL/RCPT + BDAT chunks, raw socket),
    ``dns`` (resolve only), ``udp`` / ``tcp`` (background noise).
    """

    name: str = "session"
    kind: str = "smtp"
    host: str = "smtp.office365.com"
    port: int = 587
    family: int = 4
    resolve: bool = True               # False: ``address`` is used as is
    address: str | None = None
    source: str | None = None          # bind to this client address
    delay: float = 0.0                 # start offset in a parallel run
    tls: str = "none"                  # none | starttls | implicit
    tls_min: str | None = None
    tls_max: str | None = None
    trust: str = "lab"                 # lab | other (a CA the server's chain doesn't lead to)
    keylog: bool = False
    helo: str = "mfp-4f-east.contoso.com"
    steps: list[str] = field(default_factory=lambda: ["ehlo", "quit"])
    user: str = LAB_USER
    password: str = LAB_PASSWORD
    mail_from: str = LAB_USER
    rcpt_to: list[str] = field(default_factory=lambda: ["frontdesk@contoso.com"])
    subject: str = "Scan from MFP-4F-EAST"
    body_lines: int = 6
    on_error: str = "quit"
    connect_timeout: float = 20.0      # > the kernel's SYN give-up time in the drop scenarios
    timeout: float = 10.0
    payload: str = ""                  # udp/tcp noise
    repeat: int = 1                    # udp noise datagrams

    @classmethod
    def from_dict(cls, d: dict) -> "SessionSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown session keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class SessionResult:
    name: str
    kind: str
    dns: dict | None = None
    local: list | None = None
    remote: list | None = None
    replies: list[dict] = field(default_factory=list)
    tls_version: str | None = None
    tls_cipher: str | None = None
    error: str | None = None
    started: float = 0.0
    duration: float = 0.0


def client_context(spec: SessionSpec, cafile: str, other_cafile: str | None,
                   keylog: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=other_cafile if spec.trust == "other" else cafile)
    if spec.tls_min:
        ctx.minimum_version = TLS_VERSIONS[spec.tls_min]
    if spec.tls_max:
        ctx.maximum_version = TLS_VERSIONS[spec.tls_max]
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")   # OpenSSL 3 won't do TLS 1.0/1.1 otherwise
    if spec.keylog and keylog:
        ctx.keylog_filename = keylog
    return ctx


def message(spec: SessionSpec) -> str:
    now = format_datetime(datetime.now(timezone.utc))
    body = "\r\n".join(f"Page {i + 1} of the scanned document follows as text." for i in
                       range(spec.body_lines))
    return (f"From: <{spec.mail_from}>\r\nTo: {', '.join(f'<{r}>' for r in spec.rcpt_to)}\r\n"
            f"Subject: {spec.subject}\r\nDate: {now}\r\nMessage-ID: {make_msgid(domain='contoso.com')}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n{body}\r\n")


class LabSMTP(smtplib.SMTP):
    """smtplib.SMTP that connects to an already-resolved address (SNI and logs keep the name),
    can start with implicit TLS, and records every reply with whether it came inside TLS."""

    def __init__(self, address: str, *, source: str | None, implicit: ssl.SSLContext | None,
                 connect_timeout: float, timeout: float, helo: str) -> None:
        self.lab_address = address
        self.lab_implicit = implicit
        self.lab_connect_timeout = connect_timeout
        self.transcript: list[dict] = []
        self.local: list | None = None
        super().__init__(local_hostname=helo, timeout=timeout,
                         source_address=(source, 0) if source else None)

    def connect(self, host="localhost", port=0, source_address=None):
        self._host = host   # smtplib only sets it in __init__; starttls() uses it for SNI
        return super().connect(host, port, source_address)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((self.lab_address, port), self.lab_connect_timeout,
                                        self.source_address)
        sock.settimeout(timeout)
        self.local = list(sock.getsockname()[:2])
        if self.lab_implicit is not None:
            try:
                sock = self.lab_implicit.wrap_socket(sock, server_hostname=host)
            except BaseException:
                sock.close()
                raise
        return sock

    def getreply(self):
        code, msg = super().getreply()
        self.transcript.append({"code": code, "text": msg.decode("utf-8", "replace"),
                                "tls": isinstance(self.sock, ssl.SSLSocket)})
        return code, msg

    def finish(self) -> None:
        """Close politely: close_notify both ways if in TLS, then wait for the server's FIN."""
        sock = self.sock
        if sock is None:
            return
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.settimeout(5)
                try:
                    sock = sock.unwrap()
                except (ssl.SSLError, OSError, ValueError):
                    pass
            sock.settimeout(5)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and sock.recv(4096):
                pass
        except OSError:
            pass
        finally:
            self.close()


def _nameserver() -> str:
    with open("/etc/resolv.conf") as f:   # the namespace's own, bind-mounted by ip netns exec
        for line in f:
            if line.split()[:1] == ["nameserver"]:
                return line.split()[1]
    raise OSError("no nameserver in /etc/resolv.conf")


def _resolve_from_source(spec: SessionSpec) -> list[tuple]:
    """A device with its own address asks the resolver from that address (glibc can't)."""
    from .dns import RCODE, resolve_from

    answers = resolve_from(spec.source, _nameserver(), spec.host)
    names = {v: k for k, v in RCODE.items()}
    addrs = answers["AAAA"][1] + answers["A"][1]
    if not addrs:
        rcodes = [names.get(answers[t][0], "no answer") for t in ("A", "AAAA")]
        raise socket.gaierror(socket.EAI_NONAME, f"no address ({'/'.join(rcodes)})")
    return [(socket.AF_INET6 if ":" in a else socket.AF_INET, None, None, None, (a, spec.port))
            for a in addrs]


def resolve(spec: SessionSpec, result: SessionResult) -> str | None:
    if not spec.resolve:
        return spec.address or spec.host
    try:
        if spec.source:
            infos = _resolve_from_source(spec)
        else:
            infos = socket.getaddrinfo(spec.host, spec.port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        result.dns = {"name": spec.host, "error": exc.args[1] if len(exc.args) > 1 else str(exc),
                      "errno": exc.errno}
        result.error = f"resolve {spec.host}: {exc}"
        return None
    addrs = list(dict.fromkeys(i[4][0] for i in infos))
    result.dns = {"name": spec.host, "addresses": addrs}
    want = socket.AF_INET if spec.family == 4 else socket.AF_INET6
    for fam, *_rest, sockaddr in infos:
        if fam == want:
            return sockaddr[0]
    result.error = f"resolve {spec.host}: no IPv{spec.family} address"
    return None


def run_smtp(spec: SessionSpec, address: str, result: SessionResult, env: dict) -> None:
    ctx = None
    if spec.tls != "none":
        ctx = client_context(spec, env["ca"], env.get("other_ca"), env.get("keylog"))
    smtp = LabSMTP(address, source=spec.source, implicit=ctx if spec.tls == "implicit" else None,
                   connect_timeout=spec.connect_timeout, timeout=spec.timeout, helo=spec.helo)
    try:
        try:
            code, _ = smtp.connect(spec.host, spec.port)
        finally:
            result.local = smtp.local
        result.remote = [address, spec.port]
        if code != 220:
            # A refused greeting: the server is closing; say nothing more (as smtplib's __init__).
            result.error = f"greeting refused: {code}"
            smtp.close()
            return
        last_code = 0
        for step in spec.steps:
            try:
                code = do_step(smtp, step, spec, ctx)
            except smtplib.SMTPResponseException as exc:
                code = exc.smtp_code
                result.error = f"{step}: {exc.smtp_code} {exc.smtp_error!r}"
            except smtplib.SMTPServerDisconnected as exc:
                result.error = f"{step}: server disconnected ({exc})"
                smtp.close()
                return
            except (ssl.SSLError, ssl.CertificateError) as exc:
                result.error = f"{step}: {exc!r}"
                smtp.close()   # a failed handshake leaves nothing to say politely
                return
            if isinstance(smtp.sock, ssl.SSLSocket):
                result.tls_version = smtp.sock.version()
                result.tls_cipher = smtp.sock.cipher()[0]
            last_code = code
            if step == "quit":
                smtp.finish()
                return
            if code >= 400:
                result.error = result.error or f"{step}: {code}"
                break
        if last_code == 421:
            smtp.close()   # the server is closing the connection: nothing more to say
            return
        if spec.on_error == "close":
            smtp.finish()
            return
        if "quit" in spec.steps:
            try:
                smtp.docmd("QUIT")
            except (smtplib.SMTPException, OSError):
                pass
        smtp.finish()
    except OSError as exc:
        result.error = result.error or f"{type(exc).__name__}: {exc}"
        smtp.close()
    finally:
        result.replies = smtp.transcript


def do_step(smtp: LabSMTP, step: str, spec: SessionSpec, ctx: ssl.SSLContext | None) -> int:
    if step == "ehlo":
        return smtp.ehlo(spec.helo)[0]
    if step == "starttls":
        return smtp.starttls(context=ctx)[0]
    if step == "auth":
        smtp.user, smtp.password = spec.user, spec.password
        return smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)[0]
    if step == "mail":
        return smtp.mail(spec.mail_from)[0]
    if step == "rcpt":
        worst = 0
        for rcpt in spec.rcpt_to:
            worst = max(worst, smtp.rcpt(rcpt)[0])
        return worst
    if step == "data":
        return smtp.data(message(spec))[0]
    if step == "rset":
        return smtp.rset()[0]
    if step == "noop":
        return smtp.noop()[0]
    if step == "quit":
        return smtp.docmd("QUIT")[0]
    raise ValueError(f"unknown step {step!r}")


# --- a pipelining/BDAT client on a raw socket ---------------------------------------------------

def _read_reply(f, transcript: list[dict]) -> int:
    lines = []
    while True:
        line = f.readline(1024)
        if not line:
            raise ConnectionError("connection closed while waiting for a reply")
        lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    code = int(lines[0][:3])
    transcript.append({"code": code, "text": "\n".join(x[4:] for x in lines), "tls": False})
    return code


def run_bdat(spec: SessionSpec, address: str, result: SessionResult) -> None:
    """EHLO, then MAIL/RCPT/RCPT in one segment (PIPELINING), then two BDAT chunks back to back."""
    src = (spec.source, 0) if spec.source else None
    sock = socket.create_connection((address, spec.port), spec.connect_timeout, src)
    transcript = result.replies
    try:
        sock.settimeout(spec.timeout)
        result.local, result.remote = list(sock.getsockname()[:2]), [address, spec.port]
        f = sock.makefile("rb")
        _read_reply(f, transcript)
        sock.sendall(f"EHLO {spec.helo}\r\n".encode())
        _read_reply(f, transcript)
        batch = f"MAIL FROM:<{spec.mail_from}> BODY=BINARYMIME\r\n" + "".join(
            f"RCPT TO:<{r}>\r\n" for r in spec.rcpt_to)
        sock.sendall(batch.encode())
        for _ in range(1 + len(spec.rcpt_to)):
            _read_reply(f, transcript)
        body = message(spec).encode()
        half = len(body) // 2
        first, last = body[:half], body[half:]
        sock.sendall(f"BDAT {len(first)}\r\n".encode() + first
                     + f"BDAT {len(last)} LAST\r\n".encode() + last)
        _read_reply(f, transcript)
        _read_reply(f, transcript)
        sock.sendall(b"QUIT\r\n")
        _read_reply(f, transcript)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sock.recv(4096):
            pass
    except (OSError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        sock.close()


# --- background noise -------------------------------------------------------------------------

def run_udp(spec: SessionSpec, address: str, result: SessionResult) -> None:
    fam = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        if spec.source:
            s.bind((spec.source, 0))
        s.settimeout(1.0)
        for i in range(spec.repeat):
            s.sendto((spec.payload or f"noise {i}").encode(), (address, spec.port))
            try:
                s.recvfrom(2048)
            except OSError:
                pass
        result.local, result.remote = list(s.getsockname()[:2]), [address, spec.port]


def run_tcp(spec: SessionSpec, address: str, result: SessionResult) -> None:
    src = (spec.source, 0) if spec.source else None
    with socket.create_connection((address, spec.port), spec.connect_timeout, src) as s:
        s.settimeout(spec.timeout)
        result.local, result.remote = list(s.getsockname()[:2]), [address, spec.port]
        s.sendall((spec.payload or "HEAD / HTTP/1.1\r\nHost: intranet\r\n\r\n").encode())
        while s.recv(4096):
            pass


# --- runner -----------------------------------------------------------------------------------

def run_session(spec: SessionSpec, env: dict) -> SessionResult:
    result = SessionResult(name=spec.name, kind=spec.kind, started=time.time())
    t0 = time.monotonic()
    try:
        address = resolve(spec, result)
        if address is not None and spec.kind != "dns":
            runner = {"smtp": lambda: run_smtp(spec, address, result, env),
                      "bdat": lambda: run_bdat(spec, address, result),
                      "udp": lambda: run_udp(spec, address, result),
                      "tcp": lambda: run_tcp(spec, address, result)}[spec.kind]
            runner()
    except Exception as exc:   # reported, not raised: other sessions still run
        result.error = result.error or f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, OSError):
            result.error += "\n" + traceback.format_exc(limit=3)
    result.duration = round(time.monotonic() - t0, 3)
    return result


def run_all(specs: list[SessionSpec], env: dict, parallel: bool = False) -> list[SessionResult]:
    if not parallel:
        out = []
        for spec in specs:
            if spec.delay:
                time.sleep(spec.delay)
            out.append(run_session(spec, env))
        return out
    results: list[SessionResult | None] = [None] * len(specs)
    t0 = time.monotonic()

    def worker(i: int, spec: SessionSpec) -> None:
        time.sleep(max(0.0, spec.delay - (time.monotonic() - t0)))
        results[i] = run_session(spec, env)

    threads = [threading.Thread(target=worker, args=(i, s), daemon=True) for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    limit = time.monotonic() + env.get("deadline", 45)
    for t in threads:
        t.join(max(0.0, limit - time.monotonic()))
    return [r or SessionResult(name=s.name, kind=s.kind, error="did not finish in time")
            for r, s in zip(results, specs)]


def main() -> None:
    cfg = json.load(sys.stdin)
    specs = [SessionSpec.from_dict(d) for d in cfg["sessions"]]
    results = run_all(specs, cfg, parallel=cfg.get("parallel", False))
    json.dump([asdict(r) for r in results], sys.stdout)


if __name__ == "__main__":
    main()
