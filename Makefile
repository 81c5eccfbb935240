# Herald: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# uv: the one on PATH, else the pinned one installed into .tools/ on first use.
UV_VERSION := 0.13.9
TOOLS := $(CURDIR)/.tools
UV ?= $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)
PREFLIGHT := scripts/preflight
# uv trusts the system's CA store, as pip, npm and curl do (a company's or a proxy's CA too).
export UV_SYSTEM_CERTS ?= 1
COMPOSE ?= docker compose
# `make install` reinstalls only when a lock file changed since the last install.
SYNCED := .venv/.herald-synced
NPM_INSTALLED := testing/node_modules/.herald-installed
PYPROJECTS := pyproject.toml shared/pyproject.toml $(wildcard services/*/pyproject.toml) testing/pyproject.toml
# The translations: a changed .po rebuilds its package (uv's cache-keys), which compiles its .mo.
CATALOGUES := $(wildcard services/*/src/*/locales/*/LC_MESSAGES/*.po services/*/src/*/*/locales/*/LC_MESSAGES/*.po)
# make test BACKENDS=containers: PostgreSQL, Redis and MailDev from testcontainers even
# where local servers answer (the path of a machine that has only Docker).
BACKENDS ?= auto
# make e2e: the compose stack where Docker answers, else local processes.
STACK ?= $(shell docker compose version >/dev/null 2>&1 && docker info >/dev/null 2>&1 && echo compose || echo local)
TEST_PATHS := shared/tests services/api/tests services/notifier/tests services/scheduler/tests testing/tests deploy/tests
LINT_PATHS := shared services testing tests-e2e bench deploy

.PHONY: help install dev migrate test lint k8s-check k8s-docker format e2e screenshots i18n swarm-e2e fuzz bench chaos dead-letters replay up down logs ps clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: $(SYNCED) $(NPM_INSTALLED) ## Install uv if missing, Python deps (locked) and MailDev (npm); only what changed

$(TOOLS)/bin/uv:
	@$(PREFLIGHT) uv $(UV_VERSION) $(TOOLS)

$(SYNCED): uv.lock $(PYPROJECTS) $(CATALOGUES) | $(UV)
	@UV_PYTHON="$$($(PREFLIGHT) python)" && export UV_PYTHON && $(UV) sync --locked
	@touch $@

$(NPM_INSTALLED): testing/package-lock.json testing/package.json
	@$(PREFLIGHT) npm-ci testing $@

dev: install ## Run migrations, then api, notifier, scheduler and MailDev locally (Ctrl-C stops)
	$(UV) run --no-sync python -m herald_testing.stack dev

migrate: install ## Create the database if missing and apply Alembic migrations
	$(UV) run --no-sync herald-api migrate

test: install ## Unit and integration tests of shared and every service (real PostgreSQL, Redis, SMTP)
	@HERALD_TEST_BACKENDS=$(BACKENDS) $(UV) run --no-sync python -m herald_testing.preflight test
	HERALD_TEST_BACKENDS=$(BACKENDS) $(UV) run --no-sync pytest $(TEST_PATHS) $(ARGS)

lint: install ## ruff (lint + format), mypy --strict, import contracts (.importlinter), hadolint, compose config
	$(UV) run --no-sync ruff check $(LINT_PATHS)
	$(UV) run --no-sync ruff format --check $(LINT_PATHS)
	$(UV) run --no-sync mypy $(LINT_PATHS)
	$(UV) run --no-sync lint-imports --no-cache
	$(UV) run --no-sync hadolint services/Dockerfile tests-e2e/faults/Dockerfile
	@# `compose config --quiet` prints problems but may still exit 0: any output fails.
	@if $(COMPOSE) version >/dev/null 2>&1; then \
		out=$$($(COMPOSE) -f compose.yaml config --quiet 2>&1); \
		if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "compose.yaml: valid"; \
		out=$$(POSTGRES_PASSWORD=x HERALD_SMTP_HOST=x HERALD_SMTP_PASSWORD=x HERALD_MONITOR_PASSWORD=x HERALD_INTERNAL_TOKEN=x \
			HERALD_LINK_SECRET=x HERALD_JWT_SECRET=x HERALD_VERIFY_URL=x HERALD_RESET_URL=x \
			$(COMPOSE) -f compose.yaml -f compose.production.yaml config --quiet 2>&1); \
		if [ -n "$$out" ]; then echo "$$out"; exit 1; fi; echo "compose.production.yaml: valid"; \
		out=$$($(COMPOSE) -f compose.yaml -f compose.production.yaml config --quiet 2>&1); \
		if [ -z "$$out" ]; then echo "compose.production.yaml accepts unset secrets" >&2; exit 1; fi; \
		echo "compose.production.yaml: refuses unset secrets"; \
	else echo "docker compose not installed: compose files not validated" >&2; fi
	@$(MAKE) --no-print-directory k8s-check

k8s-check: install ## Render deploy/k8s's overlays and check them offline (kubernetes-validate, KEDA schema, checkov, tests)
	$(UV) run --no-sync python -m herald_testing.k8s_check --uv $(UV)
	$(UV) run --no-sync pytest -q deploy/tests

format: install ## Apply ruff's fixes and formatting
	$(UV) run --no-sync ruff check --fix $(LINT_PATHS)
	$(UV) run --no-sync ruff format $(LINT_PATHS)

e2e: install ## End-to-end suite on a fresh stack (STACK=compose: containers; STACK=local: processes), browser tests included
	$(UV) run --no-sync python -m herald_testing.stack e2e --stack $(STACK) $(ARGS)

screenshots: install ## Refresh docs/screenshots/: the browser tests on a local stack, pages and emails, desktop and phone
	rm -f docs/screenshots/*.png
	HERALD_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(UV) run --no-sync python -m herald_testing.stack e2e --stack local -k test_browser

# Each service's translatable texts: (service folder):(its locales folder under src/).
I18N_CATALOGUES := services/notifier:herald_notifier/locales services/api:herald_api/accounts/locales

i18n: install ## Extract the emails' and pages' texts into each .pot and merge it into every locale's .po (then translate what is new)
	@set -e; for entry in $(I18N_CATALOGUES); do \
		service=$${entry%%:*}; locales=src/$${entry#*:}; \
		(cd $$service && $(UV) run --no-sync pybabel -q extract -F babel.cfg -o $$locales/messages.pot \
			--project=herald-$${service##*/} --version=0.1.0 --copyright-holder="the Herald authors" \
			--msgid-bugs-address="the Herald issue tracker" --no-location --sort-output src && \
		 $(UV) run --no-sync pybabel -q update -D messages -i $$locales/messages.pot -d $$locales \
			--ignore-obsolete --ignore-pot-creation-date); \
		echo "$$service: $$locales/messages.pot and its .po files updated"; \
	done

