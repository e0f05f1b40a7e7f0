# The map of every routine task. `make help` lists them; a newcomer needs only `make run` and `make test`.
SHELL := /bin/bash
LOCAL := deploy/local
PY := .venv/bin/python

.DEFAULT_GOAL := help
.PHONY: help setup run test up down status services services-stop test-unit test-integration test-e2e \
        lint format typecheck compose-check bench bench-chain bench-purger bench-liveread chaos logs clean

help: ## List the tasks
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[1mmake %-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

setup: ## Install what is missing: .venv (with SecantusDB), Kafka jars, the SeaweedFS build (cached in ~/.cache/lethe)
	@$(LOCAL)/setup.sh

run: ## Install, start the stack and the five services, stream their logs; Ctrl-C stops everything
	@$(LOCAL)/run.sh

test: ## Install, start the stack, run every test layer against it, stop it; exits with the tests' status
	@$(LOCAL)/test.sh

up: setup ## Start the local stack (Kafka, SecantusDB, PostgreSQL, SeaweedFS, Milvus Lite, SMTP) in the background
	@$(LOCAL)/stack.sh up

down: ## Stop the five services and the local stack
	@$(LOCAL)/services.sh stop
	@$(LOCAL)/stack.sh down

status: ## Show each server's pid, port and memory, and each service's readiness
	@$(LOCAL)/stack.sh status
	@$(LOCAL)/services.sh status

services: up ## Start the five services in the background (after the stack)
	@$(LOCAL)/services.sh start

services-stop: ## Stop the five services, leave the stack running
	@$(LOCAL)/services.sh stop

test-unit: setup ## Unit tests only (in-memory fakes, no servers)
	@$(PY) -m pytest tests/unit

test-integration: setup ## Integration and end-to-end tests against the running stack (make up first)
	@$(LOCAL)/test.sh tests/integration tests/e2e

lint: setup ## ruff lint and format check
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

format: setup ## Apply ruff's formatting and safe fixes
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

typecheck: setup ## mypy, strict, on shared/ and services/
	@.venv/bin/mypy

.PHONY: asyncapi
asyncapi: setup ## Regenerate docs/asyncapi.yaml from the event models
	@$(PY) -m ops.asyncapi --write

compose-check: setup ## Validate docker-compose.yml (Compose specification) and test it against the code and images
	@.venv/bin/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	@$(PY) -m pytest -q -p no:cacheprovider tests/unit/test_compose.py

bench: ## Benchmarks against the local stack; prints figures
	@$(LOCAL)/bench.sh

chaos: ## Faults at full size: 2,000 deletions; each service SIGKILLed 3 times, Kafka restarted, MongoDB down 30 s
	@LETHE_CHAOS_N=$${LETHE_CHAOS_N:-2000} LETHE_CHAOS_KILLS=$${LETHE_CHAOS_KILLS:-3} \
	  LETHE_CHAOS_FAULT_EVERY_S=$${LETHE_CHAOS_FAULT_EVERY_S:-20} $(LOCAL)/test.sh tests/e2e/test_chaos.py -s -p no:cacheprovider

bench-chain: ## 10,000 people: deletions/s, p50/p99, round trips and CPU per deletion per process, vs the raw stores
	@$(LOCAL)/bench.sh chain

bench-purger: ## The nightly purge at 100k vs 1M documents (and S3 erasure); prints times and their ratio
	@$(LOCAL)/bench.sh purger

bench-liveread: ## A live reader's p50/p95/p99 by subject, alone and while the nightly purge runs
	@$(LOCAL)/bench.sh liveread

logs: ## Follow every log of the stack and the services
	@tail -n 50 -F var/log/*.log

clean: down ## Stop everything and delete runtime state (var/); keeps the download/build cache
	rm -rf var
