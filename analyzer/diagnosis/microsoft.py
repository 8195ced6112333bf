"""Is this server Microsoft's? Published ranges, DNS answers, SNI, banner, EHLO, certificate.

Every piece of evidence is recorded with where it came from, so a verdict can say *why*
smtpflow believes a server is Exchange Online. Users add their own endpoints (CIDR or host
name) on the command line or in a config file; those count as evidence too.
"""

from __future__ import annotations

import ipaddress
try:  # the C module: socket.py itself imports selectors, enum … (4 ms of every run)
    from _socket import AF_INET, AF_INET6, inet_pton
except ImportError:  # pragma: no cover - a Python without _socket has no socket either
    from socket import AF_INET, AF_INET6, inet_pton
from dataclasses import dataclass
from typing import Any, Final, Iterable

from ..decode.select import DnsInterest
from .knowledge import load_facts

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: First labels of host names that are probably mail servers (smtp.contoso.com, mx1.…).
MAIL_LABEL_PREFIXES: Final = ("smtp", "mail", "mx", "relay", "outbound", "submit")
#: Bytes in a DNS answer that suggest its CNAME chain leads to Microsoft.
#: Servers whose published range is remembered (a bound: a scan of many addresses just recomputes).
RANGE_CACHE_LIMIT: Final = 4096

CHAIN_MARKERS: Final = (b"\x09office365", b"\x07outlook", b"\x09microsoft")


@dataclass(frozen=True)
class UserEndpoint:
    """An endpoint the user declared: a network (``10.1.0.0/16``) or a host name.

    A host name starting with ``*.`` or ``.`` matches any name ending with the rest.
    """

    network: Network | None = None
    hostname: str | None = None
    label: str = "user-configured endpoint"

    @classmethod
    def parse(cls, text: str) -> "UserEndpoint":
        """Parse ``CIDR``, ``address``, ``host.name`` or any of them followed by ``=label``."""
        spec, _, label = text.partition("=")
        spec = spec.strip()
        label = label.strip() or f"user-configured endpoint {spec}"
        if not spec:
            raise ValueError("empty endpoint")
        try:
            return cls(network=ipaddress.ip_network(spec, strict=False), label=label)
        except ValueError:
            pass
        name = spec.lower().rstrip(".")
        body = name[2:] if name.startswith("*.") else name.lstrip(".")
        if not body or not all(part and all(ch.isalnum() or ch in "-_" for ch in part) for part in body.split(".")):
            raise ValueError(f"{spec!r} is neither a network, an address nor a host name")
        return cls(hostname=name, label=label)

    def matches_name(self, name: str) -> bool:
        if self.hostname is None:
            return False
        name = name.lower().rstrip(".")
        if self.hostname.startswith("*."):
            return name.endswith(self.hostname[1:])
        if self.hostname.startswith("."):
            return name.endswith(self.hostname) or name == self.hostname[1:]
        return name == self.hostname


