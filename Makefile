# The names users and CI type. Everything lands in a local virtualenv ($(VENV)), built from scratch
# on a fresh machine: only python3 (>= 3.9) and a Rust toolchain are assumed.
PYTHON ?= python3
VENV ?= .venv
PY := $(abspath $(VENV))/bin/python
export VIRTUAL_ENV := $(abspath $(VENV))
# cargo test links libpython directly (no extension-module feature), so it needs to find it at run time.
PYLIBDIR = $(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

.PHONY: demo test test-rust test-python bench lint build wheel wheels test-wheels check-workflows clean torture \
	torture-quick torture-ci fuzz

$(VENV)/.installed: requirements-dev.txt requirements-integrations.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-integrations.txt
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

## wheel: the release wheel for this machine's Python, into dist/
wheel: $(VENV)/.installed
	$(PY) -m maturin build --release --out dist

$(VENV)/.wheels-installed: $(VENV)/.installed packaging/requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check -r packaging/requirements.txt
	touch $@

## wheels: the release matrix (CPython 3.9-3.15 x manylinux2014 x86_64/aarch64, musllinux_1_2 x86_64) and the sdist,
## into dist/, each wheel checked by auditwheel; test-wheels: the whole suite against each installed wheel (3.14,
## 3.15 and aarch64 in Debian roots under /var/tmp, aarch64 under qemu); results in docs/WHEELS.md. Linux, as root.
wheels: $(VENV)/.wheels-installed
	PY=$(PY) bash packaging/build-wheels.sh

test-wheels:
	bash packaging/test-wheels.sh

## check-workflows: the GitHub workflows against their JSON schema, and zizmor's offline audit
check-workflows: $(VENV)/.wheels-installed
	$(abspath $(VENV))/bin/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml
	$(abspath $(VENV))/bin/zizmor --offline .github/workflows

clean:
	rm -rf target dist $(VENV) .pytest_cache .hypothesis bench-results
