"""What smtpflow knows about Exchange Online: the reply catalogue and the facts behind verdicts.

Both live as TOML next to this module, compiled from ``shared/reference/exchange-online.md``:

- ``data/exchange_replies.toml``: one entry per known SMTP reply (code, enhanced code or range,
  an optional text variant), with a title, meaning, remediation, category, severity, where it is
  seen and how sure we are (see the file's header);
- ``data/exchange_online.toml``: endpoints and CIDRs, host names, ports, TLS policy, banners,
  capture symptoms, limits and the Basic-auth retirement timeline.

Both are read once per process (``functools.cache``); treat what they return as read-only.
Parsing the TOML costs about 25 ms, a fifth of a small run, so each file has a compiled JSON
twin (``data/*.json``, written by ``python -m analyzer.diagnosis.knowledge``) that is used only
while it names the SHA-256 of the TOML as it is now: an edited TOML is read directly until the
twin is rewritten, and a test fails while a shipped twin is stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Iterable

EnhancedKey = tuple[int, int, int]

#: An enhanced status code at the start of a reply's text, whatever its class.
_LEADING_ENHANCED = re.compile(r"^\s*([245]\.[0-9]{1,3}\.[0-9]{1,3})(?=\s|$)")


def enhanced_key(code: str) -> EnhancedKey | None:
    """``"4.7.512"`` → ``(4, 7, 512)``, so codes compare numerically part by part; None if malformed."""
    parts = code.strip().split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


@dataclass(frozen=True, slots=True)
class ReplyInfo:
    """One catalogue entry: what a server reply means and what to change.

    An entry has ``enhanced`` (one code), or ``enhanced_min``/``enhanced_max`` (an inclusive
    range), or neither: then it is the generic fallback for its basic ``code``. ``match`` is a
    case-insensitive substring of the reply text that selects this variant among entries with
    the same code and enhanced code; without it the entry is their fallback.
    """

    code: int
    title: str
    meaning: str
    remediation: str
    category: str
    severity: str
    where: tuple[str, ...]
    confidence: str
    source: str
    enhanced: str | None = None
    enhanced_min: str | None = None
    enhanced_max: str | None = None
    match: str | None = None
    _folded_match: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.match is not None:
            object.__setattr__(self, "_folded_match", self.match.casefold())

    @property
    def is_fallback(self) -> bool:
        """True for a generic per-code entry (no enhanced code, no range)."""
        return self.enhanced is None and self.enhanced_min is None

    def covers(self, enhanced: str) -> bool:
        """Whether ``enhanced`` is this entry's enhanced code or lies in its range."""
        key = enhanced_key(enhanced)
        if key is None:
            return False
        if self.enhanced is not None:
            return enhanced_key(self.enhanced) == key
        if self.enhanced_min is not None and self.enhanced_max is not None:
            return enhanced_key(self.enhanced_min) <= key <= enhanced_key(self.enhanced_max)
        return False

    def matches(self, folded_text: str) -> bool:
        """Whether this entry's ``match`` occurs in ``folded_text`` (already ``casefold()``-ed)."""
        return self._folded_match is not None and self._folded_match in folded_text


def _pick(entries: Iterable[ReplyInfo], folded_text: str) -> ReplyInfo | None:
    """The first entry whose ``match`` occurs in the text, else the first without ``match``."""
    entries = list(entries)
    for entry in entries:
        if entry.matches(folded_text):
            return entry
    return next((entry for entry in entries if entry.match is None), None)


