# kubernaut-py. `make help` lists the targets.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup controlplane tekton helm demo test lint typecheck importlint unit component integration e2e crds bench faults clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP) controlplane tekton helm ## Create .venv with the package and tools; build or find the control plane, Tekton and helm (idempotent)

controlplane: $(STAMP) ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok once into ~/.cache/kubernaut (or use KUBEBUILDER_ASSETS)
	$(BIN)/python -m kubernaut.devcluster.binaries

tekton: $(STAMP) ## Build Tekton Pipelines' controller and resolvers and crane once from their pinned modules (tools/tekton, tools/crane)
	$(BIN)/python -m kubernaut.devcluster.binaries --tekton

helm: $(STAMP) ## Build helm once from its pinned module (tools/helm) into ~/.cache/kubernaut/helm
	$(BIN)/python -m kubernaut.devcluster.helm

demo: setup ## Run the whole system on the embedded local default and play the demo story (Ctrl-C stops it)
	$(BIN)/kubernaut dev up --demo --config config/dev/demo.yaml

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP) ## mypy --strict on src/
	$(BIN)/mypy src

importlint: $(STAMP) ## Layer contracts (import-linter)
	$(BIN)/lint-imports

crds: $(STAMP) ## Regenerate config/crd/bases from the models
	$(BIN)/python -m kubernaut.api.crdgen config/crd/bases

unit: $(STAMP) ## Pure logic, no I/O (seconds)
	$(BIN)/pytest tests/unit -q

component: $(STAMP) ## Components against their real dependencies: SQLite, PostgreSQL, HTTP servers
	$(BIN)/pytest tests/component -q

integration: setup ## Controllers against the real local control plane
	$(BIN)/pytest tests/integration -q

e2e: setup ## The CLI and `kubernaut run` / `dev up` as processes, as a user runs them
	$(BIN)/pytest tests/e2e -q

test: setup lint typecheck importlint ## Everything: lint, types, layers, then every test against real parts
	$(BIN)/pytest -q

faults: setup ## Long fault-injection runs: 200 remediations under kill -9, restarts, conflicts, bad input
	$(BIN)/pytest tests/faults --long -q -rA -s

bench: setup ## Benchmarks (prints a table, writes bench/results.json)
	$(BIN)/python -m bench

clean: ## Remove the virtualenv and local state
	rm -rf $(VENV) .kubernaut .pytest_cache .mypy_cache .ruff_cache
