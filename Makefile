# Run the stack without Docker, run the tests, check config and containers, run the benchmarks.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9

.PHONY: venv up run test test-unit test-integration soak check helm-check bench lint clean

venv: $(VENV)/.synced

$(VENV)/.synced: pyproject.toml uv.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip --version >/dev/null 2>&1 || $(PY) -m ensurepip --default-pip >/dev/null
	$(PY) -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(PY) -m uv sync --frozen --inexact --python $(PY)
	touch $@

up:
	docker compose up --build

run: venv
	$(PY) -m devtools.run_local

test: venv
	$(PY) -m pytest

test-unit: venv
	$(PY) -m pytest tests/unit

test-integration: venv
	$(PY) -m pytest tests/integration

# The Helm chart linted, rendered for every scenario and validated offline (helm fetched into .tools/).
helm-check: venv
	$(PY) -m devtools.helm lint
	$(PY) -m pytest -q tests/k8s

# 15 minutes of load and faults on two replicas of every service; make test runs a 2-minute one.
soak: venv
	$(PY) -m devtools.soak --seconds 900

check: venv
	$(PY) -m pytest -q tests/unit/test_containers.py tests/unit/test_settings.py
	$(VENV)/bin/hadolint --failure-threshold error Dockerfile
	$(VENV)/bin/ruff check .

bench: venv
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& { echo "bench: installing wrk"; apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }; } \
		|| { echo "bench: wrk is missing: install it (apt-get install wrk, or brew install wrk) and run make bench again" >&2; exit 1; }
	$(PY) -m bench.ratelimit
	$(PY) -m bench.quota_safety
	$(PY) -m bench.exchange
	$(PY) -m bench.universe
	$(PY) -m bench.strategy
	$(PY) -m bench.strategy_calls
	$(PY) -m bench.executor
	$(PY) -m bench.scaling

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .data .pytest_cache .ruff_cache .hypothesis
