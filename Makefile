# The two commands of the README: `make demo` and `make test`.
# Both install what they need themselves (a fresh Debian bookworm machine is enough).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-gitops test lint unit integration venv harness-up harness-down clean

venv: $(STAMP)

# Re-install when the project metadata changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	    echo "python3 -m venv failed: installing Debian's python3-venv"; \
	    apt-get update -qq && apt-get install -y -qq python3-venv git && $(PYTHON) -m venv $(VENV); }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

## demo: a real MLServer on the harness cluster serves a model trained on the spot, then its replacement.
demo: venv
	tools/demo

## demo-gitops: the same control plane + agent writing manifests to git (no cluster needed).
demo-gitops: venv
	tools/demo-gitops

## test: lint, type-check, start the harness, run every test, stop the harness.
test: venv lint
	tools/run-tests

# The bench scripts have no .py suffix, so ruff would skip them in `bench`.
BENCH_SCRIPTS := $(filter-out %.py %.md %__pycache__,$(wildcard bench/*))

lint: venv
	$(BIN)/ruff check agent tests tools bench $(BENCH_SCRIPTS)
	$(BIN)/mypy
	tools/gen-chart --check

## unit: the fast tests only (no servers).
unit: venv
	$(BIN)/pytest tests/unit -q

## integration: the tests against real servers (run `make harness-up` first).
integration: venv
	$(BIN)/pytest tests/integration -q

harness-up:
	tools/harness up

harness-down:
	tools/harness down

clean:
	tools/harness down || true
	rm -rf $(VENV) .demo build dist *.egg-info
