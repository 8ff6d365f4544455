# llamadock: `make up` starts the stack, `make test` runs every test.
# `make help` lists the rest.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COMPOSE := docker compose
GATEWAY_URL ?= http://127.0.0.1:$(or $(LLAMADOCK_PORT),8080)

.PHONY: help venv gateway up down logs ps gpu test test-unit bench images

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed ## Create .venv with the project and its test tools

gateway: venv ## Run the gateway on this host (config/upstreams.yaml), without Docker
	$(PY) -m gateway

images: ## Build the stack's images (base images stood in locally when no registry is reachable)
	bash scripts/setup-docker.sh
	bash scripts/make-base-images.sh
	$(COMPOSE) $$(bash scripts/compose-files.sh) build

up: ## Start the stack (GPU / WSL2 detected) and wait until it is healthy
	bash scripts/up.sh

down: ## Stop the stack; nothing of ours is left running
	$(COMPOSE) $$(bash scripts/compose-files.sh) down --remove-orphans

logs: ## Follow the stack's logs
	$(COMPOSE) $$(bash scripts/compose-files.sh) logs -f

ps: ## Show the stack's containers
	$(COMPOSE) $$(bash scripts/compose-files.sh) ps

gpu: ## Show GPU status from the running gateway
	@curl -fsS $(GATEWAY_URL)/gpu | $(PYTHON) -m json.tool

test-unit: venv ## Fast tests: pure logic, no servers
	$(PY) -m pytest tests/unit -q

test: venv ## Every test (builds llama-server once and caches it; uses Docker when available)
	$(PY) -m pytest -q -ra

bench: venv ## Benchmarks: gateway overhead vs direct llama-server, printed as a table
	$(PY) bench/gateway_overhead.py
