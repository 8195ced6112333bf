"""The compiled hot path (mypyc, analyzer/native.py) changes speed, never results; it is used
where it was built, and an edited source is run as Python rather than its stale compiled twin."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

import analyzer
from analyzer import native
from conftest import ROOT, all_captures

PURE = dict(os.environ, SMTPFLOW_PURE_PYTHON="1")
COMPILED = {key: value for key, value in os.environ.items() if key != "SMTPFLOW_PURE_PYTHON"}
PACKAGE = os.path.dirname(analyzer.__file__)

needs_build = pytest.mark.skipif(not native.IN_USE, reason=f"the compiled modules are not in use: {native.REASON}")


def _imported_files(env: dict, package_parent: str | None = None) -> dict:
    """In a fresh interpreter: whether it uses the compiled modules, why not, and the file each
    module was imported from."""
    code = ("import json, sys, warnings; warnings.simplefilter('always')\n"
            "import analyzer.native as n, importlib\n"
            "files = {m: importlib.import_module(m).__spec__.origin for m in n.MODULES}\n"
            "print(json.dumps({'in_use': n.IN_USE, 'reason': n.REASON, 'files': files}))\n")
    if package_parent is not None:
        env = dict(env, PYTHONPATH=package_parent)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=package_parent or ROOT,
                         timeout=120, check=True)
    result = json.loads(out.stdout)
    result["stderr"] = out.stderr
    return result


def test_where_a_compiler_and_mypyc_were_there_the_compiled_modules_are_used():
    """CI installs with both: a type error that made mypyc give up (the install goes on, in
    Python) must not pass unnoticed."""
    if os.environ.get("SMTPFLOW_PURE_PYTHON") == "1":
        pytest.skip("SMTPFLOW_PURE_PYTHON=1")
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        pytest.skip(f"no C compiler ({compiler}): smtpflow was installed without its compiled modules")
    assert native.IN_USE, native.REASON
    for module in native.MODULES:
        assert not importlib.import_module(module).__spec__.origin.endswith(".py"), module


@needs_build
def test_pure_python_runs_every_source():
    used = _imported_files(PURE)
    assert used["in_use"] is False and used["reason"] == "SMTPFLOW_PURE_PYTHON=1"
    assert all(path == native.source_path(module) for module, path in used["files"].items())


@needs_build
def test_an_edited_source_is_run_as_python_all_of_them_with_a_warning(tmp_path):
    copy = tmp_path / "analyzer"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    as_built = _imported_files(COMPILED, str(tmp_path))
    assert as_built["in_use"] is True, as_built
    assert all(not path.endswith(".py") and path.startswith(str(copy)) for path in as_built["files"].values())

    edited = copy / "flows" / "reassembly.py"
    edited.write_text(edited.read_text() + "\n# edited\n")
    used = _imported_files(COMPILED, str(tmp_path))
    assert used["in_use"] is False and used["reason"] == "analyzer.flows.reassembly changed since compiled"
    assert all(path.endswith(".py") and path.startswith(str(copy)) for path in used["files"].values())
    assert "pip install -e ." in used["stderr"]

    (copy / native.BUILD_RECORD).unlink()
    used = _imported_files(COMPILED, str(tmp_path))
    assert used["in_use"] is False and "unreadable" in used["reason"]


_ANALYSE_ALL = """
import json, sys
import analyzer
out = {}
for path in sys.argv[1:]:
    for ports in ("default", "all"):
        a = analyzer.analyze(path, ports=ports)
        stats = {k: v for k, v in a.stats.items() if k != "elapsed_s"}
        out[f"{path} {ports}"] = [list(a.records), dict(a._result.events), stats, a.exit_code]
print(json.dumps(out, sort_keys=True, default=str))
"""


@needs_build
def test_compiled_and_python_give_the_same_results_on_every_capture():
    """Every bundled capture (and Zeek's corpus, where ../shared is there), with both port
    settings: records, events, statistics and exit codes, run compiled and as Python."""
    paths = all_captures()
    runs = [subprocess.run([sys.executable, "-c", _ANALYSE_ALL, *paths], capture_output=True, text=True, env=env,
                           cwd=ROOT, timeout=900, check=True).stdout for env in (COMPILED, PURE)]
    compiled, pure = (json.loads(run) for run in runs)
    assert compiled.keys() == pure.keys() and len(compiled) == 2 * len(paths)
    different = [key for key in compiled if compiled[key] != pure[key]]
    assert not different, different[:5]
