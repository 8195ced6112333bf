"""The optional configuration file: user endpoints and defaults, in TOML.

Looked for at ``--config PATH``, else ``$SMTPFLOW_CONFIG``, else
``$XDG_CONFIG_HOME/smtpflow/config.toml`` (``~/.config/smtpflow/config.toml``), else
``/etc/smtpflow/config.toml``. Example::

    # Our own relays and anything else to treat like Microsoft's endpoints
    endpoints = ["203.0.113.0/24=office relay", "mail.contoso.com", "*.contoso-com.mail.protection.outlook.com"]
    ports = [25, 465, 587, 2525, 2526]   # or "all"
    checksums = "auto"                  # auto | verify | off
    show_auth_user = false
    keylog = ["/var/log/smtpflow/sslkeys.log"]   # NSS key logs to decrypt TLS with
    table_memory_mb = 128               # what the connections open at once may hold
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration file is unreadable or says something invalid."""


@dataclass
class Config:
    path: str | None = None
    endpoints: list[str] = field(default_factory=list)
    ports: Any = None
    checksums: str | None = None
    show_auth_user: bool | None = None
    keylog: list[str] = field(default_factory=list)
    table_memory_mb: int | None = None


def default_paths() -> list[Path]:
    paths = []
    env = os.environ.get("SMTPFLOW_CONFIG")
    if env:
        paths.append(Path(env))
    xdg = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    paths.append(Path(xdg) / "smtpflow" / "config.toml")
    paths.append(Path("/etc/smtpflow/config.toml"))
    return paths


def load(path: str | None = None) -> Config:
    """Read the config file (explicit path: must exist; default paths: optional)."""
    candidates = [Path(path)] if path else default_paths()
    for candidate in candidates:
        if not candidate.exists():
            if path:
                raise ConfigError(f"{candidate}: no such configuration file")
            continue
        import tomllib  # only with a config file: 2 ms of every run otherwise

        try:
            data = tomllib.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{candidate}: cannot read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{candidate}: not valid TOML: {exc}") from None
        return _from_dict(data, str(candidate))
    return Config()


def _from_dict(data: dict[str, Any], path: str) -> Config:
    known = {"endpoints", "ports", "checksums", "show_auth_user", "keylog", "table_memory_mb"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    endpoints = data.get("endpoints", [])
    if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
        raise ConfigError(f"{path}: endpoints must be a list of strings")
    checksums = data.get("checksums")
    if checksums is not None and checksums not in ("auto", "verify", "off"):
        raise ConfigError(f"{path}: checksums must be auto, verify or off")
    show = data.get("show_auth_user")
    if show is not None and not isinstance(show, bool):
        raise ConfigError(f"{path}: show_auth_user must be true or false")
    keylog = data.get("keylog", [])
    if isinstance(keylog, str):
        keylog = [keylog]
    if not isinstance(keylog, list) or not all(isinstance(k, str) for k in keylog):
        raise ConfigError(f"{path}: keylog must be a file name or a list of them")
    table_memory = data.get("table_memory_mb")
    if table_memory is not None and (type(table_memory) is not int or table_memory < 1):
        raise ConfigError(f"{path}: table_memory_mb must be a whole number of megabytes, 1 or more")
    return Config(path=path, endpoints=endpoints, ports=data.get("ports"), checksums=checksums, show_auth_user=show,
                  keylog=keylog, table_memory_mb=table_memory)
