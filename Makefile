# The README's commands. Each creates .venv and installs the locked set when missing.
PY      ?= $(shell command -v python3.11 || command -v python3)
VENV    := .venv
BIN     := $(VENV)/bin
UV_VER  := 0.13.9
STAMP   := $(VENV)/.installed

export MLFLOW_DISABLE_TELEMETRY := true
export MLFLOW_ALLOW_PICKLE_DESERIALIZATION := false
export GX_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1

.PHONY: install browser prometheus demo test lint fmt bench reliability lock up clean

# Bytecode is compiled at install: uv does not by default, and without .pyc files every process
# (each Airflow task among them) compiles what it imports again, about 3 s more for mlflow alone.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VER)"
	$(BIN)/uv pip sync --python $(BIN)/python --quiet --compile-bytecode requirements.lock
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ctrain demo

# The UI tests drive Debian's chromium with its chromedriver; installed here when missing (as
# root, from Debian's packages), else named.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && export DEBIAN_FRONTEND=noninteractive && \
	    { apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }; }; } || \
	  { echo "the UI tests need Debian's chromium and chromium-driver: apt-get install chromium chromium-driver"; exit 1; }

# The alerting tests check deploy/prometheus with promtool and scrape ctrain with a real
# Prometheus: Debian's prometheus package, installed here when missing (as root), else named.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && export DEBIAN_FRONTEND=noninteractive && \
	    { apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; }; } || \
	  { echo "the alerting tests need Debian's prometheus (prometheus, promtool): apt-get install prometheus"; exit 1; }

test: $(STAMP) browser prometheus
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

# make bench BENCH_ARGS=--quick: every benchmark small and once, to check they run (about 6 min).
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

up: $(STAMP)
	$(BIN)/ctrain up

lock: $(STAMP)
	$(BIN)/uv pip compile requirements.txt --python-version 3.11 --no-header --quiet -o requirements.lock
	sed -i '1i # Full resolved set of requirements.txt for Python 3.11 (like Airflow constraints). Regenerate: make lock' requirements.lock

clean:
	rm -rf $(VENV) .ctrain

# make reliability: bad inputs, 200 racing promoters on both locks, 30+ kills; writes
# docs/reliability.md (about 15 minutes; BENCH-like, not part of make test).
reliability: $(STAMP)
	$(BIN)/python tests/reliability/harness.py $(RELIABILITY_ARGS)