class ReplyCatalogue:
    """The reply catalogue, indexed for :meth:`lookup`. Entries keep the file's order."""

    def __init__(self, version: str, source: str, entries: Iterable[ReplyInfo]) -> None:
        self.version = version
        self.source = source
        self.entries: tuple[ReplyInfo, ...] = tuple(entries)
        self._exact: dict[tuple[int, EnhancedKey], list[ReplyInfo]] = {}
        self._ranges: dict[int, list[tuple[EnhancedKey, EnhancedKey, ReplyInfo]]] = {}
        self._fallbacks: dict[int, list[ReplyInfo]] = {}
        for entry in self.entries:
            ranged = entry.enhanced_min is not None or entry.enhanced_max is not None
            if entry.enhanced is not None and ranged:
                raise ValueError(f"reply {entry.code} {entry.title!r}: give enhanced or a range, not both")
            if entry.enhanced is not None:
                self._exact.setdefault((entry.code, _parse(entry.enhanced, entry)), []).append(entry)
            elif ranged:
                if entry.enhanced_min is None or entry.enhanced_max is None:
                    raise ValueError(f"reply {entry.code} {entry.title!r}: a range needs both enhanced_min and enhanced_max")
                low, high = _parse(entry.enhanced_min, entry), _parse(entry.enhanced_max, entry)
                if low > high:
                    raise ValueError(f"reply {entry.code} {entry.title!r}: enhanced_min is above enhanced_max")
                self._ranges.setdefault(entry.code, []).append((low, high, entry))
            else:
                self._fallbacks.setdefault(entry.code, []).append(entry)

    def lookup(self, code: int, enhanced: str | None, text: str) -> ReplyInfo | None:
        """The most specific entry for a reply, or None if not even its code is known.

        In order: same code and enhanced code (a variant whose ``match`` occurs in ``text``,
        else the one without ``match``); then a range of the same code containing the enhanced
        code (same preference); then a ``match`` variant of the same enhanced code under another
        code of the same class (550 vs 554); then the code's generic fallback. An enhanced code that is not
        ``class.subject.detail`` digits is ignored. Without ``enhanced``, one at the start of
        ``text`` is used: Exchange sends some whose class differs from the reply's (``451 5.7.3``),
        which RFC 3463 parsers rightly do not report as the reply's enhanced code.
        """
        folded = text.casefold()
        if enhanced is None:
            leading = _LEADING_ENHANCED.match(text)
            enhanced = leading.group(1) if leading else None
        key = enhanced_key(enhanced) if enhanced else None
        if key is not None:
            found = _pick(self._exact.get((code, key), ()), folded)
            if found is None:
                found = _pick((e for low, high, e in self._ranges.get(code, ()) if low <= key <= high), folded)
            if found is not None:
                return found
            # Servers differ on the basic code (550 or 554 for the same block): a text variant of
            # the same enhanced code under another code of the same class still says what it is.
            for (other, other_key), entries in self._exact.items():
                if other != code and other // 100 == code // 100 and other_key == key:
                    for entry in entries:
                        if entry.match is not None and entry.matches(folded):
                            return entry
        return _pick(self._fallbacks.get(code, ()), folded)


def _parse(code: str, entry: ReplyInfo) -> EnhancedKey:
    key = enhanced_key(code)
    if key is None:
        raise ValueError(f"reply {entry.code} {entry.title!r}: {code!r} is not an enhanced status code")
    return key


def _reply(table: dict[str, Any], index: int) -> ReplyInfo:
    values = dict(table)
    if "where" in values:
        values["where"] = tuple(values["where"])
    try:
        return ReplyInfo(**values)
    except TypeError as exc:  # a required key is missing, or an unknown one is present
        raise ValueError(f"reply entry {index} of exchange_replies.toml: {exc}") from None


#: The package's data files (a path, not importlib.resources: that cost 3 ms of every run,
#: and the package, with its C extension, is never imported from a zip).
DATA = Path(__file__).resolve().parent / "data"


def _twin(name: str) -> str:
    return name.removesuffix(".toml") + ".json"


def _read(name: str, directory: Any = DATA) -> dict[str, Any]:
    """The parsed TOML file ``name``: from its JSON twin when that was compiled from these bytes."""
    raw = (directory / name).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        twin = json.loads((directory / _twin(name)).read_bytes())
        if isinstance(twin, dict) and twin.get("toml_sha256") == digest and isinstance(twin.get("data"), dict):
            return twin["data"]
    except (OSError, ValueError):
        pass  # no twin, or a damaged one: the TOML is the source
    import tomllib  # only then: 2 ms of every run otherwise

    return tomllib.loads(raw.decode("utf-8"))


def compile_twin(name: str, directory: Any = DATA) -> str:
    """The JSON twin of the TOML file ``name`` (the text ``_read`` accepts for these bytes)."""
    import tomllib

    raw = (directory / name).read_bytes()
    data = tomllib.loads(raw.decode("utf-8"))
    twin = {"comment": f"Generated from {name} by python -m analyzer.diagnosis.knowledge; edit the TOML.",
            "toml_sha256": hashlib.sha256(raw).hexdigest(), "data": data}
    return json.dumps(twin, indent=1, ensure_ascii=False) + "\n"


DATA_FILES = ("exchange_replies.toml", "exchange_online.toml")


@cache
def load_replies() -> ReplyCatalogue:
    """The reply catalogue (``data/exchange_replies.toml``)."""
    data = _read("exchange_replies.toml")
    return ReplyCatalogue(
        str(data["version"]), str(data["source"]), (_reply(table, i) for i, table in enumerate(data.get("reply", [])))
    )


@cache
def load_facts() -> dict[str, Any]:
    """Everything else (``data/exchange_online.toml``) as parsed TOML; shared, do not modify."""
    return _read("exchange_online.toml")


def main() -> int:
    """Rewrite the JSON twins after editing the TOML files."""
    for name in DATA_FILES:
        target = DATA / _twin(name)
        text = compile_twin(name)
        with open(str(target), "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
