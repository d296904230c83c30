# Coulisse: `make demo` sets everything up and runs the main job; `make test` sets up what it
# needs and runs the checks. Nothing else needs installing by hand.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard taps/*/pyproject.toml targets/*/pyproject.toml)
INSTALLED := $(VENV)/.coulisse-installed

.PHONY: help venv demo test lint typecheck unit stack-up stack-down clean

help:
	@echo "make demo   set up everything (virtualenvs, local CRM and ERP, sample data), run the main job"
	@echo "make test   set up what the tests need, then ruff, mypy and pytest (live CRM and ERP)"
	@echo "make stack-down   stop the demo's CRM, ERP and Prefect server (data kept)"

$(INSTALLED): pyproject.toml $(PLUGINS)
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found: install Python 3.11+ or run make PYTHON=python3.12"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing Coulisse and its plugins into $(VENV) (log: $(VENV)/install.log)..."
	@{ $(BIN)/pip install --disable-pip-version-check -q --upgrade pip && \
	   $(BIN)/pip install --disable-pip-version-check -q -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p))); \
	 } > $(VENV)/install.log 2>&1 || { tail -40 $(VENV)/install.log; exit 1; }
	touch $@

venv: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/coulisse stack up
	$(BIN)/coulisse stack seed
	@echo
	@echo "The main job: the sync flow (clients both ways, the catalogue to the CRM, won deals to"
	@echo "ERP sales, posted invoices to the CRM), run by a local Prefect server that serves it"
	@echo "every COULISSE_SYNC_INTERVAL s (15); one run now."
	$(BIN)/coulisse flows up
	$(BIN)/coulisse flows run
	$(BIN)/coulisse stack status
	@echo
	@echo "Where to look:"
	@$(BIN)/python -c "from coulisse.stack.layout import StackLayout as L; from coulisse.stack.settings import StackSettings as S; l=L.from_env(); s=S.load(l); print(f'  CRM (BottleCRM):  {s.crm_url}/api/  (OpenAPI: {s.crm_url}/schema/)'); print(f'  ERP (Tryton):     {s.erp_url}/{s.erp_database}/rpc/  (JSON-RPC)'); print('  Credentials:      .env (git-ignored)'); print(f'  Sync log:         {l.home}/logs/sync.log'); from coulisse.orchestration.settings import FlowSettings as F; from coulisse.project import project_env as e; print(f'  Prefect UI:       {F.load(e()).ui_url}  (runs, their artifacts and logs)'); print('  Again:            .venv/bin/coulisse sync --dry-run   (or without --dry-run)')"

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

stack-down: $(INSTALLED)
	$(BIN)/coulisse stack down

clean: stack-down
	rm -rf .stack/demo .stack/test
