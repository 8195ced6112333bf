"""The compiled hot path: which modules are compiled, and whether this process uses them.

The modules every relevant packet goes through (the engine's loop, TCP, reassembly, the SMTP, TLS
and DNS parsers)
and those every session goes through (its record, outcome and verdict) are plain annotated
Python. Where mypyc and a C compiler were there when smtpflow was installed, ``setup.py`` also
compiled each of them into an extension module beside its source, which Python imports in its
place: the same code, run about twice as fast. mypyc checks the annotations at run time (a
``bytes`` parameter refuses a ``memoryview``), so they must be true. Results never depend on it
(the tests compare the two ways).

The sources are imported instead — all of them: compiled modules call each other's classes
directly, so they go together —

* when ``SMTPFLOW_PURE_PYTHON=1`` (also turns off the C scan, :mod:`analyzer.decode.fastpath`);
* when a source is not the one that was compiled (edited since the install, or the tree was
  switched to another commit), with a warning to install again.

:func:`choose` runs once, when the package is imported, before any of them is.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings

#: The compiled modules, by name (``setup.py`` reads this list).
MODULES = (
    "analyzer.dispatch",
    "analyzer.flows.reassembly",
    "analyzer.flows.tcp",
    "analyzer.flows.table",
    "analyzer.protocols.session",
    "analyzer.protocols.smtp.constants",
    "analyzer.protocols.smtp.events",
    "analyzer.protocols.smtp.parser",
    "analyzer.protocols.tls.constants",
    "analyzer.protocols.tls.parser",
    "analyzer.protocols.dns.message",
    "analyzer.protocols.dns.tracker",
    # per session: its record, outcome, verdict and the capture's summary
    "analyzer.diagnosis.resets",
    "analyzer.diagnosis.microsoft",
    "analyzer.diagnosis.outcome",
    "analyzer.diagnosis.verdicts",
    "analyzer.diagnosis.summary",
    "analyzer.diagnosis.records",
)

#: What ``setup.py`` compiled: each module's source SHA-256, beside this file.
BUILD_RECORD = "_native_build.json"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

#: Whether this process runs the compiled modules, and if not, why.
IN_USE = False
REASON = "not chosen yet"


def source_path(module: str) -> str:
    """The ``.py`` file of one of :data:`MODULES`."""
    parts = module.split(".")[1:]
    return os.path.join(_PACKAGE_DIR, *parts) + ".py"


def source_digest(module: str) -> str:
    with open(source_path(module), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def compiled_path(module: str) -> str | None:
    """The extension module built for ``module``, if there is one."""
    base = source_path(module)[: -len(".py")]
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.exists(base + suffix):
            return base + suffix
    return None


def _why_not() -> str | None:
    """None when the compiled modules can be used; else the reason they are not."""
    if os.environ.get("SMTPFLOW_PURE_PYTHON") == "1":
        return "SMTPFLOW_PURE_PYTHON=1"
    if any(compiled_path(module) is None for module in MODULES):
        return "not compiled at install time (no mypyc or no C compiler then)"
    try:
        with open(os.path.join(_PACKAGE_DIR, BUILD_RECORD), encoding="utf-8") as f:
            built = json.load(f)
        changed = [module for module in MODULES if built.get(module) != source_digest(module)]
    except (OSError, ValueError, AttributeError) as exc:
        return f"the record of what was compiled is unreadable ({exc})"
    if changed:
        return f"{', '.join(changed)} changed since compiled"
    return None


class _SourceFinder:
    """Finds :data:`MODULES` as their ``.py`` files (ahead of the extension modules beside them)."""

    @staticmethod
    def find_spec(name: str, path=None, target=None):
        if name not in MODULES:
            return None
        return importlib.util.spec_from_file_location(name, source_path(name))


def choose() -> None:
    """Decide, once, whether this process imports the compiled modules or their sources."""
    global IN_USE, REASON
    if REASON != "not chosen yet":
        return
    why = _why_not()
    if why is None:
        IN_USE, REASON = True, ""
        return
    IN_USE, REASON = False, why
    sys.meta_path.insert(0, _SourceFinder())
    if "changed since" in why:
        warnings.warn(f"smtpflow runs its Python sources, not the compiled modules: {why}. "
                      "Install it again (pip install -e .) to compile them.", RuntimeWarning, stacklevel=2)
