# llamadock: `make up` starts the stack, `make test` runs every test.
# `make help` lists the rest.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COMPOSE := bash scripts/compose.sh
# The CLI runs in its container, on the stack's network, as wide as the caller's terminal.
CLI := bash scripts/cli.sh
GATEWAY_URL ?= http://127.0.0.1:$(or $(LLAMADOCK_PORT),8080)

.PHONY: help venv gateway up down logs ps containers gpu gpu-check test test-unit bench images llama-image models add edit rm load unload chat reconcile llama-upgrade llama-rollback swarm-init swarm-doctor swarm-join

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

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
	$(COMPOSE) build

llama-image: ## Build llama-server from source into a local image and use it for new models: [GPU=1] [CUDA_ARCHITECTURES="86;89"]
	$(if $(GPU),GPU=$(GPU)) bash scripts/llama-image.sh

up: ## Start the stack (GPU / WSL2 detected) and wait until it is healthy: [LLAMADOCK_BACKEND=swarm] models as Swarm services (after make swarm-init)
	bash scripts/up.sh

down: ## Stop the stack and every model container (in swarm mode, every model service); nothing of ours is left running
	bash scripts/down.sh

logs: ## Follow the stack's logs, model servers included
	$(COMPOSE) logs -f

ps: ## Models: state, memory (estimate and used), CPU/GPU, context, slots, queue, time to unload: [WATCH=1] refreshes
	$(CLI) ps $(if $(WATCH),--watch)

containers: ## Show the stack's containers and the model containers
	@$(COMPOSE) ps
	@docker ps -a --filter "label=io.llamadock.project=$${COMPOSE_PROJECT_NAME:-llamadock}" \
		--format 'table {{.Names}}\t{{.Status}}\t{{.Image}}'

models: ## Models: declared, running, and GGUF files available to add
	$(CLI) models

# Every field of a model's spec (contract/ModelSpec) as a make variable, upper case: TTL=600
# PINNED=1 SWAP_GROUP=big ... become --ttl 600 --pinned 1 --swap-group big for the CLI
# (tests/unit/test_spec_options.py keeps this list whole). CTX is short for CTX_SIZE. An empty value
# (`make edit NAME=x IMAGE=`) puts the field back to its default.
SPEC_VARS := ALIASES CTX_SIZE GPU_LAYERS PARALLEL MMPROJ ARGS GPUS IMAGE NODE TTL PINNED PRELOAD SWAP_GROUP \
	MIN_RESIDENCY MAX_CONCURRENT MAX_QUEUE MEMORY
# Only what is given on make's command line: a TTL or IMAGE in your environment is not a field.
given = $(filter command line,$(origin $(1)))
spec_options = $(foreach v,$(SPEC_VARS),$(if $(call given,$(v)),--$(shell echo $(v) | tr A-Z_ a-z-)="$($(v))")) \
	$(if $(call given,CTX),--ctx-size="$(CTX)")

add: ## Add a model, making room as a request would: make add NAME=x MODEL=file.gguf|owner/repo[:quant] [CTX=8192 TTL=600 PINNED=1 SWAP_GROUP=g MMPROJ=f.gguf GPUS=0,1 ... any spec field] [NO_START=1]
	@test -n "$(NAME)" -a -n "$(MODEL)" || { echo "usage: make add NAME=name MODEL=file.gguf|owner/repo[:quant] [FIELD=value ...]"; exit 2; }
	$(CLI) models add "$(NAME)" "$(MODEL)" $(spec_options) $(if $(NO_START),--no-start) $(if $(REPLACE),--replace)

edit: ## Change fields of a model: make edit NAME=x TTL=600 PINNED=1 ... [UNSET=image,ttl]
	@test -n "$(NAME)" || { echo "usage: make edit NAME=name FIELD=value ... [UNSET=field,...]"; exit 2; }
	$(CLI) models edit "$(NAME)" $(spec_options) $(if $(UNSET),--unset "$(UNSET)")

llama-upgrade: ## Move the models to another llama-server image, one at a time, each checked before its old server goes: make llama-upgrade IMAGE=ghcr.io/ggml-org/llama.cpp:server-bNNNN
	@test -n "$(IMAGE)" || { echo "usage: make llama-upgrade IMAGE=image"; exit 2; }
	$(CLI) llama upgrade "$(IMAGE)"

llama-rollback: ## Move the models back to the llama-server image before the last upgrade
	$(CLI) llama rollback

reconcile: ## Apply hand edits of config/models.yaml: start, recreate, remove containers to match
	$(CLI) models reconcile

rm: ## Remove a model: make rm NAME=x
	@test -n "$(NAME)" || { echo "usage: make rm NAME=name"; exit 2; }
	$(CLI) models rm "$(NAME)"

load: ## Start a model and wait until it answers: make load NAME=x
	@test -n "$(NAME)" || { echo "usage: make load NAME=name"; exit 2; }
	$(CLI) load "$(NAME)"

unload: ## Stop an idle model now: make unload NAME=x; without NAME, every idle model
	$(CLI) unload $(if $(NAME),"$(NAME)")

gpu: ## Show GPU status from the running gateway
	$(CLI) gpu

gpu-check: venv ## GPU self-check without Docker: memory estimate vs NVML, load time, streaming via the gateway
	bash scripts/gpu-check.sh

swarm-init: ## Preview: make this box a Swarm manager for LLAMADOCK_BACKEND=swarm (swarm, overlay network, node label): [LLAMADOCK_NODE_MEMORY_MB=n]
	bash scripts/swarm-init.sh

swarm-doctor: ## Preview: check this box's NVIDIA runtime set-up for Swarm (default runtime, toolkit config, driver); says what to change
	python3 scripts/swarm_doctor.py

swarm-join: ## Preview: join this box to the swarm (the doctor first, then docker swarm join, then its memory label): TOKEN=... MANAGER=host[:port] [LLAMADOCK_NODE_MEMORY_MB=n]
	TOKEN="$(TOKEN)" MANAGER="$(MANAGER)" bash scripts/swarm-join.sh

chat: ## Chat in the terminal (the cli container): make chat [MODEL=name]
	$(CLI) chat $(if $(MODEL),--model "$(MODEL)")

test-unit: venv ## Fast tests: pure logic, no servers
	$(PY) -m pytest tests/unit -q

test: venv ## Every test (builds llama-server once and caches it; uses Docker when available)
	$(PY) -m pytest -q -ra

bench: venv ## Benchmarks, printed as tables: streaming as deployed (vs direct, the floor, other proxies); gateway overhead; stack start-up; scheduling; idle CPU; log volume; TTFT after a swap with the KV cache restored; the swarm overlay's cost per token (3 nodes)
	bash bench/setup-litellm.sh
	$(PY) bench/deployed.py --json logs/bench-deployed.json
	$(PY) bench/gateway_overhead.py
	$(PY) bench/stack_startup.py
	$(PY) bench/scheduling.py
	$(PY) bench/idle.py
	$(PY) bench/log_volume.py
	$(PY) bench/kv_swap.py
	$(PY) bench/overlay.py
