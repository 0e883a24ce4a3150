# The names users and CI type. Everything lands in a local virtualenv ($(VENV)), built from scratch
# on a fresh machine: only python3 (>= 3.9) and a Rust toolchain are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
# cargo test links libpython directly (no extension-module feature), so it needs to find it at run time.
PYLIBDIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

.PHONY: demo test test-rust test-python bench lint build wheel clean torture torture-quick torture-ci fuzz

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

$(VENV)/.bench-installed: $(VENV)/.installed benches/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r benches/requirements.txt
	touch $@

## build: compile the Rust core (release, as users get it) and install the package into the venv
build: $(VENV)/.installed
	$(PY) -m maturin develop --release -q

## demo: set up, build, then persist a conversation across two separate processes
demo: build
	$(PY) examples/demo.py

## test: the Rust unit tests, then the Python suite
test: build test-rust test-python

test-rust: $(VENV)/.installed
	PYO3_PYTHON=$(PY) LD_LIBRARY_PATH=$(PYLIBDIR) cargo test --quiet

test-python: build
	$(PY) -m pytest -q

## bench: the benchmark harness (benches/, corpora in benches/corpus.py); prints the table recorded in BENCHMARKS.md
## and draws the README's charts into docs/img/. The agent workload times each store's turns for about 15 s per
## conversation length; BENCH_AGENT_BUDGET=0 make bench runs all 1,000 turns everywhere (hours: the slow stores
## rewrite the whole conversation each turn).
bench: build $(VENV)/.bench-installed
	mkdir -p bench-results
	$(PY) -m pytest benches -q --benchmark-only --benchmark-columns=median,iqr,rounds \
		--benchmark-sort=name --benchmark-json=bench-results/latest.json $(BENCH_ARGS)
	$(PY) benches/report.py bench-results/latest.json
	$(PY) benches/charts.py bench-results/latest.json docs/img

$(VENV)/.torture-installed: $(VENV)/.installed torture/setup.sh
	bash torture/setup.sh
	touch $@

$(VENV)/.nightly-installed: $(VENV)/.torture-installed
	bash torture/setup.sh --nightly
	touch $@

# The suites that need only stable Rust and Debian packages; sanitizers and fuzz also need a nightly toolchain.
CI_SUITES = corruption,kill,concurrency,crash_states,io_errors

## torture: every torture suite (kill, crash states, concurrency, corruption, I/O errors, sanitizers, fuzzing);
## minutes; the figures go to RELIABILITY.md. torture-quick is the bounded variant of all of them; torture-ci the
## bounded variant of those that need no nightly toolchain (what .ci/run runs: a CI machine fetches no other
## toolchain). A failure prints its seed: replay with TORTURE_ARGS="--seed N --only SUITE".
torture: build $(VENV)/.nightly-installed
	$(PY) -m torture.run $(TORTURE_ARGS)

torture-quick: build $(VENV)/.nightly-installed
	$(PY) -m torture.run --quick $(TORTURE_ARGS)

torture-ci: build $(VENV)/.torture-installed
	$(PY) -m torture.run --quick --only $(CI_SUITES) $(TORTURE_ARGS)

## fuzz: the coverage-guided fuzz targets (fuzz/), each for a bounded time; crashes found are kept as regression tests
fuzz: build $(VENV)/.nightly-installed
	$(PY) -m torture.run --only fuzz $(TORTURE_ARGS)

## lint: formatting, clippy, ruff, mypy; stubtest imports the built module, so build first (else it checks a stale one)
lint: build
	cargo fmt --check
	PYO3_PYTHON=$(PY) cargo clippy --all-targets -- -D warnings
	$(PY) -m ruff check python tests benches examples torture
	$(PY) -m ruff format --check python tests benches examples torture
	$(PY) -m mypy
	$(PY) -m mypy.stubtest conversation_codec._core --allowlist .stubtest-allowlist

wheel: $(VENV)/.installed
	$(PY) -m maturin build --release --out dist

clean:
	rm -rf target dist $(VENV) .pytest_cache .hypothesis bench-results