class MicrosoftDirectory:
    """Microsoft's published Exchange Online endpoints plus the user's own."""

    def __init__(self, user_endpoints: Iterable[UserEndpoint] = (), use_published: bool = True) -> None:
        facts = load_facts()
        endpoints = facts.get("endpoints", {})
        self.version = str(endpoints.get("version", "unknown"))
        self.published = str(endpoints.get("published", "unknown"))
        names = facts.get("names", {})
        self.suffixes = tuple(s.lower() for s in names.get("microsoft_suffixes", ()))
        self._suffix_roots = frozenset(s.lstrip(".") for s in self.suffixes)  # "outlook.com" for ".outlook.com"
        self.submission_hosts = tuple(h.lower() for h in names.get("submission_hosts", ("smtp.office365.com",)))
        self.services: list[tuple[Network, dict[str, Any]]] = []
        if use_published:
            for service in endpoints.get("service", []):
                for cidr in list(service.get("ipv4", [])) + list(service.get("ipv6", [])):
                    self.services.append((ipaddress.ip_network(cidr, strict=False), service))
        # The same networks as integer bounds, per IP version, for the per-session lookup.
        self._bounds: dict[int, list[tuple[int, int, tuple[bool, int], Network, dict[str, Any]]]] = {4: [], 6: []}
        for net, service in self.services:
            rank = (service.get("role") in ("submission", "mx"), net.prefixlen)
            self._bounds[net.version].append((int(net.network_address), int(net.broadcast_address), rank, net, service))
        self.user_endpoints = list(user_endpoints)
        self._dns_interest: DnsInterest | None = None
        self._range_cache: dict[str, tuple[Network, dict[str, Any]] | None] = {}
        self._range_texts: dict[Network, str] = {}  # at most one per published network

    @property
    def networks(self) -> list[Network]:
        """Networks whose TCP traffic is worth decoding on any (non-web) port."""
        nets = [net for net, service in self.services if service.get("role") in ("submission", "mx")]
        nets += [ep.network for ep in self.user_endpoints if ep.network is not None]
        return nets

    # -- single tests -----------------------------------------------------------------------
    def range_of(self, address: str) -> tuple[Network, dict[str, Any]] | None:
        cache = self._range_cache
        if address in cache:
            return cache[address]
        if len(cache) >= RANGE_CACHE_LIMIT:
            cache.clear()
        cache[address] = found = self._range_of(address)
        return found

    def _range_of(self, address: str) -> tuple[Network, dict[str, Any]] | None:
        found = address_value(address)
        if found is None:
            return None
        version, value = found
        best: tuple[Network, dict[str, Any]] | None = None
        best_rank = (False, -1)
        for first, last, rank, net, service in self._bounds[version]:
            # Prefer mail roles, then the most specific network.
            if first <= value <= last and rank > best_rank:
                best, best_rank = (net, service), rank
        return best

    def _range_text(self, net: Network, service: dict[str, Any]) -> str:
        """What evidence says of a published range (formatting a network costs more than the rest)."""
        text = self._range_texts.get(net)
        if text is None:
            text = self._range_texts[net] = (
                f"is in {net}, Exchange Online endpoint ID {service.get('id')} "
                f"({', '.join(service.get('hosts', [])[:2])}; endpoint data version {self.version})"
            )
        return text

    def user_endpoint_for_address(self, address: str) -> UserEndpoint | None:
        if not self.user_endpoints:
            return None
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return None
        for ep in self.user_endpoints:
            if ep.network is not None and ip.version == ep.network.version and ip in ep.network:
                return ep
        return None

    def user_endpoint_for_name(self, name: str) -> UserEndpoint | None:
        for ep in self.user_endpoints:
            if ep.matches_name(name):
                return ep
        return None

    def is_microsoft_name(self, name: str | None) -> bool:
        if not name:
            return False
        name = name.lower().rstrip(".")
        return name in self.submission_hosts or name.endswith(self.suffixes) or name in self._suffix_roots

    def dns_interest(self) -> DnsInterest:
        """The DNS names worth reading: Microsoft's, the user's, and mail-ish ones."""
        if self._dns_interest is None:
            names = list(self.submission_hosts)
            suffixes = list(self.suffixes)
            for ep in self.user_endpoints:
                if ep.hostname is None:
                    continue
                if ep.hostname.startswith(("*.", ".")):
                    suffixes.append(ep.hostname.lstrip("*"))
                else:
                    names.append(ep.hostname)
            self._dns_interest = DnsInterest(names, suffixes, MAIL_LABEL_PREFIXES, CHAIN_MARKERS)
        return self._dns_interest

    def is_interesting_name(self, name: str) -> bool:
        """DNS names worth keeping in the DNS table: Microsoft's, the user's, and mail-ish ones."""
        return self.dns_interest().wants_name(name)

    def role_of_name(self, name: str | None) -> str | None:
        if not name:
            return None
        name = name.lower().rstrip(".")
        if name in self.submission_hosts or name.endswith(".outlook.office365.com") or name.startswith("smtp."):
            return "submission"
        if name.endswith(".mail.protection.outlook.com") or name.endswith(".mx.microsoft"):
            return "mx"
        return None

    # -- a session's evidence ---------------------------------------------------------------
    def evidence(self, server: str, dns_names: Iterable[dict], app: dict[str, Any]) -> tuple[list[dict[str, str]], str | None]:
        """All evidence that ``server`` is a Microsoft endpoint, and its role (submission/mx).

        ``dns_names``: what DNS in the capture said about the address (names and chains), most
        recent first; read only up to the first Microsoft (or user endpoint) name.
        ``app``: the protocol layer's summary (banner, EHLO host, SNI, certificates).
        """
        evidence: list[dict[str, str]] = []
        role: str | None = None
        found = self.range_of(server)
        if found is not None:
            net, service = found
            evidence.append({"source": "published_range", "detail": f"{server} {self._range_text(net, service)}"})
            if service.get("role") in ("submission", "mx"):
                role = service.get("role")
        user = self.user_endpoint_for_address(server)
        if user is not None:
            evidence.append({"source": "user_endpoint", "detail": f"{server} matches {user.network} ({user.label})"})
        for entry in dns_names:
            chain = entry.get("chain") or [entry.get("name", "")]
            hit = next((name for name in chain if self.is_microsoft_name(name)), None)
            user_hit = next((name for name in chain if self.user_endpoint_for_name(name)), None)
            if hit or user_hit:
                evidence.append({"source": "dns", "detail": f"DNS in this capture: {' → '.join(chain)} → {server}"})
                role = role or self.role_of_name(chain[0]) or (self.role_of_name(hit) if hit else None)
                break
        tls = app.get("tls") or {}
        sni = tls.get("sni")
        if self.is_microsoft_name(sni):
            evidence.append({"source": "sni", "detail": f"the client asked TLS for {sni} (SNI)"})
            role = role or self.role_of_name(sni)
        smtp = app.get("smtp") or {}
        host = smtp.get("server_host")
        banner = smtp.get("banner") or ""
        if self.is_microsoft_name(host):
            what = "banner" if banner and host and host in banner.lower() else "ehlo"
            evidence.append({"source": what, "detail": f"the server calls itself {host}"})
            role = role or self.role_of_name(host)
        for cert in (tls.get("certificates") or [])[:1]:  # the server's own (leaf) certificate
            hit = next((name for name in _certificate_names(cert) if self.is_microsoft_name(name)), None)
            if hit:
                evidence.append({"source": "certificate", "detail": f"the server's certificate names {hit}"})
        return evidence, role


def address_value(address: str) -> tuple[int, int] | None:
    """(IP version, address as an integer), or None for text that is not an address.

    inet_pton reads the canonical forms smtpflow writes at C speed; anything it refuses gets
    ipaddress's judgement (which, for instance, accepts a zone index)."""
    try:
        return 4, int.from_bytes(inet_pton(AF_INET, address), "big")
    except (OSError, ValueError):
        pass
    try:
        return 6, int.from_bytes(inet_pton(AF_INET6, address), "big")
    except (OSError, ValueError):
        pass
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.version, int(ip)


def _certificate_names(cert: dict[str, Any]) -> list[str]:
    """Host names in a certificate: the subject's CN and the subjectAltName DNS entries."""
    names = []
    for part in (cert.get("subject") or "").split(","):
        key, _, value = part.strip().partition("=")
        if key.upper() == "CN" and value:
            names.append(value.strip().lstrip("*."))
    names += [name.lstrip("*.") for name in cert.get("san") or []]
    return names
