# spiffe-bridge developer entry points. `make test` is what CI runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint typecheck unit proto dev clean bench tools

$(BIN)/spiffe-bridge: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(BIN)/spiffe-bridge

## test: lint, type-check and run every test (unit + integration)
test: install lint typecheck
	$(BIN)/pytest -q

## tools: every external tool the tests use (SPIRE, Prometheus, grpcurl, helm, SDK consumers)
tools:
	bash tests/tools/install-all.sh

unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check bridge tests

typecheck: install
	$(BIN)/mypy

## dev: run the bridge on the embedded development stack
dev: install
	$(BIN)/spiffe-bridge dev

## bench: every benchmark (tests/bench), one summary table; raw output in tests/bench/results/
bench: install
	$(BIN)/python -m tests.bench.run_all --command "make bench"

## proto: regenerate the Python code for proto/ (grpcio-tools)
proto: install
	$(BIN)/python -m grpc_tools.protoc -Ibridge/_proto=proto --python_out=. --pyi_out=. proto/spiffe/workload.proto
	$(BIN)/python -m grpc_tools.protoc -Ibridge/_proto=proto --python_out=. --pyi_out=. --grpc_python_out=. proto/spiffebridge/v1/credentials.proto
	$(BIN)/python -m grpc_tools.protoc -Ibridge/_proto=proto --python_out=. --pyi_out=. --grpc_python_out=. proto/spiffe/broker/api.proto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