k8s-docker: install ## deploy/k8s's dev overlay, pod by pod, under Docker as a kubelet would run it (limits, read-only, probes)
	HERALD_IMAGE_TAG=k8s $(COMPOSE) build api notifier scheduler
	$(UV) run --no-sync python -m herald_testing.k8s_docker --tag k8s

swarm-e2e: install ## The e2e suite on a one-node Docker Swarm (2 api, 3 notifier, 2 scheduler) while the notifier rolls, dies, scales
	$(UV) run --no-sync python -m herald_testing.swarm $(ARGS)

fuzz: install ## Schemathesis on a fresh local stack: fails on any 5xx or response off the OpenAPI schema
	$(UV) run --no-sync python -m herald_testing.stack fuzz

bench: install ## Benchmarks on the local PostgreSQL, Redis and an SMTP sink: one table (docs/benchmarks.md)
	$(UV) run --locked --group bench python -m bench

# make chaos RUNS=5 SEED=123: five runs, fresh stacks, fault plans drawn from seeds 123..127.
RUNS ?=
SEED ?=
chaos: install ## 1,000 signups while Redis, the API, PostgreSQL and notifiers fail; RUNS=, SEED=
	$(UV) run --no-sync python -m herald_testing.chaos $(if $(RUNS),--runs $(RUNS)) $(if $(SEED),--seed $(SEED))

# Where the notifier runs: in the compose stack when its notifier is up, else locally.
NOTIFIER_CLI = $(shell $(COMPOSE) ps --status running --services 2>/dev/null | grep -qx notifier \
	&& echo "$(COMPOSE) exec -T notifier herald-notifier" || echo "$(UV) run --no-sync herald-notifier")

dead-letters: ## List welcome emails that failed for good, with the reason
	$(NOTIFIER_CLI) dead-letters list

replay: ## Re-enqueue dead letters: make replay ID=<message_id> (or ID=--all)
	@test -n "$(ID)" || { echo "usage: make replay ID=<message_id>|--all" >&2; exit 2; }
	$(NOTIFIER_CLI) dead-letters replay $(ID)

up: ## Build and start the whole stack in containers; wait until healthy
	@$(PREFLIGHT) docker-up
	$(COMPOSE) up --build --wait

down: ## Stop the container stack (volumes kept; `make down ARGS=-v` drops them)
	$(COMPOSE) down $(ARGS)

logs: ## Follow the container stack's logs
	$(COMPOSE) logs --follow

ps: ## The container stack's services and their health
	$(COMPOSE) ps

clean: ## Remove caches, virtualenv, node_modules, e2e logs and the bootstrapped uv (.tools)
	rm -rf .venv testing/node_modules .e2e .mypy_cache .ruff_cache .pytest_cache .tools
