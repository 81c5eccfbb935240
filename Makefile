# Herald: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV ?= uv
STACK ?= local
TEST_PATHS := shared/tests services/api/tests services/notifier/tests services/scheduler/tests
LINT_PATHS := shared services tests-e2e

.PHONY: help install dev migrate test lint format e2e clean

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}'

install: ## Install Python deps (uv, locked) and MailDev (npm)
	$(UV) sync --locked
	npm ci --prefix tests-e2e --no-audit --no-fund --loglevel=error

dev: install ## Run migrations, then api, notifier, scheduler and MailDev locally (Ctrl-C stops)
	$(UV) run --no-sync python -m herald_testing.stack dev

migrate: ## Create the database if missing and apply Alembic migrations
	$(UV) run herald-api migrate

test: install ## Unit and integration tests of shared and every service (real PostgreSQL, Redis, SMTP)
	$(UV) run --no-sync pytest $(TEST_PATHS)

lint: ## ruff (lint + format check) and mypy (strict)
	$(UV) run ruff check $(LINT_PATHS)
	$(UV) run ruff format --check $(LINT_PATHS)
	$(UV) run mypy $(LINT_PATHS)

format: ## Apply ruff's fixes and formatting
	$(UV) run ruff check --fix $(LINT_PATHS)
	$(UV) run ruff format $(LINT_PATHS)

e2e: install ## End-to-end suite against a fresh stack (STACK=local: local processes)
ifeq ($(STACK),local)
	$(UV) run --no-sync python -m herald_testing.stack e2e
else
	@echo "STACK=$(STACK) is not supported yet; use STACK=local" >&2; exit 2
endif

clean: ## Remove caches, virtualenv, node_modules and e2e logs
	rm -rf .venv tests-e2e/node_modules .e2e .mypy_cache .ruff_cache .pytest_cache
