# smtpflow — the two commands in the README are `make demo` and `make test`.
# Each does all of its own set-up on a bare Debian 12 machine (run as root):
# system packages (apt), a virtualenv in .venv, and the package itself.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
OUT    ?= out

.PHONY: demo test bench system-deps venv clean

system-deps:
	@scripts/install-system-deps.sh

# The sources mypyc compiles (analyzer/native.py lists them): edited, they are compiled again.
NATIVE_SOURCES := $(shell $(PYTHON) -c "import runpy; n = runpy.run_path('analyzer/native.py'); print(' '.join(n['source_path'](m) for m in n['MODULES']))")

$(STAMP): pyproject.toml setup.py analyzer/decode/_fastpath.c analyzer/native.py $(NATIVE_SOURCES) | system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

venv: $(STAMP)

demo: system-deps $(STAMP)
	$(VENV)/bin/smtpflow analyze captures/
	$(VENV)/bin/smtpflow report captures/ -o $(OUT)/demo-report

test: system-deps $(STAMP)
	$(PY) -m pytest

bench: system-deps $(STAMP)
	@$(PY) -m compileall -q analyzer >/dev/null  # timed runs must not compile sources (PYTHONDONTWRITEBYTECODE)
	$(PY) benchmarks/run.py

# Robustness: seeded mutants of captures/ (and ../shared/corpus/zeek) until a million packets
# went through; prints crashes, hangs and peak RSS, and fails if anything was found.
FUZZ_SEED ?= 1
.PHONY: fuzz
fuzz: system-deps $(STAMP)
	$(PY) -m tests.fuzz.run --packets 1000000 --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
