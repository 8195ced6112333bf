"""An aiosmtpd server dressed as Exchange Online (or as a Postfix relay), with scripted failures.

Personas give the banner, EHLO and reply texts of the real services (see
``shared/reference/exchange-online.md`` §3–4):

* ``exo`` — the SMTP AUTH front end behind ``smtp.office365.com`` (port 587),
* ``mx`` — a tenant MX, ``<tenant>-com.mail.protection.outlook.com`` (port 25),
* ``postfix`` — a non-Microsoft relay (``relay.contoso.com``) that offers AUTH in clear and
  implicit TLS on 465.

A :class:`Behaviour` scripts what goes wrong: replaced greeting, STARTTLS refused, TLS required,
AUTH results, relay denial, throttling, Send-As denial, TLS 1.0/1.1 answered with 421 4.7.66 (what
Exchange Online really does), a minimum TLS version enforced with a real alert.

asyncio aborts a failed TLS handshake without flushing what OpenSSL queued, so the client would see
a bare close instead of e.g. ``protocol_version``; :class:`AlertFlushingSSLProtocol` puts the
alert on the wire first. Run in a namespace with ``python -m tests.lab.exchange`` (JSON config on
stdin, prints READY once listening, stops on SIGTERM).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import re
import secrets
import signal
import ssl
import sys
from asyncio import sslproto
from dataclasses import dataclass, fields
from datetime import datetime, timezone

from aiosmtpd.smtp import SMTP

MAX_MESSAGE = 157_286_400   # Exchange's SIZE
READ_TIMEOUT = 30.0         # any single read from a client
SESSION_IDLE = 30.0         # aiosmtpd's idle timeout

TLS_VERSIONS = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1,
                "TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class AlertFlushingSSLProtocol(sslproto.SSLProtocol):
    """asyncio's SSLProtocol, but a failed handshake first sends the alert OpenSSL produced.

    Upstream ``_do_handshake`` goes straight to ``_fatal_error`` → ``_force_close`` and the alert
    sitting in the outgoing memory BIO is discarded.
    """

    def _do_handshake(self):
        try:
            self._sslobj.do_handshake()
        except sslproto.SSLAgainErrors:
            self._process_outgoing()
        except ssl.SSLError as exc:
            self._process_outgoing()
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)


def install_alert_flushing() -> None:
    # Both create_server(ssl=…) and aiosmtpd's STARTTLS look the class up on the module.
    sslproto.SSLProtocol = AlertFlushingSSLProtocol


# --- personas -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Persona:
    kind: str
    node: str
    host: str
    trailer_host: str | None    # Exchange's diagnostic trailer host; None: no trailer
    ehlo_extensions: tuple[str, ...]
    auth_mechanisms: str
    replies: dict[str, str]

    def ident(self, session_id: str) -> str:
        """The greeting after ``220 <host> ``."""
        if self.kind == "postfix":
            return "ESMTP Postfix"
        date = email.utils.format_datetime(datetime.now(timezone.utc).replace(microsecond=0))
        return f"Microsoft ESMTP MAIL Service ready at {date} [{session_id}]"

    def trailer(self, session_id: str) -> str:
        if not self.trailer_host:
            return ""
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
        return f" [{self.trailer_host} {stamp} {session_id}]"


_EXO_EXT = ("SIZE 157286400", "PIPELINING", "DSN", "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH",
            "8BITMIME", "BINARYMIME", "CHUNKING", "SMTPUTF8")

_EXCHANGE_REPLIES = {
    "starttls_go": "220 2.0.0 SMTP server ready",
    "starttls_refused": "454 4.7.0 Temporary authentication failure",
    "tls_required": "530 5.7.0 Must issue a STARTTLS command first",
    "auth_prompt_user": "334 VXNlcm5hbWU6",
    "auth_prompt_password": "334 UGFzc3dvcmQ6",
    "auth_ok": "235 2.7.0 Authentication successful",
    "auth_fail": "535 5.7.3 Authentication unsuccessful",
    "auth_disabled": "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
                     "for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information.",
    "auth_unknown": "504 5.7.4 Unrecognized authentication type",
    "auth_cancelled": "501 5.0.0 Authentication cancelled",
    "auth_bad_base64": "501 5.5.2 Cannot Decode response",
    "not_authenticated": "530 5.7.57 Client not authenticated to send mail.",
    "hello_first": "503 5.5.2 Send hello first",
    "already_auth": "503 5.5.2 Already authenticated",
    "mail_ok": "250 2.1.0 Sender OK",
    "mail_twice": "503 5.5.2 Sender already specified",
    "rcpt_ok": "250 2.1.5 Recipient OK",
    "need_mail": "503 5.5.1 Need mail command",
    "need_rcpt": "503 5.5.2 Need rcpt command",
    "relay_denied": "550 5.7.64 TenantAttribution; Relay Access Denied",
    "throttled": "451 4.7.500 Server busy. Please try again later from [{ip}]. (AS761)",
    "data_go": "354 Start mail input; end with <CRLF>.<CRLF>",
    "bdat_chunk": "250 2.6.0 CHUNK received OK, {n} octets",
    "sendas_denied": "554 5.2.252 SendAsDenied; {user} not allowed to send as {sender}; "
                     "STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied; "
                     "Failed to process message due to a permanent exception with message Cannot "
                     "submit message.",
    "too_big": "552 5.3.4 Message size exceeds fixed maximum message size",
    "syntax": "501 5.5.4 Invalid arguments",
    "rset": "250 2.0.0 Resetting",
    "noop": "250 2.0.0 OK",
    "quit": "221 2.0.0 Service closing transmission channel",
    "unrecognized": "500 5.3.3 Unrecognized command '{cmd}'",
    "legacy_tls": "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client "
                  "to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls",
    "greeting_554": "554 5.7.1 Service unavailable; Client host [{ip}] blocked using Spamhaus. (AS3130)",
    "greeting_421": "421 4.3.2 Service not available",
}

PERSONAS = {
    "exo": Persona(
        kind="exo", node="SY5P282CA0097", host="SY5P282CA0097.outlook.office365.com",
        trailer_host="SY5P282CA0097.AUSP282.PROD.OUTLOOK.COM", ehlo_extensions=_EXO_EXT,
        auth_mechanisms="LOGIN XOAUTH2",
        replies={**_EXCHANGE_REPLIES,
                 "queued": "250 2.0.0 OK <{msgid}> [Hostname=SY4P282MB3021.AUSP282.PROD.OUTLOOK.COM]",
                 "sendas_suffix": " [Hostname=SY4P282MB3021.AUSP282.PROD.OUTLOOK.COM]"}),
    "mx": Persona(
        kind="mx", node="BN8NAM11FT012", host="BN8NAM11FT012.mail.protection.outlook.com",
        trailer_host="BN8NAM11FT012.eop-nam11.prod.protection.outlook.com",
        ehlo_extensions=tuple(e for e in _EXO_EXT if e != "AUTH"), auth_mechanisms="",
        replies={**_EXCHANGE_REPLIES,
                 "queued": "250 2.6.0 <{msgid}> [InternalId={internal_id}, Hostname="
                           "BN8NAM11HT091.eop-nam11.prod.protection.outlook.com] {n} bytes in "
                           "0.011, {kbps} KB/sec Queued mail for delivery",
                 "sendas_suffix": ""}),
    "postfix": Persona(
        kind="postfix", node="relay", host="relay.contoso.com", trailer_host=None,
        ehlo_extensions=("PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH",
                         "AUTH=PLAIN LOGIN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8",
                         "CHUNKING"),
        auth_mechanisms="PLAIN LOGIN",
        replies={**_EXCHANGE_REPLIES,
                 "starttls_go": "220 2.0.0 Ready to start TLS",
                 "mail_ok": "250 2.1.0 Ok", "rcpt_ok": "250 2.1.5 Ok",
                 "need_mail": "503 5.5.1 Error: need MAIL command",
                 "need_rcpt": "503 5.5.1 Error: need RCPT command",
                 "hello_first": "503 5.5.1 Error: send HELO/EHLO first",
                 "data_go": "354 End data with <CR><LF>.<CR><LF>",
                 "bdat_chunk": "250 2.0.0 Ok: {n} bytes",
                 "queued": "250 2.0.0 Ok: queued as 4dXk2T1qZvz9Q",
                 "quit": "221 2.0.0 Bye", "rset": "250 2.0.0 Ok", "noop": "250 2.0.0 Ok",
                 "unrecognized": "502 5.5.2 Error: command not recognized",
                 "sendas_suffix": ""}),
}


@dataclass
class Behaviour:
    """What one listener does. Field values are strings/bools so configs stay plain JSON."""

    persona: str = "exo"
    greeting: str | None = None          # "554" (Spamhaus block) or "421" (4.3.2), then close
    starttls: str = "ok"                 # ok | refuse (454 4.7.0) | hidden (not advertised)
    require_tls: bool = False            # MAIL before STARTTLS → 530 5.7.0
    auth: str | None = None              # ok | fail (535 5.7.3) | disabled (535 5.7.139); None: no AUTH
    auth_before_tls: bool = False        # offer and accept AUTH in clear (the Postfix relay)
    require_auth: bool = False           # MAIL without AUTH → 530 5.7.57
    rcpt: str = "ok"                     # ok | relay_denied (external rcpts) | throttled
    internal_domain: str = "contoso.com"
    data: str = "ok"                     # ok | sendas_denied
    legacy_tls: str = "421"              # TLS 1.0/1.1 sessions: 421 (4.7.66 and close) | allow
    tls_min: str = "TLSv1.2"             # the TLS layer's minimum version (lower needs SECLEVEL=0)
    tls_max: str | None = None           # e.g. "TLSv1.2" like Exchange Online's observed sessions
    implicit_tls: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> "Behaviour":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown behaviour keys: {sorted(unknown)}")
        return cls(**d)


def server_context(cert: str, key: str | None, tls_min: str, tls_max: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = TLS_VERSIONS[tls_min]
    if tls_max:
        ctx.maximum_version = TLS_VERSIONS[tls_max]
    if ctx.minimum_version < ssl.TLSVersion.TLSv1_2:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 refuses TLS 1.0/1.1 at level ≥ 1
    return ctx


# --- the server -----------------------------------------------------------------------------

_ADDR = re.compile(r"^\s*(FROM|TO):\s*<([^>]*)>\s*(.*)$", re.IGNORECASE)


class ExchangeSMTP(SMTP):
    """aiosmtpd's connection loop and TLS upgrade; commands and replies done the Exchange way."""

    def __init__(self, behaviour: Behaviour, tls_context: ssl.SSLContext | None, **kwargs) -> None:
        self.behaviour = behaviour
        self.persona = PERSONAS[behaviour.persona]
        self.session_id = "08DE" + secrets.token_hex(6).upper()
        self.auth_user: str | None = None
        self.rcpts_ok = 0
        self.content = bytearray()
        starttls_ctx = None if behaviour.implicit_tls else tls_context
        super().__init__(handler=None, hostname=self.persona.host,
                         ident=self.persona.ident(self.session_id), tls_context=starttls_ctx,
                         data_size_limit=MAX_MESSAGE,
                         enable_SMTPUTF8=True, timeout=SESSION_IDLE, **kwargs)

    # helpers -----------------------------------------------------------------------------

    @property
    def tls_active(self) -> bool:
        return self.transport is not None and self.transport.get_extra_info("ssl_object") is not None

    @property
    def peer_ip(self) -> str:
        return self.session.peer[0] if self.session and self.session.peer else "0.0.0.0"

    async def reply(self, key: str, *, trailer: bool | None = None, **fmt) -> None:
        text = self.persona.replies[key].format(ip=self.peer_ip, **fmt)
        if trailer is None:
            trailer = text[:1] in "45"   # Exchange appends its diagnostic trailer to errors
        if trailer:
            text += self.persona.trailer(self.session_id)
        await self.push(text)

    # aiosmtpd answers some things itself (unknown or undecodable commands); say it Exchange's way.
    _BUILTIN = ((re.compile(r'^500 Error: command "(.*)" not recognized$'), "unrecognized"),
                (re.compile(r"^500 Error: (bad syntax|strict ASCII mode)$"), "unrecognized"))

    async def push(self, status) -> None:
        if isinstance(status, str):
            for pattern, key in self._BUILTIN:
                m = pattern.match(status)
                if m:
                    cmd = m.group(1) if m.group(1).isalpha() and m.group(1).isupper() else "unknown"
                    status = self.persona.replies[key].format(cmd=cmd)
                    if self.persona.trailer_host:
                        status += self.persona.trailer(self.session_id)
                    break
        await super().push(status)

    async def read_line(self) -> bytes:
        return await asyncio.wait_for(self._reader.readuntil(b"\n"), READ_TIMEOUT)

    def _reset_envelope(self) -> None:
        self._set_rset_state()
        self.rcpts_ok = 0
        self.content = bytearray()

    # connection ------------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if self.behaviour.implicit_tls:
            self._check_tls_version()

    async def _handle_client(self) -> None:
        if self.behaviour.greeting:
            await self.reply(f"greeting_{self.behaviour.greeting}")
            self.transport.close()
            return
        await super()._handle_client()

    def _check_tls_version(self) -> None:
        obj = self.transport.get_extra_info("ssl_object") if self.transport else None
        if (obj is not None and obj.version() in ("TLSv1", "TLSv1.1")
                and self.behaviour.legacy_tls == "421"):
            # Exchange Online completes the handshake, then answers every command with 421.
            self._smtp_methods = {name: self._legacy_tls_reject for name in self._smtp_methods}

    async def _legacy_tls_reject(self, arg) -> None:
        await self.reply("legacy_tls", trailer=True)
        # Drop the TCP connection right after the reply, without a TLS close_notify exchange
        # (asyncio's graceful TLS close would wait for the client's close_notify first).
        (self._original_transport or self.transport).close()

    # commands --------------------------------------------------------------------------------

    def _extensions(self) -> list[str]:
        out = []
        for ext in self.persona.ehlo_extensions:
            if ext == "STARTTLS":
                if self.tls_context is None or self.tls_active or self.behaviour.starttls == "hidden":
                    continue
            elif ext.startswith("AUTH"):
                if self.behaviour.auth is None or not (self.tls_active or self.behaviour.auth_before_tls):
                    continue
                if ext == "AUTH":
                    ext = f"AUTH {self.persona.auth_mechanisms}"
            out.append(ext)
        return out

    async def smtp_EHLO(self, hostname: str) -> None:
        if not hostname:
            await self.reply("syntax")
            return
        self._reset_envelope()
        self.session.extended_smtp = True
        self.session.host_name = hostname
        if self.persona.kind == "postfix":
            first = self.persona.host
        else:
            first = f"{self.persona.host} Hello [{self.peer_ip}]"
        lines = [first, *self._extensions()]
        await self.push("\r\n".join(
            f"250{' ' if i == len(lines) - 1 else '-'}{line}" for i, line in enumerate(lines)))

    async def smtp_HELO(self, hostname: str) -> None:
        if not hostname:
            await self.reply("syntax")
            return
        self._reset_envelope()
        self.session.extended_smtp = False
        self.session.host_name = hostname
        await self.push(f"250 {self.persona.host} Hello [{self.peer_ip}]")

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self.tls_context is None or self.tls_active or self.behaviour.starttls == "hidden":
            await self.reply("unrecognized", cmd="STARTTLS")
            return
        if self.behaviour.starttls == "refuse":
            await self.reply("starttls_refused")
            return
        await self.reply("starttls_go")
        # As aiosmtpd does it, with the module-level (alert-flushing) SSLProtocol.
        waiter = self.loop.create_future()
        self._tls_protocol = sslproto.SSLProtocol(self.loop, self, self.tls_context, waiter,
                                                  server_side=True)
        self._original_transport = self.transport
        self._original_transport.set_protocol(self._tls_protocol)
        self.transport = self._tls_protocol._app_transport
        self._tls_protocol.connection_made(self._original_transport)
        try:
            await asyncio.wait_for(waiter, READ_TIMEOUT)
        except Exception as exc:   # handshake failed: the alert is out, the transport is closing
            print(f"exchange: TLS handshake failed: {exc!r}", file=sys.stderr, flush=True)
            self.connection_lost(exc)   # what aiosmtpd does after a TLSSetupException
            return
        self._check_tls_version()

    async def _challenge(self, prompt_key: str | None, prompt: str | None = None) -> str | None:
        if prompt_key:
            await self.reply(prompt_key)
        else:
            await self.push(prompt or "334 ")
        line = (await self.read_line()).rstrip(b"\r\n")
        if line == b"*":
            return None
        return line.decode("ascii", "replace")

    async def smtp_AUTH(self, arg: str) -> None:
        b = self.behaviour
        if not self.session.host_name:
            await self.reply("hello_first")
            return
        if b.auth is None or not (self.tls_active or b.auth_before_tls):
            await self.reply("auth_unknown")
            return
        if self.auth_user is not None:
            await self.reply("already_auth")
            return
        mech, _, initial = (arg or "").partition(" ")
        mech = mech.upper()
        if mech not in self.persona.auth_mechanisms.split():
            await self.reply("auth_unknown")
            return
        try:
            if mech == "LOGIN":
                user64 = initial or await self._challenge("auth_prompt_user")
                pass64 = None if user64 is None else await self._challenge("auth_prompt_password")
                if user64 is None or pass64 is None:
                    await self.reply("auth_cancelled")
                    return
                user = base64.b64decode(user64, validate=True).decode("utf-8", "replace")
            else:  # PLAIN / XOAUTH2: one blob
                blob64 = initial or await self._challenge(None, "334 ")
                if blob64 is None:
                    await self.reply("auth_cancelled")
                    return
                blob = base64.b64decode(blob64, validate=True).decode("utf-8", "replace")
                user = (blob.split("\0")[1] if mech == "PLAIN" and blob.count("\0") >= 2
                        else re.sub(r"^user=([^\x01]*).*$", r"\1", blob, flags=re.S))
        except (binascii.Error, ValueError):
            await self.reply("auth_bad_base64")
            return
        if b.auth == "ok":
            self.auth_user = user
            self.session.authenticated = True
            await self.reply("auth_ok")
        elif b.auth == "disabled":
            await self.reply("auth_disabled")
        else:
            await self.reply("auth_fail")

    async def smtp_MAIL(self, arg: str) -> None:
        b = self.behaviour
        if not self.session.host_name:
            await self.reply("hello_first")
            return
        if b.require_tls and not self.tls_active:
            await self.reply("tls_required")
            return
        if b.require_auth and self.auth_user is None:
            await self.reply("not_authenticated")
            return
        if self.envelope.mail_from is not None:
            await self.reply("mail_twice")
            return
        m = _ADDR.match(arg or "")
        if not m or m.group(1).upper() != "FROM":
            await self.reply("syntax")
            return
        self.envelope.mail_from = m.group(2)
        await self.reply("mail_ok")

    async def smtp_RCPT(self, arg: str) -> None:
        b = self.behaviour
        if self.envelope.mail_from is None:
            await self.reply("need_mail")
            return
        m = _ADDR.match(arg or "")
        if not m or m.group(1).upper() != "TO":
            await self.reply("syntax")
            return
        rcpt = m.group(2)
        if b.rcpt == "throttled":
            await self.reply("throttled")
        elif b.rcpt == "relay_denied" and not rcpt.lower().endswith("@" + b.internal_domain):
            await self.reply("relay_denied")
        else:
            self.envelope.rcpt_tos.append(rcpt)
            self.rcpts_ok += 1
            await self.reply("rcpt_ok")

    async def _message_done(self) -> None:
        n = len(self.content)
        if self.behaviour.data == "sendas_denied":
            suffix = self.persona.replies["sendas_suffix"]
            await self.push(self.persona.replies["sendas_denied"].format(
                user=self.auth_user or "", sender=self.envelope.mail_from) + suffix)
        else:
            msgid = f"{secrets.token_hex(8).upper()}@{self.persona.node}.lab.invalid"
            await self.reply("queued", msgid=msgid, n=n, kbps=f"{n / 1024 / 0.011:.1f}",
                             internal_id=str(secrets.randbelow(10**12)))
        self._reset_envelope()

    async def smtp_DATA(self, arg: str) -> None:
        if self.envelope.mail_from is None:
            await self.reply("need_mail")
            return
        if not self.rcpts_ok:
            await self.reply("need_rcpt")
            return
        await self.reply("data_go")
        too_big = False
        while True:
            line = await self.read_line()
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b"."):
                line = line[1:]
            if len(self.content) + len(line) > MAX_MESSAGE:
                too_big = True
                continue
            self.content += line
        if too_big:
            self._reset_envelope()
            await self.reply("too_big")
            return
        await self._message_done()

    async def smtp_BDAT(self, arg: str) -> None:
        parts = (arg or "").split()
        if not parts or not parts[0].isdigit() or len(parts) > 2 or (
                len(parts) == 2 and parts[1].upper() != "LAST"):
            await self.reply("syntax")
            return
        size, last = int(parts[0]), len(parts) == 2
        if size > MAX_MESSAGE:
            await self.reply("too_big")
            self.transport.close()
            return
        # The chunk must be read even when it is refused (RFC 3030 §2).
        chunk = await asyncio.wait_for(self._reader.readexactly(size), READ_TIMEOUT)
        if self.envelope.mail_from is None:
            await self.reply("need_mail")
            return
        if not self.rcpts_ok:
            await self.reply("need_rcpt")
            return
        self.content += chunk
        if last:
            await self._message_done()
        else:
            await self.reply("bdat_chunk", n=size)

    async def smtp_RSET(self, arg: str) -> None:
        self._reset_envelope()
        await self.reply("rset")

    async def smtp_NOOP(self, arg: str) -> None:
        await self.reply("noop")

    async def smtp_QUIT(self, arg: str) -> None:
        await self.reply("quit")
        self._handler_coroutine.cancel()
        self.transport.close()


