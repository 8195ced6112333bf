"""Build the optional compiled hot path.

* ``analyzer/decode/_fastpath.c``: the C scan that decides from header bytes which packets
  matter (see ``analyzer/decode/fastpath.py``).
* The modules listed in ``analyzer/native.py``, compiled by mypyc from their annotated Python
  sources; what was compiled is recorded (each source's SHA-256) in
  ``analyzer/_native_build.json``, so that a source edited since is run as Python instead.

Everything else is declared in pyproject.toml. Both are optional: where no C compiler (or no
mypyc) is available the install still succeeds and smtpflow runs the pure-Python path, with the
same results, only slower. ``SMTPFLOW_PURE_PYTHON=1`` at install time skips mypyc.
"""

import importlib.util
import json
import os
import sys

from setuptools import Extension, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _native_module():
    """analyzer/native.py, read on its own (importing the package would need its dependencies)."""
    spec = importlib.util.spec_from_file_location("_smtpflow_native", os.path.join(HERE, "analyzer", "native.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compiled_modules():
    """mypyc's extension modules for the hot path, or none."""
    native = _native_module()
    record = os.path.join(HERE, "analyzer", native.BUILD_RECORD)
    if os.path.exists(record):
        os.remove(record)  # whatever happens below, no record of an earlier build stays
    if os.environ.get("SMTPFLOW_PURE_PYTHON") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("smtpflow: mypyc is not installed: the hot path stays Python (slower, same results)", file=sys.stderr)
        return []
    paths = [os.path.relpath(native.source_path(module), HERE) for module in native.MODULES]
    try:
        # Only the compiled modules are type-checked; what they import is read, not judged.
        extensions = mypycify(["--follow-imports=silent", "--ignore-missing-imports", *paths],
                              opt_level="3", group_name="analyzer._native")
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        print(f"smtpflow: mypyc could not compile the hot path ({exc!r}): it stays Python", file=sys.stderr)
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: the sources are run instead
    digests = {module: native.source_digest(module) for module in native.MODULES}
    with open(record, "w", encoding="utf-8") as f:
        json.dump(digests, f, indent=1)
    return extensions


setup(
    ext_modules=[
        Extension(
            "analyzer.decode._fastpath",
            ["analyzer/decode/_fastpath.c"],
            optional=True,
            extra_compile_args=["-O2"],
        ),
        *compiled_modules(),
    ]
)
