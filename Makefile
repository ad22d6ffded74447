# The only entry point: CI calls the same targets. A fresh clone needs just `make demo` and `make test`.
.DEFAULT_GOAL := all
SHELL := /bin/bash

PYTHON ?= python3
UV_VERSION := 0.13.9
sources = conftest.py services/src services/tests operator/src operator/tests
VENV := .venv
BIN := $(VENV)/bin
# uv: the one on PATH if there is one, else a private copy installed from PyPI into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# The stamp is newer than every file that decides what is installed.
$(VENV)/.installed: pyproject.toml services/pyproject.toml operator/pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --all-packages --all-groups --python $(PYTHON)
	@touch $@

.PHONY: install
install: $(VENV)/.installed ## create .venv and install everything

.PHONY: fmt
fmt: install ## format and autofix
	$(BIN)/ruff check --fix $(sources)
	$(BIN)/ruff format $(sources)

.PHONY: lint
lint: install ## ruff, ruff format --check, mypy --strict, import-linter, hadolint
	$(BIN)/ruff check $(sources)
	$(BIN)/ruff format --check $(sources)
	$(BIN)/mypy
	cd services && ../$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile

.PHONY: test
test: lint ## lint, then every test that needs no cluster (embedded Valkey and PostgreSQL)
	$(BIN)/pytest -p no:cacheprovider --cov --cov-report=term --cov-fail-under=90

.PHONY: test-e2e
test-e2e: install ## the e2e layer against a kind cluster (needs `make up`)
	$(BIN)/pytest --with-e2e -m e2e

.PHONY: demo
demo: install ## run a flash sale end to end on this machine and write the report
	$(BIN)/flashsale demo $(DEMO_ARGS)

.PHONY: bench
bench: install ## the benchmark suite (throughput steps vs a bare baseline, SSE, drain rate) -> reports/
	$(BIN)/flashsale bench $(BENCH_ARGS)

.PHONY: chaos
chaos: install ## fault injection (kills, store restarts, gateway faults, hostile input) -> reports/
	$(BIN)/flashsale chaos $(CHAOS_ARGS)

# Pinned add-ons the chart expects on kind (docs/kubernetes.md explains each).
INGRESS_NGINX_MANIFEST := https://raw.githubusercontent.com/kubernetes/ingress-nginx/controller-v1.15.1/deploy/static/provider/kind/deploy.yaml
KEDA_MANIFEST := https://github.com/kedacore/keda/releases/download/v2.19.0/keda-2.19.0.yaml

.PHONY: up
up: ## kind cluster with ingress-nginx and KEDA, the CRDs, then skaffold run
	kind get clusters | grep -qx flashsale || kind create cluster --name flashsale --config kind-config.yaml
	kubectl apply -f $(INGRESS_NGINX_MANIFEST)
	kubectl apply --server-side -f $(KEDA_MANIFEST)
	kubectl -n ingress-nginx wait --for=condition=ready pod --selector=app.kubernetes.io/component=controller --timeout=180s
	kubectl -n keda wait --for=condition=available deployment --all --timeout=300s
	# Helm installs crds/ only on first install: apply them so a changed schema reaches the cluster.
	kubectl apply -f charts/flashsale/crds/
	skaffold run

.PHONY: down
down:
	-skaffold delete
	kind delete cluster --name flashsale

.PHONY: all
all: lint test

.PHONY: clean
clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache .coverage* htmlcov