# --- side listeners for background noise ------------------------------------------------------

class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data[:512], addr)


async def _tcp_hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # A stand-in for some other service: read one request, answer, close.
    try:
        await asyncio.wait_for(reader.read(1024), 5)
        writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


# --- process entry point ----------------------------------------------------------------------

async def serve(config: dict) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    certs = config.get("certs", {})
    for spec in config["listeners"]:
        behaviour = Behaviour.from_dict(spec.get("behaviour", {}))
        ctx = None
        if spec.get("cert"):
            c = certs[spec["cert"]]
            ctx = server_context(c["cert"], c.get("key"), behaviour.tls_min, behaviour.tls_max)

        def factory(b=behaviour, c=ctx):
            return ExchangeSMTP(b, c, loop=loop)

        for address in spec["addresses"]:
            tls_kw = {"ssl": ctx, "ssl_handshake_timeout": READ_TIMEOUT} if behaviour.implicit_tls else {}
            servers.append(await loop.create_server(
                factory, host=address, port=spec["port"], reuse_address=True, **tls_kw))
    for address, port in config.get("udp_echo", []):
        await loop.create_datagram_endpoint(_UdpEcho, local_addr=(address, port))
    for address, port in config.get("tcp_hello", []):
        servers.append(await asyncio.start_server(_tcp_hello, address, port, reuse_address=True))
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGINT, lambda: stop.done() or stop.set_result(None))
    print("READY", flush=True)
    await stop
    for s in servers:
        s.close()


def main() -> None:
    install_alert_flushing()
    asyncio.run(serve(json.load(sys.stdin)))


if __name__ == "__main__":
    main()
